//! The daemon's shared state and its domain operations: what the API, the
//! hook, startup and the workers ask of procurator-ci. Handlers stay thin by
//! calling these.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::build::diagnosis::{self, CancelSource, FailureKind};
use crate::build::queue::{self, Attempt, Build, ListQuery, NewBuild, Status, format_ms, now_ms};
use crate::config::Config;
use crate::events::Events;
use crate::http::auth::Token;
use crate::ops::metrics::Metrics;
use crate::repos::{self, RepoError, RepoFiles};
use crate::storage::logs::LogStore;
use crate::storage::store::{SqlResultExt, Store, StoreError};

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
}

impl From<&Build> for BuildRef {
    fn from(b: &Build) -> Self {
        BuildRef {
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
            title: kind.title(),
            hint: kind.hint(),
            retried: kind.retried(),
            cancelled_by: None,
        })
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

/// Builds a scan queues at once: enough for their writes to share commits.
const SCAN_ENQUEUES: usize = 16;

/// How long a cancel request waits for a running build to stop before it
/// answers that the build is stopping.
const CANCEL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

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
            stopping,
            progress,
            build,
        }
    }

    fn repo_json(&self, name: String, path: String, description: String, created: i64) -> Repo {
        Repo {
            ssh_url: self
                .config
                .ssh_push_base
                .as_ref()
                .map(|base| format!("{base}{path}")),
            declared: self.config.repos.contains_key(&name),
            name,
            path,
            description,
            created_at: format_ms(created),
        }
    }

    async fn repo_row(&self, name: &str) -> Result<Option<Repo>, AppError> {
        let key = name.to_string();
        let row = self
            .store
            .read(move |conn| {
                use rusqlite::OptionalExtension;
                conn.prepare_cached(
                    "SELECT name, path, description, created_at FROM repos WHERE name = ?1",
                )
                .db()?
                .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()
                .db()
            })
            .await?;
        Ok(row.map(|(n, p, d, c)| self.repo_json(n, p, d, c)))
    }

    /// Creates a repository with its hook.
    pub async fn create_repo(
        self: &Arc<Self>,
        name: String,
        description: String,
    ) -> Result<Repo, AppError> {
        validate_description(&description)?;
        repos::validate_repo_name(&name).map_err(|reason| {
            AppError::from(RepoError::InvalidName {
                name: name.clone(),
                reason,
            })
        })?;
        self.refuse_when_disk_full()?;
        let files = self.repos.clone();
        let (n, d) = (name.clone(), description.clone());
        let path = blocking(move || Ok(files.create(&n, &d)?)).await?;
        let repo = self.insert_repo_row(&name, &path, &description).await;
        if let Err(e) = &repo {
            tracing::error!(repo = %name, error = %e, "cannot record a new repository; removing it");
            let files = self.repos.clone();
            let n = name.clone();
            let _ = blocking(move || Ok(files.delete(&n)?)).await;
        }
        let repo = repo?;
        if let Err(e) = self.refresh_view(&repo).await {
            // Its first request or the next scan loads it.
            tracing::warn!(repo = %repo.name, error = %e, "cannot load the view of a new repository");
        }
        tracing::info!(repo = %repo.name, path = %repo.path, "Repository created");
        self.events.publish("repo.created", None, &repo);
        Ok(repo)
    }

    /// New work is refused while the disk holding the database is full, so
    /// that the space left records the ends of running builds.
    fn refuse_when_disk_full(&self) -> Result<(), AppError> {
        if self.store.space_low() {
            return Err(AppError::Unavailable(
                "the disk is full: new builds and repositories are refused until space is \
                 freed; nothing was written"
                    .into(),
            ));
        }
        Ok(())
    }

    async fn insert_repo_row(
        &self,
        name: &str,
        path: &std::path::Path,
        description: &str,
    ) -> Result<Repo, AppError> {
        let (n, p, d) = (
            name.to_string(),
            path.display().to_string(),
            description.to_string(),
        );
        let created = self
            .store
            .write(move |conn| {
                let now = now_ms();
                conn.prepare_cached(
                    "INSERT INTO repos (name, path, description, created_at) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (name) DO UPDATE SET path = excluded.path, description = excluded.description",
                )
                .db()?
                .execute(rusqlite::params![n, p, d, now])
                .db()?;
                conn.query_row("SELECT created_at FROM repos WHERE name = ?1", [&n], |r| r.get(0))
                    .db()
            })
            .await?;
        Ok(self.repo_json(
            name.to_string(),
            path.display().to_string(),
            description.to_string(),
            created,
        ))
    }

    /// Every managed repository.
    pub async fn list_repos(&self) -> Result<Vec<Repo>, AppError> {
        let rows: Vec<(String, String, String, i64)> = self
            .store
            .read(|conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT name, path, description, created_at FROM repos ORDER BY name",
                    )
                    .db()?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .db()?;
                rows.collect::<Result<Vec<_>, _>>().db()
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(n, p, d, c)| self.repo_json(n, p, d, c))
            .collect())
    }

    /// The recorded repository `name`.
    pub(crate) async fn find_repo(&self, name: &str) -> Result<Repo, AppError> {
        repos::validate_repo_name(name).map_err(|reason| {
            AppError::invalid("name", format!("invalid repository name: {reason}"))
        })?;
        self.repo_row(name)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("repository {name:?} not found")))
    }

    /// Deletes a repository; its builds stay readable.
    pub async fn delete_repo(&self, name: &str, confirm: Option<&str>) -> Result<(), AppError> {
        let repo = self.find_repo(name).await?;
        if confirm != Some(name) {
            return Err(AppError::invalid(
                "confirm",
                format!(
                    "deleting a repository cannot be undone: repeat its name as ?confirm={name}"
                ),
            ));
        }
        let files = self.repos.clone();
        let n = name.to_string();
        let deleted = blocking(move || Ok(files.delete(&n)?)).await;
        match deleted {
            Ok(()) | Err(AppError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let n = name.to_string();
        self.store
            .write(move |conn| {
                conn.execute("DELETE FROM repos WHERE name = ?1", [n])
                    .db()?;
                Ok(())
            })
            .await?;
        self.views.remove(name);
        tracing::warn!(repo = %name, path = %repo.path, "Repository deleted");
        self.events.publish("repo.deleted", None, &repo);
        Ok(())
    }

    /// Validates and queues a build of `commit` on `branch` of `repo`;
    /// returns it and whether it is new (an identical live build is reused).
    pub async fn enqueue(
        &self,
        repo: &str,
        branch: &str,
        commit: &str,
        author: Option<String>,
        trigger: &'static str,
        rebuild_of: Option<i64>,
    ) -> Result<(BuildView, bool), AppError> {
        repos::validate_repo_name(repo)
            .map_err(|r| AppError::invalid("repo", format!("invalid repository name: {r}")))?;
        repos::validate_branch(branch)
            .map_err(|r| AppError::invalid("branch", format!("invalid branch name: {r}")))?;
        repos::validate_commit(commit)
            .map_err(|r| AppError::invalid("commit", format!("invalid commit: {r}")))?;
        if let Some(author) = &author {
            crate::text::check(author, crate::text::MAX_AUTHOR_CHARS, false)
                .map_err(|why| AppError::invalid("author", format!("author {why}")))?;
        }
        let repo_row = self.find_repo(repo).await.map_err(|e| match e {
            AppError::Invalid { message, .. } => AppError::invalid("repo", message),
            other => other,
        })?;
        // The known heads answer for the branches the daemon has seen; git
        // (a kept reader, off the executor) for the others.
        let cached = self.views.has_branch(repo, branch);
        let known = cached == Some(true);
        let files = self.repos.clone();
        let path = PathBuf::from(&repo_row.path);
        let (sha, name) = (commit.to_string(), branch.to_string());
        let (exists, head, found) = blocking(move || {
            let head = if known {
                None
            } else {
                files.branch_head(&path, &name)?
            };
            let exists = known || head.is_some();
            let info = if exists {
                files.commit_info(&path, &sha)?
            } else {
                None
            };
            Ok((exists, head, info))
        })
        .await?;
        if !exists {
            return Err(AppError::invalid(
                "branch",
                format!(
                    "branch {branch:?} does not exist in repository {repo:?}: push it first, or name one of its branches"
                ),
            ));
        }
        // A branch made without the hook: the view learns its head once the
        // build is stored (a push records its own below).
        let unseen_head = head.filter(|_| cached == Some(false) && trigger != "push");
        // Any commit of the repository may be built on the branch (a rebuild
        // of an older one is legitimate); one it does not have cannot.
        let Some(info) = found else {
            return Err(AppError::invalid(
                "commit",
                format!("commit {commit} does not exist in repository {repo:?}"),
            ));
        };
        if trigger == "push" {
            // The hook reports a push: the branch's head has moved.
            self.record_push(&repo_row, branch, commit).await;
        }
        let new = NewBuild {
            repo: repo.to_string(),
            repo_path: repo_row.path.clone(),
            branch: branch.to_string(),
            commit: commit.to_string(),
            author: author
                .or_else(|| {
                    Some(crate::text::sanitize(
                        &info.author,
                        crate::text::MAX_AUTHOR_CHARS,
                    ))
                })
                .filter(|a| !a.is_empty()),
            message: Some(info.message),
            trigger,
            rebuild_of,
            max_retries: self.config.max_retries,
        };
        self.refuse_when_disk_full()?;
        let (apply, undo) = self.views.track();
        let (build, created) = self
            .store
            .write_then(move |conn| queue::enqueue(conn, &new), apply, undo)
            .await?;
        if let Some(head) = unseen_head {
            self.record_push(&repo_row, branch, &head).await;
        }
        if created {
            tracing::info!(
                build_id = build.id,
                repo = %build.repo,
                branch = %build.branch,
                commit = %&build.commit[..12],
                trigger,
                "Build enqueued successfully"
            );
            let view = self.view(build);
            self.events
                .publish("build.queued", Some(view.build.id), &view);
            self.wake.notify_one();
            // A rebuild asks for an old commit on purpose; it supersedes nothing.
            if self.config.cancel_superseded && trigger != "rebuild" {
                self.supersede(&view.build).await;
            }
            Ok((view, true))
        } else {
            Ok((self.view(build), false))
        }
    }

    /// Cancels the older live builds of the same branch once a newer commit
    /// is queued: their results would be stale before they arrive.
    async fn supersede(&self, newer: &Build) {
        let probe = newer.clone();
        let ids = match self
            .store
            .read(move |conn| queue::superseded(conn, &probe))
            .await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(build_id = newer.id, error = %e, "cannot look for superseded builds");
                return;
            }
        };
        let reason = CancelSource::Superseded.reason(Some(newer.id));
        for id in ids {
            // A build claimed a moment ago registers its cancel handle right
            // after; give it that moment.
            for _ in 0..20 {
                match self.cancel(id, &reason).await {
                    Err(AppError::Conflict(message)) if message.contains("is starting") => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(e) => {
                        tracing::warn!(build_id = id, error = %e, "cannot cancel a superseded build");
                        break;
                    }
                    Ok(_) => break,
                }
            }
        }
    }

    /// Queues a build for every branch head of `repo` (or of every repo)
    /// that has never been built: pushes made while the daemon was down or
    /// whose hook could not reach it.
    pub async fn scan(&self, repo: Option<&str>) -> Result<Vec<BuildView>, AppError> {
        let repos = match repo {
            Some(name) => vec![self.find_repo(name).await?],
            None => self.list_repos().await?,
        };
        let mut queued = Vec::new();
        for repo in repos {
            // Read afresh: a scan is also how changes the hook did not
            // report (a deleted branch) reach the view.
            let branches = match self.refresh_view(&repo).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(repo = %repo.name, error = %e, "cannot list branches");
                    continue;
                }
            };
            // One read for every head, then the unbuilt ones queued a few
            // at a time, so that their writes share commits: thousands of
            // heads made without the hook must not hold up a start.
            let (name, heads) = (repo.name.clone(), branches);
            let unbuilt = self
                .store
                .read(move |conn| {
                    let mut unbuilt = Vec::new();
                    for branch in heads {
                        if repos::validate_branch(&branch.name).is_ok()
                            && !queue::ever_built(conn, &name, &branch.name, &branch.commit)?
                        {
                            unbuilt.push(branch);
                        }
                    }
                    Ok(unbuilt)
                })
                .await?;
            let repo_name = repo.name.as_str();
            let mut results = futures_util::stream::iter(unbuilt)
                .map(|branch| async move {
                    let enqueued = self
                        .enqueue(repo_name, &branch.name, &branch.commit, None, "scan", None)
                        .await;
                    (branch, enqueued)
                })
                .buffer_unordered(SCAN_ENQUEUES);
            while let Some((branch, enqueued)) = results.next().await {
                let (build, created) = match enqueued {
                    // A full disk must not stop the daemon from starting;
                    // the next start or scan queues what is left.
                    Err(AppError::Unavailable(why)) if self.store.space_low() => {
                        tracing::warn!(repo = %repo.name, error = %why, "not catching up unbuilt pushes now");
                        return Ok(queued);
                    }
                    other => other?,
                };
                if created {
                    tracing::info!(build_id = build.build.id, repo = %repo.name, branch = %branch.name, "Caught up an unbuilt push");
                    queued.push(build);
                }
            }
        }
        Ok(queued)
    }

    /// One build with its attempts.
    pub async fn build(&self, id: i64) -> Result<BuildDetail, AppError> {
        let (build, attempts, cache) = self
            .store
            .read(move |conn| {
                Ok((
                    queue::get(conn, id)?,
                    queue::attempts(conn, id)?,
                    crate::cache::build_cache(conn, id)?,
                ))
            })
            .await?;
        let build = build.ok_or_else(|| AppError::NotFound(format!("build {id} not found")))?;
        Ok(BuildDetail {
            build: self.view(build),
            attempts,
            cache,
        })
    }

    /// Builds newest first.
    pub async fn list_builds(
        &self,
        query: ListQuery,
    ) -> Result<(Vec<BuildView>, Option<i64>), AppError> {
        if let Some(repo) = query.repo.clone() {
            // A deleted repository's builds stay readable; a name that never
            // had a repository or a build is a mistake worth saying.
            let known = self.repo_row(&repo).await?.is_some() || {
                let name = repo.clone();
                self.store
                    .read(move |conn| queue::any_build_of(conn, &name))
                    .await?
            };
            if !known {
                return Err(AppError::NotFound(format!(
                    "repository {repo:?} not found, and no builds of it are recorded"
                )));
            }
        }
        let limit = query.limit as usize;
        let builds = self
            .store
            .read(move |conn| queue::list(conn, &query))
            .await?;
        let next = (builds.len() == limit)
            .then(|| builds.last().map(|b| b.id))
            .flatten();
        Ok((builds.into_iter().map(|b| self.view(b)).collect(), next))
    }

    /// Cancels a queued build, or stops a running one. Returns the build
    /// and whether it has ended: a running build is waited for a moment,
    /// and answered as still stopping when it takes longer.
    pub async fn cancel(&self, id: i64, reason: &str) -> Result<(BuildView, bool), AppError> {
        let handle = self
            .running
            .lock()
            .expect("running builds")
            .get(&id)
            .cloned();
        if let Some(handle) = handle {
            let mut finished = self.events.listen();
            *handle.reason.lock().expect("cancel reason") = Some(reason.to_string());
            handle.token.cancel();
            tracing::info!(build_id = id, reason, "Cancelling running build");
            let deadline = tokio::time::Instant::now() + CANCEL_PATIENCE;
            loop {
                let view = self.build(id).await?.build;
                if view.build.status != Status::Running {
                    return Ok((view, true));
                }
                match tokio::time::timeout_at(deadline, finished.recv()).await {
                    Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                    _ => return Ok((view, false)),
                }
            }
        }
        let r = reason.to_string();
        let (apply, undo) = self.views.track();
        let cancelled = self
            .store
            .write_then(move |conn| queue::cancel_queued(conn, id, &r), apply, undo)
            .await?;
        match cancelled {
            Some(build) => {
                tracing::info!(build_id = id, reason, "Cancelled queued build");
                let view = self.view(build);
                self.events.publish("build.finished", Some(id), &view);
                Ok((view, true))
            }
            None => {
                let build = self.build(id).await?.build;
                if build.build.status == Status::Running {
                    // Claimed a moment ago; its worker has not registered yet.
                    Err(AppError::Conflict(format!(
                        "build {id} is starting; try again"
                    )))
                } else {
                    Err(AppError::Conflict(format!(
                        "build {id} has already finished ({})",
                        build.build.status.as_str()
                    )))
                }
            }
        }
    }

    /// Queues a new build of the same repo, branch and commit.
    pub async fn rebuild(&self, id: i64) -> Result<(BuildView, bool), AppError> {
        let old = self.build(id).await?.build.build;
        self.enqueue(
            &old.repo,
            &old.branch,
            &old.commit,
            old.author,
            "rebuild",
            Some(id),
        )
        .await
    }

    /// A one-line summary for systemd's status.
    pub async fn status_line(&self) -> Result<String, AppError> {
        let (queued, running) = self.store.read(queue::counts).await?;
        Ok(match (running, queued) {
            (0, 0) => "idle".to_string(),
            (r, q) => format!("{r} running, {q} queued"),
        })
    }
}

