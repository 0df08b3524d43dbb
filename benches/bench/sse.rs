//! Server-sent events fanned out to many subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::support::*;
use crate::{Ctx, Row, blocking_nix, ms, post_build, ratio};

/// What one fan-out run saw.
#[derive(Debug, Default, Serialize)]
struct FanOut {
    subscribers: usize,
    events: usize,
    delivered: usize,
    resyncs: usize,
    latency_ms: Summary,
    rss_before_kib: u64,
    rss_connected_kib: u64,
    rss_peak_kib: u64,
}

/// `subscribers` listen on /api/events while `events` builds are queued at
/// 10 per second; latency is delivery time minus the build's `created_ms`.
async fn fan_out(
    port: u16,
    pid: u32,
    token: &str,
    commits: &[String],
    subscribers: usize,
    prefix: &str,
) -> Res<FanOut> {
    let events = commits.len();
    let ready = Arc::new(AtomicUsize::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let rss_before = mem(pid).rss_kib;
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            let mut sse = Sse::connect(port, "/api/events")
                .await
                .map_err(err("subscribe"))?;
            ready.fetch_add(1, Ordering::SeqCst);
            let (mut latencies, mut resyncs) = (Vec::with_capacity(events), 0);
            while latencies.len() < events {
                let Ok(next) = tokio::time::timeout_at(deadline, sse.next()).await else {
                    break;
                };
                let Some(event) = next.map_err(err("events"))? else {
                    break;
                };
                match event.event.as_str() {
                    "build.queued" => {
                        if let Some(created) = json_int(&event.data, "created_ms") {
                            latencies.push(event.at_ms - created as f64);
                        }
                    }
                    "resync" => resyncs += 1,
                    _ => {}
                }
            }
            Ok::<_, String>((latencies, resyncs))
        }));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    while ready.load(Ordering::SeqCst) < subscribers {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "only {} of {subscribers} subscribers connected",
                ready.load(Ordering::SeqCst)
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = mem(pid).rss_kib;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(mem(pid).rss_kib);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    let mut conn = Conn::connect(port).await.map_err(err("connect"))?;
    let start = tokio::time::Instant::now();
    for (i, commit) in commits.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(100 * i as u64)).await;
        let (status, body) = conn
            .call(&post_build(token, "sse", &format!("{prefix}/{i}"), commit))
            .await
            .map_err(err("publish"))?;
        if status != 201 {
            return Err(format!(
                "publish answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    let mut all = Vec::new();
    let mut resyncs = 0;
    for task in tasks {
        let (latencies, r) = task.await.map_err(err("subscriber"))??;
        all.extend(latencies);
        resyncs += r;
    }
    stop.store(true, Ordering::SeqCst);
    let peak = sampler.await.unwrap_or(0).max(rss_connected);
    Ok(FanOut {
        subscribers,
        events,
        delivered: all.len(),
        resyncs,
        latency_ms: summary(&all),
        rss_before_kib: rss_before,
        rss_connected_kib: rss_connected,
        rss_peak_kib: peak,
    })
}

/// SSE fan-out: 1,000 subscribers, 10 events per second.
pub(crate) fn sse(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("sse");
    let nix = blocking_nix(&dir)?;
    // No periodic scan: it would queue the branches made below itself. The
    // subscribers all come from 127.0.0.1: the cap per peer must admit them,
    // and three quarters of max_connections (1,536), what event streams may
    // hold.
    let mut d = Daemon::configure(
        &dir,
        &format!(
            "nix_bin = \"{}\"\nscan_interval_secs = 86400\nmax_connections = 2048\nmax_connections_per_peer = 2048\n",
            nix.display()
        ),
    )?;
    d.spawn()?;
    let repo = d.create_repo("sse")?;
    let commits = fast_import(&repo, "bench", 121, &flake("echo ok > $out", "sse"))?;
    // The branches `fan_out` queues builds of.
    make_branches(&repo, "floor", &commits[1..21])?;
    make_branches(&repo, "fan", &commits[21..121])?;
    let (port, pid, token) = (d.port, d.pid(), d.token());
    let (floor, main) = ctx.rt.block_on(async {
        // The first build occupies the worker for the rest of the run.
        let mut conn = Conn::connect(port).await.map_err(err("connect"))?;
        conn.call(&post_build(&token, "sse", "bench", &commits[0]))
            .await
            .map_err(err("enqueue"))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let floor = fan_out(port, pid, &token, &commits[1..21], 1, "floor").await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let main = fan_out(port, pid, &token, &commits[21..121], 1000, "fan").await?;
        Ok::<_, String>((floor, main))
    })?;
    let after = d.mem();
    d.stop();
    let growth = main.rss_peak_kib.saturating_sub(main.rss_before_kib);
    let expected = main.subscribers * main.events;
    Ok(vec![Row {
        figure: "SSE fan-out (1,000 subscribers, 10 events/s)".into(),
        measured: format!(
            "p99 {} (p50 {}); RSS +{:.1} MiB",
            ms(main.latency_ms.p99),
            ms(main.latency_ms.p50),
            mib(growth)
        ),
        floor: format!("p99 {} (one subscriber)", ms(floor.latency_ms.p99)),
        ratio: ratio(main.latency_ms.p99, floor.latency_ms.p99),
        goal: "publish → delivery p99 ≤ 100 ms; RSS growth ≤ 32 MiB".into(),
        met: Some(
            main.latency_ms.p99 <= 100.0
                && mib(growth) <= 32.0
                && main.delivered == expected
                && main.resyncs == 0,
        ),
        note: format!(
            "events are `build.queued` from POST /api/builds; latency = arrival − the event's own \
             `created_ms` (taken inside the enqueue transaction, so it includes its fsync); {} of {expected} \
             delivered, {} resyncs; RSS {:.1} MiB before subscribers, {:.1} connected, peak {:.1}, {:.1} after",
            main.delivered,
            main.resyncs,
            mib(main.rss_before_kib),
            mib(main.rss_connected_kib),
            mib(main.rss_peak_kib),
            mib(after.rss_kib)
        ),
        load: 0.0,
        data: json!({"main": main, "floor": floor}),
    }])
}
