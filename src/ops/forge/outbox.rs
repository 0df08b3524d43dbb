//! The statuses to post, kept in SQLite until delivered (a restart loses
//! none), and where each repository reports.
//!
//! One row per build and context holds the newest state wanted there;
//! a state that arrives before the last one was posted replaces it, so a
//! forge hears each context's states in order and never a late earlier
//! one. Of several builds of one commit, the newest build's row is the
//! only one posted in a context; the older ones are marked superseded.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::build::queue::{format_ms, now_ms};
use crate::config::ForgeTarget;
use crate::storage::store::{SqlResultExt, StoreError};

/// Why a superseded row is not posted.
const SUPERSEDED: &str = "a newer build of this commit reports in this context";

/// Records where `repo` reports (or that it reports nowhere any more).
/// `since` is kept when the row exists: builds older than it are never
/// reported.
pub fn set_target(
    conn: &Connection,
    repo: &str,
    target: Option<&ForgeTarget>,
    declared: bool,
) -> Result<(), StoreError> {
    match target {
        None => {
            conn.prepare_cached("DELETE FROM repo_forges WHERE repo = ?1")
                .db()?
                .execute([repo])
                .db()?;
        }
        Some(target) => {
            let json = serde_json::to_string(target).expect("targets serialise");
            conn.prepare_cached(
                "INSERT INTO repo_forges (repo, target, declared, since) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (repo) DO UPDATE SET target = excluded.target, \
                 declared = excluded.declared",
            )
            .db()?
            .execute(params![repo, json, declared, now_ms()])
            .db()?;
        }
    }
    Ok(())
}

/// Where `repo` reports, if anywhere.
pub fn target_of(conn: &Connection, repo: &str) -> Result<Option<ForgeTarget>, StoreError> {
    let json: Option<String> = conn
        .prepare_cached("SELECT target FROM repo_forges WHERE repo = ?1")
        .db()?
        .query_row([repo], |r| r.get(0))
        .optional()
        .db()?;
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}

/// Every reporting repository: its name, target, whether the
/// configuration declares it and since when it reports.
pub fn targets(conn: &Connection) -> Result<Vec<(String, ForgeTarget, bool, i64)>, StoreError> {
    let rows = conn
        .prepare_cached("SELECT repo, target, declared, since FROM repo_forges ORDER BY repo")
        .db()?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .db()?
        .collect::<Result<Vec<_>, _>>()
        .db()?;
    Ok(rows
        .into_iter()
        .filter_map(|(repo, json, declared, since)| {
            Some((repo, serde_json::from_str(&json).ok()?, declared, since))
        })
        .collect())
}

/// A state wanted in a context of a build's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub build_id: i64,
    pub repo: String,
    pub sha: String,
    pub context: String,
    pub state: String,
    pub description: String,
    /// How far along the build it is: a state never replaces one of a
    /// higher rank (an event read late, a catch-up after the end).
    pub rank: i64,
}

