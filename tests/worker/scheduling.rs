//! Scheduling: workers in parallel, a push waking an idle worker, and newer
//! pushes superseding older builds of their branch.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, nonce, passing, wait_file};
use crate::{assert_gone, grandchild_of, push_checks, read_pid, setup, status, ticking};

#[test]
fn two_workers_run_two_builds_at_the_same_time() {
    let (daemon, work) = setup("workers = 2");
    let scratch = tempfile::tempdir().unwrap();
    let a_pid = scratch.path().join("a");
    let b_pid = scratch.path().join("b");
    // 15 ticks of 0.2 s: each check runs about 3 s.
    let a = push_checks(
        &daemon,
        &work,
        "main",
        &[("a", &ticking(&a_pid, Some(15), "a"))],
    );
    let b = push_checks(
        &daemon,
        &work,
        "other",
        &[("b", &ticking(&b_pid, Some(15), "b"))],
    );
    // Observe both running at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (x, y) = (daemon.build(a), daemon.build(b));
        if status(&x) == "running" && status(&y) == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline && status(&x) != "success" && status(&y) != "success",
            "never both running: {x}\n{y}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (x, y) = (daemon.wait_final(a), daemon.wait_final(b));
    assert_eq!(status(&x), "success", "{x}");
    assert_eq!(status(&y), "success", "{y}");
    let span = |b: &Value| {
        let start = b["started_ms"].as_i64().unwrap();
        (start, start + b["duration_ms"].as_i64().unwrap())
    };
    let ((a_start, a_end), (b_start, b_end)) = (span(&x), span(&y));
    assert!(
        a_start < b_end && b_start < a_end,
        "no overlap: a {a_start}..{a_end}, b {b_start}..{b_end}"
    );
}

#[test]
fn a_push_wakes_an_idle_worker_at_once() {
    // Polling alone would take a minute.
    let (daemon, work) = setup("worker_poll_interval_ms = 60000");
    // Let the worker go idle first.
    std::thread::sleep(Duration::from_millis(500));
    let script = common::passing(&nonce("wake"));
    let id = push_checks(&daemon, &work, "main", &[("wake", &script)]);
    let build = daemon.wait_build(id, Duration::from_secs(30), |b| !b["started_ms"].is_null());
    let latency = build["started_ms"].as_i64().unwrap() - build["created_ms"].as_i64().unwrap();
    assert!(latency < 2000, "push to running took {latency} ms: {build}");
    assert_eq!(status(&daemon.wait_final(id)), "success");
}

#[test]
fn many_builds_on_several_workers_each_run_exactly_once() {
    let (daemon, work) = setup("workers = 3");
    let scratch = tempfile::tempdir().unwrap();
    let mut builds = Vec::new();
    for n in 0..6 {
        let pid_file = scratch.path().join(format!("run-{n}"));
        let name = format!("c{n}");
        let script = ticking(&pid_file, Some(3), &name);
        let id = push_checks(&daemon, &work, &format!("b{n}"), &[(&name, &script)]);
        builds.push((id, pid_file));
    }
    for (id, pid_file) in &builds {
        let build = daemon.wait_final(*id);
        assert_eq!(status(&build), "success", "{build}");
        assert_eq!(build["attempt"], 1, "{build}");
        let runs = std::fs::read_to_string(pid_file).unwrap();
        assert_eq!(runs.lines().count(), 1, "build {id} ran {runs:?}");
    }
    assert_eq!(daemon.builds().len(), builds.len());
}

