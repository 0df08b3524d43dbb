//! Mirrored repositories: one task per repository with an upstream keeps
//! its branches equal to the upstream's and builds what moved, through the
//! same queue and superseding as a push.
//!
//! The task looks every `poll_interval_secs` (±10 %, so that repositories
//! configured together do not ask together), at once when a verified
//! webhook says so, and after a failure with a doubling backoff. A look is
//! `git ls-remote` first; only when a head differs from ours does `git
//! fetch --prune` run. Looks of one repository never overlap: a webhook
//! storm while a fetch runs leaves one more look to do, not a thousand
//! (`Notify` keeps at most one wake-up). A few repositories talk to their
//! upstreams at once, daemon-wide. Pull requests, which webhooks announce,
//! are handled in the same looks (`pulls`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

mod pulls;

pub use pulls::AwaitingApproval;

use super::{App, AppError, blocking};
use crate::build::queue::{format_ms, now_ms};
use crate::repos::upstream::{Credentials, Remote, UpstreamError, UpstreamSettings};
use crate::repos::webhooks::{self, PullEvent, Refused};

/// Repositories whose git talks to their upstream at once.
const CONCURRENT_UPSTREAMS: usize = 4;

/// Delivery ids remembered, daemon-wide, to recognise a replay.
const REMEMBERED_DELIVERIES: usize = 8192;

/// The first backoff after a failure of a webhooks-only upstream.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);

/// The longest wait between two looks at a failing upstream.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Builds of moved heads queued at once.
const ENQUEUES: usize = 16;

/// Pull request events waiting for the next look of one repository; the
/// oldest are dropped beyond (a later event of the same request replaces
/// its earlier one anyway).
const PENDING_PULL_EVENTS: usize = 256;

/// What the page, the API and health show of an upstream. Never a
/// credential: the URL is redacted, the files are only said to be there.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStatus {
    pub url: String,
    pub poll_interval_secs: u64,
    pub credentials: bool,
    pub webhook: bool,
    /// `pending` (not looked yet), `ok` or `failing`.
    pub state: &'static str,
    pub last_checked_at: Option<String>,
    pub last_fetched_at: Option<String>,
    pub last_error: Option<String>,
    /// Failed looks in a row.
    pub failures: u32,
    pub next_check_at: Option<String>,
    /// Looks (`git ls-remote`), fetches and verified webhook deliveries since
    /// the daemon started.
    pub checks: u64,
    pub fetches: u64,
    pub webhooks: u64,
    /// Whether forks' pull requests build without an approval.
    pub build_fork_pull_requests: bool,
    /// Forks' pull requests whose head waits for a maintainer's approval
    /// (`POST /api/repos/{name}/pulls/{number}/approve`).
    pub awaiting_approval: Vec<AwaitingApproval>,
}

struct Mirror {
    remote: Remote,
    secret: Option<Vec<u8>>,
    build_forks: bool,
    /// Pull request events for the next look, in arrival order.
    pulls: Mutex<VecDeque<PullEvent>>,
    look: Notify,
    stop: CancellationToken,
    status: Mutex<UpstreamStatus>,
}

/// Every mirrored repository's task and state.
pub struct Mirrors {
    repos: Mutex<HashMap<String, Arc<Mirror>>>,
    slots: Semaphore,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Default for Mirrors {
    fn default() -> Self {
        Mirrors {
            repos: Mutex::default(),
            slots: Semaphore::new(CONCURRENT_UPSTREAMS),
            seen: Mutex::default(),
        }
    }
}

impl Mirrors {
    fn get(&self, name: &str) -> Option<Arc<Mirror>> {
        self.repos.lock().expect("mirrors").get(name).cloned()
    }

    /// Stops the task of repository `name`, if it has one.
    pub fn stop(&self, name: &str) {
        if let Some(mirror) = self.repos.lock().expect("mirrors").remove(name) {
            mirror.stop.cancel();
        }
    }

    /// The status of `name`'s upstream, if it has one.
    pub fn status(&self, name: &str) -> Option<UpstreamStatus> {
        self.get(name)
            .map(|m| m.status.lock().expect("status").clone())
    }

    /// The upstreams that fail, by repository.
    pub fn failing(&self) -> BTreeMap<String, UpstreamStatus> {
        self.repos
            .lock()
            .expect("mirrors")
            .iter()
            .map(|(n, m)| (n.clone(), m.status.lock().expect("status").clone()))
            .filter(|(_, s)| s.state == "failing")
            .collect()
    }

