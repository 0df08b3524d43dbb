//! One attempt of a build: its log, nix started in its own group, the
//! time, silence, cancel and shutdown bounds, the output pumped into the
//! log, the per-check results, and the outcome in the user's terms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::child::{NIX_BIN_HINT, spawn_with_pipe, terminate};
use super::introspect::introspect;
use crate::app::App;
use crate::build::builders;
use crate::build::checks::{self, CheckMap, CheckResult, DrvBuild};
use crate::build::diagnosis::{self, Verdict};
use crate::build::flake_inputs;
use crate::build::nix;
use crate::build::outputs;
use crate::build::process;
use crate::build::progress::Tracker;
use crate::build::pump::{Pumped, pump};
use crate::build::queue::{self, Build, FailureKind, LogStats, Outcome, now_ms};
use crate::storage::logs::LogWriter;

/// How long the output may stay open after nix and its group are gone.
const PIPE_DRAIN: Duration = Duration::from_secs(10);

/// Why a build was stopped before nix finished by itself.
enum Stop {
    Timeout(String),
    Silence(String),
    Cancelled(String),
    Shutdown,
    LogFailed(String),
}

pub(super) async fn execute(
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

    if let Some(summary) = local_input_outside(app, build).await {
        note(&writer, &format!("procurator-ci: {summary}\n"));
        let stats = finish_log(writer).await;
        let kind = FailureKind::Evaluation;
        return (Outcome::Failed { kind, summary }, None, stats);
    }
    if let Some(why) = app.isolation.unavailable() {
        note(
            &writer,
            &format!(
                "procurator-ci: warning: nix runs without isolation from the daemon's files: {why}\n"
            ),
        );
    }
    let prepared = {
        let (app, repo) = (app.clone(), build.repo_path.clone());
        tokio::task::spawn_blocking(move || app.isolation.prepare(std::path::Path::new(&repo)))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    };
    let isolation = match prepared {
        Ok(isolation) => Arc::new(isolation),
        Err(why) => {
            let summary = format!("cannot prepare nix's isolation: {why}");
            note(&writer, &format!("procurator-ci: {summary}\n"));
            let stats = finish_log(writer).await;
            return (infra(summary), None, stats);
        }
    };
    let spawned = spawn_with_pipe(app, &args, &isolation);
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
        (flake.clone(), isolation.clone()),
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
    let stopped_ms = now_ms();
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
    // A reader that failed (ours) leaves nix's failure unread: that is
    // the CI's fault, never "nix printed nothing".
    let mut unread = None;
    let pumped = match pumped {
        Ok(Ok(Ok(pumped))) => pumped,
        Err(_) => {
            tracing::warn!(
                build_id = id,
                "a process outside the build's group keeps its output open; not waiting for it"
            );
            Pumped::default()
        }
        Ok(Ok(Err(_))) => {
            // The panic's message went to stderr with the panic; it may quote
            // the output it choked on, which the summary must not repeat.
            tracing::error!(build_id = id, "reading nix's output failed (a panic)");
            unread = Some("an internal error: a panic, logged by the daemon".to_string());
            Pumped::default()
        }
        Ok(Err(e)) => {
            unread = Some(e.to_string());
            Pumped::default()
        }
    };
    let check_map = match introspection_result {
        Some(Ok(map)) => map,
        _ => None,
    };
    let lost = match &waited {
        Err(Stop::Silence(_) | Stop::Timeout(_)) => {
            lost_machines(app, &pumped.builds, &tracker.seen_ending(), stopped_ms).await
        }
        _ => Vec::new(),
    };
    for (machine, why) in &lost {
        note(
            &writer,
            &format!("procurator-ci: the build machine {machine} does not answer: {why}\n"),
        );
    }
    let stopped_at = waited.as_ref().err().map(|_| stopped_ms);
    let checks = match check_map {
        Some(map) => Some(
            per_check(
                app,
                map,
                pumped.builds,
                pumped.diagnosis.failed_drvs.clone(),
                tracker.seen_ending(),
                stopped_at,
            )
            .await,
        ),
        None => None,
    };
    let exit_code = status.and_then(|s| s.code());
    let failed = |kind, summary| Outcome::Failed { kind, summary };
    let outcome = match waited {
        Err(Stop::Timeout(why) | Stop::Silence(why)) if !lost.is_empty() => {
            let machines: Vec<String> = lost
                .iter()
                .map(|(machine, why)| format!("{machine} ({why})"))
                .collect();
            failed(
                FailureKind::Host,
                format!(
                    "{}: {why} while building on {}, which no longer answers",
                    diagnosis::rules::LOST_MACHINE,
                    machines.join(", ")
                ),
            )
        }
        Err(Stop::Timeout(why)) => failed(FailureKind::Timeout, why),
        Err(Stop::Silence(why)) => failed(FailureKind::Silence, why),
        Err(Stop::Cancelled(why)) => Outcome::Cancelled { reason: why },
        Err(Stop::Shutdown) => Outcome::HandedBack,
        Err(Stop::LogFailed(why)) => infra(format!("log storage failed: {why}")),
        Ok(Err(e)) => infra(format!("cannot wait for nix: {e}")),
        Ok(Ok(status)) if status.success() => Outcome::Success,
        Ok(Ok(status)) if unread.is_some() => infra(format!(
            "procurator-ci failed reading nix's output ({}), so it cannot tell why nix ended with {}",
            unread.as_deref().unwrap_or_default(),
            process::describe_status(status)
        )),
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
            // Killed: the host or we did it (the OOM killer, a signal of
            // ours); nix did not end by itself.
            None if status.code().is_none() => infra(format!(
                "nix ended with {} without reporting an error",
                process::describe_status(status)
            )),
            // Ended by itself with no error and no failed check: nothing
            // says whose fault it is, so nothing is retried.
            None => failed(
                FailureKind::Unrecognised,
                format!(
                    "nix ended with {} without an error message (its log shows what it did)",
                    process::describe_status(status)
                ),
            ),
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

/// Why the commit's flake may not be evaluated, when it names a local
/// input outside its repository and every `allowed_local_inputs` root:
/// nix would read that file as the daemon's user.
async fn local_input_outside(app: &App, build: &Build) -> Option<String> {
    let files = app.repos.clone();
    let allowed = app.config.allowed_local_inputs.clone();
    let (repo, commit) = (build.repo_path.clone(), build.commit.clone());
    tokio::task::spawn_blocking(move || {
        let repo = std::path::Path::new(&repo);
        let file = |path| files.file_at(repo, &commit, path).ok().flatten();
        let inputs =
            flake_inputs::Inputs::read(file("flake.nix").as_deref(), file("flake.lock").as_deref());
        let (input, path) = inputs.local_outside(repo, &allowed)?;
        Some(format!(
            "input '{}' ({}) reads {path} on the CI host, outside the repository: local inputs \
             elsewhere are refused unless the administrator lists a directory holding them in \
             allowed_local_inputs",
            input.name, input.reference
        ))
    })
    .await
    .ok()
    .flatten()
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
/// checks evaluate to. A check's output is its derivation's, as the store
/// records it, whatever its `outPath` evaluates to.
async fn per_check(
    app: &App,
    mut map: CheckMap,
    builds: HashMap<String, DrvBuild>,
    failed_drvs: Vec<String>,
    seen_ending: HashMap<String, (i64, bool)>,
    stopped_at: Option<i64>,
) -> Vec<CheckResult> {
    let (tools, nix_bin) = (app.repos.tools().clone(), app.config.nix_bin.clone());
    tokio::task::spawn_blocking(move || {
        for paths in map.values_mut().flatten() {
            let timeout = outputs::QUERY_TIMEOUT;
            if let Ok(recorded) = outputs::of_derivation(&tools, &nix_bin, &paths.drv, timeout)
                && !recorded.contains(&paths.out)
            {
                paths.out = recorded[0].clone();
            }
        }
        let ended = checks::Ended {
            builds: &builds,
            failed_drvs: &failed_drvs,
            seen_ending: &seen_ending,
            stopped_at,
        };
        checks::results(&checks::host_system(), &map, &ended, |out| {
            std::path::Path::new(out).exists()
        })
    })
    .await
    .unwrap_or_default()
}

/// Of the remote machines that were building when the build was stopped
/// for silence or time, those that no longer answer, with why: a machine
/// that hangs is to blame, not the check.
async fn lost_machines(
    app: &App,
    builds: &HashMap<String, DrvBuild>,
    seen_ending: &HashMap<String, (i64, bool)>,
    stopped_ms: i64,
) -> Vec<(String, String)> {
    let mut building: Vec<String> = builds
        .iter()
        // Ended after the stop: cut short by it, not finished.
        .filter(|(drv, build)| {
            build.finished_ms.is_none_or(|at| at >= stopped_ms) && !seen_ending.contains_key(*drv)
        })
        .filter_map(|(_, build)| build.machine.clone())
        .collect();
    building.sort();
    building.dedup();
    if building.is_empty() {
        return Vec::new();
    }
    builders::not_answering(app.repos.tools(), &app.config.nix_bin, &building).await
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
