//! Live per-check progress of running builds.
//!
//! The log's [`Renderer`](crate::build::checks::Renderer) follows every derivation
//! nix builds and the [`Diagnosis`](crate::build::diagnosis::Diagnosis) notes the
//! ones that failed; the output pump hands both to the build's [`Tracker`]
//! as they change. Once the flake's checks are mapped to derivations (the
//! introspection evaluates them while nix runs), the tracker tells for each
//! check whether it is queued, running, passed, failed or already in the
//! store, and how far the build is. It lives in memory only: the results
//! stored when the build ends are the record.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;

use crate::build::checks::{BuildCounts, CheckMap, DrvBuild};

/// The trackers of the running builds, by build id.
#[derive(Debug, Default)]
pub struct Live {
    builds: Mutex<HashMap<i64, Arc<Tracker>>>,
}

impl Live {
    /// A fresh tracker for build `id`'s attempt, replacing any earlier one.
    pub fn start(&self, id: i64) -> Arc<Tracker> {
        let tracker = Arc::new(Tracker::default());
        self.builds
            .lock()
            .expect("live builds")
            .insert(id, tracker.clone());
        tracker
    }

    /// Forgets build `id`: it ended, and its stored results speak for it.
    pub fn end(&self, id: i64) {
        self.builds.lock().expect("live builds").remove(&id);
    }

    /// What is known now of build `id`'s checks, while it runs.
    pub fn snapshot(&self, id: i64) -> Option<Snapshot> {
        let tracker = self.builds.lock().expect("live builds").get(&id).cloned();
        tracker?.snapshot()
    }
}

/// A check's state while its build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiveStatus {
    /// Not started yet.
    Queued,
    /// Its derivation is being built (or has stopped and nix has not yet
    /// said how).
    Running,
    Passed,
    Failed,
    /// Its output was already in the store: nix builds nothing for it.
    Cached,
}

impl LiveStatus {
    fn done(self) -> bool {
        matches!(self, Self::Passed | Self::Failed | Self::Cached)
    }
}

/// One check as the API and the `build.checks` event show it while the
/// build runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveCheck {
    pub name: String,
    pub system: String,
    pub status: LiveStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drv_path: Option<String>,
    /// When its build started (milliseconds since the epoch), so that a
    /// client can tick a running check's time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    /// How long its build took, once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Where its build output starts in the build's log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_offset: Option<u64>,
    /// Where nix builds it: a remote builder's URI, or `local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Why it did not evaluate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How many checks have ended (passed, failed or cached) of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

/// Every check of a running build and the build's progress.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub progress: Progress,
    pub checks: Vec<LiveCheck>,
}

/// What of a build's checks changed since the last event about them: the
/// events carry only that, so that a flake with hundreds of checks sends a
/// few small events rather than every check each time.
#[derive(Debug, Default)]
pub struct Changes {
    sent: HashMap<String, LiveCheck>,
    progress: Option<Progress>,
}

impl Changes {
    /// The checks of `now` that differ from what was last sent, with the
    /// progress; `None` when nothing did.
    pub fn since_last(&mut self, now: Snapshot) -> Option<Snapshot> {
        let checks: Vec<LiveCheck> = now
            .checks
            .into_iter()
            .filter(|c| self.sent.get(&c.name) != Some(c))
            .collect();
        if checks.is_empty() && self.progress == Some(now.progress) {
            return None;
        }
        self.progress = Some(now.progress);
        for check in &checks {
            self.sent.insert(check.name.clone(), check.clone());
        }
        Some(Snapshot {
            progress: now.progress,
            checks,
        })
    }
}

/// What one running build's checks are doing.
#[derive(Debug, Default)]
pub struct Tracker {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Check → derivation and output, once evaluated.
    map: Option<CheckMap>,
    /// Derivation → the output of the check it builds.
    outputs: HashMap<String, String>,
    /// What nix did of each derivation so far.
    drvs: HashMap<String, DrvBuild>,
    failed: HashSet<String>,
    /// Check outputs seen valid in the store.
    valid: HashSet<String>,
    /// Derivations seen ended from nix's counts: when, and whether failed.
    ended: HashMap<String, (i64, bool)>,
    /// Nix's last counts of the builds.
    counts: BuildCounts,
}

