//! Posts the outbox's due statuses, at most [`JOBS`] at once and one at a
//! time per repository (so a forge hears a context's states in order, and
//! never concurrent requests for one repository), retrying transport errors, 5xx, 429 and GitHub's secondary rate
//! limit (403 with `Retry-After`) with doubling backoff, or after the
//! `Retry-After` the forge asked for. The token is read from its file at
//! each post (so it can be rotated), sent in a header and never logged,
//! recorded or answered.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use super::outbox::{self, Job, Outcome};
use super::wire::{self, State};
use crate::app::App;
use crate::build::queue::now_ms;
use crate::ops::outbound::{self, Answer};

/// Posts in flight at once, over every forge.
pub const JOBS: usize = 4;

/// Attempts before a status is given up (`failed`): with the backoff
/// doubling up to [`MAX_BACKOFF`], about an hour of trying.
pub const MAX_ATTEMPTS: i64 = 12;

/// Wait before the second attempt; doubles for each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Longest pause between attempts, and the longest `Retry-After` obeyed.
pub const MAX_BACKOFF: Duration = Duration::from_secs(900);

/// Bound on one request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The most statuses GitHub keeps per commit and context; no forge is
/// sent more.
pub const MAX_POSTS_PER_CONTEXT: i64 = 1000;

/// Longest sleep before a pending status is looked at again.
const MAX_WAIT: Duration = Duration::from_secs(30);

type Key = String;

/// Until when (milliseconds since the epoch) each API asked for a pause
/// with `Retry-After`: a rate limit is the forge's, not one status's.
type Holds = Arc<Mutex<HashMap<String, i64>>>;

/// Delivers until the daemon shuts down; a post in flight then stays
/// pending for the next start.
pub async fn run(app: Arc<App>) {
    let in_flight: Arc<Mutex<HashSet<Key>>> = Arc::default();
    let holds: Holds = Arc::default();
    let mut running = JoinSet::new();
    while !app.shutdown.is_cancelled() {
        let free = JOBS.saturating_sub(running.len());
        let busy: Vec<Key> = in_flight.lock().expect("posts").iter().cloned().collect();
        let (due, next) = match app
            .store
            .read(move |conn| outbox::due(conn, free, &busy))
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the forge statuses that are due");
                (Vec::new(), None)
            }
        };
        for job in due {
            in_flight.lock().expect("posts").insert(job.key());
            let (app, in_flight, holds) = (app.clone(), in_flight.clone(), holds.clone());
            running.spawn(async move {
                attempt(&app, &job, &holds).await;
                in_flight.lock().expect("posts").remove(&job.key());
            });
        }
        // Nothing pending: only a recorded status (which wakes it) gives
        // work, so an idle daemon never reads the outbox.
        let wait = next.map(|at| {
            Duration::from_millis((at - now_ms()).clamp(20, MAX_WAIT.as_millis() as i64) as u64)
        });
        tokio::select! {
            _ = app.forge_wake.notified() => {}
            _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = app.shutdown.cancelled() => {}
        }
    }
    running.shutdown().await;
}

/// Backoff before attempt `attempts + 1`.
pub fn backoff(attempts: i64) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << attempts.clamp(1, 20).saturating_sub(1));
    doubled.min(MAX_BACKOFF)
}

/// What an answer means for the status.
pub fn judge(forge: crate::config::Forge, answer: &Answer, attempts: i64) -> Outcome {
    match answer {
        Answer::Answered { status, .. } if (200..300).contains(status) => Outcome::Delivered,
        Answer::Answered { status, body, .. } if wire::already_in_state(forge, *status, body) => {
            Outcome::Delivered
        }
        Answer::Answered {
            status,
            retry_after,
            body,
        } => {
            let error = format!("HTTP {status}: {}", one_line(body));
            let rate_limited = *status == 403
                && (retry_after.is_some() || body.to_ascii_lowercase().contains("rate limit"));
            if *status >= 500 || *status == 429 || rate_limited {
                retry(error, *retry_after, attempts)
            } else {
                Outcome::Failed { error }
            }
        }
        Answer::Transport(error) => retry(error.clone(), None, attempts),
    }
}

