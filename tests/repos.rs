//! Repositories and the push trigger: real git pushes through the installed
//! hook to the real daemon.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Daemon, Work, branch_names, git, passing};
use serde_json::json;

fn builds_of(daemon: &Daemon, repo: &str) -> Vec<serde_json::Value> {
    let (status, body) = daemon.get(&format!("/api/builds?repo={repo}&limit=500"));
    assert_eq!(status, 200, "{body}");
    body["builds"].as_array().unwrap().clone()
}

#[test]
fn push_queues_exactly_one_build_and_tells_the_pusher() {
    let daemon = Daemon::start("");
    let repo = daemon.create_repo("demo");
    let path = daemon.repo_path("demo");
    assert_eq!(repo["path"], path.to_str().unwrap());
    assert!(path.join("hooks/post-receive").is_file());

    let work = Work::clone(&path);
    let commit = work.commit_flake(&[("ok", &passing("hello"))]);
    let output = work.push(&["HEAD:main"]);
    let builds = builds_of(&daemon, "demo");
    assert_eq!(builds.len(), 1, "{builds:?}");
    let build = &builds[0];
    assert_eq!(build["repo"], "demo");
    assert_eq!(build["branch"], "main");
    assert_eq!(build["commit"], commit.as_str());
    assert_eq!(build["trigger"], "push");
    assert_eq!(build["author"], "Test <test@example.org>");
    let line = format!(
        "procurator-ci: build #{} queued for main ({})",
        build["id"],
        &commit[..7]
    );
    assert!(output.contains(&line), "{output}");
    assert!(
        output.contains(&format!("{}/#/builds/{}", daemon.base(), build["id"])),
        "{output}"
    );

    let (status, detail) = daemon.get("/api/repos/demo");
    assert_eq!(status, 200);
    assert_eq!(detail["branches"][0]["name"], "main");
    assert_eq!(detail["branches"][0]["commit"], commit.as_str());
    assert_eq!(detail["branches"][0]["latest_build"]["id"], build["id"]);
}

#[test]
fn three_branches_three_builds_deletions_and_tags_none() {
    let daemon = Daemon::start("workers = 2\n");
    daemon.create_repo("multi");
    let work = Work::clone(&daemon.repo_path("multi"));
    work.commit_flake(&[("ok", &passing("x"))]);
    work.push(&["HEAD:main"]);
    let base = builds_of(&daemon, "multi").len();
    assert_eq!(base, 1);
    work.commit("next");
    let output = work.push(&["HEAD:main", "HEAD:refs/heads/a", "HEAD:refs/heads/b/c"]);
    let builds = builds_of(&daemon, "multi");
    assert_eq!(builds.len(), 4, "{output}");
    let mut branches: Vec<&str> = builds[..3]
        .iter()
        .map(|b| b["branch"].as_str().unwrap())
        .collect();
    branches.sort();
    assert_eq!(branches, ["a", "b/c", "main"]);
    assert_eq!(
        output.matches("procurator-ci: build #").count(),
        3,
        "{output}"
    );

    git(work.path(), &["tag", "v1"]);
    let output = work.push(&["v1", ":refs/heads/a"]);
    assert_eq!(
        builds_of(&daemon, "multi").len(),
        4,
        "tag and deletion queue nothing: {output}"
    );
    assert!(!output.contains("procurator-ci: build #"), "{output}");
    assert!(
        output.contains("procurator-ci: tag v1 is not built (only branches are)"),
        "the pusher is told tags are not built: {output}"
    );
}

#[test]
fn declared_repos_are_created_and_hooks_reinstalled_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(
        dir.path(),
        "[repos.declared]\ndescription = \"From the config\"\n",
        &[],
    );
    daemon.spawn();
    let path = daemon.repo_path("declared");
    let hook = path.join("hooks/post-receive");
    let installed = std::fs::read_to_string(&hook).unwrap();
    assert!(installed.contains("procurator-ci-managed-hook"));
    assert!(installed.contains(common::binary().to_str().unwrap()));
    let (status, repo) = daemon.get("/api/repos/declared");
    assert_eq!(status, 200);
    assert_eq!(repo["description"], "From the config");
    assert_eq!(repo["declared"], true);
    assert_eq!(
        std::fs::read_to_string(path.join("description")).unwrap(),
        "From the config\n"
    );

    // An older hook of ours is upgraded; a foreign one elsewhere is kept.
    daemon.stop();
    std::fs::write(
        &hook,
        "#!/bin/sh\n# procurator-ci-managed-hook (old version)\n",
    )
    .unwrap();
    daemon.create_repo_offline("other");
    let foreign = daemon.repo_path("other").join("hooks/post-receive");
    std::fs::write(&foreign, "#!/bin/sh\necho foreign hook ran\n").unwrap();
    make_executable(&foreign);
    daemon.spawn();
    assert_eq!(std::fs::read_to_string(&hook).unwrap(), installed);
    let kept = daemon
        .repo_path("other")
        .join("hooks/post-receive.d/previous-post-receive");
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "#!/bin/sh\necho foreign hook ran\n"
    );
    let (status, _) = daemon.get("/api/repos/other");
    assert_eq!(status, 200, "repositories found on disk are served");
    let work = Work::clone(&daemon.repo_path("other"));
    work.commit_flake(&[("ok", &passing("x"))]);
    let output = work.push(&["HEAD:main"]);
    assert!(output.contains("procurator-ci: build #"), "{output}");
    assert!(
        output.contains("foreign hook ran"),
        "the kept hook still runs: {output}"
    );
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

trait Offline {
    fn create_repo_offline(&self, name: &str);
}

impl Offline for Daemon {
    /// A bare repository made by hand while the daemon is down.
    fn create_repo_offline(&self, name: &str) {
        let path = self.repo_path(name);
        git(
            Path::new("/"),
            &["init", "-q", "--bare", path.to_str().unwrap()],
        );
    }
}

