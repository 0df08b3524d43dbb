//! Commit statuses on forges (GitHub, Gitea, Forgejo, GitLab): every build
//! of a repository with a `forge` reports its states on its commit,
//! `procurator-ci` for the build and `procurator-ci/<check>` per check (up
//! to `forge_check_statuses`, beyond which one `procurator-ci/checks`
//! summary stands for them).
//!
//! Builds never wait for a forge. A listener on the event bus turns each
//! build's states into rows of the outbox (`outbox`, in SQLite); a
//! deliverer (`deliver`) posts them, a few at a time, retrying with
//! backoff. At start, and whenever the listener fell behind the bus, the
//! recent builds of reporting repositories are read again, so a state the
//! listener missed is still reported. `wire` has each forge's request.

pub mod deliver;
pub mod outbox;
pub mod wire;

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::app::App;
use crate::build::queue;
use crate::config::ForgeTarget;
use crate::storage::store::{SqlResultExt, StoreError};
use outbox::Wanted;
use wire::State;

/// Builds per repository read again at start and after the listener fell
/// behind.
const CATCH_UP_BUILDS: i64 = 100;

/// The rank of a state that ends a build: nothing replaces it.
const FINAL_RANK: i64 = i64::MAX / 2;

/// Starts the listener and the deliverer. Subscribes before returning, so
/// nothing published afterwards is missed.
pub fn spawn(app: &Arc<App>) {
    let mut events = app.events.listen();
    let listener = app.clone();
    tokio::spawn(async move {
        catch_up(&listener).await;
        // The repositories that report: a build of any other costs the
        // listener no database access at all.
        let mut reporting = reporting_repos(&listener).await;
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = listener.shutdown.cancelled() => break,
            };
            let event = match event {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "forge statuses fell behind the event bus; reading the recent builds again"
                    );
                    reporting = reporting_repos(&listener).await;
                    catch_up(&listener).await;
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            if matches!(event.kind, "repo.created" | "repo.deleted") {
                reporting = reporting_repos(&listener).await;
                continue;
            }
            if !matches!(
                event.kind,
                "build.queued" | "build.started" | "build.finished"
            ) {
                continue;
            }
            let Ok(build) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            if build["repo"]
                .as_str()
                .is_some_and(|repo| reporting.contains(repo))
            {
                record_build(&listener, build).await;
            }
        }
    });
    tokio::spawn(deliver::run(app.clone()));
}

/// The names of the repositories that report to a forge.
async fn reporting_repos(app: &Arc<App>) -> HashSet<String> {
    match app.store.read(outbox::targets).await {
        Ok(targets) => targets.into_iter().map(|(repo, ..)| repo).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read which repositories report to a forge");
            HashSet::new()
        }
    }
}

/// Records the statuses `build` (its view's JSON) wants, when its
/// repository reports to a forge.
async fn record_build(app: &Arc<App>, build: Value) {
    let id = build["id"].as_i64().unwrap_or_default();
    let written = app
        .store
        .write(move |conn| {
            let repo = build["repo"].as_str().unwrap_or_default();
            let Some(target) = outbox::target_of(conn, repo)? else {
                return Ok(false);
            };
            record_wanted(conn, &target, &build)
        })
        .await;
    match written {
        Ok(true) => app.forge_wake.notify_one(),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(build_id = id, error = %e, "cannot record a build's forge statuses")
        }
    }
}

fn record_wanted(
    conn: &rusqlite::Connection,
    target: &ForgeTarget,
    build: &Value,
) -> Result<bool, StoreError> {
    let earlier = match (build["repo"].as_str(), build["commit"].as_str()) {
        (Some(repo), Some(sha)) if build["status"] == "queued" => {
            outbox::check_contexts_of(conn, repo, sha, build["id"].as_i64().unwrap_or_default())?
        }
        _ => Vec::new(),
    };
    let mut any = false;
    for wanted in wanted(build, target.check_statuses, &earlier) {
        any |= outbox::record(conn, &wanted)?;
    }
    Ok(any)
}