    /// Makes repository `name` look at its upstream now, if it has one.
    pub fn look(&self, name: &str) {
        if let Some(mirror) = self.get(name) {
            mirror.look.notify_one();
        }
    }

    /// How many repositories mirror an upstream.
    pub fn count(&self) -> usize {
        self.repos.lock().expect("mirrors").len()
    }

    /// Whether `key` was seen before; remembers it.
    fn replayed(&self, key: String) -> bool {
        let mut seen = self.seen.lock().expect("deliveries");
        let (set, order) = &mut *seen;
        if set.contains(&key) {
            return true;
        }
        if order.len() >= REMEMBERED_DELIVERIES
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        set.insert(key.clone());
        order.push_back(key);
        false
    }
}

/// What a webhook delivery came to.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookAnswer {
    /// `accepted` (the daemon looks at the upstream now), `ping` or
    /// `duplicate` (a delivery id seen before: acknowledged, ignored).
    pub status: &'static str,
    pub forge: &'static str,
    pub event: String,
}

impl App {
    /// Starts (or restarts with new settings) the mirroring of repository
    /// `name` at `path`. Its credentials and webhook secret are read now.
    pub async fn start_upstream(
        self: &Arc<Self>,
        name: &str,
        path: PathBuf,
        settings: UpstreamSettings,
    ) -> Result<(), AppError> {
        let key_copy = self
            .config
            .state_dir
            .join("upstream")
            .join("keys")
            .join(name);
        let s = settings.clone();
        let (credentials, secret) = blocking(move || {
            let credentials = match &s.credentials_file {
                Some(file) => {
                    crate::repos::upstream::load_credentials(file, &key_copy).map_err(|why| {
                        AppError::invalid(
                            "upstream_credentials_file",
                            format!("upstream_credentials_file {}: {why}", file.display()),
                        )
                    })?
                }
                None => Credentials::None,
            };
            let secret = match &s.webhook_secret_file {
                Some(file) => Some(crate::repos::upstream::read_secret_file(file).map_err(
                    |why| {
                        AppError::invalid(
                            "webhook_secret_file",
                            format!("webhook_secret_file {}: {why}", file.display()),
                        )
                    },
                )?),
                None => None,
            };
            Ok((credentials, secret))
        })
        .await?;
        let status = UpstreamStatus {
            url: crate::redact::urls(&settings.url).into_owned(),
            poll_interval_secs: settings.poll_interval_secs,
            credentials: settings.credentials_file.is_some(),
            webhook: secret.is_some(),
            state: "pending",
            last_checked_at: None,
            last_fetched_at: None,
            last_error: None,
            failures: 0,
            next_check_at: None,
            checks: 0,
            fetches: 0,
            webhooks: 0,
            build_fork_pull_requests: settings.build_fork_pull_requests,
            awaiting_approval: Vec::new(),
        };
        let mirror = Arc::new(Mirror {
            remote: Remote {
                repo: path,
                url: settings.url.clone(),
                credentials,
                known_hosts: self.config.state_dir.join("upstream").join("known_hosts"),
            },
            secret,
            build_forks: settings.build_fork_pull_requests,
            pulls: Mutex::default(),
            look: Notify::new(),
            stop: self.shutdown.child_token(),
            status: Mutex::new(status),
        });
        if let Some(old) = self
            .upstreams
            .repos
            .lock()
            .expect("mirrors")
            .insert(name.to_string(), mirror.clone())
        {
            old.stop.cancel();
        }
        tracing::info!(
            repo = name,
            upstream = %crate::redact::urls(&settings.url),
            poll_interval_secs = settings.poll_interval_secs,
            "Mirroring an upstream"
        );
        tokio::spawn(mirror_loop(
            self.clone(),
            name.to_string(),
            mirror,
            settings.poll_interval_secs,
        ));
        Ok(())
    }

