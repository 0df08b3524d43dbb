//! The statistics window of a branch or repository: its newest finished
//! builds, kept so that a build finishing updates them without a query.

use crate::app::BuildRef;
use crate::build::queue::{Build, Status};
use crate::ops::metrics::{BuildStats, Finished, STATS_WINDOW};

/// The newest finished builds by id, at most `STATS_WINDOW`, newest first:
/// what the statistics are computed from, kept so that a build finishing
/// updates them without a query.
#[derive(Debug, Clone, Default)]
pub(super) struct Window(pub(super) Vec<Finished>);

impl Window {
    pub(super) fn new(mut finished: Vec<Finished>) -> Window {
        finished.sort_unstable_by_key(|f| std::cmp::Reverse(f.id));
        finished.dedup_by_key(|f| f.id);
        finished.truncate(STATS_WINDOW as usize);
        Window(finished)
    }

    /// Counts a build that has just finished, where its id puts it (the
    /// statistics look at the newest ids, as the queries do).
    pub(super) fn add(&mut self, finished: Finished) {
        let at = self.0.partition_point(|f| f.id > finished.id);
        if at >= STATS_WINDOW as usize || self.0.get(at).is_some_and(|f| f.id == finished.id) {
            return;
        }
        self.0.insert(at, finished);
        self.0.truncate(STATS_WINDOW as usize);
    }

    pub(super) fn stats(&self) -> BuildStats {
        BuildStats::of(&self.0)
    }
}

/// What `build` adds to the statistics: successes and failures only.
pub(super) fn finished(build: &Build) -> Option<Finished> {
    matches!(build.status, Status::Success | Status::Failed).then(|| Finished {
        id: build.id,
        success: build.status == Status::Success,
        duration_ms: build.duration_ms,
    })
}

/// A newer build (or the same one, changed) replaces `latest`.
pub(super) fn newer(latest: &mut Option<BuildRef>, build: &Build) {
    if latest.as_ref().is_none_or(|l| l.id <= build.id) {
        *latest = Some(BuildRef::from(build));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(id: i64, success: bool) -> Finished {
        Finished {
            id,
            success,
            duration_ms: Some(id),
        }
    }

    #[test]
    fn the_window_keeps_the_newest_ids_whatever_the_order_of_finishing() {
        let mut window = Window::default();
        for id in (1..=30).rev() {
            window.add(done(id, id % 2 == 0));
        }
        window.add(done(25, false));
        let ids: Vec<i64> = window.0.iter().map(|f| f.id).collect();
        assert_eq!(ids, (11..=30).rev().collect::<Vec<_>>());
        window.add(done(5, true));
        assert_eq!(window.0.len(), STATS_WINDOW as usize);
        assert_eq!(window.0.last().unwrap().id, 11);
        let loaded = Window::new((1..=30).map(|id| done(id, id % 2 == 0)).collect());
        assert_eq!(loaded.stats(), window.stats());
    }
}
