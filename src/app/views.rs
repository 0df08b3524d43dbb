//! The JSON shapes the API answers with: a repository ([`Repo`]), a build
//! with its links and what its end means ([`BuildView`], [`BuildDetail`],
//! [`BuildRef`]), the taxonomy's reading of a build that did not pass
//! ([`Explanation`]), and how a build's view is made.

use serde::Serialize;

use super::App;
use crate::build::diagnosis::{self, CancelSource, FailureKind};
use crate::build::queue::{Attempt, Build, Status};

/// A repository as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Repo {
    pub name: String,
    /// Absolute path of the bare repository: a push URL on this host.
    pub path: String,
    /// The SSH push URL, when `ssh_push_base` is configured.
    pub ssh_url: Option<String>,
    pub description: String,
    pub created_at: String,
    /// Declared in the configuration (created and kept in sync at startup).
    pub declared: bool,
    /// Where its builds' commit statuses are posted (never the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forge: Option<ForgeView>,
}

/// A repository's forge, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ForgeView {
    pub forge: crate::config::Forge,
    pub api_url: String,
    pub repo: String,
    pub check_statuses: u32,
}

/// Enough of a build to link to it and say what it was.
#[derive(Debug, Clone, Serialize)]
pub struct BuildRef {
    pub id: i64,
    pub status: Status,
    pub branch: String,
    pub commit: String,
    pub subject: Option<String>,
    pub created_ms: i64,
    pub duration_ms: Option<i64>,
    /// It passed without testing anything (see [`nothing_tested`]).
    pub nothing_tested: bool,
}

/// A build that passed without testing anything: the flake has no checks
/// for this host's system. Not a plain "passed" in any list.
pub fn nothing_tested(build: &Build) -> bool {
    build.status == Status::Success
        && build
            .checks
            .as_ref()
            .and_then(serde_json::Value::as_array)
            .is_some_and(Vec::is_empty)
}

impl From<&Build> for BuildRef {
    fn from(b: &Build) -> Self {
        BuildRef {
            nothing_tested: nothing_tested(b),
            id: b.id,
            status: b.status,
            branch: b.branch.clone(),
            commit: b.commit.clone(),
            subject: b.subject.clone(),
            created_ms: b.created_ms,
            duration_ms: b.duration_ms,
        }
    }
}

/// A build with its attempts and links.
#[derive(Debug, Clone, Serialize)]
pub struct BuildDetail {
    #[serde(flatten)]
    pub build: BuildView,
    pub attempts: Vec<Attempt>,
    /// What the binary cache holds and pushes of it, once recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::cache::BuildCache>,
    /// Its commit statuses on the repository's forge, and how their
    /// delivery went.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forge_statuses: Vec<crate::ops::forge::outbox::Delivery>,
}

/// A build with the links clients follow and what its end means.
#[derive(Debug, Clone, Serialize)]
pub struct BuildView {
    #[serde(flatten)]
    pub build: Build,
    /// The build's page.
    pub url: String,
    /// The build's raw log.
    pub log_url: String,
    /// Why it did not pass, in the user's terms: failed, cancelled, or
    /// queued again after a failure that is retried.
    pub diagnosis: Option<Explanation>,
    /// What a passing build did not test.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// It passed without testing anything (see [`nothing_tested`]).
    pub nothing_tested: bool,
    /// Of a fork's pull request: built without secrets.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub untrusted: bool,
    /// A cancel was asked for and the build is being stopped.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
    /// How many of its checks have ended, while it runs (once its checks
    /// are known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::build::progress::Progress>,
}

/// The taxonomy's reading of a build that did not pass.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// A failure kind, or `cancelled`.
    pub kind: &'static str,
    pub title: &'static str,
    pub hint: &'static str,
    /// Whether this kind is retried automatically.
    pub retried: bool,
    /// Who cancelled a cancelled build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<CancelSource>,
}

impl Explanation {
    /// The explanation of `build`, when it did not pass.
    pub fn of(build: &Build) -> Option<Explanation> {
        if build.status == Status::Cancelled {
            let source = build.cancel_reason.as_deref().and_then(CancelSource::of);
            return Some(Explanation {
                kind: "cancelled",
                title: "Cancelled",
                hint: source.map_or("The build was cancelled.", CancelSource::hint),
                retried: false,
                cancelled_by: source,
            });
        }
        let kind = FailureKind::parse(build.failure_kind.as_deref()?)?;
        Some(Explanation {
            kind: kind.as_str(),
            title: crate::build::diagnosis::rules::title_for(
                kind,
                build.failure_summary.as_deref().unwrap_or_default(),
            ),
            hint: crate::build::diagnosis::rules::hint_for(
                kind,
                build.failure_summary.as_deref().unwrap_or_default(),
            ),
            retried: kind.retried(),
            cancelled_by: None,
        })
    }
}

impl App {
    /// The view of a build with links.
    pub fn view(&self, mut build: Build) -> BuildView {
        let mut progress = None;
        if build.status == Status::Running
            && let Some(live) = self.progress.snapshot(build.id)
        {
            // While it runs, its checks are what nix is doing now.
            build.checks = Some(serde_json::to_value(&live.checks).expect("checks serialise"));
            progress = Some(live.progress);
        }
        let notices = if build.status == Status::Success {
            diagnosis::notices(
                &crate::build::checks::host_system(),
                build.checks.as_ref(),
                build.outputs.as_ref(),
            )
        } else {
            Vec::new()
        };
        let stopping = build.status == Status::Running
            && self
                .running
                .lock()
                .expect("running builds")
                .get(&build.id)
                .is_some_and(|h| h.token.is_cancelled());
        BuildView {
            url: format!("{}/#/builds/{}", self.config.public_url, build.id),
            log_url: format!("{}/api/builds/{}/logs", self.config.public_url, build.id),
            diagnosis: Explanation::of(&build),
            notices,
            nothing_tested: nothing_tested(&build),
            untrusted: build.untrusted(),
            stopping,
            progress,
            build,
        }
    }
}