impl State {
    /// Builds that started and whose end is not known: running, or
    /// stopped by nix without their output in the store yet.
    fn open(&self) -> Vec<String> {
        self.drvs
            .iter()
            .filter(|(drv, build)| {
                !self.ended.contains_key(*drv)
                    && (build.finished_ms.is_none()
                        || self
                            .outputs
                            .get(*drv)
                            .is_some_and(|out| !self.valid.contains(out)))
            })
            .map(|(drv, _)| drv.clone())
            .collect()
    }

    /// Nix counted a build more as done or failed: a check whose output is
    /// now in the store passed; one without it that nix no longer builds
    /// (nothing runs any more, or nix let go of its output's lock) failed.
    fn counted(&mut self, counts: BuildCounts, now_ms: i64) {
        let before = std::mem::replace(&mut self.counts, counts);
        if counts.done <= before.done && counts.failed <= before.failed {
            return;
        }
        let mut locks = Locks::default();
        for drv in self.open() {
            let Some(out) = self.outputs.get(&drv).cloned() else {
                continue;
            };
            let counted_in = self.drvs[&drv].log_offset < counts.log_offset;
            if std::path::Path::new(&out).exists() {
                self.valid.insert(out);
                self.ended.insert(drv, (now_ms, false));
            } else if counted_in
                && counts.failed > 0
                && (counts.running == 0 || locks.output_locked(&out) == Some(false))
            {
                self.ended.insert(drv, (now_ms, true));
            }
        }
    }
}

/// The file locks held on this machine (`/proc/locks`), read once when
/// first asked.
#[derive(Default)]
struct Locks(Option<Option<String>>);

impl Locks {
    /// Whether nix holds the lock of output `out` (`<out>.lock`), as it
    /// does for as long as it builds it; `None` when that cannot be told.
    /// Read, never taken, so nix is not disturbed.
    fn output_locked(&mut self, out: &str) -> Option<bool> {
        use std::os::unix::fs::MetadataExt;
        let inode = match std::fs::metadata(format!("{out}.lock")) {
            Ok(meta) => meta.ino(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
            Err(_) => return None,
        };
        let locks = self
            .0
            .get_or_insert_with(|| std::fs::read_to_string("/proc/locks").ok())
            .as_deref()?;
        Some(holds(locks, inode))
    }
}

/// Whether `/proc/locks` text shows a lock held on `inode` (`->` lines are
/// waiters, not holders).
fn holds(locks: &str, inode: u64) -> bool {
    locks.lines().filter(|l| !l.contains("->")).any(|line| {
        line.split_whitespace()
            .nth(5)
            .and_then(|file| file.rsplit(':').next())
            .and_then(|i| i.parse::<u64>().ok())
            == Some(inode)
    })
}

impl Tracker {
    /// The flake's checks, mapped to derivations. Looks in the store for
    /// their outputs: blocking.
    pub fn set_map(&self, map: CheckMap) {
        let mut state = self.state.lock().expect("check progress");
        let paths: Vec<_> = map.values().filter_map(|p| p.as_ref().ok()).collect();
        state.outputs = paths
            .iter()
            .map(|p| (p.drv.clone(), p.out.clone()))
            .collect();
        state.valid = paths
            .iter()
            .filter(|p| std::path::Path::new(&p.out).exists())
            .map(|p| p.out.clone())
            .collect();
        state.map = Some(map);
        // Builds nix counted as ended before the checks were known.
        let (counts, now) = (state.counts, crate::build::queue::now_ms());
        state.counts = BuildCounts::default();
        state.counted(counts, now);
        drop(state);
        self.changed.notify_one();
    }

    /// Derivation builds that started or stopped, derivations nix reported
    /// failed and nix's new counts of the builds, if they changed. An ended
    /// build's output is looked for in the store: blocking.
    pub fn update<'a>(
        &self,
        builds: impl IntoIterator<Item = (&'a str, &'a DrvBuild)>,
        failed: &[String],
        counts: Option<BuildCounts>,
        now_ms: i64,
    ) {
        let mut state = self.state.lock().expect("check progress");
        let mut any = false;
        for (drv, build) in builds {
            if build.finished_ms.is_some()
                && let Some(out) = state.outputs.get(drv).cloned()
                && std::path::Path::new(&out).exists()
            {
                state.valid.insert(out);
            }
            state.drvs.insert(drv.to_string(), build.clone());
            any = true;
        }
        for drv in failed {
            any |= state.failed.insert(drv.clone());
        }
        if let Some(counts) = counts {
            state.counted(counts, now_ms);
            any = true;
        }
        drop(state);
        if any {
            self.changed.notify_one();
        }
    }

