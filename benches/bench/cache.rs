//! The binary cache serving concurrent `nix copy` clients.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;
use crate::{Ctx, HUNDRED_MIB, LINE, Row, ratio};

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
pub(crate) fn cache(ctx: &Ctx) -> Res<Vec<Row>> {
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
