//! A repository of 3,000 branches: its view (a page, gzip or not) and badge.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;
use crate::{Ctx, Row, mix, ms, ratio};

/// Branches of the wide repository of the `branches` bench.
const WIDE_BRANCHES: usize = 3_000;

/// Gives `branches` (all at `head`) `per_branch` finished builds each,
/// written straight into the stopped daemon's database as `seed` does.
fn seed_branches(
    db: &Path,
    repo: &Path,
    head: &str,
    branches: &[String],
    per_branch: u64,
) -> Res<()> {
    let mut conn = rusqlite::Connection::open(db).map_err(err("seed open"))?;
    conn.pragma_update(None, "synchronous", "OFF")
        .map_err(err("seed pragma"))?;
    let tx = conn.transaction().map_err(err("seed begin"))?;
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO builds (repo_name, repo_path, commit_hash, branch, status, retry_count, \
                 max_retries, created_at, started_at, finished_at, author, trigger, attempts, exit_code) \
                 VALUES ('wide', ?1, ?2, ?3, ?4, 0, 3, ?5, ?6, ?7, 'Bench Author <bench@example.org>', \
                 'push', 1, ?8)",
            )
            .map_err(err("seed prepare"))?;
        let base = epoch_ms() as i64 - (branches.len() as u64 * per_branch) as i64 * 1000;
        let mut i = 0u64;
        for _ in 0..per_branch {
            for branch in branches {
                let r = mix(i);
                let (status, exit) = if r.is_multiple_of(10) {
                    ("failed", 1)
                } else {
                    ("success", 0)
                };
                let created = base + i as i64 * 1000;
                stmt.execute(rusqlite::params![
                    repo.display().to_string(),
                    head,
                    branch,
                    status,
                    created,
                    created + 40,
                    created + 40 + (r % 120_000) as i64,
                    exit,
                ])
                .map_err(err("seed insert"))?;
                i += 1;
            }
        }
    }
    tx.commit().map_err(err("seed commit"))?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .map_err(err("seed checkpoint"))?;
    Ok(())
}

