//! The failure taxonomy against real repositories and real host states:
//! every build that does not pass says what went wrong in the user's terms,
//! and only what another attempt can help is retried.
//!
//! Real `git push`, real `nix flake check` (offline: a `github:` input
//! cannot be fetched here, which is exactly the fetch failure a host without
//! network sees).

mod common;

use std::time::Duration;

use common::{Daemon, NIX_CONFIG, Work, nonce, passing};
use serde_json::Value;

/// One repository of the corpus and what its build must say.
struct Case {
    name: &'static str,
    /// Files of the commit (path, content); no `flake.nix` means none.
    files: Vec<(&'static str, String)>,
    status: &'static str,
    /// The failure kind (or `cancelled`); `None` for a build that passes.
    kind: Option<&'static str>,
    /// Words the summary (or, for a passing build, its notices) must hold.
    words: Vec<&'static str>,
}

/// A flake with `body` as its outputs' attribute set.
fn flake_with(outputs: &str) -> String {
    format!("{{\n  outputs = {{ self }}: {{\n{outputs}\n  }};\n}}\n")
}

/// A derivation for `system` running `script`.
fn drv(name: &str, system: &str, script: &str) -> String {
    format!(
        "derivation {{ name = \"{name}\"; system = \"{system}\"; builder = \"/bin/sh\"; args = [ \"-c\" {script:?} ]; }}"
    )
}

const GITHUB_INPUT: &str = "{\n  inputs.nixpkgs.url = \"github:NixOS/nixpkgs/nixos-25.11\";\n  \
    outputs = { self, nixpkgs }: {\n    checks.x86_64-linux.hello = nixpkgs.legacyPackages.x86_64-linux.hello;\n  };\n}\n";

/// A lock of the `github:` input above at a revision nobody can fetch here.
const GITHUB_LOCK: &str = r#"{
  "nodes": {
    "nixpkgs": {
      "locked": {
        "lastModified": 1700000000,
        "narHash": "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "owner": "NixOS",
        "repo": "nixpkgs",
        "rev": "0123456789abcdef0123456789abcdef01234567",
        "type": "github"
      },
      "original": { "owner": "NixOS", "ref": "nixos-25.11", "repo": "nixpkgs", "type": "github" }
    },
    "root": { "inputs": { "nixpkgs": "nixpkgs" } }
  },
  "root": "root",
  "version": 7
}
"#;

/// A flake whose check uses input `dep` (inputs are fetched lazily).
fn flake_using_dep(url: &str) -> String {
    format!(
        "{{\n  inputs.dep.url = \"{url}\";\n  outputs = {{ self, dep }}: {{\n    \
         checks.x86_64-linux = builtins.seq dep.outputs {{ }};\n  }};\n}}\n"
    )
}

/// A git repository holding a flake, under `dir`; returns its path and
/// commit.
fn dep_repo(dir: &std::path::Path) -> (String, String) {
    let repo = dir.join("dep");
    std::fs::create_dir_all(&repo).unwrap();
    common::git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("flake.nix"),
        "{ outputs = { self }: { x = 1; }; }\n",
    )
    .unwrap();
    common::git(&repo, &["add", "flake.nix"]);
    common::git(&repo, &["commit", "-q", "-m", "dep"]);
    let rev = common::git(&repo, &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    (repo.display().to_string(), rev)
}

