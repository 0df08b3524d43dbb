//! Logs and events.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Daemon, nonce, passing, wait_file};
use crate::{assert_gone, database, grandchild_of, push_checks, read_pid, setup, status, ticking};

#[test]
fn a_follower_joining_mid_build_receives_exactly_the_final_log() {
    let (daemon, work) = setup("");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pid");
    // About 4 s of numbered output.
    let script = ticking(&pid_file, Some(20), "follow");
    let id = push_checks(&daemon, &work, "main", &[("follow", &script)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon.log_of(id).contains("follow tick 2") {
        assert!(
            Instant::now() < deadline,
            "no output: {}",
            daemon.log_of(id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("{}/api/builds/{id}/logs?follow=true&ansi=1", daemon.base());
    let mut response = common::agent_with_timeout(Duration::from_secs(120))
        .get(&url)
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        status(&daemon.build(id)),
        "running",
        "the follower joined too late"
    );
    let mut followed = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut followed)
        .unwrap();
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "success", "{build}");
    let log = daemon.log_of(id);
    assert!(log.contains("follow tick 19"), "{log}");
    assert_eq!(followed, log, "the followed log differs from the final one");
    // And resuming from an offset gives the rest exactly.
    let half = log.len() / 2;
    let rest = daemon
        .request_text(
            "GET",
            &format!("/api/builds/{id}/logs?offset={half}&ansi=1"),
            None,
            None,
        )
        .1;
    assert_eq!(rest.as_bytes(), &log.as_bytes()[half..]);
}

/// Reads `/api/events` on a thread and sends each `(event, data)` on.
fn sse_events(daemon: &Daemon) -> mpsc::Receiver<(String, Value)> {
    sse_events_at(daemon, "/api/events")
}

/// Events of the stream at `path`, parsed, as they arrive.
fn sse_events_at(daemon: &Daemon, path: &str) -> mpsc::Receiver<(String, Value)> {
    let url = format!("{}{path}", daemon.base());
    let response = ureq::Agent::config_builder()
        .timeout_global(None)
        .build()
        .new_agent()
        .get(&url)
        .call()
        .unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let reader = BufReader::new(response.into_body().into_reader());
        let mut kind = String::new();
        let mut data = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !kind.is_empty() {
                let value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if sender.send((std::mem::take(&mut kind), value)).is_err() {
                    return;
                }
                data.clear();
            }
        }
    });
    receiver
}

#[test]
fn an_event_stream_sees_queued_started_finished_in_order() {
    let (daemon, work) = setup("");
    let events = sse_events(&daemon);
    let script = common::passing(&nonce("events"));
    let id = push_checks(&daemon, &work, "main", &[("events", &script)]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen
        .iter()
        .any(|(k, _): &(String, Value)| k == "build.finished")
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let (kind, data) = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("events so far: {seen:?}"));
        if data["id"] == id {
            seen.push((kind, data));
        }
    }
    // Progress (`build.checks`) may come while it runs, never around it.
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        kinds[2..kinds.len() - 1]
            .iter()
            .all(|k| *k == "build.checks"),
        "{kinds:?}"
    );
    seen.retain(|(k, _)| k != "build.checks");
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["build.queued", "build.started", "build.finished"]);
    assert_eq!(seen[0].1["status"], "queued");
    assert_eq!(seen[1].1["status"], "running");
    assert_eq!(seen[2].1["status"], "success");
    assert_eq!(seen[2].1["commit"], daemon.build(id)["commit"]);
}

#[test]
fn a_log_over_the_cap_is_truncated_with_a_marker_and_the_build_succeeds() {
    let (daemon, work) = setup("log_max_bytes = 4096");
    let marker = nonce("cap");
    // About 100 KB of output.
    let script = format!(
        "i=0; while [ $i -lt 2000 ]; do echo {marker} line $i of padding padding; i=$((i+1)); done; echo ok > $out"
    );
    let id = push_checks(&daemon, &work, "main", &[("loud", &script)]);
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(status(&build), "success", "{build}\n{log}");
    let truncation = "\n[log truncated at 4096 bytes]\n";
    assert!(log.ends_with(truncation), "{log}");
    assert_eq!(log.len(), 4096 + truncation.len(), "{log}");
    assert!(log.contains(&marker), "{log}");
    assert_eq!(build["attempts"][0]["log_truncated"], true, "{build}");
}

#[test]
fn retention_deletes_only_logs_of_attempts_finished_before_the_cutoff() {
    let (mut daemon, work) = setup("log_retention_days = 1");
    let mut ids = Vec::new();
    for name in ["old", "recent", "fresh"] {
        let script = common::passing(&nonce(name));
        let id = push_checks(&daemon, &work, name, &[(name, &script)]);
        assert_eq!(status(&daemon.wait_final(id)), "success");
        ids.push(id);
    }
    let logs: Vec<String> = ids.iter().map(|id| daemon.log_of(*id)).collect();
    assert!(logs.iter().all(|l| l.contains("flake check")), "{logs:?}");
    daemon.stop();
    let hour = 3_600_000i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    {
        let db = database(&daemon);
        for (id, age) in [(ids[0], 25 * hour), (ids[1], 23 * hour)] {
            db.execute(
                "UPDATE build_attempts SET finished_at = ?2 WHERE build_id = ?1",
                [id, now - age],
            )
            .unwrap();
        }
    }
    let log_dir = daemon.state().join("logs");
    let files = |id: i64| -> Vec<PathBuf> {
        std::fs::read_dir(log_dir.join(id.to_string()))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    };
    assert!(!files(ids[0]).is_empty());
    // Retention runs when the daemon starts.
    daemon.spawn();
    let old = daemon.wait_build(ids[0], Duration::from_secs(30), |b| {
        b["attempts"][0]["log_deleted"] == true
    });
    assert_eq!(status(&old), "success", "the build itself stays: {old}");
    assert!(files(ids[0]).is_empty(), "{:?}", files(ids[0]));
    assert_eq!(daemon.log_of(ids[0]), "");
    for (i, id) in ids.iter().enumerate().skip(1) {
        let build = daemon.build(*id);
        assert_eq!(build["attempts"][0]["log_deleted"], false, "{build}");
        assert!(!files(*id).is_empty());
        assert_eq!(daemon.log_of(*id), logs[i], "a kept log changed");
    }
}

