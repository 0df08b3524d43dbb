//! Outcomes of nix.

use std::time::Duration;

use crate::common::{self, nonce};
use crate::{assert_gone, push_checks, push_commit, read_pid, setup, status};

#[test]
fn passing_check_succeeds_with_its_output_in_the_log() {
    let (daemon, work) = setup("max_retries = 2");
    let marker = nonce("hello-from-the-check");
    let script = common::passing(&marker);
    let id = push_checks(&daemon, &work, "main", &[("hello", &script)]);
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "success", "{build}\n{}", daemon.log_of(id));
    assert!(build["failure_kind"].is_null(), "{build}");
    assert_eq!(build["exit_code"], 0, "{build}");
    assert_eq!(build["attempt"], 1, "{build}");
    assert_eq!(build["retry_count"], 0, "{build}");
    assert!(build["duration_ms"].as_i64().unwrap() > 0, "{build}");
    let log = daemon.log_of(id);
    assert!(
        log.contains(&marker),
        "the check's output is missing from the log:\n{log}"
    );
    assert!(
        log.contains("flake check"),
        "the command is missing from the log:\n{log}"
    );
    // The flake's outputs were introspected.
    assert_eq!(
        build["outputs"]["checks"]["x86_64-linux"],
        serde_json::json!(["hello"]),
        "{build}"
    );
}

#[test]
fn failing_check_is_final_names_the_derivation_and_keeps_its_stderr() {
    let (daemon, work) = setup("max_retries = 2");
    let good = common::passing(&nonce("good"));
    let stderr_marker = nonce("broken-stderr");
    let bad = format!("echo {stderr_marker} >&2; exit 3");
    let id = push_checks(&daemon, &work, "main", &[("good", &good), ("broken", &bad)]);
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(status(&build), "failed", "{build}\n{log}");
    assert_eq!(build["failure_kind"], "check", "{build}");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("broken"),
        "summary does not name the derivation: {summary:?}"
    );
    assert!(
        !summary.contains("good"),
        "summary names a passing check: {summary:?}"
    );
    assert!(
        log.contains(&stderr_marker),
        "the check's stderr is missing:\n{log}"
    );
    assert_ne!(build["exit_code"], 0, "{build}");
    // Not retried: a check failure would fail again.
    std::thread::sleep(Duration::from_millis(500));
    let build = daemon.build(id);
    assert_eq!(status(&build), "failed", "{build}");
    assert_eq!(build["retry_count"], 0, "{build}");
    assert_eq!(build["attempt"], 1, "{build}");
    assert_eq!(build["attempts"].as_array().unwrap().len(), 1, "{build}");
}

#[test]
fn evaluation_error_fails_as_evaluation_with_the_error_text_and_its_place() {
    let (daemon, work) = setup("max_retries = 2");
    let flake = format!(
        "{{\n  outputs = {{ self }}: {{\n    checks.x86_64-linux.broken = {};\n  }};\n}}\n",
        "undefinedVariableOfTheTest"
    );
    std::fs::write(work.path().join("flake.nix"), flake).unwrap();
    let commit = work.commit("evaluation error");
    let id = push_commit(&daemon, &work, "main", &commit);
    let build = daemon.wait_final(id);
    let log = daemon.log_of(id);
    assert_eq!(status(&build), "failed", "{build}\n{log}");
    assert_eq!(build["failure_kind"], "evaluation", "{build}");
    assert_eq!(build["diagnosis"]["title"], "The flake does not evaluate");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("undefined variable")
            && summary.contains("undefinedVariableOfTheTest")
            && summary.contains("flake.nix:3:"),
        "summary lacks the evaluation error: {summary:?}\n{log}"
    );
    assert_eq!(build["retry_count"], 0, "{build}");
    assert!(log.contains("undefinedVariableOfTheTest"), "{log}");
}

#[test]
fn missing_nix_is_the_hosts_failure_after_retries_and_the_daemon_keeps_serving() {
    // The harness already sets retry_backoff_secs = 0.
    let (daemon, work) = setup("nix_bin = \"/nonexistent/nix\"\nmax_retries = 2");
    let script = common::passing(&nonce("never-runs"));
    let id = push_checks(&daemon, &work, "main", &[("x", &script)]);
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "failed", "{build}");
    assert_eq!(build["failure_kind"], "host", "{build}");
    let summary = build["failure_summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("nix_bin `/nonexistent/nix` cannot run: not found"),
        "{summary:?}"
    );
    assert!(
        summary.contains("install Nix or set nix_bin (environment: PROCURATOR_CI_NIX_BIN)"),
        "{summary:?}"
    );
    assert_eq!(build["retry_count"], 2, "{build}");
    assert_eq!(build["attempt"], 3, "{build}");
    let attempts = build["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "each attempt is recorded: {build}");
    for (n, attempt) in attempts.iter().enumerate() {
        let text = daemon
            .request_text(
                "GET",
                &format!("/api/builds/{id}/logs?attempt={}", n + 1),
                None,
                None,
            )
            .1;
        assert!(
            text.contains("cannot run: not found"),
            "attempt {} log: {text:?}",
            n + 1
        );
        assert!(!attempt["finished_at"].is_null(), "{attempt}");
    }
    // Still serving, and still accepting builds; the pre-flight says why
    // nothing can build.
    let (code, health) = daemon.get("/api/health");
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["warnings"][0]["code"], "nix_unusable", "{health}");
    assert!(
        health["warnings"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/nix") && m.contains("PROCURATOR_CI_NIX_BIN")),
        "{health}"
    );
    let again = push_checks(
        &daemon,
        &work,
        "other",
        &[("y", &common::passing(&nonce("again")))],
    );
    assert_eq!(status(&daemon.wait_final(again)), "failed");
    assert!(daemon.child.is_some());
    let (code, _) = daemon.get("/api/health");
    assert_eq!(code, 200);
}

#[test]
fn a_process_a_passing_check_leaves_behind_does_not_survive() {
    let (daemon, work) = setup("");
    let scratch = tempfile::tempdir().unwrap();
    let straggler = scratch.path().join("straggler");
    let script = format!(
        "/bin/sleep 1000 > /dev/null 2>&1 & echo $! > {}; echo done; echo ok > $out",
        straggler.display()
    );
    let id = push_checks(&daemon, &work, "main", &[("leaves_one", &script)]);
    let build = daemon.wait_final(id);
    assert_eq!(status(&build), "success", "{build}\n{}", daemon.log_of(id));
    assert_gone(&[read_pid(&straggler)], None, "after a passing check");
}
