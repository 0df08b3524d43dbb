//! `git push` → build queued, through the real hook.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::json;

use crate::support::*;
use crate::{Ctx, Row, blocking_nix, ms, ratio};

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
pub(crate) fn push(ctx: &Ctx) -> Res<Vec<Row>> {
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
