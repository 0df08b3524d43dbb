//! The domain operations on builds: queueing one (and cancelling the older
//! builds of its branch it supersedes), catching up pushes never built
//! (`scan`), reading, listing, cancelling and rebuilding them, and at
//! startup recovering the builds a dead instance left running
//! ([`recover_orphans`]).

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::StreamExt;

use super::{App, AppError, BuildDetail, BuildView, blocking};
use crate::build::diagnosis::CancelSource;
use crate::build::queue::{self, Build, ListQuery, NewBuild, Status};
use crate::repos;

/// Builds a scan queues at once: enough for their writes to share commits.
const SCAN_ENQUEUES: usize = 16;

/// How long a cancel request waits for a running build to stop before it
/// answers that the build is stopping.
const CANCEL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

impl App {
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
        repos::validate_build_ref(branch)
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
        let pull = repos::is_pull_ref(branch);
        // Whether a pull request's head is a fork's is known from its forge's
        // event only: it is built from there, or rebuilt as it was.
        if pull
            && !matches!(
                trigger,
                "pull_request" | queue::UNTRUSTED_TRIGGER | "rebuild"
            )
        {
            return Err(AppError::invalid(
                "branch",
                format!(
                    "{branch} is a pull request's head: it is built when its forge's webhook \
                     announces it (a fork's once approved), not on request"
                ),
            ));
        }
        // A pull request's ref is no branch: the view does not know it.
        let cached = if pull {
            None
        } else {
            self.views.has_branch(repo, branch)
        };
        let known = cached == Some(true);
        let files = self.repos.clone();
        let path = PathBuf::from(&repo_row.path);
        let (sha, name) = (commit.to_string(), branch.to_string());
        let (exists, head, found) = blocking(move || {
            let head = if known {
                None
            } else if pull {
                files.pull_head(&path, &name)?
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
        let unseen_head = head.filter(|_| cached == Some(false) && trigger != "push" && !pull);
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
            self.adopt_first_branch(&repo_row, branch).await;
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
                self.supersede(&view.build, branch, view.build.id).await;
            }
            Ok((view, true))
        } else {
            if build.branch != branch {
                self.views.stand(&build);
            }
            if build.branch != branch && self.config.cancel_superseded {
                // Another branch's build of this commit stands for it here;
                // this branch's older live builds are superseded all the
                // same, whatever their ids.
                self.supersede(&build, branch, i64::MAX).await;
            }
            Ok((self.view(build), false))
        }
    }

    /// Cancels the live builds of `branch` of another commit than `newer`'s
    /// with ids below `before` once `newer` stands for the branch: their
    /// results would be stale before they arrive.
    async fn supersede(&self, newer: &Build, branch: &str, before: i64) {
        let mut probe = newer.clone();
        probe.branch = branch.to_string();
        probe.id = before;
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
            if let Err(e) = self.stop_superseded(id, &reason).await {
                tracing::warn!(build_id = id, error = %e, "cannot cancel a superseded build");
            }
        }
    }

    /// Ends a queued build as superseded, or asks a running one to stop,
    /// without waiting for it: the enqueue that superseded it answers at
    /// once, and the worker records the end (once) when nix has stopped.
    async fn stop_superseded(&self, id: i64, reason: &str) -> Result<(), AppError> {
        // Running: the common case of a burst, and no write at all.
        if let Some(handle) = self.running.lock().expect("running builds").get(&id) {
            *handle.reason.lock().expect("cancel reason") = Some(reason.to_string());
            handle.token.cancel();
            tracing::info!(build_id = id, reason, "Cancelling running build");
            return Ok(());
        }
        if self.cancel_if_queued(id, reason).await? {
            return Ok(());
        }
        // Claimed a moment ago and its worker not registered yet (or
        // registered since): the handle made here is the one it picks up,
        // cancelled.
        {
            let mut running = self.running.lock().expect("running builds");
            let handle = running.entry(id).or_default();
            *handle.reason.lock().expect("cancel reason") = Some(reason.to_string());
            handle.token.cancel();
        }
        tracing::info!(build_id = id, reason, "Cancelling running build");
        // It may have ended in between: then no worker will take the handle.
        let status = self.store.read(move |conn| queue::get(conn, id)).await?;
        if status.is_none_or(|b| b.status.is_final()) {
            self.running.lock().expect("running builds").remove(&id);
        }
        Ok(())
    }

    /// Ends build `id` as cancelled if it is queued; returns whether it
    /// was. The worker calls it too, for a build asked to stop as its
    /// attempt ended and queued again for a retry.
    pub(crate) async fn cancel_if_queued(&self, id: i64, reason: &str) -> Result<bool, AppError> {
        let r = reason.to_string();
        let (apply, undo) = self.views.track();
        let cancelled = self
            .store
            .write_then(move |conn| queue::cancel_queued(conn, id, &r), apply, undo)
            .await?;
        let Some(build) = cancelled else {
            return Ok(false);
        };
        tracing::info!(build_id = id, reason, "Cancelled queued build");
        let view = self.view(build);
        self.events.publish("build.finished", Some(id), &view);
        Ok(true)
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
            // One head per commit: the build of a commit stands for it on
            // every branch at it (10,000 branches at one commit are one
            // build, and one enqueue, not 10,000).
            let (name, heads) = (repo.name.clone(), branches);
            let unbuilt = self
                .store
                .read(move |conn| {
                    let mut unbuilt = Vec::new();
                    let mut commits = std::collections::HashSet::new();
                    for branch in heads {
                        if repos::validate_branch(&branch.name).is_ok()
                            && !commits.contains(&branch.commit)
                            && !crate::build::standing::ever_built(
                                conn,
                                &name,
                                &branch.name,
                                &branch.commit,
                            )?
                        {
                            commits.insert(branch.commit.clone());
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
        let (build, attempts, cache, forge_statuses) = self
            .store
            .read(move |conn| {
                Ok((
                    queue::get(conn, id)?,
                    queue::attempts(conn, id)?,
                    crate::cache::build_cache(conn, id)?,
                    crate::ops::forge::outbox::of_build(conn, id)?,
                ))
            })
            .await?;
        let build = build.ok_or_else(|| AppError::NotFound(format!("build {id} not found")))?;
        Ok(BuildDetail {
            build: self.view(build),
            attempts,
            cache,
            forge_statuses,
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
        if self.cancel_if_queued(id, reason).await? {
            return Ok((self.build(id).await?.build, true));
        }
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

    /// Queues a new build of the same repo, branch and commit.
    pub async fn rebuild(&self, id: i64) -> Result<(BuildView, bool), AppError> {
        let old = self.build(id).await?.build.build;
        // The build exists, its repository may not: a 404 would read as
        // "no such build".
        if let Err(AppError::NotFound(_)) = self.find_repo(&old.repo).await {
            return Err(AppError::Conflict(format!(
                "build #{id} cannot be rebuilt: its repository {:?} was deleted (its builds are \
                 kept); create the repository again and push to build it",
                old.repo
            )));
        }
        // A fork's pull request stays untrusted when built again.
        let trigger = if old.untrusted() {
            queue::UNTRUSTED_TRIGGER
        } else {
            "rebuild"
        };
        self.enqueue(
            &old.repo,
            &old.branch,
            &old.commit,
            old.author,
            trigger,
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
