//! The worker against the real binary: real `git push` through the installed
//! hook, real `nix flake check` (offline), real signals.
//!
//! Nix runs builders with an empty `PATH`, so check scripts use shell
//! builtins and absolute paths. Every check embeds something unique to its
//! test (a scratch directory or a nonce) so that Nix never finds its output
//! already in the store and really runs it.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Daemon, Work, all_pids, cmdline, nonce, passing, proc_stat, wait_file};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers

/// A daemon with one repository `r` and a working clone of it.
fn setup(extra: &str) -> (Daemon, Work) {
    let daemon = Daemon::start(extra);
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    (daemon, work)
}

/// Commits a flake with `checks`, pushes it to `branch` and returns the id
/// of the build the hook queued for it.
fn push_checks(daemon: &Daemon, work: &Work, branch: &str, checks: &[(&str, &str)]) -> i64 {
    let commit = work.commit_flake(checks);
    push_commit(daemon, work, branch, &commit)
}

/// Pushes HEAD (which is `commit`) to `branch`; returns the build's id.
fn push_commit(daemon: &Daemon, work: &Work, branch: &str, commit: &str) -> i64 {
    work.push(&[&format!("HEAD:refs/heads/{branch}")]);
    daemon.build_of(branch, commit)
}

fn status(build: &Value) -> &str {
    build["status"].as_str().unwrap_or("?")
}

/// Reads a pid written by a check.
fn read_pid(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{} holds no pid: {text:?}", path.display()))
}

/// Whether `pid` is a live process (a zombie is dead: it only waits to be
/// reaped by whoever inherited it).
fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _, _, _)| state != 'Z')
}

/// Live members of process group `pgid`, with their command lines.
fn group_members(pgid: i32) -> Vec<(i32, String)> {
    all_pids()
        .into_iter()
        .filter(|p| proc_stat(*p).is_some_and(|(state, _, g, _)| g == pgid && state != 'Z'))
        .map(|p| (p, cmdline(p)))
        .collect()
}

/// Live members of session `sid` (Nix starts each builder in a session of
/// its own, so the builder's pid is the session of everything it started).
fn session_members(sid: i32) -> Vec<(i32, String)> {
    all_pids()
        .into_iter()
        .filter(|p| proc_stat(*p).is_some_and(|(state, _, _, s)| s == sid && state != 'Z'))
        .map(|p| (p, cmdline(p)))
        .collect()
}

/// What is left of `pids`, their sessions and group `pgid`.
fn leftovers(pids: &[i32], pgid: Option<i32>) -> Vec<(i32, String)> {
    let mut living: Vec<(i32, String)> = pids
        .iter()
        .filter(|p| alive(**p))
        .map(|p| (*p, cmdline(*p)))
        .collect();
    let related = pids
        .iter()
        .flat_map(|p| session_members(*p))
        .chain(pgid.map(group_members).unwrap_or_default());
    for member in related {
        if !living.contains(&member) {
            living.push(member);
        }
    }
    living
}

