//! Start-up figures: the idle footprint, start → `READY=1`, and how fast
//! a worker claims a queued build.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;
use crate::{Ctx, Row, ms, post_build, ratio};

fn notify_ready(daemon: &mut Daemon, socket: &UnixDatagram) -> Res<f64> {
    let mut buf = [0u8; 4096];
    while socket.recv(&mut buf).is_ok() {}
    let start = Instant::now();
    daemon.launch()?;
    loop {
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
        {
            return Ok(start.elapsed().as_secs_f64() * 1000.0);
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(format!("no READY=1: {}", daemon.log_tail()));
        }
        if let Some(child) = daemon.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!(
                "daemon exited with {status}: {}",
                daemon.log_tail()
            ));
        }
    }
}

/// Idle RSS, and start → READY=1 with 100 declared repositories.
pub(crate) fn footprint(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("footprint");
    let mut repos = String::new();
    for i in 0..100 {
        repos.push_str(&format!(
            "[repos.r{i:03}]\ndescription = \"declared repository {i}\"\n"
        ));
    }
    let mut d = Daemon::configure(&dir, &format!("nix_bin = \"/bin/true\"\n{repos}"))?;
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).map_err(err("notify socket"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(err("notify socket"))?;
    d.env
        .push(("NOTIFY_SOCKET".into(), path.display().to_string()));
    let first = notify_ready(&mut d, &socket)?;
    d.stop();
    // Steady state: every repository has a branch, and it has been built.
    let flake_text = flake("echo ok > $out", "footprint");
    for i in 0..100 {
        let repo = d.state().join(format!("repos/r{i:03}.git"));
        fast_import(&repo, "main", 1, &flake_text)?;
    }
    let catch_up = notify_ready(&mut d, &socket)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, queued) = d.get("/api/builds?status=queued&limit=1")?;
        let (_, running) = d.get("/api/builds?status=running&limit=1")?;
        let (_, all) = d.get("/api/builds?limit=500")?;
        if queued["builds"].as_array().is_some_and(Vec::is_empty)
            && running["builds"].as_array().is_some_and(Vec::is_empty)
        {
            let built = all["builds"].as_array().map_or(0, Vec::len);
            if built != 100 {
                return Err(format!("{built} builds caught up, 100 expected"));
            }
            break;
        }
        if Instant::now() > deadline {
            return Err("the caught-up builds did not finish".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();
    let mut restarts = Vec::new();
    for i in 0..7 {
        restarts.push(notify_ready(&mut d, &socket)?);
        if i < 6 {
            d.stop();
        }
    }
    d.wait_healthy()?;
    for _ in 0..5 {
        d.get("/api/builds")?;
        d.get("/api/repos")?;
        d.get("/api/health")?;
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle = d.mem();
    d.stop();

    // Floors: the same binary loading the same configuration and exiting;
    // the same binary resident and idle (the hook blocked on its input).
    let mut checks = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let status = Command::new(binary())
            .arg("check-config")
            .arg("--config")
            .arg(&d.config)
            .stdout(Stdio::null())
            .status()
            .map_err(err("check-config"))?;
        checks.push(t.elapsed().as_secs_f64() * 1000.0);
        if !status.success() {
            return Err(format!("check-config failed: {status}"));
        }
    }
    let mut hook = Command::new(binary())
        .args(["hook", "post-receive", "--repo", "x", "--socket"])
        .arg(dir.join("absent.sock"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(err("hook"))?;
    std::thread::sleep(Duration::from_millis(300));
    let floor_rss = mem(hook.id());
    drop(hook.stdin.take());
    let _ = hook.wait();

    let start = summary(&restarts);
    let check = summary(&checks);
    Ok(vec![
        Row {
            figure: "footprint: idle RSS".into(),
            measured: format!("{:.1} MiB", mib(idle.rss_kib)),
            floor: format!(
                "{:.1} MiB (the same binary idle in the hook)",
                mib(floor_rss.rss_kib)
            ),
            ratio: ratio(idle.rss_kib as f64, floor_rss.rss_kib as f64),
            goal: "≤ 20 MiB".into(),
            met: Some(mib(idle.rss_kib) <= 20.0),
            note: "VmRSS 2 s after start and a few reads; peak (VmHWM) was \
                   {hwm:.1} MiB"
                .replace("{hwm:.1}", &format!("{:.1}", mib(idle.hwm_kib))),
            load: 0.0,
            data: json!({"idle_rss_kib": idle.rss_kib, "idle_hwm_kib": idle.hwm_kib, "floor_rss_kib": floor_rss.rss_kib}),
        },
        Row {
            figure: "footprint: start → READY=1, 100 declared repos".into(),
            measured: format!("p50 {} (max {} of 7)", ms(start.p50), ms(start.max)),
            floor: format!("{} (`check-config` of the same file)", ms(check.p50)),
            ratio: ratio(start.p50, check.p50),
            goal: "≤ 200 ms".into(),
            met: Some(start.max <= 200.0),
            note: format!(
                "restarts with the 100 repositories in place, each with a built branch (readiness waits for the \
                 scan for missed pushes); the very first start, which creates them, took {}; a start that \
                 catches up 100 unbuilt pushes took {}",
                ms(first),
                ms(catch_up)
            ),
            load: 0.0,
            data: json!({"restart_ms": start, "first_start_ms": first, "catch_up_start_ms": catch_up, "check_config_ms": check}),
        },
    ])
}

/// Enqueue → running: server timestamps over 1,000 builds, one at a time.
pub(crate) fn claim(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("claim");
    std::fs::create_dir_all(&dir).map_err(err("dir"))?;
    let (_, commit_floor) = sqlite_floor(&dir, Duration::from_secs(2))?;
    let mut d = Daemon::configure(&dir, "nix_bin = \"/bin/true\"\n")?;
    d.spawn()?;
    let repo = d.create_repo("claim")?;
    let commit = fast_import(&repo, "main", 1, &flake("echo ok > $out", "claim"))?.remove(0);
    let (port, token) = (d.port, d.token());
    const N: usize = 1000;
    let (ids, client) = ctx.rt.block_on(async move {
        let mut events = Sse::connect(port, "/api/events")
            .await
            .map_err(err("events"))?;
        let mut conn = Conn::connect(port).await.map_err(err("connect"))?;
        let request = post_build(&token, "claim", "main", &commit);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        let mut ids = Vec::new();
        let mut client = Vec::new();
        for _ in 0..N {
            let sent = epoch_ms();
            let (status, body) = conn.call(&request).await.map_err(err("enqueue"))?;
            let body = String::from_utf8_lossy(&body);
            let id = json_int(&body, "id").filter(|_| status == 201);
            let id = id.ok_or_else(|| format!("enqueue answered {status}: {body}"))?;
            loop {
                let event = tokio::time::timeout_at(deadline, events.next())
                    .await
                    .map_err(|_| "the builds did not finish in time".to_string())?
                    .map_err(err("events"))?
                    .ok_or("the event stream ended")?;
                if json_int(&event.data, "id") != Some(id) {
                    continue;
                }
                if event.event == "build.started" {
                    client.push(event.at_ms - sent);
                }
                if event.event == "build.finished" {
                    break;
                }
            }
            ids.push(id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok::<_, String>((ids, client))
    })?;
    let mut delays = Vec::new();
    let mut before = String::new();
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    loop {
        let (_, page) = d.get(&format!("/api/builds?repo=claim&limit=500{before}"))?;
        for b in page["builds"].as_array().into_iter().flatten() {
            if let (Some(c), Some(s)) = (b["created_ms"].as_i64(), b["started_ms"].as_i64()) {
                delays.push((s - c) as f64);
            }
            *statuses
                .entry(b["status"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        match page["next_before"].as_i64() {
            Some(next) => before = format!("&before={next}"),
            None => break,
        }
    }
    d.stop();
    if delays.len() != ids.len() {
        return Err(format!(
            "{} builds listed, {} queued",
            delays.len(),
            ids.len()
        ));
    }
    let s = summary(&delays);
    let c = summary(&client);
    Ok(vec![Row {
        figure: "enqueue → running (1,000 builds, idle daemon)".into(),
        measured: format!("p50 {} · p99 {} (max {})", ms(s.p50), ms(s.p99), ms(s.max)),
        floor: format!("{} (one raw SQLite FULL commit, p50)", ms(commit_floor.p50)),
        ratio: format!("{} (p50)", ratio(s.p50.max(0.5), commit_floor.p50)),
        goal: "p50 ≤ 20 ms, p99 ≤ 100 ms".into(),
        met: Some(s.p50 <= 20.0 && s.p99 <= 100.0),
        note: format!(
            "`started_ms − created_ms` (1 ms resolution); nix_bin is `/bin/true` here (stand-in: this \
             measures the claim path, not nix). Seen by a client: POST sent → `build.started` \
             received p50 {} · p99 {}. Statuses: {statuses:?}",
            ms(c.p50),
            ms(c.p99)
        ),
        load: 0.0,
        data: json!({"server_ms": s, "client_post_to_started_ms": c, "commit_floor_ms": commit_floor, "statuses": statuses}),
    }])
}
