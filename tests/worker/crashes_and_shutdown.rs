//! Crashes and shutdown.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::wait_file;
use crate::{
    assert_gone, assert_gone_within, database, nix_check_group, push_checks, read_pid, setup,
    status, ticking,
};

/// `script` preceded by starting a grandchild `/bin/sleep 1000` whose pid
/// goes to `grandchild` — on the first run of the check only.
fn with_first_run_grandchild(grandchild: &Path, script: &str) -> String {
    format!(
        "if [ ! -e {0} ]; then /bin/sleep 1000 > /dev/null 2>&1 & echo $! > {0}; fi; {script}",
        grandchild.display()
    )
}

#[test]
fn kill_9_mid_build_then_restart_reruns_the_build_exactly_once() {
    let (mut daemon, work) = setup("kill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pids");
    let grandchild = scratch.path().join("grandchild");
    // About 3 s per run; every run appends its shell's pid.
    let script = with_first_run_grandchild(&grandchild, &ticking(&pid_file, Some(15), "crash"));
    let id = push_checks(&daemon, &work, "main", &[("crash", &script)]);
    let first_group = nix_check_group(daemon.pid());
    wait_file(&pid_file, Duration::from_secs(30), &daemon);
    assert_eq!(status(&daemon.build(id)), "running");
    daemon.kill9();
    let first_builder = read_pid(&pid_file);

    let first_grandchild = read_pid(&grandchild);
    daemon.spawn();
    // Recovery ended the first run before the daemon answered (a moment
    // for the kernel to finish off what was killed).
    assert_gone_within(
        Duration::from_secs(2),
        &[first_builder, first_grandchild],
        Some(first_group),
        "the first run survived the restart",
    );
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(
        status(&build),
        "success",
        "{build}\n{log}\n{}",
        daemon.log()
    );
    assert_eq!(build["attempt"], 2, "{build}");
    let attempts = build["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{build}");
    assert_ne!(attempts[0]["outcome"], "success", "{build}");
    assert_eq!(attempts[1]["outcome"], "success", "{build}");
    assert!(log.contains("crash tick 14"), "{log}");
    // One build row for the commit, and the first run really was re-run.
    let commit = build["commit"].as_str().unwrap();
    let rows: Vec<Value> = daemon
        .builds()
        .into_iter()
        .filter(|b| b["commit"] == commit)
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let runs = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(runs.lines().count(), 2, "runs of the check: {runs:?}");
    assert_gone(
        &[first_builder, first_grandchild],
        Some(first_group),
        "after kill -9 and restart",
    );
    // And it stays finished.
    std::thread::sleep(Duration::from_millis(500));
    let again = daemon.build(id);
    assert_eq!(status(&again), "success");
    assert_eq!(again["attempt"], 2);
}

#[test]
fn sigterm_mid_build_hands_it_back_and_a_restart_completes_it() {
    let (mut daemon, work) = setup("kill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pids");
    let grandchild = scratch.path().join("grandchild");
    let script = with_first_run_grandchild(&grandchild, &ticking(&pid_file, Some(10), "handback"));
    let id = push_checks(&daemon, &work, "main", &[("handback", &script)]);
    let group = nix_check_group(daemon.pid());
    wait_file(&pid_file, Duration::from_secs(30), &daemon);
    let exit = daemon.stop();
    assert!(
        exit.success(),
        "the daemon exited with {exit}: {}",
        daemon.log()
    );
    assert_gone(
        &[read_pid(&pid_file), read_pid(&grandchild)],
        Some(group),
        "after SIGTERM",
    );
    {
        let db = database(&daemon);
        let (state, attempts, retries, pgid): (String, i64, i64, Option<i64>) = db
            .query_row(
                "SELECT status, attempts, retry_count, pgid FROM builds WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(state, "queued", "the build was not handed back");
        assert_eq!(attempts, 1);
        assert_eq!(retries, 0, "a hand-back is not a retry");
        assert_eq!(pgid, None);
    }
    daemon.spawn();
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "success", "{build}\n{}", daemon.log_of(id));
    assert_eq!(build["attempt"], 2, "{build}");
    assert_eq!(build["retry_count"], 0, "{build}");
    assert_eq!(build["attempts"][0]["outcome"], "interrupted", "{build}");
    let first_log = daemon
        .request_text(
            "GET",
            &format!("/api/builds/{id}/logs?attempt=1"),
            None,
            None,
        )
        .1;
    assert!(first_log.contains("shutting down"), "{first_log}");
}

#[test]
fn repeated_kill_9_exhausts_retries_and_the_build_fails_once() {
    let (mut daemon, work) = setup("max_retries = 1\nkill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pids");
    let script = ticking(&pid_file, Some(50), "doomed");
    let id = push_checks(&daemon, &work, "main", &[("doomed", &script)]);
    for run in 1..=2 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .lines()
            .count()
            < run
        {
            assert!(
                Instant::now() < deadline,
                "run {run} never started: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon.kill9();
        daemon.spawn();
    }
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "failed", "{build}");
    assert_eq!(build["failure_kind"], "infrastructure", "{build}");
    assert_eq!(build["attempt"], 2, "{build}");
    assert_eq!(build["retry_count"], 1, "{build}");
    let runs: Vec<i32> = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_gone(&runs, None, "after repeated kill -9");
    // Nothing runs it again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().lines().count(),
        2
    );
    assert_eq!(daemon.build(id)["attempt"], 2);
}
