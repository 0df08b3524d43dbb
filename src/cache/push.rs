//! Pushes recorded outputs to the `cache_push` targets with `nix copy`, at
//! most `cache_push_jobs` at once, retrying with backoff. A push never
//! changes a build's result: its state is its own row in `cache_pushes`,
//! and it survives restarts there.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio::task::JoinSet;

use super::{Output, is_binary_cache};
use crate::app::App;
use crate::build::nix;
use crate::build::process;
use crate::build::queue::now_ms;
use crate::storage::store::{SqlResultExt, StoreError};

/// Attempts before a push is given up (`failed`); with the backoff doubling
/// up to an hour, about a day of trying.
pub const MAX_ATTEMPTS: i64 = 30;

/// Longest pause between attempts.
const MAX_BACKOFF_SECS: u64 = 3600;

/// How long the pusher sleeps when nothing is due and nothing wakes it.
const IDLE: Duration = Duration::from_secs(30);

/// A push that is due.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Job {
    build_id: i64,
    target: String,
}

/// Starts the pusher; it stops when the daemon shuts down (a push in
/// flight is stopped and stays pending for the next start).
pub fn spawn(app: &Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    if app.cache.is_none() || app.config.cache_push.is_empty() {
        return None;
    }
    let app = app.clone();
    Some(tokio::spawn(async move { schedule(app).await }))
}

async fn schedule(app: Arc<App>) {
    let cache = app.cache.as_ref().expect("the pusher runs with a cache");
    let limit = app.config.cache_push_jobs as usize;
    let in_flight: Arc<Mutex<HashSet<Job>>> = Arc::default();
    let mut running = JoinSet::new();
    while !app.shutdown.is_cancelled() {
        let free = limit.saturating_sub(running.len());
        let busy: Vec<Job> = in_flight.lock().expect("pushes").iter().cloned().collect();
        let (due, next) = match app.store.read(move |conn| due(conn, free, &busy)).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the pushes that are due");
                (Vec::new(), None)
            }
        };
        for job in due {
            in_flight.lock().expect("pushes").insert(job.clone());
            let (app, in_flight) = (app.clone(), in_flight.clone());
            running.spawn(async move {
                attempt(&app, &job).await;
                in_flight.lock().expect("pushes").remove(&job);
            });
        }
        let wait = next
            .map(|at| {
                Duration::from_millis((at - now_ms()).clamp(50, IDLE.as_millis() as i64) as u64)
            })
            .unwrap_or(IDLE);
        tokio::select! {
            _ = cache.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = app.shutdown.cancelled() => {}
        }
    }
    running.shutdown().await;
}

/// Up to `free` due pushes not already running, and when the next pending
/// one is due.
fn due(
    conn: &Connection,
    free: usize,
    busy: &[Job],
) -> Result<(Vec<Job>, Option<i64>), StoreError> {
    let now = now_ms();
    let pending = conn
        .prepare_cached(
            "SELECT build_id, target, next_at FROM cache_pushes WHERE status = 'pending' \
             ORDER BY next_at, build_id LIMIT ?1",
        )
        .db()?
        .query_map([(free + busy.len() + 1) as i64], |r| {
            Ok((
                Job {
                    build_id: r.get(0)?,
                    target: r.get(1)?,
                },
                r.get::<_, i64>(2)?,
            ))
        })
        .db()?
        .collect::<Result<Vec<_>, _>>()
        .db()?;
    let mut jobs = Vec::new();
    let mut next = None;
    for (job, at) in pending {
        if busy.contains(&job) {
            continue;
        }
        if at <= now && jobs.len() < free {
            jobs.push(job);
        } else {
            next = Some(next.map_or(at, |n: i64| n.min(at)));
        }
    }
    Ok((jobs, next))
}

/// Backoff before attempt `attempts + 1`: `retry_backoff_secs` (at least a
/// second) doubled per failed attempt, at most an hour.
pub fn backoff(base_secs: u64, attempts: i64) -> Duration {
    let base = base_secs.max(1);
    let doubled = base.saturating_mul(1u64 << attempts.clamp(1, 20).saturating_sub(1));
    Duration::from_secs(doubled.min(MAX_BACKOFF_SECS))
}

async fn attempt(app: &Arc<App>, job: &Job) {
    let id = job.build_id;
    let outputs = app
        .store
        .read(move |conn| {
            conn.prepare_cached("SELECT outputs FROM cache_builds WHERE build_id = ?1")
                .db()?
                .query_row([id], |r| r.get::<_, String>(0))
                .db()
        })
        .await
        .ok()
        .and_then(|o| serde_json::from_str::<Vec<Output>>(&o).ok())
        .unwrap_or_default();
    let result = if outputs.is_empty() {
        Err("the build's outputs are not recorded".to_string())
    } else {
        tokio::select! {
            result = copy(app, &job.target, &outputs) => result,
            _ = app.shutdown.cancelled() => return,
        }
    };
    // Nix's error quotes the target, credentials and all: kept and logged
    // masked.
    let error = result
        .as_ref()
        .err()
        .map(|e| crate::redact::urls(e).into_owned());
    let (target, base, kept) = (
        job.target.clone(),
        app.config.retry_backoff_secs,
        error.clone(),
    );
    let written = app
        .store
        .write(move |conn| finish(conn, id, &target, kept.as_deref(), base))
        .await;
    let target = crate::redact::urls(&job.target);
    let outcome = match (error, written) {
        (_, Err(e)) => {
            tracing::warn!(build_id = id, error = %e, "cannot record a push's outcome");
            return;
        }
        (None, Ok(_)) => {
            tracing::info!(build_id = id, target = %target, "Pushed the build's outputs");
            "pushed"
        }
        (Some(error), Ok(attempts)) if attempts >= MAX_ATTEMPTS => {
            tracing::error!(build_id = id, target = %target, attempts, error = %error, "Giving up pushing the build's outputs");
            "failed"
        }
        (Some(error), Ok(attempts)) => {
            tracing::warn!(build_id = id, target = %target, attempts, error = %error, "Pushing the build's outputs failed; retrying later");
            "retry"
        }
    };
    app.metrics.cache_push(outcome);
    super::publish(app, id).await;
}