#[test]
fn push_while_daemon_down_is_built_after_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(dir.path(), "", &[]);
    daemon.spawn();
    daemon.create_repo("late");
    let work = Work::clone(&daemon.repo_path("late"));
    work.commit_flake(&[("ok", &passing("x"))]);
    daemon.stop();
    let started = std::time::Instant::now();
    let output = work.push(&["HEAD:main"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        output.contains("procurator-ci: warning: cannot reach"),
        "{output}"
    );
    let commit = git(work.path(), &["rev-parse", "HEAD"]).trim().to_string();
    daemon.spawn();
    let builds = builds_of(&daemon, "late");
    assert_eq!(builds.len(), 1, "caught up at startup");
    assert_eq!(builds[0]["commit"], commit.as_str());
    assert_eq!(builds[0]["trigger"], "scan");
    // A second start queues nothing more, and an explicit scan neither.
    let (status, body) = daemon.post("/api/repos/late/scan", &json!({}));
    assert_eq!(status, 200);
    assert_eq!(body["queued"].as_array().unwrap().len(), 0);
}

#[test]
fn a_push_the_hook_could_not_deliver_is_built_while_the_daemon_runs() {
    let daemon = Daemon::start("scan_interval_secs = 2\nnix_bin = \"/bin/true\"\n");
    daemon.create_repo("missed");
    let work = Work::clone(&daemon.repo_path("missed"));
    let commit = work.commit("x");
    // The hook cannot connect (the socket's name is gone); the daemon runs
    // on, still listening on it.
    let socket = daemon.state().join("procurator-ci.sock");
    let hidden = daemon.state().join("hidden.sock");
    std::fs::rename(&socket, &hidden).unwrap();
    let output = work.push(&["HEAD:main"]);
    std::fs::rename(&hidden, &socket).unwrap();
    assert!(
        output.contains("procurator-ci: warning: cannot reach")
            && output.contains("every scan_interval_secs")
            && output.contains("will queue main"),
        "{output}"
    );
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "success", "{build}");
    assert_eq!(build["trigger"], "scan");
    // The scan that found the push brought the repository view to it.
    let (_, view) = daemon.get("/api/repos/missed");
    assert_eq!(view["branches"][0]["name"], "main", "{view}");
    assert_eq!(view["branches"][0]["commit"], commit.as_str(), "{view}");
    assert_eq!(view["branches"][0]["latest_build"]["status"], "success");
    assert!(
        daemon
            .log()
            .contains("Queued builds for pushes whose hook did not reach the daemon"),
        "{}",
        daemon.log()
    );
}