    /// Derivations seen ending before nix stopped their activity: when,
    /// and whether they failed (for the final results' durations and
    /// statuses: nix 2.8 stops every build's activity at the end).
    pub fn seen_ending(&self) -> HashMap<String, (i64, bool)> {
        self.state.lock().expect("check progress").ended.clone()
    }

    /// The machines the derivations seen so far were built on, sorted:
    /// remote builders' URIs and `local`.
    pub fn machines(&self) -> Vec<String> {
        let state = self.state.lock().expect("check progress");
        let machines: std::collections::BTreeSet<&str> =
            state.drvs.values().map(DrvBuild::machine_name).collect();
        machines.into_iter().map(str::to_string).collect()
    }

    /// Waits until something changed since the last wait returned.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Each check's state now; `None` until the checks are mapped.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let state = self.state.lock().expect("check progress");
        let map = state.map.as_ref()?;
        let system = crate::build::checks::host_system();
        let checks: Vec<LiveCheck> = map
            .iter()
            .map(|(name, paths)| {
                let mut check = LiveCheck {
                    name: name.clone(),
                    system: system.clone(),
                    status: LiveStatus::Queued,
                    drv_path: None,
                    started_ms: None,
                    duration_ms: None,
                    log_offset: None,
                    machine: None,
                    error: None,
                };
                let paths = match paths {
                    Ok(paths) => paths,
                    Err(error) => {
                        check.status = LiveStatus::Failed;
                        check.error = Some(error.clone());
                        return check;
                    }
                };
                check.drv_path = Some(paths.drv.clone());
                let build = state.drvs.get(&paths.drv);
                let ended = state.ended.get(&paths.drv);
                if let Some(build) = build {
                    check.started_ms = Some(build.started_ms);
                    check.log_offset = Some(build.log_offset);
                    check.machine = Some(build.machine_name().to_string());
                    check.duration_ms = build
                        .finished_ms
                        .or(ended.map(|(at, _)| *at))
                        .map(|f| f - build.started_ms);
                }
                let valid = state.valid.contains(&paths.out);
                check.status = match build {
                    _ if state.failed.contains(&paths.drv) => LiveStatus::Failed,
                    Some(_) if ended.is_some_and(|(_, failed)| *failed) => LiveStatus::Failed,
                    Some(b) if (b.finished_ms.is_some() || ended.is_some()) && valid => {
                        LiveStatus::Passed
                    }
                    // Stopped, and neither the store nor nix has said how
                    // yet (nix 2.3x stops a build's activity before it
                    // registers the output).
                    Some(_) => LiveStatus::Running,
                    None if valid => LiveStatus::Cached,
                    None => LiveStatus::Queued,
                };
                check
            })
            .collect();
        let done = checks.iter().filter(|c| c.status.done()).count();
        Some(Snapshot {
            progress: Progress {
                done,
                total: checks.len(),
            },
            checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::checks::CheckPaths;

    fn paths(dir: &std::path::Path, name: &str) -> Result<CheckPaths, String> {
        Ok(CheckPaths {
            drv: format!("/nix/store/{name}.drv"),
            out: dir.join(name).display().to_string(),
        })
    }

    fn status(snapshot: &Snapshot, name: &str) -> LiveStatus {
        snapshot
            .checks
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .status
    }

    #[test]
    fn each_check_moves_from_queued_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cached"), "").unwrap();
        let tracker = Tracker::default();
        let started = DrvBuild {
            log_offset: 7,
            started_ms: 1000,
            ..DrvBuild::default()
        };
        // Before the map: tracked, not shown.
        tracker.update([("/nix/store/fast.drv", &started)], &[], None, 1000);
        assert!(tracker.snapshot().is_none());
        let map: CheckMap = ["fast", "slow", "bad", "cached"]
            .into_iter()
            .map(|n| (n.to_string(), paths(dir.path(), n)))
            .chain([("broken".to_string(), Err("no".to_string()))])
            .collect();
        tracker.set_map(map);
        let s = tracker.snapshot().unwrap();
        assert_eq!(status(&s, "fast"), LiveStatus::Running);
        assert_eq!(status(&s, "slow"), LiveStatus::Queued);
        assert_eq!(status(&s, "cached"), LiveStatus::Cached);
        assert_eq!(status(&s, "broken"), LiveStatus::Failed);
        assert_eq!(s.progress, Progress { done: 2, total: 5 });

        // `fast` ends with its output in the store; `bad` stops without
        // one, and is running until nix says it failed.
        std::fs::write(dir.path().join("fast"), "").unwrap();
        let fast = DrvBuild {
            finished_ms: Some(1500),
            ..started.clone()
        };
        let bad = DrvBuild {
            started_ms: 1200,
            finished_ms: Some(1300),
            ..DrvBuild::default()
        };
        tracker.update(
            [
                ("/nix/store/fast.drv", &fast),
                ("/nix/store/bad.drv", &bad),
                ("/nix/store/slow.drv", &started),
            ],
            &[],
            None,
            1500,
        );
        let s = tracker.snapshot().unwrap();
        assert_eq!(status(&s, "fast"), LiveStatus::Passed);
        assert_eq!(status(&s, "bad"), LiveStatus::Running);
        assert_eq!(status(&s, "slow"), LiveStatus::Running);
        let fast = s.checks.iter().find(|c| c.name == "fast").unwrap();
        assert_eq!(
            (fast.duration_ms, fast.started_ms, fast.log_offset),
            (Some(500), Some(1000), Some(7))
        );
        tracker.update([], &["/nix/store/bad.drv".to_string()], None, 1600);
        let s = tracker.snapshot().unwrap();
        assert_eq!(status(&s, "bad"), LiveStatus::Failed);
        assert_eq!(s.progress, Progress { done: 4, total: 5 });
    }

    /// Nix 2.8 stops no build activity before all have ended: its counts
    /// tell when one did.
    #[test]
    fn nix_counting_a_build_done_or_failed_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = Tracker::default();
        let map: CheckMap = ["fast", "bad", "slow"]
            .into_iter()
            .map(|n| (n.to_string(), paths(dir.path(), n)))
            .collect();
        tracker.set_map(map);
        // Log offsets stand for the order of nix's lines.
        let at = |ms: i64| DrvBuild {
            started_ms: ms,
            log_offset: ms as u64,
            ..DrvBuild::default()
        };
        let counts = |done, running, failed, log_offset| BuildCounts {
            done,
            expected: 3,
            running,
            failed,
            log_offset,
        };
        let (bad, fast, slow) = (at(100), at(200), at(300));
        tracker.update(
            [("/nix/store/bad.drv", &bad)],
            &[],
            Some(counts(0, 1, 0, 101)),
            100,
        );
        // Nothing runs any more and one failed: the open check without an
        // output failed; `fast`, starting after those counts in the same
        // read, is not counted in them.
        tracker.update(
            [("/nix/store/fast.drv", &fast)],
            &[],
            Some(counts(0, 0, 1, 150)),
            200,
        );
        tracker.update([], &[], Some(counts(0, 1, 1, 201)), 200);
        std::fs::write(dir.path().join("fast"), "").unwrap();
        tracker.update([], &[], Some(counts(1, 0, 1, 260)), 260);
        tracker.update(
            [("/nix/store/slow.drv", &slow)],
            &[],
            Some(counts(1, 1, 1, 301)),
            300,
        );
        let s = tracker.snapshot().unwrap();
        assert_eq!(status(&s, "bad"), LiveStatus::Failed);
        assert_eq!(status(&s, "fast"), LiveStatus::Passed);
        assert_eq!(status(&s, "slow"), LiveStatus::Running);
        let duration = |name| {
            s.checks
                .iter()
                .find(|c| c.name == name)
                .unwrap()
                .duration_ms
        };
        assert_eq!((duration("bad"), duration("fast")), (Some(100), Some(60)));
        assert_eq!(s.progress, Progress { done: 2, total: 3 });
    }

