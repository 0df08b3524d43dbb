//! Which build stands for a commit: one build per commit and repository.
//! A commit pushed on many branches is built once, and each branch at it
//! shows that build until it has one of its own. A fork's build (untrusted)
//! stands for no branch.

use rusqlite::{Connection, OptionalExtension, params};

use crate::build::queue::{Build, COLUMNS, UNTRUSTED_TRIGGER, from_row};
use crate::storage::store::{SqlResultExt, StoreError};

/// For each commit of `repo` with one, its newest queued, running, passed
/// or failed build but a fork's: the build a branch at that commit shows
/// when it has none of its own (see [`standing_build`]).
pub fn standing_per_commit(conn: &Connection, repo: &str) -> Result<Vec<Build>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM builds WHERE id IN \
             (SELECT MAX(id) FROM builds WHERE repo_name = ?1 \
              AND status IN ('queued', 'running', 'success', 'failed') \
              AND trigger <> '{UNTRUSTED_TRIGGER}' GROUP BY commit_hash)"
        ))
        .db()?;
    let rows = stmt.query_map([repo], from_row).db()?;
    rows.collect::<Result<Vec<_>, _>>().db()
}

/// One seek of `builds_by_commit_branch` per head, whatever the builds.
const EVER_BUILT: &str = "SELECT EXISTS (SELECT 1 FROM builds WHERE repo_name = ?1 \
     AND commit_hash = ?3 AND branch = ?2) \
     OR EXISTS (SELECT 1 FROM builds WHERE repo_name = ?1 AND commit_hash = ?3 \
     AND status IN ('queued', 'running', 'success', 'failed') AND trigger <> 'fork_pull_request')";

/// Whether `commit` on `branch` of `repo` has had a build, or has one on
/// another branch that stands for it (see [`standing_build`]).
pub fn ever_built(
    conn: &Connection,
    repo: &str,
    branch: &str,
    commit: &str,
) -> Result<bool, StoreError> {
    conn.prepare_cached(EVER_BUILT)
        .db()?
        .query_row(params![repo, branch, commit], |r| r.get(0))
        .db()
}

/// The newest build of `commit` of `repo` on a branch other than `branch`
/// that stands for the commit on every branch: queued, running, passed or
/// failed (a cancelled build tested nothing). One build per commit and
/// repository: a commit pushed on many branches is built once.
pub fn standing_build(
    conn: &Connection,
    repo: &str,
    branch: &str,
    commit: &str,
) -> Result<Option<Build>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM builds WHERE repo_name = ?1 AND commit_hash = ?3 AND branch <> ?2 \
         AND status IN ('queued', 'running', 'success', 'failed') \
         AND trigger <> '{UNTRUSTED_TRIGGER}' ORDER BY id DESC LIMIT 1"
    ))
    .db()?
    .query_row(params![repo, branch, commit], from_row)
    .optional()
    .db()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::queue::UNTRUSTED_TRIGGER;
    use rusqlite::params;

    /// The audit's database (issue 25): thousands of builds of one commit,
    /// one per branch, without statistics. Asking whether a head was built
    /// must be one seek on the index that has all three columns, not a walk
    /// of every build of the commit (quadratic over a scan of every head).
    #[test]
    fn whether_a_head_was_built_is_one_index_seek_whatever_the_statistics() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::storage::store::migrate(&mut conn).unwrap();
        conn.execute_batch("DROP TABLE IF EXISTS sqlite_stat1;")
            .ok();
        let commit = "a".repeat(40);
        for i in 0..5000 {
            conn.execute(
                "INSERT INTO builds (repo_name, repo_path, commit_hash, branch, status, \
                 max_retries, created_at) VALUES ('r', '/r', ?1, ?2, 'success', 0, 0)",
                params![commit, format!("b{i}")],
            )
            .unwrap();
        }
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {EVER_BUILT}"))
            .unwrap()
            .query_map(params!["r", "b4999", commit], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains(
                "USING COVERING INDEX builds_by_commit_branch (repo_name=? AND commit_hash=? AND branch=?)"
            )),
            "{plan:#?}"
        );
        assert!(ever_built(&conn, "r", "b4999", &commit).unwrap());
        assert!(ever_built(&conn, "r", "new", &commit).unwrap());
        assert!(!ever_built(&conn, "r", "new", &"b".repeat(40)).unwrap());
    }

    /// A fork's build stands for no branch: a branch at its commit is
    /// built (the scan queues it) and never shows the fork's result.
    #[test]
    fn a_forks_build_stands_for_no_branch() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::storage::store::migrate(&mut conn).unwrap();
        let commit = "c".repeat(40);
        conn.execute(
            "INSERT INTO builds (repo_name, repo_path, commit_hash, branch, status, \
             max_retries, created_at, trigger) \
             VALUES ('r', '/r', ?1, 'refs/pull/4/head', 'success', 0, 0, ?2)",
            params![commit, UNTRUSTED_TRIGGER],
        )
        .unwrap();
        assert!(!ever_built(&conn, "r", "main", &commit).unwrap());
        assert!(
            standing_build(&conn, "r", "main", &commit)
                .unwrap()
                .is_none()
        );
        assert!(standing_per_commit(&conn, "r").unwrap().is_empty());
        assert!(ever_built(&conn, "r", "refs/pull/4/head", &commit).unwrap());
    }
}
