//! Repeated kill -9 under load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Daemon, Work, all_pids, cmdline, nonce, proc_stat};
use crate::{Rng, database, integrity_ok, status_of};

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
