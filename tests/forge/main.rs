//! Commit statuses on forges against the real binary: real pushes through
//! the installed hook, real nix builds, and a fake forge per forge kind on
//! loopback (`fake`) that checks each request against the forge's
//! documented API and records it. Faults: a forge answering 500 and 429
//! with `Retry-After`, a forge that is down (across a restart of the
//! daemon), more checks than the cap, a rebuild.

#[path = "../common/mod.rs"]
mod common;
mod fake;
// The upstream tests' git servers, for a mirrored repository that reports.
#[allow(dead_code)]
#[path = "../upstreams/servers.rs"]
mod servers;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Daemon, Work, failing_script, nonce, passing};
use fake::{Fake, Kind};
use serde_json::{Value, json};

const TOKEN: &str = "forge-token-5ecr3t-do-not-show";

/// A token file only its owner may read.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("forge-token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Creates repository `name` reporting to `fake` through the API.
fn create_reporting_repo(daemon: &Daemon, name: &str, fake: &Fake, extra: Value) -> Value {
    let mut body = json!({
        "name": name,
        "forge": fake.kind.name(),
        "forge_api_url": fake.api_url(),
        "forge_repo": fake.owner_repo,
        "forge_token_file": token_file(&daemon.dir),
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let (status, repo) = daemon.post("/api/repos", &body);
    assert_eq!(status, 201, "{repo}");
    repo
}

/// Pushes a flake with `checks` to `main` of `repo`; returns the build once
/// it ended.
fn push_build(daemon: &Daemon, repo: &str, checks: &[(&str, &str)]) -> Value {
    let work = Work::clone(&daemon.repo_path(repo));
    let commit = work.commit_flake(checks);
    work.push(&["HEAD:refs/heads/main"]);
    daemon.wait_final(daemon.build_of("main", &commit))
}

/// Waits until the build's end is recorded in its own context and every
/// forge status of build `id` is settled (none pending), and returns them.
fn wait_delivered(daemon: &Daemon, id: i64, timeout: Duration) -> Vec<Value> {
    let build = daemon.wait_build(id, timeout, |b| {
        b["forge_statuses"].as_array().is_some_and(|all| {
            let ended = all.iter().any(|s| {
                s["context"] == "procurator-ci" && phase(s["state"].as_str().unwrap_or("")) == 2
            });
            ended && all.iter().all(|s| s["status"] != "pending")
        })
    });
    build["forge_statuses"].as_array().unwrap().clone()
}

/// Where a state is in a build's life: pending, running, then an end.
fn phase(state: &str) -> u8 {
    match state {
        "pending" => 0,
        "running" => 1,
        _ => 2,
    }
}

/// Nothing secret in the daemon's log or in its answers.
fn assert_token_hidden(daemon: &Daemon, id: i64) {
    assert!(!daemon.log().contains(TOKEN), "the token is in the log");
    for path in [
        format!("/api/builds/{id}"),
        "/api/repos".to_string(),
        "/api/builds".to_string(),
    ] {
        let (_, text) = daemon.request_text("GET", &path, None, Some(&daemon.token()));
        assert!(!text.contains(TOKEN), "the token is in {path}: {text}");
    }
}

#[test]
fn each_forge_hears_the_build_and_each_check_in_its_own_words() {
    let daemon = Daemon::start("workers = 2\n");
    for kind in [Kind::Github, Kind::Gitea, Kind::Forgejo, Kind::Gitlab] {
        let fake = Fake::start(kind, 0, "team/app", TOKEN);
        let name = format!("app-{}", kind.name());
        let repo = create_reporting_repo(&daemon, &name, &fake, json!({}));
        assert_eq!(repo["forge"]["forge"], kind.name(), "{repo}");
        assert_eq!(repo["forge"]["repo"], "team/app", "{repo}");

        let build = push_build(
            &daemon,
            &name,
            &[
                ("good", &passing(&nonce("good"))),
                ("bad", &failing_script()),
            ],
        );
        assert_eq!(build["status"], "failed", "{build}");
        let id = build["id"].as_i64().unwrap();
        let sha = build["commit"].as_str().unwrap();
        let statuses = wait_delivered(&daemon, id, Duration::from_secs(60));
        let contexts: Vec<&str> = statuses
            .iter()
            .map(|s| s["context"].as_str().unwrap())
            .collect();
        assert_eq!(
            contexts,
            ["procurator-ci", "procurator-ci/bad", "procurator-ci/good"],
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| s["status"] == "delivered"),
            "{statuses:?}"
        );

        let failed = if kind == Kind::Gitlab {
            "failed"
        } else {
            "failure"
        };
        // A state recorded before the last one was posted is replaced by
        // it: the forge may skip pending or running, never go back.
        let own = fake.states(sha, "procurator-ci");
        assert_eq!(own.last().map(String::as_str), Some(failed), "{own:?}");
        assert!(
            own.windows(2).all(|w| phase(&w[0]) <= phase(&w[1])),
            "{}: states out of order: {own:?}",
            kind.name()
        );
        assert_eq!(fake.states(sha, "procurator-ci/good"), ["success"]);
        assert_eq!(fake.states(sha, "procurator-ci/bad"), [failed]);
        let posts = fake.accepted(sha);
        assert!(
            posts
                .iter()
                .all(|p| p.target_url == build["url"].as_str().unwrap()),
            "{posts:?}"
        );
        let end = posts
            .iter()
            .rfind(|p| p.context == "procurator-ci")
            .unwrap();
        assert!(end.description.starts_with("A check failed"), "{end:?}");
        fake.assert_no_violations();
        assert_token_hidden(&daemon, id);
    }
}

#[test]
fn a_forge_answering_500_and_429_hears_later_and_the_build_is_unaffected() {
    let fake = Fake::start(Kind::Github, 0, "team/app", TOKEN);
    fake.script(&[(500, None), (429, Some(2))]);
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    // Declared in the configuration this time.
    let daemon = Daemon::start(&format!(
        "[repos.app]\nforge = \"github\"\nforge_api_url = \"{}\"\nforge_repo = \"team/app\"\n\
         forge_token_file = \"{}\"\n",
        fake.api_url(),
        token.display()
    ));
    let build = push_build(&daemon, "app", &[("check", &passing(&nonce("ok")))]);
    assert_eq!(build["status"], "success", "{build}");
    let id = build["id"].as_i64().unwrap();
    let sha = build["commit"].as_str().unwrap();
    wait_delivered(&daemon, id, Duration::from_secs(60));
    assert_eq!(fake.states(sha, "procurator-ci").last().unwrap(), "success");
    assert_eq!(fake.states(sha, "procurator-ci/check"), ["success"]);

    let posts = fake.posts();
    let answers: Vec<u16> = posts.iter().map(|p| p.answered).collect();
    assert_eq!(&answers[..2], [500, 429], "{posts:?}");
    // A rate limit is the forge's: nothing at all is posted to it, in any
    // context, before its Retry-After has passed.
    let limited = &posts[1];
    for next in &posts[2..] {
        let waited = next.at - limited.at;
        assert!(
            waited >= Duration::from_millis(1900),
            "Retry-After: 2 not obeyed: {} posted {waited:?} after the 429",
            next.context
        );
    }
    fake.assert_no_violations();
    assert_token_hidden(&daemon, id);
}

#[test]
fn a_forge_that_is_down_blocks_no_build_and_hears_it_after_a_restart() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(dir.path(), "", &[]);
    daemon.spawn();
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let (status, repo) = daemon.post(
        "/api/repos",
        &json!({
            "name": "app", "forge": "forgejo", "forge_api_url": api,
            "forge_repo": "team/app", "forge_token_file": token_file(dir.path()),
        }),
    );
    assert_eq!(status, 201, "{repo}");

    let started = Instant::now();
    let build = push_build(&daemon, "app", &[("check", &passing(&nonce("ok")))]);
    assert_eq!(build["status"], "success", "{build}");
    let id = build["id"].as_i64().unwrap();
    let failing = daemon.wait_build(id, Duration::from_secs(30), |b| {
        b["forge_statuses"].as_array().is_some_and(|all| {
            all.iter()
                .any(|s| s["status"] == "pending" && s["error"].as_str().is_some())
        })
    });
    let own = &failing["forge_statuses"][0];
    assert_eq!(own["context"], "procurator-ci", "{failing}");
    assert!(own["next_attempt_at"].is_string(), "{own}");
    eprintln!("built in {:?} with the forge down", started.elapsed());

    // Still undelivered when the daemon stops; the forge comes up while it
    // is away.
    daemon.stop();
    let fake = Fake::start(Kind::Forgejo, port, "team/app", TOKEN);
    daemon.spawn();
    wait_delivered(&daemon, id, Duration::from_secs(60));
    let sha = build["commit"].as_str().unwrap();
    assert_eq!(fake.states(sha, "procurator-ci"), ["success"]);
    assert_eq!(fake.states(sha, "procurator-ci/check"), ["success"]);
    fake.assert_no_violations();
    assert_token_hidden(&daemon, id);
}

