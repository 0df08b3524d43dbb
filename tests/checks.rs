//! Per-check results of a real `nix flake check` on real flakes.

mod common;

use common::{Daemon, NIX_CONFIG, Work, nonce};
use serde_json::Value;

fn check<'a>(build: &'a Value, name: &str) -> &'a Value {
    build["checks"]
        .as_array()
        .expect("per-check results")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no result for {name}: {build}"))
}

/// A check's status, when the build has per-check results yet.
fn status_of<'a>(build: &'a Value, name: &str) -> Option<&'a str> {
    build["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)?["status"]
        .as_str()
}

#[test]
fn three_checks_one_failing_one_cached() {
    let daemon = Daemon::start("");
    daemon.create_repo("multi");
    let work = Work::clone(&daemon.repo_path("multi"));
    let n = nonce("check");
    let pass = format!("echo passing {n}; echo ok > $out");
    let fail = format!("echo failing {n} >&2; exit 3");
    let cached = format!("echo cached {n}; echo ok > $out");
    let commit = work.commit_flake(&[("pass", &pass), ("fail", &fail), ("cached", &cached)]);
    // Build one check beforehand, so it is already valid in the store.
    common::run_ok(
        std::process::Command::new("nix")
            .args(["build", "--no-link", ".#checks.x86_64-linux.cached"])
            .current_dir(work.path())
            .env("NIX_CONFIG", NIX_CONFIG),
    );
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "failed", "{build}");
    assert_eq!(build["failure_kind"], "check");
    assert_eq!(build["failure_summary"], "failed checks: fail", "{build}");
    let checks = build["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "{build}");
    assert_eq!(check(&build, "pass")["status"], "passed");
    assert_eq!(check(&build, "fail")["status"], "failed");
    assert_eq!(check(&build, "cached")["status"], "cached");
    for c in checks {
        assert_eq!(c["system"], "x86_64-linux");
        assert!(c["drv_path"].as_str().unwrap().ends_with(".drv"), "{c}");
    }
    let failed = check(&build, "fail");
    assert!(
        failed["log_excerpt"]
            .as_str()
            .unwrap()
            .contains(&format!("failing {n}")),
        "{failed}"
    );
    assert!(check(&build, "cached")["log_offset"].is_null());

    // Each check's offset points at its own part of the plain log.
    let log = daemon.log_of(id);
    for name in ["pass", "fail"] {
        let offset = check(&build, name)["log_offset"].as_u64().unwrap() as usize;
        let drv = check(&build, name)["drv_path"].as_str().unwrap();
        assert!(
            log[offset..].starts_with(&format!("building '{drv}'")),
            "{name} at {offset}: {:?}",
            &log[offset..(offset + 120).min(log.len())]
        );
    }
    assert!(log.contains(&format!("pass> passing {n}")), "{log}");
    assert!(
        !log.contains("@nix {"),
        "the log is rendered, not nix's JSON"
    );
}

#[test]
fn an_evaluation_error_is_attributed_to_its_check() {
    let daemon = Daemon::start("");
    daemon.create_repo("evalerr");
    let work = Work::clone(&daemon.repo_path("evalerr"));
    let n = nonce("check");
    let good = format!("echo good {n}; echo ok > $out");
    std::fs::write(
        work.path().join("flake.nix"),
        common::flake(&[("good", &good)]).replace(
            "    checks.x86_64-linux = {\n",
            "    checks.x86_64-linux = {\n      broken = builtins.throw \"broken on purpose\";\n",
        ),
    )
    .unwrap();
    let commit = work.commit("eval error");
    work.push(&["HEAD:main"]);
    let build = daemon.wait_final(daemon.build_of("main", &commit));
    assert_eq!(build["status"], "failed", "{build}");
    assert_eq!(build["failure_kind"], "evaluation");
    let broken = check(&build, "broken");
    assert_eq!(broken["status"], "not_built", "{build}");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("broken on purpose"),
        "{broken}"
    );
    assert_eq!(check(&build, "good")["status"], "passed", "{build}");
    assert!(
        build["failure_summary"]
            .as_str()
            .unwrap()
            .contains("broken (evaluation)"),
        "{build}"
    );
}

