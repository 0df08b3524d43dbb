//! The database's schema as the migrations that make it, in order; the
//! store applies them (`store::migrate`).

/// Embedded migrations; the database's `user_version` is the number applied.
/// Never edit an applied one: add a new entry.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the original design's schema, with integer millisecond timestamps.
    "CREATE TABLE repos (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        path TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL
    );
    CREATE TABLE builds (
        id INTEGER PRIMARY KEY,
        repo_id INTEGER,
        repo_name TEXT NOT NULL,
        repo_path TEXT NOT NULL,
        commit_hash TEXT NOT NULL,
        branch TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued','running','success','failed','cancelled')),
        retry_count INTEGER NOT NULL DEFAULT 0,
        max_retries INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER
    );
    CREATE TABLE build_logs (
        id INTEGER PRIMARY KEY,
        build_id INTEGER NOT NULL REFERENCES builds(id),
        log_data TEXT
    );
    CREATE INDEX builds_by_repo ON builds (repo_name, id);
    CREATE INDEX builds_by_repo_branch ON builds (repo_name, branch, id);
    CREATE INDEX builds_by_status ON builds (status, id);",
    // 2: push trigger: who pushed, why the build exists, at most one live
    // build per (repo, branch, commit), and the branch heads already built.
    "ALTER TABLE builds ADD COLUMN author TEXT;
    ALTER TABLE builds ADD COLUMN trigger TEXT NOT NULL DEFAULT 'api';
    CREATE UNIQUE INDEX builds_live_unique ON builds (repo_name, branch, commit_hash)
        WHERE status IN ('queued', 'running');
    CREATE INDEX builds_by_commit ON builds (repo_name, commit_hash);
    CREATE INDEX builds_by_branch ON builds (branch, id);",
    // 3: the worker: attempts, bounds, process groups, logs on disk.
    "ALTER TABLE builds ADD COLUMN failure_kind TEXT;
    ALTER TABLE builds ADD COLUMN failure_summary TEXT;
    ALTER TABLE builds ADD COLUMN exit_code INTEGER;
    ALTER TABLE builds ADD COLUMN not_before INTEGER;
    ALTER TABLE builds ADD COLUMN pgid INTEGER;
    ALTER TABLE builds ADD COLUMN pstart INTEGER;
    ALTER TABLE builds ADD COLUMN outputs TEXT;
    ALTER TABLE builds ADD COLUMN cancel_reason TEXT;
    ALTER TABLE builds ADD COLUMN rebuild_of INTEGER;
    ALTER TABLE builds ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE build_attempts (
        build_id INTEGER NOT NULL REFERENCES builds(id),
        attempt INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        exit_code INTEGER,
        outcome TEXT,
        log_bytes INTEGER NOT NULL DEFAULT 0,
        log_truncated INTEGER NOT NULL DEFAULT 0,
        log_compressed INTEGER NOT NULL DEFAULT 0,
        log_deleted_at INTEGER,
        PRIMARY KEY (build_id, attempt)
    );
    CREATE INDEX attempts_by_finish ON build_attempts (finished_at);
    DROP TABLE build_logs;",
    // 4: per-check results.
    "ALTER TABLE builds ADD COLUMN checks TEXT;",
    // 5: the commit message, read from the commit when the build is queued.
    "ALTER TABLE builds ADD COLUMN message TEXT;",
    // 6: what the binary cache holds and pushes (issue 16).
    "CREATE TABLE cache_builds (
        build_id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,
        branch TEXT NOT NULL,
        outputs TEXT NOT NULL,
        rooted INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        recorded_at INTEGER NOT NULL
    );
    CREATE INDEX cache_builds_by_branch ON cache_builds (repo, branch, build_id);
    CREATE TABLE cache_paths (
        hash TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        info TEXT NOT NULL,
        build_id INTEGER NOT NULL
    );
    CREATE TABLE cache_pushes (
        build_id INTEGER NOT NULL,
        target TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending','pushed','failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        next_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (build_id, target)
    );
    CREATE INDEX cache_pushes_due ON cache_pushes (status, next_at);",
    // 7: many refs at one commit (issue 25): the scan asks, per branch head,
    // whether its commit has a build on that branch or a standing one on
    // any; one seek whatever the statistics say, so it stays linear.
    "DROP INDEX builds_by_commit;
    CREATE INDEX builds_by_commit_branch ON builds (repo_name, commit_hash, branch);
    ANALYZE;",
    // 8: which machines built each attempt's derivations (issue 22): a JSON
    // array of remote builders' URIs and `local`.
    "ALTER TABLE build_attempts ADD COLUMN machines TEXT;",
    // 9: commit statuses on forges (issue 23): where each repository
    // reports, and every status a build posts, durable until delivered.
    "CREATE TABLE repo_forges (
        repo TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        declared INTEGER NOT NULL,
        since INTEGER NOT NULL
    );
    CREATE TABLE forge_statuses (
        build_id INTEGER NOT NULL,
        context TEXT NOT NULL,
        repo TEXT NOT NULL,
        sha TEXT NOT NULL,
        state TEXT NOT NULL,
        description TEXT NOT NULL,
        rank INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending','delivered','failed','superseded')),
        delivered_state TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        posts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        next_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (build_id, context)
    );
    CREATE INDEX forge_statuses_due ON forge_statuses (status, next_at);
    CREATE INDEX forge_statuses_by_context ON forge_statuses (repo, sha, context, build_id);
    CREATE INDEX forge_statuses_by_seq ON forge_statuses (seq);",
];
