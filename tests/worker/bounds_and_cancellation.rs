//! Bounds and cancellation.

use std::time::Duration;

use serde_json::Value;

use crate::common::wait_file;
use crate::{
    assert_gone, grandchild_of, nix_check_group, push_checks, read_pid, setup, status, ticking,
};

/// Runs a check that prints `marker`, starts a grandchild and hangs, on a
/// daemon configured with `limit`; asserts that it was stopped as a
/// `kind` failure with every process of it gone, and returns the build
/// and its log.
fn hung_check_stopped_by(limit: &str, marker: &str, kind: &str) -> (Value, String) {
    let (daemon, work) = setup(&format!("{limit}\nkill_grace_secs = 5"));
    let scratch = tempfile::tempdir().unwrap();
    let builder_pid = scratch.path().join("builder");
    let grandchild_pid = scratch.path().join("grandchild");
    let script = format!(
        "echo $$ > {}; /bin/sleep 1000 & echo $! > {}; echo {marker}; /bin/sleep 1000",
        builder_pid.display(),
        grandchild_pid.display()
    );
    let id = push_checks(&daemon, &work, "main", &[("hung", &script)]);
    let pgid = nix_check_group(daemon.pid());
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(status(&build), "failed", "{build}\n{log}");
    assert_eq!(build["failure_kind"], kind, "{build}");
    assert_eq!(build["diagnosis"]["kind"], kind, "{build}");
    assert_eq!(build["diagnosis"]["retried"], false, "{build}");
    assert!(
        log.contains(marker),
        "the check never ran before it was stopped:\n{log}"
    );
    assert_gone(
        &[read_pid(&builder_pid), read_pid(&grandchild_pid)],
        Some(pgid),
        &format!("after {limit}"),
    );
    (build, log)
}

#[test]
fn a_check_that_outlives_build_timeout_is_stopped_with_all_its_processes() {
    let (build, log) = hung_check_stopped_by("build_timeout_secs = 2", "started", "timeout");
    assert_eq!(build["diagnosis"]["title"], "Timed out");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(summary.contains("build_timeout_secs"), "{summary:?}");
    assert!(
        log.contains("build_timeout_secs (2 s)"),
        "the reason is missing from the log:\n{log}"
    );
    assert_eq!(build["retry_count"], 0, "a timeout is not retried: {build}");
}

#[test]
fn a_silent_check_is_stopped_by_max_silent_secs() {
    let (build, log) = hung_check_stopped_by("max_silent_secs = 2", "going-quiet", "silence");
    assert_eq!(build["diagnosis"]["title"], "Silent for too long");
    assert_eq!(build["retry_count"], 0, "silence is not retried: {build}");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(summary.contains("max_silent_secs"), "{summary:?}");
    assert!(
        log.contains("printed nothing for max_silent_secs (2 s)"),
        "{log}"
    );
    // It was silence, not the wall clock: it ended within seconds.
    assert!(build["duration_ms"].as_i64().unwrap() < 30_000, "{build}");
}

