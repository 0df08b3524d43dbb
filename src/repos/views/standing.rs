//! One build per commit and repository (issue 25): the build that stands
//! for a commit on every branch at it, when a branch has none of its own.

use super::{RepoState, RepoViews};
use crate::app::BuildRef;
use crate::build::queue::{Build, Status};

/// The build a branch shows: its own build of its head commit, else the
/// build of that commit another branch's push queued (one build per commit
/// and repository, shown on every branch at it), else its own latest.
pub(super) fn shown<'a>(
    own: Option<&'a BuildRef>,
    standing: Option<&'a BuildRef>,
    head: &str,
) -> Option<&'a BuildRef> {
    match own {
        Some(own) if own.commit == head && own.status != Status::Cancelled => Some(own),
        _ => standing.filter(|s| s.commit == head).or(own),
    }
}

impl RepoViews {
    /// Makes `build` stand for its commit on every branch at it when no
    /// build of that commit does yet: a push of an already built commit to
    /// another branch queues nothing and shows that build.
    pub fn stand(&self, build: &Build) {
        let mut state = self.state();
        let Some(view) = state.get_mut(&build.repo) else {
            return;
        };
        if build.status == Status::Cancelled || view.standing.contains_key(&build.commit) {
            return;
        }
        view.standing
            .insert(build.commit.clone(), BuildRef::from(build));
        let RepoState {
            branches, standing, ..
        } = view;
        for (name, branch) in branches.iter_mut() {
            if branch.commit == build.commit {
                branch.render(name, standing);
            }
        }
        view.answer = None;
    }
}
