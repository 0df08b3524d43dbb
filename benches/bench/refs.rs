//! Many refs (issue 25): a restart that finds 10,000 branches at one commit
//! pushed while it was away answers its first request within 2 s, and
//! queues one build for them, not 10,000.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;
use crate::{Ctx, Row, ms, ratio};

const REFS: usize = 10_000;
const RESTARTS: usize = 5;

/// Launch → the first `GET /api/repos/{name}` answered 200.
fn first_answer(d: &mut Daemon, path: &str) -> Res<f64> {
    let start = Instant::now();
    d.launch()?;
    loop {
        if let Ok((200, _)) = http(d.port, "GET", path, None, None) {
            return Ok(start.elapsed().as_secs_f64() * 1000.0);
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(format!("no answer: {}", d.log_tail()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn refs(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("refs");
    let mut d = Daemon::configure(&dir, "nix_bin = \"/bin/true\"\nscan_interval_secs = 3600\n")?;
    d.spawn()?;
    let bare = d.create_repo("refs")?;
    d.stop();
    // The floor: another daemon whose one repository has one branch.
    let mut small = Daemon::configure(
        &ctx.root.join("refs-floor"),
        "nix_bin = \"/bin/true\"\nscan_interval_secs = 3600\n",
    )?;
    small.spawn()?;
    let small_bare = small.create_repo("refs")?;
    small.stop();
    fast_import(&small_bare, "main", 1, &flake("echo ok > $out", "small"))?;
    let head = fast_import(&bare, "main", 1, &flake("echo ok > $out", "refs"))?.remove(0);
    make_branches(&bare, "b", &vec![head; REFS])?;
    let path = "/api/repos/refs?branches_limit=1000";
    // The first restart finds every head unbuilt and queues their build.
    let first = first_answer(&mut d, path)?;
    let (_, builds) = d.get("/api/builds?repo=refs&limit=500")?;
    let queued = builds["builds"].as_array().map_or(0, Vec::len);
    if queued != 1 {
        return Err(format!(
            "{queued} builds queued for {} heads at one commit",
            REFS + 1
        ));
    }
    d.stop();
    let mut again = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..RESTARTS {
        again.push(first_answer(&mut d, path)?);
        d.stop();
        floor.push(first_answer(&mut small, path)?);
        small.stop();
    }
    let again = summary(&again);
    let floor = summary(&floor);
    Ok(vec![Row {
        figure: format!(
            "restart → first answer, {} branches at one commit pushed while away",
            REFS + 1
        ),
        measured: format!(
            "{} (queuing the one build); later restarts p50 {} (max {} of {RESTARTS})",
            ms(first),
            ms(again.p50),
            ms(again.max)
        ),
        floor: format!(
            "p50 {} (the same restart of a daemon whose one repository has one branch)",
            ms(floor.p50)
        ),
        ratio: ratio(first, floor.p50),
        goal: "≤ 2 s".into(),
        met: Some(first <= 2000.0 && again.max <= 2000.0),
        note: format!("{} heads, one build", REFS + 1),
        load: 0.0,
        data: json!({"first_ms": first, "again": again, "floor": floor, "builds": queued}),
    }])
}