#[test]
fn cancelling_a_running_build_stops_it() {
    let (daemon, work) = setup("kill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pid");
    let script = ticking(&pid_file, None, "forever");
    let id = push_checks(&daemon, &work, "main", &[("forever", &script)]);
    let pgid = nix_check_group(daemon.pid());
    wait_file(&pid_file, Duration::from_secs(30), &daemon);
    assert_eq!(status(&daemon.build(id)), "running");

    // Without the token nothing happens.
    let (code, body) = daemon.request("POST", &format!("/api/builds/{id}/cancel"), None, None);
    assert_eq!(code, 401, "{body}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&daemon.build(id)), "running");

    let (code, body) = daemon.post(&format!("/api/builds/{id}/cancel"), &serde_json::json!({}));
    // The answer is the truth: it stopped within the moment it waits.
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&body), "cancelled", "{body}");
    let build = daemon.wait_final(id);
    assert_eq!(
        status(&build),
        "cancelled",
        "{build}\n{}",
        daemon.log_of(id)
    );
    assert!(build["failure_kind"].is_null(), "{build}");
    assert_eq!(
        build["cancel_reason"], "cancelled through the API",
        "{build}"
    );
    assert_eq!(build["diagnosis"]["cancelled_by"], "api", "{build}");
    assert_eq!(build["diagnosis"]["kind"], "cancelled", "{build}");
    // The check it stopped is listed as not built.
    assert_eq!(build["checks"][0]["name"], "forever", "{build}");
    assert_eq!(build["checks"][0]["status"], "not_built", "{build}");
    assert_eq!(build["retry_count"], 0, "{build}");
    let log = daemon.log_of(id);
    assert!(log.contains("forever tick 0"), "{log}");
    assert!(log.contains("stopping the build"), "{log}");
    assert_gone(
        &[read_pid(&pid_file), grandchild_of(&pid_file)],
        Some(pgid),
        "after cancel",
    );
    // Cancelling again is a conflict, not a change.
    let (code, body) = daemon.post(&format!("/api/builds/{id}/cancel"), &serde_json::json!({}));
    assert_eq!(code, 409, "{body}");
    assert_eq!(status(&daemon.build(id)), "cancelled");
}

#[test]
fn cancelling_a_queued_build_removes_it_before_it_runs() {
    let (daemon, work) = setup("workers = 1\nkill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let first_pid = scratch.path().join("first");
    let second_pid = scratch.path().join("second");
    let first = push_checks(
        &daemon,
        &work,
        "main",
        &[("first", &ticking(&first_pid, None, "first"))],
    );
    wait_file(&first_pid, Duration::from_secs(30), &daemon);
    let second = push_checks(
        &daemon,
        &work,
        "other",
        &[("second", &ticking(&second_pid, Some(1), "second"))],
    );
    assert_eq!(status(&daemon.build(second)), "queued");
    let (code, body) = daemon.post(
        &format!("/api/builds/{second}/cancel"),
        &serde_json::json!({}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&body), "cancelled", "{body}");
    assert_eq!(
        status(&daemon.build(first)),
        "running",
        "the running build is untouched"
    );

    // Let the single worker go free; the cancelled build must not run.
    let (code, body) = daemon.post(
        &format!("/api/builds/{first}/cancel"),
        &serde_json::json!({}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&daemon.wait_final(first)), "cancelled");
    assert_gone(
        &[read_pid(&first_pid), grandchild_of(&first_pid)],
        None,
        "after cancel",
    );
    std::thread::sleep(Duration::from_millis(500));
    let build = daemon.build(second);
    assert_eq!(status(&build), "cancelled", "{build}");
    assert_eq!(build["attempt"], 0, "it never started: {build}");
    assert!(build["started_at"].is_null(), "{build}");
    assert!(build["attempts"].as_array().unwrap().is_empty(), "{build}");
    assert!(!second_pid.exists(), "the cancelled check ran");
}

#[test]
fn a_check_that_ignores_sigterm_is_still_stopped_without_leftovers() {
    let (daemon, work) = setup("kill_grace_secs = 3");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pid");
    let grandchild = scratch.path().join("grandchild");
    let script = format!(
        "trap '' TERM; echo $$ > {}; /bin/sleep 1000 & echo $! > {}; \
         while true; do echo stubborn; /bin/sleep 0.2; done",
        pid_file.display(),
        grandchild.display()
    );
    let id = push_checks(&daemon, &work, "main", &[("stubborn", &script)]);
    let pgid = nix_check_group(daemon.pid());
    wait_file(&grandchild, Duration::from_secs(30), &daemon);
    let (code, body) = daemon.post(&format!("/api/builds/{id}/cancel"), &serde_json::json!({}));
    match code {
        200 => assert_eq!(status(&body), "cancelled", "{body}"),
        202 => assert_eq!(body["stopping"], true, "{body}"),
        _ => panic!("cancel answered {code}: {body}"),
    }
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "cancelled", "{build}");
    assert_gone(
        &[read_pid(&pid_file), read_pid(&grandchild)],
        Some(pgid),
        "after cancelling a check that ignores SIGTERM",
    );
}
