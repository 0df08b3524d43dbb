//! procurator-ci's benchmark suite (issue 7): every figure of the table in
//! docs/performance.md, measured against the real release binary on
//! loopback, each with a floor measured in the same run.
//!
//! `scripts/bench` builds the release binary and runs this; `scripts/bench
//! list sse` runs only the named benches. Results are printed as a table and
//! written to `target/bench/results.json`. Every bench is bounded in time
//! and requests; the whole suite takes a few minutes on 2 cores.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use support::*;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
struct Row {
    figure: String,
    measured: String,
    floor: String,
    ratio: String,
    goal: String,
    /// `None`: informational, no goal of its own.
    met: Option<bool>,
    note: String,
    data: Value,
    /// The 1-minute load average when the bench ended.
    load: f64,
}

struct Ctx {
    root: PathBuf,
    rt: tokio::runtime::Runtime,
}

type Bench = fn(&Ctx) -> Res<Vec<Row>>;

const BENCHES: &[(&str, Bench)] = &[
    ("footprint", footprint),
    ("claim", claim),
    ("push", push),
    ("enqueue", enqueue_rate),
    ("list", list),
    ("branches", branches),
    ("sse", sse),
    ("logs", logs),
    ("stalled", stalled),
    ("wrapper", wrapper),
    ("cache", cache),
];

/// Output line of the 100 MiB check: 99 characters and a newline.
const LINE: &str = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456";
const HUNDRED_MIB: u64 = 100 * 1024 * 1024;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench
    // targets without it, and nothing timed belongs in the tests.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benchmarks run with scripts/bench (cargo bench --bench bench); skipped here");
        return;
    }
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for w in &wanted {
        if !BENCHES.iter().any(|(name, _)| name == w) {
            eprintln!(
                "unknown bench {w:?}; known: {}",
                BENCHES.iter().map(|b| b.0).collect::<Vec<_>>().join(" ")
            );
            std::process::exit(2);
        }
    }
    if !binary().exists() {
        eprintln!(
            "{} does not exist: run `cargo build --release` (scripts/bench does)",
            binary().display()
        );
        std::process::exit(2);
    }
    raise_open_files();
    let tmp = tempfile::Builder::new()
        .prefix("pci-bench-")
        .tempdir()
        .expect("temporary directory");
    let ctx = Ctx {
        root: tmp.path().to_path_buf(),
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime"),
    };
    let mut machine = machine(&ctx.root);
    machine["load_at_start"] = json!(load_average());
    eprintln!("machine: {machine}");
    let started = Instant::now();
    let mut rows = Vec::new();
    for (name, bench) in BENCHES {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        eprintln!("== {name}");
        let t = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bench(&ctx)));
        let result = result.unwrap_or_else(|_| Err("the bench panicked".into()));
        // Other work on a shared machine shows here first.
        let load = load_average();
        let result = result.map(|rows| {
            rows.into_iter()
                .map(|mut row| {
                    row.load = load;
                    row
                })
                .collect::<Vec<_>>()
        });
        match result {
            Ok(r) => {
                for row in &r {
                    eprintln!(
                        "   {}: {} | floor {} | ratio {} | goal {} | {}",
                        row.figure,
                        row.measured,
                        row.floor,
                        row.ratio,
                        row.goal,
                        verdict(row.met)
                    );
                }
                rows.extend(r);
            }
            Err(e) => {
                eprintln!("   FAILED: {e}");
                rows.push(Row {
                    figure: name.to_string(),
                    measured: "error".into(),
                    floor: "-".into(),
                    ratio: "-".into(),
                    goal: "-".into(),
                    met: Some(false),
                    note: e,
                    data: Value::Null,
                    load: load_average(),
                });
            }
        }
        eprintln!("   ({:.1} s)", t.elapsed().as_secs_f64());
    }
    let table = markdown(&rows);
    println!("\n{table}");
    println!(
        "total {:.0} s; machine: {}",
        started.elapsed().as_secs_f64(),
        machine
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let results = json!({
        "machine": machine,
        "seconds": started.elapsed().as_secs_f64(),
        "figures": rows,
    });
    let path = out.join("results.json");
    match std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).unwrap_or_default(),
    ) {
        Ok(()) => println!("results: {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
    let _ = std::fs::write(out.join("results.md"), table);
    if std::env::var_os("BENCH_KEEP").is_some() {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "info",
    }
}

fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | measured | floor (same run) | ratio | goal | verdict | load |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} |\n",
            r.figure,
            r.measured,
            r.floor,
            r.ratio,
            r.goal,
            verdict(r.met),
            r.load
        ));
    }
    out.push('\n');
    for r in rows.iter().filter(|r| !r.note.is_empty()) {
        out.push_str(&format!("- **{}**: {}\n", r.figure, r.note));
    }
    out
}

