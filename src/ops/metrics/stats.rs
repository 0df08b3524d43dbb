//! The per-branch build statistics of the repository API: success rate
//! and median duration of the last finished builds, read from the database.

use std::collections::HashMap;

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::storage::store::{SqlResultExt, StoreError};

/// Finished builds the statistics look at, per branch and per repository.
pub const STATS_WINDOW: u32 = 20;

/// Success rate and median duration over the last finished builds.
/// Cancelled builds say nothing about a branch's health and are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BuildStats {
    /// Finished builds looked at (successes and failures, at most
    /// `STATS_WINDOW`).
    pub builds: u32,
    pub successes: u32,
    /// `successes / builds`; `null` without builds.
    pub success_rate: Option<f64>,
    /// Median of their durations; `null` without builds.
    pub median_duration_ms: Option<i64>,
}

impl BuildStats {
    /// The statistics of `finished`.
    pub fn of(finished: &[Finished]) -> BuildStats {
        let builds = finished.len() as u32;
        let successes = finished.iter().filter(|f| f.success).count() as u32;
        let mut durations: Vec<i64> = finished.iter().filter_map(|f| f.duration_ms).collect();
        durations.sort_unstable();
        let median_duration_ms = match durations.len() {
            0 => None,
            n if n % 2 == 1 => Some(durations[n / 2]),
            n => Some((durations[n / 2 - 1] + durations[n / 2]) / 2),
        };
        BuildStats {
            builds,
            successes,
            success_rate: (builds > 0).then(|| f64::from(successes) / f64::from(builds)),
            median_duration_ms,
        }
    }
}

/// A finished build as the statistics count it (a success or a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub id: i64,
    pub success: bool,
    pub duration_ms: Option<i64>,
}

fn finished_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Finished> {
    let status: String = r.get(at + 1)?;
    Ok(Finished {
        id: r.get(at)?,
        success: status == "success",
        duration_ms: r.get(at + 2)?,
    })
}

/// The last `window` finished builds of `repo`, of one `branch` or of all of
/// them, newest first. Reads at most `window` rows, newest first from the
/// `(repo_name, branch, id)` or `(repo_name, id)` index.
pub fn finished_builds(
    conn: &Connection,
    repo: &str,
    branch: Option<&str>,
    window: u32,
) -> Result<Vec<Finished>, StoreError> {
    let map = |r: &rusqlite::Row<'_>| finished_row(r, 0);
    match branch {
        Some(branch) => conn
            .prepare_cached(
                "SELECT id, status, finished_at - started_at FROM builds \
                 WHERE repo_name = ?1 AND branch = ?2 AND status IN ('success', 'failed') \
                 ORDER BY id DESC LIMIT ?3",
            )
            .db()?
            .query_map(params![repo, branch, window], map)
            .db()?
            .collect::<Result<Vec<_>, _>>()
            .db(),
        None => conn
            .prepare_cached(
                "SELECT id, status, finished_at - started_at FROM builds \
                 WHERE repo_name = ?1 AND status IN ('success', 'failed') \
                 ORDER BY id DESC LIMIT ?2",
            )
            .db()?
            .query_map(params![repo, window], map)
            .db()?
            .collect::<Result<Vec<_>, _>>()
            .db(),
    }
}

/// The last `?2` finished builds of each branch of repository `?1`.
const BRANCH_WINDOWS: &str = "SELECT branch, id, status, duration FROM ( \
       SELECT branch, id, status, finished_at - started_at AS duration, \
              row_number() OVER (PARTITION BY branch ORDER BY id DESC) AS newest \
       FROM builds \
       WHERE repo_name = ?1 AND status IN ('success', 'failed')) \
     WHERE newest <= ?2";

