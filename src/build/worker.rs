//! The worker pool: claims queued builds, runs `nix flake check` in its own
//! process group, streams its output into the log, enforces the time and
//! silence bounds, and records how each attempt ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::Signal;
use tokio::process::Child;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::{App, CancelHandle};
use crate::build::checks::{self, CheckMap, CheckPaths, CheckResult, DrvBuild};
use crate::build::diagnosis::Verdict;
use crate::build::flake_inputs;
use crate::build::nix;
use crate::build::process::{self, CommandError};
use crate::build::progress::{Changes, Tracker};
use crate::build::pump::{Pumped, pump};
use crate::build::queue::{self, Build, FailureKind, LogStats, Outcome, now_ms};
use crate::storage::logs::LogWriter;
use crate::storage::store::StoreError;

/// Longest pause between attempts to record a build's end in a database
/// that is locked or full; past it the next start recovers the build.
const RECORD_PATIENCE: Duration = Duration::from_secs(16);

/// How long the output may stay open after nix and its group are gone.
const PIPE_DRAIN: Duration = Duration::from_secs(10);

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

/// Why a build was stopped before nix finished by itself.
enum Stop {
    Timeout(String),
    Silence(String),
    Cancelled(String),
    Shutdown,
    LogFailed(String),
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
        let handle = CancelHandle::default();
        app.running
            .lock()
            .expect("running builds")
            .insert(build.id, handle.clone());
        let tracker = app.progress.start(build.id);
        let publisher = tokio::spawn(publish_progress(app.clone(), build.id, tracker.clone()));
        let (outcome, exit_code, stats) =
            execute(app, &build, &handle.token, &handle.reason, &tracker).await;
        // Before the end is published: from here the stored results speak.
        publisher.abort();
        app.progress.end(build.id);
        app.running
            .lock()
            .expect("running builds")
            .remove(&build.id);
        record(app, &build, outcome, exit_code, stats).await;
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
) {
    let backoff_secs = app
        .config
        .retry_backoff_secs
        .saturating_mul(1u64 << build.retry_count.clamp(0, 20))
        .min(3600);
    let (id, attempt) = (build.id, build.attempt);
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
        (Outcome::Success, _) => tracing::info!(build_id = id, "Build succeeded"),
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
            retry_in_secs = backoff_secs,
            "Scheduling retry for build"
        ),
        (Outcome::Failed { kind, summary }, _) => tracing::error!(
            build_id = id,
            exit_code,
            failure_kind = kind.as_str(),
            summary = %summary,
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

async fn execute(
    app: &Arc<App>,
    build: &Build,
    cancel: &CancellationToken,
    reason: &Arc<Mutex<Option<String>>>,
    tracker: &Arc<Tracker>,
) -> (Outcome, Option<i32>, LogStats) {
    let infra = |summary: String| Outcome::Failed {
        kind: FailureKind::Infrastructure,
        summary,
    };
    let logs = app.logs.clone();
    let (id, attempt) = (build.id, build.attempt);
    let writer = match tokio::task::spawn_blocking(move || logs.create(id, attempt)).await {
        Ok(Ok(writer)) => Arc::new(Mutex::new(writer)),
        Ok(Err(e)) => {
            return (
                infra(format!("log storage failed: {e}")),
                None,
                LogStats::default(),
            );
        }
        Err(e) => {
            return (
                infra(format!("log storage failed: {e}")),
                None,
                LogStats::default(),
            );
        }
    };
    // What is known before nix runs: whether the commit has submodules.
    let files = app.repos.clone();
    let (repo_path, commit) = (build.repo_path.clone(), build.commit.clone());
    let submodules = tokio::task::spawn_blocking(move || {
        files.has_submodules(std::path::Path::new(&repo_path), &commit)
    })
    .await;
    let submodules = match submodules {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::warn!(build_id = id, error = %e, "cannot tell whether the commit has submodules");
            false
        }
        Err(_) => false,
    };
    let flake = nix::flake_ref(
        std::path::Path::new(&build.repo_path),
        &build.branch,
        &build.commit,
        submodules,
    );
    let args = nix::check_args(&app.config.nix_extra_args, &flake);
    // The first line runs the same checks when pasted into a shell.
    let reproduce = nix::reproduce_command(&app.config.nix_extra_args, &flake);
    note(
        &writer,
        &format!(
            "{reproduce}\nprocurator-ci: build #{id}, attempt {attempt}; the line above runs these checks\n"
        ),
    );

    let spawned = spawn_with_pipe(app, &args);
    let (mut child, reader) = match spawned {
        Ok(pair) => pair,
        Err((kind, message)) => {
            note(&writer, &format!("procurator-ci: {message}\n"));
            let stats = finish_log(writer).await;
            return (
                Outcome::Failed {
                    kind,
                    summary: message,
                },
                None,
                stats,
            );
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let start = process::process_start_time(pgid);
    if let Err(e) = app
        .store
        .write(move |conn| queue::set_process(conn, id, pgid, start))
        .await
    {
        tracing::warn!(build_id = id, error = %e, "cannot record the build's process group");
    }

    let last_output = Arc::new(AtomicI64::new(now_ms()));
    let log_failed = Arc::new(Notify::new());
    let log_error = Arc::new(Mutex::new(None::<String>));
    let pump = {
        let (writer, last_output, log_failed, log_error, tracker) = (
            writer.clone(),
            last_output.clone(),
            log_failed.clone(),
            log_error.clone(),
            tracker.clone(),
        );
        std::thread::Builder::new()
            .name(format!("log-{id}"))
            .spawn(move || {
                pump(
                    reader,
                    &writer,
                    &last_output,
                    &log_failed,
                    &log_error,
                    &tracker,
                )
            })
            .expect("spawning a log thread")
    };
    // The introspection outlives a cancel or a timeout of the build, within
    // bounds: a stopped build still says which of its checks had finished.
    let introspection_stop = CancellationToken::new();
    let mut introspection = tokio::spawn(introspect(
        app.clone(),
        id,
        flake.clone(),
        introspection_stop.clone(),
        tracker.clone(),
    ));

    let config = &app.config;
    let timeout = tokio::time::sleep(Duration::from_secs(config.build_timeout_secs));
    tokio::pin!(timeout);
    let silence_limit = config.max_silent_secs as i64 * 1000;
    let mut silence = tokio::time::interval(Duration::from_millis(
        (silence_limit / 4).clamp(100, 1000) as u64,
    ));
    let waited = loop {
        tokio::select! {
            status = child.wait() => break Ok(status),
            _ = &mut timeout => break Err(Stop::Timeout(format!(
                "the build ran longer than build_timeout_secs ({} s)", config.build_timeout_secs))),
            _ = silence.tick() => {
                if now_ms() - last_output.load(Ordering::Relaxed) > silence_limit {
                    break Err(Stop::Silence(format!(
                        "the build printed nothing for max_silent_secs ({} s)", config.max_silent_secs)));
                }
            }
            _ = cancel.cancelled() => break Err(Stop::Cancelled(
                reason.lock().expect("cancel reason").clone().unwrap_or_else(|| "cancelled".into()))),
            _ = app.shutdown.cancelled() => break Err(Stop::Shutdown),
            _ = log_failed.notified() => break Err(Stop::LogFailed(
                log_error.lock().expect("log error").clone().unwrap_or_default())),
        }
    };
    let grace = Duration::from_secs(config.kill_grace_secs);
    let status = match &waited {
        Ok(status) => status.as_ref().ok().copied(),
        Err(stop) => {
            let why = match stop {
                Stop::Timeout(why)
                | Stop::Silence(why)
                | Stop::Cancelled(why)
                | Stop::LogFailed(why) => why.as_str(),
                Stop::Shutdown => "the daemon is shutting down; the build goes back to the queue",
            };
            note(
                &writer,
                &format!("\nprocurator-ci: stopping the build: {why}\n"),
            );
            terminate(&mut child, pgid, grace).await
        }
    };
    // Whatever nix left in its group (it normally leaves nothing) goes too.
    if process::group_alive(pgid) {
        terminate(&mut child, pgid, grace.min(Duration::from_secs(2))).await;
    }
    // Not after a shutdown (the build goes back to the queue), nor after the
    // log's disk filled: its writes would take the space the store keeps for
    // recording the build's end.
    let introspection_result = if matches!(waited, Err(Stop::Shutdown | Stop::LogFailed(_))) {
        introspection_stop.cancel();
        introspection.abort();
        None
    } else {
        // Usually done by now; it only evaluates the flake, so it gets a
        // bounded moment more (less when the build was stopped).
        let patience = Duration::from_secs(if waited.is_ok() { 30 } else { 10 });
        match tokio::time::timeout(patience, &mut introspection).await {
            Ok(result) => Some(result),
            Err(_) => {
                introspection_stop.cancel();
                introspection.abort();
                None
            }
        }
    };
    // The pipe closes when the last process holding it exits; nix closes it
    // in what it starts, but a process that escaped the group could keep it
    // open forever, so the worker waits only a bounded time for the rest of
    // the output.
    let pumped =
        tokio::time::timeout(PIPE_DRAIN, tokio::task::spawn_blocking(move || pump.join())).await;
    let pumped = match pumped {
        Ok(Ok(Ok(pumped))) => pumped,
        Err(_) => {
            tracing::warn!(
                build_id = id,
                "a process outside the build's group keeps its output open; not waiting for it"
            );
            Pumped::default()
        }
        _ => Pumped::default(),
    };
    let check_map = match introspection_result {
        Some(Ok(map)) => map,
        _ => None,
    };
    let checks = match check_map {
        Some(map) => {
            Some(per_check(map, pumped.builds, pumped.diagnosis.failed_drvs.clone()).await)
        }
        None => None,
    };
    let exit_code = status.and_then(|s| s.code());
    let failed = |kind, summary| Outcome::Failed { kind, summary };
    let outcome = match waited {
        Err(Stop::Timeout(why)) => failed(FailureKind::Timeout, why),
        Err(Stop::Silence(why)) => failed(FailureKind::Silence, why),
        Err(Stop::Cancelled(why)) => Outcome::Cancelled { reason: why },
        Err(Stop::Shutdown) => Outcome::HandedBack,
        Err(Stop::LogFailed(why)) => infra(format!("log storage failed: {why}")),
        Ok(Err(e)) => infra(format!("cannot wait for nix: {e}")),
        Ok(Ok(status)) if status.success() => Outcome::Success,
        Ok(Ok(status)) => match pumped.diagnosis.verdict(checks.as_deref()) {
            Some(verdict) if verdict.fetch.is_some() => {
                let verdict = name_input(app, build, verdict).await;
                failed(verdict.kind, verdict.summary)
            }
            Some(verdict) => failed(verdict.kind, verdict.summary),
            // Not a line of nix's log, and an exit rather than a signal:
            // whatever nix_bin names, it is not a nix that runs builds.
            None if !pumped.diagnosis.structured && status.code().is_some() => failed(
                FailureKind::Host,
                format!(
                    "nix_bin `{}` is not nix as procurator-ci runs it: it ended with {} without a \
                     line of nix's log (--log-format internal-json); {NIX_BIN_HINT}",
                    config.nix_bin,
                    process::describe_status(status)
                ),
            ),
            None => infra(format!(
                "nix ended with {} without reporting an error",
                process::describe_status(status)
            )),
        },
    };
    if let Some(checks) = checks {
        let checks = serde_json::to_value(&checks).expect("check results serialise");
        if let Err(e) = app
            .store
            .write(move |conn| queue::set_checks(conn, id, &checks))
            .await
        {
            tracing::warn!(build_id = id, error = %e, "cannot record the per-check results");
        }
    }
    let stats = finish_log(writer).await;
    (outcome, exit_code, stats)
}

/// A fetch failure's verdict naming the input it is about, read from the
/// commit's `flake.nix` and `flake.lock` (unchanged when none matches).
async fn name_input(app: &App, build: &Build, verdict: Verdict) -> Verdict {
    let files = app.repos.clone();
    let (repo, commit) = (build.repo_path.clone(), build.commit.clone());
    let read = tokio::task::spawn_blocking(move || {
        let repo = std::path::Path::new(&repo);
        let file = |path| files.file_at(repo, &commit, path).ok().flatten();
        flake_inputs::Inputs::read(file("flake.nix").as_deref(), file("flake.lock").as_deref())
    })
    .await;
    let Ok(inputs) = read else {
        return verdict;
    };
    let owner = verdict
        .fetch
        .as_ref()
        .and_then(|(_, message)| inputs.owner_of(message))
        .cloned();
    match owner {
        Some(input) => verdict.naming(&input),
        None => verdict,
    }
}

/// One result per check, from what the build did and what the flake's
/// checks evaluate to.
async fn per_check(
    map: CheckMap,
    builds: HashMap<String, DrvBuild>,
    failed_drvs: Vec<String>,
) -> Vec<CheckResult> {
    tokio::task::spawn_blocking(move || {
        checks::results(&checks::host_system(), &map, &builds, &failed_drvs, |out| {
            std::path::Path::new(out).exists()
        })
    })
    .await
    .unwrap_or_default()
}

/// Writes a line of our own into the build's log.
fn note(writer: &Arc<Mutex<LogWriter>>, text: &str) {
    let _ = writer.lock().expect("log writer").note(text);
}

async fn finish_log(writer: Arc<Mutex<LogWriter>>) -> LogStats {
    tokio::task::spawn_blocking(move || match Arc::try_unwrap(writer) {
        Ok(writer) => writer.into_inner().expect("log writer").finish(),
        Err(shared) => {
            // The pump thread still holds it (a process escaped the group
            // and keeps the pipe open): report what was stored.
            let writer = shared.lock().expect("log writer");
            LogStats {
                bytes: writer.len(),
                truncated: false,
                compressed: false,
            }
        }
    })
    .await
    .unwrap_or_default()
}

/// What to do about a `nix_bin` that is not a working nix.
const NIX_BIN_HINT: &str =
    "install Nix or set nix_bin (environment: PROCURATOR_CI_NIX_BIN) to the nix client";

/// Starts nix with its output on a pipe. A `nix_bin` that cannot be run is
/// the host's setup (`host`); any other failure to start is the CI's own.
fn spawn_with_pipe(
    app: &App,
    args: &[String],
) -> Result<(Child, std::io::PipeReader), (FailureKind, String)> {
    let nix_bin = &app.config.nix_bin;
    let spawn_failed = |e: std::io::Error| {
        let command = process::describe(nix_bin, args);
        (
            FailureKind::Infrastructure,
            CommandError::Spawn {
                command,
                reason: e.to_string(),
            }
            .to_string(),
        )
    };
    let (reader, writer) = std::io::pipe().map_err(spawn_failed)?;
    let mut cmd = app.repos.tools().command(nix_bin, args);
    cmd.stdout(writer.try_clone().map_err(spawn_failed)?)
        .stderr(writer);
    let child = tokio::process::Command::from(cmd).spawn().map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "not found",
            std::io::ErrorKind::PermissionDenied => "not executable (permission denied)",
            _ if e.raw_os_error() == Some(rustix::io::Errno::NOEXEC.raw_os_error()) => {
                "not a program this host can run (exec format error)"
            }
            _ => return spawn_failed(e),
        };
        (
            FailureKind::Host,
            format!("nix_bin `{nix_bin}` cannot run: {why}; {NIX_BIN_HINT}"),
        )
    });
    // The command (and with it our copies of the pipe's write end) is gone
    // here, so the pipe closes when the last process of the build exits.
    Ok((child?, reader))
}

