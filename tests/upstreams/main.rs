//! Upstream repositories: the daemon mirrors real git servers on loopback
//! (`git daemon`, `git http-backend` behind lighttpd, `sshd`), builds what
//! moved there through the queue, backs off from an upstream that is down,
//! and takes forges' signed webhooks as a reason to look now.

#[path = "../common/mod.rs"]
mod common;

mod pulls;
mod servers;
mod webhooks;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Daemon, git};
use servers::Upstream;

/// Builds pass at once ("nix" is `/bin/true`) unless a test wants nix;
/// the periodic scan stays out of the way, so that every build here was
/// queued by the upstream's mirror.
const QUICK: &str = "nix_bin = \"/bin/true\"\nscan_interval_secs = 3600\n";

fn builds_of(daemon: &Daemon, repo: &str) -> Vec<Value> {
    let (status, body) = daemon.get(&format!("/api/builds?repo={repo}&limit=500"));
    assert_eq!(status, 200, "{body}");
    body["builds"].as_array().unwrap().clone()
}

/// Waits until `what` holds, or fails with the daemon's log.
fn wait_until(daemon: &Daemon, timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} never happened:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The build of `commit` on `branch` of `repo`, once the mirror queued it.
fn upstream_build(daemon: &Daemon, repo: &str, branch: &str, commit: &str) -> Value {
    let mut found = None;
    wait_until(
        daemon,
        Duration::from_secs(60),
        &format!("a build of {branch} at {commit}"),
        || {
            found = builds_of(daemon, repo)
                .into_iter()
                .find(|b| b["branch"] == branch && b["commit"] == commit);
            found.is_some()
        },
    );
    let build = found.unwrap();
    assert_eq!(build["trigger"], "upstream", "{build}");
    build
}

fn upstream_status(daemon: &Daemon, repo: &str) -> Value {
    let (status, body) = daemon.get(&format!("/api/repos/{repo}/upstream"));
    assert_eq!(status, 200, "{body}");
    body
}

fn branches(daemon: &Daemon, repo: &str) -> Vec<String> {
    let (status, body) = daemon.get(&format!("/api/repos/{repo}?branches_limit=1000"));
    assert_eq!(status, 200, "{body}");
    common::branch_names(&body)
}

