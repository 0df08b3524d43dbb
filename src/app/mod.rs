//! The daemon's shared state and its domain operations: what the API, the
//! hook, startup and the workers ask of procurator-ci. Handlers stay thin by
//! calling these.
//!
//! This module owns [`App`] (everything the daemon shares), [`AppError`]
//! (the domain's one error type) and the plumbing every operation uses. The
//! operations live by what they act on: `repos` (creating, listing,
//! deleting, adopting at startup), `builds` (queueing, superseding,
//! scanning, cancelling, rebuilding, recovering orphans); `views` has the
//! JSON shapes they answer with.

mod builds;
mod repos;
mod upstreams;
mod views;

pub use builds::recover_orphans;
pub use repos::{UpstreamRequest, prepare_repos};
pub use upstreams::{Mirrors, UpstreamStatus, WebhookAnswer};
pub use views::{BuildDetail, BuildRef, BuildView, Explanation, ForgeView, Repo};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::Events;
use crate::http::auth::Token;
use crate::ops::metrics::Metrics;
use crate::repos::{RepoError, RepoFiles};
use crate::storage::logs::LogStore;
use crate::storage::store::{Store, StoreError};

/// A domain failure, mapped to HTTP once in `api::error`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed; `field` names the part at fault.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request did not prove who sent it (a webhook's signature).
    #[error("{0}")]
    Unauthorized(String),
    /// The daemon cannot serve this now (database locked, disk full,
    /// shutting down); retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of ours; the message is logged, never shown to clients.
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// An invalid `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> AppError {
        AppError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Busy => AppError::Unavailable(
                "the database is locked by another process; try again shortly".into(),
            ),
            StoreError::Full => {
                AppError::Unavailable("the disk is full; nothing was written".into())
            }
            StoreError::Closed => AppError::Unavailable("the daemon is shutting down".into()),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<RepoError> for AppError {
    fn from(error: RepoError) -> Self {
        match error {
            RepoError::InvalidName { .. } => AppError::invalid("name", error.to_string()),
            RepoError::Exists(_) => AppError::Conflict(error.to_string()),
            RepoError::NotFound(_) => AppError::NotFound(error.to_string()),
            RepoError::Io { ref source, .. } if source.raw_os_error() == Some(28) => {
                AppError::Unavailable("the disk is full; nothing was created".into())
            }
            other => AppError::Internal(other.to_string()),
        }
    }
}

/// Stops a running build and says why.
#[derive(Debug, Clone, Default)]
pub struct CancelHandle {
    /// Cancelled to stop the build.
    pub token: CancellationToken,
    /// The reason recorded with the cancellation.
    pub reason: Arc<Mutex<Option<String>>>,
}

/// Everything the daemon shares.
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    pub repos: RepoFiles,
    pub logs: Arc<LogStore>,
    pub events: Events,
    pub token: Token,
    /// Wakes idle workers when a build is queued.
    pub wake: Notify,
    /// Wakes the forge status deliverer when statuses are recorded.
    pub forge_wake: Notify,
    /// Running builds' cancel handles, by build id.
    pub running: Mutex<HashMap<i64, CancelHandle>>,
    /// Running builds' live per-check progress.
    pub progress: crate::build::progress::Live,
    /// Cancelled when the daemon shuts down.
    pub shutdown: CancellationToken,
    /// What `GET /metrics` shows.
    pub metrics: Metrics,
    /// The last pre-flight's findings about the host's nix.
    pub preflight: Mutex<crate::build::preflight::Report>,
    /// The binary cache, when `cache_serve` or `cache_push` is configured.
    pub cache: Option<crate::cache::Cache>,
    /// What the repository API and badges show, kept current in memory.
    pub views: Arc<crate::repos::views::RepoViews>,
    /// What nix's evaluation of a pushed flake cannot see.
    pub isolation: crate::build::isolation::Isolation,
    /// The repositories mirrored from an upstream.
    pub upstreams: Mirrors,
}

/// Runs `job` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| AppError::Internal(format!("blocking task failed: {e}")))?
}

impl App {
    /// New work is refused while the disk holding the database is full, so
    /// that the space left records the ends of running builds.
    pub(super) fn refuse_when_disk_full(&self) -> Result<(), AppError> {
        if self.store.space_low() {
            return Err(AppError::Unavailable(
                "the disk is full: new builds and repositories are refused until space is \
                 freed; nothing was written"
                    .into(),
            ));
        }
        Ok(())
    }
}
