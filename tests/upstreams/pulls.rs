//! Pull and merge requests, announced by signed webhooks: their heads are
//! fetched from the upstream (`refs/pull/N/head`, GitLab's
//! `refs/merge-requests/N/head`) and built; a new head supersedes the
//! running build of the same request; closing cancels its builds. A fork's
//! request waits for a maintainer's approval unless the repository opts
//! in, and is built untrusted either way.

use std::time::Duration;

use serde_json::Value;

use super::webhooks::{SECRET, deliver, fixture, github};
use super::{builds_of, upstream_status, wait_until};
use crate::common::{Daemon, git};
use crate::servers::Upstream;

/// A GitHub `pull_request` delivery of `action` for request `number`
/// whose head lives in `head_repo`.
fn pull_request(daemon: &Daemon, number: u64, action: &str, head_repo: &str, id: &str) -> Value {
    let mut body: Value = serde_json::from_str(&fixture("github-pull_request.json")).unwrap();
    body["action"] = action.into();
    body["number"] = number.into();
    body["pull_request"]["number"] = number.into();
    body["pull_request"]["head"]["repo"]["full_name"] = head_repo.into();
    let body = body.to_string();
    let (status, answer) = deliver(daemon, "app", &github("pull_request", id, &body), &body);
    assert_eq!(status, 202, "{answer}");
    answer
}

/// Commits a new flake in the upstream's work tree and pushes it to `target`
/// (a ref the forge would publish); returns the commit.
fn push_to(upstream: &Upstream, target: &str) -> String {
    let commit = upstream
        .work
        .commit_flake(&[("check", &crate::common::ok_script())]);
    upstream.work.push(&["--force", &format!("HEAD:{target}")]);
    commit
}

fn daemon(root: &std::path::Path, upstream: &Upstream, extra: &str, nix: &str) -> Daemon {
    let secret = root.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    Daemon::start(&format!(
        "nix_bin = \"{nix}\"\nscan_interval_secs = 3600\nworkers = 1\n[repos.app]\n\
         upstream = \"file://{}\"\npoll_interval_secs = 0\nwebhook_secret_file = \"{}\"\n{extra}",
        upstream.bare.display(),
        secret.display()
    ))
}

#[test]
fn pull_requests_build_supersede_and_cancel_when_closed() {
    let root = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(root.path(), "app");
    upstream.push_new("main");
    // "nix" that does not end before the test: builds stay running until
    // cancelled (and end by themselves should the test fail).
    let slow = root.path().join("slow-nix");
    std::fs::write(&slow, "#!/bin/sh\nexec sleep 120\n").unwrap();
    crate::servers::make_executable(&slow);
    let daemon = daemon(root.path(), &upstream, "", slow.to_str().unwrap());
    wait_until(&daemon, Duration::from_secs(20), "the first look", || {
        upstream_status(&daemon, "app")["state"] == "ok"
    });

    let first = push_to(&upstream, "refs/pull/1/head");
    pull_request(&daemon, 1, "opened", "team/app", "p-1");
    let one = upstream_build_of(&daemon, "refs/pull/1/head", &first, "pull_request");
    let one_id = one["id"].as_i64().unwrap();
    assert!(one.get("untrusted").is_none(), "{one}");
    // The main branch's build holds the only worker; cancel it so that the
    // request's build runs.
    for b in builds_of(&daemon, "app") {
        if b["branch"] == "main" {
            daemon.post(
                &format!("/api/builds/{}/cancel", b["id"]),
                &serde_json::json!({}),
            );
        }
    }
    daemon.wait_build(one_id, Duration::from_secs(30), |b| {
        b["status"] == "running"
    });

    // A new head of the same request supersedes the running build.
    let second = push_to(&upstream, "refs/pull/1/head");
    pull_request(&daemon, 1, "synchronize", "team/app", "p-2");
    let two = upstream_build_of(&daemon, "refs/pull/1/head", &second, "pull_request");
    let cancelled = daemon.wait_final(one_id);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");

    // Closed: its build is cancelled and its head leaves the mirror.
    pull_request(&daemon, 1, "closed", "team/app", "p-3");
    let two = daemon.wait_final(two["id"].as_i64().unwrap());
    assert_eq!(two["status"], "cancelled", "{two}");
    let local = daemon.repo_path("app");
    wait_until(&daemon, Duration::from_secs(10), "the head deleted", || {
        git(&local, &["for-each-ref", "refs/pull/"])
            .trim()
            .is_empty()
    });

    // GitLab's merge request: its own ref.
    let mr = push_to(&upstream, "refs/merge-requests/3/head");
    let body = fixture("gitlab-merge_request.json");
    let headers = vec![
        ("X-Gitlab-Event", "Merge Request Hook".to_string()),
        ("X-Gitlab-Event-UUID", "mr-1".to_string()),
        ("X-Gitlab-Token", SECRET.to_string()),
    ];
    let (status, answer) = deliver(&daemon, "app", &headers, &body);
    assert_eq!(status, 202, "{answer}");
    upstream_build_of(&daemon, "refs/merge-requests/3/head", &mr, "pull_request");
}

