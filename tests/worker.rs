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

use common::{Daemon, Work};
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

/// Something unique to this call, so a check's derivation is new to Nix.
fn nonce(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{label}-{}-{nanos}", std::process::id())
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
    build_of(daemon, branch, commit)
}

/// The id of the build of `commit` on `branch` (waits briefly for it).
fn build_of(daemon: &Daemon, branch: &str, commit: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<i64> = daemon
            .builds()
            .iter()
            .filter(|b| b["commit"] == commit && b["branch"] == branch)
            .map(|b| b["id"].as_i64().unwrap())
            .collect();
        match found.as_slice() {
            [id] => return *id,
            [] => {}
            many => panic!("more than one build of {commit} on {branch}: {many:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no build was queued for {commit}: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(build: &Value) -> &str {
    build["status"].as_str().unwrap_or("?")
}

/// Waits until `path` exists with content; returns it.
fn wait_file(path: &Path, timeout: Duration, daemon: &Daemon) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} was never written: {}",
            path.display(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a pid written by a check.
fn read_pid(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{} holds no pid: {text:?}", path.display()))
}

/// `(state, ppid, pgrp)` of a process, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some((
        fields[0].chars().next()?,
        fields[1].parse().ok()?,
        fields[2].parse().ok()?,
    ))
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether `pid` is a live process (a zombie is dead: it only waits to be
/// reaped by whoever inherited it).
fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _, _)| state != 'Z')
}

/// Live members of process group `pgid`, with their command lines.
fn group_members(pgid: i32) -> Vec<(i32, String)> {
    all_pids()
        .into_iter()
        .filter(|p| proc_stat(*p).is_some_and(|(state, _, g)| g == pgid && state != 'Z'))
        .map(|p| (p, cmdline(p)))
        .collect()
}

/// Waits (bounded) until none of `pids` is alive and group `pgid` is empty.
fn assert_gone(pids: &[i32], pgid: Option<i32>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let living: Vec<(i32, String)> = pids
            .iter()
            .filter(|p| alive(**p))
            .map(|p| (*p, cmdline(*p)))
            .collect();
        let members = pgid.map(group_members).unwrap_or_default();
        if living.is_empty() && members.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: processes left behind: {living:?}, group {pgid:?}: {members:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The process group of the `nix flake check` that daemon `daemon_pid` runs
/// (nix is its child and leads its own group); waits for it to appear.
fn nix_check_group(daemon_pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for pid in all_pids() {
            if let Some((state, ppid, pgrp)) = proc_stat(pid)
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

fn long_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// A check that writes its shell's pid to `pid_file`, then prints a tick
/// every 0.2 s for `ticks` ticks (forever when `None`) and succeeds.
fn ticking(pid_file: &Path, ticks: Option<u32>, label: &str) -> String {
    let condition = match ticks {
        Some(n) => format!("[ $i -lt {n} ]"),
        None => "true".into(),
    };
    format!(
        "echo $$ >> {}; i=0; while {condition}; do echo {label} tick $i; /bin/sleep 0.2; i=$((i+1)); done; \
         echo ok > $out",
        pid_file.display()
    )
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
fn evaluation_error_fails_the_check_with_the_error_text() {
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
    assert_eq!(build["failure_kind"], "check", "{build}");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("undefined variable") && summary.contains("undefinedVariableOfTheTest"),
        "summary lacks the evaluation error: {summary:?}\n{log}"
    );
    assert_eq!(build["retry_count"], 0, "{build}");
    assert!(log.contains("undefinedVariableOfTheTest"), "{log}");
}

#[test]
fn missing_nix_is_an_infrastructure_failure_after_retries_and_the_daemon_keeps_serving() {
    // The harness already sets retry_backoff_secs = 0.
    let (daemon, work) = setup("nix_bin = \"/nonexistent/nix\"\nmax_retries = 2");
    let script = common::passing(&nonce("never-runs"));
    let id = push_checks(&daemon, &work, "main", &[("x", &script)]);
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "failed", "{build}");
    assert_eq!(build["failure_kind"], "infrastructure", "{build}");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(summary.contains("nix not found"), "{summary:?}");
    assert!(
        summary.contains("install Nix or set nix_bin"),
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
            text.contains("nix not found"),
            "attempt {} log: {text:?}",
            n + 1
        );
        assert!(!attempt["finished_at"].is_null(), "{attempt}");
    }
    // Still serving, and still accepting builds.
    let (code, health) = daemon.get("/api/health");
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "ok");
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
