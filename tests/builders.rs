//! Nix's remote builders, real (issue 22): two builder hosts of
//! scripts/nix-builders (each its own store, nix-daemon and sshd on a
//! loopback address, Nix 2.26), reached over SSH with a generated key and
//! their host keys; the daemon's nix (the host's) gets `builders` and
//! `max-jobs = 0`, so every check is built remotely.

mod common;

use std::time::{Duration, Instant};

use common::{Builders, Work, address, daemon_with, daemon_with_env, keygen, nonce, public_key};
use serde_json::Value;

fn checks(build: &Value) -> Vec<Value> {
    build["checks"].as_array().cloned().unwrap_or_default()
}

/// A check script that waits `secs` seconds on the builder.
fn waiting(secs: u32) -> String {
    format!("echo {}; /bin/sleep {secs}; echo ok > $out", nonce("wait"))
}

/// The processes whose command line names `address`: what nix left of its
/// connections to a builder.
fn processes_naming(address: &str) -> Vec<String> {
    common::all_pids()
        .into_iter()
        .map(common::cmdline)
        .filter(|c| c.contains(&format!("@{address}")))
        .collect()
}

/// Which of the two builders runs build `id`'s one check, as the live
/// progress says it: its index and its URI.
fn running_on(daemon: &common::Daemon, id: i64, builders: &Builders) -> (usize, String) {
    let running = daemon.wait_build(id, Duration::from_secs(60), |b| {
        checks(b).iter().any(|c| {
            c["status"] == "running"
                && c["machine"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("ssh-ng://"))
        })
    });
    let machine = checks(&running)[0]["machine"].as_str().unwrap().to_string();
    let index = (0..2)
        .find(|i| builders.uri(*i) == machine)
        .expect("one of ours");
    (index, machine)
}

/// That `build` passed on its second attempt, built on `machine`.
fn retried_on(build: &Value, machine: &str) {
    assert_eq!(build["status"], "success", "{build}");
    let attempts = build["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{build}");
    assert_eq!(attempts[0]["outcome"], "retry", "{build}");
    assert_eq!(
        attempts[1]["machines"],
        serde_json::json!([machine]),
        "{build}"
    );
}

/// The daemon's line scheduling the retry, which blames the host.
fn hosts_retry(daemon: &common::Daemon) -> String {
    let log = daemon.log();
    let retry = log
        .lines()
        .find(|l| l.contains("Scheduling retry for build"))
        .unwrap_or_else(|| panic!("no retry: {log}"))
        .to_string();
    assert!(retry.contains("\"failure_kind\":\"host\""), "{retry}");
    retry
}

#[test]
fn checks_spread_over_two_builders_and_each_says_where() {
    let Some(builders) = Builders::start(2) else {
        return;
    };
    let daemon = daemon_with(&builders.all(), "");
    daemon.create_repo("spread");
    let work = Work::clone(&daemon.repo_path("spread"));
    let scripts: Vec<(String, String)> = (0..4).map(|i| (format!("c{i}"), waiting(2))).collect();
    let named: Vec<(&str, &str)> = scripts
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    let commit = work.commit_flake(&named);
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "success", "{build}");
    let machines: Vec<String> = checks(&build)
        .iter()
        .map(|c| c["machine"].as_str().unwrap_or_default().to_string())
        .collect();
    let (first, second) = (builders.uri(0), builders.uri(1));
    for machine in &machines {
        assert!(*machine == first || *machine == second, "{build}");
    }
    assert!(
        machines.contains(&first) && machines.contains(&second),
        "{machines:?}"
    );
    let attempts = build["attempts"].as_array().unwrap();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(
        attempts[0]["machines"],
        serde_json::json!(expected),
        "{build}"
    );
    // The journal's fields (here its JSON twin): where the build ran.
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("Build succeeded") && l.contains(&format!("\"build_id\":{id}")))
        .unwrap_or_else(|| panic!("no end of build {id}: {log}"));
    assert!(line.contains(&first) && line.contains(&second), "{line}");
    let (_, metrics) = daemon.request_text("GET", "/metrics", None, Some(&daemon.token()));
    for uri in [&first, &second] {
        assert!(
            metrics.contains(&format!(
                "procurator_machine_attempts_total{{machine=\"{uri}\",result=\"success\"}} 1"
            )),
            "{metrics}"
        );
    }
}

