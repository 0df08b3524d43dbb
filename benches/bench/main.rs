//! procurator-ci's benchmark suite (issue 7): every figure of the table in
//! docs/performance.md, measured against the real release binary on
//! loopback, each with a floor measured in the same run.
//!
//! `scripts/bench` builds the release binary and runs this; `scripts/bench
//! list sse` runs only the named benches. Results are printed as a table and
//! written to `target/bench/results.json`. Every bench is bounded in time
//! and requests; the whole suite takes a few minutes on 2 cores.

mod branches;
mod builders;
mod cache;
mod enqueue;
mod list;
mod logs;
mod push;
mod refs;
mod sse;
mod stalled;
mod startup;
mod support;
mod wrapper;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use support::*;

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
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

pub(crate) struct Ctx {
    root: PathBuf,
    rt: tokio::runtime::Runtime,
}

type Bench = fn(&Ctx) -> Res<Vec<Row>>;

const BENCHES: &[(&str, Bench)] = &[
    ("footprint", startup::footprint),
    ("claim", startup::claim),
    ("push", push::push),
    ("enqueue", enqueue::enqueue_rate),
    ("supersede", enqueue::supersede_latency),
    ("list", list::list),
    ("branches", branches::branches),
    ("refs", refs::refs),
    ("sse", sse::sse),
    ("logs", logs::logs),
    ("stalled", stalled::stalled),
    ("wrapper", wrapper::wrapper),
    ("cache", cache::cache),
    ("builders", builders::builders),
];

/// Output line of the 100 MiB check: 99 characters and a newline.
pub(crate) const LINE: &str = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456";
pub(crate) const HUNDRED_MIB: u64 = 100 * 1024 * 1024;

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

pub(crate) fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "-".into()
    }
}

pub(crate) fn write_script(path: &Path, text: &str) -> Res<PathBuf> {
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
pub(crate) fn blocking_nix(dir: &Path) -> Res<PathBuf> {
    std::fs::create_dir_all(dir).map_err(err("dir"))?;
    write_script(
        &dir.join("nix-blocking"),
        "#!/bin/sh\ncase \" $* \" in *\" check \"*) exec sleep 600;; esac\necho '{}'\n",
    )
}

/// POST /api/builds. Concurrent benches give each request a branch of its
/// own: a newer commit on the same branch would cancel the older builds
/// (`cancel_superseded`), which is not the path measured.
pub(crate) fn post_build(token: &str, repo: &str, branch: &str, commit: &str) -> Vec<u8> {
    let body = json!({"repo": repo, "branch": branch, "commit": commit}).to_string();
    request_bytes("POST", "/api/builds", Some(token), Some(&body))
}

/// A cheap deterministic pseudo-random stream.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Watches build `id` until it is final, sampling the daemon's memory.
pub(crate) fn follow(d: &Daemon, id: i64, timeout: Duration) -> Res<(Value, Mem)> {
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
