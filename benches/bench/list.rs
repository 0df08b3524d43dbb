//! The build list over a million builds.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;
use crate::{Ctx, Row, mix, ms, ratio};

/// Fills a migrated database with `n` finished builds over 20 repositories.
pub(crate) fn seed(db: &Path, n: u64) -> Res<()> {
    let mut conn = rusqlite::Connection::open(db).map_err(err("seed open"))?;
    conn.pragma_update(None, "synchronous", "OFF")
        .map_err(err("seed pragma"))?;
    conn.pragma_update(None, "cache_size", -262_144)
        .map_err(err("seed pragma"))?;
    let tx = conn.transaction().map_err(err("seed begin"))?;
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO builds (repo_name, repo_path, commit_hash, branch, status, retry_count, \
                 max_retries, created_at, started_at, finished_at, author, trigger, attempts, exit_code, \
                 failure_kind, failure_summary, outputs) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, 3, ?6, ?7, ?8, ?9, 'push', 1, ?10, ?11, ?12, ?13)",
            )
            .map_err(err("seed prepare"))?;
        let base = epoch_ms() as i64 - n as i64 * 1000;
        let branches = [
            "main",
            "develop",
            "feature/login",
            "feature/api",
            "release/1.2",
        ];
        let outputs = r#"{"checks":{"x86_64-linux":["bench","lint","fmt"]},"packages":{"x86_64-linux":["default"]},"devShells":{"x86_64-linux":["default"]}}"#;
        for i in 0..n {
            let r = mix(i);
            let repo = format!("repo-{:02}", i % 20);
            let commit = format!("{:016x}{:016x}{:08x}", mix(r), mix(r + 1), r as u32);
            let (status, exit, kind, summary) = match r % 100 {
                0..=84 => ("success", Some(0), None, None),
                85..=96 => ("failed", Some(1), Some("check"), Some("failed: lint")),
                _ => ("cancelled", None, None, None),
            };
            let created = base + i as i64 * 1000;
            stmt.execute(rusqlite::params![
                repo,
                format!("/var/lib/procurator-ci/repos/{repo}.git"),
                commit,
                branches[(r >> 8) as usize % branches.len()],
                status,
                created,
                created + 40,
                created + 40 + (r % 120_000) as i64,
                "Bench Author <bench@example.org>",
                exit,
                kind,
                summary,
                outputs,
            ])
            .map_err(err("seed insert"))?;
        }
    }
    tx.commit().map_err(err("seed commit"))?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(err("seed checkpoint"))?;
    Ok(())
}

/// List latency on a database seeded with 1,000,000 builds.
pub(crate) fn list(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("list");
    let mut d = Daemon::configure(&dir, "nix_bin = \"/bin/true\"\n")?;
    d.spawn()?;
    d.stop();
    let db = d.state().join("ci.db");
    let t = Instant::now();
    seed(&db, 1_000_000)?;
    eprintln!(
        "   seeded 1,000,000 builds in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    d.spawn()?;
    let port = d.port;
    let get = |path: &'static str| -> Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> {
        Arc::new(move |_| request_bytes("GET", path, None, None))
    };
    const C: usize = 8;
    let secs = Duration::from_secs(5);
    let run = |path: &'static str, ok: fn(u16) -> bool| -> Res<Load> {
        ctx.rt.block_on(load(
            port,
            C,
            Duration::from_millis(500),
            1_000_000,
            get(path),
            ok,
        ))?;
        let r = ctx
            .rt
            .block_on(load(port, C, secs, 1_000_000, get(path), ok))?;
        eprintln!(
            "   {path}: {:.0}/s p50 {} p99 {} errors {}",
            r.rate,
            ms(r.latency_ms.p50),
            ms(r.latency_ms.p99),
            r.errors
        );
        Ok(r)
    };
    let floor = run("/api/no-such-route", |s| s == 404)?;
    let all = run("/api/builds?limit=50", |s| s == 200)?;
    let repo = run("/api/builds?limit=50&repo=repo-07", |s| s == 200)?;
    let (_, sample) = d.get("/api/builds?limit=50&repo=repo-07")?;
    let bytes = sample.to_string().len();
    let returned = sample["builds"].as_array().map_or(0, Vec::len);
    let mem = d.mem();
    d.stop();
    // The same query without HTTP, for reference.
    let sql = {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(err("open"))?;
        let mut stmt = conn
            .prepare("SELECT * FROM builds WHERE repo_name = ?1 ORDER BY id DESC LIMIT 50")
            .map_err(err("prepare"))?;
        let mut times = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            let n = stmt
                .query_map(["repo-07"], |r| r.get::<_, i64>(0))
                .map_err(err("query"))?
                .count();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if n != 50 {
                return Err(format!("the raw query returned {n} rows"));
            }
        }
        summary(&times)
    };
    if returned != 50 {
        return Err(format!("the filtered list returned {returned} builds"));
    }
    let row = |figure: &str, r: &Load| Row {
        figure: figure.into(),
        measured: format!("{:.0} req/s · p99 {}", r.rate, ms(r.latency_ms.p99)),
        floor: format!(
            "{:.0} req/s · p99 {} (404 route, same client)",
            floor.rate,
            ms(floor.latency_ms.p99)
        ),
        ratio: ratio(r.rate, floor.rate),
        goal: "≥ 5,000 req/s, p99 ≤ 10 ms".into(),
        met: Some(r.rate >= 5000.0 && r.latency_ms.p99 <= 10.0 && r.errors == 0),
        note: format!(
            "{C} keep-alive clients for 5 s; 50 builds ≈ {} KiB of JSON per answer; the bare SQL \
             query takes p50 {} in-process; daemon RSS after: {:.1} MiB",
            bytes / 1024,
            ms(sql.p50),
            mib(mem.rss_kib)
        ),
        load: 0.0,
        data: json!({"load": r, "floor": floor, "sql_ms": sql, "response_bytes": bytes, "rss_kib": mem.rss_kib}),
    };
    Ok(vec![
        row("list `?limit=50` (1,000,000 builds)", &all),
        row("list `?limit=50&repo=` (1,000,000 builds)", &repo),
    ])
}
