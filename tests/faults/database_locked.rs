//! A database locked by another process.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::Daemon;
use crate::{
    assert_healthy, branch_per_commit, database, fast_commits, integrity_ok, script, status_of,
};

#[test]
fn a_database_locked_past_the_busy_timeout_gives_503_loses_nothing_and_resumes() {
    let scratch = tempfile::tempdir().unwrap();
    let nix = script(
        &scratch.path().join("nix"),
        "case \"$2\" in show) echo '{}'; exit 0;; esac\nexit 0",
    );
    // No periodic scan: it would queue the branches made below on its own.
    let mut daemon = Daemon::start(&format!(
        "nix_bin = \"{}\"\nscan_interval_secs = 86400",
        nix.display()
    ));
    daemon.create_repo("r");
    let commits = fast_commits(&daemon.repo_path("r"), 6, "locked");
    branch_per_commit(&daemon.repo_path("r"), &commits);
    let enqueue = |daemon: &Daemon, i: usize| {
        daemon.post(
            "/api/builds",
            &json!({"repo": "r", "branch": format!("b{i}"), "commit": commits[i]}),
        )
    };
    let (status, first) = enqueue(&daemon, 0);
    assert_eq!(status, 201, "{first}");
    let first_id = first["id"].as_i64().unwrap();
    daemon.wait_final(first_id);

    // Another process takes the write lock and keeps it for 8 s, longer
    // than the daemon's 5 s busy timeout.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let db_path = daemon.state().join("ci.db");
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db_path).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(8));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let locked_at = Instant::now();
    // Reads go on, promptly.
    let t = Instant::now();
    let (status, _) = daemon.get(&format!("/api/builds/{first_id}"));
    assert_eq!(status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a read waited {:?}",
        t.elapsed()
    );
    // A write is refused with a clear 503 once the busy timeout passes.
    let t = Instant::now();
    let (status, reply) = enqueue(&daemon, 1);
    let waited = t.elapsed();
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("locked by another process"),
        "{reply}"
    );
    assert!(waited < Duration::from_secs(8), "refused after {waited:?}");
    assert!(
        locked_at.elapsed() < Duration::from_secs(8),
        "the lock was held throughout"
    );
    assert_healthy(&mut daemon);
    holder.join().unwrap();
    // Service resumes; nothing acknowledged is lost, nothing refused exists.
    let (status, reply) = enqueue(&daemon, 2);
    assert_eq!(status, 201, "{reply}");
    let second_id = reply["id"].as_i64().unwrap();
    assert_eq!(status_of(&daemon.wait_final(second_id)), "success");
    let builds = daemon.builds();
    let commits_built: BTreeSet<&str> = builds
        .iter()
        .map(|b| b["commit"].as_str().unwrap())
        .collect();
    assert_eq!(
        commits_built,
        [commits[0].as_str(), commits[2].as_str()]
            .into_iter()
            .collect(),
        "{builds:?}"
    );
    assert_eq!(status_of(&daemon.build(first_id)), "success");
    integrity_ok(&database(&daemon));
    assert_healthy(&mut daemon);
}