/// 1,000 SSE subscribers and their daemon need more descriptors than a
/// default soft limit; children inherit the raised limit.
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(max.min(65536)),
                maximum: Some(max),
            },
        );
    }
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Cores, CPU, memory, the disk under the bench's state, and versions.
fn machine(root: &Path) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let mount = command_line(
        "findmnt",
        &[
            "-no",
            "SOURCE,FSTYPE,OPTIONS",
            "-T",
            &root.display().to_string(),
        ],
    );
    let device = mount
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_start_matches("/dev/")
        .to_string();
    let rotational = std::fs::read_to_string(format!("/sys/block/{device}/queue/rotational"))
        .unwrap_or_default();
    let commit = command_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let dirty = !command_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "status",
            "--porcelain",
            "--untracked-files=no",
            "src",
        ],
    )
    .is_empty();
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "disk": format!("{mount} (rotational: {})", rotational.trim()),
        "kernel": command_line("uname", &["-r"]),
        "nix": command_line("nix", &["--version"]),
        "git": command_line("git", &["--version"]),
        "commit": if dirty { format!("{commit}+uncommitted src changes") } else { commit },
        "date": command_line("date", &["-u", "+%Y-%m-%dT%H:%MZ"]),
    })
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "-".into()
    }
}

fn write_script(path: &Path, text: &str) -> Res<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(err("write script"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(err("chmod script"))?;
    Ok(path.to_path_buf())
}

/// A `nix_bin` stand-in whose `flake check` blocks (until the daemon stops
/// it) and whose other commands answer `{}` at once: it keeps the worker
/// busy with one build so that the rest stay queued and the daemon does
/// nothing but the path measured.
fn blocking_nix(dir: &Path) -> Res<PathBuf> {
    std::fs::create_dir_all(dir).map_err(err("dir"))?;
    write_script(
        &dir.join("nix-blocking"),
        "#!/bin/sh\ncase \" $* \" in *\" check \"*) exec sleep 600;; esac\necho '{}'\n",
    )
}

/// POST /api/builds. Concurrent benches give each request a branch of its
/// own: a newer commit on the same branch would cancel the older builds
/// (`cancel_superseded`), which is not the path measured.
fn post_build(token: &str, repo: &str, branch: &str, commit: &str) -> Vec<u8> {
    let body = json!({"repo": repo, "branch": branch, "commit": commit}).to_string();
    request_bytes("POST", "/api/builds", Some(token), Some(&body))
}

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
fn footprint(ctx: &Ctx) -> Res<Vec<Row>> {
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
fn claim(ctx: &Ctx) -> Res<Vec<Row>> {
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

/// Wall time of `git push` of one new commit; returns milliseconds and
/// git's output.
fn timed_push(work: &Path, target: &Path, commit: &str) -> Res<(f64, String)> {
    let t = Instant::now();
    let out = Command::new("git")
        .arg("push")
        .arg(target)
        .arg(format!("{commit}:refs/heads/main"))
        .current_dir(work)
        .output()
        .map_err(err("git push"))?;
    let elapsed = t.elapsed().as_secs_f64() * 1000.0;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("git push failed: {text}"));
    }
    Ok((elapsed, text))
}

/// `git push` → build queued, against the same push without the hook.
fn push(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("push");
    let nix = blocking_nix(&dir)?;
    let mut d = Daemon::configure(&dir, &format!("nix_bin = \"{}\"\n", nix.display()))?;
    d.spawn()?;
    let managed = d.create_repo("push")?;
    let plain = dir.join("plain.git");
    git(
        &dir,
        &["init", "-q", "--bare", &plain.display().to_string()],
    )?;
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(err("dir"))?;
    git(&work, &["init", "-q"])?;
    const N: usize = 100;
    let commits = fast_import(
        &work.join(".git"),
        "main",
        N + 1,
        &flake("echo ok > $out", "push"),
    )?;
    // The first push of each target carries the whole history.
    timed_push(&work, &managed, &commits[0])?;
    timed_push(&work, &plain, &commits[0])?;
    let (mut hooked, mut bare) = (Vec::new(), Vec::new());
    for (i, commit) in commits.iter().enumerate().skip(1) {
        for step in 0..2 {
            if (i + step) % 2 == 0 {
                let (t, text) = timed_push(&work, &managed, commit)?;
                if !text.contains("queued for main") {
                    return Err(format!("the hook did not queue a build: {text}"));
                }
                hooked.push(t);
            } else {
                bare.push(timed_push(&work, &plain, commit)?.0);
            }
        }
    }
    d.stop();
    let (h, b) = (summary(&hooked), summary(&bare));
    let overhead = h.p50 - b.p50;
    Ok(vec![Row {
        figure: "`git push` → build queued".into(),
        measured: format!(
            "overhead {} p50 (push with hook: p50 {} · p99 {})",
            ms(overhead),
            ms(h.p50),
            ms(h.p99)
        ),
        floor: format!("{} (same push, repo without hook, p50)", ms(b.p50)),
        ratio: ratio(h.p50, b.p50),
        goal: "overhead ≤ 50 ms p50".into(),
        met: Some(overhead <= 50.0),
        note: format!(
            "{N} pushes of one new commit each to both repositories, alternated; the push returns \
             after the hook printed `build #N queued`"
        ),
        load: 0.0,
        data: json!({"with_hook_ms": h, "without_hook_ms": b, "overhead_p50_ms": overhead}),
    }])
}

/// Durable enqueue rate: concurrent keep-alive POST /api/builds of
/// distinct commits.
fn enqueue_rate(ctx: &Ctx) -> Res<Vec<Row>> {
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

/// A cheap deterministic pseudo-random stream.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Fills a migrated database with `n` finished builds over 20 repositories.
fn seed(db: &Path, n: u64) -> Res<()> {
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
fn list(ctx: &Ctx) -> Res<Vec<Row>> {
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
fn branches(ctx: &Ctx) -> Res<Vec<Row>> {
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
fn sse(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("sse");
    let nix = blocking_nix(&dir)?;
    // No periodic scan: it would queue the branches made below itself. The
    // subscribers all come from 127.0.0.1: the cap per peer must admit them.
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

/// Watches build `id` until it is final, sampling the daemon's memory.
fn follow(d: &Daemon, id: i64, timeout: Duration) -> Res<(Value, Mem)> {
    let deadline = Instant::now() + timeout;
    let mut peak = Mem::default();
    loop {
        let m = d.mem();
        peak.rss_kib = peak.rss_kib.max(m.rss_kib);
        peak.hwm_kib = peak.hwm_kib.max(m.hwm_kib);
        let (_, build) = d.get(&format!("/api/builds/{id}"))?;
        if matches!(
            build["status"].as_str(),
            Some("success" | "failed" | "cancelled")
        ) {
            return Ok((build, peak));
        }
        if Instant::now() > deadline {
            return Err(format!("build {id} did not finish: {build}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One build of a check printing 100 MiB, on a fresh daemon.
struct Ingest {
    build: Value,
    peak: Mem,
    seconds: f64,
    stored: u64,
    truncated: bool,
    marker: bool,
}

fn ingest(dir: &Path, extra: &str, cap: u64, flake_text: &str, nix_real: bool) -> Res<Ingest> {
    let mut d = Daemon::configure(dir, extra)?;
    d.spawn()?;
    let repo = d.create_repo("logs")?;
    let id = if nix_real {
        // The real trigger: a push through the hook.
        let work = dir.join("work");
        std::fs::create_dir_all(&work).map_err(err("dir"))?;
        git(&work, &["init", "-q"])?;
        std::fs::write(work.join("flake.nix"), flake_text).map_err(err("flake"))?;
        git(&work, &["add", "flake.nix"])?;
        git(&work, &["commit", "-qm", "a check printing 100 MiB"])?;
        let out = git(&work, &["push", &repo.display().to_string(), "main"]);
        out?;
        let (_, page) = d.get("/api/builds?repo=logs&limit=1")?;
        page["builds"][0]["id"]
            .as_i64()
            .ok_or_else(|| format!("no build queued by the push: {page}"))?
    } else {
        let commit = fast_import(&repo, "main", 1, flake_text)?.remove(0);
        let (status, body) = d.post(
            "/api/builds",
            &json!({"repo": "logs", "branch": "main", "commit": commit}),
        )?;
        body["id"]
            .as_i64()
            .ok_or_else(|| format!("enqueue answered {status}: {body}"))?
    };
    let (build, peak) = follow(&d, id, Duration::from_secs(240))?;
    let attempt = &build["attempts"][0];
    let stored = attempt["log_bytes"].as_u64().unwrap_or(0);
    let tail_from = stored.saturating_sub(4096);
    let (_, tail) = d.get(&format!("/api/builds/{id}/logs?offset={tail_from}"))?;
    let marker = tail
        .as_str()
        .is_some_and(|t| t.contains(&format!("[log truncated at {cap} bytes]")));
    let seconds = build["duration_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
    let truncated = attempt["log_truncated"].as_bool().unwrap_or(false);
    d.stop();
    if build["status"] != "success" {
        return Err(format!("the 100 MiB build did not succeed: {build}"));
    }
    Ok(Ingest {
        build,
        peak,
        seconds,
        stored,
        truncated,
        marker,
    })
}

/// Log ingest: a check printing 100 MiB, with real nix and with a stand-in
/// producer (our own path alone).
fn logs(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("logs");
    std::fs::create_dir_all(&dir).map_err(err("dir"))?;
    let print = format!("/usr/bin/yes {LINE} | /usr/bin/head -c {HUNDRED_MIB}");
    let nonce = format!("{}", epoch_ms() as u64);
    const CAP: u64 = 64 * 1024 * 1024;

    // Floor: the same check run by hand, its output into a file.
    let by_hand = dir.join("by-hand");
    std::fs::create_dir_all(&by_hand).map_err(err("dir"))?;
    git(&by_hand, &["init", "-q"])?;
    std::fs::write(
        by_hand.join("flake.nix"),
        flake(
            &format!("{print}; echo ok > $out"),
            &format!("{nonce}-hand"),
        ),
    )
    .map_err(err("flake"))?;
    git(&by_hand, &["add", "flake.nix"])?;
    git(&by_hand, &["commit", "-qm", "by hand"])?;
    let out_file = std::fs::File::create(dir.join("by-hand.log")).map_err(err("log"))?;
    let t = Instant::now();
    let status = Command::new("nix")
        .args(["flake", "check", "--print-build-logs", "--keep-going"])
        .arg(format!("git+file://{}", by_hand.display()))
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("HOME", dir.join("home"))
        .env("XDG_CACHE_HOME", dir.join("home/.cache"))
        .stdout(out_file.try_clone().map_err(err("log"))?)
        .stderr(out_file)
        .status()
        .map_err(err("nix"))?;
    let hand_secs = t.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("nix flake check by hand failed: {status}"));
    }
    let hand_rate = HUNDRED_MIB as f64 / 1048576.0 / hand_secs;

    let real = ingest(
        &dir.join("daemon"),
        "",
        CAP,
        &flake(
            &format!("{print}; echo ok > $out"),
            &format!("{nonce}-ours"),
        ),
        true,
    )?;
    let real_rate = HUNDRED_MIB as f64 / 1048576.0 / real.seconds;

    // Our path alone: a stand-in producer with nix's exit status.
    let producer = write_script(
        &dir.join("nix-print"),
        &format!(
            "#!/bin/sh\ncase \" $* \" in *\" check \"*) ;; *) echo '{{}}'; exit 0;; esac\n{print}\n"
        ),
    )?;
    let t = Instant::now();
    let status = Command::new(&producer)
        .args(["flake", "check"])
        .stdout(std::fs::File::create(dir.join("producer.out")).map_err(err("out"))?)
        .status()
        .map_err(err("producer"))?;
    let producer_secs = t.elapsed().as_secs_f64();
    if !status.success() {
        return Err("the producer failed".into());
    }
    let producer_rate = HUNDRED_MIB as f64 / 1048576.0 / producer_secs;
    let uncapped = ingest(
        &dir.join("stand-in"),
        &format!(
            "nix_bin = \"{}\"\nlog_max_bytes = {}\n",
            producer.display(),
            2 * HUNDRED_MIB
        ),
        2 * HUNDRED_MIB,
        &flake("echo ok > $out", "stand-in"),
        false,
    )?;
    let capped = ingest(
        &dir.join("stand-in-capped"),
        &format!("nix_bin = \"{}\"\n", producer.display()),
        CAP,
        &flake("echo ok > $out", "stand-in-capped"),
        false,
    )?;
    let stand_rate = uncapped.stored as f64 / 1048576.0 / uncapped.seconds;
    // The cap holds: the stored log is the cap plus the marker and our own
    // notes (the command line, a few hundred bytes).
    let cap_ok = |i: &Ingest| i.truncated && i.marker && i.stored <= CAP + 8192;
    let peak = |i: &Ingest| mib(i.peak.hwm_kib);
    Ok(vec![
        Row {
            figure: "log ingest, real nix (check prints 100 MiB)".into(),
            measured: format!(
                "{real_rate:.1} MiB/s; peak RSS {:.1} MiB; cap {}",
                peak(&real),
                if cap_ok(&real) {
                    "honoured"
                } else {
                    "NOT honoured"
                }
            ),
            floor: format!("{hand_rate:.1} MiB/s (`nix flake check -L` by hand into a file)"),
            ratio: ratio(real_rate, hand_rate),
            goal: "≥ 50 MiB/s stored; RSS ≤ 64 MiB; cap honoured".into(),
            met: Some(real_rate >= 50.0 && peak(&real) <= 64.0 && cap_ok(&real)),
            note: format!(
                "100 MiB printed / build duration; log_max_bytes = 64 MiB (the default) < 100 MiB: stored {} bytes, \
                 truncated {}, marker present {}; nix itself emits the log at the floor's rate, so no wrapper can reach the goal here",
                real.stored, real.truncated, real.marker
            ),
            load: 0.0,
            data: json!({"seconds": real.seconds, "stored": real.stored, "hwm_kib": real.peak.hwm_kib,
                         "by_hand_seconds": hand_secs, "build": real.build}),
        },
        Row {
            figure: "log ingest path, stand-in producer (100 MiB)".into(),
            measured: format!(
                "{stand_rate:.0} MiB/s stored; peak RSS {:.1} MiB (capped run: {:.1} MiB, cap {})",
                peak(&uncapped),
                peak(&capped),
                if cap_ok(&capped) {
                    "honoured"
                } else {
                    "NOT honoured"
                }
            ),
            floor: format!("{producer_rate:.0} MiB/s (the producer into a file)"),
            ratio: ratio(stand_rate, producer_rate),
            goal: "≥ 50 MiB/s stored; RSS ≤ 64 MiB; cap honoured".into(),
            met: Some(
                stand_rate >= 50.0
                    && peak(&uncapped) <= 64.0
                    && peak(&capped) <= 64.0
                    && cap_ok(&capped)
                    && !uncapped.truncated
                    && uncapped.stored >= HUNDRED_MIB,
            ),
            note: format!(
                "nix_bin is a script printing 100 MiB of plain lines (stand-in, disclosed: it isolates our pipe → file → \
                 zstd path from nix's own speed); uncapped run (log_max_bytes = 200 MiB) stored {} bytes in {:.2} s; \
                 capped run (64 MiB default) stored {} bytes, truncated {}, marker {}",
                uncapped.stored, uncapped.seconds, capped.stored, capped.truncated, capped.marker
            ),
            load: 0.0,
            data: json!({"uncapped": {"seconds": uncapped.seconds, "stored": uncapped.stored, "hwm_kib": uncapped.peak.hwm_kib},
                         "capped": {"seconds": capped.seconds, "stored": capped.stored, "hwm_kib": capped.peak.hwm_kib},
                         "producer_seconds": producer_secs}),
        },
    ])
}

/// Wrapper overhead: our build of a trivial flake against `nix flake
/// check` by hand on the same flake, alternated.
fn wrapper(ctx: &Ctx) -> Res<Vec<Row>> {
    let dir = ctx.root.join("wrapper");
    let mut d = Daemon::configure(&dir, "")?;
    d.spawn()?;
    let repo = d.create_repo("wrap")?;
    let nonce = format!("wrap-{}", epoch_ms() as u64);
    let commit = fast_import(
        &repo,
        "main",
        1,
        &flake("echo hello; echo ok > $out", &nonce),
    )?
    .remove(0);
    let flake_ref = format!(
        "git+file://{}?ref=refs%2Fheads%2Fmain&rev={commit}",
        repo.display()
    );
    let home = d.state().join("home");
    let ours = |d: &Daemon| -> Res<(f64, f64, f64)> {
        let t = Instant::now();
        let (status, body) = d.post(
            "/api/builds",
            &json!({"repo": "wrap", "branch": "main", "commit": commit}),
        )?;
        let id = body["id"]
            .as_i64()
            .ok_or_else(|| format!("enqueue answered {status}: {body}"))?;
        let build = d.wait_final(id, Duration::from_secs(120))?;
        let wall = t.elapsed().as_secs_f64() * 1000.0;
        if build["status"] != "success" {
            return Err(format!("the trivial build failed: {build}"));
        }
        let created = build["created_ms"].as_f64().unwrap_or(f64::NAN);
        let started = build["started_ms"].as_f64().unwrap_or(f64::NAN);
        let duration = build["duration_ms"].as_f64().unwrap_or(f64::NAN);
        Ok((started + duration - created, wall, started - created))
    };
    let hand = || -> Res<f64> {
        let t = Instant::now();
        let out = Command::new("nix")
            .args([
                "flake",
                "check",
                "--print-build-logs",
                "--keep-going",
                &flake_ref,
            ])
            .env("NIX_CONFIG", NIX_CONFIG)
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .output()
            .map_err(err("nix"))?;
        let elapsed = t.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() {
            return Err(format!(
                "nix flake check by hand failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(elapsed)
    };
    // Warm-up: the first build realises the check; both then find it built.
    ours(&d)?;
    hand()?;
    const N: usize = 10;
    let (mut server, mut wall, mut claim, mut by_hand) = (vec![], vec![], vec![], vec![]);
    for i in 0..N {
        for step in 0..2 {
            if (i + step) % 2 == 0 {
                let (s, w, c) = ours(&d)?;
                server.push(s);
                wall.push(w);
                claim.push(c);
            } else {
                by_hand.push(hand()?);
            }
        }
    }
    d.stop();
    let (s, w, c, h) = (
        summary(&server),
        summary(&wall),
        summary(&claim),
        summary(&by_hand),
    );
    let overhead = s.p50 - h.p50;
    let allowed = (0.03 * h.p50).max(300.0);
    Ok(vec![Row {
        figure: "wrapper overhead (trivial flake)".into(),
        measured: format!(
            "+{} p50 (our build: p50 {} enqueue → finished)",
            ms(overhead),
            ms(s.p50)
        ),
        floor: format!(
            "{} (`nix flake check -L --keep-going` by hand, p50)",
            ms(h.p50)
        ),
        ratio: ratio(s.p50, h.p50),
        goal: "≤ max(300 ms, 3 %)".into(),
        met: Some(overhead <= allowed),
        note: format!(
            "{N} of each, alternated, after one warm-up each (the check is already built, as on a re-run); \
             real nix with the same HOME; ours = `created_ms` → finished (server); seen by the polling \
             client p50 {}; enqueue → running with real nix p50 {} · max {}",
            ms(w.p50),
            ms(c.p50),
            ms(c.max)
        ),
        load: 0.0,
        data: json!({"ours_server_ms": s, "ours_client_ms": w, "by_hand_ms": h, "enqueue_to_running_ms": c}),
    }])
}

/// Concurrent clients of the cache bench.
const CACHE_CLIENTS: usize = 8;

/// Runs `nix copy --from <from> --to <chroot store> <path>` for every store
/// in `stores` at once; returns the wall time of the slowest.
fn copies(from: &str, public_key: &str, path: &str, stores: &[PathBuf]) -> Res<f64> {
    let t = Instant::now();
    let children: Vec<_> = stores
        .iter()
        .map(|store| {
            Command::new("nix")
                .args(["copy", "--from", from, "--to"])
                .arg(store)
                .args(["--trusted-public-keys", public_key, path])
                .env("NIX_CONFIG", NIX_CONFIG)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(err("nix copy"))
        })
        .collect::<Res<_>>()?;
    for child in children {
        let out = child.wait_with_output().map_err(err("nix copy"))?;
        if !out.status.success() {
            return Err(format!(
                "nix copy --from {from} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    for store in stores {
        let copy = store.join(path.trim_start_matches('/'));
        let size = std::fs::metadata(&copy)
            .map_err(err("copied output"))?
            .len();
        if size != HUNDRED_MIB {
            return Err(format!("{} has {size} bytes", copy.display()));
        }
    }
    Ok(seconds)
}

/// Fresh empty chroot stores under `dir`.
fn empty_stores(dir: &Path, label: &str) -> Res<Vec<PathBuf>> {
    (0..CACHE_CLIENTS)
        .map(|i| {
            let store = dir.join(format!("{label}-{i}"));
            if store.exists() {
                std::fs::remove_dir_all(&store).map_err(err("old store"))?;
            }
            Ok(store)
        })
        .collect()
}

/// Binary cache: a 100 MiB output (half text, half random bytes) served
/// from `/nix-cache/` to 8 concurrent `nix copy` clients, each into its own
/// empty chroot store, against the same 8 copies from a `file://` cache
/// (zstd, signed with the same key) of the same bytes.
fn cache(ctx: &Ctx) -> Res<Vec<Row>> {
    use std::os::unix::fs::PermissionsExt;
    let dir = ctx.root.join("cache");
    std::fs::create_dir_all(&dir).map_err(err("dir"))?;
    let nix = |args: &[&str], stdin: Option<&Path>| -> Res<String> {
        let mut command = Command::new("nix");
        command.args(args).env("NIX_CONFIG", NIX_CONFIG);
        if let Some(file) = stdin {
            command.stdin(std::fs::File::open(file).map_err(err("stdin"))?);
        }
        let out = command.output().map_err(err("nix"))?;
        if !out.status.success() {
            return Err(format!(
                "nix {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let key = dir.join("bench.secret");
    std::fs::write(
        &key,
        nix(&["key", "generate-secret", "--key-name", "bench-1"], None)?,
    )
    .map_err(err("key"))?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(err("key mode"))?;
    let public = nix(&["key", "convert-secret-to-public"], Some(&key))?;

    let mut d = Daemon::configure(
        &dir.join("daemon"),
        &format!(
            "cache_serve = true\ncache_secret_key_file = \"{}\"\n",
            key.display()
        ),
    )?;
    d.spawn()?;
    let repo = d.create_repo("cache")?;
    let half = HUNDRED_MIB / 2;
    let script = format!(
        "(/usr/bin/yes {LINE} | /usr/bin/head -c {half}; /usr/bin/head -c {half} /dev/urandom) > $out"
    );
    let commit = fast_import(
        &repo,
        "main",
        1,
        &flake(&script, &format!("cache-{}", epoch_ms() as u64)),
    )?
    .remove(0);
    let (status, body) = d.post(
        "/api/builds",
        &json!({"repo": "cache", "branch": "main", "commit": commit}),
    )?;
    let id = body["id"]
        .as_i64()
        .ok_or_else(|| format!("enqueue answered {status}: {body}"))?;
    let build = d.wait_final(id, Duration::from_secs(240))?;
    if build["status"] != "success" {
        return Err(format!("the 100 MiB build did not succeed: {build}"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let path = loop {
        let (_, build) = d.get(&format!("/api/builds/{id}"))?;
        if let Some(path) = build["cache"]["outputs"][0]["path"].as_str() {
            break path.to_string();
        }
        if Instant::now() > deadline {
            return Err(format!("the output was never recorded: {build}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    // The floor's cache: the same path, compressed and signed the same way.
    let file_cache = dir.join("file-cache");
    let _ = std::fs::remove_dir_all(&file_cache);
    nix(
        &[
            "copy",
            "--to",
            &format!(
                "file://{}?compression=zstd&secret-key={}",
                file_cache.display(),
                key.display()
            ),
            &path,
        ],
        None,
    )?;
    let served = format!("http://127.0.0.1:{}/nix-cache", d.port);
    let file_url = format!("file://{}", file_cache.display());
    // Alternated, twice each; the better of each is kept (a shared machine).
    let mut ours = f64::INFINITY;
    let mut floor = f64::INFINITY;
    for round in 0..2 {
        let stores = empty_stores(&dir, &format!("floor{round}"))?;
        floor = floor.min(copies(&file_url, &public, &path, &stores)?);
        for store in &stores {
            let _ = std::fs::remove_dir_all(store);
        }
        let stores = empty_stores(&dir, &format!("ours{round}"))?;
        ours = ours.min(copies(&served, &public, &path, &stores)?);
        for store in &stores {
            let _ = std::fs::remove_dir_all(store);
        }
    }
    let peak = d.mem();
    let (_, metrics) = http(d.port, "GET", "/metrics", None, None)?;
    let served_bytes = metrics
        .as_str()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("procurator_cache_served_bytes_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN);
    d.stop();
    let total_mib = (CACHE_CLIENTS as u64 * HUNDRED_MIB) as f64 / 1048576.0;
    Ok(vec![Row {
        figure: format!("binary cache: a 100 MiB output to {CACHE_CLIENTS} concurrent nix clients"),
        measured: format!(
            "{ours:.1} s ({:.0} MiB/s of NAR in all); daemon peak RSS {:.1} MiB",
            total_mib / ours,
            mib(peak.hwm_kib)
        ),
        floor: format!(
            "{floor:.1} s ({:.0} MiB/s): the same {CACHE_CLIENTS} `nix copy` from a file:// cache (zstd, signed) of the same bytes",
            total_mib / floor
        ),
        ratio: ratio(ours, floor),
        goal: "≤ 2× the floor; RSS ≤ 64 MiB".into(),
        met: Some(ours <= 2.0 * floor && mib(peak.hwm_kib) <= 64.0),
        note: format!(
            "each client: `nix copy --from <cache> --to <empty chroot store>` with the daemon's key trusted \
             (signature and NAR hash checked); output half text, half random; {:.0} MiB of zstd sent per round \
             in all; best of 2 alternated rounds",
            served_bytes / 2.0 / 1048576.0
        ),
        load: 0.0,
        data: json!({"ours_seconds": ours, "floor_seconds": floor, "clients": CACHE_CLIENTS,
                     "served_bytes_total": served_bytes, "hwm_kib": peak.hwm_kib}),
    }])
}

/// Builds of a check printing 20 MB, alternately alone (one reading
/// follower) and with 16 clients that ask for its events or its log and
/// never read: the stalled clients must cost the build nothing noticeable
/// and the daemon a bounded amount of memory (issue 15). Issue 15's fault
/// test proves the daemon keeps answering; how much the clients slow it is
/// measured here, where timing belongs.
fn stalled(ctx: &Ctx) -> Res<Vec<Row>> {
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