/// The `build.checks` events of build `id` received so far on `lines`.
fn checks_events(lines: &std::sync::mpsc::Receiver<String>, id: i64, into: &mut Vec<Value>) {
    let mut kind = String::new();
    while let Ok(line) = lines.try_recv() {
        if let Some(k) = line.strip_prefix("event: ") {
            kind = k.trim().to_string();
        } else if let Some(data) = line.strip_prefix("data: ")
            && kind == "build.checks"
        {
            let event: Value = serde_json::from_str(data.trim()).unwrap();
            if event["id"] == id {
                into.push(event);
            }
        }
    }
}

#[test]
fn checks_progress_live_one_build_at_a_time() {
    checks_progress_live_while_the_build_runs("");
}

/// A check that fails while another builds: nix says which only at the
/// end, the output's lock tells it at once.
#[test]
fn checks_progress_live_with_builds_at_once() {
    checks_progress_live_while_the_build_runs("nix_extra_args = [\"--max-jobs\", \"4\"]");
}

fn checks_progress_live_while_the_build_runs(config: &str) {
    let daemon = Daemon::start(config);
    daemon.create_repo("live");
    let lines = daemon.event_lines();
    let work = Work::clone(&daemon.repo_path("live"));
    let n = nonce("live");
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("release");
    let fast = common::passing(&format!("fast {n}"));
    // Runs until the test creates the marker (no sandbox: it sees /tmp).
    let slow = format!(
        "while [ ! -e {} ]; do /bin/sleep 0.1; done; echo slow {n}; echo ok > $out",
        marker.display()
    );
    let bad = format!("echo failing {n} >&2; exit 3");
    let cached = common::passing(&format!("cached {n}"));
    let commit = work.commit_flake(&[
        ("fast", &fast),
        ("slow", &slow),
        ("bad", &bad),
        ("cached", &cached),
    ]);
    common::run_ok(
        std::process::Command::new("nix")
            .args(["build", "--no-link", ".#checks.x86_64-linux.cached"])
            .current_dir(work.path())
            .env("NIX_CONFIG", NIX_CONFIG),
    );
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);

    // While `slow` waits: the others have ended, each as it did. (With
    // one build at a time, nix may end the third before it starts `slow`.)
    let build = daemon.wait_build(id, std::time::Duration::from_secs(90), |b| {
        b["progress"]["done"] == 3 && status_of(b, "slow") == Some("running")
    });
    assert_eq!(build["status"], "running", "{build}");
    assert_eq!(
        build["progress"],
        serde_json::json!({"done": 3, "total": 4})
    );
    assert_eq!(check(&build, "fast")["status"], "passed", "{build}");
    assert_eq!(check(&build, "bad")["status"], "failed", "{build}");
    assert_eq!(check(&build, "cached")["status"], "cached", "{build}");
    let slow_now = check(&build, "slow");
    assert_eq!(slow_now["status"], "running", "{build}");
    assert!(slow_now["started_ms"].as_i64().unwrap() > 0, "{slow_now}");
    assert!(slow_now["duration_ms"].is_null(), "{slow_now}");
    assert!(check(&build, "fast")["duration_ms"].as_i64().unwrap() >= 0);
    // The list says the same.
    let listed = daemon.builds().into_iter().find(|b| b["id"] == id).unwrap();
    assert_eq!(listed["progress"], build["progress"], "{listed}");
    assert_eq!(check(&listed, "slow")["status"], "running");

    // The event stream carried it, with nothing of the build left out.
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline
        && !events.iter().any(|e: &Value| e["progress"]["done"] == 3)
    {
        checks_events(&lines, id, &mut events);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let last = events
        .last()
        .unwrap_or_else(|| panic!("no build.checks event"));
    assert_eq!(
        last["progress"],
        serde_json::json!({"done": 3, "total": 4}),
        "{last}"
    );
    // Each event carries the checks that changed: together they make the
    // state, and none repeats a check as it was.
    let mut state = std::collections::BTreeMap::new();
    for event in &events {
        for c in event["checks"].as_array().unwrap() {
            let before = state.insert(c["name"].as_str().unwrap().to_string(), c.clone());
            assert_ne!(before.as_ref(), Some(c), "sent unchanged: {events:#?}");
        }
    }
    let merged = serde_json::json!({"checks": state.into_values().collect::<Vec<_>>()});
    assert_eq!(check(&merged, "fast")["status"], "passed", "{merged}");
    assert_eq!(check(&merged, "slow")["status"], "running", "{merged}");
    assert_eq!(check(&merged, "bad")["status"], "failed", "{merged}");
    assert_eq!(check(&merged, "cached")["status"], "cached", "{merged}");

    // Released: the build ends and its stored results take over.
    std::fs::write(&marker, "").unwrap();
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "failed", "{build}");
    assert!(build["progress"].is_null(), "{build}");
    assert_eq!(check(&build, "slow")["status"], "passed", "{build}");
    assert_eq!(check(&build, "fast")["status"], "passed", "{build}");
    assert_eq!(check(&build, "bad")["status"], "failed", "{build}");
    assert_eq!(check(&build, "cached")["status"], "cached", "{build}");
    assert_eq!(build["failure_summary"], "failed checks: bad", "{build}");
}

