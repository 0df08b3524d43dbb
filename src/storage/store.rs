//! SQLite storage: connections, applying the migrations (`migrations.rs`)
//! and the threads that run every statement away from the async executor.
//!
//! All writes go through one dedicated writer thread. It takes every job that
//! is waiting, runs each in its own savepoint inside a single
//! `BEGIN IMMEDIATE` transaction and commits once with `synchronous=FULL`:
//! one fsync acknowledges a whole batch, so durable enqueues scale with
//! concurrency instead of being bounded by the disk's fsync rate. Reads run
//! on the blocking pool with their own connections (WAL lets them proceed
//! while the writer commits).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use tokio::sync::oneshot;

use super::migrations::MIGRATIONS;

/// How long a statement waits for a lock held by another process.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 256;

/// Reads that run at once, each with its own connection (three descriptors:
/// the database, its WAL and shared memory). Bounded so that neither the
/// blocking pool nor the descriptors can be used up by readers however
/// many clients ask at once; the others wait their turn.
pub const READERS: usize = 8;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database stayed locked longer than the busy timeout.
    #[error("the database is busy (locked by another process)")]
    Busy,
    /// The disk is full.
    #[error("the disk holding the database is full")]
    Full,
    /// Any other SQLite failure.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database file or its directory could not be prepared.
    #[error("cannot open database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    /// The database was migrated by a newer procurator-ci: this one does not
    /// know its schema and must not write to it.
    #[error(
        "the database {path} has schema version {found}, and this procurator-ci knows \
         versions up to {known}: a newer procurator-ci migrated it. Run that version again, or \
         restore the backup taken before the upgrade (docs/nixos.md, \"Upgrades and backups\")"
    )]
    Newer {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    /// The writer thread is gone (the daemon is shutting down).
    #[error("the database writer has stopped")]
    Closed,
    /// The batch this write belonged to failed to commit.
    #[error("database commit failed: {0}")]
    Commit(String),
}

impl StoreError {
    fn classify(error: rusqlite::Error) -> StoreError {
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
            Some(ErrorCode::DiskFull) => StoreError::Full,
            _ => StoreError::Sqlite(error),
        }
    }

    /// The same failure, for every job of a batch that failed to commit.
    fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Busy => StoreError::Busy,
            StoreError::Full => StoreError::Full,
            StoreError::Closed => StoreError::Closed,
            other => StoreError::Commit(other.to_string()),
        }
    }
}

/// Converts rusqlite errors and classifies busy and full databases, for use
/// with `?` inside jobs.
pub trait SqlResultExt<T> {
    /// See the trait documentation.
    fn db(self) -> Result<T, StoreError>;
}

impl<T> SqlResultExt<T> for Result<T, rusqlite::Error> {
    fn db(self) -> Result<T, StoreError> {
        self.map_err(StoreError::classify)
    }
}

/// Given the batch's commit outcome, delivers a job's reply.
type Finisher = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// Runs against the batch's connection (`None` when the batch could not even
/// start) and returns what to do once the batch commits or fails.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Finisher + Send>;

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Job>>>,
    readers: Mutex<Vec<Connection>>,
    /// Admits [`READERS`] reads at once.
    reading: Arc<tokio::sync::Semaphore>,
    reserve: Arc<Reserve>,
}

/// Space set aside on the database's filesystem so that the end of a build
/// can still be recorded when something (a build's log, another program)
/// fills the disk: a preallocated file beside the database, `<db>-reserve`.
/// When free space runs low the writer deletes it before writing; while it
/// is gone new work is refused (`Store::space_low`) and the file is made
/// again as soon as there is room for it.
struct Reserve {
    path: PathBuf,
    dir: PathBuf,
    present: AtomicBool,
    last_try: Mutex<Option<Instant>>,
}

/// Size of the reserve.
pub const RESERVE_BYTES: u64 = 8 << 20;

/// Below this much free space the reserve is released.
pub const LOW_WATER_BYTES: u64 = 2 << 20;

impl Reserve {
    fn new(db: &Path) -> Reserve {
        let mut name = db.file_name().unwrap_or_default().to_os_string();
        name.push("-reserve");
        let reserve = Reserve {
            path: db.with_file_name(name),
            dir: db.parent().map(Path::to_path_buf).unwrap_or_default(),
            present: AtomicBool::new(false),
            last_try: Mutex::new(None),
        };
        reserve.restore();
        reserve
    }