fn head_of(bare: &Path, branch: &str) -> Option<String> {
    std::process::Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args([
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}"),
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Over `git daemon`: a pushed flake is mirrored and built by real nix; a
/// force-push builds the rewritten head (superseding the older build of
/// the branch); a new branch is built; a branch deleted upstream leaves
/// the mirror and the page.
#[test]
fn git_daemon_upstream_is_mirrored_and_built() {
    let root = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(root.path(), "app");
    let first = upstream.push_new("main");
    let port = common::free_port();
    let _server = servers::git_daemon(root.path(), port);
    let daemon = Daemon::start(&format!(
        "scan_interval_secs = 3600\n[repos.app]\nupstream = \"git://127.0.0.1:{port}/app.git\"\n\
         poll_interval_secs = 1\n"
    ));
    let build = upstream_build(&daemon, "app", "main", &first);
    let done = daemon.wait_final(build["id"].as_i64().unwrap());
    assert_eq!(done["status"], "success", "{done}\n{}", daemon.log());
    assert_eq!(
        head_of(&daemon.repo_path("app"), "main").as_deref(),
        Some(first.as_str())
    );

    // A force-push: history rewritten, the new head built.
    git(upstream.work.path(), &["reset", "-q", "--hard", "HEAD~0"]);
    git(
        upstream.work.path(),
        &["commit", "-q", "--amend", "-m", "rewritten"],
    );
    let rewritten = git(upstream.work.path(), &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    upstream.work.push(&["--force", "HEAD:refs/heads/main"]);
    upstream_build(&daemon, "app", "main", &rewritten);
    assert_eq!(
        head_of(&daemon.repo_path("app"), "main").as_deref(),
        Some(rewritten.as_str())
    );

    // A new branch, then its deletion upstream.
    let feature = upstream.push_new("feature");
    upstream_build(&daemon, "app", "feature", &feature);
    wait_until(
        &daemon,
        Duration::from_secs(30),
        "feature on the page",
        || branches(&daemon, "app").contains(&"feature".to_string()),
    );
    upstream.work.push(&[":refs/heads/feature"]);
    wait_until(
        &daemon,
        Duration::from_secs(30),
        "feature's deletion mirrored",
        || {
            head_of(&daemon.repo_path("app"), "feature").is_none()
                && !branches(&daemon, "app").contains(&"feature".to_string())
        },
    );
    let status = upstream_status(&daemon, "app");
    assert_eq!(status["state"], "ok", "{status}");
    assert!(status["fetches"].as_u64().unwrap() >= 4, "{status}");
    // A look that finds nothing new does not fetch.
    let fetches = status["fetches"].as_u64().unwrap();
    let checks = status["checks"].as_u64().unwrap();
    wait_until(&daemon, Duration::from_secs(30), "three more looks", || {
        upstream_status(&daemon, "app")["checks"].as_u64().unwrap() >= checks + 3
    });
    assert_eq!(
        upstream_status(&daemon, "app")["fetches"].as_u64().unwrap(),
        fetches
    );
}

/// Over `git http-backend` behind lighttpd: a private repository needs
/// the token from `upstream_credentials_file` (created through the API);
/// without it the upstream fails, backs off, and health and the upstream's
/// status say so. The token appears in no answer and no log.
#[test]
fn private_http_upstream_needs_its_token_which_is_never_shown() {
    let root = tempfile::tempdir().unwrap();
    let token = "tok-7f3a9c1e5b2d4680";
    let server = servers::lighttpd(root.path(), "ci", token, 0);
    let upstream = Upstream::new(root.path(), "private");
    let commit = upstream.push_new("main");
    let creds = root.path().join("creds");
    std::fs::write(&creds, format!("ci:{token}\n")).unwrap();
    let daemon = Daemon::start(QUICK);
    let url = format!("http://127.0.0.1:{}/git/private.git", server.port);
    let (status, body) = daemon.post(
        "/api/repos",
        &serde_json::json!({
            "name": "private",
            "upstream": url,
            "upstream_credentials_file": creds,
            "poll_interval_secs": 1,
        }),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["upstream"]["credentials"], true, "{body}");
    upstream_build(&daemon, "private", "main", &commit);

    // The same upstream without credentials: refused by the server.
    let (status, body) = daemon.post(
        "/api/repos",
        &serde_json::json!({"name": "nocreds", "upstream": url, "poll_interval_secs": 1}),
    );
    assert_eq!(status, 201, "{body}");
    wait_until(&daemon, Duration::from_secs(30), "two failures", || {
        upstream_status(&daemon, "nocreds")["failures"]
            .as_u64()
            .unwrap()
            >= 2
    });
    let status = upstream_status(&daemon, "nocreds");
    assert_eq!(status["state"], "failing", "{status}");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("git ls-remote failed"),
        "{status}"
    );
    assert!(status["next_check_at"].is_string(), "{status}");
    let (_, health) = daemon.get("/api/health");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["upstreams"]["failing"]["nocreds"]["failures"]
            .as_u64()
            .unwrap()
            >= 2,
        "{health}"
    );
    assert!(
        health["warnings"]
            .to_string()
            .contains("upstream of repository nocreds"),
        "{health}"
    );
    // The private repository stays fine.
    assert_eq!(upstream_status(&daemon, "private")["state"], "ok");

    // Restarted, the API-made repository still mirrors its upstream.
    let mut daemon = daemon;
    daemon.stop();
    daemon.spawn();
    let second = upstream.push_new("main");
    upstream_build(&daemon, "private", "main", &second);

    let mut seen = daemon.log();
    for path in [
        "/api/repos",
        "/api/repos/private",
        "/api/repos/private/upstream",
        "/api/health",
    ] {
        seen.push_str(&daemon.get(path).1.to_string());
    }
    seen.push_str(&std::fs::read_to_string(daemon.repo_path("private").join("config")).unwrap());
    assert!(!seen.contains(token), "the token was shown");
    assert!(
        !seen.contains(&base64_of(&format!("ci:{token}"))),
        "the token was shown"
    );
}

/// Over `sshd` with a key: the key from `upstream_credentials_file`
/// (a private copy, mode 600), the host's key pinned on first use.
#[test]
fn ssh_upstream_with_a_key() {
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("id_ed25519");
    servers::ssh_key(&key);
    let (server, host_key) = servers::sshd(&key);
    let upstream = Upstream::new(root.path(), "app");
    let commit = upstream.push_new("main");
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let daemon = Daemon::start(&format!(
        "{QUICK}[repos.app]\nupstream = \"ssh://{user}@127.0.0.1:{}{}\"\n\
         upstream_credentials_file = \"{}\"\npoll_interval_secs = 1\n",
        server.port,
        upstream.bare.display(),
        key.display()
    ));
    upstream_build(&daemon, "app", "main", &commit);
    let pinned =
        std::fs::read_to_string(daemon.state().join("upstream").join("known_hosts")).unwrap();
    let host_key_body = host_key.split_whitespace().nth(1).unwrap();
    assert!(pinned.contains(host_key_body), "{pinned}");
    let private = std::fs::read_to_string(&key).unwrap();
    let (_, status) = daemon.get("/api/repos/app/upstream");
    assert!(!daemon.log().contains(private.lines().nth(1).unwrap()));
    assert!(!status.to_string().contains(private.lines().nth(1).unwrap()));
}

/// An upstream that is down fails, backs off (doubling waits) and says so;
/// once it answers, the mirror catches up and builds.
#[test]
fn an_upstream_that_is_down_backs_off_then_recovers() {
    let root = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(root.path(), "app");
    let commit = upstream.push_new("main");
    let port = common::free_port();
    let daemon = Daemon::start(&format!(
        "{QUICK}[repos.app]\nupstream = \"git://127.0.0.1:{port}/app.git\"\npoll_interval_secs = 1\n"
    ));
    wait_until(&daemon, Duration::from_secs(30), "three failures", || {
        upstream_status(&daemon, "app")["failures"]
            .as_u64()
            .unwrap()
            >= 3
    });
    let status = upstream_status(&daemon, "app");
    assert_eq!(status["state"], "failing", "{status}");
    // After n failures in a row the next look waits 2^(n-1) s (±10 %):
    // the wait doubles from the 1 s interval.
    let checked =
        chrono::DateTime::parse_from_rfc3339(status["last_checked_at"].as_str().unwrap()).unwrap();
    let next =
        chrono::DateTime::parse_from_rfc3339(status["next_check_at"].as_str().unwrap()).unwrap();
    let wait = (next - checked).num_milliseconds();
    let expected = 1000 * 2i64.pow(status["failures"].as_u64().unwrap() as u32 - 1);
    assert!(
        (expected * 9 / 10 - 50..=expected * 11 / 10 + 50).contains(&wait),
        "waits {wait} ms, not about {expected}: {status}"
    );
    assert!(builds_of(&daemon, "app").is_empty());
    let _server = servers::git_daemon(root.path(), port);
    // A look now (the scan endpoint also looks at the upstream).
    let (code, body) = daemon.post("/api/repos/app/scan", &serde_json::json!({}));
    assert_eq!(code, 200, "{body}");
    upstream_build(&daemon, "app", "main", &commit);
    wait_until(&daemon, Duration::from_secs(30), "ok again", || {
        upstream_status(&daemon, "app")["state"] == "ok"
    });
    assert_eq!(upstream_status(&daemon, "app")["failures"], 0);
}

/// 5,000 branches at one commit upstream: mirrored in one fetch, one build
/// (the commit's build stands for every branch at it); one branch moved
/// later is one more build.
#[test]
fn five_thousand_refs() {
    let root = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(root.path(), "many");
    let commit = upstream.push_new("main");
    let names: Vec<String> = (0..5000).map(|i| format!("topic/{i:04}")).collect();
    common::create_branches(
        &upstream.bare,
        names.iter().map(|n| (n.as_str(), commit.as_str())),
    );
    let daemon = Daemon::start(&format!(
        "{QUICK}[repos.many]\nupstream = \"file://{}\"\npoll_interval_secs = 1\n",
        upstream.bare.display()
    ));
    upstream_build(&daemon, "many", "main", &commit);
    wait_until(&daemon, Duration::from_secs(60), "5,001 branches", || {
        let (_, view) = daemon.get("/api/repos/many");
        view["branches_total"] == 5001
    });
    let status = upstream_status(&daemon, "many");
    assert_eq!(status["fetches"], 1, "{status}");
    assert_eq!(builds_of(&daemon, "many").len(), 1);
    let moved = upstream.push_new("topic/4999");
    upstream_build(&daemon, "many", "topic/4999", &moved);
    assert_eq!(builds_of(&daemon, "many").len(), 2);
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