#[test]
fn a_builder_killed_mid_build_is_the_hosts_and_the_retry_passes_on_the_other() {
    let Some(mut builders) = Builders::start(2) else {
        return;
    };
    let daemon = daemon_with(&builders.all(), "max_retries = 2");
    daemon.create_repo("lost");
    let work = Work::clone(&daemon.repo_path("lost"));
    let commit = work.commit_flake(&[("slow", &waiting(6))]);
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let (lost, machine) = running_on(&daemon, id, &builders);
    let other = builders.uri(1 - lost);
    let address = builders.hosts[lost].address.clone();
    builders.kill(lost);
    let build = daemon.wait_final(id);
    retried_on(&build, &other);
    assert_eq!(
        build["attempts"][0]["machines"],
        serde_json::json!([machine]),
        "{build}"
    );
    assert_eq!(checks(&build)[0]["machine"], other.as_str(), "{build}");
    let retry = hosts_retry(&daemon);
    assert!(retry.contains("a build machine was lost"), "{retry}");
    assert!(retry.contains(&machine), "{retry}");
    // Nothing of the lost host's connections is left on the CI side; the
    // host itself went with its namespace.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_naming(&address).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            processes_naming(&address)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A check that prints a tick a second for `secs` seconds, then passes.
fn ticking(secs: u32) -> String {
    let ticks: Vec<String> = (1..=secs).map(|i| i.to_string()).collect();
    format!(
        "echo {}; for i in {}; do echo tick $i; /bin/sleep 1; done; echo ok > $out",
        nonce("tick"),
        ticks.join(" ")
    )
}

#[test]
fn a_frozen_builder_is_bounded_by_the_silence_limit_then_the_hosts_and_the_retry_passes() {
    let Some(builders) = Builders::start(2) else {
        return;
    };
    // ssh gives up on a machine that accepts but never answers, so the
    // retry's nix moves on to the other machine (see docs/nixos.md).
    let daemon = daemon_with_env(
        &builders.all(),
        "max_retries = 2\nmax_silent_secs = 4",
        &[("NIX_SSHOPTS", "-o ConnectTimeout=3")],
    );
    daemon.create_repo("frozen");
    let work = Work::clone(&daemon.repo_path("frozen"));
    let commit = work.commit_flake(&[("ticks", &ticking(6))]);
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let (frozen, machine) = running_on(&daemon, id, &builders);
    let other = builders.uri(1 - frozen);
    let address = builders.hosts[frozen].address.clone();
    builders.freeze(frozen);
    let build = daemon.wait_final(id);
    retried_on(&build, &other);
    let retry = hosts_retry(&daemon);
    assert!(retry.contains("max_silent_secs"), "{retry}");
    assert!(retry.contains(&format!("{machine} (")), "{retry}");
    assert!(retry.contains("which no longer answers"), "{retry}");
    let (_, first) = daemon.request_text(
        "GET",
        &format!("/api/builds/{id}/logs?attempt=1"),
        None,
        None,
    );
    assert!(
        first.contains(&format!("the build machine {machine} does not answer")),
        "{first}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_naming(&address).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            processes_naming(&address)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unreachable_builder_and_a_wrong_host_key_are_named_before_any_push() {
    let Some(builders) = Builders::start(1) else {
        return;
    };
    // Host 0 with another host's key; an address nothing listens on.
    let stranger = builders.dir.path().join("stranger");
    keygen(&stranger);
    let wrong_key = (builders.uri(0), public_key(&stranger.with_extension("pub")));
    let nowhere = format!("ssh-ng://root@{}", address());
    let machines = builders.machines(&[wrong_key.clone(), (nowhere.clone(), builders.host_key(0))]);
    let daemon = daemon_with(&machines, "");
    let deadline = Instant::now() + Duration::from_secs(120);
    let health = loop {
        let (_, health) = daemon.get("/api/health");
        if health["preflight"]["pending"] == false {
            break health;
        }
        assert!(Instant::now() < deadline, "no pre-flight: {health}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let warning = |uri: &str| {
        health["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| {
                w["code"] == "builder_unreachable"
                    && w["message"].as_str().unwrap().contains(&format!("{uri} "))
            })
            .unwrap_or_else(|| panic!("no warning for {uri}: {health}"))["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        warning(&wrong_key.0).contains("Host key verification failed"),
        "{health}"
    );
    assert!(warning(&nowhere).contains("Connection refused"), "{health}");
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("builder_unreachable") && l.contains(&nowhere)),
        "{log}"
    );
}

#[test]
fn no_builder_left_fails_as_the_host_with_nixs_reason_and_is_retried() {
    let Some(builders) = Builders::start(1) else {
        return;
    };
    let nowhere = format!("ssh-ng://root@{}", address());
    let machines = builders.machines(&[(nowhere, builders.host_key(0))]);
    let daemon = daemon_with(&machines, "max_retries = 1");
    daemon.create_repo("none");
    let work = Work::clone(&daemon.repo_path("none"));
    let commit = work.commit_flake(&[("c", &waiting(0))]);
    work.push(&["HEAD:main"]);
    let build = daemon.wait_final(daemon.build_of("main", &commit));
    assert_eq!(build["status"], "failed", "{build}");
    assert_eq!(build["failure_kind"], "host", "{build}");
    let summary = build["failure_summary"].as_str().unwrap();
    assert!(
        summary.contains("no build machine could take the build"),
        "{summary}"
    );
    assert!(summary.contains("unable to start any build"), "{summary}");
    assert_eq!(
        build["diagnosis"]["title"], "A build machine was lost or could not take the build",
        "{build}"
    );
    assert_eq!(build["attempts"].as_array().unwrap().len(), 2, "{build}");
}

#[test]
fn the_older_ssh_protocol_builds_and_names_its_machine_too() {
    let Some(builders) = Builders::start(1) else {
        return;
    };
    let legacy = builders.uri(0).replace("ssh-ng://", "ssh://");
    let machines = builders.machines(&[(legacy.clone(), builders.host_key(0))]);
    let daemon = daemon_with(&machines, "");
    daemon.create_repo("legacy");
    let work = Work::clone(&daemon.repo_path("legacy"));
    let commit = work.commit_flake(&[("c", &waiting(0))]);
    work.push(&["HEAD:main"]);
    let build = daemon.wait_final(daemon.build_of("main", &commit));
    assert_eq!(build["status"], "success", "{build}");
    assert_eq!(checks(&build)[0]["machine"], legacy.as_str(), "{build}");
}