/// Records an attempt's outcome; returns the attempts made so far.
fn finish(
    conn: &Connection,
    id: i64,
    target: &str,
    error: Option<&str>,
    base_secs: u64,
) -> Result<i64, StoreError> {
    let attempts: i64 = conn
        .prepare_cached("SELECT attempts FROM cache_pushes WHERE build_id = ?1 AND target = ?2")
        .db()?
        .query_row(params![id, target], |r| r.get::<_, i64>(0))
        .db()?
        + 1;
    let now = now_ms();
    let (status, next_at) = match error {
        None => ("pushed", now),
        Some(_) if attempts >= MAX_ATTEMPTS => ("failed", now),
        Some(_) => (
            "pending",
            now + backoff(base_secs, attempts).as_millis() as i64,
        ),
    };
    conn.prepare_cached(
        "UPDATE cache_pushes SET status = ?3, attempts = ?4, error = ?5, next_at = ?6, \
         updated_at = ?7 WHERE build_id = ?1 AND target = ?2",
    )
    .db()?
    .execute(params![id, target, status, attempts, error, next_at, now])
    .db()?;
    Ok(attempts)
}

/// `target` with nix told to sign what it uploads, for binary caches.
fn signing_url(target: &str, key_file: &std::path::Path) -> String {
    let separator = if target.contains('?') { '&' } else { '?' };
    format!("{target}{separator}secret-key={}", key_file.display())
}

/// Signs (for stores that do not sign on upload) and copies the outputs
/// with their closures; the error is nix's first error line.
async fn copy(app: &App, target: &str, outputs: &[Output]) -> Result<(), String> {
    let cache = app.cache.as_ref().expect("pushes run with a cache");
    let paths = outputs.iter().map(|o| o.path.clone());
    let features = [
        "--extra-experimental-features".to_string(),
        "nix-command".into(),
    ];
    let credentials = app.config.cache_dir.join("push-credentials");
    let (target, netrc) = super::netrc::split(target, &credentials)
        .map_err(|e| format!("cannot write the push target's credentials for nix: {e}"))?;
    let target = target.as_str();
    let destination = if is_binary_cache(target) {
        signing_url(target, &cache.key_file)
    } else {
        let mut sign = vec!["store".to_string(), "sign".into()];
        sign.extend(features.iter().cloned());
        sign.extend([
            "--recursive".into(),
            "--key-file".into(),
            cache.key_file.display().to_string(),
        ]);
        sign.extend(paths.clone());
        run(app, &sign).await?;
        target.to_string()
    };
    let mut args = vec!["copy".to_string()];
    args.extend(features);
    if let Some(netrc) = &netrc {
        args.extend([
            "--option".into(),
            "netrc-file".into(),
            netrc.path().display().to_string(),
        ]);
    }
    args.extend(["--to".into(), destination]);
    args.extend(paths);
    run(app, &args).await
}

/// Runs nix within `build_timeout_secs`; its whole process group ends with
/// it.
async fn run(app: &App, args: &[String]) -> Result<(), String> {
    let nix_bin = &app.config.nix_bin;
    let mut command = tokio::process::Command::from(app.repos.tools().command(nix_bin, args));
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(|e| {
        process::spawn_error(nix_bin, &process::describe(nix_bin, args), e).to_string()
    })?;
    let pgid = child.id().map(|p| p as i32);
    let limit = Duration::from_secs(app.config.build_timeout_secs);
    let output = tokio::time::timeout(limit, child.wait_with_output()).await;
    if let Some(pgid) = pgid
        && process::group_alive(pgid)
    {
        process::signal_group(pgid, rustix::process::Signal::KILL);
    }
    match output {
        Err(_) => Err(format!(
            "nix copy ran longer than build_timeout_secs ({} s)",
            limit.as_secs()
        )),
        Ok(Err(e)) => Err(format!("cannot wait for nix: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(nix::first_error(&out.stderr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_at_least_a_second_up_to_an_hour() {
        assert_eq!(backoff(0, 1), Duration::from_secs(1));
        assert_eq!(backoff(0, 2), Duration::from_secs(2));
        assert_eq!(backoff(5, 3), Duration::from_secs(20));
        assert_eq!(backoff(5, 29), Duration::from_secs(3600));
    }

    #[test]
    fn binary_caches_sign_on_upload() {
        let key = std::path::Path::new("/run/k");
        assert_eq!(signing_url("file:///c", key), "file:///c?secret-key=/run/k");
        assert_eq!(
            signing_url("s3://b?region=x", key),
            "s3://b?region=x&secret-key=/run/k"
        );
    }
}