fn validate_description(description: &str) -> Result<(), AppError> {
    crate::text::check(description, crate::text::MAX_DESCRIPTION_CHARS, true)
        .map_err(|why| AppError::invalid("description", format!("description {why}")))
}

/// Startup: records repositories present on disk, creates the declared
/// ones, syncs descriptions and (re)installs every hook. Nothing is deleted.
pub async fn prepare_repos(app: &Arc<App>) -> Result<(), AppError> {
    let files = app.repos.clone();
    let on_disk = blocking(move || Ok(files.list_on_disk()?)).await?;
    let known = app.list_repos().await?;
    for name in &on_disk {
        let path = app.repos.path_of(name)?;
        let files = app.repos.clone();
        let (n, p) = (name.clone(), path.clone());
        blocking(move || Ok(files.install_hook(&p, &n)?)).await?;
        if !known.iter().any(|r| &r.name == name) {
            let file = path.join("description");
            let description = blocking(move || Ok(std::fs::read_to_string(file).ok()))
                .await?
                .map(|d| d.trim().to_string())
                .filter(|d| !d.starts_with("Unnamed repository"))
                .unwrap_or_default();
            // Held to the API's rule; a description it refuses is dropped.
            let description = match validate_description(&description) {
                Ok(()) => description,
                Err(e) => {
                    tracing::warn!(repo = %name, error = %e, "ignoring the description found on disk");
                    String::new()
                }
            };
            app.insert_repo_row(name, &path, &description).await?;
            tracing::info!(repo = %name, "Adopted a repository found on disk");
        }
    }
    for (name, decl) in &app.config.repos {
        if on_disk.contains(name) {
            let path = app.repos.path_of(name)?;
            // Unchanged descriptions cost no write (and no fsync) per start.
            let recorded = known.iter().any(|r| {
                &r.name == name
                    && r.description == decl.description
                    && r.path == path.display().to_string()
            });
            let files = app.repos.clone();
            let (p, d) = (path.clone(), decl.description.clone());
            blocking(move || {
                let current = std::fs::read_to_string(p.join("description")).unwrap_or_default();
                if current != format!("{d}\n") {
                    files.write_description(&p, &d)?;
                }
                Ok(())
            })
            .await?;
            if !recorded {
                app.insert_repo_row(name, &path, &decl.description).await?;
            }
        } else {
            app.create_repo(name.clone(), decl.description.clone())
                .await?;
        }
    }
    Ok(())
}