#[test]
fn a_newer_push_cancels_older_builds_of_the_same_branch() {
    let (daemon, work) = setup("workers = 1\nkill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let busy_pid = scratch.path().join("busy");
    let busy = push_checks(
        &daemon,
        &work,
        "busy",
        &[("busy", &ticking(&busy_pid, None, "busy"))],
    );
    wait_file(&busy_pid, Duration::from_secs(30), &daemon);

    // Queued behind the busy build, then superseded while still queued.
    let old_pid = scratch.path().join("old");
    let queued = push_checks(
        &daemon,
        &work,
        "main",
        &[("old", &ticking(&old_pid, None, "old"))],
    );
    let running_pid = scratch.path().join("running");
    let second = push_checks(
        &daemon,
        &work,
        "main",
        &[("second", &ticking(&running_pid, None, "second"))],
    );
    let build = daemon.wait_final(queued);
    assert_eq!(status(&build), "cancelled", "{build}");
    assert_eq!(build["cancel_reason"], format!("superseded by #{second}"));
    assert_eq!(build["diagnosis"]["cancelled_by"], "superseded", "{build}");
    assert_eq!(build["attempt"], 0, "it never ran: {build}");
    assert_eq!(
        status(&daemon.build(busy)),
        "running",
        "other branches are untouched"
    );

    // Free the worker; the second build runs and is superseded while running.
    daemon.post(
        &format!("/api/builds/{busy}/cancel"),
        &serde_json::json!({}),
    );
    wait_file(&running_pid, Duration::from_secs(30), &daemon);
    let third = push_checks(
        &daemon,
        &work,
        "main",
        &[("third", &passing(&nonce("third")))],
    );
    let build = daemon.wait_final(second);
    assert_eq!(status(&build), "cancelled", "{build}");
    assert_eq!(build["cancel_reason"], format!("superseded by #{third}"));
    assert_gone(
        &[read_pid(&running_pid), grandchild_of(&running_pid)],
        None,
        "after superseding",
    );
    assert_eq!(status(&daemon.wait_final(third)), "success");

    // A rebuild of an old commit supersedes nothing.
    let (code, rebuilt) = daemon.post(
        &format!("/api/builds/{second}/rebuild"),
        &serde_json::json!({}),
    );
    assert_eq!(code, 201, "{rebuilt}");
    assert_eq!(status(&daemon.build(third)), "success");
    assert!(!old_pid.exists(), "the superseded queued build never ran");
}

#[test]
fn superseding_can_be_turned_off() {
    let (daemon, work) = setup("workers = 1\ncancel_superseded = false");
    let scratch = tempfile::tempdir().unwrap();
    let first_pid = scratch.path().join("first");
    let first = push_checks(
        &daemon,
        &work,
        "main",
        &[("first", &ticking(&first_pid, Some(5), "first"))],
    );
    wait_file(&first_pid, Duration::from_secs(30), &daemon);
    let second = push_checks(
        &daemon,
        &work,
        "main",
        &[("second", &passing(&nonce("second")))],
    );
    assert_eq!(status(&daemon.wait_final(first)), "success");
    assert_eq!(status(&daemon.wait_final(second)), "success");
}

#[test]
fn an_enqueue_superseding_a_running_build_answers_before_it_stops() {
    // A nix whose `flake check` ignores SIGTERM: the superseded build stops
    // only at SIGKILL, kill_grace_secs after it was asked to.
    let scratch = tempfile::tempdir().unwrap();
    let started = scratch.path().join("started");
    let nix = scratch.path().join("nix-stubborn");
    std::fs::write(
        &nix,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" check \"*) trap '' TERM; echo $$ >> {}; \
             while :; do /bin/sleep 0.1; done;; esac\necho '{{}}'\n",
            started.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&nix, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (daemon, work) = setup(&format!(
        "workers = 1\nkill_grace_secs = 3\nnix_bin = \"{}\"",
        nix.display()
    ));
    let events = daemon.event_lines();
    let old = push_checks(&daemon, &work, "main", &[("c", &passing(&nonce("old")))]);
    wait_file(&started, Duration::from_secs(30), &daemon);
    assert_eq!(status(&daemon.build(old)), "running");
    // A newer commit of the repository, on another branch for now.
    let newer = work.commit_flake(&[("c", &passing(&nonce("newer")))]);
    work.push(&["HEAD:refs/heads/side"]);

    let (code, queued) = daemon.post(
        "/api/builds",
        &serde_json::json!({"repo": "r", "branch": "main", "commit": newer}),
    );
    assert_eq!(code, 201, "{queued}");
    // Answered while the superseded build is still stopping, not after.
    let stopping = daemon.build(old);
    assert_eq!(status(&stopping), "running", "{stopping}");
    assert_eq!(stopping["stopping"], true, "{stopping}");

    let ended = daemon.wait_final(old);
    assert_eq!(status(&ended), "cancelled", "{ended}");
    assert_eq!(
        ended["cancel_reason"],
        format!("superseded by #{}", queued["id"])
    );
    // Its end is recorded, and told, once.
    std::thread::sleep(Duration::from_millis(500));
    let lines: Vec<String> = events.try_iter().collect();
    let ends = lines
        .windows(2)
        .filter(|w| {
            w[0].trim() == "event: build.finished"
                && w[1]
                    .trim()
                    .strip_prefix("data: ")
                    .and_then(|d| serde_json::from_str::<Value>(d).ok())
                    .is_some_and(|d| d["id"] == old)
        })
        .count();
    assert_eq!(ends, 1, "{lines:?}");
}
