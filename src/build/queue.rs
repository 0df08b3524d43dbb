//! The build queue in SQLite: enqueue (idempotent), claim, finish, requeue,
//! cancel, list. Functions here run inside `Store` jobs, on the writer thread
//! or a blocking reader; they never touch git or the network.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde_json::Value;

use crate::storage::store::{SqlResultExt, StoreError};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 with milliseconds, UTC.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A build's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Success,
    Failed,
    Cancelled,
}

impl Status {
    /// The name stored in the database and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or requested status.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "success" => Status::Success,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }

    /// Whether the build has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Success | Status::Failed | Status::Cancelled)
    }
}

pub use crate::build::diagnosis::FailureKind;

/// A build as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Build {
    pub id: i64,
    pub repo: String,
    #[serde(skip)]
    pub repo_path: String,
    pub branch: String,
    pub commit: String,
    pub author: Option<String>,
    /// The first line of the commit message (`None` for builds queued
    /// before messages were recorded).
    pub subject: Option<String>,
    /// The whole commit message.
    pub message: Option<String>,
    pub status: Status,
    pub failure_kind: Option<String>,
    pub failure_summary: Option<String>,
    pub cancel_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub retry_count: i64,
    pub max_retries: i64,
    /// Attempts started (a retry or a hand-back at shutdown starts another).
    pub attempt: i64,
    pub trigger: String,
    pub rebuild_of: Option<i64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// Milliseconds since the epoch of `created_at`/`started_at`, for
    /// clients that measure (the web page and the benchmarks).
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
    /// One result per check of this system, once the build has ended;
    /// while it runs, the views put each check's live state here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Value>,
    #[serde(skip)]
    pub pgid: Option<i64>,
    #[serde(skip)]
    pub pstart: Option<i64>,
}

pub(super) const COLUMNS: &str = "id, repo_name, repo_path, branch, commit_hash, author, status, \
    failure_kind, failure_summary, cancel_reason, exit_code, retry_count, max_retries, \
    attempts, trigger, rebuild_of, created_at, started_at, finished_at, outputs, pgid, pstart, \
    checks, message";

pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<Build> {
    let status: String = row.get(6)?;
    let created: i64 = row.get(16)?;
    let started: Option<i64> = row.get(17)?;
    let finished: Option<i64> = row.get(18)?;
    let outputs: Option<String> = row.get(19)?;
    let message: Option<String> = row.get(23)?;
    Ok(Build {
        id: row.get(0)?,
        repo: row.get(1)?,
        repo_path: row.get(2)?,
        branch: row.get(3)?,
        commit: row.get(4)?,
        author: row.get(5)?,
        subject: message
            .as_deref()
            .map(|m| m.lines().next().unwrap_or_default().to_string()),
        message,
        status: Status::parse(&status).unwrap_or(Status::Failed),
        failure_kind: row.get(7)?,
        failure_summary: row.get(8)?,
        cancel_reason: row.get(9)?,
        exit_code: row.get(10)?,
        retry_count: row.get(11)?,
        max_retries: row.get(12)?,
        attempt: row.get(13)?,
        trigger: row.get(14)?,
        rebuild_of: row.get(15)?,
        created_at: format_ms(created),
        started_at: started.map(format_ms),
        finished_at: finished.map(format_ms),
        duration_ms: match (started, finished) {
            (Some(s), Some(f)) => Some(f - s),
            _ => None,
        },
        created_ms: created,
        started_ms: started,
        outputs: outputs.and_then(|o| serde_json::from_str(&o).ok()),
        pgid: row.get(20)?,
        pstart: row.get(21)?,
        checks: row
            .get::<_, Option<String>>(22)?
            .and_then(|c| serde_json::from_str(&c).ok()),
    })
}

/// A request for a build.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub repo: String,
    pub repo_path: String,
    pub branch: String,
    pub commit: String,
    pub author: Option<String>,
    pub message: Option<String>,
    pub trigger: &'static str,
    pub rebuild_of: Option<i64>,
    pub max_retries: u32,
}

/// The trigger of a build of a pull request from a fork: its code is not
/// the project's, so it gets no secrets (no cache push or signing, no
/// notification that carries a secret) and is marked untrusted.
pub const UNTRUSTED_TRIGGER: &str = "fork_pull_request";

impl Build {
    /// Whether the build is of a fork's pull request (see
    /// [`UNTRUSTED_TRIGGER`]).
    pub fn untrusted(&self) -> bool {
        self.trigger == UNTRUSTED_TRIGGER
    }
}

/// Fetches one build.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Build>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM builds WHERE id = ?1"))
        .db()?
        .query_row([id], from_row)
        .optional()
        .db()
}