/// Records `wanted`; returns whether it is new (and to be posted). A
/// row waiting for its next attempt keeps waiting: a new state does not
/// cut a backoff or a forge's `Retry-After` short.
pub fn record(conn: &Connection, wanted: &Wanted) -> Result<bool, StoreError> {
    let existing: Option<(String, String, i64)> = conn
        .prepare_cached(
            "SELECT state, description, rank FROM forge_statuses \
             WHERE build_id = ?1 AND context = ?2",
        )
        .db()?
        .query_row(params![wanted.build_id, wanted.context], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .db()?;
    if let Some((state, description, rank)) = existing
        && (wanted.rank < rank || (state == wanted.state && description == wanted.description))
    {
        return Ok(false);
    }
    let newer: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM forge_statuses WHERE repo = ?1 AND sha = ?2 \
             AND context = ?3 AND build_id > ?4)",
        )
        .db()?
        .query_row(
            params![wanted.repo, wanted.sha, wanted.context, wanted.build_id],
            |r| r.get(0),
        )
        .db()?;
    let seq: i64 = conn
        .prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM forge_statuses")
        .db()?
        .query_row([], |r| r.get(0))
        .db()?;
    let now = now_ms();
    let (status, error) = if newer {
        ("superseded", Some(SUPERSEDED))
    } else {
        ("pending", None)
    };
    conn.prepare_cached(
        "INSERT INTO forge_statuses (build_id, context, repo, sha, state, description, rank, \
         seq, status, attempts, error, next_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?11, ?11) \
         ON CONFLICT (build_id, context) DO UPDATE SET state = excluded.state, \
         description = excluded.description, rank = excluded.rank, seq = excluded.seq, \
         status = excluded.status, attempts = 0, error = excluded.error, \
         next_at = CASE WHEN forge_statuses.status = 'pending' \
         THEN max(forge_statuses.next_at, excluded.next_at) ELSE excluded.next_at END, \
         updated_at = excluded.updated_at",
    )
    .db()?
    .execute(params![
        wanted.build_id,
        wanted.context,
        wanted.repo,
        wanted.sha,
        wanted.state,
        wanted.description,
        wanted.rank,
        seq,
        status,
        error,
        now
    ])
    .db()?;
    if !newer {
        conn.prepare_cached(
            "UPDATE forge_statuses SET status = 'superseded', error = ?5, updated_at = ?6 \
             WHERE repo = ?1 AND sha = ?2 AND context = ?3 AND build_id < ?4 \
             AND status = 'pending'",
        )
        .db()?
        .execute(params![
            wanted.repo,
            wanted.sha,
            wanted.context,
            wanted.build_id,
            SUPERSEDED,
            now
        ])
        .db()?;
    }
    Ok(!newer)
}

/// The check contexts earlier builds of `sha` posted: a rebuild reports
/// in them again.
pub fn check_contexts_of(
    conn: &Connection,
    repo: &str,
    sha: &str,
    build_id: i64,
) -> Result<Vec<String>, StoreError> {
    conn.prepare_cached(
        "SELECT DISTINCT context FROM forge_statuses WHERE repo = ?1 AND sha = ?2 \
         AND build_id < ?3 AND context != ?4 ORDER BY context",
    )
    .db()?
    .query_map(params![repo, sha, build_id, super::wire::CONTEXT], |r| {
        r.get(0)
    })
    .db()?
    .collect::<Result<Vec<String>, _>>()
    .db()
}

/// A row that is due.
#[derive(Debug, Clone)]
pub struct Job {
    pub build_id: i64,
    pub context: String,
    pub repo: String,
    pub sha: String,
    pub state: String,
    pub description: String,
    pub seq: i64,
    pub attempts: i64,
}

impl Job {
    /// What at most one post at a time may be about: its repository, so
    /// a context's states go out in order and a forge sees one request
    /// at a time per repository (GitHub asks integrations not to post
    /// concurrently).
    pub fn key(&self) -> String {
        self.repo.clone()
    }
}

