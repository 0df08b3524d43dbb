//! Percentiles, the SQLite floor and the machine's load.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Conn, Res, epoch_ms, err};

/// Percentiles over samples (nearest rank).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn summary(samples: &[f64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| {
        let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[i.clamp(1, sorted.len()) - 1]
    };
    Summary {
        n: sorted.len(),
        p50: rank(50.0),
        p90: rank(90.0),
        p99: rank(99.0),
        max: sorted[sorted.len() - 1],
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
    }
}

/// A raw SQLite commit loop on the same disk: single-row `INSERT`s, each
/// its own `BEGIN IMMEDIATE … COMMIT`, WAL and `synchronous=FULL` as the
/// daemon. Returns commits per second and the latency of one commit.
pub fn sqlite_floor(dir: &Path, duration: Duration) -> Res<(f64, Summary)> {
    let path = dir.join("floor.db");
    let _ = std::fs::remove_file(&path);
    let conn = rusqlite::Connection::open(&path).map_err(err("floor db"))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
        .map_err(err("floor wal"))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err("floor sync"))?;
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, at INTEGER NOT NULL)",
    )
    .map_err(err("floor table"))?;
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(err("floor begin"))?;
        conn.execute(
            "INSERT INTO t (v, at) VALUES (?1, ?2)",
            rusqlite::params!["a build request of about this size", epoch_ms() as i64],
        )
        .map_err(err("floor insert"))?;
        conn.execute_batch("COMMIT").map_err(err("floor commit"))?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let rate = latencies.len() as f64 / start.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("floor.db{suffix}")));
    }
    Ok((rate, summary(&latencies)))
}

/// Results of a closed-loop load run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Load {
    pub connections: usize,
    pub requests: usize,
    pub errors: usize,
    pub seconds: f64,
    pub rate: f64,
    pub latency_ms: Summary,
}

/// `connections` keep-alive clients each send `make(i)` (i counts up across
/// all of them) back to back until `duration` passes or `limit` requests
/// were sent. A response whose status `ok` rejects counts as an error.
pub async fn load(
    port: u16,
    connections: usize,
    duration: Duration,
    limit: usize,
    make: std::sync::Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>,
    ok: fn(u16) -> bool,
) -> Res<Load> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = std::sync::Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, make) = (next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(port).await.map_err(err("connect"))?;
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let request = make(i);
                let t = Instant::now();
                let (status, body) = conn.call(&request).await.map_err(err("request"))?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                if !ok(status) {
                    errors += 1;
                    first_error.get_or_insert_with(|| {
                        format!("{status} {}", String::from_utf8_lossy(&body))
                    });
                }
            }
            Ok::<_, String>((latencies, errors, first_error))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first = None;
    for task in tasks {
        let (latencies, e, f) = task.await.map_err(err("load task"))??;
        all.extend(latencies);
        errors += e;
        first = first.or(f);
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(f) = first {
        eprintln!("  first error response: {f}");
    }
    Ok(Load {
        connections,
        requests: all.len(),
        errors,
        seconds,
        rate: all.len() as f64 / seconds,
        latency_ms: summary(&all),
    })
}