    fn tmp_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(".tmp");
        PathBuf::from(name)
    }

    /// Free bytes on the filesystem, for unprivileged users.
    fn free(&self) -> Option<u64> {
        rustix::fs::statvfs(&self.dir)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Makes the reserve file when there is room for it and a margin.
    fn restore(&self) {
        if let Ok(meta) = std::fs::metadata(&self.path)
            && meta.len() >= RESERVE_BYTES
        {
            self.present.store(true, Ordering::Relaxed);
            return;
        }
        if self
            .free()
            .is_some_and(|free| free < RESERVE_BYTES + 2 * LOW_WATER_BYTES)
        {
            return;
        }
        let made = (|| -> std::io::Result<()> {
            let tmp = self.tmp_path();
            let file = std::fs::File::create(&tmp)?;
            let allocated =
                rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, RESERVE_BYTES);
            if allocated.is_err() {
                // Filesystems without fallocate: real blocks of zeros.
                let zeros = vec![0u8; 1 << 20];
                let mut file = &file;
                for _ in 0..RESERVE_BYTES / zeros.len() as u64 {
                    std::io::Write::write_all(&mut file, &zeros)?;
                }
            }
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        match made {
            Ok(()) => {
                if !self.present.swap(true, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), "Disk space reserve in place");
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(self.tmp_path());
                tracing::warn!(path = %self.path.display(), error = %e, "cannot make the disk space reserve");
            }
        }
    }

    /// Before a write: releases the reserve when space is low, restores it
    /// (at most once a second) when space has returned.
    fn before_write(&self) {
        if self.present.load(Ordering::Relaxed) {
            if self.free().is_some_and(|free| free < LOW_WATER_BYTES) {
                self.release();
            }
            return;
        }
        let mut last = self.last_try.lock().expect("reserve");
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
        drop(last);
        self.restore();
    }

    fn release(&self) {
        if self.present.swap(false, Ordering::Relaxed) {
            let _ = std::fs::remove_file(&self.path);
            tracing::error!(
                path = %self.path.display(),
                "The disk holding the database is full: released the space reserve so that \
                 builds' results can be recorded; new builds are refused until space is freed"
            );
        }
    }

    /// Whether the disk is too full for new work: the reserve is gone and
    /// there is no room to make it again, or hardly any space is left.
    fn low(&self) -> bool {
        let free = self.free();
        if self.present.load(Ordering::Relaxed) {
            return free.is_some_and(|f| f < LOW_WATER_BYTES);
        }
        free.is_some_and(|f| f < RESERVE_BYTES + 2 * LOW_WATER_BYTES)
    }
}

/// The schema version this binary migrates to.
pub fn schema_version() -> usize {
    MIGRATIONS.len()
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).db()?;
    // Plans that do not depend on bound values. Without this, SQLite (built
    // with STAT4) re-prepares a cached statement at every execution whose
    // parameters it might plan around — a `LIMIT ?`, or any `column = ?`
    // next to the partial index on live builds — and parsing the SQL again
    // cost more than running it (benches/: list latency).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .db()?;
    conn.pragma_update(None, "foreign_keys", "ON").db()?;
    conn.pragma_update(None, "synchronous", "FULL").db()?;
    Ok(())
}

fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    configure(&conn)?;
    Ok(conn)
}

/// Applies every migration newer than the database's `user_version`, each in
/// its own immediate transaction. Returns how many were applied. A database
/// of a newer schema than this binary knows is refused, untouched: an older
/// binary (a rollback) would otherwise write rows the newer schema's
/// invariants do not expect.
pub fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let mut applied = 0;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db()?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).db()?;
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::Newer {
                path: conn_path(&tx),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        let Some(sql) = MIGRATIONS.get(version as usize) else {
            return Ok(applied);
        };
        tx.execute_batch(sql).db()?;
        tx.pragma_update(None, "user_version", version + 1).db()?;
        tx.commit().db()?;
        applied += 1;
    }
}

fn conn_path(conn: &Connection) -> PathBuf {
    PathBuf::from(conn.path().unwrap_or_default())
}