/// Up to `free` due rows of repositories not being posted for, one per
/// repository, and when the next pending one is due.
pub fn due(
    conn: &Connection,
    free: usize,
    busy: &[String],
) -> Result<(Vec<Job>, Option<i64>), StoreError> {
    let now = now_ms();
    let pending = conn
        .prepare_cached(
            "SELECT build_id, context, repo, sha, state, description, seq, attempts, next_at \
             FROM forge_statuses WHERE status = 'pending' ORDER BY next_at, seq LIMIT ?1",
        )
        .db()?
        .query_map([(free + busy.len() + 1) as i64], |r| {
            Ok((
                Job {
                    build_id: r.get(0)?,
                    context: r.get(1)?,
                    repo: r.get(2)?,
                    sha: r.get(3)?,
                    state: r.get(4)?,
                    description: r.get(5)?,
                    seq: r.get(6)?,
                    attempts: r.get(7)?,
                },
                r.get::<_, i64>(8)?,
            ))
        })
        .db()?
        .collect::<Result<Vec<_>, _>>()
        .db()?;
    let mut jobs: Vec<Job> = Vec::new();
    let mut next = None;
    for (job, at) in pending {
        let key = job.key();
        if busy.contains(&key) || jobs.iter().any(|j| j.key() == key) {
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

/// Statuses posted in `job`'s context of its commit, by any build.
pub fn posts_in_context(conn: &Connection, job: &Job) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "SELECT coalesce(sum(posts), 0) FROM forge_statuses WHERE repo = ?1 AND sha = ?2 \
         AND context = ?3",
    )
    .db()?
    .query_row(params![job.repo, job.sha, job.context], |r| r.get(0))
    .db()
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered,
    /// Try again at this time (milliseconds since the epoch).
    Retry {
        error: String,
        at: i64,
    },
    /// Not to be tried again.
    Failed {
        error: String,
    },
    /// Not tried: the forge asked for a pause (`Retry-After`) that lasts
    /// until then.
    Deferred {
        at: i64,
    },
}

/// Records an attempt at `job`. A row whose state changed meanwhile stays
/// pending for its new state.
pub fn finish(conn: &Connection, job: &Job, outcome: &Outcome) -> Result<(), StoreError> {
    let now = now_ms();
    let current: Option<i64> = conn
        .prepare_cached("SELECT seq FROM forge_statuses WHERE build_id = ?1 AND context = ?2")
        .db()?
        .query_row(params![job.build_id, job.context], |r| r.get(0))
        .optional()
        .db()?;
    let changed = current != Some(job.seq);
    let statement = match (outcome, changed) {
        (Outcome::Retry { .. } | Outcome::Failed { .. }, true) => return Ok(()),
        (Outcome::Delivered, false) => conn
            .prepare_cached(
                "UPDATE forge_statuses SET status = 'delivered', delivered_state = ?3, \
                 posts = posts + 1, attempts = attempts + 1, error = NULL, updated_at = ?4 \
                 WHERE build_id = ?1 AND context = ?2",
            )
            .db()?
            .execute(params![job.build_id, job.context, job.state, now]),
        (Outcome::Delivered, true) => conn
            .prepare_cached(
                "UPDATE forge_statuses SET delivered_state = ?3, posts = posts + 1, \
                 updated_at = ?4 WHERE build_id = ?1 AND context = ?2",
            )
            .db()?
            .execute(params![job.build_id, job.context, job.state, now]),
        (Outcome::Retry { error, at }, _) => conn
            .prepare_cached(
                "UPDATE forge_statuses SET attempts = attempts + 1, error = ?3, next_at = ?4, \
                 updated_at = ?5 WHERE build_id = ?1 AND context = ?2",
            )
            .db()?
            .execute(params![job.build_id, job.context, error, at, now]),
        (Outcome::Deferred { at }, _) => conn
            .prepare_cached(
                "UPDATE forge_statuses SET next_at = ?3 WHERE build_id = ?1 AND context = ?2",
            )
            .db()?
            .execute(params![job.build_id, job.context, at]),
        (Outcome::Failed { error }, _) => conn
            .prepare_cached(
                "UPDATE forge_statuses SET status = 'failed', attempts = attempts + 1, \
                 error = ?3, updated_at = ?4 WHERE build_id = ?1 AND context = ?2",
            )
            .db()?
            .execute(params![job.build_id, job.context, error, now]),
    };
    statement.db()?;
    Ok(())
}

/// A status of a build, as the API and the page show it.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub context: String,
    /// The state wanted, in our terms (`pending`, `running`, `success`,
    /// `failure`, `error`, `cancelled`).
    pub state: String,
    pub description: String,
    /// `pending` (waiting for its first or next attempt), `delivered`,
    /// `failed` (gave up) or `superseded` (a newer build of the commit
    /// reports in this context).
    pub status: String,
    /// The last state the forge accepted.
    pub delivered_state: Option<String>,
    pub attempts: i64,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<String>,
    pub updated_at: String,
}