#[test]
fn a_follower_waiting_on_a_queued_build_receives_its_whole_log() {
    let (daemon, work) = setup("workers = 1\nkill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let blocker_pid = scratch.path().join("blocker");
    let blocker = push_checks(
        &daemon,
        &work,
        "main",
        &[("blocker", &ticking(&blocker_pid, None, "blocker"))],
    );
    wait_file(&blocker_pid, Duration::from_secs(30), &daemon);
    let followed_pid = scratch.path().join("followed");
    let id = push_checks(
        &daemon,
        &work,
        "other",
        &[("followed", &ticking(&followed_pid, Some(5), "followed"))],
    );
    assert_eq!(status(&daemon.build(id)), "queued");
    let follower = daemon.follow_log(id);
    // Give the follower time to park on the queued build.
    std::thread::sleep(Duration::from_secs(1));
    let (code, body) = daemon.post(
        &format!("/api/builds/{blocker}/cancel"),
        &serde_json::json!({}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&daemon.wait_final(blocker)), "cancelled");
    assert_gone(
        &[read_pid(&blocker_pid), grandchild_of(&blocker_pid)],
        None,
        "after cancel",
    );
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "success", "{build}");
    let (followed, end) = follower.join().unwrap();
    end.unwrap();
    let followed = String::from_utf8(followed).unwrap();
    let log = daemon.log_of(id);
    assert!(log.contains("followed tick 4"), "{log}");
    assert_eq!(followed, log, "the follower missed part of the log");
}

#[test]
fn a_truncated_log_still_says_why_the_build_stopped() {
    let (daemon, work) = setup("log_max_bytes = 4096\nbuild_timeout_secs = 3\nkill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pid");
    let script = format!(
        "echo $$ > {}; i=0; while [ $i -lt 500 ]; do echo line $i of padding padding padding; i=$((i+1)); done; \
         /bin/sleep 1000",
        pid_file.display()
    );
    let id = push_checks(&daemon, &work, "main", &[("loud_then_stuck", &script)]);
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(build["failure_kind"], "timeout", "{build}\n{log}");
    assert!(log.contains("[log truncated at 4096 bytes]"), "{log}");
    assert!(
        log.contains("build_timeout_secs"),
        "the reason is missing from a truncated log:\n{log}"
    );
    assert_gone(&[read_pid(&pid_file)], None, "after a timeout");
}

#[test]
fn sigterm_ends_open_log_and_event_streams_promptly() {
    let (mut daemon, work) = setup("kill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("pid");
    let id = push_checks(
        &daemon,
        &work,
        "main",
        &[("long", &ticking(&pid_file, None, "long"))],
    );
    wait_file(&pid_file, Duration::from_secs(30), &daemon);
    let events = sse_events(&daemon);
    // The stream may break when the daemon exits: what arrived is enough.
    let follower = daemon.follow_log(id);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let exit = daemon.stop();
    let took = started.elapsed();
    assert!(exit.success(), "{exit}: {}", daemon.log());
    assert!(took < Duration::from_secs(15), "stopping took {took:?}");
    let followed = String::from_utf8_lossy(&follower.join().unwrap().0).into_owned();
    assert!(followed.contains("long tick 0"), "{followed}");
    // The event stream ended too: its reader thread hung up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match events.recv_timeout(Duration::from_millis(100)) {
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            _ => assert!(Instant::now() < deadline, "the event stream stayed open"),
        }
    }
    assert_gone(
        &[read_pid(&pid_file), grandchild_of(&pid_file)],
        None,
        "after SIGTERM",
    );
}

#[test]
fn a_log_stream_of_a_queued_build_lets_other_events_through_until_it_starts() {
    let (daemon, work) = setup("workers = 1\nkill_grace_secs = 5");
    let scratch = tempfile::tempdir().unwrap();
    let busy_pid = scratch.path().join("busy");
    let busy = push_checks(
        &daemon,
        &work,
        "busy",
        &[("busy", &ticking(&busy_pid, None, "busy"))],
    );
    wait_file(&busy_pid, Duration::from_secs(30), &daemon);
    let marker = nonce("queued-log");
    let queued = push_checks(&daemon, &work, "other", &[("q", &passing(&marker))]);
    let events = sse_events_at(&daemon, &format!("/api/events?build={queued}"));
    daemon.create_repo("while-waiting");
    // (The pre-flight's `health.changed` and the running build's
    // `build.checks` may come first.)
    let (kind, data) = std::iter::from_fn(|| events.recv_timeout(Duration::from_secs(10)).ok())
        .find(|(kind, _)| kind != "health.changed" && kind != "build.checks")
        .expect("an event while the build waits");
    assert_eq!(kind, "repo.created");
    assert_eq!(data["name"], "while-waiting");
    daemon.post(
        &format!("/api/builds/{busy}/cancel"),
        &serde_json::json!({}),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = String::new();
    while !log.contains(&marker) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (kind, data) = events.recv_timeout(left).expect("the build's log");
        if kind == "build.log" && data["build"] == queued {
            log.push_str(data["text"].as_str().unwrap());
        }
    }
}
