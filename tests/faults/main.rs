//! Fault injection against the real binary: repeated kill -9 under load,
//! durability of acknowledged enqueues, a full disk, an unusable nix, a
//! database locked by another process, clients that never read, and a corpus
//! of hostile HTTP requests. docs/reliability.md says what each test proves.
//!
//! Everything runs on loopback, in temporary directories, and is bounded in
//! time. The disk-full test mounts a tmpfs and so needs root (it is skipped,
//! loudly, without it).

#[path = "../common/mod.rs"]
mod common;

mod database_locked;
mod disk_full;
mod durability;
mod hostile_http;
mod kill_9;
mod nix_unavailable;
mod slow_clients;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Daemon;
use serde_json::Value;

/// A small deterministic generator (xorshift), seeded from the clock and
/// printed, so that a failing run can be repeated with `FAULTS_SEED`.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test}: FAULTS_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// An executable shell script.
fn script(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    let status = Command::new("chmod").arg("755").arg(path).status().unwrap();
    assert!(status.success());
    path.to_path_buf()
}

/// The state database, opened by the test (as another process would).
fn database(daemon: &Daemon) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(daemon.state().join("ci.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

fn integrity_ok(conn: &rusqlite::Connection) {
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(result, "ok", "PRAGMA integrity_check");
}

/// Every file under `dir` (relative paths), except the database's own.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            if rel.starts_with("ci.db") || rel.starts_with("home") {
                continue;
            }
            out.insert(rel);
            if path.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Creates `count` distinct commits (empty trees, one chain) directly in the
/// bare repository with `git fast-import`, under a ref the hook and the
/// startup scan ignore; returns their ids, oldest first.
fn fast_commits(bare: &Path, count: usize, label: &str) -> Vec<String> {
    let mut input = String::new();
    for i in 0..count {
        let message = format!("{label} {i}\n");
        input.push_str(&format!(
            "commit refs/keep/{label}\ncommitter T <t@example.org> 1700000000 +0000\ndata {}\n{message}\n",
            message.len()
        ));
    }
    common::git_stdin(bare, &["fast-import", "--quiet"], &input);
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args(["rev-list", "--reverse", &format!("refs/keep/{label}")])
        .output()
        .unwrap();
    let commits: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(commits.len(), count);
    commits
}

/// Makes branch `b<i>` point at `commits[i]`, for each commit: the daemon
/// builds only branches the repository has.
fn branch_per_commit(bare: &Path, commits: &[String]) {
    let names: Vec<String> = (0..commits.len()).map(|i| format!("b{i}")).collect();
    common::create_branches(
        bare,
        names
            .iter()
            .map(String::as_str)
            .zip(commits.iter().map(String::as_str)),
    );
}

fn assert_healthy(daemon: &mut Daemon) {
    let child = daemon.child.as_mut().expect("daemon running");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the daemon exited: {}",
        daemon.log()
    );
    let (status, body) = daemon.get("/api/health");
    assert_eq!(status, 200, "{body}");
}

fn status_of(build: &Value) -> &str {
    build["status"].as_str().unwrap_or("?")
}
