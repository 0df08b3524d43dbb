//! Pull and merge requests of a mirrored repository, as verified webhooks
//! announce them: each look fetches the heads of the requests opened or
//! updated since the last one and builds them, cancels the builds of those
//! closed, and keeps forks' requests waiting for a maintainer's approval
//! unless the repository builds them at once. A fork's build is untrusted.

use serde::Serialize;

use super::Mirror;
use crate::app::{App, AppError, BuildView};
use crate::build::queue::{UNTRUSTED_TRIGGER, format_ms, now_ms};
use crate::repos::upstream::UpstreamError;
use crate::repos::webhooks::{PullAction, PullEvent};

/// The trigger of a build of a pull request whose head is in the
/// repository itself.
const PULL_TRIGGER: &str = "pull_request";

/// A fork's pull request head fetched and not built: its code is not the
/// project's until a maintainer says so.
#[derive(Debug, Clone, Serialize)]
pub struct AwaitingApproval {
    pub number: u64,
    #[serde(rename = "ref")]
    pub head_ref: String,
    pub commit: String,
    pub since: String,
}

impl App {
    /// The pull request events that arrived since the last look: an opened
    /// or updated one has its head fetched and built (a fork's waits for
    /// approval unless the repository builds them); a closed one has its
    /// live builds cancelled and its head forgotten. Returns the builds
    /// queued; a request whose head cannot be fetched is logged and
    /// skipped.
    pub(super) async fn pull_requests(&self, name: &str, mirror: &Mirror) -> usize {
        let events: Vec<PullEvent> = mirror
            .pulls
            .lock()
            .expect("pull events")
            .drain(..)
            .collect();
        let mut queued = 0;
        for event in events {
            let head_ref = event.head_ref.clone();
            {
                let mut status = mirror.status.lock().expect("status");
                status.awaiting_approval.retain(|a| a.head_ref != head_ref);
            }
            if event.action == PullAction::Close {
                self.close_pull(name, mirror, &head_ref).await;
                continue;
            }
            let (files, remote, r) = (self.repos.clone(), mirror.remote.clone(), head_ref.clone());
            let fetched = tokio::task::spawn_blocking(move || {
                let tools = files.tools().clone();
                let before = files.pull_head(&remote.repo, &r).ok().flatten();
                remote.fetch_pull(&tools, &r)?;
                let after = files
                    .pull_head(&remote.repo, &r)
                    .map_err(|e| UpstreamError(e.to_string()))?;
                Ok::<_, UpstreamError>((before, after))
            })
            .await;
            let (before, commit) = match fetched {
                Ok(Ok((before, Some(after)))) => (before, after),
                Ok(Ok((_, None))) => continue,
                Ok(Err(e)) => {
                    tracing::warn!(repo = name, pull = event.number, error = %e, "cannot fetch a pull request's head");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(repo = name, pull = event.number, error = %e, "cannot fetch a pull request's head");
                    continue;
                }
            };
            mirror.status.lock().expect("status").fetches += 1;
            if event.fork && !mirror.build_forks {
                tracing::info!(repo = name, pull = event.number, commit = %commit, "A fork's pull request waits for a maintainer's approval");
                mirror
                    .status
                    .lock()
                    .expect("status")
                    .awaiting_approval
                    .push(AwaitingApproval {
                        number: event.number,
                        head_ref,
                        commit,
                        since: format_ms(now_ms()),
                    });
                continue;
            }
            // An update that left the head where it was (a new title) is
            // no new build.
            if before.as_deref() == Some(commit.as_str())
                && self.pull_built(name, &head_ref, &commit).await
            {
                continue;
            }
            let trigger = if event.fork {
                UNTRUSTED_TRIGGER
            } else {
                PULL_TRIGGER
            };
            match self
                .enqueue(name, &head_ref, &commit, None, trigger, None)
                .await
            {
                Ok((_, true)) => queued += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(repo = name, pull = event.number, error = %e, "no build for a pull request")
                }
            }
        }
        queued
    }

    /// Whether `commit` of pull request `head_ref` has a build already.
    async fn pull_built(&self, name: &str, head_ref: &str, commit: &str) -> bool {
        let (n, b, c) = (name.to_string(), head_ref.to_string(), commit.to_string());
        self.store
            .read(move |conn| crate::build::standing::ever_built(conn, &n, &b, &c))
            .await
            .unwrap_or(false)
    }

    /// A closed pull request: its queued and running builds are cancelled
    /// and its head ref is deleted from the mirror.
    async fn close_pull(&self, name: &str, mirror: &Mirror, head_ref: &str) {
        let (n, b) = (name.to_string(), head_ref.to_string());
        let live = self
            .store
            .read(move |conn| crate::build::queue::live_of(conn, &n, &b))
            .await
            .unwrap_or_default();
        for id in live {
            if let Err(e) = self.cancel(id, "its pull request was closed").await {
                tracing::warn!(repo = name, build_id = id, error = %e, "cannot cancel a closed pull request's build");
            }
        }
        let (files, repo, r) = (
            self.repos.clone(),
            mirror.remote.repo.clone(),
            head_ref.to_string(),
        );
        let _ = tokio::task::spawn_blocking(move || {
            files.tools().git(&repo, &["update-ref", "-d", &r])
        })
        .await;
        tracing::info!(repo = name, pull = head_ref, "A pull request was closed");
    }

    /// A maintainer's approval of the head of fork pull request `number` of
    /// repository `name` that waits for one: it is built, untrusted.
    pub async fn approve_pull(
        &self,
        name: &str,
        number: u64,
    ) -> Result<(BuildView, bool), AppError> {
        self.find_repo(name).await?;
        let mirror = self
            .upstreams
            .get(name)
            .ok_or_else(|| AppError::NotFound(format!("repository {name:?} has no upstream")))?;
        let waiting = {
            let mut status = mirror.status.lock().expect("status");
            let found = status
                .awaiting_approval
                .iter()
                .position(|a| a.number == number);
            found.map(|i| status.awaiting_approval.remove(i))
        };
        let Some(waiting) = waiting else {
            return Err(AppError::NotFound(format!(
                "no pull request #{number} of repository {name:?} waits for approval"
            )));
        };
        tracing::info!(repo = name, pull = number, commit = %waiting.commit, "A fork's pull request was approved");
        let result = self
            .enqueue(
                name,
                &waiting.head_ref,
                &waiting.commit,
                None,
                UNTRUSTED_TRIGGER,
                None,
            )
            .await;
        if result.is_err() {
            mirror
                .status
                .lock()
                .expect("status")
                .awaiting_approval
                .push(waiting);
        }
        result
    }
}