#[test]
fn more_checks_than_the_cap_post_one_summary() {
    let daemon = Daemon::start("");
    let fake = Fake::start(Kind::Gitea, 0, "team/app", TOKEN);
    create_reporting_repo(&daemon, "app", &fake, json!({"forge_check_statuses": 2}));
    let (a, b, c) = (
        passing(&nonce("a")),
        passing(&nonce("b")),
        passing(&nonce("c")),
    );
    let build = push_build(&daemon, "app", &[("a", &a), ("b", &b), ("c", &c)]);
    assert_eq!(build["status"], "success", "{build}");
    let id = build["id"].as_i64().unwrap();
    let statuses = wait_delivered(&daemon, id, Duration::from_secs(60));
    let contexts: Vec<&str> = statuses
        .iter()
        .map(|s| s["context"].as_str().unwrap())
        .collect();
    assert_eq!(
        contexts,
        ["procurator-ci", "procurator-ci/checks"],
        "{statuses:?}"
    );
    let sha = build["commit"].as_str().unwrap();
    let mut posted: Vec<String> = fake.accepted(sha).into_iter().map(|p| p.context).collect();
    posted.sort();
    posted.dedup();
    assert_eq!(posted, ["procurator-ci", "procurator-ci/checks"]);
    let summary = fake
        .accepted(sha)
        .into_iter()
        .find(|p| p.context == "procurator-ci/checks")
        .unwrap();
    assert_eq!(summary.state, "success");
    assert!(
        summary.description.starts_with("3 of 3 checks passed"),
        "{summary:?}"
    );
    fake.assert_no_violations();
}

