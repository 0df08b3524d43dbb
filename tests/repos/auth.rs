//! Who may do what: the enqueue token, private reads and the read cookie.

use serde_json::json;

use crate::common::{self, Daemon, Work, passing};
use crate::{exchange, make_executable};

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
