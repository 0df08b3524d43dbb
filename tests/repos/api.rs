//! The API's answers to bad requests: confirmation before deletion, hostile
//! inputs and errors that say exactly what is wrong.

use std::path::Path;

use serde_json::json;

use crate::common::{self, Daemon, Work, passing};
use crate::{builds_of, exchange, recording_git};

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
    let kept = builds_of(&daemon, "gone");
    assert_eq!(kept.len(), 1, "history stays readable");
    // Its builds cannot be rebuilt, and the answer says why rather than a
    // 404 that reads as "no such build" (issue 24).
    let id = kept[0]["id"].as_i64().unwrap();
    daemon.wait_final(id);
    let (status, body) = daemon.request(
        "POST",
        &format!("/api/builds/{id}/rebuild"),
        None,
        Some(&token),
    );
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("build #{id} cannot be rebuilt"))
            && message.contains("\"gone\" was deleted"),
        "{body}"
    );
    assert_eq!(daemon.create_repo("gone")["name"], "gone");
    let (status, _) = daemon.post("/api/repos", &json!({"name": "gone"}));
    assert_eq!(status, 409);
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