/// Queues `new` unless a build of the same repo, branch and commit is still
/// queued or running; returns the build and whether it was created.
pub fn enqueue(conn: &Connection, new: &NewBuild) -> Result<(Build, bool), StoreError> {
    // A push (or the scan) of a commit another branch's build stands for
    // queues nothing: that build is shown on this branch too.
    if matches!(
        new.trigger,
        "push" | "scan" | "upstream" | "pull_request" | UNTRUSTED_TRIGGER
    ) && let Some(standing) =
        super::standing::standing_build(conn, &new.repo, &new.branch, &new.commit)?
    {
        return Ok((standing, false));
    }
    let existing: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM builds WHERE repo_name = ?1 AND branch = ?2 AND commit_hash = ?3 \
             AND status IN ('queued', 'running')",
        )
        .db()?
        .query_row(params![new.repo, new.branch, new.commit], |r| r.get(0))
        .optional()
        .db()?;
    if let Some(id) = existing {
        return Ok((get(conn, id)?.expect("row exists"), false));
    }
    conn.prepare_cached(
        "INSERT INTO builds (repo_name, repo_path, commit_hash, branch, status, retry_count, \
         max_retries, created_at, author, trigger, rebuild_of, attempts, message) \
         VALUES (?1, ?2, ?3, ?4, 'queued', 0, ?5, ?6, ?7, ?8, ?9, 0, ?10)",
    )
    .db()?
    .execute(params![
        new.repo,
        new.repo_path,
        new.commit,
        new.branch,
        new.max_retries,
        now_ms(),
        new.author,
        new.trigger,
        new.rebuild_of,
        new.message
    ])
    .db()?;
    let id = conn.last_insert_rowid();
    Ok((get(conn, id)?.expect("row just inserted"), true))
}

/// Claims the oldest queued build that is due, marking it running and
/// opening its next attempt, in one statement so no build is claimed twice.
pub fn claim(conn: &Connection) -> Result<Option<Build>, StoreError> {
    let now = now_ms();
    let build = conn
        .prepare_cached(&format!(
            "UPDATE builds SET status = 'running', started_at = ?1, finished_at = NULL, \
             attempts = attempts + 1, pgid = NULL, pstart = NULL, exit_code = NULL \
             WHERE id = (SELECT id FROM builds WHERE status = 'queued' \
                         AND (not_before IS NULL OR not_before <= ?1) ORDER BY id LIMIT 1) \
             RETURNING {COLUMNS}"
        ))
        .db()?
        .query_row([now], from_row)
        .optional()
        .db()?;
    if let Some(build) = &build {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO build_attempts (build_id, attempt, started_at) VALUES (?1, ?2, ?3)",
        )
        .db()?
        .execute(params![build.id, build.attempt, now])
        .db()?;
    }
    Ok(build)
}

/// When the earliest queued build that waits for a retry backoff is due.
pub fn next_due(conn: &Connection) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT MIN(not_before) FROM builds WHERE status = 'queued'")
        .db()?
        .query_row([], |r| r.get(0))
        .db()
}

/// Records the process group of a running build, so that a restarted daemon
/// can end it if this one dies.
pub fn set_process(
    conn: &Connection,
    id: i64,
    pgid: i32,
    start: Option<u64>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE builds SET pgid = ?2, pstart = ?3 WHERE id = ?1 AND status = 'running'",
    )
    .db()?
    .execute(params![id, pgid, start.map(|s| s as i64)])
    .db()?;
    Ok(())
}

/// Stores the flake introspection of a build.
pub fn set_outputs(conn: &Connection, id: i64, outputs: &Value) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE builds SET outputs = ?2 WHERE id = ?1")
        .db()?
        .execute(params![id, outputs.to_string()])
        .db()?;
    Ok(())
}

/// Stores the machines one attempt of a build built on.
pub fn set_attempt_machines(
    conn: &Connection,
    id: i64,
    attempt: i64,
    machines: &[String],
) -> Result<(), StoreError> {
    let machines = serde_json::to_string(machines).expect("machine names serialise");
    conn.prepare_cached(
        "UPDATE build_attempts SET machines = ?3 WHERE build_id = ?1 AND attempt = ?2",
    )
    .db()?
    .execute(params![id, attempt, machines])
    .db()?;
    Ok(())
}

/// Stores the per-check results of a build.
pub fn set_checks(conn: &Connection, id: i64, checks: &Value) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE builds SET checks = ?2 WHERE id = ?1")
        .db()?
        .execute(params![id, checks.to_string()])
        .db()?;
    Ok(())
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Success,
    Failed {
        kind: FailureKind,
        summary: String,
    },
    Cancelled {
        reason: String,
    },
    /// Stopped by shutdown: back to the queue, not counted as a retry.
    HandedBack,
}

