//! The worker against the real binary: real `git push` through the installed
//! hook, real `nix flake check` (offline), real signals.
//!
//! Nix runs builders with an empty `PATH`, so check scripts use shell
//! builtins and absolute paths. Every check embeds something unique to its
//! test (a scratch directory or a nonce) so that Nix never finds its output
//! already in the store and really runs it.

#[path = "../common/mod.rs"]
mod common;

mod bounds_and_cancellation;
mod crashes_and_shutdown;
mod logs_and_events;
mod outcomes;
mod scheduling;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Daemon, Work, all_pids, cmdline, proc_stat};
use serde_json::Value;

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

/// The pid of the grandchild a never-ending `ticking` check started.
fn grandchild_of(pid_file: &Path) -> i32 {
    read_pid(&PathBuf::from(format!("{}.grandchild", pid_file.display())))
}

/// Opens the state database read-write (the daemon must be stopped or
/// tolerate it: SQLite locks).
fn database(daemon: &Daemon) -> rusqlite::Connection {
    rusqlite::Connection::open(daemon.state().join("ci.db")).unwrap()
}