/// Writes a consistent copy of the database at `database` to `into` (which
/// must not exist) with `VACUUM INTO`, from a read transaction: the daemon
/// may go on writing meanwhile (WAL), and the copy is the database as of one
/// instant, compacted, without a WAL of its own. Returns its schema version.
pub fn snapshot(database: &Path, into: &Path) -> Result<i64, StoreError> {
    let conn = open_connection(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .db()?;
    conn.execute("VACUUM INTO ?1", [into.to_string_lossy()])
        .db()?;
    Ok(version)
}

impl Store {
    /// Opens (creating if needed) the database, switches it to WAL, runs the
    /// migrations and starts the writer thread. Blocking: call it from a
    /// blocking context.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let mut writer = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .db()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                reason: format!("cannot enable WAL (journal_mode is {mode})"),
            });
        }
        migrate(&mut writer)?;
        // Statistics for the planner, refreshed where they are stale (cheap
        // when they are not): without them SQLite may pick an index that
        // makes a scan of many branches quadratic.
        writer
            .execute_batch("PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002;")
            .db()?;
        let reserve = Arc::new(Reserve::new(path));
        let (sender, receiver) = mpsc::channel::<Job>();
        let writer_reserve = reserve.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, receiver, &writer_reserve))
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(Some(sender)),
                readers: Mutex::new(Vec::new()),
                reading: Arc::new(tokio::sync::Semaphore::new(READERS)),
                reserve,
            }),
        })
    }

    /// Whether the disk holding the database is too full to take new work
    /// (see `Reserve`): callers refuse new builds and repositories then, so
    /// that what remains records the ends of running builds.
    pub fn space_low(&self) -> bool {
        self.inner.reserve.low()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `job` on the writer thread inside a savepoint of the current
    /// batch; it is durable (fsynced) when this returns `Ok`. A job returning
    /// `Err` has its changes rolled back and does not affect the others.
    pub async fn write<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_then(job, |_: &mut T| {}, |_: &T| {}).await
    }

    /// `write` for state kept in memory beside the database: `apply` runs
    /// with the job's result on the writer thread as soon as the job has
    /// succeeded, just before its batch commits, so the `apply` of all
    /// writes run one at a time in the order of their changes, and nobody
    /// reads the change from the database before it is in memory. Should
    /// the commit then fail, `undo` runs with the result.
    pub async fn write_then<T, F, A, U>(&self, job: F, apply: A, undo: U) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        A: FnOnce(&mut T) + Send + 'static,
        U: FnOnce(&T) + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let sender = self
            .inner
            .writer
            .lock()
            .expect("writer lock")
            .clone()
            .ok_or(StoreError::Closed)?;
        let boxed: Job = Box::new(move |conn: Option<&Connection>| {
            let mut result = conn.map(|conn| in_savepoint(conn, job));
            if let Some(Ok(value)) = &mut result {
                apply(value);
            }
            Box::new(move |commit: Result<(), &StoreError>| {
                let reply_value = match (commit, result) {
                    (Ok(()), Some(result)) => result,
                    (Err(e), result) => {
                        if let Some(Ok(value)) = &result {
                            undo(value);
                        }
                        Err(e.duplicate())
                    }
                    (Ok(()), None) => Err(StoreError::Closed),
                };
                // A cancelled request may have dropped the receiver; the
                // write's fate is already decided either way.
                let _ = reply.send(reply_value);
            })
        });
        sender.send(boxed).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a read-only `job` on the blocking pool with a reader connection.
    pub async fn read<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // Held by the job itself: a caller that stops waiting does not free
        // its place before the read ends.
        let permit = self
            .inner
            .reading
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = match inner.readers.lock().expect("reader pool").pop() {
                Some(conn) => conn,
                None => open_connection(
                    &inner.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?,
            };
            let result = job(&conn);
            inner.readers.lock().expect("reader pool").push(conn);
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Stops accepting writes; queued writes still complete.
    pub fn close(&self) {
        self.inner.writer.lock().expect("writer lock").take();
    }
}

/// A job's changes live in a savepoint so that a failing job rolls back only
/// itself and leaves the rest of the batch intact.
fn in_savepoint<T>(
    conn: &Connection,
    job: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT job").db()?;
    match job(conn) {
        Ok(value) => {
            conn.execute_batch("RELEASE job").db()?;
            Ok(value)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job").db()?;
            Err(e)
        }
    }
}

fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Job>, reserve: &Reserve) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        reserve.before_write();
        run_batch(&conn, batch, reserve);
    }
}

