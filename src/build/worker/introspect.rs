//! The introspection that runs beside a build: what the flake exposes at
//! the build's revision (recorded as its outputs), and its checks for this
//! system mapped to derivations (the check map the per-check results and
//! the live progress read).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::child::run_nix;
use crate::app::App;
use crate::build::checks::{self, CheckMap, CheckPaths};
use crate::build::isolation::Prepared;
use crate::build::nix;
use crate::build::progress::Tracker;
use crate::build::queue;

/// Records what the flake exposes at the build's revision and returns its
/// checks for this system mapped to derivations, handing them to `tracker`
/// as soon as they are known (both run while nix builds). Failure is logged
/// and recorded, never fatal to the build.
pub(super) async fn introspect(
    app: Arc<App>,
    id: i64,
    (flake, isolation): (String, Arc<Prepared>),
    cancel: CancellationToken,
    tracker: Arc<Tracker>,
) -> Option<CheckMap> {
    let map = async {
        let map = check_map(&app, &flake, &isolation, &cancel).await?;
        let known = map.clone();
        // It looks for the checks' outputs in the store.
        let _ = tokio::task::spawn_blocking(move || tracker.set_map(known)).await;
        Some(map)
    };
    let ((), map) = tokio::join!(record_outputs(&app, id, &flake, &isolation, &cancel), map);
    map
}

/// Records what the flake exposes at the build's revision.
async fn record_outputs(
    app: &Arc<App>,
    id: i64,
    flake: &str,
    isolation: &Prepared,
    cancel: &CancellationToken,
) {
    let args = nix::show_args(&app.config.nix_extra_args, flake);
    let outputs = match run_nix(app, &args, isolation, cancel).await {
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
async fn check_map(
    app: &App,
    flake: &str,
    isolation: &Prepared,
    cancel: &CancellationToken,
) -> Option<CheckMap> {
    let extra = &app.config.nix_extra_args;
    let checks = format!("{flake}#checks.{}", nix::attr(&checks::host_system()));
    let all = nix::eval_args(extra, &checks, checks::PATHS_EXPR);
    let mut map = CheckMap::new();
    let names: Vec<String> = match run_nix(app, &all, isolation, cancel).await? {
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
            let stdout = run_nix(app, &names, isolation, cancel).await?.ok()?;
            serde_json::from_slice(&stdout).ok()?
        }
    };
    for name in names {
        let one = format!("{checks}.{}", nix::attr(&name));
        let args = nix::eval_args(extra, &one, "c: { drv = c.drvPath; out = c.outPath; }");
        let result = match run_nix(app, &args, isolation, cancel).await? {
            Ok(stdout) => serde_json::from_slice::<CheckPaths>(&stdout).map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        map.insert(name, result);
    }
    Some(map)
}
