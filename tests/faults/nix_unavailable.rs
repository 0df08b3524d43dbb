//! An unusable nix.

use serde_json::{Value, json};

use crate::common::{self, Daemon, Work, nonce};
use crate::{assert_healthy, script, status_of};

#[test]
fn unreachable_or_broken_nix_fails_as_the_hosts_fault_after_backoff_and_the_daemon_lives() {
    let scratch = tempfile::tempdir().unwrap();
    let crashing = script(
        &scratch.path().join("nix-crashes"),
        "echo 'nix: about to crash'\nkill -SEGV $$",
    );
    let not_executable = scratch.path().join("nix-not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    // (what, nix_bin, the daemon's environment, what the summary says, the
    // failure kind: an unreachable Nix daemon and a nix_bin that is missing,
    // cannot run or is not nix are the host's setup; a nix that crashes is
    // the CI's).
    type Case<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 5] = [
        // The real nix told to use a Nix daemon that is not there.
        (
            "no nix daemon",
            "nix".to_string(),
            &[(
                "NIX_REMOTE",
                "unix:///nonexistent/procurator-ci-test/socket",
            )],
            "cannot connect",
            "host",
        ),
        (
            "nix crashes",
            crashing.display().to_string(),
            &[],
            "signal",
            "infrastructure",
        ),
        (
            "nix not executable",
            not_executable.display().to_string(),
            &[],
            "cannot run: not executable",
            "host",
        ),
        (
            "nix missing",
            "/nonexistent/procurator-ci-test/nix".to_string(),
            &[],
            "cannot run: not found",
            "host",
        ),
        // A real program, but not nix: it refuses nix's arguments.
        ("not nix", "/bin/ls".to_string(), &[], "is not nix", "host"),
    ];
    for (what, nix_bin, env, reason, kind) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::configure(
            dir.path(),
            &format!("nix_bin = \"{nix_bin}\"\nmax_retries = 2\nretry_backoff_secs = 1"),
            env,
        );
        // The harness sets `retry_backoff_secs = 0`; a TOML key may appear
        // once, so drop the harness's.
        let config = std::fs::read_to_string(&daemon.config)
            .unwrap()
            .replace("retry_backoff_secs = 0\n", "");
        std::fs::write(&daemon.config, config).unwrap();
        daemon.spawn();
        daemon.create_repo("r");
        let work = Work::clone(&daemon.repo_path("r"));
        work.commit_flake(&[("x", &common::passing(&nonce("unreachable")))]);
        work.push(&["HEAD:refs/heads/main"]);
        let id = daemon.builds()[0]["id"].as_i64().unwrap();
        let build = daemon.wait_final(id);
        assert_eq!(status_of(&build), "failed", "{what}: {build}");
        assert_eq!(build["failure_kind"], kind, "{what}: {build}");
        assert_eq!(build["diagnosis"]["retried"], true, "{what}: {build}");
        let summary = build["failure_summary"].as_str().unwrap_or_default();
        assert!(summary.contains(reason), "{what}: {summary:?}");
        if kind == "host" && what != "no nix daemon" {
            // What to change, and where.
            assert!(
                summary.contains(&format!("nix_bin `{nix_bin}`"))
                    && summary.contains("PROCURATOR_CI_NIX_BIN"),
                "{what}: {summary:?}"
            );
            let hint = build["diagnosis"]["hint"].as_str().unwrap();
            assert!(
                hint.contains("nix_bin") && hint.contains("PROCURATOR_CI_NIX_BIN"),
                "{what}: {hint:?}"
            );
        }
        assert_eq!(build["retry_count"], 2, "{what}: {build}");
        let attempts = build["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 3, "{what}: {build}");
        // Backoff: 1 s, then 2 s, between the end of one attempt and the
        // start of the next.
        let ms = |a: &Value, key: &str| {
            chrono::DateTime::parse_from_rfc3339(a[key].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        };
        for (n, expected) in [(1usize, 1000i64), (2, 2000)] {
            let gap = ms(&attempts[n], "started_at") - ms(&attempts[n - 1], "finished_at");
            assert!(
                gap >= expected - 50,
                "{what}: retry {n} came {gap} ms after the failure, backoff is {expected} ms: {build}"
            );
        }
        assert_healthy(&mut daemon);
        // A second build meets the same fate; the daemon still lives.
        let (status, reply) = daemon.post(&format!("/api/builds/{id}/rebuild"), &json!({}));
        assert_eq!(status, 201, "{reply}");
        let again = daemon.wait_final(reply["id"].as_i64().unwrap());
        assert_eq!(again["failure_kind"], kind, "{what}: {again}");
        assert_healthy(&mut daemon);
    }
}
