//! The worker pool: claims queued builds, runs `nix flake check` in its own
//! process group, streams its output into the log, enforces the time and
//! silence bounds, and records how each attempt ended.
//!
//! This module owns the pool and a build's life around its run: claiming
//! it, publishing its progress, recording its end. `execute` runs one
//! attempt (nix, its bounds, its output, its verdict), `child` starts and
//! ends nix's processes, and `introspect` reads what the flake exposes and
//! maps its checks to derivations.

mod child;
mod execute;
mod introspect;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::app::App;
use crate::build::progress::{Changes, Tracker};
use crate::build::queue::{self, Build, LogStats, Outcome, now_ms};
use crate::storage::store::StoreError;
use execute::execute;

/// Longest pause between attempts to record a build's end in a database
/// that is locked or full; past it the next start recovers the build.
const RECORD_PATIENCE: Duration = Duration::from_secs(16);

/// Starts `config.workers` workers; they stop when `app.shutdown` fires,
/// handing their builds back to the queue.
pub fn spawn(app: &Arc<App>) -> Vec<JoinHandle<()>> {
    (0..app.config.workers)
        .map(|index| {
            let app = app.clone();
            tokio::spawn(async move {
                tracing::info!(worker = index, "Worker started");
                work(app).await;
            })
        })
        .collect()
}

async fn work(app: Arc<App>) {
    let poll = Duration::from_millis(app.config.worker_poll_interval_ms);
    while !app.shutdown.is_cancelled() {
        let (apply, undo) = app.views.track();
        match app.store.write_then(queue::claim, apply, undo).await {
            Ok(Some(build)) => run(&app, build).await,
            Ok(None) => {
                let wait = match app.store.read(queue::next_due).await {
                    Ok(Some(due)) => {
                        poll.min(Duration::from_millis((due - now_ms()).max(1) as u64))
                    }
                    _ => poll,
                };
                tokio::select! {
                    _ = app.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = app.shutdown.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim a build; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = app.shutdown.cancelled() => {}
                }
            }
        }
    }
}

async fn run(app: &Arc<App>, build: Build) {
    let span = tracing::info_span!(
        "build",
        build_id = build.id,
        repo = %build.repo,
        branch = %build.branch,
        attempt = build.attempt
    );
    async {
        tracing::info!(
            build_id = build.id,
            repo = %build.repo,
            branch = %build.branch,
            commit = %build.commit,
            attempt = build.attempt,
            "Starting build processing"
        );
        let view = app.view(build.clone());
        app.events.publish("build.started", Some(build.id), &view);
        // A superseding push may have made its handle already, cancelled.
        let handle = app
            .running
            .lock()
            .expect("running builds")
            .entry(build.id)
            .or_default()
            .clone();
        let tracker = app.progress.start(build.id);
        let publisher = tokio::spawn(publish_progress(app.clone(), build.id, tracker.clone()));
        let (outcome, exit_code, stats) =
            execute(app, &build, &handle.token, &handle.reason, &tracker).await;
        let machines = tracker.machines();
        // Before the end is published: from here the stored results speak.
        publisher.abort();
        app.progress.end(build.id);
        app.running
            .lock()
            .expect("running builds")
            .remove(&build.id);
        record(app, &build, outcome, exit_code, stats, machines).await;
        // A superseding push that found the build still recorded as running
        // after the handle went may have made another: nothing takes it now.
        let late = app
            .running
            .lock()
            .expect("running builds")
            .remove(&build.id);
        // Asked to stop as the attempt ended anyway (a failure that is
        // retried): the request holds for the build queued again.
        let asked = [Some(&handle), late.as_ref()]
            .into_iter()
            .flatten()
            .filter(|h| h.token.is_cancelled())
            .find_map(|h| h.reason.lock().expect("cancel reason").clone());
        if let Some(reason) = asked
            && let Err(e) = app.cancel_if_queued(build.id, &reason).await
        {
            tracing::warn!(build_id = build.id, error = %e, "cannot cancel a build queued again");
        }
    }
    .instrument(span)
    .await
}

/// Least time between two `build.checks` events of one build: a flake with
/// hundreds of checks makes a few events a second, not one per derivation.
const PROGRESS_PERIOD: Duration = Duration::from_millis(250);

