//! Our overhead over `nix flake check` by hand.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;
use crate::{Ctx, Row, ms, ratio};

/// Wrapper overhead: our build of a trivial flake against `nix flake
/// check` by hand on the same flake, alternated.
pub(crate) fn wrapper(ctx: &Ctx) -> Res<Vec<Row>> {
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