/// What the attempt's log amounted to.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogStats {
    pub bytes: u64,
    pub truncated: bool,
    pub compressed: bool,
}

/// Ends the running attempt of build `id`. A failure of a retried kind
/// (fetch, host, infrastructure) with retries left goes back to the queue
/// after `backoff_ms`. Returns the build
/// as it now is.
pub fn finish(
    conn: &Connection,
    id: i64,
    attempt: i64,
    outcome: &Outcome,
    exit_code: Option<i32>,
    log: LogStats,
    backoff_ms: i64,
) -> Result<Build, StoreError> {
    let now = now_ms();
    let current = get(conn, id)?.ok_or(StoreError::Commit(format!("build {id} vanished")))?;
    let retry = matches!(outcome, Outcome::Failed { kind, .. } if kind.retried())
        && current.retry_count < current.max_retries;
    let (status, kind, summary, reason, attempt_outcome) = match outcome {
        Outcome::Success => ("success", None, None, None, "success"),
        Outcome::Failed { kind, summary } if retry => (
            "queued",
            Some(kind.as_str()),
            Some(summary.as_str()),
            None,
            "retry",
        ),
        Outcome::Failed { kind, summary } => (
            "failed",
            Some(kind.as_str()),
            Some(summary.as_str()),
            None,
            kind.as_str(),
        ),
        Outcome::Cancelled { reason } => {
            ("cancelled", None, None, Some(reason.as_str()), "cancelled")
        }
        Outcome::HandedBack => ("queued", None, None, None, "interrupted"),
    };
    let finished = (status != "queued").then_some(now);
    conn.prepare_cached(
        "UPDATE builds SET status = ?2, failure_kind = ?3, failure_summary = ?4, \
         cancel_reason = ?5, exit_code = ?6, finished_at = ?7, pgid = NULL, pstart = NULL, \
         retry_count = retry_count + ?8, not_before = ?9 WHERE id = ?1",
    )
    .db()?
    .execute(params![
        id,
        status,
        kind,
        summary,
        reason,
        exit_code,
        finished,
        retry as i64,
        retry.then_some(now + backoff_ms)
    ])
    .db()?;
    conn.prepare_cached(
        "UPDATE build_attempts SET finished_at = ?3, exit_code = ?4, outcome = ?5, log_bytes = ?6, \
         log_truncated = ?7, log_compressed = ?8 WHERE build_id = ?1 AND attempt = ?2",
    )
    .db()?
    .execute(params![
        id,
        attempt,
        now,
        exit_code,
        attempt_outcome,
        log.bytes as i64,
        log.truncated,
        log.compressed
    ])
    .db()?;
    Ok(get(conn, id)?.expect("row exists"))
}

/// Cancels a queued build; returns `None` when it was not queued.
pub fn cancel_queued(
    conn: &Connection,
    id: i64,
    reason: &str,
) -> Result<Option<Build>, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE builds SET status = 'cancelled', cancel_reason = ?2, finished_at = ?3 \
             WHERE id = ?1 AND status = 'queued'",
        )
        .db()?
        .execute(params![id, reason, now_ms()])
        .db()?;
    if changed == 0 {
        return Ok(None);
    }
    get(conn, id)
}

/// Live (queued or running) builds of `branch` of `repo` older than build
/// `newer`, of another commit: what a push of `newer` supersedes.
pub fn superseded(conn: &Connection, newer: &Build) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id FROM builds WHERE repo_name = ?1 AND branch = ?2 AND commit_hash <> ?3 \
             AND id < ?4 AND status IN ('queued', 'running') ORDER BY id",
        )
        .db()?;
    let rows = stmt
        .query_map(
            params![newer.repo, newer.branch, newer.commit, newer.id],
            |r| r.get(0),
        )
        .db()?;
    rows.collect::<Result<Vec<_>, _>>().db()
}

/// Builds recorded as running: after a restart, orphans of a dead instance.
pub fn running(conn: &Connection) -> Result<Vec<Build>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM builds WHERE status = 'running' ORDER BY id"
        ))
        .db()?;
    let rows = stmt.query_map([], from_row).db()?;
    rows.collect::<Result<Vec<_>, _>>().db()
}

/// Filters and page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub repo: Option<String>,
    pub branch: Option<String>,
    pub status: Option<Status>,
    pub before: Option<i64>,
    pub limit: u32,
}