/// A fork's request waits for approval: nothing is built until a
/// maintainer approves it with the token; the build is untrusted.
#[test]
fn a_forks_pull_request_waits_for_approval_and_builds_untrusted() {
    let root = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(root.path(), "app");
    upstream.push_new("main");
    // A notification that runs a command (the operator's environment): it
    // hears of the trusted build, never of the fork's.
    let heard = root.path().join("heard");
    let notify = format!(
        "[[notify]]\non = \"finished\"\ncommand = [\"/bin/sh\", \"-c\", \"cat >> {}; echo >> {}\"]\n",
        heard.display(),
        heard.display()
    );
    let daemon = daemon(root.path(), &upstream, &notify, "/bin/true");
    wait_until(&daemon, Duration::from_secs(20), "the first look", || {
        upstream_status(&daemon, "app")["state"] == "ok"
    });
    wait_until(
        &daemon,
        Duration::from_secs(20),
        "main's notification",
        || std::fs::read_to_string(&heard).is_ok_and(|t| t.contains("\"branch\":\"main\"")),
    );
    let commit = push_to(&upstream, "refs/pull/2/head");
    pull_request(&daemon, 2, "opened", "stranger/app", "f-1");
    wait_until(
        &daemon,
        Duration::from_secs(20),
        "an approval asked",
        || {
            upstream_status(&daemon, "app")["awaiting_approval"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
        },
    );
    let waiting = upstream_status(&daemon, "app")["awaiting_approval"][0].clone();
    assert_eq!(
        (waiting["number"].as_u64(), waiting["commit"].as_str()),
        (Some(2), Some(commit.as_str())),
        "{waiting}"
    );
    assert!(
        builds_of(&daemon, "app")
            .iter()
            .all(|b| b["branch"] != "refs/pull/2/head")
    );

    // Nor is it built on request, as a trusted build would be.
    let (status, refused) = daemon.post(
        "/api/builds",
        &serde_json::json!({"repo": "app", "branch": "refs/pull/2/head", "commit": commit}),
    );
    assert_eq!(
        (status, refused["error"]["field"].as_str()),
        (400, Some("branch")),
        "{refused}"
    );

    // Without the token, no approval.
    let (status, _) = daemon.request("POST", "/api/repos/app/pulls/2/approve", Some("{}"), None);
    assert_eq!(status, 401);
    let (status, build) = daemon.post("/api/repos/app/pulls/2/approve", &serde_json::json!({}));
    assert_eq!(status, 201, "{build}");
    assert_eq!(
        (build["untrusted"].as_bool(), build["trigger"].as_str()),
        (Some(true), Some("fork_pull_request")),
        "{build}"
    );
    let done = daemon.wait_final(build["id"].as_i64().unwrap());
    assert_eq!(done["untrusted"], true, "{done}");
    // A rebuild stays untrusted.
    let (status, again) = daemon.post(
        &format!("/api/builds/{}/rebuild", build["id"]),
        &serde_json::json!({}),
    );
    assert!(status == 201 || status == 200, "{again}");
    assert_eq!(again["untrusted"], true, "{again}");
    assert!(
        upstream_status(&daemon, "app")["awaiting_approval"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    daemon.wait_final(again["id"].as_i64().unwrap());
    std::thread::sleep(Duration::from_secs(1));
    let heard = std::fs::read_to_string(&heard).unwrap();
    assert!(!heard.contains("refs/pull/2/head"), "{heard}");
    let (status, _) = daemon.post("/api/repos/app/pulls/2/approve", &serde_json::json!({}));
    assert_eq!(status, 404);
}

/// A repository that builds forks' requests at once: untrusted still.
#[test]
fn a_repository_may_build_forks_pull_requests_at_once() {
    let root = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(root.path(), "app");
    upstream.push_new("main");
    let daemon = daemon(
        root.path(),
        &upstream,
        "build_fork_pull_requests = true\n",
        "/bin/true",
    );
    wait_until(&daemon, Duration::from_secs(20), "the first look", || {
        upstream_status(&daemon, "app")["state"] == "ok"
    });
    let commit = push_to(&upstream, "refs/pull/5/head");
    pull_request(&daemon, 5, "opened", "stranger/app", "o-1");
    let build = upstream_build_of(&daemon, "refs/pull/5/head", &commit, "fork_pull_request");
    assert_eq!(build["untrusted"], true, "{build}");
}

fn upstream_build_of(daemon: &Daemon, head_ref: &str, commit: &str, trigger: &str) -> Value {
    let mut found = None;
    wait_until(
        daemon,
        Duration::from_secs(30),
        &format!("a build of {head_ref}"),
        || {
            found = builds_of(daemon, "app")
                .into_iter()
                .find(|b| b["branch"] == head_ref && b["commit"] == commit);
            found.is_some()
        },
    );
    let build = found.unwrap();
    assert_eq!(build["trigger"], trigger, "{build}");
    build
}

/// A fork's build gets no secret: its outputs are not recorded in the
/// binary cache, so they are neither signed, served nor pushed, while the
/// trusted build of the same repository's branch is.
#[test]
fn a_forks_build_is_neither_cached_nor_pushed() {
    let root = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(root.path(), "app");
    let trusted = upstream.push_new("main");
    let secret_key = root.path().join("cache.secret");
    let key = std::process::Command::new("nix")
        .args(["key", "generate-secret", "--key-name", "ci-test-1"])
        .env("NIX_CONFIG", crate::common::NIX_CONFIG)
        .output()
        .unwrap();
    assert!(key.status.success());
    std::fs::write(&secret_key, key.stdout).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pushed = root.path().join("pushed");
    let secret = root.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let daemon = Daemon::start(&format!(
        "scan_interval_secs = 3600\ncache_secret_key_file = \"{}\"\ncache_serve = true\n\
         cache_push = [\"file://{}\"]\n[repos.app]\nupstream = \"file://{}\"\n\
         poll_interval_secs = 0\nwebhook_secret_file = \"{}\"\nbuild_fork_pull_requests = true\n",
        secret_key.display(),
        pushed.display(),
        upstream.bare.display(),
        secret.display()
    ));
    let main = upstream_build_of(&daemon, "main", &trusted, "upstream");
    let main = daemon.wait_build(
        main["id"].as_i64().unwrap(),
        Duration::from_secs(120),
        |b| b["cache"]["pushes"][0]["status"] == "pushed",
    );
    assert!(main["cache"]["outputs"][0]["path"].is_string(), "{main}");

    let fork = push_to(&upstream, "refs/pull/4/head");
    pull_request(&daemon, 4, "opened", "stranger/app", "c-1");
    let build = upstream_build_of(&daemon, "refs/pull/4/head", &fork, "fork_pull_request");
    let build = daemon.wait_final(build["id"].as_i64().unwrap());
    assert_eq!(build["status"], "success", "{build}");
    let out = build["checks"][0]["out_path"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(2));
    let build = daemon.build(build["id"].as_i64().unwrap());
    assert!(build["cache"].is_null(), "{build}");
    let hash = &out["/nix/store/".len()..][..32];
    let (status, _) = daemon.get(&format!("/nix-cache/{hash}.narinfo"));
    assert_eq!(status, 404, "a fork's output is served");
    let pushed_infos: Vec<_> = std::fs::read_dir(&pushed)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !pushed_infos.iter().any(|f| f.starts_with(hash)),
        "{pushed_infos:?}"
    );
}