/// Fails the test when anything of `pids`, their sessions or group `pgid`
/// is alive within `within`; what is left is killed first, so a failing run
/// does not leave processes behind.
fn assert_gone_within(within: Duration, pids: &[i32], pgid: Option<i32>, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let left = leftovers(pids, pgid);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for (pid, _) in &left {
                common::signal(*pid, "KILL");
            }
            panic!("{what}: processes left behind: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until nothing of `pids`, their sessions or group `pgid`
/// is alive.
fn assert_gone(pids: &[i32], pgid: Option<i32>, what: &str) {
    assert_gone_within(Duration::from_secs(15), pids, pgid, what);
}

/// The process group of the `nix flake check` that daemon `daemon_pid` runs
/// (nix is its child and leads its own group); waits for it to appear.
fn nix_check_group(daemon_pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for pid in all_pids() {
            if let Some((state, ppid, pgrp, _)) = proc_stat(pid)
                && ppid == daemon_pid
                && state != 'Z'
                && cmdline(pid).contains("flake check")
            {
                assert_eq!(pgrp, pid, "nix leads its own process group");
                return pgrp;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no nix flake check below {daemon_pid}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A check that writes its shell's pid to `pid_file`, then prints a tick
/// every 0.2 s for `ticks` ticks and succeeds. With `None` it never ends, and
/// first starts a grandchild `/bin/sleep 1000` whose pid it writes to
/// `<pid_file>.grandchild`.
fn ticking(pid_file: &Path, ticks: Option<u32>, label: &str) -> String {
    let (condition, grandchild) = match ticks {
        Some(n) => (format!("[ $i -lt {n} ]"), String::new()),
        None => (
            "true".to_string(),
            format!(
                "/bin/sleep 1000 > /dev/null 2>&1 & echo $! > {}.grandchild; ",
                pid_file.display()
            ),
        ),
    };
    format!(
        "echo $$ >> {}; {grandchild}i=0; while {condition}; do echo {label} tick $i; /bin/sleep 0.2; \
         i=$((i+1)); done; echo ok > $out",
        pid_file.display()
    )
}

/// `script` preceded by starting a grandchild `/bin/sleep 1000` whose pid
/// goes to `grandchild` — on the first run of the check only.
fn with_first_run_grandchild(grandchild: &Path, script: &str) -> String {
    format!(
        "if [ ! -e {0} ]; then /bin/sleep 1000 > /dev/null 2>&1 & echo $! > {0}; fi; {script}",
        grandchild.display()
    )
}

/// The pid of the grandchild a never-ending `ticking` check started.
fn grandchild_of(pid_file: &Path) -> i32 {
    read_pid(&PathBuf::from(format!("{}.grandchild", pid_file.display())))
}

/// Opens the state database read-write (the daemon must be stopped or
/// tolerate it: SQLite locks).
fn database(daemon: &Daemon) -> rusqlite::Connection {
    rusqlite::Connection::open(daemon.state().join("ci.db")).unwrap()
}

// ---------------------------------------------------------------------------
// Outcomes of nix

#[test]
fn passing_check_succeeds_with_its_output_in_the_log() {
    let (daemon, work) = setup("max_retries = 2");
    let marker = nonce("hello-from-the-check");
    let script = common::passing(&marker);
    let id = push_checks(&daemon, &work, "main", &[("hello", &script)]);
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "success", "{build}\n{}", daemon.log_of(id));
    assert!(build["failure_kind"].is_null(), "{build}");
    assert_eq!(build["exit_code"], 0, "{build}");
    assert_eq!(build["attempt"], 1, "{build}");
    assert_eq!(build["retry_count"], 0, "{build}");
    assert!(build["duration_ms"].as_i64().unwrap() > 0, "{build}");
    let log = daemon.log_of(id);
    assert!(
        log.contains(&marker),
        "the check's output is missing from the log:\n{log}"
    );
    assert!(
        log.contains("flake check"),
        "the command is missing from the log:\n{log}"
    );
    // The flake's outputs were introspected.
    assert_eq!(
        build["outputs"]["checks"]["x86_64-linux"],
        serde_json::json!(["hello"]),
        "{build}"
    );
}

#[test]
fn failing_check_is_final_names_the_derivation_and_keeps_its_stderr() {
    let (daemon, work) = setup("max_retries = 2");
    let good = common::passing(&nonce("good"));
    let stderr_marker = nonce("broken-stderr");
    let bad = format!("echo {stderr_marker} >&2; exit 3");
    let id = push_checks(&daemon, &work, "main", &[("good", &good), ("broken", &bad)]);
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(status(&build), "failed", "{build}\n{log}");
    assert_eq!(build["failure_kind"], "check", "{build}");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("broken"),
        "summary does not name the derivation: {summary:?}"
    );
    assert!(
        !summary.contains("good"),
        "summary names a passing check: {summary:?}"
    );
    assert!(
        log.contains(&stderr_marker),
        "the check's stderr is missing:\n{log}"
    );
    assert_ne!(build["exit_code"], 0, "{build}");
    // Not retried: a check failure would fail again.
    std::thread::sleep(Duration::from_millis(500));
    let build = daemon.build(id);
    assert_eq!(status(&build), "failed", "{build}");
    assert_eq!(build["retry_count"], 0, "{build}");
    assert_eq!(build["attempt"], 1, "{build}");
    assert_eq!(build["attempts"].as_array().unwrap().len(), 1, "{build}");
}

#[test]
fn evaluation_error_fails_as_evaluation_with_the_error_text_and_its_place() {
    let (daemon, work) = setup("max_retries = 2");
    let flake = format!(
        "{{\n  outputs = {{ self }}: {{\n    checks.x86_64-linux.broken = {};\n  }};\n}}\n",
        "undefinedVariableOfTheTest"
    );
    std::fs::write(work.path().join("flake.nix"), flake).unwrap();
    let commit = work.commit("evaluation error");
    let id = push_commit(&daemon, &work, "main", &commit);
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(status(&build), "failed", "{build}\n{log}");
    assert_eq!(build["failure_kind"], "evaluation", "{build}");
    assert_eq!(build["diagnosis"]["title"], "The flake does not evaluate");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("undefined variable")
            && summary.contains("undefinedVariableOfTheTest")
            && summary.contains("flake.nix:3:"),
        "summary lacks the evaluation error: {summary:?}\n{log}"
    );
    assert_eq!(build["retry_count"], 0, "{build}");
    assert!(log.contains("undefinedVariableOfTheTest"), "{log}");
}

#[test]
fn missing_nix_is_the_hosts_failure_after_retries_and_the_daemon_keeps_serving() {
    // The harness already sets retry_backoff_secs = 0.
    let (daemon, work) = setup("nix_bin = \"/nonexistent/nix\"\nmax_retries = 2");
    let script = common::passing(&nonce("never-runs"));
    let id = push_checks(&daemon, &work, "main", &[("x", &script)]);
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "failed", "{build}");
    assert_eq!(build["failure_kind"], "host", "{build}");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("nix_bin `/nonexistent/nix` cannot run: not found"),
        "{summary:?}"
    );
    assert!(
        summary.contains("install Nix or set nix_bin (environment: PROCURATOR_CI_NIX_BIN)"),
        "{summary:?}"
    );
    assert_eq!(build["retry_count"], 2, "{build}");
    assert_eq!(build["attempt"], 3, "{build}");
    let attempts = build["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "each attempt is recorded: {build}");
    for (n, attempt) in attempts.iter().enumerate() {
        let text = daemon
            .request_text(
                "GET",
                &format!("/api/builds/{id}/logs?attempt={}", n + 1),
                None,
                None,
            )
            .1;
        assert!(
            text.contains("cannot run: not found"),
            "attempt {} log: {text:?}",
            n + 1
        );
        assert!(!attempt["finished_at"].is_null(), "{attempt}");
    }
    // Still serving, and still accepting builds; the pre-flight says why
    // nothing can build.
    let (code, health) = daemon.get("/api/health");
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["warnings"][0]["code"], "nix_unusable", "{health}");
    assert!(
        health["warnings"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/nix") && m.contains("PROCURATOR_CI_NIX_BIN")),
        "{health}"
    );
    let again = push_checks(
        &daemon,
        &work,
        "other",
        &[("y", &common::passing(&nonce("again")))],
    );
    assert_eq!(status(&daemon.wait_final(again)), "failed");
    assert!(daemon.child.is_some());
    let (code, _) = daemon.get("/api/health");
    assert_eq!(code, 200);
}

// ---------------------------------------------------------------------------
// Bounds and cancellation

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

// ---------------------------------------------------------------------------
// Crashes and shutdown

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

// ---------------------------------------------------------------------------
// Logs and events

#[test]
fn a_follower_joining_mid_build_receives_exactly_the_final_log() {
    let (daemon, work) = setup("");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pid");
    // About 4 s of numbered output.
    let script = ticking(&pid_file, Some(20), "follow");
    let id = push_checks(&daemon, &work, "main", &[("follow", &script)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon.log_of(id).contains("follow tick 2") {
        assert!(
            Instant::now() < deadline,
            "no output: {}",
            daemon.log_of(id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("{}/api/builds/{id}/logs?follow=true", daemon.base());
    let mut response = common::agent_with_timeout(Duration::from_secs(120))
        .get(&url)
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        status(&daemon.build(id)),
        "running",
        "the follower joined too late"
    );
    let mut followed = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut followed)
        .unwrap();
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "success", "{build}");
    let log = daemon.log_of(id);
    assert!(log.contains("follow tick 19"), "{log}");
    assert_eq!(followed, log, "the followed log differs from the final one");
    // And resuming from an offset gives the rest exactly.
    let half = log.len() / 2;
    let rest = daemon
        .request_text(
            "GET",
            &format!("/api/builds/{id}/logs?offset={half}"),
            None,
            None,
        )
        .1;
    assert_eq!(rest.as_bytes(), &log.as_bytes()[half..]);
}

/// Reads `/api/events` on a thread and sends each `(event, data)` on.
fn sse_events(daemon: &Daemon) -> mpsc::Receiver<(String, Value)> {
    sse_events_at(daemon, "/api/events")
}

/// Events of the stream at `path`, parsed, as they arrive.
fn sse_events_at(daemon: &Daemon, path: &str) -> mpsc::Receiver<(String, Value)> {
    let url = format!("{}{path}", daemon.base());
    let response = ureq::Agent::config_builder()
        .timeout_global(None)
        .build()
        .new_agent()
        .get(&url)
        .call()
        .unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let reader = BufReader::new(response.into_body().into_reader());
        let mut kind = String::new();
        let mut data = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !kind.is_empty() {
                let value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if sender.send((std::mem::take(&mut kind), value)).is_err() {
                    return;
                }
                data.clear();
            }
        }
    });
    receiver
}