/// Publishes the checks of the build that changed (`build.checks`),
/// coalescing what changes within [`PROGRESS_PERIOD`].
async fn publish_progress(app: Arc<App>, id: i64, tracker: Arc<Tracker>) {
    let mut changes = Changes::default();
    loop {
        tracker.changed().await;
        if let Some(snapshot) = tracker.snapshot().and_then(|now| changes.since_last(now)) {
            let event = serde_json::json!({
                "id": id,
                "progress": snapshot.progress,
                "checks": snapshot.checks,
            });
            app.events.publish("build.checks", Some(id), &event);
        }
        tokio::time::sleep(PROGRESS_PERIOD).await;
    }
}

async fn record(
    app: &Arc<App>,
    build: &Build,
    outcome: Outcome,
    exit_code: Option<i32>,
    stats: LogStats,
    machines: Vec<String>,
) {
    let backoff_secs = app
        .config
        .retry_backoff_secs
        .saturating_mul(1u64 << build.retry_count.clamp(0, 20))
        .min(3600);
    let (id, attempt) = (build.id, build.attempt);
    if !machines.is_empty() {
        let recorded = machines.clone();
        if let Err(e) = app
            .store
            .write(move |conn| queue::set_attempt_machines(conn, id, attempt, &recorded))
            .await
        {
            tracing::warn!(build_id = id, error = %e, "cannot record the machines of an attempt");
        }
    }
    let result = match &outcome {
        Outcome::Success => "success",
        Outcome::Failed { kind, .. } => kind.as_str(),
        Outcome::Cancelled { .. } => "cancelled",
        Outcome::HandedBack => "interrupted",
    };
    for machine in &machines {
        app.metrics.machine_attempt(machine, result);
    }
    // The journal's MACHINE= of the build's end: where it was built.
    let machine = (!machines.is_empty()).then(|| machines.join(" "));
    let machine = machine.as_deref();
    let stored = outcome.clone();
    // A locked or full database may recover in a moment (the store frees
    // its disk reserve for exactly this write); the result is worth waiting
    // for, within bounds.
    let mut delay = Duration::from_millis(250);
    let result = loop {
        let stored = stored.clone();
        let (apply, undo) = app.views.track();
        let result = app
            .store
            .write_then(
                move |conn| {
                    queue::finish(
                        conn,
                        id,
                        attempt,
                        &stored,
                        exit_code,
                        stats,
                        backoff_secs as i64 * 1000,
                    )
                },
                apply,
                undo,
            )
            .await;
        match result {
            Err(StoreError::Busy | StoreError::Full) if delay <= RECORD_PATIENCE => {
                tracing::warn!(
                    build_id = id,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot record the end of a build yet"
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => break other,
        }
    };
    let after = match result {
        Ok(after) => after,
        Err(e) => {
            // The build stays `running` in the database; the next start
            // recovers it as an orphan, so it is not lost.
            tracing::error!(build_id = id, error = %e, "cannot record the end of a build");
            return;
        }
    };
    match (&outcome, after.status) {
        (Outcome::Success, _) => tracing::info!(build_id = id, machine, "Build succeeded"),
        (Outcome::HandedBack, _) => {
            tracing::info!(
                build_id = id,
                "Build handed back to the queue for the next start"
            )
        }
        (Outcome::Cancelled { reason }, _) => {
            tracing::info!(build_id = id, reason = %reason, "Build cancelled")
        }
        (Outcome::Failed { kind, summary }, queue::Status::Queued) => tracing::info!(
            build_id = id,
            attempt = after.retry_count,
            failure_kind = kind.as_str(),
            summary = %summary,
            machine,
            retry_in_secs = backoff_secs,
            "Scheduling retry for build"
        ),
        (Outcome::Failed { kind, summary }, _) => tracing::error!(
            build_id = id,
            exit_code,
            failure_kind = kind.as_str(),
            summary = %summary,
            machine,
            "Build failed"
        ),
    }
    if after.status == queue::Status::Success {
        // Its own task: a slow store or cache never holds this build slot.
        tokio::spawn(crate::cache::record(app.clone(), after.clone()));
    }
    let view = app.view(after);
    if view.build.status == queue::Status::Queued {
        app.events.publish("build.queued", Some(id), &view);
        app.wake.notify_one();
    } else {
        app.events.publish("build.finished", Some(id), &view);
    }
}