    /// A forge's webhook delivery for repository `name`: verified against the
    /// repository's secret, then a look at the upstream now. Nothing in the
    /// body is trusted: what is built is what the upstream has.
    pub async fn webhook<'a>(
        &self,
        name: &str,
        headers: impl Fn(&str) -> Option<&'a str>,
        body: &[u8],
    ) -> Result<WebhookAnswer, AppError> {
        // Which repositories exist is no secret only when reads are public.
        let repo = match self.find_repo(name).await {
            Err(AppError::NotFound(_)) if !self.config.public_read => {
                return Err(AppError::Unauthorized(format!(
                    "repository {name:?} takes no webhooks"
                )));
            }
            other => other?,
        };
        let Some(mirror) = self.upstreams.get(&repo.name) else {
            return Err(AppError::Unauthorized(format!(
                "repository {name:?} has no upstream and takes no webhooks"
            )));
        };
        let Some(secret) = &mirror.secret else {
            return Err(AppError::Unauthorized(format!(
                "repository {name:?} has no webhook_secret_file: its webhooks cannot be verified"
            )));
        };
        let delivery = webhooks::verify(headers, body, secret).map_err(|e: Refused| {
            tracing::warn!(repo = name, error = %e, "Refused a webhook delivery");
            AppError::Unauthorized(e.to_string())
        })?;
        let answer = |status| WebhookAnswer {
            status,
            forge: delivery.forge.as_str(),
            event: delivery.event.clone(),
        };
        if let Some(id) = &delivery.id
            && self
                .upstreams
                .replayed(format!("{name}\n{}\n{id}", delivery.forge.as_str()))
        {
            tracing::info!(repo = name, delivery = %id, "Ignored a replayed webhook delivery");
            return Ok(answer("duplicate"));
        }
        mirror.status.lock().expect("status").webhooks += 1;
        if delivery.is_ping() {
            return Ok(answer("ping"));
        }
        // Which pull request, and what happened to it: the one thing read
        // from a verified body. Its head is fetched from the upstream.
        if let Some(event) = webhooks::pull_event(&delivery, body) {
            let mut pulls = mirror.pulls.lock().expect("pull events");
            pulls.retain(|e| e.head_ref != event.head_ref);
            if pulls.len() >= PENDING_PULL_EVENTS {
                pulls.pop_front();
            }
            pulls.push_back(event);
        }
        tracing::debug!(repo = name, forge = delivery.forge.as_str(), event = %delivery.event, "Webhook: looking at the upstream");
        mirror.look.notify_one();
        Ok(answer("accepted"))
    }

    /// One look at `name`'s upstream: its heads, a fetch when one moved, and
    /// a build of every head that moved. Returns how many builds it queued.
    async fn look_upstream(&self, name: &str, mirror: &Mirror) -> Result<usize, UpstreamError> {
        let _slot = self
            .upstreams
            .slots
            .acquire()
            .await
            .map_err(|_| UpstreamError("the daemon is stopping".into()))?;
        let (files, remote) = (self.repos.clone(), mirror.remote.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let tools = files.tools().clone();
            let theirs = remote.ls_remote(&tools)?;
            let ours = files
                .local_heads(&remote.repo)
                .map_err(|e| UpstreamError(e.to_string()))?;
            if theirs.branches == ours {
                return Ok::<_, UpstreamError>((theirs.head, None));
            }
            remote.fetch(&tools)?;
            let after = files
                .local_heads(&remote.repo)
                .map_err(|e| UpstreamError(e.to_string()))?;
            let moved: Vec<(String, String)> = after
                .iter()
                .filter(|(branch, commit)| ours.get(*branch) != Some(*commit))
                .map(|(b, c)| (b.clone(), c.clone()))
                .collect();
            Ok((theirs.head, Some(moved)))
        })
        .await
        .map_err(|e| UpstreamError(format!("the look at the upstream failed: {e}")))?;
        let (head, moved) = outcome?;
        {
            let mut status = mirror.status.lock().expect("status");
            status.checks += 1;
            if moved.is_some() {
                status.fetches += 1;
                status.last_fetched_at = Some(format_ms(now_ms()));
            }
        }
        let repo = self
            .find_repo(name)
            .await
            .map_err(|e| UpstreamError(e.to_string()))?;
        // The upstream's default branch is ours unless one is declared.
        let declared = self
            .config
            .repos
            .get(name)
            .is_some_and(|d| d.default_branch.is_some());
        if let Some(head) = head.filter(|_| !declared)
            && self.views.default_branch(name).flatten().as_deref() != Some(head.as_str())
            && crate::repos::validate_branch(&head).is_ok()
            && let Err(e) = self.set_default_branch(name, head).await
        {
            tracing::warn!(repo = name, error = %e, "cannot follow the upstream's default branch");
        }
        let mut queued = self.pull_requests(name, mirror).await;
        let Some(moved) = moved else {
            return Ok(queued);
        };
        // Deleted branches leave the view, moved ones are read.
        self.refresh_view(&repo)
            .await
            .map_err(|e| UpstreamError(e.to_string()))?;
        // One build per commit: the build of a commit stands for it on every
        // branch at it.
        let mut commits = HashSet::new();
        let moved: Vec<_> = moved
            .into_iter()
            .filter(|(_, commit)| commits.insert(commit.clone()))
            .collect();
        let mut results = futures_util::stream::iter(moved)
            .map(|(branch, commit)| async move {
                let r = self
                    .enqueue(name, &branch, &commit, None, "upstream", None)
                    .await;
                (branch, r)
            })
            .buffer_unordered(ENQUEUES);
        while let Some((branch, result)) = results.next().await {
            match result {
                Ok((_, true)) => queued += 1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(repo = name, branch = %branch.escape_debug(), error = %e, "no build for an upstream head")
                }
            }
        }
        Ok(queued)
    }
}

