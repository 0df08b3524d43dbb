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