/// Orphans of a dead instance: builds recorded as running. Their process
/// groups are ended, their logs sealed, and they go back to the queue with
/// the attempt counted (or fail as `infrastructure` once retries are spent).
pub async fn recover_orphans(app: &Arc<App>) -> Result<usize, AppError> {
    let orphans = app.store.read(queue::running).await?;
    let count = orphans.len();
    for build in orphans {
        let grace = std::time::Duration::from_secs(app.config.kill_grace_secs);
        let logs = app.logs.clone();
        let (pgid, pstart, id, attempt) = (build.pgid, build.pstart, build.id, build.attempt);
        let flake = crate::build::nix::flake_ref(
            std::path::Path::new(&build.repo_path),
            &build.branch,
            &build.commit,
            // A prefix of the reference with submodules too: it finds both.
            false,
        );
        let stats = blocking(move || {
            if let Some(pgid) = pgid {
                crate::build::process::end_orphan_group(
                    pgid as i32,
                    pstart.map(|s| s as u64),
                    grace,
                );
            }
            // Its group may never have been recorded (a kill between the
            // spawn and the write), and its introspection never is: find
            // them by the build's flake reference.
            for group in crate::build::process::groups_with_arg(&flake) {
                crate::build::process::end_orphan_group(group, None, grace);
            }
            Ok(logs.seal_orphan(
                id,
                attempt,
                "\n[procurator-ci: the daemon stopped unexpectedly during this attempt]\n",
            ))
        })
        .await?;
        let outcome = queue::Outcome::Failed {
            kind: queue::FailureKind::Infrastructure,
            summary: "the daemon stopped unexpectedly while the build ran".into(),
        };
        let backoff = 0;
        let (apply, undo) = app.views.track();
        let after = app
            .store
            .write_then(
                move |conn| queue::finish(conn, id, attempt, &outcome, None, stats, backoff),
                apply,
                undo,
            )
            .await?;
        tracing::warn!(
            build_id = id,
            attempt,
            status = after.status.as_str(),
            "Recovered a build orphaned by an earlier instance"
        );
        if after.status.is_final() {
            let view = app.view(after);
            app.events.publish("build.finished", Some(id), &view);
        }
    }
    Ok(count)
}
