//! A full disk (mounts a tmpfs, so needs root; skipped, loudly, without it).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, Daemon, Work, nonce};
use crate::{assert_healthy, database, integrity_ok, status_of, tree};

#[test]
fn a_full_disk_fails_the_build_as_infrastructure_and_the_daemon_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = common::Tmpfs::mount(&dir.path().join("state"), "32m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs (not root?)");
        return;
    };
    // No periodic scan: it would queue the branch `later` on its own.
    let mut daemon = Daemon::configure(
        dir.path(),
        "log_max_bytes = 1073741824\nmax_retries = 0\nkill_grace_secs = 2\nscan_interval_secs = 86400",
        &[],
    );
    daemon.spawn();
    daemon.create_repo("r");
    let work = Work::clone(&daemon.repo_path("r"));
    // A build that works, and a commit to enqueue later.
    let ok = work.commit_flake(&[("fine", &common::passing(&nonce("fine")))]);
    work.push(&["HEAD:refs/heads/main"]);
    let first = daemon.builds()[0]["id"].as_i64().unwrap();
    assert_eq!(status_of(&daemon.wait_final(first)), "success");
    let later = work.commit_flake(&[("later", &common::passing(&nonce("later")))]);
    work.push(&[&format!("{later}:refs/keep/later")]);
    common::create_branches(&daemon.repo_path("r"), [("later", later.as_str())]);
    // A check that prints ~48 MiB into a disk with a few MiB left.
    let flood = format!(
        "echo {}; /usr/bin/yes 0123456789abcdefghijklmnopqrstuvwxyz | /usr/bin/head -c 50000000; echo ok > $out",
        nonce("flood")
    );
    work.commit_flake(&[("flood", &flood)]);
    let filler = daemon.state().join("filler");
    common::fill(&filler, &fs, 6 << 20);
    let events = daemon.event_lines();
    let out = work.push(&["HEAD:refs/heads/flood"]);
    assert!(out.contains("queued"), "{out}");
    let id = daemon
        .builds()
        .iter()
        .find(|b| b["branch"] == "flood")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let build = daemon.wait_build(id, Duration::from_secs(120), |b| {
        matches!(status_of(b), "success" | "failed" | "cancelled")
    });
    assert_eq!(status_of(&build), "failed", "{build}\n{}", daemon.log());
    assert_eq!(build["failure_kind"], "infrastructure", "{build}");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("No space left on device") || summary.contains("disk is full"),
        "the reason is named: {summary:?}"
    );
    // Still full: at most the daemon's released space reserve is free, too
    // little to make it again.
    let free = fs.available();
    assert!(
        free < procurator_ci::storage::store::RESERVE_BYTES
            + 2 * procurator_ci::storage::store::LOW_WATER_BYTES,
        "the disk is still full: {free} bytes free"
    );
    // Reads and events still work.
    assert_healthy(&mut daemon);
    let (status, listing) = daemon.get("/api/builds");
    assert_eq!(status, 200, "{listing}");
    let (status, _) = daemon.get(&format!("/api/builds/{id}"));
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut finished_seen = false;
    while !finished_seen && Instant::now() < deadline {
        if let Ok(line) = events.recv_timeout(Duration::from_millis(200)) {
            finished_seen |= line.starts_with("event: build.finished");
        }
    }
    assert!(finished_seen, "the event stream announced the failure");
    let log = daemon.log_of(id);
    assert!(
        log.contains("procurator-ci"),
        "the log is readable: {log:.200}"
    );
    // Enqueue while full: a clear 503, nothing written.
    let before = daemon.builds().len();
    let files_before = tree(&daemon.state());
    let (status, reply) = daemon.post(
        "/api/builds",
        &json!({"repo": "r", "branch": "later", "commit": later}),
    );
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("disk is full"), "{message}");
    assert_eq!(daemon.builds().len(), before, "no build row was written");
    assert_eq!(tree(&daemon.state()), files_before, "no file was written");
    integrity_ok(&database(&daemon));
    // Space returns: enqueues and builds work again.
    std::fs::remove_file(&filler).unwrap();
    let (status, reply) = daemon.post(
        "/api/builds",
        &json!({"repo": "r", "branch": "later", "commit": later}),
    );
    assert_eq!(status, 201, "{reply}\n{}", daemon.log());
    let again = daemon.wait_final(reply["id"].as_i64().unwrap());
    assert_eq!(status_of(&again), "success", "{again}");
    let (status, reply) = daemon.post(
        &format!("/api/builds/{ok_id}/rebuild", ok_id = first),
        &json!({}),
    );
    assert_eq!(status, 201, "{reply}");
    assert_eq!(
        status_of(&daemon.wait_final(reply["id"].as_i64().unwrap())),
        "success"
    );
    assert_eq!(daemon.build(first)["commit"], ok.as_str());
    integrity_ok(&database(&daemon));
    assert_healthy(&mut daemon);
    drop(daemon);
    drop(fs);
}