/// SIGTERM to the whole group, then SIGKILL after `grace` if anything of it
/// is left; reaps nix. Returns nix's exit status when it could be reaped.
async fn terminate(
    child: &mut Child,
    pgid: i32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    process::signal_group(pgid, Signal::TERM);
    let deadline = tokio::time::Instant::now() + grace;
    let status = tokio::time::timeout_at(deadline, child.wait())
        .await
        .ok()
        .and_then(Result::ok);
    while process::group_alive(pgid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if process::group_alive(pgid) {
        tracing::warn!(pgid, "build processes ignored SIGTERM; killing them");
        process::signal_group(pgid, Signal::KILL);
    }
    match status {
        Some(status) => Some(status),
        None => child.wait().await.ok(),
    }
}

/// Runs nix with `args` and returns its stdout, or its first error line;
/// `None` when the build was cancelled or the daemon stops first. Its
/// process group ends with it.
async fn run_nix(
    app: &App,
    args: &[String],
    cancel: &CancellationToken,
) -> Option<Result<Vec<u8>, String>> {
    let mut cmd =
        tokio::process::Command::from(app.repos.tools().command(&app.config.nix_bin, args));
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let command = process::describe(&app.config.nix_bin, args);
            return Some(Err(
                process::spawn_error(&app.config.nix_bin, &command, e).to_string()
            ));
        }
    };
    let _guard = GroupGuard(child.id().map(|p| p as i32));
    tokio::select! {
        out = child.wait_with_output() => Some(match out {
            Ok(out) if out.status.success() => Ok(out.stdout),
            Ok(out) => Err(nix::first_error(&out.stderr)),
            Err(e) => Err(e.to_string()),
        }),
        _ = cancel.cancelled() => None,
        _ = app.shutdown.cancelled() => None,
    }
}

