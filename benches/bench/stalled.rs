//! A build watched by clients that never read.

use std::time::Duration;

use serde_json::json;

use crate::support::*;
use crate::{Ctx, Row, follow, ratio};

/// Builds of a check printing 20 MB, alternately alone (one reading
/// follower) and with 16 clients that ask for its events or its log and
/// never read: the stalled clients must cost the build nothing noticeable
/// and the daemon a bounded amount of memory (issue 15). Issue 15's fault
/// test proves the daemon keeps answering; how much the clients slow it is
/// measured here, where timing belongs.
pub(crate) fn stalled(ctx: &Ctx) -> Res<Vec<Row>> {
    use std::io::Write;
    const ROUNDS: usize = 3;
    const CLIENTS: usize = 16;
    let dir = ctx.root.join("stalled");
    let mut d = Daemon::configure(&dir, "log_max_bytes = 1073741824\nworkers = 1")?;
    d.spawn()?;
    let repo = d.create_repo("stalled")?;
    let nonce = epoch_ms() as u64;
    let print = "/usr/bin/yes 0123456789abcdefghijklmnopqrstuvwxyz | /usr/bin/head -c 20000000; echo; echo ok > $out";
    let mut alone = Vec::new();
    let mut with_clients = Vec::new();
    let mut growth_kib = 0u64;
    for round in 0..2 * ROUNDS {
        let stalls = round % 2 == 1;
        let branch = format!("r{round}");
        let commit = fast_import(
            &repo,
            &branch,
            1,
            &flake(print, &format!("{nonce}-{round}")),
        )?
        .remove(0);
        let idle = d.mem().rss_kib;
        let (status, body) = d.post(
            "/api/builds",
            &json!({"repo": "stalled", "branch": branch, "commit": commit}),
        )?;
        let id = body["id"]
            .as_i64()
            .ok_or_else(|| format!("enqueue answered {status}: {body}"))?;
        let mut held = Vec::new();
        if stalls {
            for n in 0..CLIENTS {
                let mut stream =
                    std::net::TcpStream::connect(("127.0.0.1", d.port)).map_err(err("connect"))?;
                let path = if n % 2 == 0 {
                    format!("/api/events?build={id}")
                } else {
                    format!("/api/builds/{id}/logs?follow=true")
                };
                write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    .map_err(err("send"))?;
                held.push(stream);
            }
        }
        let port = d.port;
        let reader = std::thread::spawn(move || {
            http(
                port,
                "GET",
                &format!("/api/builds/{id}/logs?follow=true"),
                None,
                None,
            )
        });
        let (build, peak) = follow(&d, id, Duration::from_secs(240))?;
        let (_, text) = reader
            .join()
            .map_err(|_| "the follower panicked".to_string())??;
        drop(held);
        if build["status"] != "success" || text.as_str().is_none_or(|t| t.len() < 20_000_000) {
            return Err(format!(
                "round {round}: the build or its follower failed: {build}"
            ));
        }
        let seconds = build["duration_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
        if stalls {
            with_clients.push(seconds);
            growth_kib = growth_kib.max(peak.rss_kib.saturating_sub(idle));
        } else {
            alone.push(seconds);
        }
    }
    d.stop();
    let (a, s) = (summary(&alone), summary(&with_clients));
    let growth = mib(growth_kib);
    let slowdown = s.p50 / a.p50;
    Ok(vec![Row {
        figure: format!("a 20 MB build with {CLIENTS} clients that never read"),
        measured: format!("{:.2} s (median of {ROUNDS}); RSS +{growth:.1} MiB", s.p50),
        floor: format!("{:.2} s (the same build, no stalled client)", a.p50),
        ratio: ratio(s.p50, a.p50),
        goal: "≤ 1.5× the floor; RSS growth ≤ 48 MiB".into(),
        met: Some(slowdown <= 1.5 && growth <= 48.0),
        note: "workers = 1; alternated rounds, each a new derivation; half the clients hold \
               /api/events?build=, half /api/builds/ID/logs?follow=true; one reading follower in every round; \
               RSS growth is the peak during the build over the idle figure before it"
            .into(),
        load: 0.0,
        data: json!({"alone_seconds": alone, "stalled_seconds": with_clients, "growth_kib": growth_kib}),
    }])
}