/// Replies are held until the batch is durable, so no caller is told "done"
/// about a write that a failed commit then discarded.
fn run_batch(conn: &Connection, batch: Vec<Job>, reserve: &Reserve) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = StoreError::classify(e);
        tracing::warn!(error = %error, "cannot start a write transaction");
        for job in batch {
            job(None)(Err(&error));
        }
        return;
    }
    let finishers: Vec<Finisher> = batch.into_iter().map(|job| job(Some(conn))).collect();
    // The disk may have filled while the jobs ran.
    reserve.before_write();
    let outcome = conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::classify(e)
    });
    if let Err(error) = &outcome {
        tracing::warn!(error = %error, "write transaction failed to commit");
        if matches!(error, StoreError::Full) {
            // The next batch at least has room.
            reserve.release();
        }
    }
    for finish in finishers {
        finish(outcome.as_ref().map(|_| ()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_database_is_migrated_on_open_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ci.db");
        let mut conn = Connection::open(&path).unwrap();
        // The database of the first release: its migration only.
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        tx.commit().unwrap();
        conn.execute(
            "INSERT INTO repos (name, path, description, created_at) VALUES ('kept', '/r', 'old', 0)",
            [],
        )
        .unwrap();
        drop(conn);
        Store::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, schema_version());
        let name: String = conn
            .query_row("SELECT name FROM repos", [], |r| r.get(0))
            .unwrap();
        assert_eq!(name, "kept");
    }

    #[test]
    fn a_database_of_a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ci.db");
        drop(Store::open(&path).unwrap());
        let newer = schema_version() as i64 + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let err = Store::open(&path)
            .err()
            .expect("a newer database is refused");
        let text = err.to_string();
        assert!(
            matches!(err, StoreError::Newer { found, .. } if found == newer),
            "{text}"
        );
        assert!(
            text.contains("newer procurator-ci") && text.contains("backup"),
            "{text}"
        );
        let version: i64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, newer, "untouched");
    }

    #[test]
    fn a_snapshot_is_a_consistent_database_without_a_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ci.db");
        drop(Store::open(&path).unwrap());
        let writer = Connection::open(&path).unwrap();
        writer
            .execute(
                "INSERT INTO repos (name, path, description, created_at) VALUES ('a', '/a', '', 0)",
                [],
            )
            .unwrap();
        // A write transaction left open while the snapshot is taken.
        writer.execute_batch("BEGIN IMMEDIATE; INSERT INTO repos (name, path, description, created_at) VALUES ('b', '/b', '', 0);").unwrap();
        let copy = dir.path().join("copy.db");
        assert_eq!(snapshot(&path, &copy).unwrap() as usize, schema_version());
        writer.execute_batch("COMMIT").unwrap();
        let conn = Connection::open(&copy).unwrap();
        let names: Vec<String> = conn
            .prepare("SELECT name FROM repos ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            names,
            ["a"],
            "the committed rows, not the open transaction's"
        );
        assert!(!dir.path().join("copy.db-wal").exists());
    }

    #[test]
    fn migrates_empty_database_once_with_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ci.db");
        let store = Store::open(&path).unwrap();
        drop(store);
        let mut conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, schema_version());
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(migrate(&mut conn).unwrap(), 0, "re-running applies nothing");
        Store::open(&path).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('repos', 'builds', 'build_attempts')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 3);
    }

    #[tokio::test]
    async fn batched_writes_roll_back_only_the_failing_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ci.db")).unwrap();
        let insert = |name: &'static str| {
            let store = store.clone();
            async move {
                store
                    .write(move |conn| {
                        conn.execute(
                            "INSERT INTO repos (name, path, created_at) VALUES (?1, '/x', 0)",
                            [name],
                        )
                        .db()
                    })
                    .await
            }
        };
        let (a, b, c) = tokio::join!(insert("a"), insert("a"), insert("b"));
        assert_eq!(
            [a.is_ok(), b.is_ok(), c.is_ok()]
                .iter()
                .filter(|ok| **ok)
                .count(),
            2,
            "the duplicate fails alone"
        );
        let count: i64 = store
            .read(|conn| {
                conn.query_row("SELECT COUNT(*) FROM repos", [], |r| r.get(0))
                    .db()
            })
            .await
            .unwrap();
        assert_eq!(count, 2);
    }
}
