//! nix's processes: a build's nix started with its output on a pipe
//! ([`spawn_with_pipe`]), a group ended with SIGTERM then SIGKILL
//! ([`terminate`]), and the short nix runs of the introspection
//! ([`run_nix`]), whose group ends with them ([`GroupGuard`]).

use std::time::Duration;

use rustix::process::Signal;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::build::isolation::Prepared;
use crate::build::nix;
use crate::build::process::{self, CommandError};
use crate::build::queue::FailureKind;

/// What to do about a `nix_bin` that is not a working nix.
pub(super) const NIX_BIN_HINT: &str =
    "install Nix or set nix_bin (environment: PROCURATOR_CI_NIX_BIN) to the nix client";

/// Starts nix with its output on a pipe. A `nix_bin` that cannot be run is
/// the host's setup (`host`); any other failure to start is the CI's own.
pub(super) fn spawn_with_pipe(
    app: &App,
    args: &[String],
    isolation: &Prepared,
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
    isolation.apply(&mut cmd);
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
pub(super) async fn terminate(
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
pub(super) async fn run_nix(
    app: &App,
    args: &[String],
    isolation: &Prepared,
    cancel: &CancellationToken,
) -> Option<Result<Vec<u8>, String>> {
    let mut cmd = app.repos.tools().command(&app.config.nix_bin, args);
    isolation.apply(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
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

/// Ends the introspection's process group when its task is dropped.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            process::signal_group(pgid, Signal::TERM);
        }
    }
}