/// `scratch` holds what the cases' flakes point to outside the daemon.
fn corpus(scratch: &std::path::Path) -> Vec<Case> {
    let n = nonce("corpus");
    let ok = |name: &str| drv(name, "x86_64-linux", &passing(&format!("{name}-{n}")));
    let (dep, dep_rev) = dep_repo(scratch);
    // A lock of `dep` at its real revision with a hash that is not its.
    let wrong_lock = format!(
        r#"{{
  "nodes": {{
    "dep": {{
      "locked": {{ "lastModified": 1700000000, "narHash": "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "ref": "main", "rev": "{dep_rev}", "revCount": 1, "type": "git", "url": "file://{dep}" }},
      "original": {{ "type": "git", "url": "file://{dep}" }}
    }},
    "root": {{ "inputs": {{ "dep": "dep" }} }}
  }},
  "root": "root",
  "version": 7
}}
"#
    );
    vec![
        Case {
            name: "passes",
            files: vec![("flake.nix", flake_with(&format!("    checks.x86_64-linux.a = {};", ok("a"))))],
            status: "success",
            kind: None,
            words: vec![],
        },
        Case {
            name: "syntax-error",
            files: vec![("flake.nix", flake_with("    checks.x86_64-linux = {\n      a = = 1;\n    };"))],
            status: "failed",
            kind: Some("evaluation"),
            words: vec!["flake.nix:4:11", "syntax error"],
        },
        Case {
            name: "undefined-variable",
            files: vec![("flake.nix", flake_with("    checks.x86_64-linux.a = nope;"))],
            status: "failed",
            kind: Some("evaluation"),
            words: vec!["flake.nix:3:29", "undefined variable", "nope"],
        },
        Case {
            name: "throw",
            files: vec![("flake.nix", flake_with(&format!(
                "    checks.x86_64-linux.a = builtins.throw \"broken on purpose\";\n    checks.x86_64-linux.b = {};",
                ok("b")
            )))],
            status: "failed",
            kind: Some("evaluation"),
            words: vec!["a (evaluation)", "broken on purpose"],
        },
        Case {
            name: "abort",
            files: vec![("flake.nix", flake_with("    checks.x86_64-linux.a = builtins.abort \"aborted on purpose\";"))],
            status: "failed",
            kind: Some("evaluation"),
            words: vec!["a (evaluation)", "aborted on purpose"],
        },
        Case {
            name: "infinite-recursion",
            files: vec![("flake.nix", "{\n  outputs = { self }: let x = x + 1; in {\n    checks.x86_64-linux.a = x;\n  };\n}\n".into())],
            status: "failed",
            kind: Some("evaluation"),
            words: vec!["infinite recursion"],
        },
        Case {
            name: "missing-import",
            files: vec![("flake.nix", flake_with("    checks.x86_64-linux.a = import ./missing.nix;"))],
            status: "failed",
            kind: Some("evaluation"),
            words: vec!["missing.nix", "does not exist"],
        },
        Case {
            name: "no-flake",
            files: vec![("README", "no flake here\n".into())],
            status: "failed",
            kind: Some("evaluation"),
            words: vec!["no flake.nix"],
        },
        Case {
            name: "not-a-derivation",
            files: vec![("flake.nix", flake_with("    checks.x86_64-linux.a = 5;"))],
            status: "failed",
            kind: Some("evaluation"),
            words: vec!["not a derivation", "checks.x86_64-linux.a"],
        },
        Case {
            name: "failing-check",
            files: vec![("flake.nix", flake_with(&format!(
                "    checks.x86_64-linux.bad = {};\n    checks.x86_64-linux.good = {};",
                drv("bad", "x86_64-linux", &format!("echo failing {n} >&2; exit 3")),
                ok("good")
            )))],
            status: "failed",
            kind: Some("check"),
            words: vec!["failed checks: bad"],
        },
        Case {
            name: "other-system-only",
            files: vec![("flake.nix", flake_with(&format!(
                "    checks.aarch64-linux.arm = {};",
                drv("arm", "aarch64-linux", "echo > $out")
            )))],
            status: "success",
            kind: None,
            words: vec!["no checks for x86_64-linux", "aarch64-linux", "arm", "not checked"],
        },
        Case {
            name: "no-checks",
            files: vec![("flake.nix", flake_with("    packages.x86_64-linux = { };"))],
            status: "success",
            kind: None,
            words: vec!["no checks for x86_64-linux: nothing was tested"],
        },
        Case {
            name: "github-input-without-lock",
            files: vec![("flake.nix", GITHUB_INPUT.into())],
            status: "failed",
            kind: Some("fetch"),
            words: vec![
                "input 'nixpkgs' (github:NixOS/nixpkgs/nixos-25.11) could not be fetched",
                "no network",
                "api.github.com",
            ],
        },
        Case {
            name: "github-input-with-lock",
            files: vec![("flake.nix", GITHUB_INPUT.into()), ("flake.lock", GITHUB_LOCK.into())],
            status: "failed",
            kind: Some("fetch"),
            words: vec![
                "input 'nixpkgs' (github:NixOS/nixpkgs/nixos-25.11) could not be fetched",
                "no network",
                "0123456789abcdef",
            ],
        },
        Case {
            // An input the outputs take but `inputs` does not declare: nix
            // looks it up in the flake registry, which it must download.
            name: "undeclared-input",
            files: vec![("flake.nix", "{\n  outputs = { self, nixpkgs }: {\n    checks.x86_64-linux.hello = nixpkgs.legacyPackages.x86_64-linux.hello;\n  };\n}\n".into())],
            status: "failed",
            kind: Some("fetch"),
            words: vec!["input 'nixpkgs'", "not declared in `inputs`", "flake registry", "no network"],
        },
        Case {
            // A local input where the administrator did not allow one: nix
            // would read it as the daemon's user, so it never runs.
            name: "local-input-outside-the-repository",
            files: vec![("flake.nix", flake_using_dep("path:/etc/procurator-ci-test"))],
            status: "failed",
            kind: Some("evaluation"),
            words: vec![
                "input 'dep' (path:/etc/procurator-ci-test) reads /etc/procurator-ci-test on the CI host, outside the repository",
                "allowed_local_inputs",
            ],
        },
        Case {
            name: "git-input-that-does-not-exist",
            files: vec![("flake.nix", flake_using_dep("git+file:///nonexistent/procurator-ci-dep"))],
            status: "failed",
            kind: Some("fetch"),
            words: vec![
                "input 'dep' (git+file:///nonexistent/procurator-ci-dep) could not be fetched: no such repository",
                // Nix 2.8 and 2.26 quote git, 2.34 says it itself.
                "/nonexistent/procurator-ci-dep",
            ],
        },
        Case {
            name: "flake-lock-of-other-contents",
            files: vec![
                ("flake.nix", flake_using_dep(&format!("git+file://{dep}"))),
                ("flake.lock", wrong_lock),
            ],
            status: "failed",
            kind: Some("evaluation"),
            // Nix 2.3x compares the lock's other fields first.
            words: vec!["flake.lock does not match an input's contents", "sha256-AAAA"],
        },
        Case {
            name: "broken-flake-lock",
            files: vec![
                ("flake.nix", flake_with(&format!("    checks.x86_64-linux.a = {};", ok("lock")))),
                ("flake.lock", "{\"version\": 7, \"root\": \"root\", \"nodes\": {\n".into()),
            ],
            status: "failed",
            kind: Some("evaluation"),
            words: vec!["flake.lock is not valid JSON"],
        },
        Case {
            name: "nix-killed",
            // The builder kills nix (its parent): nix ends by a signal
            // without a word, as when the OOM killer strikes.
            files: vec![("flake.nix", flake_with(&format!(
                "    checks.x86_64-linux.k = {};",
                drv("k", "x86_64-linux", &format!("echo {n}; kill -9 $PPID; /bin/sleep 5"))
            )))],
            status: "failed",
            kind: Some("infrastructure"),
            // Through a nix-daemon, the process killed is the daemon's.
            words: vec![if std::env::var("NIX_REMOTE").as_deref() == Ok("daemon") {
                "the Nix daemon went away"
            } else {
                "killed by signal 9"
            }],
        },
    ]
}

