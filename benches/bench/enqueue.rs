//! The durable enqueue rate over keep-alive connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::support::*;
use crate::{Ctx, Row, blocking_nix, ms, post_build, ratio};

/// Durable enqueue rate: concurrent keep-alive POST /api/builds of
/// distinct commits.
pub(crate) fn enqueue_rate(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("enqueue");
    let nix = blocking_nix(&dir)?;
    let (floor_rate, floor_latency) = sqlite_floor(&dir, Duration::from_secs(3))?;
    // No periodic scan: it would queue the branches made below itself.
    let mut d = Daemon::configure(
        &dir,
        &format!(
            "nix_bin = \"{}\"\nscan_interval_secs = 86400\n",
            nix.display()
        ),
    )?;
    d.spawn()?;
    let repo = d.create_repo("rate")?;
    let commits = fast_import(&repo, "bench", 60_000, &flake("echo ok > $out", "rate"))?;
    let names = Arc::new(make_branches(&repo, "rate", &commits)?);
    let commits = Arc::new(commits);
    let token = Arc::new(d.token());
    let port = d.port;
    let used = Arc::new(AtomicUsize::new(0));
    let run = |connections: usize, seconds: u64, cap: usize| -> Res<Load> {
        let base = used.load(Ordering::SeqCst);
        let (commits, names, token) = (commits.clone(), names.clone(), token.clone());
        let limit = cap.min(commits.len() - base);
        let make: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync> =
            Arc::new(move |i| post_build(&token, "rate", &names[base + i], &commits[base + i]));
        let result = ctx.rt.block_on(load(
            port,
            connections,
            Duration::from_secs(seconds),
            limit,
            make,
            |s| s == 201,
        ))?;
        used.fetch_add(result.requests, Ordering::SeqCst);
        Ok(result)
    };
    run(8, 2, 500)?;
    let mut sweep = Vec::new();
    for connections in [1, 4, 16, 64] {
        let r = run(connections, 4, 15_000)?;
        eprintln!(
            "   {connections} connections: {:.0}/s p50 {} p99 {} errors {}",
            r.rate,
            ms(r.latency_ms.p50),
            ms(r.latency_ms.p99),
            r.errors
        );
        sweep.push(r);
    }
    let (_, queued) = d.get("/api/builds?repo=rate&status=queued&limit=1")?;
    d.stop();
    let main = sweep
        .iter()
        .find(|r| r.connections == 16)
        .cloned()
        .unwrap_or_default();
    let others = sweep
        .iter()
        .map(|r| {
            format!(
                "{} conn: {:.0}/s, p99 {}",
                r.connections,
                r.rate,
                ms(r.latency_ms.p99)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let errors: usize = sweep.iter().map(|r| r.errors).sum();
    Ok(vec![Row {
        figure: "durable enqueue rate (16 keep-alive clients)".into(),
        measured: format!(
            "{:.0}/s · p50 {} · p99 {}",
            main.rate,
            ms(main.latency_ms.p50),
            ms(main.latency_ms.p99)
        ),
        floor: format!(
            "{:.0} commits/s (raw rusqlite, FULL, one row per commit; p50 {})",
            floor_rate,
            ms(floor_latency.p50)
        ),
        ratio: ratio(main.rate, floor_rate),
        goal: "≥ 1,000/s with p99 ≤ 20 ms".into(),
        met: Some(main.rate >= 1000.0 && main.latency_ms.p99 <= 20.0 && main.errors == 0),
        note: format!(
            "distinct commits, every answer a 201 ({errors} errors); one worker held by a blocking \
             nix stand-in so the daemon does only this. Sweep: {others}. Newest queued id after: {}",
            queued["builds"][0]["id"]
        ),
        load: 0.0,
        data: json!({"sweep": sweep, "floor_commits_per_s": floor_rate, "floor_commit_ms": floor_latency}),
    }])
}

/// Enqueues back to back on one branch: each new commit supersedes the
/// build before it, which a worker is running (a blocking nix stand-in),
/// against the same enqueues with `cancel_superseded = false`.
pub(crate) fn supersede_latency(ctx: &Ctx) -> Res<Vec<Row>> {
    const ENQUEUES: usize = 200;
    let mut measured = Vec::new();
    for superseding in [true, false] {
        let dir = ctx.root.join(format!("supersede-{superseding}"));
        let nix = blocking_nix(&dir)?;
        let mut d = Daemon::configure(
            &dir,
            &format!(
                "nix_bin = \"{}\"\nscan_interval_secs = 86400\ncancel_superseded = {superseding}\n",
                nix.display()
            ),
        )?;
        d.spawn()?;
        let repo = d.create_repo("burst")?;
        let commits = fast_import(
            &repo,
            "main",
            ENQUEUES + 1,
            &flake("echo ok > $out", "burst"),
        )?;
        let token = d.token();
        let port = d.port;
        // The first build runs before the burst starts: every enqueue then
        // finds a running build to supersede (or, without, a queue).
        let first = post_build(&token, "burst", "main", &commits[0]);
        let latencies = ctx.rt.block_on(async {
            let mut conn = Conn::connect(port).await.map_err(err("connect"))?;
            let (status, _) = conn.call(&first).await.map_err(err("first enqueue"))?;
            if status != 201 {
                return Err(format!("first enqueue answered {status}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut latencies = Vec::with_capacity(ENQUEUES);
            for commit in &commits[1..] {
                let request = post_build(&token, "burst", "main", commit);
                let t = std::time::Instant::now();
                let (status, body) = conn.call(&request).await.map_err(err("enqueue"))?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                if status != 201 {
                    return Err(format!(
                        "enqueue answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
            }
            Ok(latencies)
        })?;
        let (_, cancelled) = d.get("/api/builds?repo=burst&status=cancelled&limit=500")?;
        let cancelled = cancelled["builds"].as_array().map_or(0, Vec::len);
        d.stop();
        let summary = summary(&latencies);
        eprintln!(
            "   superseding {superseding}: p50 {} p99 {} ({cancelled} cancelled)",
            ms(summary.p50),
            ms(summary.p99)
        );
        measured.push((summary, cancelled));
    }
    let ((with, cancelled), (without, _)) = (measured[0], measured[1]);
    Ok(vec![Row {
        figure: format!(
            "enqueue latency superseding a running build ({ENQUEUES} back to back, one branch)"
        ),
        measured: format!("p50 {} · p99 {}", ms(with.p50), ms(with.p99)),
        floor: format!(
            "p50 {} · p99 {} (the same enqueues with cancel_superseded = false)",
            ms(without.p50),
            ms(without.p99)
        ),
        ratio: ratio(with.p50, without.p50),
        goal: "p50 ≤ 10 ms: the answer does not wait for the superseded build to stop".into(),
        met: Some(with.p50 <= 10.0),
        note: format!(
            "one keep-alive client; a worker runs each newest build (a blocking nix stand-in) \
             until the next enqueue supersedes it, then stops it, records its end and claims \
             the next one on the same 2 cores while the client goes on; {cancelled} builds had \
             ended cancelled when it was counted"
        ),
        load: 0.0,
        data: json!({"superseding_ms": with, "without_ms": without, "cancelled": cancelled}),
    }])
}