/// Another attempt after `after` seconds (the forge's `Retry-After`) or the
/// backoff, unless `attempts` were the last.
fn retry(error: String, after: Option<u64>, attempts: i64) -> Outcome {
    if attempts >= MAX_ATTEMPTS {
        return Outcome::Failed {
            error: format!("gave up after {attempts} attempts: {error}"),
        };
    }
    let wait = after
        .map(|s| Duration::from_secs(s).min(MAX_BACKOFF))
        .unwrap_or_else(|| backoff(attempts));
    Outcome::Retry {
        error,
        at: now_ms() + wait.as_millis() as i64,
    }
}

fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(300).collect()
}

async fn attempt(app: &Arc<App>, job: &Job, holds: &Holds) {
    let outcome = post(app, job, holds).await;
    let Some(outcome) = outcome else {
        // Shutting down: stays pending.
        return;
    };
    let log_outcome = outcome.clone();
    let recorded = job.clone();
    let written = app
        .store
        .write(move |conn| outbox::finish(conn, &recorded, &outcome))
        .await;
    if let Err(e) = written {
        tracing::warn!(build_id = job.build_id, error = %e, "cannot record a forge status's outcome");
        return;
    }
    let attempts = job.attempts + 1;
    match log_outcome {
        Outcome::Delivered => {
            tracing::info!(build_id = job.build_id, context = %job.context, state = %job.state, "Posted the commit status")
        }
        Outcome::Retry { error, .. } => {
            tracing::warn!(build_id = job.build_id, context = %job.context, attempts, error = %error, "cannot post the commit status; retrying later")
        }
        Outcome::Failed { error } => {
            tracing::error!(build_id = job.build_id, context = %job.context, attempts, error = %error, "Giving up posting the commit status")
        }
        Outcome::Deferred { .. } => return,
    }
    super::publish(app, job.build_id).await;
}

/// One post of `job`'s status; `None` when the daemon shuts down first.
async fn post(app: &Arc<App>, job: &Job, holds: &Holds) -> Option<Outcome> {
    let attempts = job.attempts + 1;
    let probe = job.clone();
    let looked_up = app
        .store
        .read(move |conn| {
            Ok((
                outbox::target_of(conn, &probe.repo)?,
                outbox::posts_in_context(conn, &probe)?,
            ))
        })
        .await;
    let (target, posts) = match looked_up {
        Ok(found) => found,
        Err(e) => {
            return Some(retry_local(
                attempts,
                format!("cannot read the outbox: {e}"),
            ));
        }
    };
    let Some(target) = target else {
        return Some(Outcome::Failed {
            error: "the repository no longer reports to a forge".into(),
        });
    };
    if posts >= MAX_POSTS_PER_CONTEXT {
        return Some(Outcome::Failed {
            error: format!(
                "{MAX_POSTS_PER_CONTEXT} statuses were posted in this context of this commit \
                 already, the most GitHub keeps; no more are sent"
            ),
        });
    }
    let held = holds.lock().expect("holds").get(&target.api_url).copied();
    if let Some(until) = held.filter(|until| *until > now_ms()) {
        return Some(Outcome::Deferred { at: until });
    }
    let token_file = target.token_file.clone();
    let token =
        match tokio::task::spawn_blocking(move || crate::config::forge::read_token(&token_file))
            .await
        {
            Ok(Ok(token)) => token,
            Ok(Err(e)) => return Some(retry_local(attempts, e)),
            Err(e) => return Some(retry_local(attempts, e.to_string())),
        };
    let state = State::parse(&job.state).unwrap_or(State::Error);
    let target_url = format!("{}/#/builds/{}", app.config.public_url, job.build_id);
    let request = wire::request(
        &target,
        &token,
        &wire::Status {
            sha: &job.sha,
            context: &job.context,
            state,
            description: &job.description,
            target_url: &target_url,
        },
    );
    let body = serde_json::to_vec(&request.body).expect("bodies serialise");
    let (url, headers) = (request.url, request.headers);
    let answer = outbound::send("procurator-forge", &app.shutdown, move || {
        let mut post = outbound::agent(TIMEOUT)
            .post(&url)
            .header("Content-Type", "application/json");
        for (name, value) in &headers {
            post = post.header(*name, value);
        }
        post.send(&body[..])
    })
    .await?;
    // What the forge or the transport said, with the token (should either
    // echo it) and any URL credentials masked.
    let answer = match answer {
        Answer::Answered {
            status,
            retry_after,
            body,
        } => Answer::Answered {
            status,
            retry_after,
            body: mask(&body, &token),
        },
        Answer::Transport(error) => Answer::Transport(mask(&error, &token)),
    };
    if let Answer::Answered {
        retry_after: Some(seconds),
        ..
    } = &answer
    {
        let pause = Duration::from_secs(*seconds).min(MAX_BACKOFF);
        holds
            .lock()
            .expect("holds")
            .insert(target.api_url.clone(), now_ms() + pause.as_millis() as i64);
    }
    Some(judge(target.forge, &answer, attempts))
}

