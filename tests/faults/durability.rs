//! Durability of acknowledged enqueues.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{self, Daemon};
use crate::{Rng, branch_per_commit, database, fast_commits, integrity_ok, script};

#[test]
fn ten_thousand_concurrent_enqueues_with_kill_9_lose_no_acknowledged_build() {
    let mut rng = Rng::new("durable");
    let scratch = tempfile::tempdir().unwrap();
    // Builds must not finish (their rows would change); one stand-in nix
    // that waits keeps the only worker busy, so the test measures enqueues.
    let nix = script(
        &scratch.path().join("nix"),
        "case \"$2\" in show) echo '{}'; exit 0;; esac\nexec /bin/sleep 600",
    );
    let mut daemon = Daemon::start(&format!(
        "nix_bin = \"{}\"\nworkers = 1\nkill_grace_secs = 1\ncancel_superseded = false",
        nix.display()
    ));
    daemon.create_repo("r");
    const TOTAL: usize = 10_000;
    const CLIENTS: usize = 8;
    let commits = fast_commits(&daemon.repo_path("r"), TOTAL, "durable");
    // The daemon builds only branches the repository has. (The scan at the
    // restart queues the ones not yet requested: each request then answers
    // with that build, and it is still one build per branch.)
    branch_per_commit(&daemon.repo_path("r"), &commits);
    let base = daemon.base();
    let token = daemon.token();
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<(i64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let retried = Arc::new(AtomicUsize::new(0));
    let kill_at = rng.range(500, 9_000) as usize;
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (commits, base, token, next, acked, results, retried) = (
                commits.clone(),
                base.clone(),
                token.clone(),
                next.clone(),
                acked.clone(),
                results.clone(),
                retried.clone(),
            );
            std::thread::spawn(move || {
                let agent = common::agent_with_timeout(Duration::from_secs(30));
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= TOTAL {
                        return;
                    }
                    let body =
                        json!({"repo": "r", "branch": format!("b{i}"), "commit": commits[i]})
                            .to_string();
                    // A client retries what the kill cut off (the same
                    // request: a build already queued answers 200 with
                    // itself) until the restarted daemon acknowledges it.
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let response = agent
                            .post(format!("{base}/api/builds"))
                            .header("Authorization", &format!("Bearer {token}"))
                            .content_type("application/json")
                            .send(&body);
                        match response {
                            Ok(mut r) if r.status() == 201 || r.status() == 200 => {
                                let text = r.body_mut().read_to_string().unwrap();
                                let build: Value = serde_json::from_str(&text).unwrap();
                                assert_eq!(build["commit"], commits[i]);
                                results
                                    .lock()
                                    .unwrap()
                                    .push((build["id"].as_i64().unwrap(), commits[i].clone()));
                                acked.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            other => {
                                if let Ok(r) = &other {
                                    assert_eq!(r.status(), 503, "refused with {}", r.status());
                                }
                                retried.fetch_add(1, Ordering::Relaxed);
                                assert!(Instant::now() < deadline, "never acknowledged: {other:?}");
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    while acked.load(Ordering::Relaxed) < kill_at {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "enqueues stalled: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill9();
    let killed_after = acked.load(Ordering::Relaxed);
    daemon.spawn();
    for client in clients {
        client.join().unwrap();
    }
    let elapsed = started.elapsed();
    // Killed right after the last acknowledgement too.
    daemon.kill9();
    let results = results.lock().unwrap().clone();
    let conn = database(&daemon);
    integrity_ok(&conn);
    let mut stored: HashMap<i64, String> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT id, commit_hash FROM builds").unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        for row in rows {
            let (id, commit) = row.unwrap();
            stored.insert(id, commit);
        }
    }
    let mut seen = BTreeMap::new();
    for (id, commit) in &results {
        // The same id twice only for a retried request of the same commit.
        if let Some(previous) = seen.insert(*id, commit) {
            assert_eq!(previous, commit, "id {id} acknowledged for two commits");
        }
        assert_eq!(
            stored.get(id),
            Some(commit),
            "acknowledged build {id} ({commit}) is not in the database"
        );
    }
    eprintln!(
        "{} acknowledged ({killed_after} before the kill), {} retries, {} rows, {elapsed:?}",
        results.len(),
        retried.load(Ordering::Relaxed),
        stored.len()
    );
    assert_eq!(
        results.len(),
        TOTAL,
        "every request was acknowledged in the end"
    );
    assert_eq!(stored.len(), TOTAL, "one build per commit, none twice");
}