#[test]
fn an_event_stream_sees_queued_started_finished_in_order() {
    let (daemon, work) = setup("");
    let events = sse_events(&daemon);
    let script = common::passing(&nonce("events"));
    let id = push_checks(&daemon, &work, "main", &[("events", &script)]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen
        .iter()
        .any(|(k, _): &(String, Value)| k == "build.finished")
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let (kind, data) = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("events so far: {seen:?}"));
        if data["id"] == id {
            seen.push((kind, data));
        }
    }
    // Progress (`build.checks`) may come while it runs, never around it.
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        kinds[2..kinds.len() - 1]
            .iter()
            .all(|k| *k == "build.checks"),
        "{kinds:?}"
    );
    seen.retain(|(k, _)| k != "build.checks");
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["build.queued", "build.started", "build.finished"]);
    assert_eq!(seen[0].1["status"], "queued");
    assert_eq!(seen[1].1["status"], "running");
    assert_eq!(seen[2].1["status"], "success");
    assert_eq!(seen[2].1["commit"], daemon.build(id)["commit"]);
}

#[test]
fn a_log_over_the_cap_is_truncated_with_a_marker_and_the_build_succeeds() {
    let (daemon, work) = setup("log_max_bytes = 4096");
    let marker = nonce("cap");
    // About 100 KB of output.
    let script = format!(
        "i=0; while [ $i -lt 2000 ]; do echo {marker} line $i of padding padding; i=$((i+1)); done; echo ok > $out"
    );
    let id = push_checks(&daemon, &work, "main", &[("loud", &script)]);
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(status(&build), "success", "{build}\n{log}");
    let truncation = "\n[log truncated at 4096 bytes]\n";
    assert!(log.ends_with(truncation), "{log}");
    assert_eq!(log.len(), 4096 + truncation.len(), "{log}");
    assert!(log.contains(&marker), "{log}");
    assert_eq!(build["attempts"][0]["log_truncated"], true, "{build}");
}