    /// Nix 2.3x stops a build's activity as soon as its builder exits,
    /// before the output is registered: a stop alone says nothing; nix's
    /// counts then tell, with the store.
    #[test]
    fn a_build_stopped_before_its_output_is_registered_waits_for_nixs_counts() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = Tracker::default();
        let map: CheckMap = ["good", "bad"]
            .into_iter()
            .map(|n| (n.to_string(), paths(dir.path(), n)))
            .collect();
        tracker.set_map(map);
        let stopped = |ms: i64| DrvBuild {
            started_ms: ms,
            finished_ms: Some(ms + 10),
            log_offset: ms as u64,
            ..DrvBuild::default()
        };
        let counts = |done, failed| BuildCounts {
            done,
            expected: 2,
            running: 0,
            failed,
            log_offset: 1000,
        };
        tracker.update(
            [
                ("/nix/store/good.drv", &stopped(100)),
                ("/nix/store/bad.drv", &stopped(200)),
            ],
            &[],
            None,
            300,
        );
        let s = tracker.snapshot().unwrap();
        assert_eq!(status(&s, "good"), LiveStatus::Running);
        assert_eq!(status(&s, "bad"), LiveStatus::Running);
        // `good`'s output is registered, then nix counts one done.
        std::fs::write(dir.path().join("good"), "").unwrap();
        tracker.update([], &[], Some(counts(1, 0)), 400);
        let s = tracker.snapshot().unwrap();
        assert_eq!(status(&s, "good"), LiveStatus::Passed);
        assert_eq!(status(&s, "bad"), LiveStatus::Running);
        // One failed, nothing runs: `bad`, without an output, failed.
        tracker.update([], &[], Some(counts(1, 1)), 500);
        let s = tracker.snapshot().unwrap();
        assert_eq!(status(&s, "bad"), LiveStatus::Failed);
        assert_eq!(s.progress, Progress { done: 2, total: 2 });
    }

    #[test]
    fn events_carry_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = Tracker::default();
        let map: CheckMap = ["a", "b"]
            .into_iter()
            .map(|n| (n.to_string(), paths(dir.path(), n)))
            .collect();
        tracker.set_map(map);
        let mut changes = Changes::default();
        let first = changes.since_last(tracker.snapshot().unwrap()).unwrap();
        assert_eq!(first.checks.len(), 2, "everything, the first time");
        assert!(changes.since_last(tracker.snapshot().unwrap()).is_none());
        let started = DrvBuild::default();
        tracker.update([("/nix/store/b.drv", &started)], &[], None, 0);
        let next = changes.since_last(tracker.snapshot().unwrap()).unwrap();
        let names: Vec<_> = next.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["b"]);
        assert_eq!(next.progress, Progress { done: 0, total: 2 });
    }

    #[test]
    fn an_output_lock_is_seen_held_without_taking_it() {
        use rustix::fs::{FlockOperation, flock};
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out").display().to_string();
        assert_eq!(
            Locks::default().output_locked(&out),
            Some(false),
            "no lock file"
        );
        let lock = std::fs::File::create(format!("{out}.lock")).unwrap();
        assert_eq!(
            Locks::default().output_locked(&out),
            Some(false),
            "not locked"
        );
        flock(&lock, FlockOperation::NonBlockingLockExclusive).unwrap();
        assert_eq!(Locks::default().output_locked(&out), Some(true));
        flock(&lock, FlockOperation::Unlock).unwrap();
        assert_eq!(Locks::default().output_locked(&out), Some(false));
        assert!(!holds("1: FLOCK ADVISORY WRITE 9 fe:00:77 0 EOF\n", 7));
        assert!(holds("1: FLOCK ADVISORY WRITE 9 fe:00:77 0 EOF\n", 77));
        assert!(!holds("1: -> FLOCK ADVISORY WRITE 9 fe:00:77 0 EOF\n", 77));
    }

    /// With several builds at once, a failed one is told apart by its
    /// output's lock, which nix has let go of.
    #[test]
    fn a_failure_among_running_builds_is_the_unlocked_one() {
        use rustix::fs::{FlockOperation, flock};
        let dir = tempfile::tempdir().unwrap();
        let tracker = Tracker::default();
        let map: CheckMap = ["bad", "slow"]
            .into_iter()
            .map(|n| (n.to_string(), paths(dir.path(), n)))
            .collect();
        tracker.set_map(map);
        let slow_lock = std::fs::File::create(dir.path().join("slow.lock")).unwrap();
        flock(&slow_lock, FlockOperation::NonBlockingLockExclusive).unwrap();
        std::fs::File::create(dir.path().join("bad.lock")).unwrap();
        let started = DrvBuild::default();
        let counts = BuildCounts {
            done: 0,
            expected: 2,
            running: 1,
            failed: 1,
            log_offset: 10,
        };
        tracker.update(
            [
                ("/nix/store/bad.drv", &started),
                ("/nix/store/slow.drv", &started),
            ],
            &[],
            Some(counts),
            5,
        );
        let s = tracker.snapshot().unwrap();
        assert_eq!(status(&s, "bad"), LiveStatus::Failed);
        assert_eq!(status(&s, "slow"), LiveStatus::Running);
    }

    #[test]
    fn a_build_is_forgotten_when_it_ends() {
        let live = Live::default();
        let tracker = live.start(3);
        tracker.set_map(CheckMap::new());
        assert_eq!(
            live.snapshot(3).unwrap().progress,
            Progress { done: 0, total: 0 }
        );
        live.end(3);
        assert!(live.snapshot(3).is_none());
    }
}