/// The statuses a build in the state its JSON shows wants: the build's
/// context always; when it ended, one per check (or the summary); when it
/// is queued, the check contexts `earlier` builds of the commit posted
/// are pending again.
pub fn wanted(build: &Value, cap: u32, earlier: &[String]) -> Vec<Wanted> {
    let (Some(id), Some(repo), Some(sha), Some(status)) = (
        build["id"].as_i64(),
        build["repo"].as_str(),
        build["commit"].as_str(),
        build["status"].as_str(),
    ) else {
        return Vec::new();
    };
    let attempt = build["attempt"].as_i64().unwrap_or_default();
    let make = |context: &str, state: State, description: &str, rank: i64| Wanted {
        build_id: id,
        repo: repo.to_string(),
        sha: sha.to_string(),
        context: context.to_string(),
        state: state.as_str().to_string(),
        description: wire::description(description),
        rank,
    };
    let checks: Vec<&Value> = build["checks"]
        .as_array()
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    match status {
        "queued" => {
            // Waiting for attempt `attempt + 1`.
            let rank = (attempt + 1) * 3;
            let mut all = vec![make(wire::CONTEXT, State::Pending, "Queued", rank)];
            all.extend(
                earlier
                    .iter()
                    .map(|c| make(c, State::Pending, "Queued to be built again", rank)),
            );
            all
        }
        "running" => vec![make(
            wire::CONTEXT,
            State::Running,
            "Building",
            attempt * 3 + 1,
        )],
        "success" | "failed" | "cancelled" => {
            let (state, description) = ended(build, status, checks.len());
            let mut all = vec![make(wire::CONTEXT, state, &description, FINAL_RANK)];
            let cancelled = status == "cancelled";
            if checks.len() > cap as usize {
                let (state, description) = summary(&checks, cancelled, cap);
                all.push(make(wire::SUMMARY_CONTEXT, state, &description, FINAL_RANK));
            } else {
                for check in checks {
                    let Some(name) = check["name"].as_str() else {
                        continue;
                    };
                    let (state, description) = check_state(check, cancelled);
                    let context = format!("{}/{name}", wire::CONTEXT);
                    all.push(make(&context, state, description, FINAL_RANK));
                }
            }
            all
        }
        _ => Vec::new(),
    }
}

/// The build context's state and description once the build ended.
fn ended(build: &Value, status: &str, checks: usize) -> (State, String) {
    let title = build["diagnosis"]["title"].as_str().unwrap_or("Failed");
    let detail = |text: Option<&str>| match text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => format!("{title}: {text}"),
        None => title.to_string(),
    };
    match status {
        "success" if build["nothing_tested"] == true => (
            State::Success,
            "Passed without testing anything: the flake has no checks for this system".into(),
        ),
        "success" => (
            State::Success,
            format!(
                "Passed: {checks} check{}",
                if checks == 1 { "" } else { "s" }
            ),
        ),
        "cancelled" => (State::Cancelled, detail(build["cancel_reason"].as_str())),
        _ => {
            let own_fault = !matches!(
                build["diagnosis"]["kind"].as_str(),
                Some("host" | "infrastructure" | "fetch")
            );
            (
                if own_fault {
                    State::Failure
                } else {
                    State::Error
                },
                detail(build["failure_summary"].as_str()),
            )
        }
    }
}

fn check_state(check: &Value, cancelled: bool) -> (State, &'static str) {
    match check["status"].as_str() {
        Some("passed") => (State::Success, "Passed"),
        Some("cached") => (State::Success, "Passed (already built)"),
        Some("failed") => (State::Failure, "Failed"),
        _ if cancelled => (State::Cancelled, "Not built: the build was cancelled"),
        _ => (State::Error, "Not built: the build stopped first"),
    }
}

/// The one status standing for more checks than the cap.
fn summary(checks: &[&Value], cancelled: bool, cap: u32) -> (State, String) {
    let count = |s: &str| checks.iter().filter(|c| c["status"] == s).count();
    let passed = count("passed") + count("cached");
    let failed = count("failed");
    let not_built = checks.len() - passed - failed;
    let state = if failed > 0 {
        State::Failure
    } else if not_built > 0 && cancelled {
        State::Cancelled
    } else if not_built > 0 {
        State::Error
    } else {
        State::Success
    };
    let mut description = format!("{passed} of {} checks passed", checks.len());
    if failed > 0 {
        description.push_str(&format!(", {failed} failed"));
    }
    if not_built > 0 {
        description.push_str(&format!(", {not_built} not built"));
    }
    description.push_str(&format!(" (more than {cap}: one status for all)"));
    (state, description)
}

/// Tells watchers that a build's forge statuses changed.
async fn publish(app: &Arc<App>, id: i64) {
    if let Ok(statuses) = app.store.read(move |conn| outbox::of_build(conn, id)).await {
        app.events.publish(
            "build.forge",
            Some(id),
            &serde_json::json!({ "id": id, "forge_statuses": statuses }),
        );
    }
}