/// A uniformly random fraction in [0, 1).
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// `interval` spread by ±10 %.
fn spread(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * random_fraction())
}

/// The wait after `failures` failed looks in a row.
fn backoff(poll: Duration, failures: u32) -> Duration {
    let base = if poll.is_zero() { FIRST_BACKOFF } else { poll };
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(MAX_BACKOFF.max(poll))
}

async fn mirror_loop(app: Arc<App>, name: String, mirror: Arc<Mirror>, poll_secs: u64) {
    let poll = Duration::from_secs(poll_secs);
    // The first look soon after start, spread so that many repositories do
    // not all ask at the same moment.
    let mut wait = Some(Duration::from_secs(5).min(poll).mul_f64(random_fraction()));
    mirror.status.lock().expect("status").next_check_at = next_at(wait);
    loop {
        let sleep = async {
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = mirror.stop.cancelled() => return,
            () = sleep => {}
            () = mirror.look.notified() => {}
        }
        let result = tokio::select! {
            () = mirror.stop.cancelled() => return,
            r = app.look_upstream(&name, &mirror) => r,
        };
        let mut status = mirror.status.lock().expect("status");
        status.last_checked_at = Some(format_ms(now_ms()));
        match result {
            Ok(queued) => {
                if status.failures > 0 {
                    tracing::info!(repo = %name, after = status.failures, "The upstream answers again");
                }
                if queued > 0 {
                    tracing::info!(repo = %name, builds = queued, "Upstream heads moved");
                }
                status.state = "ok";
                status.failures = 0;
                status.last_error = None;
                wait = (!poll.is_zero()).then(|| spread(poll));
            }
            Err(e) => {
                status.state = "failing";
                status.failures += 1;
                status.last_error = Some(e.to_string());
                let delay = backoff(poll, status.failures);
                tracing::warn!(
                    repo = %name,
                    failures = status.failures,
                    retry_in_secs = delay.as_secs(),
                    error = %e,
                    "The upstream cannot be read"
                );
                wait = Some(spread(delay));
            }
        }
        // With the look's outcome, so that a reader sees both or neither.
        status.next_check_at = next_at(wait);
    }
}

/// When a look `wait` from now happens, if one is due.
fn next_at(wait: Option<Duration>) -> Option<String> {
    wait.map(|w| format_ms(now_ms() + w.as_millis() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval_and_is_bounded() {
        let five = Duration::from_secs(300);
        assert_eq!(backoff(five, 1), five);
        assert_eq!(backoff(five, 2), five * 2);
        assert_eq!(backoff(five, 30), MAX_BACKOFF);
        assert_eq!(backoff(Duration::ZERO, 1), FIRST_BACKOFF);
        assert_eq!(backoff(Duration::ZERO, 2), FIRST_BACKOFF * 2);
        let day = Duration::from_secs(86_400);
        assert_eq!(backoff(day, 3), day);
    }

    #[test]
    fn spread_stays_within_ten_percent() {
        for _ in 0..1000 {
            let s = spread(Duration::from_secs(100));
            assert!(s >= Duration::from_secs(90) && s <= Duration::from_secs(110));
        }
    }

    #[test]
    fn a_delivery_id_is_a_replay_the_second_time() {
        let mirrors = Mirrors::default();
        assert!(!mirrors.replayed("a".into()));
        assert!(mirrors.replayed("a".into()));
        for i in 0..REMEMBERED_DELIVERIES {
            mirrors.replayed(format!("x{i}"));
        }
        // Bounded: the oldest are forgotten.
        assert!(!mirrors.replayed("a".into()));
    }
}
