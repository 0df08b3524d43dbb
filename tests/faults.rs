//! Fault injection against the real binary: repeated kill -9 under load,
//! durability of acknowledged enqueues, a full disk, an unusable nix, a
//! database locked by another process, clients that never read, and a corpus
//! of hostile HTTP requests. docs/reliability.md says what each test proves.
//!
//! Everything runs on loopback, in temporary directories, and is bounded in
//! time. The disk-full test mounts a tmpfs and so needs root (it is skipped,
//! loudly, without it).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, Work, all_pids, cmdline, fd_count, nonce, proc_stat};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Helpers

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

/// Whether `pid` descends from `ancestor`.
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut current = pid;
    for _ in 0..64 {
        if current == ancestor {
            return true;
        }
        match proc_stat(current) {
            Some((_, ppid, _, _)) if ppid > 0 => current = ppid,
            _ => return false,
        }
    }
    false
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: i32) -> u64 {
    common::proc_status(pid, "VmRSS")
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
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(bare)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
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

/// One raw HTTP/1.1 exchange (the request must ask `Connection: close`).
/// Returns status, lower-cased headers and body; a connection the daemon
/// closes without answering gives status 0.
fn raw(port: u16, request: &[u8]) -> (u16, HashMap<String, String>, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The daemon may answer (413, 431) before reading everything and close:
    // a failed write is part of the exchange.
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, HashMap::new(), response);
    };
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = response[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        body = procurator_ci::repos::hook::dechunk(&body);
    }
    (status, headers, body)
}

/// Asserts the documented error shape.
fn assert_json_error(what: &str, status: u16, body: &[u8]) -> Value {
    assert!((400..500).contains(&status), "{what}: status {status}");
    let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: {status} without a JSON error ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    assert!(value["error"]["code"].is_string(), "{what}: {value}");
    assert!(value["error"]["message"].is_string(), "{what}: {value}");
    value
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

// ---------------------------------------------------------------------------
// kill -9, repeatedly

/// Revisions run by two nix processes at once, samples taken, revisions seen.
type WatchReport = (Vec<String>, usize, BTreeSet<String>);

/// Watches every `nix flake check` on the machine for one repository and
/// remembers when two top-level ones (not forks of each other) ran the same
/// revision at once.
struct NixWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<WatchReport>>,
}

impl NixWatch {
    fn start(repo: &Path) -> NixWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let needle = repo.display().to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut doubles = Vec::new();
            let mut samples = 0;
            let mut seen = BTreeSet::new();
            while !flag.load(Ordering::Relaxed) {
                let mut checks: Vec<(i32, i32, String)> = Vec::new();
                for pid in all_pids() {
                    let line = cmdline(pid);
                    if !(line.contains("flake check") && line.contains(&needle)) {
                        continue;
                    }
                    let Some((state, ppid, _, _)) = proc_stat(pid) else {
                        continue;
                    };
                    if state == 'Z' {
                        continue;
                    }
                    let rev = line
                        .split("rev=")
                        .nth(1)
                        .map(|r| r.chars().take(40).collect())
                        .unwrap_or_default();
                    checks.push((pid, ppid, rev));
                }
                let pids: BTreeSet<i32> = checks.iter().map(|c| c.0).collect();
                seen.extend(checks.iter().map(|c| c.2.clone()));
                let mut per_rev: BTreeMap<&str, Vec<(i32, i32)>> = BTreeMap::new();
                for (pid, ppid, rev) in &checks {
                    // A fork of nix (before it execs a builder) is not a
                    // second build.
                    if !pids.contains(ppid) {
                        per_rev.entry(rev).or_default().push((*pid, *ppid));
                    }
                }
                for (rev, procs) in per_rev {
                    if procs.len() > 1 {
                        doubles.push(format!("{rev}: (pid, ppid) {procs:?}"));
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (doubles, samples, seen)
        });
        NixWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// The doubles found, the number of samples, the revisions seen.
    fn finish(mut self) -> WatchReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Processes that belong to this test's daemon instances (their command
/// line names the state directory or the checks' scratch directory) but not
/// to the running instance nor to the test itself.
fn strays(needles: &[String], daemon_pid: i32) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let line = cmdline(pid);
            if !needles.iter().any(|n| line.contains(n.as_str())) {
                return None;
            }
            let (state, _, _, _) = proc_stat(pid)?;
            if state == 'Z' || descends_from(pid, daemon_pid) || descends_from(pid, me) {
                return None;
            }
            Some((pid, line))
        })
        .collect()
}