#[test]
fn retention_deletes_only_logs_of_attempts_finished_before_the_cutoff() {
    let (mut daemon, work) = setup("log_retention_days = 1");
    let mut ids = Vec::new();
    for name in ["old", "recent", "fresh"] {
        let script = common::passing(&nonce(name));
        let id = push_checks(&daemon, &work, name, &[(name, &script)]);
        assert_eq!(status(&daemon.wait_final(id)), "success");
        ids.push(id);
    }
    let logs: Vec<String> = ids.iter().map(|id| daemon.log_of(*id)).collect();
    assert!(logs.iter().all(|l| l.contains("flake check")), "{logs:?}");
    daemon.stop();
    let hour = 3_600_000i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    {
        let db = database(&daemon);
        for (id, age) in [(ids[0], 25 * hour), (ids[1], 23 * hour)] {
            db.execute(
                "UPDATE build_attempts SET finished_at = ?2 WHERE build_id = ?1",
                [id, now - age],
            )
            .unwrap();
        }
    }
    let log_dir = daemon.state().join("logs");
    let files = |id: i64| -> Vec<PathBuf> {
        std::fs::read_dir(log_dir.join(id.to_string()))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    assert!(!files(ids[0]).is_empty());
    // Retention runs when the daemon starts.
    daemon.spawn();
    let old = daemon.wait_build(ids[0], Duration::from_secs(30), |b| {
        b["attempts"][0]["log_deleted"] == true
    });
    assert_eq!(status(&old), "success", "the build itself stays: {old}");
    assert!(files(ids[0]).is_empty(), "{:?}", files(ids[0]));
    assert_eq!(daemon.log_of(ids[0]), "");
    for (i, id) in ids.iter().enumerate().skip(1) {
        let build = daemon.build(*id);
        assert_eq!(build["attempts"][0]["log_deleted"], false, "{build}");
        assert!(!files(*id).is_empty());
        assert_eq!(daemon.log_of(*id), logs[i], "a kept log changed");
    }
}

#[test]
fn a_follower_waiting_on_a_queued_build_receives_its_whole_log() {
    let (daemon, work) = setup("workers = 1\nkill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let blocker_pid = scratch.path().join("blocker");
    let blocker = push_checks(
        &daemon,
        &work,
        "main",
        &[("blocker", &ticking(&blocker_pid, None, "blocker"))],
    );
    wait_file(&blocker_pid, Duration::from_secs(30), &daemon);
    let followed_pid = scratch.path().join("followed");
    let id = push_checks(
        &daemon,
        &work,
        "other",
        &[("followed", &ticking(&followed_pid, Some(5), "followed"))],
    );
    assert_eq!(status(&daemon.build(id)), "queued");
    let follower = daemon.follow_log(id);
    // Give the follower time to park on the queued build.
    std::thread::sleep(Duration::from_secs(1));
    let (code, body) = daemon.post(
        &format!("/api/builds/{blocker}/cancel"),
        &serde_json::json!({}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&daemon.wait_final(blocker)), "cancelled");
    assert_gone(
        &[read_pid(&blocker_pid), grandchild_of(&blocker_pid)],
        None,
        "after cancel",
    );
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "success", "{build}");
    let (followed, end) = follower.join().unwrap();
    end.unwrap();
    let followed = String::from_utf8(followed).unwrap();
    let log = daemon.log_of(id);
    assert!(log.contains("followed tick 4"), "{log}");
    assert_eq!(followed, log, "the follower missed part of the log");
}

#[test]
fn a_truncated_log_still_says_why_the_build_stopped() {
    let (daemon, work) = setup("log_max_bytes = 4096\nbuild_timeout_secs = 3\nkill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pid");
    let script = format!(
        "echo $$ > {}; i=0; while [ $i -lt 500 ]; do echo line $i of padding padding padding; i=$((i+1)); done; \
         /bin/sleep 1000",
        pid_file.display()
    );
    let id = push_checks(&daemon, &work, "main", &[("loud_then_stuck", &script)]);
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(build["failure_kind"], "timeout", "{build}\n{log}");
    assert!(log.contains("[log truncated at 4096 bytes]"), "{log}");
    assert!(
        log.contains("build_timeout_secs"),
        "the reason is missing from a truncated log:\n{log}"
    );
    assert_gone(&[read_pid(&pid_file)], None, "after a timeout");
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

#[test]
fn sigterm_ends_open_log_and_event_streams_promptly() {
    let (mut daemon, work) = setup("kill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pid");
    let id = push_checks(
        &daemon,
        &work,
        "main",
        &[("long", &ticking(&pid_file, None, "long"))],
    );
    wait_file(&pid_file, Duration::from_secs(30), &daemon);
    let events = sse_events(&daemon);
    // The stream may break when the daemon exits: what arrived is enough.
    let follower = daemon.follow_log(id);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let exit = daemon.stop();
    let took = started.elapsed();
    assert!(exit.success(), "{exit}: {}", daemon.log());
    assert!(took < Duration::from_secs(15), "stopping took {took:?}");
    let followed = String::from_utf8_lossy(&follower.join().unwrap().0).into_owned();
    assert!(followed.contains("long tick 0"), "{followed}");
    // The event stream ended too: its reader thread hung up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match events.recv_timeout(Duration::from_millis(100)) {
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            _ => assert!(Instant::now() < deadline, "the event stream stayed open"),
        }
    }
    assert_gone(
        &[read_pid(&pid_file), grandchild_of(&pid_file)],
        None,
        "after SIGTERM",
    );
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
fn a_process_a_passing_check_leaves_behind_does_not_survive() {
    let (daemon, work) = setup("");
    let scratch = tempfile::tempdir().unwrap();
    let straggler = scratch.path().join("straggler");
    let script = format!(
        "/bin/sleep 1000 > /dev/null 2>&1 & echo $! > {}; echo done; echo ok > $out",
        straggler.display()
    );
    let id = push_checks(&daemon, &work, "main", &[("leaves_one", &script)]);
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "success", "{build}\n{}", daemon.log_of(id));
    assert_gone(&[read_pid(&straggler)], None, "after a passing check");
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
fn a_log_stream_of_a_queued_build_lets_other_events_through_until_it_starts() {
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
    let marker = nonce("queued-log");
    let queued = push_checks(&daemon, &work, "other", &[("q", &passing(&marker))]);
    let events = sse_events_at(&daemon, &format!("/api/events?build={queued}"));
    daemon.create_repo("while-waiting");
    // (The pre-flight's `health.changed` and the running build's
    // `build.checks` may come first.)
    let (kind, data) = std::iter::from_fn(|| events.recv_timeout(Duration::from_secs(10)).ok())
        .find(|(kind, _)| kind != "health.changed" && kind != "build.checks")
        .expect("an event while the build waits");
    assert_eq!(kind, "repo.created");
    assert_eq!(data["name"], "while-waiting");
    daemon.post(
        &format!("/api/builds/{busy}/cancel"),
        &serde_json::json!({}),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = String::new();
    while !log.contains(&marker) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (kind, data) = events.recv_timeout(left).expect("the build's log");
        if kind == "build.log" && data["build"] == queued {
            log.push_str(data["text"].as_str().unwrap());
        }
    }
}