/// Records what the flake exposes at the build's revision and returns its
/// checks for this system mapped to derivations, handing them to `tracker`
/// as soon as they are known (both run while nix builds). Failure is logged
/// and recorded, never fatal to the build.
async fn introspect(
    app: Arc<App>,
    id: i64,
    flake: String,
    cancel: CancellationToken,
    tracker: Arc<Tracker>,
) -> Option<CheckMap> {
    let map = async {
        let map = check_map(&app, &flake, &cancel).await?;
        let known = map.clone();
        // It looks for the checks' outputs in the store.
        let _ = tokio::task::spawn_blocking(move || tracker.set_map(known)).await;
        Some(map)
    };
    let ((), map) = tokio::join!(record_outputs(&app, id, &flake, &cancel), map);
    map
}

/// Records what the flake exposes at the build's revision.
async fn record_outputs(app: &Arc<App>, id: i64, flake: &str, cancel: &CancellationToken) {
    let args = nix::show_args(&app.config.nix_extra_args, flake);
    let outputs = match run_nix(app, &args, cancel).await {
        None => return,
        Some(Ok(stdout)) => match serde_json::from_slice(&stdout) {
            Ok(show) => nix::summarize_show(&show),
            Err(e) => {
                serde_json::json!({"error": format!("unreadable nix flake show output: {e}")})
            }
        },
        Some(Err(error)) => serde_json::json!({ "error": error }),
    };
    if let Some(error) = outputs.get("error") {
        tracing::warn!(build_id = id, error = %error, "cannot introspect the flake");
    }
    if let Err(e) = app
        .store
        .write(move |conn| queue::set_outputs(conn, id, &outputs))
        .await
    {
        tracing::warn!(build_id = id, error = %e, "cannot record the flake's outputs");
    }
}