#[test]
fn enqueue_is_idempotent_and_authenticated() {
    // A nix that takes its time keeps the first build running and the
    // second queued while the requests race.
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow-nix");
    std::fs::write(&slow, "#!/bin/sh\nexec /bin/sleep 30\n").unwrap();
    make_executable(&slow);
    let mut daemon = Daemon::configure(
        dir.path(),
        // No periodic scan: it would queue the branch made below itself.
        &format!(
            "workers = 1\nnix_bin = \"{}\"\nscan_interval_secs = 86400\n",
            slow.display()
        ),
        &[],
    );
    daemon.spawn();
    daemon.create_repo("idem");
    let work = Work::clone(&daemon.repo_path("idem"));
    let older = work.commit_flake(&[("ok", &passing("x"))]);
    // Give the one worker something to do first so the next build stays queued.
    work.push(&["HEAD:main"]);
    let commit = work.commit("second");
    work.push(&["HEAD:refs/heads/other"]);
    let before = daemon.builds().len();
    assert_eq!(before, 2);
    let body = json!({"repo": "idem", "branch": "other", "commit": commit});
    let (first, a) = daemon.post("/api/builds", &body);
    let (second, b) = daemon.post("/api/builds", &body);
    assert_eq!(first, 200, "the hook's build is still queued: {a}");
    assert_eq!(second, 200, "{b}");
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["status"], "queued");
    assert_eq!(daemon.builds().len(), before);
    // A branch the repository does not have: 400 naming the field, the
    // branch and the repository; nothing queued.
    let fresh = json!({"repo": "idem", "branch": "third", "commit": commit});
    let (refused, reply) = daemon.post("/api/builds", &fresh);
    assert_eq!(refused, 400, "{reply}");
    assert_eq!(reply["error"]["field"], "branch", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("branch \"third\" does not exist in repository \"idem\""),
        "{message}"
    );
    assert_eq!(daemon.builds().len(), before);
    // Made without a push (so without the hook): found all the same.
    common::create_branches(&daemon.repo_path("idem"), [("third", commit.as_str())]);
    let (created, c) = daemon.post("/api/builds", &fresh);
    assert_eq!(created, 201, "{c}");
    assert_eq!(daemon.post("/api/builds", &fresh).1["id"], c["id"]);
    // An older commit of the branch is built on request (not only its head).
    let (created, o) = daemon.post(
        "/api/builds",
        &json!({"repo": "idem", "branch": "other", "commit": older}),
    );
    assert_eq!(created, 201, "{o}");
    assert_eq!(o["commit"], older.as_str());
    // A branch deleted since cannot be rebuilt.
    work.push(&[":refs/heads/third"]);
    let (refused, reply) = daemon.post(&format!("/api/builds/{}/rebuild", c["id"]), &json!({}));
    assert_eq!(refused, 400, "{reply}");
    assert_eq!(reply["error"]["field"], "branch", "{reply}");
    let before = daemon.builds().len();

    let wrong = daemon.request(
        "POST",
        "/api/builds",
        Some(&body.to_string()),
        Some("not-the-token-at-all"),
    );
    assert_eq!(wrong.0, 401);
    assert_eq!(wrong.1["error"]["code"], "unauthorized");
    let missing = daemon.request("POST", "/api/builds", Some(&body.to_string()), None);
    assert_eq!(missing.0, 401);
    let repo = daemon.request("POST", "/api/repos", Some(r#"{"name":"nope"}"#), None);
    assert_eq!(repo.0, 401);
    assert!(!daemon.repo_path("nope").exists());
    let delete = daemon.request(
        "DELETE",
        "/api/repos/idem?confirm=idem",
        None,
        Some("wrong-token-wrong-token"),
    );
    assert_eq!(delete.0, 401);
    assert_eq!(daemon.builds().len(), before, "no write without the token");
}

#[test]
fn private_reads_need_the_token() {
    let daemon = Daemon::start("public_read = false\n");
    assert_eq!(daemon.get("/api/builds").0, 401);
    assert_eq!(daemon.get("/api/repos").0, 401);
    assert_eq!(daemon.get("/api/health").0, 200);
    assert_eq!(
        daemon
            .request("GET", "/api/builds", None, Some(&daemon.token()))
            .0,
        200
    );
}

/// One raw HTTP/1.1 request with `headers`; returns the status, the head
/// and the body.
fn exchange(daemon: &Daemon, method: &str, path: &str, headers: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn the_read_cookie_admits_reads_only() {
    let daemon = Daemon::start("public_read = false\n");
    let token = daemon.token();
    // Only the token opens a session.
    for headers in [
        String::new(),
        "Authorization: Bearer not-the-token-at-all\r\n".to_string(),
    ] {
        let (status, head, _) = exchange(&daemon, "POST", "/api/session", &headers);
        assert_eq!(status, 401, "{headers:?}");
        assert!(!head.contains("set-cookie"), "{head}");
    }
    let (status, head, _) = exchange(
        &daemon,
        "POST",
        "/api/session",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(status, 204, "{head}");
    let set = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    assert!(set.contains("; path=/; httponly; samesite=strict"), "{set}");
    let pair = set.split(';').next().unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "procurator_ci_read");
    assert!(
        !value.is_empty() && !value.contains(token.as_str()),
        "{set}"
    );
    // The head's names were lower-cased; the value is hex either way.
    let cookie = format!("Cookie: other=1; procurator_ci_read={value}\r\n");

    // It reads: lists, a repository, the metrics.
    daemon.create_repo("seen");
    for path in ["/api/builds", "/api/repos", "/api/repos/seen", "/metrics"] {
        let (status, _, body) = exchange(&daemon, "GET", path, &cookie);
        assert_eq!(status, 200, "{path}: {body}");
    }
    // Only on requests from the daemon's own pages: a page on another port
    // of this host is "same-site", gets the cookie despite SameSite, and
    // must not learn that a private repository exists (a badge <img>).
    for site in ["same-site", "cross-site"] {
        let headers = format!("{cookie}Sec-Fetch-Site: {site}\r\n");
        for path in [
            "/api/repos/seen/badge.svg",
            "/api/repos/absent/badge.svg",
            "/api/builds",
        ] {
            let (status, _, body) = exchange(&daemon, "GET", path, &headers);
            assert_eq!(status, 403, "{site} {path}: {body}");
            assert!(body.contains("\"code\":\"cross_origin\""), "{body}");
        }
    }
    for site in ["same-origin", "none"] {
        let headers = format!("{cookie}Sec-Fetch-Site: {site}\r\n");
        let (status, _, body) = exchange(&daemon, "GET", "/api/repos/seen/badge.svg", &headers);
        assert_eq!(status, 200, "{site}: {body}");
    }
    // The token itself is not a cookie: it works from anywhere.
    let headers = format!("Authorization: Bearer {token}\r\nSec-Fetch-Site: cross-site\r\n");
    assert_eq!(exchange(&daemon, "GET", "/api/builds", &headers).0, 200);
    // It changes nothing: a mutation with only the cookie is refused.
    let (status, _, body) = exchange(&daemon, "POST", "/api/repos/seen/scan", &cookie);
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = exchange(&daemon, "DELETE", "/api/repos/seen?confirm=seen", &cookie);
    assert_eq!(status, 401);
    assert!(daemon.repo_path("seen").exists());
    // A cookie that is not exactly this token's reads nothing.
    let tampered = format!("Cookie: procurator_ci_read={}0\r\n", value);
    assert_eq!(exchange(&daemon, "GET", "/api/builds", &tampered).0, 401);
    let bare = format!("Cookie: procurator_ci_read={token}\r\n");
    assert_eq!(exchange(&daemon, "GET", "/api/builds", &bare).0, 401);
    // Anyone may end a session: it only clears the cookie.
    let (status, head, _) = exchange(&daemon, "DELETE", "/api/session", "");
    assert_eq!(status, 204);
    assert!(
        head.contains(
            "set-cookie: procurator_ci_read=; path=/; httponly; samesite=strict; max-age=0"
        ),
        "{head}"
    );
}

#[test]
fn delete_needs_confirmation_and_keeps_history() {
    let daemon = Daemon::start("");
    daemon.create_repo("gone");
    let work = Work::clone(&daemon.repo_path("gone"));
    work.commit_flake(&[("ok", &passing("x"))]);
    work.push(&["HEAD:main"]);
    let token = daemon.token();
    let (status, body) = daemon.request("DELETE", "/api/repos/gone", None, Some(&token));
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "confirm");
    assert!(daemon.repo_path("gone").exists());
    let (status, _) = daemon.request("DELETE", "/api/repos/gone?confirm=gone", None, Some(&token));
    assert_eq!(status, 204);
    assert!(!daemon.repo_path("gone").exists());
    assert_eq!(daemon.get("/api/repos/gone").0, 404);
    assert_eq!(
        builds_of(&daemon, "gone").len(),
        1,
        "history stays readable"
    );
    assert_eq!(daemon.create_repo("gone")["name"], "gone");
    let (status, _) = daemon.post("/api/repos", &json!({"name": "gone"}));
    assert_eq!(status, 409);
}

/// A `git` on the daemon's PATH that records every argument vector.
fn recording_git(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let script = bin.join("git");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> {}/git-args; done\nexec {} \"$@\"\n",
            dir.display(),
            real.trim()
        ),
    )
    .unwrap();
    make_executable(&script);
    bin
}

