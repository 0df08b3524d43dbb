//! Forges' webhooks, signed by the test as each forge signs them: a valid
//! one makes the daemon look at the upstream now (what it builds is what
//! the upstream has, never a SHA from the body); a bad or missing
//! signature is 401 and changes nothing; a replayed delivery id is
//! acknowledged and ignored; a ping is 200; a storm of 1,000 deliveries
//! makes looks of one repository one at a time.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{builds_of, servers, upstream_build, upstream_status, wait_until};
use crate::common::{self, Daemon};
use servers::Upstream;

pub const SECRET: &str = "webhook-secret-6d1f0b";

/// A delivery's headers: name, value.
pub type Headers = Vec<(&'static str, String)>;

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/upstreams/fixtures/{name}")),
    )
    .unwrap()
}

pub fn hmac_hex(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// POSTs `body` to the webhook with `headers`, no token; status and answer.
pub fn deliver(
    daemon: &Daemon,
    repo: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Value) {
    let agent = common::agent_with_timeout(Duration::from_secs(30));
    let mut request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{}/api/repos/{repo}/webhook", daemon.base()))
        .header("Content-Type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let mut response = agent.run(request.body(body.to_string()).unwrap()).unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub fn github(event: &str, delivery: &str, body: &str) -> Headers {
    vec![
        ("X-GitHub-Event", event.to_string()),
        ("X-GitHub-Delivery", delivery.to_string()),
        (
            "X-Hub-Signature-256",
            format!("sha256={}", hmac_hex(SECRET, body)),
        ),
    ]
}

/// A daemon mirroring `upstream` over `url` with webhooks only
/// (`poll_interval_secs = 0`) and the secret in a file.
fn webhook_daemon(dir: &std::path::Path, url: &str) -> Daemon {
    let secret = dir.join("webhook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    Daemon::start(&format!(
        "{}[repos.app]\nupstream = \"{url}\"\npoll_interval_secs = 0\nwebhook_secret_file = \"{}\"\n",
        super::QUICK,
        secret.display()
    ))
}

#[test]
fn signed_deliveries_of_each_forge_make_the_daemon_look() {
    let root = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(root.path(), "app");
    let first = upstream.push_new("main");
    let daemon = webhook_daemon(root.path(), &format!("file://{}", upstream.bare.display()));
    // The first look at start.
    upstream_build(&daemon, "app", "main", &first);
    wait_until(&daemon, Duration::from_secs(10), "the first look", || {
        upstream_status(&daemon, "app")["checks"] == 1
    });

    // Pushed upstream; nothing polls: no look until a webhook says so.
    let second = upstream.push_new("main");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(upstream_status(&daemon, "app")["checks"], 1);

    // Refused: no signature, a wrong one, a body other than the one signed,
    // GitLab's token wrong. Each 401, and still no look.
    let push = fixture("github-push.json");
    let mut wrong = github("push", "d-wrong", &push);
    wrong[2].1 = format!("sha256={}", hmac_hex("not-the-secret", &push));
    let mut tampered = github("push", "d-tampered", &push);
    tampered[2].1 = format!("sha256={}", hmac_hex(SECRET, &push.replace("main", "evil")));
    for (headers, body) in [
        (vec![("X-GitHub-Event", "push".to_string())], push.clone()),
        (wrong, push.clone()),
        (tampered, push.clone()),
        (
            vec![
                ("X-Gitlab-Event", "Push Hook".into()),
                ("X-Gitlab-Token", "guess".into()),
            ],
            fixture("gitlab-push.json"),
        ),
        (
            vec![
                ("X-Gitea-Event", "push".into()),
                ("X-Gitea-Signature", "00".repeat(32)),
            ],
            fixture("gitea-push.json"),
        ),
    ] {
        let (status, answer) = deliver(&daemon, "app", &headers, &body);
        assert_eq!(status, 401, "{headers:?}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthorized", "{answer}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let status = upstream_status(&daemon, "app");
    assert_eq!(
        (status["checks"].as_u64(), status["webhooks"].as_u64()),
        (Some(1), Some(0)),
        "{status}"
    );

    // A ping is answered and looks at nothing.
    let ping = fixture("github-ping.json");
    let (status, answer) = deliver(&daemon, "app", &github("ping", "d-ping", &ping), &ping);
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("ping")),
        "{answer}"
    );

    // GitHub's push: the daemon builds what the upstream has (the body names
    // another commit altogether).
    let (status, answer) = deliver(&daemon, "app", &github("push", "d-1", &push), &push);
    assert_eq!(
        (status, answer["status"].as_str(), answer["forge"].as_str()),
        (202, Some("accepted"), Some("github")),
        "{answer}"
    );
    upstream_build(&daemon, "app", "main", &second);
    assert!(
        builds_of(&daemon, "app")
            .iter()
            .all(|b| b["commit"] != "6113728f27ae82c7b1a177c8d03f9e96e0adf246")
    );

    // The same delivery again: acknowledged, ignored.
    let checks = upstream_status(&daemon, "app")["checks"].as_u64().unwrap();
    let (status, answer) = deliver(&daemon, "app", &github("push", "d-1", &push), &push);
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate")),
        "{answer}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        upstream_status(&daemon, "app")["checks"].as_u64().unwrap(),
        checks
    );

    // Gitea, Forgejo (bare hex) and GitLab (the token) each make a look.
    let gitea = fixture("gitea-push.json");
    let gitlab = fixture("gitlab-push.json");
    let deliveries: Vec<(Headers, &str, &str)> = vec![
        (
            vec![
                ("X-Gitea-Event", "push".into()),
                ("X-Gitea-Delivery", "g-1".into()),
                ("X-Gitea-Signature", hmac_hex(SECRET, &gitea)),
            ],
            gitea.as_str(),
            "gitea",
        ),
        (
            vec![
                ("X-Forgejo-Event", "push".into()),
                ("X-Forgejo-Delivery", "f-1".into()),
                ("X-Forgejo-Signature", hmac_hex(SECRET, &gitea)),
            ],
            gitea.as_str(),
            "forgejo",
        ),
        (
            vec![
                ("X-Gitlab-Event", "Push Hook".into()),
                ("X-Gitlab-Event-UUID", "l-1".into()),
                ("X-Gitlab-Token", SECRET.into()),
            ],
            gitlab.as_str(),
            "gitlab",
        ),
    ];
    for (headers, body, forge) in deliveries {
        let branch = format!("from-{forge}");
        let commit = upstream.push_new(&branch);
        let (status, answer) = deliver(&daemon, "app", &headers, body);
        assert_eq!(
            (status, answer["forge"].as_str()),
            (202, Some(forge)),
            "{answer}"
        );
        upstream_build(&daemon, "app", &branch, &commit);
    }
    // No token was needed, and the repository without a secret takes none.
    let (status, _) = deliver(&daemon, "nosuch", &github("push", "d-x", &push), &push);
    assert_eq!(status, 404);
}