#[test]
fn a_rebuild_updates_the_same_contexts() {
    let daemon = Daemon::start("workers = 1\n");
    let fake = Fake::start(Kind::Gitlab, 0, "group/sub/app", TOKEN);
    create_reporting_repo(&daemon, "app", &fake, json!({}));
    let build = push_build(&daemon, "app", &[("check", &passing(&nonce("ok")))]);
    assert_eq!(build["status"], "success", "{build}");
    let first = build["id"].as_i64().unwrap();
    wait_delivered(&daemon, first, Duration::from_secs(60));
    let sha = build["commit"].as_str().unwrap();

    // The only worker busy elsewhere: the rebuild waits in the queue, so
    // its pending states are posted before it runs.
    daemon.create_repo("busy");
    let work = Work::clone(&daemon.repo_path("busy"));
    let commit = work.commit_flake(&[("wait", "/bin/sleep 600")]);
    work.push(&["HEAD:refs/heads/main"]);
    let busy = daemon.build_of("main", &commit);
    daemon.wait_build(busy, Duration::from_secs(30), |b| b["status"] == "running");
    let (status, again) = daemon.post(&format!("/api/builds/{first}/rebuild"), &json!({}));
    assert_eq!(status, 201, "{again}");
    let second = again["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.states(sha, "procurator-ci/check").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the check context was not reset: {:?}",
            fake.posts()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.post(&format!("/api/builds/{busy}/cancel"), &json!({}));
    assert_eq!(daemon.wait_final(second)["status"], "success");
    wait_delivered(&daemon, second, Duration::from_secs(60));

    assert_eq!(
        fake.states(sha, "procurator-ci/check"),
        ["success", "pending", "success"]
    );
    let own = fake.states(sha, "procurator-ci");
    let rebuilt = own.iter().position(|s| s == "success").unwrap();
    assert_eq!(own[rebuilt + 1], "pending", "{own:?}");
    assert_eq!(own.last().unwrap(), "success", "{own:?}");
    for context in ["procurator-ci", "procurator-ci/check"] {
        let posts = fake.accepted(sha);
        let last = posts.iter().rfind(|p| p.context == context).unwrap();
        assert!(
            last.target_url.ends_with(&format!("/#/builds/{second}")),
            "{last:?}"
        );
    }
    fake.assert_no_violations();
}

#[test]
fn bad_forge_keys_are_refused_naming_the_key_and_never_the_token() {
    let daemon = Daemon::start("");
    let good_token = token_file(&daemon.dir);
    let exposed = daemon.dir.join("exposed-token");
    std::fs::write(&exposed, TOKEN).unwrap();
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cases = [
        (
            json!({"forge": "gitea", "forge_repo": "o/r", "forge_token_file": good_token}),
            "forge_api_url",
        ),
        (
            json!({"forge": "github", "forge_token_file": good_token}),
            "forge_repo",
        ),
        (
            json!({"forge": "github", "forge_repo": "o/r"}),
            "forge_token_file",
        ),
        (
            json!({"forge": "github", "forge_repo": "o", "forge_token_file": good_token}),
            "forge_repo",
        ),
        (
            json!({"forge": "github", "forge_repo": "o/r", "forge_token_file": exposed}),
            "forge_token_file",
        ),
        (
            json!({"forge": "github", "forge_repo": "o/r", "forge_token_file": "/nonexistent/t"}),
            "forge_token_file",
        ),
        (
            json!({"forge": "bitbucket", "forge_repo": "o/r", "forge_token_file": good_token}),
            "forge",
        ),
    ];
    for (mut body, key) in cases {
        body["name"] = json!("app");
        let (status, text) = daemon.request_text(
            "POST",
            "/api/repos",
            Some(&body.to_string()),
            Some(&daemon.token()),
        );
        assert!((400..500).contains(&status), "{body}: {status} {text}");
        assert!(
            text.contains(key),
            "{body}: the error does not name {key}: {text}"
        );
        assert!(!text.contains(TOKEN), "{text}");
    }
    let (_, repos) = daemon.get("/api/repos");
    assert!(
        !repos.to_string().contains("\"app\""),
        "a refused repository was created: {repos}"
    );
}

/// A mirrored repository reports to the forge its upstream names: the
/// forge repository is read from the upstream's URL (`team/app` of
/// `git://…/team/app.git`), and the commit mirrored from there hears its
/// statuses.
#[test]
fn a_mirrored_repository_reports_to_the_repository_its_upstream_names() {
    let root = tempfile::tempdir().unwrap();
    let upstream = servers::Upstream::new(root.path(), "team/app");
    let commit = upstream.push_new("main");
    let port = common::free_port();
    let _server = servers::git_daemon(root.path(), port);
    let fake = Fake::start(Kind::Gitea, 0, "team/app", TOKEN);
    let daemon = Daemon::start("");
    let (status, repo) = daemon.post(
        "/api/repos",
        &json!({
            "name": "mirrored",
            "upstream": format!("git://127.0.0.1:{port}/team/app.git"),
            "poll_interval_secs": 1,
            "forge": "gitea",
            "forge_api_url": fake.api_url(),
            "forge_token_file": token_file(&daemon.dir),
        }),
    );
    assert_eq!(status, 201, "{repo}");
    assert_eq!(repo["forge"]["repo"], "team/app", "{repo}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let (_, builds) = daemon.get("/api/builds?repo=mirrored");
        if let Some(build) = builds["builds"]
            .as_array()
            .and_then(|all| all.iter().find(|b| b["commit"] == commit.as_str()))
        {
            break build["id"].as_i64().unwrap();
        }
        assert!(Instant::now() < deadline, "never built: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "success", "{build}");
    wait_delivered(&daemon, id, Duration::from_secs(60));
    assert_eq!(
        fake.states(&commit, "procurator-ci")
            .last()
            .map(String::as_str),
        Some("success")
    );
    assert_eq!(fake.states(&commit, "procurator-ci/check"), ["success"]);
    fake.assert_no_violations();
}