/// Builds newest first. Only the filters present appear in the SQL, so every
/// combination is answered from an index in id order (keyset pagination, no
/// offset scans).
pub fn list(conn: &Connection, query: &ListQuery) -> Result<Vec<Build>, StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM builds WHERE 1");
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(repo) = &query.repo {
        values.push(repo.clone().into());
        sql.push_str(&format!(" AND repo_name = ?{}", values.len()));
    }
    if let Some(branch) = &query.branch {
        values.push(branch.clone().into());
        sql.push_str(&format!(" AND branch = ?{}", values.len()));
    }
    if let Some(status) = query.status {
        values.push(status.as_str().to_string().into());
        sql.push_str(&format!(" AND status = ?{}", values.len()));
    }
    if let Some(before) = query.before {
        values.push(before.into());
        sql.push_str(&format!(" AND id < ?{}", values.len()));
    }
    values.push(i64::from(query.limit).into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", values.len()));
    let mut stmt = conn.prepare_cached(&sql).db()?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(values), from_row)
        .db()?;
    rows.collect::<Result<Vec<_>, _>>().db()
}

/// The newest build of `repo`, of any branch.
pub fn latest_of_repo(conn: &Connection, repo: &str) -> Result<Option<Build>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM builds WHERE repo_name = ?1 ORDER BY id DESC LIMIT 1"
    ))
    .db()?
    .query_row([repo], from_row)
    .optional()
    .db()
}

/// The latest build of each branch of `repo`.
pub fn latest_per_branch(conn: &Connection, repo: &str) -> Result<Vec<Build>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM builds WHERE id IN \
             (SELECT MAX(id) FROM builds WHERE repo_name = ?1 GROUP BY branch)"
        ))
        .db()?;
    let rows = stmt.query_map([repo], from_row).db()?;
    rows.collect::<Result<Vec<_>, _>>().db()
}

/// The latest build of `branch` of `repo`, if any.
pub fn latest_of_branch(
    conn: &Connection,
    repo: &str,
    branch: &str,
) -> Result<Option<Build>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM builds WHERE repo_name = ?1 AND branch = ?2 \
         ORDER BY id DESC LIMIT 1"
    ))
    .db()?
    .query_row(params![repo, branch], from_row)
    .optional()
    .db()
}

/// The queued and running builds of `branch` (a branch or a pull
/// request's head ref) of `repo`.
pub fn live_of(conn: &Connection, repo: &str, branch: &str) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id FROM builds WHERE repo_name = ?1 AND branch = ?2 \
             AND status IN ('queued', 'running') ORDER BY id",
        )
        .db()?;
    let rows = stmt.query_map(params![repo, branch], |r| r.get(0)).db()?;
    rows.collect::<Result<Vec<_>, _>>().db()
}

/// Whether any build of repository `repo` is recorded.
pub fn any_build_of(conn: &Connection, repo: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM builds WHERE repo_name = ?1)")
        .db()?
        .query_row([repo], |r| r.get(0))
        .db()
}

/// Numbers of queued and running builds.
pub fn counts(conn: &Connection) -> Result<(i64, i64), StoreError> {
    let count = |status: &str| -> Result<i64, StoreError> {
        conn.prepare_cached("SELECT COUNT(*) FROM builds WHERE status = ?1")
            .db()?
            .query_row([status], |r| r.get(0))
            .db()
    };
    Ok((count("queued")?, count("running")?))
}

/// One attempt of a build, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempt: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub exit_code: Option<i64>,
    pub outcome: Option<String>,
    pub log_bytes: i64,
    pub log_truncated: bool,
    pub log_deleted: bool,
    /// The machines its derivations were built on: remote builders' URIs
    /// and `local`; empty when it built nothing.
    pub machines: Vec<String>,
}

/// The attempts of a build, oldest first.
pub fn attempts(conn: &Connection, id: i64) -> Result<Vec<Attempt>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT attempt, started_at, finished_at, exit_code, outcome, log_bytes, log_truncated, \
             log_deleted_at IS NOT NULL, machines FROM build_attempts WHERE build_id = ?1 \
             ORDER BY attempt",
        )
        .db()?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(Attempt {
                attempt: r.get(0)?,
                started_at: format_ms(r.get(1)?),
                finished_at: r.get::<_, Option<i64>>(2)?.map(format_ms),
                exit_code: r.get(3)?,
                outcome: r.get(4)?,
                log_bytes: r.get(5)?,
                log_truncated: r.get(6)?,
                log_deleted: r.get(7)?,
                machines: r
                    .get::<_, Option<String>>(8)?
                    .and_then(|m| serde_json::from_str(&m).ok())
                    .unwrap_or_default(),
            })
        })
        .db()?;
    rows.collect::<Result<Vec<_>, _>>().db()
}