/// 1,000 deliveries within a minute from 8 senders while every request
/// to the upstream (http-backend behind lighttpd) takes 100 ms: looks of
/// the repository never overlap (one at a time), a few dozen looks answer
/// the storm, and what the upstream has is built.
#[test]
fn a_webhook_storm_is_one_look_at_a_time() {
    let root = tempfile::tempdir().unwrap();
    let server = servers::lighttpd(root.path(), "ci", "unused", 100);
    let upstream = Upstream::new(root.path(), "app");
    upstream.push_new("main");
    let daemon = webhook_daemon(
        root.path(),
        &format!("http://127.0.0.1:{}/git/app.git", server.port),
    );
    wait_until(&daemon, Duration::from_secs(20), "the first look", || {
        upstream_status(&daemon, "app")["state"] == "ok"
    });
    let last = upstream.push_new("main");
    let push = fixture("github-push.json");
    std::thread::scope(|scope| {
        for sender in 0..8 {
            let (daemon, push) = (&daemon, &push);
            scope.spawn(move || {
                for i in 0..125 {
                    let id = format!("storm-{sender}-{i}");
                    let (status, answer) = deliver(daemon, "app", &github("push", &id, push), push);
                    assert_eq!(status, 202, "{answer}");
                }
            });
        }
    });
    upstream_build(&daemon, "app", "main", &last);
    wait_until(
        &daemon,
        Duration::from_secs(30),
        "the storm's looks",
        || {
            let s = upstream_status(&daemon, "app");
            s["webhooks"] == 1000 && s["next_check_at"].is_null()
        },
    );
    let requests = servers::backend_requests(root.path());
    let mut sorted = requests.clone();
    sorted.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    for pair in sorted.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "two requests to the upstream overlapped: {pair:?}"
        );
    }
    let status = upstream_status(&daemon, "app");
    let checks = status["checks"].as_u64().unwrap();
    assert!(
        checks < 200,
        "{checks} looks for 1,000 deliveries: {status}"
    );
    assert!(requests.len() < 600, "{} requests", requests.len());
}

/// With private reads, the webhook does not tell which repositories exist:
/// an unknown one is 401 as one without webhooks is.
#[test]
fn private_reads_hide_which_repositories_exist() {
    let daemon = Daemon::start(&format!("{}public_read = false\n", super::QUICK));
    daemon.create_repo("plain");
    let push = fixture("github-push.json");
    for repo in ["nosuch", "plain"] {
        let (status, answer) = deliver(&daemon, repo, &github("push", "x", &push), &push);
        assert_eq!(status, 401, "{repo}: {answer}");
    }
}