/// Reads the recent builds of every reporting repository again and
/// records what they want: what the listener missed while the daemon was
/// down or behind is reported all the same.
pub async fn catch_up(app: &Arc<App>) {
    let views = app.store.read(|conn| {
        let mut builds = Vec::new();
        for (repo, target, _, since) in outbox::targets(conn)? {
            let ids = conn
                .prepare_cached(
                    "SELECT id FROM builds WHERE repo_name = ?1 AND created_at >= ?2 \
                     ORDER BY id DESC LIMIT ?3",
                )
                .db()?
                .query_map(rusqlite::params![repo, since, CATCH_UP_BUILDS], |r| {
                    r.get::<_, i64>(0)
                })
                .db()?
                .collect::<Result<Vec<_>, _>>()
                .db()?;
            for id in ids.into_iter().rev() {
                if let Some(build) = queue::get(conn, id)? {
                    builds.push((target.clone(), build));
                }
            }
        }
        Ok(builds)
    });
    let builds = match views.await {
        Ok(builds) => builds,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the builds whose forge statuses to catch up");
            return;
        }
    };
    if builds.is_empty() {
        return;
    }
    let wanted: Vec<(ForgeTarget, Value)> = builds
        .into_iter()
        .map(|(target, build)| {
            let view = serde_json::to_value(app.view(build)).expect("views serialise");
            (target, view)
        })
        .collect();
    let written = app
        .store
        .write(move |conn| {
            let mut any = false;
            for (target, view) in &wanted {
                any |= record_wanted(conn, target, view)?;
            }
            Ok(any)
        })
        .await;
    match written {
        Ok(true) => app.forge_wake.notify_one(),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot catch up forge statuses"),
    }
}

/// Records where each declared repository reports, as the configuration
/// says now; a declared repository that no longer names a forge stops
/// reporting. Repositories created through the API keep theirs.
pub async fn sync_declared(app: &App) -> Result<(), StoreError> {
    let declared: Vec<(String, Option<ForgeTarget>)> = app
        .config
        .repos
        .iter()
        .map(|(name, decl)| {
            // Validated at load.
            let target =
                crate::config::forge::resolve(&decl.forge_keys(), decl.upstream.as_deref())
                    .ok()
                    .flatten();
            (name.clone(), target)
        })
        .collect();
    app.store
        .write(move |conn| {
            for (repo, _, was_declared, _) in outbox::targets(conn)? {
                if was_declared && !declared.iter().any(|(n, t)| n == &repo && t.is_some()) {
                    outbox::set_target(conn, &repo, None, true)?;
                }
            }
            for (repo, target) in &declared {
                if let Some(target) = target {
                    outbox::set_target(conn, repo, Some(target), true)?;
                }
            }
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn build(status: &str, checks: Value) -> Value {
        json!({
            "id": 7, "repo": "app", "commit": "c0ffee", "status": status, "attempt": 1,
            "checks": checks,
            "diagnosis": {"kind": "check", "title": "A check failed"},
            "failure_summary": "builder for 'fmt' failed",
        })
    }

    #[test]
    fn a_build_reports_its_context_and_each_check() {
        let checks = json!([
            {"name": "fmt", "status": "failed"},
            {"name": "test", "status": "passed"},
            {"name": "lint", "status": "not_built"}
        ]);
        let all = wanted(&build("failed", checks.clone()), 25, &[]);
        let states: Vec<(&str, &str)> = all
            .iter()
            .map(|w| (w.context.as_str(), w.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("procurator-ci", "failure"),
                ("procurator-ci/fmt", "failure"),
                ("procurator-ci/test", "success"),
                ("procurator-ci/lint", "error"),
            ]
        );
        assert_eq!(
            all[0].description,
            "A check failed: builder for 'fmt' failed"
        );
        let capped = wanted(&build("failed", checks), 2, &[]);
        assert_eq!(capped.len(), 2);
        assert_eq!(capped[1].context, "procurator-ci/checks");
        assert_eq!(capped[1].state, "failure");
        assert!(
            capped[1]
                .description
                .starts_with("1 of 3 checks passed, 1 failed, 1 not built")
        );
    }

    #[test]
    fn states_rank_by_attempt_and_an_end_outranks_all() {
        let mut first = build("queued", Value::Null);
        first["attempt"] = json!(0);
        let queued = wanted(&first, 25, &["procurator-ci/fmt".into()]);
        assert_eq!(queued.len(), 2);
        assert_eq!(queued[1].state, "pending");
        let running = wanted(&build("running", Value::Null), 25, &[]);
        let retry = wanted(
            &json!({"id": 7, "repo": "a", "commit": "c", "status": "queued", "attempt": 2}),
            25,
            &[],
        );
        assert!(queued[0].rank < running[0].rank && running[0].rank < retry[0].rank);
        let done = wanted(&build("success", json!([])), 25, &[]);
        assert!(done[0].rank > retry[0].rank);
    }

    #[test]
    fn infrastructure_failures_are_errors_not_the_codes() {
        let mut b = build("failed", json!([]));
        b["diagnosis"]["kind"] = json!("infrastructure");
        assert_eq!(wanted(&b, 25, &[])[0].state, "error");
        let mut c = build("cancelled", json!([]));
        c["diagnosis"]["title"] = json!("Cancelled");
        c["cancel_reason"] = json!("superseded by build #8");
        let w = wanted(&c, 25, &[]);
        assert_eq!(
            (w[0].state.as_str(), w[0].description.as_str()),
            ("cancelled", "Cancelled: superseded by build #8")
        );
    }
}