/// The last `window` finished builds of every branch of `repo` (in no
/// particular order), in one query whatever the number of branches (read once when the
/// daemon loads a repository's view). Numbers the rows of each branch newest
/// first from the `(repo_name, branch, id)` index and keeps the first
/// `window`. Branches without finished builds are absent.
pub fn finished_per_branch(
    conn: &Connection,
    repo: &str,
    window: u32,
) -> Result<HashMap<String, Vec<Finished>>, StoreError> {
    let mut stmt = conn.prepare_cached(BRANCH_WINDOWS).db()?;
    let rows = stmt
        .query_map(params![repo, window], |r| {
            Ok((r.get::<_, String>(0)?, finished_row(r, 1)?))
        })
        .db()?;
    let mut per_branch: HashMap<String, Vec<Finished>> = HashMap::new();
    for row in rows {
        let (branch, finished) = row.db()?;
        per_branch.entry(branch).or_default().push(finished);
    }
    Ok(per_branch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::storage::store::migrate(&mut conn).unwrap();
        conn
    }

    fn build_stats(conn: &Connection, repo: &str, branch: Option<&str>, window: u32) -> BuildStats {
        BuildStats::of(&finished_builds(conn, repo, branch, window).unwrap())
    }

    fn insert(conn: &Connection, branch: &str, status: &str, duration: Option<i64>) {
        let (started, finished) = match duration {
            Some(d) => (Some(1000), Some(1000 + d)),
            None => (None, Some(1000)),
        };
        conn.execute(
            "INSERT INTO builds (repo_name, repo_path, commit_hash, branch, status, max_retries, \
             created_at, started_at, finished_at) VALUES ('demo', '/x', 'c', ?1, ?2, 0, 0, ?3, ?4)",
            params![branch, status, started, finished],
        )
        .unwrap();
    }

    #[test]
    fn stats_leave_out_cancelled_and_live_builds() {
        let conn = db();
        insert(&conn, "main", "success", Some(100));
        insert(&conn, "main", "failed", Some(300));
        insert(&conn, "main", "cancelled", None);
        insert(&conn, "main", "success", Some(200));
        insert(&conn, "main", "success", Some(900));
        insert(&conn, "main", "running", None);
        insert(&conn, "dev", "failed", Some(50));
        let main = build_stats(&conn, "demo", Some("main"), STATS_WINDOW);
        assert_eq!(main.builds, 4);
        assert_eq!(main.successes, 3);
        assert_eq!(main.success_rate, Some(0.75));
        assert_eq!(main.median_duration_ms, Some(250));
        let all = build_stats(&conn, "demo", None, STATS_WINDOW);
        assert_eq!((all.builds, all.successes), (5, 3));
        assert_eq!(all.median_duration_ms, Some(200));
        let none = build_stats(&conn, "demo", Some("gone"), STATS_WINDOW);
        assert_eq!(none, BuildStats::default());
        let value = serde_json::to_value(&none).unwrap();
        assert!(value["success_rate"].is_null() && value["median_duration_ms"].is_null());
    }

    #[test]
    fn stats_look_at_the_newest_window_only() {
        let conn = db();
        for _ in 0..5 {
            insert(&conn, "main", "failed", Some(10_000));
        }
        for _ in 0..STATS_WINDOW {
            insert(&conn, "main", "success", Some(10));
        }
        let stats = build_stats(&conn, "demo", Some("main"), STATS_WINDOW);
        assert_eq!(stats.builds, STATS_WINDOW);
        assert_eq!(stats.success_rate, Some(1.0));
        assert_eq!(stats.median_duration_ms, Some(10));
    }

    #[test]
    fn branch_windows_agree_with_one_query_per_branch() {
        let conn = db();
        for i in 0..(STATS_WINDOW as i64 + 7) {
            insert(
                &conn,
                "main",
                if i % 3 == 0 { "failed" } else { "success" },
                Some(i * 10),
            );
        }
        insert(&conn, "main", "cancelled", None);
        insert(&conn, "main", "running", None);
        insert(&conn, "dev", "failed", Some(50));
        insert(&conn, "dev", "success", Some(70));
        insert(&conn, "idle", "queued", None);
        let all = finished_per_branch(&conn, "demo", STATS_WINDOW).unwrap();
        for branch in ["main", "dev", "idle"] {
            let one = finished_builds(&conn, "demo", Some(branch), STATS_WINDOW).unwrap();
            assert_eq!(
                all.get(branch).cloned().unwrap_or_default(),
                one,
                "{branch}"
            );
        }
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all["main"].len(), STATS_WINDOW as usize);
    }

    #[test]
    fn branch_windows_read_the_branch_index() {
        let conn = db();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {BRANCH_WINDOWS}"))
            .unwrap()
            .query_map(params!["demo", STATS_WINDOW], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|l| l.contains("USING INDEX builds_by_repo_branch (repo_name=?)")),
            "{plan:?}"
        );
    }
}