/// Pushes a failing check, a passing one and one held until `marker`
/// exists; returns the build.
fn push_fast_beside_held(daemon: &Daemon, repo: &str, marker: &std::path::Path) -> i64 {
    daemon.create_repo(repo);
    let work = Work::clone(&daemon.repo_path(repo));
    let n = nonce(repo);
    let held = format!(
        "while [ ! -e {} ]; do /bin/sleep 0.1; done; echo held {n}; echo ok > $out",
        marker.display()
    );
    let bad = format!("echo failing {n} >&2; exit 3");
    let fast = common::passing(&format!("fast {n}"));
    let commit = work.commit_flake(&[("bad", &bad), ("fast", &fast), ("held", &held)]);
    work.push(&["HEAD:main"]);
    daemon.build_of("main", &commit)
}

/// Nix 2.8 stops every build's activity only when all have ended: the
/// stored durations come from when each was seen ending, not that stop.
#[test]
fn each_check_keeps_its_own_duration_when_the_build_ends() {
    let daemon = Daemon::start("nix_extra_args = [\"--max-jobs\", \"4\"]");
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("release");
    let id = push_fast_beside_held(&daemon, "durations", &marker);
    daemon.wait_build(id, std::time::Duration::from_secs(90), |b| {
        b["progress"]["done"] == 2 && status_of(b, "held") == Some("running")
    });
    // Held well past the others' end.
    std::thread::sleep(std::time::Duration::from_secs(3));
    std::fs::write(&marker, "").unwrap();
    let build = daemon.wait_final(id);
    let duration = |name| check(&build, name)["duration_ms"].as_i64().unwrap();
    assert!(duration("held") >= 3000, "{build}");
    for fast in ["bad", "fast"] {
        assert!(duration(fast) < 3000, "{fast}: {build}");
    }
}

/// A check seen failing stays failed when the build is cancelled after;
/// the one cut short was not built.
#[test]
fn a_cancel_keeps_the_failures_already_seen() {
    let daemon = Daemon::start("nix_extra_args = [\"--max-jobs\", \"4\"]");
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("never");
    let id = push_fast_beside_held(&daemon, "cancelled", &marker);
    daemon.wait_build(id, std::time::Duration::from_secs(90), |b| {
        status_of(b, "bad") == Some("failed") && status_of(b, "held") == Some("running")
    });
    let (status, answer) = daemon.post(&format!("/api/builds/{id}/cancel"), &Value::Null);
    assert!(status == 200 || status == 202, "{status} {answer}");
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "cancelled", "{build}");
    assert_eq!(check(&build, "bad")["status"], "failed", "{build}");
    assert_eq!(check(&build, "fast")["status"], "passed", "{build}");
    assert_eq!(check(&build, "held")["status"], "not_built", "{build}");
}