/// A failure on our side (the outbox, the token file): retried like a
/// transport error, since it may pass (a token file provisioned late).
fn retry_local(attempts: i64, error: String) -> Outcome {
    retry(error, None, attempts)
}

/// `text` with `token` and URL credentials masked.
fn mask(text: &str, token: &str) -> String {
    crate::redact::urls(&text.replace(token, "***")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Forge;

    fn answered(status: u16, retry_after: Option<u64>, body: &str) -> Answer {
        Answer::Answered {
            status,
            retry_after,
            body: body.into(),
        }
    }

    #[test]
    fn answers_are_delivered_retried_or_given_up() {
        assert!(matches!(
            judge(Forge::Github, &answered(201, None, ""), 1),
            Outcome::Delivered
        ));
        for retried in [
            answered(500, None, ""),
            answered(429, Some(3), ""),
            answered(403, Some(60), "secondary rate limit"),
            answered(403, None, "You have exceeded a secondary rate limit"),
            Answer::Transport("connection refused".into()),
        ] {
            assert!(
                matches!(judge(Forge::Github, &retried, 1), Outcome::Retry { .. }),
                "{retried:?}"
            );
        }
        for refused in [
            answered(401, None, "Bad credentials"),
            answered(403, None, "Resource not accessible"),
            answered(404, None, ""),
            answered(422, None, ""),
        ] {
            assert!(
                matches!(judge(Forge::Github, &refused, 1), Outcome::Failed { .. }),
                "{refused:?}"
            );
        }
        assert!(matches!(
            judge(Forge::Github, &answered(500, None, ""), MAX_ATTEMPTS),
            Outcome::Failed { .. }
        ));
    }

    #[test]
    fn retry_after_is_obeyed_within_the_longest_backoff() {
        let before = now_ms();
        let Outcome::Retry { at, .. } = judge(Forge::Gitea, &answered(429, Some(7), ""), 1) else {
            panic!("not retried");
        };
        assert!((7000..8000).contains(&(at - before)), "{}", at - before);
        let Outcome::Retry { at, .. } = judge(Forge::Gitea, &answered(503, Some(99_999), ""), 1)
        else {
            panic!("not retried");
        };
        assert!(at - before <= MAX_BACKOFF.as_millis() as i64 + 1000);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn tokens_are_masked_in_what_is_kept() {
        assert_eq!(
            mask("bad token ghp_secret123 sent", "ghp_secret123"),
            "bad token *** sent"
        );
    }
}