/// Evaluates every check of `checks.<system>` to its derivation at the
/// build's revision. A check that fails to evaluate is evaluated alone, so
/// that its error is attributed to it.
async fn check_map(app: &App, flake: &str, cancel: &CancellationToken) -> Option<CheckMap> {
    let extra = &app.config.nix_extra_args;
    let checks = format!("{flake}#checks.{}", nix::attr(&checks::host_system()));
    let all = nix::eval_args(extra, &checks, checks::PATHS_EXPR);
    let mut map = CheckMap::new();
    let names: Vec<String> = match run_nix(app, &all, cancel).await? {
        Ok(stdout) => {
            let evaluated: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&stdout).ok()?;
            let mut failed = Vec::new();
            for (name, paths) in evaluated {
                match serde_json::from_value::<CheckPaths>(paths) {
                    Ok(paths) => {
                        map.insert(name, Ok(paths));
                    }
                    Err(_) => failed.push(name),
                }
            }
            failed
        }
        Err(error) if error.contains("does not provide attribute") => return Some(map),
        Err(_) => {
            let names = nix::eval_args(extra, &checks, "builtins.attrNames");
            let stdout = run_nix(app, &names, cancel).await?.ok()?;
            serde_json::from_slice(&stdout).ok()?
        }
    };
    for name in names {
        let one = format!("{checks}.{}", nix::attr(&name));
        let args = nix::eval_args(extra, &one, "c: { drv = c.drvPath; out = c.outPath; }");
        let result = match run_nix(app, &args, cancel).await? {
            Ok(stdout) => serde_json::from_slice::<CheckPaths>(&stdout).map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        map.insert(name, result);
    }
    Some(map)
}

/// Ends the introspection's process group when its task is dropped.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            process::signal_group(pgid, Signal::TERM);
        }
    }
}