#[test]
fn hostile_inputs_get_json_errors_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = recording_git(dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut daemon = Daemon::configure(dir.path(), "", &[("PATH", &path)]);
    daemon.spawn();
    daemon.create_repo("target");
    let work = Work::clone(&daemon.repo_path("target"));
    let commit = work.commit_flake(&[("ok", &passing("x"))]);
    work.push(&["HEAD:main"]);
    let listing = || {
        let mut entries: Vec<String> = std::fs::read_dir(daemon.state().join("repos"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        entries.sort();
        entries
    };
    let before = listing();
    let outside_before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let long = "a".repeat(10_000);
    let hostile = [
        "../x",
        "a/../../b",
        "x.git",
        "-h",
        "--upload-pack=touch /tmp/p",
        "ext::sh -c id",
        "a\0b",
        "a\nb",
        long.as_str(),
        "dеmo",
        "ＡＢＣ",
        "..",
        ".",
        "",
        " ",
        "a b",
        "$(id)",
        "`id`",
        "a;b",
        "%2e%2e",
    ];
    let token = daemon.token();
    for name in hostile {
        let body = json!({"name": name}).to_string();
        let (status, reply) = daemon.request("POST", "/api/repos", Some(&body), Some(&token));
        assert_eq!(status, 400, "{name:?}: {reply}");
        assert_eq!(reply["error"]["field"], "name", "{name:?}");
        let build = json!({"repo": name, "branch": "main", "commit": commit}).to_string();
        let (status, reply) = daemon.request("POST", "/api/builds", Some(&build), Some(&token));
        assert!((400..500).contains(&status), "{name:?}: {reply}");
        assert!(reply["error"]["message"].is_string());
        let git_accepts = !name.contains('\0')
            && std::process::Command::new("git")
                .args(["check-ref-format", "--branch", name])
                .output()
                .unwrap()
                .status
                .success();
        let valid = git_accepts && name.is_ascii() && name.len() <= 255 && !name.starts_with('-');
        if valid {
            // Odd but valid: built once the repository has the branch.
            common::create_branches(&daemon.repo_path("target"), [(name, commit.as_str())]);
        }
        let branch = json!({"repo": "target", "branch": name, "commit": commit}).to_string();
        let (status, reply) = daemon.request("POST", "/api/builds", Some(&branch), Some(&token));
        if valid {
            assert!(
                matches!(status, 200 | 201),
                "branch {name:?} is valid: {reply}"
            );
        } else {
            assert_eq!(status, 400, "branch {name:?}: {reply}");
            assert_eq!(reply["error"]["field"], "branch", "{name:?}");
        }
        let bad_commit = json!({"repo": "target", "branch": "main", "commit": name}).to_string();
        let (status, reply) =
            daemon.request("POST", "/api/builds", Some(&bad_commit), Some(&token));
        assert_eq!(status, 400, "commit {name:?}: {reply}");
        assert_eq!(reply["error"]["field"], "commit");
    }
    for commit in [
        commit.to_uppercase(),
        commit[..7].to_string(),
        "0".repeat(40),
        format!("-{}", &commit[1..]),
    ] {
        let body = json!({"repo": "target", "branch": "main", "commit": commit}).to_string();
        let (status, reply) = daemon.request("POST", "/api/builds", Some(&body), Some(&token));
        assert_eq!(status, 400, "{commit}: {reply}");
        assert_eq!(reply["error"]["field"], "commit");
    }
    let (status, _) = daemon.request("POST", "/api/builds", Some(r#"{"repo":"nope","branch":"main","commit":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#), Some(&token));
    assert_eq!(status, 404);
    for path in [
        "/api/repos/..%2F..%2Fetc",
        "/api/repos/-h",
        "/api/builds/-1",
        "/api/builds/1%20OR%201=1",
        "/api/builds?repo=x%27%3Bdrop",
        "/api/builds?limit=-1",
        "/api/builds?limit=99999999999",
        "/api/builds?before=abc",
        "/api/builds?offset=1",
    ] {
        let (status, reply) = daemon.get(path);
        assert!((400..500).contains(&status), "{path}: {status} {reply}");
        assert!(reply["error"]["code"].is_string(), "{path}: {reply}");
    }
    assert_eq!(listing(), before, "nothing created under repos");
    let outside_after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(outside_before.len(), outside_after.len());
    assert!(!Path::new("/tmp/p").exists());
    let args = std::fs::read_to_string(dir.path().join("git-args")).unwrap();
    for arg in args.lines() {
        assert!(
            !hostile
                .iter()
                .any(|h| !h.is_empty() && h.len() > 1 && arg == *h),
            "git received {arg:?}"
        );
    }
    assert_eq!(daemon.get("/api/health").0, 200);
}

#[test]
fn flake_reference_is_accepted_by_nix() {
    let daemon = Daemon::start("nix_bin = \"/bin/true\"\n");
    daemon.create_repo("refs");
    let work = Work::clone(&daemon.repo_path("refs"));
    let commit = work.commit_flake(&[("ok", &passing("x"))]);
    work.push(&["HEAD:refs/heads/feature/a+b"]);
    let flake = procurator_ci::build::nix::flake_ref(
        &daemon.repo_path("refs"),
        "feature/a+b",
        &commit,
        false,
    );
    let out = common::run_ok(
        std::process::Command::new("nix")
            .args(["flake", "metadata", "--json", &flake])
            .env("NIX_CONFIG", common::NIX_CONFIG),
    );
    let metadata: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(metadata["locked"]["rev"], commit.as_str());
    assert_eq!(metadata["locked"]["ref"], "refs/heads/feature/a+b");
}

#[test]
fn a_branch_name_that_cannot_be_built_is_refused_at_push_time_with_the_reason() {
    let daemon = Daemon::start("");
    daemon.create_repo("names");
    let path = daemon.repo_path("names");
    assert!(path.join("hooks/pre-receive").is_file());
    let work = Work::clone(&path);
    work.commit_flake(&[("ok", &passing(&common::nonce("names")))]);
    let out = std::process::Command::new("git")
        .args(["push", "origin", "HEAD:refs/heads/feature/ä-x"])
        .current_dir(work.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the push was accepted: {said}");
    assert!(
        said.contains(
            "procurator-ci: refusing the push: branch \"feature/ä-x\" cannot be built: its name \
             must be printable ASCII"
        ) && said.contains("'ä' U+00E4"),
        "{said}"
    );
    // Nothing was stored, so nothing waits unbuilt.
    let refs = git(&path, &["for-each-ref", "--format=%(refname)"]);
    assert!(refs.trim().is_empty(), "{refs}");
    assert!(builds_of(&daemon, "names").is_empty());
    // A buildable name goes through as before.
    let output = work.push(&["HEAD:refs/heads/feature/a-x"]);
    assert!(output.contains("queued for feature/a-x"), "{output}");
}

#[test]
fn a_commit_with_submodules_is_fetched_with_them() {
    // The submodule lives in a repository of its own, as it would on a
    // forge; git refuses file:// submodules unless told, as it would not
    // refuse https.
    let scratch = tempfile::tempdir().unwrap();
    let dep = scratch.path().join("dep");
    std::fs::create_dir(&dep).unwrap();
    git(&dep, &["init", "-q", "-b", "main"]);
    let marker = common::nonce("from-the-submodule");
    std::fs::write(dep.join("data.txt"), &marker).unwrap();
    git(&dep, &["add", "-A"]);
    git(&dep, &["commit", "-q", "-m", "dep"]);
    let allow_file = [
        ("GIT_CONFIG_COUNT", "1"),
        ("GIT_CONFIG_KEY_0", "protocol.file.allow"),
        ("GIT_CONFIG_VALUE_0", "always"),
    ];
    let mut daemon = Daemon::configure(scratch.path(), "", &allow_file);
    daemon.spawn();
    daemon.create_repo("with-submodules");
    let work = Work::clone(&daemon.repo_path("with-submodules"));
    let url = format!("file://{}", dep.display());
    git(
        work.path(),
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &url,
            "vendor/dep",
        ],
    );
    std::fs::write(
        work.path().join("flake.nix"),
        "{\n  outputs = { self }: {\n    checks.x86_64-linux.sub = derivation { name = \"sub\"; \
         system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" \
         \"echo ${builtins.readFile ./vendor/dep/data.txt}; echo ok > $out\" ]; };\n  };\n}\n",
    )
    .unwrap();
    let commit = work.commit("with a submodule");
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(build["status"], "success", "{build}\n{log}");
    assert!(log.contains("&submodules=1"), "{log}");
    assert!(log.contains(&format!("sub> {marker}")), "{log}");
}

#[test]
fn api_errors_say_exactly_what_is_wrong() {
    let daemon = Daemon::start("");
    let token = daemon.token();
    // The field at fault, not its value.
    let (status, body) = daemon.request("POST", "/api/repos", Some(r#"{"name":5}"#), Some(&token));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "name", "{body}");
    // A token without its scheme is told the scheme.
    let (status, _, text) = exchange(
        &daemon,
        "POST",
        "/api/repos",
        &format!("Authorization: {token}\r\n"),
    );
    assert_eq!(status, 401, "{text}");
    assert!(
        text.contains("use `Authorization: Bearer <token>`"),
        "{text}"
    );
    let (status, body) = daemon.request(
        "POST",
        "/api/repos",
        Some(r#"{"name":"x"}"#),
        Some("not-the-token"),
    );
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "the API token is wrong");
    // A filter on a repository that never existed is a 404, not an empty
    // page.
    let (status, body) = daemon.get("/api/builds?repo=nonexistent");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"nonexistent\" not found"),
        "{body}"
    );
    daemon.create_repo("exists");
    assert_eq!(daemon.get("/api/builds?repo=exists").0, 200);
}

#[test]
fn views_and_badges_come_from_known_heads_without_a_git_process_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let bin = recording_git(dir.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut daemon = Daemon::configure(dir.path(), "nix_bin = \"/bin/true\"\n", &[("PATH", &path)]);
    daemon.spawn();
    daemon.create_repo("heads");
    let work = Work::clone(&daemon.repo_path("heads"));
    let first = work.commit("one");
    work.push(&["HEAD:main", "HEAD:refs/heads/side"]);
    let listings = || {
        std::fs::read_to_string(dir.path().join("git-args"))
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "for-each-ref")
            .count()
    };
    let (status, detail) = daemon.get("/api/repos/heads");
    assert_eq!(status, 200);
    assert_eq!(detail["branches"].as_array().unwrap().len(), 2, "{detail}");
    let before = listings();
    for _ in 0..30 {
        assert_eq!(daemon.get("/api/repos/heads").0, 200);
        let (status, svg) =
            daemon.request_text("GET", "/api/repos/heads/badge.svg?branch=main", None, None);
        assert_eq!(status, 200);
        assert!(svg.contains("build: "), "{svg}");
    }
    assert_eq!(listings(), before, "views and badges started git");
    // A push moves a head: the next view shows it.
    let second = work.commit("two");
    work.push(&["HEAD:main"]);
    let (_, detail) = daemon.get("/api/repos/heads");
    let main = detail["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "main")
        .unwrap()
        .clone();
    assert_eq!(main["commit"], second.as_str(), "{detail}");
    assert_ne!(first, second);
    // A deleted branch is gone from the view (the hook tells the daemon).
    work.push(&[":refs/heads/side"]);
    let (_, detail) = daemon.get("/api/repos/heads");
    let names: Vec<&str> = detail["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main"], "{detail}");
    let (_, svg) = daemon.request_text("GET", "/api/repos/heads/badge.svg?branch=side", None, None);
    assert!(svg.contains("build: unknown"), "{svg}");
}

/// Branch `name` of repository view `view`, if listed.
fn branch_in(view: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    view["branches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
}

/// The repository view and list answer from state the daemon keeps in
/// memory (issue 15); each change must be in the very next answer: a build
/// queued, started, cancelled and finished, a new branch, a new head, a
/// branch deleted and pushed again (with its earlier builds).
#[test]
fn the_repository_view_shows_each_change_in_the_next_answer() {
    let dir = tempfile::tempdir().unwrap();
    // Builds run while `hold` exists, so that their states can be seen.
    let hold = dir.path().join("hold");
    let nix = dir.path().join("held-nix");
    std::fs::write(
        &nix,
        format!(
            "#!/bin/sh\nwhile [ -e {} ]; do /bin/sleep 0.05; done\nexit 0\n",
            hold.display()
        ),
    )
    .unwrap();
    make_executable(&nix);
    let mut daemon = Daemon::configure(
        dir.path(),
        &format!(
            "workers = 1\nscan_interval_secs = 3600\ncancel_superseded = false\nnix_bin = \"{}\"\n",
            nix.display()
        ),
        &[],
    );
    daemon.spawn();
    daemon.create_repo("live");
    let view = || {
        let (status, view) = daemon.get("/api/repos/live");
        assert_eq!(status, 200, "{view}");
        view
    };
    let badge = |branch: &str| {
        let (status, svg) = daemon.request_text(
            "GET",
            &format!("/api/repos/live/badge.svg?branch={branch}"),
            None,
            None,
        );
        assert_eq!(status, 200);
        svg
    };
    let work = Work::clone(&daemon.repo_path("live"));
    std::fs::write(&hold, "").unwrap();

    let c1 = work.commit("one");
    work.push(&["HEAD:main"]);
    let b1 = daemon.build_of("main", &c1);
    daemon.wait_build(b1, Duration::from_secs(60), |b| b["status"] == "running");
    let main = branch_in(&view(), "main").expect("main listed");
    assert_eq!(main["commit"], c1.as_str());
    assert_eq!(main["latest_build"]["id"], b1);
    assert_eq!(main["latest_build"]["status"], "running", "{main}");

    // A new branch, its build queued behind the running one.
    let c2 = work.commit("two");
    work.push(&["HEAD:refs/heads/feature"]);
    let b2 = daemon.build_of("feature", &c2);
    let feature = branch_in(&view(), "feature").expect("a pushed branch is listed at once");
    assert_eq!(feature["commit"], c2.as_str());
    assert_eq!(feature["latest_build"]["id"], b2);
    assert_eq!(feature["latest_build"]["status"], "queued", "{feature}");
    assert!(badge("feature").contains("build: running"));
    let (status, _) = daemon.post(&format!("/api/builds/{b2}/cancel"), &json!({}));
    assert_eq!(status, 200);
    let feature = branch_in(&view(), "feature").unwrap();
    assert_eq!(feature["latest_build"]["status"], "cancelled", "{feature}");
    assert!(badge("feature").contains("build: unknown"));

    // A new head on a branch.
    let c3 = work.commit("three");
    work.push(&["HEAD:main"]);
    let b3 = daemon.build_of("main", &c3);
    let main = branch_in(&view(), "main").unwrap();
    assert_eq!(main["commit"], c3.as_str());
    assert_eq!(main["latest_build"]["id"], b3);
    assert_eq!(main["latest_build"]["status"], "queued", "{main}");

    // Builds finishing.
    std::fs::remove_file(&hold).unwrap();
    daemon.wait_final(b1);
    assert_eq!(daemon.wait_final(b3)["status"], "success");
    let now = view();
    let main = branch_in(&now, "main").unwrap();
    assert_eq!(main["latest_build"]["id"], b3);
    assert_eq!(main["latest_build"]["status"], "success", "{main}");
    assert_eq!(main["stats"]["builds"], 2, "{main}");
    assert_eq!(now["stats"]["builds"], 2, "{now}");
    assert!(badge("main").contains("build: passing"));
    let (_, list) = daemon.get("/api/repos");
    let listed = &list["repos"].as_array().unwrap()[0];
    assert_eq!(listed["name"], "live");
    assert_eq!(listed["last_build"]["id"], b3, "{list}");
    assert_eq!(listed["last_build"]["status"], "success", "{list}");

    let c4 = work.commit("four");
    work.push(&["HEAD:refs/heads/feature"]);
    daemon.wait_final(daemon.build_of("feature", &c4));
    let feature = branch_in(&view(), "feature").unwrap();
    assert_eq!(feature["commit"], c4.as_str());
    assert_eq!(feature["stats"]["builds"], 1, "{feature}");

    // A branch deleted by a push is gone; pushed again, its earlier builds
    // count again.
    work.push(&[":refs/heads/feature"]);
    assert_eq!(branch_names(&view()), ["main"]);
    assert!(badge("feature").contains("build: unknown"));
    work.push(&["HEAD:refs/heads/feature"]);
    let again: Vec<i64> = builds_of(&daemon, "live")
        .iter()
        .filter(|b| b["branch"] == "feature" && b["commit"] == c4.as_str())
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    assert_eq!(again.len(), 2, "a second build of the pushed head");
    daemon.wait_final(again[0]);
    let feature = branch_in(&view(), "feature").expect("listed again");
    assert_eq!(feature["latest_build"]["id"], again[0]);
    assert_eq!(feature["stats"]["builds"], 2, "{feature}");
    assert_eq!(branch_names(&view()), ["feature", "main"]);
}

/// A restart rebuilds the view from the database and git, and pushes made
/// while the daemon was down (a new head, a new branch, a deletion) are in
/// it once the daemon is back.
#[test]
fn the_repository_view_is_rebuilt_at_start_with_the_pushes_made_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(
        dir.path(),
        "nix_bin = \"/bin/true\"\nscan_interval_secs = 3600\n",
        &[],
    );
    daemon.spawn();
    daemon.create_repo("kept");
    let work = Work::clone(&daemon.repo_path("kept"));
    let c1 = work.commit("one");
    work.push(&["HEAD:main", "HEAD:refs/heads/side"]);
    daemon.wait_final(daemon.build_of("main", &c1));
    daemon.wait_final(daemon.build_of("side", &c1));
    let c2 = work.commit("two");
    work.push(&["HEAD:main"]);
    daemon.wait_final(daemon.build_of("main", &c2));
    let (_, before) = daemon.get("/api/repos/kept");
    assert_eq!(branch_in(&before, "main").unwrap()["stats"]["builds"], 2);
    let (_, list_before) = daemon.get("/api/repos");

    daemon.stop();
    daemon.spawn();
    let (_, after) = daemon.get("/api/repos/kept");
    assert_eq!(after, before, "the same view after a restart");
    assert_eq!(daemon.get("/api/repos").1, list_before);

    daemon.stop();
    let c3 = work.commit("three");
    let output = work.push(&["HEAD:main", "HEAD:refs/heads/offline", ":refs/heads/side"]);
    assert!(output.contains("cannot reach"), "{output}");
    daemon.spawn();
    let b3 = daemon.build_of("main", &c3);
    let view = daemon.get("/api/repos/kept").1;
    let mut names = branch_names(&view);
    names.sort();
    assert_eq!(names, ["main", "offline"], "{view}");
    let main = branch_in(&view, "main").unwrap();
    assert_eq!(main["commit"], c3.as_str());
    assert_eq!(main["latest_build"]["id"], b3);
    daemon.wait_final(b3);
    let view = daemon.get("/api/repos/kept").1;
    let main = branch_in(&view, "main").unwrap();
    assert_eq!(main["latest_build"]["status"], "success", "{main}");
    assert_eq!(main["stats"]["builds"], 3, "{main}");
    assert_eq!(branch_in(&view, "offline").unwrap()["commit"], c3.as_str());
}

/// `GET /api/repos/{name}` with `Accept-Encoding: gzip`: the status, the
/// `Content-Encoding` and the decoded body.
/// A branch made in the repository without the hook (`git update-ref`) and
/// then built through the API is in the view with that build at once, not
/// only after the next scan.
#[test]
fn a_branch_made_without_the_hook_is_in_the_view_once_built_through_the_api() {
    let daemon = Daemon::start("nix_bin = \"/bin/true\"\nscan_interval_secs = 86400\n");
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    let c1 = work.commit("one");
    work.push(&["HEAD:main"]);
    common::create_branches(&daemon.repo_path("r"), [("side", c1.as_str())]);
    let (_, view) = daemon.get("/api/repos/r");
    assert!(branch_in(&view, "main").is_some(), "{view}");
    assert!(
        branch_in(&view, "side").is_none(),
        "no hook told the daemon: {view}"
    );
    let (status, build) = daemon.post(
        "/api/builds",
        &json!({"repo": "r", "branch": "side", "commit": c1}),
    );
    assert_eq!(status, 201, "{build}");
    let (_, view) = daemon.get("/api/repos/r");
    let side = branch_in(&view, "side").expect("the built branch is listed");
    assert_eq!(side["commit"], c1.as_str());
    assert_eq!(side["latest_build"]["id"], build["id"], "{side}");
}

fn repo_view_gzip(daemon: &Daemon, name: &str) -> (u16, Option<String>, serde_json::Value) {
    use std::io::{Read, Write};
    let address = daemon.base().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET /api/repos/{name} HTTP/1.1\r\nHost: {address}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    let body = &raw[split + 4..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        procurator_ci::repos::hook::dechunk(body)
    } else {
        body.to_vec()
    };
    let encoding = header("content-encoding");
    let json = if encoding.as_deref() == Some("gzip") {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut text)
            .unwrap();
        text
    } else {
        body
    };
    (status, encoding, serde_json::from_slice(&json).unwrap())
}

/// A client that accepts gzip gets the same view, compressed, and the
/// compressed answer changes with the view.
#[test]
fn the_repository_view_is_gzipped_for_clients_that_accept_it_and_stays_current() {
    let daemon = Daemon::start("nix_bin = \"/bin/true\"\nscan_interval_secs = 3600\n");
    daemon.create_repo("zipped");
    let work = Work::clone(&daemon.repo_path("zipped"));
    let c1 = work.commit("one");
    work.push(&["HEAD:main"]);
    daemon.wait_final(daemon.build_of("main", &c1));
    let (status, encoding, zipped) = repo_view_gzip(&daemon, "zipped");
    assert_eq!(status, 200);
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert_eq!(zipped, daemon.get("/api/repos/zipped").1);
    assert_eq!(zipped["branches"][0]["commit"], c1.as_str());
    // Asked again: the kept encoding, still the same view.
    assert_eq!(repo_view_gzip(&daemon, "zipped").2, zipped);
    let c2 = work.commit("two");
    work.push(&["HEAD:main"]);
    let (_, _, after) = repo_view_gzip(&daemon, "zipped");
    assert_eq!(after["branches"][0]["commit"], c2.as_str(), "{after}");
    let (status, encoding, _) = repo_view_gzip(&daemon, "nothing-here");
    assert_eq!((status, encoding), (404, None));
}

/// The names a page of the repository view lists, in its order.
fn page_names(daemon: &Daemon, query: &str) -> (serde_json::Value, Vec<String>) {
    let (status, page) = daemon.get(&format!("/api/repos/paged{query}"));
    assert_eq!(status, 200, "{query}: {page}");
    let names = branch_names(&page);
    (page, names)
}

/// The repository view lists a page of branches, the newest build first
/// (ties by name), with how many there are, the default branch whatever the
/// page, and pages that together list every branch exactly once.
#[test]
fn the_repository_view_pages_its_branches_newest_build_first() {
    let daemon = Daemon::start("nix_bin = \"/bin/true\"\nscan_interval_secs = 3600\n");
    daemon.create_repo("paged");
    let work = Work::clone(&daemon.repo_path("paged"));
    let main_commit = work.commit("main");
    work.push(&["HEAD:main"]);
    let main_build = daemon.build_of("main", &main_commit);
    // 250 more branches in one push, after main: main's build is the
    // oldest, so main is on no page but the last.
    let commit = work.commit("wide");
    let refspecs: Vec<String> = (0..250)
        .map(|i| format!("HEAD:refs/heads/b-{i:03}"))
        .collect();
    let pushed = work.push(&refspecs.iter().map(String::as_str).collect::<Vec<_>>());
    let latest = |branch: &str| -> i64 {
        builds_of(&daemon, "paged")
            .iter()
            .filter(|b| b["branch"] == branch)
            .map(|b| b["id"].as_i64().unwrap())
            .max()
            .unwrap_or_else(|| panic!("no build of {branch}"))
    };
    // The hook has a few seconds for all 250 heads; on a loaded machine it
    // leaves the rest to the catch-up, which a scan runs now.
    let (status, _) = daemon.post("/api/repos/paged/scan", &json!({}));
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let builds = loop {
        let builds = builds_of(&daemon, "paged");
        if builds.len() >= 251 {
            break builds;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} builds after the push: {pushed}\n{}",
            builds.len(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut expected: Vec<(i64, String)> = std::iter::once("main".to_string())
        .chain((0..250).map(|i| format!("b-{i:03}")))
        .map(|name| {
            let id = builds
                .iter()
                .filter(|b| b["branch"] == name.as_str())
                .map(|b| b["id"].as_i64().unwrap())
                .max()
                .unwrap_or_else(|| panic!("no build of {name}"));
            (-id, name)
        })
        .collect();
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, name)| name).collect();
    assert_eq!(expected.last().map(String::as_str), Some("main"));

    // The default page: the first 100, and the default branch although it
    // is not among them.
    let (first, names) = page_names(&daemon, "");
    assert_eq!(first["branches_total"], 251, "{first}");
    assert_eq!(first["branches_offset"], 0);
    assert_eq!(first["branches_next_offset"], 100);
    assert_eq!(names, expected[..100], "newest build first");
    assert!(!names.contains(&"main".to_string()));
    let default = &first["default_branch"];
    assert_eq!(default["name"], "main", "{default}");
    assert_eq!(default["commit"], main_commit.as_str());
    assert_eq!(default["latest_build"]["id"], main_build, "{default}");
    assert_eq!(
        page_names(&daemon, "?branches_offset=0&branches_limit=100").0,
        first,
        "the default page asked for explicitly"
    );

    // Pages of 60 list every branch once, in the same order.
    let mut paged = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let (page, names) =
            page_names(&daemon, &format!("?branches_offset={at}&branches_limit=60"));
        assert_eq!(page["branches_offset"], at);
        assert_eq!(page["branches_total"], 251);
        assert_eq!(page["default_branch"]["name"], "main");
        assert!(names.len() <= 60 && !names.is_empty(), "{page}");
        paged.extend(names);
        offset = page["branches_next_offset"].as_i64();
    }
    assert_eq!(paged, expected, "the pages list every branch once");
    let (all, names) = page_names(&daemon, "?branches_limit=1000");
    assert_eq!(names, expected);
    assert_eq!(all["branches_next_offset"], serde_json::Value::Null);
    let (past, names) = page_names(&daemon, "?branches_offset=5000");
    assert!(names.is_empty());
    assert_eq!(past["branches_total"], 251);
    assert_eq!(past["branches_next_offset"], serde_json::Value::Null);

    // A branch pushed again comes first.
    let again = work.commit("again");
    work.push(&["HEAD:refs/heads/b-000"]);
    let (_, names) = page_names(&daemon, "?branches_limit=3");
    assert_eq!(names[0], "b-000");
    assert_eq!(latest("b-000"), daemon.build_of("b-000", &again));
    assert_ne!(commit, again);

    // Bad values name their field.
    for (query, field) in [
        ("branches_offset=-1", "branches_offset"),
        ("branches_offset=x", "branches_offset"),
        ("branches_limit=0", "branches_limit"),
        ("branches_limit=1001", "branches_limit"),
        ("branches_limit=ten", "branches_limit"),
    ] {
        let (status, body) = daemon.get(&format!("/api/repos/paged?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, body) = daemon.get("/api/repos/paged?branches_page=2");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("branches_page"),
        "{body}"
    );
}
