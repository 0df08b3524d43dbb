//! Retention: logs older than `log_retention_days` are deleted.

use std::fs;
use std::io;
use std::sync::Arc;

use super::LogStore;
use crate::build::queue::now_ms;
use crate::storage::store::{SqlResultExt, Store, StoreError};

impl LogStore {
    /// Deletes both files of an attempt.
    fn remove(&self, build: i64, attempt: i64) -> io::Result<()> {
        for path in [
            self.plain_path(build, attempt),
            self.compressed_path(build, attempt),
        ] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let dir = self.dir.join(build.to_string());
        let _ = fs::remove_dir(dir);
        Ok(())
    }
}

/// Deletes the logs of attempts that ended before `now - days` and marks
/// them deleted; builds, attempts and newer logs are untouched. Returns how
/// many attempts' logs were deleted.
pub async fn prune(
    store: &Store,
    logs: &Arc<LogStore>,
    days: u32,
    now: i64,
) -> Result<usize, StoreError> {
    if days == 0 {
        return Ok(0);
    }
    let cutoff = now - i64::from(days) * 86_400_000;
    let doomed: Vec<(i64, i64)> = store
        .read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT build_id, attempt FROM build_attempts \
                     WHERE finished_at < ?1 AND log_deleted_at IS NULL",
                )
                .db()?;
            let rows = stmt
                .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))
                .db()?;
            rows.collect::<Result<Vec<_>, _>>().db()
        })
        .await?;
    if doomed.is_empty() {
        return Ok(0);
    }
    let logs = logs.clone();
    let removed = tokio::task::spawn_blocking(move || {
        doomed
            .into_iter()
            .filter(|(build, attempt)| match logs.remove(*build, *attempt) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(build_id = build, attempt, error = %e, "cannot delete an expired log");
                    false
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|_| StoreError::Closed)?;
    let count = removed.len();
    store
        .write(move |conn| {
            let deleted_at = now_ms();
            for (build, attempt) in &removed {
                conn.prepare_cached(
                    "UPDATE build_attempts SET log_deleted_at = ?3 WHERE build_id = ?1 AND attempt = ?2",
                )
                .db()?
                .execute(rusqlite::params![build, attempt, deleted_at])
                .db()?;
            }
            Ok(())
        })
        .await?;
    Ok(count)
}