/// The badge and the repository view of a repository with 3,000 branches,
/// each with builds (issue 15): both answer from the view the daemon keeps
/// in memory, without a query or a process, whatever the branches.
pub(crate) fn branches(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("branches");
    let mut d = Daemon::configure(&dir, "nix_bin = \"/bin/true\"\n")?;
    d.spawn()?;
    let bare = d.create_repo("wide")?;
    let head = fast_import(&bare, "main", 1, &flake("echo ok > $out", "wide"))?.remove(0);
    let mut names = vec!["main".to_string()];
    names.extend((1..WIDE_BRANCHES).map(|i| format!("feature/branch-{i:04}")));
    let mut refs = String::new();
    for name in &names[1..] {
        refs.push_str(&format!("create refs/heads/{name} {head}\n"));
    }
    let mut update = Command::new("git")
        .arg("--git-dir")
        .arg(&bare)
        .args(["update-ref", "--stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(err("git update-ref"))?;
    {
        use std::io::Write;
        let mut stdin = update.stdin.take().expect("piped");
        stdin
            .write_all(refs.as_bytes())
            .map_err(err("git update-ref input"))?;
    }
    let status = update.wait().map_err(err("git update-ref"))?;
    if !status.success() {
        return Err(format!("git update-ref failed: {status}"));
    }
    d.stop();
    let t = Instant::now();
    seed_branches(&d.state().join("ci.db"), &bare, &head, &names, 3)?;
    eprintln!(
        "   {WIDE_BRANCHES} branches, {} builds seeded in {:.1} s",
        WIDE_BRANCHES * 3,
        t.elapsed().as_secs_f64()
    );
    d.spawn()?;
    let (status, view) = d.get("/api/repos/wide")?;
    let listed = view["branches"].as_array().map_or(0, Vec::len);
    if status != 200 || listed != 100 || view["branches_total"] != WIDE_BRANCHES {
        return Err(format!(
            "the repository view answered {status} with {listed} branches of {}",
            view["branches_total"]
        ));
    }
    // Every branch, in pages of the most, once each with its builds.
    let mut seen = std::collections::HashSet::new();
    let mut with_stats = 0;
    let mut page_bytes = 0;
    for offset in (0..WIDE_BRANCHES).step_by(1000) {
        let (status, page) = d.get(&format!(
            "/api/repos/wide?branches_offset={offset}&branches_limit=1000"
        ))?;
        let listed = page["branches"].as_array().cloned().unwrap_or_default();
        if status != 200 {
            return Err(format!("a page of 1,000 branches answered {status}"));
        }
        page_bytes = page_bytes.max(page.to_string().len());
        with_stats += listed.iter().filter(|b| b["stats"]["builds"] == 3).count();
        seen.extend(listed.iter().map(|b| b["name"].to_string()));
    }
    if seen.len() != WIDE_BRANCHES || with_stats != WIDE_BRANCHES {
        return Err(format!(
            "the pages listed {} branches, {with_stats} with 3 builds",
            seen.len()
        ));
    }
    let bytes = view.to_string().len();
    let port = d.port;
    let zipped = ctx
        .rt
        .block_on(async {
            let mut conn = Conn::connect(port).await?;
            conn.call(
                b"GET /api/repos/wide HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: gzip\r\n\r\n",
            )
            .await
        })
        .map_err(err("gzipped view"))?
        .1
        .len();
    // Two clients on two cores: latency, not throughput, is the goal.
    const C: usize = 2;
    let run = |name: &str, make: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>| -> Res<Load> {
        let ok = |s: u16| s == 200;
        ctx.rt.block_on(load(
            port,
            C,
            Duration::from_millis(500),
            1_000_000,
            make.clone(),
            ok,
        ))?;
        let r = ctx
            .rt
            .block_on(load(port, C, Duration::from_secs(4), 1_000_000, make, ok))?;
        eprintln!(
            "   {name}: {:.0}/s p50 {} p99 {} errors {}",
            r.rate,
            ms(r.latency_ms.p50),
            ms(r.latency_ms.p99),
            r.errors
        );
        if r.errors > 0 {
            return Err(format!("{name}: {} errors", r.errors));
        }
        Ok(r)
    };
    let floor = run(
        "/api/health",
        Arc::new(|_| request_bytes("GET", "/api/health", None, None)),
    )?;
    let badge_names = Arc::new(names);
    let badge = run(
        "badge",
        Arc::new(move |i| {
            let branch = &badge_names[i % badge_names.len()];
            request_bytes(
                "GET",
                &format!("/api/repos/wide/badge.svg?branch={branch}"),
                None,
                None,
            )
        }),
    )?;
    // As browsers ask for it (they accept gzip), then as a client that
    // accepts no encoding.
    let repo = run(
        "/api/repos/wide (gzip)",
        Arc::new(|_| {
            b"GET /api/repos/wide HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\
              Accept-Encoding: gzip, deflate, br, zstd\r\n\r\n"
                .to_vec()
        }),
    )?;
    let plain = run(
        "/api/repos/wide",
        Arc::new(|_| request_bytes("GET", "/api/repos/wide", None, None)),
    )?;
    let largest = run(
        "/api/repos/wide (1,000 branches)",
        Arc::new(|_| {
            request_bytes(
                "GET",
                "/api/repos/wide?branches_offset=1000&branches_limit=1000",
                None,
                None,
            )
        }),
    )?;
    let mem = d.mem();
    d.stop();
    let row = |figure: &str, r: &Load, note: String| Row {
        figure: figure.into(),
        measured: format!(
            "p50 {} · p99 {} ({:.0} req/s)",
            ms(r.latency_ms.p50),
            ms(r.latency_ms.p99),
            r.rate
        ),
        floor: format!(
            "p50 {} · p99 {} (`/api/health`, same clients)",
            ms(floor.latency_ms.p50),
            ms(floor.latency_ms.p99)
        ),
        ratio: format!("{} (p99)", ratio(r.latency_ms.p99, floor.latency_ms.p99)),
        goal: "p99 ≤ 5 ms".into(),
        met: Some(r.latency_ms.p99 <= 5.0),
        note,
        load: 0.0,
        data: json!({"load": r, "floor": floor, "rss_kib": mem.rss_kib, "response_bytes": bytes}),
    };
    Ok(vec![
        row(
            "badge (3,000 branches)",
            &badge,
            format!("{C} keep-alive clients for 4 s, each request another branch"),
        ),
        row(
            "repository view (3,000 branches, default page)",
            &repo,
            format!(
                "{C} keep-alive clients for 4 s, accepting gzip as browsers do; every branch with 3 builds; the first 100 branches: ≈ {} KiB of JSON per answer, {} KiB gzipped; daemon RSS after: {:.1} MiB",
                bytes / 1024,
                zipped / 1024,
                mib(mem.rss_kib)
            ),
        ),
        row(
            "repository view (3,000 branches, default page, no encoding)",
            &plain,
            format!(
                "the same, from a client that accepts no encoding: ≈ {} KiB per answer",
                bytes / 1024
            ),
        ),
        Row {
            goal: "-".into(),
            met: None,
            ..row(
                "repository view (3,000 branches, a page of 1,000, no encoding)",
                &largest,
                format!(
                    "the largest page (`branches_limit=1000`), put together per request: ≈ {} KiB per answer",
                    page_bytes / 1024
                ),
            )
        },
    ])
}