#[test]
fn kill_9_fifty_times_under_load_every_acknowledged_build_ends_once() {
    let mut rng = Rng::new("kill_9");
    let mut daemon = Daemon::start("workers = 2\nmax_retries = 100\nkill_grace_secs = 3");
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    let scratch = tempfile::tempdir().unwrap();
    // The checks sleep through a link whose path names the scratch
    // directory, so that a stray sleep of an old instance is recognisable.
    let sleep = scratch.path().join("sleep");
    std::os::unix::fs::symlink("/bin/sleep", &sleep).unwrap();
    let needles = vec![
        daemon.state().display().to_string(),
        scratch.path().display().to_string(),
    ];
    let watch = NixWatch::start(&daemon.repo_path("r"));

    let mut acknowledged: BTreeMap<i64, String> = BTreeMap::new();
    let mut pushed = 0;
    let started = Instant::now();
    const KILLS: usize = 50;
    for kill in 0..KILLS {
        // Keep about four builds waiting or running: each a real nix check
        // that ticks for up to 0.5 s.
        let queued = daemon
            .builds()
            .iter()
            .filter(|b| matches!(status_of(b), "queued" | "running"))
            .count();
        for _ in queued..4 {
            let ticks = rng.range(0, 6);
            let check = format!(
                "i=0; while [ $i -lt {ticks} ]; do echo {} tick $i; {} 0.1; i=$((i+1)); done; echo ok > $out",
                nonce("k9"),
                sleep.display()
            );
            let commit = work.commit_flake(&[("k9", &check)]);
            let branch = format!("b{pushed}");
            pushed += 1;
            let out = work.push(&[&format!("HEAD:refs/heads/{branch}")]);
            // `procurator-ci: build #42 queued for b3 (1a2b3c4) — …`
            let id = out
                .lines()
                .find_map(|l| l.split("build #").nth(1))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|id| id.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("no acknowledgement in the push output: {out}"));
            acknowledged.insert(id, commit);
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 1200)));
        daemon.kill9();
        daemon.spawn();

        // The restarted daemon ended what the old one left before it
        // answered; give the kernel a moment to finish the killed off.
        let deadline = Instant::now() + Duration::from_millis(1500);
        loop {
            let left = strays(&needles, daemon.pid());
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for (pid, _) in &left {
                    common::signal(*pid, "KILL");
                }
                panic!(
                    "after kill {kill}: processes of an old instance survive: {left:?}\n{}",
                    daemon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let killing = started.elapsed();
    // Every acknowledged build ends, once.
    for (id, commit) in &acknowledged {
        let build = daemon.wait_build(*id, Duration::from_secs(120), |b| {
            matches!(status_of(b), "success" | "failed" | "cancelled")
        });
        assert_eq!(&build["commit"], commit, "{build}");
        assert_eq!(
            status_of(&build),
            "success",
            "retries outnumber kills, so every build succeeds: {build}\n{}",
            daemon.log_of(*id)
        );
        let attempts = build["attempts"].as_array().unwrap();
        assert_eq!(attempts.len() as i64, build["attempt"].as_i64().unwrap());
        let finals: Vec<&Value> = attempts
            .iter()
            .filter(|a| a["outcome"] == "success")
            .collect();
        assert_eq!(finals.len(), 1, "one successful attempt: {build}");
        assert_eq!(
            attempts.last().unwrap()["outcome"],
            "success",
            "nothing ran after it: {build}"
        );
        for attempt in attempts {
            assert!(!attempt["finished_at"].is_null(), "{build}");
        }
    }
    // One build per pushed commit and branch, nothing else, all final.
    let all = daemon.builds();
    assert_eq!(all.len(), pushed, "builds: {all:?}");
    let ids: BTreeSet<i64> = common::ids(&all).into_iter().collect();
    assert_eq!(ids, acknowledged.keys().copied().collect());
    // And it stays that way.
    std::thread::sleep(Duration::from_millis(500));
    for build in daemon.builds() {
        assert_eq!(status_of(&build), "success", "{build}");
    }
    let (doubles, samples, seen) = watch.finish();
    assert!(samples > 100, "the process watch barely ran ({samples})");
    assert!(
        seen.len() * 2 >= pushed,
        "the process watch saw only {} of {pushed} builds' nix",
        seen.len()
    );
    assert!(
        doubles.is_empty(),
        "a build ran in two nix processes at once: {doubles:?}"
    );
    integrity_ok(&database(&daemon));
    eprintln!(
        "{KILLS} kills in {killing:?}, {pushed} builds, {samples} process samples, total {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Acknowledged means durable

#[test]
fn ten_thousand_concurrent_enqueues_with_kill_9_lose_no_acknowledged_build() {
    let mut rng = Rng::new("durable");
    let scratch = tempfile::tempdir().unwrap();
    // Builds must not finish (their rows would change); one stand-in nix
    // that waits keeps the only worker busy, so the test measures enqueues.
    let nix = script(
        &scratch.path().join("nix"),
        "case \"$2\" in show) echo '{}'; exit 0;; esac\nexec /bin/sleep 600",
    );
    let mut daemon = Daemon::start(&format!(
        "nix_bin = \"{}\"\nworkers = 1\nkill_grace_secs = 1\ncancel_superseded = false",
        nix.display()
    ));
    daemon.create_repo("r");
    const TOTAL: usize = 10_000;
    const CLIENTS: usize = 8;
    let commits = fast_commits(&daemon.repo_path("r"), TOTAL, "durable");
    // The daemon builds only branches the repository has. (The scan at the
    // restart queues the ones not yet requested: each request then answers
    // with that build, and it is still one build per branch.)
    let names: Vec<String> = (0..TOTAL).map(|i| format!("b{i}")).collect();
    common::create_branches(
        &daemon.repo_path("r"),
        names
            .iter()
            .map(String::as_str)
            .zip(commits.iter().map(String::as_str)),
    );
    let base = daemon.base();
    let token = daemon.token();
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<(i64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let retried = Arc::new(AtomicUsize::new(0));
    let kill_at = rng.range(500, 9_000) as usize;
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (commits, base, token, next, acked, results, retried) = (
                commits.clone(),
                base.clone(),
                token.clone(),
                next.clone(),
                acked.clone(),
                results.clone(),
                retried.clone(),
            );
            std::thread::spawn(move || {
                let agent = common::agent_with_timeout(Duration::from_secs(30));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TOTAL {
                        return;
                    }
                    let body =
                        json!({"repo": "r", "branch": format!("b{i}"), "commit": commits[i]})
                            .to_string();
                    // A client retries what the kill cut off (the same
                    // request: a build already queued answers 200 with
                    // itself) until the restarted daemon acknowledges it.
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let response = agent
                            .post(format!("{base}/api/builds"))
                            .header("Authorization", &format!("Bearer {token}"))
                            .content_type("application/json")
                            .send(&body);
                        match response {
                            Ok(mut r) if r.status() == 201 || r.status() == 200 => {
                                let text = r.body_mut().read_to_string().unwrap();
                                let build: Value = serde_json::from_str(&text).unwrap();
                                assert_eq!(build["commit"], commits[i]);
                                results
                                    .lock()
                                    .unwrap()
                                    .push((build["id"].as_i64().unwrap(), commits[i].clone()));
                                acked.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            other => {
                                if let Ok(r) = &other {
                                    assert_eq!(r.status(), 503, "refused with {}", r.status());
                                }
                                retried.fetch_add(1, Ordering::Relaxed);
                                assert!(Instant::now() < deadline, "never acknowledged: {other:?}");
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    while acked.load(Ordering::Relaxed) < kill_at {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "enqueues stalled: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill9();
    let killed_after = acked.load(Ordering::Relaxed);
    daemon.spawn();
    for client in clients {
        client.join().unwrap();
    }
    let elapsed = started.elapsed();
    // Killed right after the last acknowledgement too.
    daemon.kill9();
    let results = results.lock().unwrap().clone();
    let conn = database(&daemon);
    integrity_ok(&conn);
    let mut stored: HashMap<i64, String> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT id, commit_hash FROM builds").unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        for row in rows {
            let (id, commit) = row.unwrap();
            stored.insert(id, commit);
        }
    }
    let mut seen = BTreeMap::new();
    for (id, commit) in &results {
        // The same id twice only for a retried request of the same commit.
        if let Some(previous) = seen.insert(*id, commit) {
            assert_eq!(previous, commit, "id {id} acknowledged for two commits");
        }
        assert_eq!(
            stored.get(id),
            Some(commit),
            "acknowledged build {id} ({commit}) is not in the database"
        );
    }
    eprintln!(
        "{} acknowledged ({killed_after} before the kill), {} retries, {} rows, {elapsed:?}",
        results.len(),
        retried.load(Ordering::Relaxed),
        stored.len()
    );
    assert_eq!(
        results.len(),
        TOTAL,
        "every request was acknowledged in the end"
    );
    assert_eq!(stored.len(), TOTAL, "one build per commit, none twice");
}

// ---------------------------------------------------------------------------
// Disk full

#[test]
fn a_full_disk_fails_the_build_as_infrastructure_and_the_daemon_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = common::Tmpfs::mount(&dir.path().join("state"), "32m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs (not root?)");
        return;
    };
    // No periodic scan: it would queue the branch `later` on its own.
    let mut daemon = Daemon::configure(
        dir.path(),
        "log_max_bytes = 1073741824\nmax_retries = 0\nkill_grace_secs = 2\nscan_interval_secs = 86400",
        &[],
    );
    daemon.spawn();
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    // A build that works, and a commit to enqueue later.
    let ok = work.commit_flake(&[("fine", &common::passing(&nonce("fine")))]);
    work.push(&["HEAD:refs/heads/main"]);
    let first = daemon.builds()[0]["id"].as_i64().unwrap();
    assert_eq!(status_of(&daemon.wait_final(first)), "success");
    let later = work.commit_flake(&[("later", &common::passing(&nonce("later")))]);
    work.push(&[&format!("{later}:refs/keep/later")]);
    common::create_branches(&daemon.repo_path("r"), [("later", later.as_str())]);
    // A check that prints ~48 MiB into a disk with a few MiB left.
    let flood = format!(
        "echo {}; /usr/bin/yes 0123456789abcdefghijklmnopqrstuvwxyz | /usr/bin/head -c 50000000; echo ok > $out",
        nonce("flood")
    );
    work.commit_flake(&[("flood", &flood)]);
    let filler = daemon.state().join("filler");
    common::fill(&filler, &fs, 6 << 20);
    let events = daemon.event_lines();
    let out = work.push(&["HEAD:refs/heads/flood"]);
    assert!(out.contains("queued"), "{out}");
    let id = daemon
        .builds()
        .iter()
        .find(|b| b["branch"] == "flood")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let build = daemon.wait_build(id, Duration::from_secs(120), |b| {
        matches!(status_of(b), "success" | "failed" | "cancelled")
    });
    assert_eq!(status_of(&build), "failed", "{build}\n{}", daemon.log());
    assert_eq!(build["failure_kind"], "infrastructure", "{build}");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("No space left on device") || summary.contains("disk is full"),
        "the reason is named: {summary:?}"
    );
    // Still full: at most the daemon's released space reserve is free, too
    // little to make it again.
    let free = fs.available();
    assert!(
        free < procurator_ci::storage::store::RESERVE_BYTES
            + 2 * procurator_ci::storage::store::LOW_WATER_BYTES,
        "the disk is still full: {free} bytes free"
    );
    // Reads and events still work.
    assert_healthy(&mut daemon);
    let (status, listing) = daemon.get("/api/builds");
    assert_eq!(status, 200, "{listing}");
    let (status, _) = daemon.get(&format!("/api/builds/{id}"));
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut finished_seen = false;
    while !finished_seen && Instant::now() < deadline {
        if let Ok(line) = events.recv_timeout(Duration::from_millis(200)) {
            finished_seen |= line.starts_with("event: build.finished");
        }
    }
    assert!(finished_seen, "the event stream announced the failure");
    let log = daemon.log_of(id);
    assert!(
        log.contains("procurator-ci"),
        "the log is readable: {log:.200}"
    );
    // Enqueue while full: a clear 503, nothing written.
    let before = daemon.builds().len();
    let files_before = tree(&daemon.state());
    let (status, reply) = daemon.post(
        "/api/builds",
        &json!({"repo": "r", "branch": "later", "commit": later}),
    );
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("disk is full"), "{message}");
    assert_eq!(daemon.builds().len(), before, "no build row was written");
    assert_eq!(tree(&daemon.state()), files_before, "no file was written");
    integrity_ok(&database(&daemon));
    // Space returns: enqueues and builds work again.
    std::fs::remove_file(&filler).unwrap();
    let (status, reply) = daemon.post(
        "/api/builds",
        &json!({"repo": "r", "branch": "later", "commit": later}),
    );
    assert_eq!(status, 201, "{reply}\n{}", daemon.log());
    let again = daemon.wait_final(reply["id"].as_i64().unwrap());
    assert_eq!(status_of(&again), "success", "{again}");
    let (status, reply) = daemon.post(
        &format!("/api/builds/{ok_id}/rebuild", ok_id = first),
        &json!({}),
    );
    assert_eq!(status, 201, "{reply}");
    assert_eq!(
        status_of(&daemon.wait_final(reply["id"].as_i64().unwrap())),
        "success"
    );
    assert_eq!(daemon.build(first)["commit"], ok.as_str());
    integrity_ok(&database(&daemon));
    assert_healthy(&mut daemon);
    drop(daemon);
    drop(fs);
}

// ---------------------------------------------------------------------------
// nix unavailable

#[test]
fn unreachable_or_broken_nix_fails_as_the_hosts_fault_after_backoff_and_the_daemon_lives() {
    let scratch = tempfile::tempdir().unwrap();
    let crashing = script(
        &scratch.path().join("nix-crashes"),
        "echo 'nix: about to crash'\nkill -SEGV $$",
    );
    let not_executable = scratch.path().join("nix-not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    // (what, nix_bin, the daemon's environment, what the summary says, the
    // failure kind: an unreachable Nix daemon and a nix_bin that is missing,
    // cannot run or is not nix are the host's setup; a nix that crashes is
    // the CI's).
    type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 5] = [
        // The real nix told to use a Nix daemon that is not there.
        (
            "no nix daemon",
            "nix".to_string(),
            &[(
                "NIX_REMOTE",
                "unix:///nonexistent/procurator-ci-test/socket",
            )],
            "cannot connect",
            "host",
        ),
        (
            "nix crashes",
            crashing.display().to_string(),
            &[],
            "signal",
            "infrastructure",
        ),
        (
            "nix not executable",
            not_executable.display().to_string(),
            &[],
            "cannot run: not executable",
            "host",
        ),
        (
            "nix missing",
            "/nonexistent/procurator-ci-test/nix".to_string(),
            &[],
            "cannot run: not found",
            "host",
        ),
        // A real program, but not nix: it refuses nix's arguments.
        ("not nix", "/bin/ls".to_string(), &[], "is not nix", "host"),
    ];
    for (what, nix_bin, env, reason, kind) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::configure(
            dir.path(),
            &format!("nix_bin = \"{nix_bin}\"\nmax_retries = 2\nretry_backoff_secs = 1"),
            env,
        );
        // The harness sets `retry_backoff_secs = 0`; a TOML key may appear
        // once, so drop the harness's.
        let config = std::fs::read_to_string(&daemon.config)
            .unwrap()
            .replace("retry_backoff_secs = 0\n", "");
        std::fs::write(&daemon.config, config).unwrap();
        daemon.spawn();
        daemon.create_repo("r");
        let work = Work::clone(&daemon.repo_path("r"));
        work.commit_flake(&[("x", &common::passing(&nonce("unreachable")))]);
        work.push(&["HEAD:refs/heads/main"]);
        let id = daemon.builds()[0]["id"].as_i64().unwrap();
        let build = daemon.wait_final(id);
        assert_eq!(status_of(&build), "failed", "{what}: {build}");
        assert_eq!(build["failure_kind"], kind, "{what}: {build}");
        assert_eq!(build["diagnosis"]["retried"], true, "{what}: {build}");
        let summary = build["failure_summary"].as_str().unwrap_or_default();
        assert!(summary.contains(reason), "{what}: {summary:?}");
        if kind == "host" && what != "no nix daemon" {
            // What to change, and where.
            assert!(
                summary.contains(&format!("nix_bin `{nix_bin}`"))
                    && summary.contains("PROCURATOR_CI_NIX_BIN"),
                "{what}: {summary:?}"
            );
            let hint = build["diagnosis"]["hint"].as_str().unwrap();
            assert!(
                hint.contains("nix_bin") && hint.contains("PROCURATOR_CI_NIX_BIN"),
                "{what}: {hint:?}"
            );
        }
        assert_eq!(build["retry_count"], 2, "{what}: {build}");
        let attempts = build["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 3, "{what}: {build}");
        // Backoff: 1 s, then 2 s, between the end of one attempt and the
        // start of the next.
        let ms = |a: &Value, key: &str| {
            chrono::DateTime::parse_from_rfc3339(a[key].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        };
        for (n, expected) in [(1usize, 1000i64), (2, 2000)] {
            let gap = ms(&attempts[n], "started_at") - ms(&attempts[n - 1], "finished_at");
            assert!(
                gap >= expected - 50,
                "{what}: retry {n} came {gap} ms after the failure, backoff is {expected} ms: {build}"
            );
        }
        assert_healthy(&mut daemon);
        // A second build meets the same fate; the daemon still lives.
        let (status, reply) = daemon.post(&format!("/api/builds/{id}/rebuild"), &json!({}));
        assert_eq!(status, 201, "{reply}");
        let again = daemon.wait_final(reply["id"].as_i64().unwrap());
        assert_eq!(again["failure_kind"], kind, "{what}: {again}");
        assert_healthy(&mut daemon);
    }
}

// ---------------------------------------------------------------------------
// Database locked by another process

#[test]
fn a_database_locked_past_the_busy_timeout_gives_503_loses_nothing_and_resumes() {
    let scratch = tempfile::tempdir().unwrap();
    let nix = script(
        &scratch.path().join("nix"),
        "case \"$2\" in show) echo '{}'; exit 0;; esac\nexit 0",
    );
    // No periodic scan: it would queue the branches made below on its own.
    let mut daemon = Daemon::start(&format!(
        "nix_bin = \"{}\"\nscan_interval_secs = 86400",
        nix.display()
    ));
    daemon.create_repo("r");
    let commits = fast_commits(&daemon.repo_path("r"), 6, "locked");
    let names: Vec<String> = (0..commits.len()).map(|i| format!("b{i}")).collect();
    common::create_branches(
        &daemon.repo_path("r"),
        names
            .iter()
            .map(String::as_str)
            .zip(commits.iter().map(String::as_str)),
    );
    let enqueue = |daemon: &Daemon, i: usize| {
        daemon.post(
            "/api/builds",
            &json!({"repo": "r", "branch": format!("b{i}"), "commit": commits[i]}),
        )
    };
    let (status, first) = enqueue(&daemon, 0);
    assert_eq!(status, 201, "{first}");
    let first_id = first["id"].as_i64().unwrap();
    daemon.wait_final(first_id);

    // Another process takes the write lock and keeps it for 8 s, longer
    // than the daemon's 5 s busy timeout.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let db_path = daemon.state().join("ci.db");
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db_path).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(8));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let locked_at = Instant::now();
    // Reads go on, promptly.
    let t = Instant::now();
    let (status, _) = daemon.get(&format!("/api/builds/{first_id}"));
    assert_eq!(status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a read waited {:?}",
        t.elapsed()
    );
    // A write is refused with a clear 503 once the busy timeout passes.
    let t = Instant::now();
    let (status, reply) = enqueue(&daemon, 1);
    let waited = t.elapsed();
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("locked by another process"),
        "{reply}"
    );
    assert!(waited < Duration::from_secs(8), "refused after {waited:?}");
    assert!(
        locked_at.elapsed() < Duration::from_secs(8),
        "the lock was held throughout"
    );
    assert_healthy(&mut daemon);
    holder.join().unwrap();
    // Service resumes; nothing acknowledged is lost, nothing refused exists.
    let (status, reply) = enqueue(&daemon, 2);
    assert_eq!(status, 201, "{reply}");
    let second_id = reply["id"].as_i64().unwrap();
    assert_eq!(status_of(&daemon.wait_final(second_id)), "success");
    let builds = daemon.builds();
    let commits_built: BTreeSet<&str> = builds
        .iter()
        .map(|b| b["commit"].as_str().unwrap())
        .collect();
    assert_eq!(
        commits_built,
        [commits[0].as_str(), commits[2].as_str()]
            .into_iter()
            .collect(),
        "{builds:?}"
    );
    assert_eq!(status_of(&daemon.build(first_id)), "success");
    integrity_ok(&database(&daemon));
    assert_healthy(&mut daemon);
}

// ---------------------------------------------------------------------------
// Slow clients

#[test]
fn clients_that_never_read_block_nothing_and_cost_bounded_memory() {
    let mut daemon = Daemon::start("log_max_bytes = 1073741824\nworkers = 2");
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    // ~20 MB of output over a few seconds.
    let loud = |label: &str| {
        format!(
            "echo {}; /usr/bin/yes 0123456789abcdefghijklmnopqrstuvwxyz | /usr/bin/head -c 20000000; echo; echo loud-done; echo ok > $out",
            nonce(label)
        )
    };
    work.commit_flake(&[("loud", &loud("watched"))]);
    // Queued while the worker is busy: the slow clients attach first.
    let pid = daemon.pid();
    let rss_before = rss_kib(pid);
    let fds_before = fd_count(pid);
    work.push(&["HEAD:refs/heads/main"]);
    let id = daemon.builds()[0]["id"].as_i64().unwrap();
    let mut stalled = Vec::new();
    for n in 0..16 {
        let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
        let path = if n % 2 == 0 {
            format!("/api/events?build={id}")
        } else {
            format!("/api/builds/{id}/logs?follow=true")
        };
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        // Read nothing, ever.
        stalled.push(stream);
    }
    // A reading follower and a stream of quick requests meanwhile.
    let follower = daemon.follow_log(id);
    let mut worst = Duration::ZERO;
    let mut peak = rss_before;
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let (status, _) = daemon.get("/api/health");
        assert_eq!(status, 200);
        worst = worst.max(t.elapsed());
        peak = peak.max(rss_kib(pid));
        let build = daemon.build(id);
        if matches!(status_of(&build), "success" | "failed" | "cancelled") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the build did not finish: {build}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let build = daemon.build(id);
    assert_eq!(status_of(&build), "success", "{build}");
    let (text, end) = follower.join().unwrap();
    end.unwrap();
    assert!(
        text.len() > 20_000_000,
        "the reading follower got {} bytes",
        text.len()
    );
    // How much the stalled clients slow the build is measured by
    // `scripts/bench stalled`, not asserted here.
    assert!(
        String::from_utf8_lossy(&text[text.len() - 4096..]).contains("loud-done"),
        "the reading follower got the end"
    );
    // A daemon blocked by its stalled clients would not answer at all; how
    // fast it answers is the benchmarks' business, so the bound here only
    // separates "answers" from "blocked", with room for a loaded CI machine.
    assert!(
        worst < Duration::from_secs(5),
        "a health request took {worst:?} with slow clients attached"
    );
    let growth = peak.saturating_sub(rss_before);
    eprintln!("rss before {rss_before} KiB, peak {peak} KiB, worst health {worst:?}");
    assert!(
        growth < 48 * 1024,
        "16 stalled clients of a 20 MB log grew the daemon by {growth} KiB"
    );
    // Still stalled, they hold a connection each and nothing more; closing
    // them frees everything.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count(pid) > fds_before + 2 {
        assert!(
            Instant::now() < deadline,
            "file descriptors: {} before, {} after the slow clients left",
            fds_before,
            fd_count(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_healthy(&mut daemon);
}

// ---------------------------------------------------------------------------
// Hostile HTTP

#[test]
fn a_corpus_of_hostile_requests_gets_json_4xx_and_changes_nothing() {
    let mut daemon = Daemon::start("nix_bin = \"/bin/true\"");
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    let commit = work.commit_flake(&[("ok", &common::passing("x"))]);
    work.push(&["HEAD:refs/heads/main"]);
    let id = daemon.builds()[0]["id"].as_i64().unwrap();
    daemon.wait_final(id);
    let token = daemon.token();
    let port = daemon.port;
    let conn = database(&daemon);
    let count = |conn: &rusqlite::Connection| -> (i64, i64) {
        (
            conn.query_row("SELECT COUNT(*) FROM builds", [], |r| r.get(0))
                .unwrap(),
            conn.query_row("SELECT COUNT(*) FROM repos", [], |r| r.get(0))
                .unwrap(),
        )
    };
    let rows_before = count(&conn);
    let files_before = tree(&daemon.state());
    let outside_before = tree(daemon.dir.as_path());

    let post = |path: &str, content_type: Option<&str>, body: &[u8], auth: bool| {
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        if let Some(ct) = content_type {
            request.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        if auth {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        raw(port, &bytes)
    };
    let get = |target: &str| {
        raw(
            port,
            format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };

    // Malformed JSON, on every endpoint that reads a body.
    let malformed: &[&[u8]] = &[
        b"",
        b"{",
        b"}",
        b"[]",
        b"null",
        b"\"x\"",
        b"{\"repo\": }",
        b"{\"repo\": \"r\", \"branch\": \"main\", \"commit\": ",
        b"{\"repo\": \"r\" \"branch\": \"main\"}",
        b"{'repo': 'r'}",
        b"{\"repo\": \"r\", \"branch\": \"main\", \"commit\": \"x\", \"repo\": \"r\"}",
        b"{\"repo\": 1, \"branch\": [], \"commit\": {}}",
        b"{\"repo\": \"r\", \"branch\": \"main\", \"commit\": null}",
        b"\xef\xbb\xbf{\"repo\": \"r\"}",
        b"{\"name\": \"\\ud800\"}",
        b"{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]}",
        b"{\"repo\": \"r\", \"branch\": \"main\", \"commit\": \"aaaa\", \"extra\": 1}",
        b"1e999999",
        b"{\"name\": \"ok\", \"description\": 12}",
    ];
    for path in ["/api/builds", "/api/repos"] {
        for body in malformed {
            let (status, _, reply) = post(path, Some("application/json"), body, true);
            let what = format!("POST {path} {:?}", String::from_utf8_lossy(body));
            let error = assert_json_error(&what, status, &reply);
            assert!(status == 400 || status == 422, "{what}: {status} {error}");
        }
    }
    // Deeply nested JSON does not overflow the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _, reply) = post(
        "/api/builds",
        Some("application/json"),
        deep.as_bytes(),
        true,
    );
    assert_json_error("deep nesting", status, &reply);
    // Invalid UTF-8 inside a JSON string, and raw bytes.
    for body in [
        &b"{\"repo\": \"r\xff\", \"branch\": \"main\", \"commit\": \"x\"}"[..],
        &b"{\"name\": \"\xc3\x28\"}"[..],
        &b"\xff\xfe\xfd"[..],
        &b"\x00\x00\x00"[..],
    ] {
        for path in ["/api/builds", "/api/repos"] {
            let (status, _, reply) = post(path, Some("application/json"), body, true);
            assert_json_error(&format!("{path} invalid UTF-8 {body:?}"), status, &reply);
        }
    }
    // Wrong content types.
    let good = json!({"repo": "r", "branch": "main", "commit": commit}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("json"),
        Some("application/json-patch"),
    ] {
        for path in ["/api/builds", "/api/repos"] {
            let (status, _, reply) = post(path, content_type, good.as_bytes(), true);
            let error = assert_json_error(&format!("{path} as {content_type:?}"), status, &reply);
            assert_eq!(status, 415, "{content_type:?}: {error}");
        }
    }
    // Bodies over the limit: declared, and chunked without a length.
    let huge = format!(
        "{{\"repo\": \"r\", \"branch\": \"main\", \"commit\": \"{commit}\", \"author\": \"{}\"}}",
        "a".repeat(1024 * 1024 + 1)
    );
    for path in ["/api/builds", "/api/repos"] {
        let (status, _, reply) = post(path, Some("application/json"), huge.as_bytes(), true);
        let error = assert_json_error(&format!("{path} over the limit"), status, &reply);
        assert_eq!(status, 413, "{error}");
        let mut chunked = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for piece in huge.as_bytes().chunks(64 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let (status, _, reply) = raw(port, &chunked);
        let error = assert_json_error(&format!("{path} chunked over the limit"), status, &reply);
        assert_eq!(status, 413, "{error}");
    }
    // A declared length far beyond what is sent, and a lying one.
    let (status, _, reply) = raw(
        port,
        format!(
            "POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Authorization: Bearer {token}\r\nContent-Length: 99999999999\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    assert_json_error("enormous Content-Length", status, &reply);
    // Without the token, even a good body is refused before anything runs.
    let (status, _, reply) = post(
        "/api/builds",
        Some("application/json"),
        good.as_bytes(),
        false,
    );
    assert_eq!(status, 401, "{reply:?}");
    assert_json_error("no token", status, &reply);
    // Huge headers: a large but legal one is served; too many headers or an
    // oversized head is refused by the HTTP layer before the router, still
    // with a JSON error the client can read although it was still sending.
    let big = "x".repeat(8 * 1024);
    let (status, _, reply) = raw(
        port,
        format!("GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 200, "{reply:?}");
    // Past the 16 KiB a head may take (what a stalled connection may hold).
    let bigger = "x".repeat(17 * 1024);
    let (status, _, reply) = raw(
        port,
        format!("GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {bigger}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 431, "a 17 KiB header");
    assert_json_error("a 17 KiB header", status, &reply);
    let (status, _, reply) = raw(
        port,
        format!(
            "POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}",
            "y".repeat(64 * 1024)
        )
        .as_bytes(),
    );
    assert_json_error("huge wrong token", status, &reply);
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _, reply) = raw(
        port,
        format!("GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 431, "2000 headers");
    let value = assert_json_error("2000 headers", status, &reply);
    assert_eq!(value["error"]["code"], "headers_too_large");
    let enormous = "z".repeat(2 * 1024 * 1024);
    let (status, _, reply) = raw(
        port,
        format!(
            "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: {enormous}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(status, 431, "a 2 MiB header");
    assert_json_error("a 2 MiB header", status, &reply);
    let long_target = format!("/api/builds?repo={}", "r".repeat(100_000));
    let (status, _, reply) = raw(
        port,
        format!("GET {long_target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    // Over the 16 KiB a request head may take, before its end is seen.
    assert_eq!(status, 431, "a 100 kB target");
    let value = assert_json_error("a 100 kB target", status, &reply);
    assert_eq!(value["error"]["code"], "headers_too_large");
    for (what, request) in [
        ("a request line of junk", &b"GARBAGE\r\n\r\n"[..]),
        (
            "a header without a colon",
            b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n",
        ),
        (
            "a non-numeric content length",
            b"POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
        ),
        (
            "a NUL in the target",
            b"GET /api/\0health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        ),
    ] {
        let (status, headers, reply) = raw(port, request);
        assert_eq!(status, 400, "{what}: {reply:?}");
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/json"),
            "{what}"
        );
        let value = assert_json_error(what, status, &reply);
        assert_eq!(value["error"]["code"], "malformed_request", "{what}");
    }

    // Path traversal and junk in every path parameter.
    let segments = [
        "..",
        "%2e%2e",
        "..%2f..%2fetc%2fpasswd",
        "..%5c..%5cwindows",
        "%2fetc%2fpasswd",
        "r%00",
        "r%0a",
        "%ff%fe",
        "r.git",
        "-h",
        "....%2f%2f",
        "r%2f..%2f..",
        "%252e%252e",
        "' OR 1=1 --",
        "0",
        "-1",
        "9223372036854775808",
        "1e3",
        "0x10",
    ];
    for seg in segments {
        let enc = seg.replace(' ', "%20").replace('\'', "%27");
        for (method, target) in [
            ("GET", format!("/api/repos/{enc}")),
            ("DELETE", format!("/api/repos/{enc}?confirm={enc}")),
            ("POST", format!("/api/repos/{enc}/scan")),
            ("GET", format!("/api/repos/{enc}/badge.svg")),
            ("GET", format!("/api/builds/{enc}")),
            ("GET", format!("/api/builds/{enc}/logs")),
            ("POST", format!("/api/builds/{enc}/cancel")),
            ("POST", format!("/api/builds/{enc}/rebuild")),
            ("GET", format!("/api/events?build={enc}")),
        ] {
            let (status, _, reply) = raw(
                port,
                format!(
                    "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
                     Connection: close\r\nContent-Length: 0\r\n\r\n"
                )
                .as_bytes(),
            );
            assert_json_error(&format!("{method} {target}"), status, &reply);
        }
    }
    // Raw (unencoded) traversal never escapes the router.
    for target in [
        "/api/repos/../../etc/passwd",
        "/api/../../../etc/passwd",
        "/../../etc/passwd",
        "/api/builds/1/../../../etc/passwd",
        "/static/../../Cargo.toml",
        "//etc/passwd",
    ] {
        let (status, _, reply) = get(target);
        assert!(
            !String::from_utf8_lossy(&reply).contains("root:"),
            "{target} leaked a file"
        );
        assert_json_error(target, status, &reply);
    }

    // SQL metacharacters in every query parameter: refused, or answered
    // as the literal value they are (nothing matches).
    let sql = [
        "' OR '1'='1",
        "1; DROP TABLE builds; --",
        "\" OR \"\"=\"",
        "%",
        "_",
        "1 UNION SELECT * FROM repos",
        "main' --",
        "*",
        "\\",
    ];
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    for value in sql {
        let v = encode(value);
        for target in [
            format!("/api/builds?repo={v}"),
            format!("/api/builds?branch={v}"),
            format!("/api/builds?status={v}"),
            format!("/api/builds?limit={v}"),
            format!("/api/builds?before={v}"),
            format!("/api/builds?repo=r&branch={v}"),
            format!("/api/builds/{id}/logs?offset={v}"),
            format!("/api/builds/{id}/logs?attempt={v}"),
            format!("/api/builds/{id}/logs?follow={v}"),
            format!("/api/events?build={v}"),
            format!("/api/events?offset={v}"),
            format!("/api/repos/r/badge.svg?branch={v}"),
        ] {
            let (status, headers, reply) = get(&target);
            if status == 200 {
                if target.starts_with("/api/builds?") {
                    let listing: Value = serde_json::from_slice(&reply).unwrap();
                    assert_eq!(
                        listing["builds"].as_array().unwrap().len(),
                        0,
                        "{target} matched builds"
                    );
                } else {
                    assert!(
                        headers
                            .get("content-type")
                            .is_some_and(|c| c.starts_with("image/svg")),
                        "{target}: 200 with {headers:?}"
                    );
                }
            } else {
                assert_json_error(&target, status, &reply);
            }
        }
        let (status, _, reply) = raw(
            port,
            format!(
                "DELETE /api/repos/r?confirm={v} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_json_error("DELETE with SQL in confirm", status, &reply);
    }

    // Negative, zero where meaningless, enormous and malformed numbers.
    let malformed_numbers = [
        "-1",
        "-9223372036854775808",
        "18446744073709551616",
        "99999999999999999999999999",
        "1e3",
        "0x10",
        "1.5",
        "+-1",
        "",
        "NaN",
        " 1",
        "1 ",
    ];
    let mut refused: Vec<String> = Vec::new();
    for value in malformed_numbers {
        let v = encode(value);
        refused.extend([
            format!("/api/builds?limit={v}"),
            format!("/api/builds?before={v}"),
            format!("/api/builds/{id}/logs?offset={v}"),
            format!("/api/builds/{id}/logs?attempt={v}"),
            format!("/api/events?offset={v}"),
            format!("/api/events?build={v}"),
        ]);
    }
    refused.extend([
        "/api/builds?limit=0".to_string(),
        "/api/builds?limit=501".to_string(),
        "/api/builds?limit=4294967296".to_string(),
        "/api/builds?before=0".to_string(),
        "/api/builds?before=9223372036854775808".to_string(),
        format!("/api/builds/{id}/logs?attempt=0"),
        format!("/api/builds/{id}/logs?attempt=2"),
        format!("/api/builds/{id}/logs?attempt=9223372036854775807"),
        "/api/events?build=0".to_string(),
    ]);
    for target in &refused {
        let (status, _, reply) = get(target);
        assert_json_error(target, status, &reply);
    }
    // Representable but beyond the end: an empty answer, promptly.
    for target in [
        format!("/api/builds/{id}/logs?offset=18446744073709551615"),
        "/api/builds?before=9223372036854775807&limit=500".to_string(),
    ] {
        let t = Instant::now();
        let (status, _, reply) = get(&target);
        assert_eq!(
            status,
            200,
            "{target}: {:?}",
            String::from_utf8_lossy(&reply)
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{target}");
    }
    // Unknown parameters are refused, not ignored.
    for target in [
        "/api/builds?offset=1",
        "/api/builds?limit=1&limit=2",
        "/api/builds?order=id;drop",
    ] {
        let (status, _, reply) = get(target);
        assert_json_error(target, status, &reply);
    }
    // Methods and protocol junk.
    for request in [
        &b"PUT /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..],
        b"PATCH /api/repos/r HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"TRACE /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /api/health HTTP/9.9\r\n\r\n",
        b"GET /api/health\xff HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{}",
        b"POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nConnection: close\r\n\r\nzz\r\n",
    ] {
        let (status, _, reply) = raw(port, request);
        assert_json_error(&String::from_utf8_lossy(request), status, &reply);
    }
    // The absolute form is valid HTTP/1.1; the authority is ignored, and
    // the Host header must name this daemon.
    let (status, _, _) = raw(
        port,
        b"GET http://evil.example.org/api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let (status, _, reply) = raw(
        port,
        b"GET http://evil.example.org/api/health HTTP/1.1\r\nHost: evil\r\nConnection: close\r\n\r\n",
    );
    let value = assert_json_error("a host it does not serve", status, &reply);
    assert_eq!(value["error"]["field"], "host");

    // Nothing was created or changed, and the daemon is fine.
    assert_eq!(count(&conn), rows_before, "rows were written");
    assert_eq!(tree(&daemon.state()), files_before, "files were written");
    assert_eq!(tree(daemon.dir.as_path()).len(), outside_before.len());
    assert!(daemon.repo_path("r").join("HEAD").is_file());
    integrity_ok(&conn);
    assert_healthy(&mut daemon);
    let (status, reply) = daemon.post(
        "/api/builds",
        &json!({"repo": "r", "branch": "main", "commit": commit}),
    );
    assert_eq!(status, 201, "{reply}");
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_stall_timeout() {
    let scratch = tempfile::tempdir().unwrap();
    // A stand-in nix that prints far more than the kernel buffers between a
    // client and the daemon hold.
    let loud = script(
        &scratch.path().join("loud-nix"),
        "/usr/bin/yes 'procurator-ci stall test line of output' | /usr/bin/head -c 24000000\n",
    );
    let daemon = Daemon::start(&format!(
        "client_stall_timeout_secs = 2\nnix_bin = \"{}\"\n",
        loud.display()
    ));
    daemon.create_repo("loud");
    let work = common::Work::clone(&daemon.repo_path("loud"));
    let commit = work.commit("loud");
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    assert_eq!(status_of(&daemon.wait_final(id)), "success");
    let full = daemon.log_of(id).len();
    assert!(full > 23_000_000, "a reading client gets it all: {full}");

    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stalled
        .write_all(
            format!("GET /api/builds/{id}/logs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    // Now read what was buffered: the daemon gave up on this connection, so
    // it ends early instead of delivering the whole log.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < full,
        "the stalled client was not dropped: it got {got} of {full} bytes"
    );
    assert_eq!(daemon.get("/api/health").0, 200);
}

#[test]
fn a_client_that_sends_too_slowly_is_dropped_after_the_stall_timeout() {
    let daemon = Daemon::start("client_stall_timeout_secs = 2\n");
    let token = daemon.token();
    let connect = || {
        let stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    };
    // Everything until the daemon closes the connection; a read timeout
    // (the connection left open) fails the test.
    let read_all = |stream: &mut TcpStream| {
        let mut reply = Vec::new();
        if let Err(e) = stream.read_to_end(&mut reply) {
            panic!(
                "the connection was not closed ({e}) after {:?}",
                String::from_utf8_lossy(&reply)
            );
        }
        String::from_utf8_lossy(&reply).into_owned()
    };

    // A head that never ends: the connection is closed, though not at once.
    let started = Instant::now();
    let mut head = connect();
    head.write_all(b"POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    // A body that never ends: a JSON 408 naming the setting.
    let mut body = connect();
    write!(
        body,
        "POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"repo\""
    )
    .unwrap();
    // Meanwhile, a body sent in two parts well within the limit is served.
    let mut slow = connect();
    let request = format!(
        "{{\"repo\": \"nothing-here\", \"branch\": \"main\", \"commit\": \"{}\"}}",
        "a".repeat(40)
    );
    write!(
        slow,
        "POST /api/builds HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        request.len(),
        &request[..10]
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    slow.write_all(&request.as_bytes()[10..]).unwrap();
    let reply = read_all(&mut slow);
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(reply.contains(r#""code":"not_found""#), "{reply}");

    let reply = read_all(&mut head);
    assert_eq!(reply, "", "an unfinished head gets no answer");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed before the stall timeout: {:?}",
        started.elapsed()
    );
    let reply = read_all(&mut body);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let (_, json) = reply.split_once("\r\n\r\n").unwrap();
    let json: Value = serde_json::from_str(json).unwrap();
    assert_eq!(json["error"]["code"], "request_timeout");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client_stall_timeout_secs"),
        "{json}"
    );

    // An idle keep-alive connection is closed too; the daemon serves on.
    let mut idle = connect();
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let reply = read_all(&mut idle);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(daemon.get("/api/health").0, 200);
}