/// Commits `files` into a fresh clone of `repo` and pushes it to main;
/// returns the commit.
fn push_files(daemon: &Daemon, repo: &str, files: &[(&str, String)]) -> String {
    daemon.create_repo(repo);
    let work = Work::clone(&daemon.repo_path(repo));
    for (path, content) in files {
        std::fs::write(work.path().join(path), content).unwrap();
    }
    let commit = work.commit(repo);
    work.push(&["HEAD:main"]);
    commit
}

/// Writes an executable script `name` into `dir`; returns its path.
fn executable(dir: &std::path::Path, name: &str, script: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// What is wrong with `build` against `case`, if anything.
fn mismatch(case: &Case, build: &Value) -> Option<String> {
    let mut wrong = Vec::new();
    if build["status"] != case.status {
        wrong.push(format!("status {} (want {})", build["status"], case.status));
    }
    let diagnosis = &build["diagnosis"];
    match case.kind {
        Some(kind) => {
            if diagnosis["kind"] != kind {
                wrong.push(format!("kind {} (want {kind})", diagnosis["kind"]));
            }
            let title = diagnosis["title"].as_str().unwrap_or_default();
            let hint = diagnosis["hint"].as_str().unwrap_or_default();
            if title.is_empty() || hint.is_empty() || hint.contains('\n') {
                wrong.push(format!("title {title:?} and one-line hint {hint:?}"));
            }
            let retried = matches!(kind, "fetch" | "host" | "infrastructure");
            if diagnosis["retried"] != retried {
                wrong.push(format!("retried {} (want {retried})", diagnosis["retried"]));
            }
            let want_retries = if retried {
                build["max_retries"].clone()
            } else {
                0.into()
            };
            if build["retry_count"] != want_retries {
                wrong.push(format!(
                    "retry_count {} (want {want_retries})",
                    build["retry_count"]
                ));
            }
        }
        None => {
            if !diagnosis.is_null() {
                wrong.push(format!("a diagnosis on a passing build: {diagnosis}"));
            }
        }
    }
    let text = match case.kind {
        Some(_) => build["failure_summary"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        None => build["notices"]
            .as_array()
            .map(|n| {
                n.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default(),
    };
    for word in &case.words {
        if !text.contains(word) {
            wrong.push(format!("{word:?} missing from {text:?}"));
        }
    }
    if case.kind.is_none() && case.words.is_empty() && !build["notices"].is_null() {
        wrong.push(format!(
            "notices on a build that tested something: {}",
            build["notices"]
        ));
    }
    (!wrong.is_empty()).then(|| format!("{}: {}\n  {build}", case.name, wrong.join("; ")))
}

#[test]
fn a_corpus_of_repositories_is_diagnosed_in_the_users_terms() {
    // The cases' local inputs live in the scratch directory and in a
    // directory that does not exist: the administrator allows both.
    let scratch = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&format!(
        "workers = 3\nmax_retries = 1\nallowed_local_inputs = [\"/nonexistent\", \"{}\"]",
        scratch.path().display()
    ));
    let cases = corpus(scratch.path());
    let ids: Vec<i64> = cases
        .iter()
        .map(|case| {
            let commit = push_files(&daemon, case.name, &case.files);
            daemon.build_of("main", &commit)
        })
        .collect();
    let mut wrong = Vec::new();
    for (case, id) in cases.iter().zip(ids) {
        let build = daemon.wait_build(id, Duration::from_secs(300), |b| {
            matches!(
                b["status"].as_str(),
                Some("success" | "failed" | "cancelled")
            )
        });
        wrong.extend(mismatch(case, &build));
        // Not "fix the Nix code": there is none.
        let hint = build["diagnosis"]["hint"].as_str().unwrap_or_default();
        if case.name == "no-flake" && !hint.starts_with("Add a flake.nix") {
            wrong.push(format!("no-flake: hint {hint:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases are diagnosed wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn a_host_whose_build_users_group_does_not_exist_is_the_hosts_fault_and_retried() {
    // What the README's Quick start once led to: the daemon started before
    // NIX_CONFIG was exported, with nix's default build-users-group.
    let config = NIX_CONFIG.replace("build-users-group =", "build-users-group = nixbld-missing");
    let scratch = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(
        scratch.path(),
        "max_retries = 1",
        &[("NIX_CONFIG", &config)],
    );
    daemon.spawn();
    let n = nonce("host");
    let commit = push_files(
        &daemon,
        "host",
        &[(
            "flake.nix",
            flake_with(&format!(
                "    checks.x86_64-linux.a = {};",
                drv("a", "x86_64-linux", &passing(&n))
            )),
        )],
    );
    let build = daemon.wait_final(daemon.build_of("main", &commit));
    let case = Case {
        name: "host-build-users-group",
        files: vec![],
        status: "failed",
        kind: Some("host"),
        words: vec!["build-users-group", "nixbld-missing", "does not exist"],
    };
    if let Some(wrong) = mismatch(&case, &build) {
        panic!("{wrong}");
    }
    assert_eq!(
        build["diagnosis"]["title"],
        "The CI host's Nix is misconfigured"
    );
    // The pre-flight said so before anyone pushed.
    let health = health_after_preflight(&daemon);
    let found = codes(&health);
    for code in ["build_users_missing", "sandbox_off", "trivial_build_failed"] {
        assert!(found.iter().any(|c| c == code), "{code} missing: {health}");
    }
    assert_eq!(health["status"], "degraded");
    let group = health["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "build_users_missing")
        .unwrap();
    assert!(
        group["message"]
            .as_str()
            .unwrap()
            .contains("`nixbld-missing`"),
        "{group}"
    );
    assert!(
        daemon.log().contains("\"code\":\"build_users_missing\""),
        "the journal has the warning: {}",
        daemon.log()
    );
}

/// The daemon's health once its first pre-flight has finished.
fn health_after_preflight(daemon: &Daemon) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (status, health) = daemon.get("/api/health");
        assert_eq!(status, 200, "{health}");
        if !health["preflight"]["checked_at"].is_null() {
            return health;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pre-flight: {health}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn codes(health: &Value) -> Vec<String> {
    health["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_preflight_of_a_working_host_warns_only_that_builds_are_not_sandboxed() {
    let daemon = Daemon::start("");
    let health = health_after_preflight(&daemon);
    // The tests' nix runs without a sandbox (see NIX_CONFIG): that, and only
    // that, is reported.
    assert_eq!(codes(&health), ["sandbox_off"], "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["preflight"]["nix_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("nix (Nix) ")),
        "{health}"
    );
    let message = health["warnings"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("not sandboxed") && message.contains("API token"),
        "{message}"
    );
    assert!(
        daemon.log().contains("\"code\":\"sandbox_off\""),
        "the journal has the warning: {}",
        daemon.log()
    );
}

#[test]
fn a_nix_outside_the_tested_versions_is_named_in_health_and_the_journal() {
    // The real nix, but saying it is a release after the tested ones.
    let scratch = tempfile::tempdir().unwrap();
    let wrapper = executable(
        scratch.path(),
        "nix-from-the-future",
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'nix (Nix) 2.99.1'; exit 0; }\nexec nix \"$@\"\n",
    );
    let daemon = Daemon::start(&format!("nix_bin = {:?}", wrapper.display().to_string()));
    let health = health_after_preflight(&daemon);
    assert_eq!(codes(&health), ["nix_untested", "sandbox_off"], "{health}");
    let untested = &health["warnings"][0]["message"];
    let message = untested.as_str().unwrap();
    assert!(
        message.starts_with("nix (Nix) 2.99.1 is not a Nix procurator-ci is tested with")
            && message.contains("Nix 2.8, 2.26, 2.34"),
        "{message}"
    );
    assert!(
        daemon.log().contains("\"code\":\"nix_untested\""),
        "the journal has the warning: {}",
        daemon.log()
    );
}

#[test]
fn an_error_nothing_places_is_shown_verbatim_and_not_retried() {
    // A nix whose `flake check` reports an error of no known shape and no
    // place (or, for one repository, none at all) and exits 1: nothing says
    // whose fault it is, so it is neither the CI's nor retried.
    let scratch = tempfile::tempdir().unwrap();
    let wrapper = executable(
        scratch.path(),
        "nix-with-news",
        "#!/bin/sh\ncase \"$*\" in\n\
         *'flake check'*silent.git*) echo '@nix {\"action\":\"start\",\"id\":1,\"level\":3,\"text\":\"x\",\"type\":0}'; exit 1 ;;\n\
         *'flake check'*) printf '%s\\n' '@nix {\"action\":\"msg\",\"level\":0,\"msg\":\"\\u001b[31;1merror:\\u001b[0m the frobnicator is out of flux\"}'; exit 1 ;;\n\
         esac\nexec nix \"$@\"\n",
    );
    let daemon = Daemon::start(&format!(
        "nix_bin = {:?}\nmax_retries = 2",
        wrapper.display().to_string()
    ));
    let flake = flake_with("    checks.x86_64-linux = { };");
    for (repo, words) in [
        ("news", "the frobnicator is out of flux"),
        (
            "silent",
            "nix ended with exit code 1 without an error message",
        ),
    ] {
        let commit = push_files(&daemon, repo, &[("flake.nix", flake.clone())]);
        let build = daemon.wait_final(daemon.build_of("main", &commit));
        let case = Case {
            name: repo,
            files: vec![],
            status: "failed",
            kind: Some("unrecognised"),
            words: vec![words],
        };
        if let Some(wrong) = mismatch(&case, &build) {
            panic!("{wrong}");
        }
        assert_eq!(build["retry_count"], 0, "{build}");
        assert_eq!(
            build["diagnosis"]["title"],
            "Nix reported an error procurator-ci does not recognise"
        );
    }
}

#[test]
fn a_cancel_that_takes_longer_than_a_moment_answers_202_stopping_then_ends_cancelled() {
    // A nix that is slow to stop: the wrapper ignores SIGTERM and lingers
    // after nix, so the build's process group ends only at SIGKILL,
    // `kill_grace_secs` later: longer than the moment the cancel request
    // waits.
    let scratch = tempfile::tempdir().unwrap();
    let wrapper = executable(
        scratch.path(),
        "nix-ignoring-term",
        "#!/bin/sh\ntrap '' TERM\nnix \"$@\"\nstatus=$?\n/bin/sleep 60\nexit $status\n",
    );
    let daemon = Daemon::start(&format!(
        "nix_bin = \"{}\"\nkill_grace_secs = 9",
        wrapper.display()
    ));
    let started = scratch.path().join("started");
    let script = format!(
        "echo {}; echo > {}; while true; do echo tick; /bin/sleep 0.2; done",
        nonce("stubborn"),
        started.display()
    );
    let commit = push_files(
        &daemon,
        "stubborn",
        &[(
            "flake.nix",
            flake_with(&format!(
                "    checks.x86_64-linux.s = {};",
                drv("s", "x86_64-linux", &script)
            )),
        )],
    );
    let id = daemon.build_of("main", &commit);
    common::wait_file(&started, Duration::from_secs(60), &daemon);
    let (code, body) = daemon.post(&format!("/api/builds/{id}/cancel"), &serde_json::json!({}));
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "running", "{body}");
    assert_eq!(body["stopping"], true, "{body}");
    assert_eq!(daemon.build(id)["stopping"], true);
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "cancelled", "{build}");
    assert_eq!(build["diagnosis"]["cancelled_by"], "api", "{build}");
    assert!(build.get("stopping").is_none(), "{build}");
    let (code, body) = daemon.post(&format!("/api/builds/{id}/cancel"), &serde_json::json!({}));
    assert_eq!(code, 409, "{body}");
}

#[test]
fn a_build_that_fills_the_disk_is_the_cis_failure() {
    // The state directory (logs, repositories, database) on a small tmpfs,
    // nearly full, and a check that prints ~48 MiB into its log. No retry:
    // the space the daemon keeps for recording a build's end is spent once.
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = common::Tmpfs::mount(&dir.path().join("state"), "32m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs (not root?)");
        return;
    };
    let mut daemon = Daemon::configure(
        dir.path(),
        "log_max_bytes = 1073741824\nmax_retries = 0\nkill_grace_secs = 2",
        &[],
    );
    daemon.spawn();
    daemon.create_repo("full");
    let work = Work::clone(&daemon.repo_path("full"));
    let flood = format!(
        "echo {}; /usr/bin/yes 0123456789abcdefghijklmnopqrstuvwxyz | /usr/bin/head -c 50000000; echo ok > $out",
        nonce("flood")
    );
    std::fs::write(
        work.path().join("flake.nix"),
        flake_with(&format!(
            "    checks.x86_64-linux.flood = {};",
            drv("flood", "x86_64-linux", &flood)
        )),
    )
    .unwrap();
    let commit = work.commit("flood");
    common::fill(&daemon.state().join("filler"), &fs, 6 << 20);
    work.push(&["HEAD:main"]);
    let build = daemon.wait_final(daemon.build_of("main", &commit));
    let case = Case {
        name: "disk-full",
        files: vec![],
        status: "failed",
        kind: Some("infrastructure"),
        words: vec!["No space left on device"],
    };
    if let Some(wrong) = mismatch(&case, &build) {
        panic!("{wrong}");
    }
    assert_eq!(build["diagnosis"]["title"], "The CI itself failed");
}

#[test]
fn a_nix_bin_that_is_not_nix_is_the_hosts_failure_naming_the_setting() {
    // A real program, but not nix: it refuses nix's arguments.
    let daemon = Daemon::start("nix_bin = \"/bin/ls\"\nmax_retries = 1");
    let commit = push_files(
        &daemon,
        "not-nix",
        &[("flake.nix", flake_with("    checks.x86_64-linux = { };"))],
    );
    let build = daemon.wait_final(daemon.build_of("main", &commit));
    let case = Case {
        name: "nix-bin-not-nix",
        files: vec![],
        status: "failed",
        kind: Some("host"),
        words: vec![
            "nix_bin `/bin/ls` is not nix",
            "exit code 2",
            "PROCURATOR_CI_NIX_BIN",
        ],
    };
    if let Some(wrong) = mismatch(&case, &build) {
        panic!("{wrong}");
    }
    assert_eq!(
        build["diagnosis"]["title"],
        "The CI host's Nix is misconfigured"
    );
    let hint = build["diagnosis"]["hint"].as_str().unwrap();
    assert!(
        hint.contains("nix_bin") && hint.contains("PROCURATOR_CI_NIX_BIN"),
        "{hint}"
    );
}