/// The statuses of build `id`, the build's own context first.
pub fn of_build(conn: &Connection, id: i64) -> Result<Vec<Delivery>, StoreError> {
    conn.prepare_cached(
        "SELECT context, state, description, status, delivered_state, attempts, error, \
         next_at, updated_at FROM forge_statuses WHERE build_id = ?1 \
         ORDER BY context != ?2, context",
    )
    .db()?
    .query_map(params![id, super::wire::CONTEXT], |r| {
        let status: String = r.get(3)?;
        let next_at: i64 = r.get(7)?;
        Ok(Delivery {
            context: r.get(0)?,
            state: r.get(1)?,
            description: r.get(2)?,
            next_attempt_at: (status == "pending").then(|| format_ms(next_at)),
            status,
            delivered_state: r.get(4)?,
            attempts: r.get(5)?,
            error: r.get(6)?,
            updated_at: format_ms(r.get(8)?),
        })
    })
    .db()?
    .collect::<Result<Vec<_>, _>>()
    .db()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::storage::store::migrate(&mut conn).unwrap();
        conn
    }

    fn wanted(build_id: i64, context: &str, state: &str, rank: i64) -> Wanted {
        Wanted {
            build_id,
            repo: "app".into(),
            sha: "c0ffee".into(),
            context: context.into(),
            state: state.into(),
            description: state.into(),
            rank,
        }
    }

    fn row(conn: &Connection, build_id: i64, context: &str) -> (String, String, i64) {
        conn.query_row(
            "SELECT state, status, next_at FROM forge_statuses WHERE build_id = ?1 AND context = ?2",
            params![build_id, context],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    }

    #[test]
    fn a_later_state_replaces_an_unsent_one_and_never_the_reverse() {
        let conn = conn();
        assert!(record(&conn, &wanted(1, "procurator-ci", "pending", 3)).unwrap());
        assert!(record(&conn, &wanted(1, "procurator-ci", "running", 4)).unwrap());
        // An event read late, a catch-up: a lower rank changes nothing.
        assert!(!record(&conn, &wanted(1, "procurator-ci", "pending", 3)).unwrap());
        assert!(!record(&conn, &wanted(1, "procurator-ci", "running", 4)).unwrap());
        assert_eq!(row(&conn, 1, "procurator-ci").0, "running");
        let (jobs, _) = due(&conn, 4, &[]).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].state, "running");
    }

    #[test]
    fn the_newest_build_of_a_commit_owns_its_contexts() {
        let conn = conn();
        record(&conn, &wanted(1, "procurator-ci", "pending", 3)).unwrap();
        record(&conn, &wanted(2, "procurator-ci", "pending", 3)).unwrap();
        assert_eq!(row(&conn, 1, "procurator-ci").1, "superseded");
        // The older build's end, arriving after: recorded, never posted.
        assert!(!record(&conn, &wanted(1, "procurator-ci", "success", 99)).unwrap());
        assert_eq!(row(&conn, 1, "procurator-ci").1, "superseded");
        let (jobs, _) = due(&conn, 4, &[]).unwrap();
        assert_eq!(jobs.iter().map(|j| j.build_id).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn one_post_at_a_time_per_repository_and_a_state_changed_in_flight_stays_due() {
        let conn = conn();
        record(&conn, &wanted(1, "procurator-ci", "pending", 3)).unwrap();
        record(&conn, &wanted(1, "procurator-ci/a", "success", 99)).unwrap();
        let mut other = wanted(2, "procurator-ci", "pending", 3);
        other.repo = "other".into();
        record(&conn, &other).unwrap();
        let (jobs, _) = due(&conn, 4, &[]).unwrap();
        let repos: Vec<&str> = jobs.iter().map(|j| j.repo.as_str()).collect();
        assert_eq!(repos, ["app", "other"]);
        let busy = ["app".to_string()];
        let (others, _) = due(&conn, 4, &busy).unwrap();
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].repo, "other");

        let posted = &jobs[0];
        assert_eq!(posted.context, "procurator-ci");
        record(&conn, &wanted(1, "procurator-ci", "success", 99)).unwrap();
        finish(&conn, posted, &Outcome::Delivered).unwrap();
        assert_eq!(
            row(&conn, 1, "procurator-ci").0,
            "success",
            "the newer state is kept"
        );
        assert_eq!(row(&conn, 1, "procurator-ci").1, "pending");
    }

    #[test]
    fn a_new_state_waits_out_a_backoff() {
        let conn = conn();
        record(&conn, &wanted(1, "procurator-ci", "pending", 3)).unwrap();
        let (jobs, _) = due(&conn, 4, &[]).unwrap();
        let later = now_ms() + 60_000;
        let retry = Outcome::Retry {
            error: "HTTP 429".into(),
            at: later,
        };
        finish(&conn, &jobs[0], &retry).unwrap();
        record(&conn, &wanted(1, "procurator-ci", "running", 4)).unwrap();
        assert_eq!(row(&conn, 1, "procurator-ci").2, later);
        assert!(due(&conn, 4, &[]).unwrap().0.is_empty());
    }
}
