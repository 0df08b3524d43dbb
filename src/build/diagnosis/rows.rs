//! The rows of the table of nix's messages ([`RULES`]): what each Nix of
//! the version matrix really printed for a corpus of failures
//! (`tests/nix-messages/nix-<version>.log`, captured by
//! `scripts/capture-nix-messages` from real runs), which must be explained
//! the same way on every version whatever its wording, and typed messages
//! for the states this machine cannot make (a disk full, a store that is
//! not writable, a forge asking for a password).

use super::rules::{RULES, rule_for};
use super::tests::verdict_of;
use super::{Diagnosis, FailureKind, shorten_sources};
use crate::build::nixlog::parse;

/// The captures, by version.
const CAPTURES: [(&str, &str); 3] = [
    (
        "2.8",
        include_str!("../../../tests/nix-messages/nix-2.8.0.log"),
    ),
    (
        "2.26",
        include_str!("../../../tests/nix-messages/nix-2.26.3.log"),
    ),
    (
        "2.34",
        include_str!("../../../tests/nix-messages/nix-2.34.8.log"),
    ),
];

/// What nix 2.8 printed with remote builders (scripts/nix-builders) for
/// the faults of issue 22, captured by scripts/capture-builder-messages.
const REMOTE_BUILDERS: &str =
    include_str!("../../../tests/nix-messages/remote-builders-nix-2.8.0.log");

/// What a case must come to: its kind (`None`: no verdict, the build
/// passes) and words its summary holds.
fn expected(case: &str, version: &str) -> (Option<FailureKind>, &'static [&'static str]) {
    use FailureKind::*;
    match case {
        "passes" => (None, &[]),
        "check-fails" => (Some(Check), &["failed: b"]),
        "dependency-fails" => (Some(Check), &["failed: dep"]),
        // Nix 2.8 gives no place for a `throw`; later ones do.
        "throw" if version == "2.8" => (
            Some(Evaluation),
            &["in output 'checks'", "broken on purpose"],
        ),
        "throw" => (Some(Evaluation), &["flake.nix:1:49", "broken on purpose"]),
        "abort" => (Some(Evaluation), &["builtins.abort", "aborted on purpose"]),
        "missing-import" => (Some(Evaluation), &["imports does not exist", "missing.nix"]),
        "infinite-recursion" => (Some(Evaluation), &["flake.nix:1:", "infinite recursion"]),
        "syntax-error" => (Some(Evaluation), &["flake.nix:1:49: a syntax error"]),
        "undefined-variable" => (
            Some(Evaluation),
            &["flake.nix:1:49: an undefined variable", "'nope'"],
        ),
        "not-a-derivation" => (Some(Evaluation), &["not a derivation"]),
        // A builtin of a later Nix than 2.8; later ones have it, and the
        // check is a path, not a derivation.
        "newer-builtin" if version == "2.8" => (
            Some(Host),
            &["too old", "builtins.readFileType is not in the host's Nix"],
        ),
        "newer-builtin" => (Some(Evaluation), &["not a derivation"]),
        "github-input" => (Some(Fetch), &["no network", "api.github.com"]),
        "undeclared-input" => (Some(Fetch), &["no network", "flake-registry.json"]),
        "git-input-missing" => (Some(Fetch), &["no such repository", "/nonexistent/dep"]),
        "http-401" => (Some(Fetch), &["authentication is needed", "127.0.0.1:8080"]),
        "http-403" => (Some(Fetch), &["access is denied"]),
        "http-404" => (Some(Fetch), &["no such repository, ref or file"]),
        "wrong-lock" => (
            Some(Evaluation),
            &[
                "flake.lock does not match an input's contents",
                "got '(withheld",
            ],
        ),
        "broken-lock" => (Some(Evaluation), &["flake.lock is not valid JSON"]),
        "no-flake" => (Some(Evaluation), &["the commit has no flake.nix"]),
        "build-users-missing" => (Some(Host), &["build-users-group", "nixbld-missing"]),
        "flakes-disabled" => (Some(Host), &["flakes enabled"]),
        "daemon-unreachable" => (Some(Host), &["Nix daemon is not reachable"]),
        other => panic!("no expectation for case {other}"),
    }
}

/// Every error of every capture, as the diagnosis keeps it.
fn captured_errors() -> Vec<String> {
    CAPTURES
        .iter()
        .flat_map(|(_, capture)| cases(capture))
        .flat_map(|(_, _, lines)| diagnose(&lines).errors)
        .map(|e| e.message)
        .collect()
}

/// The diagnosis of a case's lines.
fn diagnose(lines: &[&str]) -> Diagnosis {
    let mut diagnosis = Diagnosis::default();
    for line in lines {
        match parse(line.as_bytes()) {
            Some(event) => diagnosis.event(&event),
            None => diagnosis.plain(line.as_bytes()),
        }
    }
    diagnosis
}

/// The cases of one capture: name, nix's exit status, lines.
fn cases(capture: &str) -> Vec<(&str, i32, Vec<&str>)> {
    let mut cases = Vec::new();
    for line in capture.lines() {
        if let Some(head) = line.strip_prefix("# case ") {
            let (name, exit) = head.split_once(" exit ").expect("`# case NAME exit N`");
            cases.push((name, exit.parse().expect("an exit status"), Vec::new()));
        } else if let Some((_, _, lines)) = cases.last_mut() {
            lines.push(line);
        }
    }
    cases
}

#[test]
fn every_case_is_explained_alike_on_every_nix() {
    let mut wrong = Vec::new();
    let mut seen = 0;
    for (version, capture) in CAPTURES {
        let cases = cases(capture);
        assert!(cases.len() >= 20, "nix {version}: {} cases", cases.len());
        for (case, exit, lines) in cases {
            seen += 1;
            let diagnosis = diagnose(&lines);
            let (kind, words) = expected(case, version);
            let verdict = diagnosis.verdict(None);
            // A passing case ended 0 and a failing one did not.
            if (exit == 0) != kind.is_none() {
                wrong.push(format!("nix {version} {case}: exit {exit}"));
            }
            let got = verdict.as_ref().map(|v| v.kind);
            if exit != 0 && got != kind {
                wrong.push(format!("nix {version} {case}: {verdict:?}, want {kind:?}"));
                continue;
            }
            let summary = verdict.map(|v| v.summary).unwrap_or_default();
            for word in words {
                if !summary.contains(word) {
                    wrong.push(format!("nix {version} {case}: {word:?} not in {summary:?}"));
                }
            }
            if summary.contains("sha256-") && !summary.contains("sha256-AAAA") {
                wrong.push(format!("nix {version} {case}: a hash in {summary:?}"));
            }
        }
    }
    assert!(seen >= 60, "{seen} cases");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn remote_builder_faults_are_the_hosts_and_a_remote_check_the_code() {
    let cases = cases(REMOTE_BUILDERS);
    assert_eq!(cases.len(), 4);
    for (case, exit, lines) in cases {
        assert_ne!(exit, 0, "{case}");
        let verdict = diagnose(&lines).verdict(None).expect("a verdict");
        let (kind, words): (FailureKind, &[&str]) = match case {
            "remote-check-fails" => (FailureKind::Check, &["failed: b"]),
            "killed" => (FailureKind::Host, &["a build machine was lost"]),
            "unreachable" | "wrong-host-key" => (
                FailureKind::Host,
                &["no build machine could take the build"],
            ),
            other => panic!("no expectation for case {other}"),
        };
        assert_eq!(verdict.kind, kind, "{case}: {verdict:?}");
        for word in words {
            assert!(
                verdict.summary.contains(word),
                "{case}: {word:?} not in {verdict:?}"
            );
        }
    }
}

/// One row of the table: the message nix prints, the kind, and words
/// the summary must contain.
fn row(message: &str, kind: FailureKind, words: &[&str]) {
    let line = format!(
        "@nix {}",
        serde_json::json!({"action": "msg", "level": 0, "msg": format!("\u{1b}[31;1merror:\u{1b}[0m {message}")})
    );
    // Nix starts a build before it can fail.
    let starts: Vec<String> = super::store_drvs(message)
        .into_iter()
        .map(|drv| {
            format!(
                "@nix {}",
                serde_json::json!({"action": "start", "id": 9, "level": 3, "type": 105, "text": "", "fields": [drv]})
            )
        })
        .collect();
    let lines: Vec<&str> = starts
        .iter()
        .map(String::as_str)
        .chain([line.as_str()])
        .collect();
    let verdict = verdict_of(&lines);
    assert_eq!(verdict.kind, kind, "{message}: {verdict:?}");
    for word in words {
        assert!(
            verdict.summary.contains(word),
            "{message}: {word:?} not in {:?}",
            verdict.summary
        );
    }
}

#[test]
fn every_rule_has_a_row() {
    // (message as nix prints it, the rule's first fragment it proves)
    let rows: &[(&str, FailureKind, &[&str])] = &[
        (
            "the group 'nixbld' specified in 'build-users-group' does not exist",
            FailureKind::Host,
            &["build-users-group", "nixbld"],
        ),
        (
            "experimental Nix feature 'flakes' is disabled; use '--extra-experimental-features flakes' to override",
            FailureKind::Host,
            &["flakes"],
        ),
        (
            "unexpected end-of-file",
            FailureKind::Host,
            &["a build machine was lost"],
        ),
        (
            "unable to start any build; remote machines may not have all required system features.\n       https://nixos.org/manual/nix/stable/advanced-topics/distributed-builds.html",
            FailureKind::Host,
            &["no build machine could take the build"],
        ),
        (
            "cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Connection refused",
            FailureKind::Host,
            &["Nix daemon is not reachable"],
        ),
        (
            "cannot open connection to remote store 'daemon': error: reading from file: Connection reset by peer",
            FailureKind::Host,
            &["not reachable"],
        ),
        (
            "unable to start the daemon: x",
            FailureKind::Host,
            &["not reachable"],
        ),
        (
            "opening lock file '/nix/var/nix/db/big-lock': Permission denied",
            FailureKind::Host,
            &["not writable"],
        ),
        (
            "writing to file: No space left on device",
            FailureKind::Infrastructure,
            &["disk is full"],
        ),
        (
            "Nix daemon disconnected unexpectedly (maybe it crashed?)",
            FailureKind::Infrastructure,
            &["went away"],
        ),
        (
            "unable to download 'https://api.github.com/repos/NixOS/nixpkgs/commits/nixos-25.11': Couldn't resolve host name (6)",
            FailureKind::Fetch,
            &["no network", "api.github.com"],
        ),
        (
            "unable to download 'https://api.github.com/repos/o/r/commits/nope': HTTP error 404",
            FailureKind::Fetch,
            &["no such repository, ref"],
        ),
        (
            "unable to download 'https://x/y': HTTP error 401",
            FailureKind::Fetch,
            &["authentication"],
        ),
        (
            "unable to download 'https://x/y': HTTP error 403",
            FailureKind::Fetch,
            &["access is denied"],
        ),
        (
            "unable to download 'https://x/y': Timeout was reached (28)",
            FailureKind::Fetch,
            &["could not be fetched", "Timeout"],
        ),
        (
            "Cannot find Git revision 'abc' in ref 'main' of repository 'https://x/y'!",
            FailureKind::Fetch,
            &["no such git revision"],
        ),
        (
            "program 'git' failed with exit code 128 (fatal: unable to access 'https://git.example.org/x.git/': Could not resolve host: git.example.org)",
            FailureKind::Fetch,
            &[
                "could not be fetched: the CI host has no network",
                "git.example.org",
            ],
        ),
        (
            "program 'git' failed with exit code 128 (fatal: '/srv/none' does not appear to be a git repository)",
            FailureKind::Fetch,
            &["could not be fetched: no such repository", "/srv/none"],
        ),
        (
            "program 'git' failed with exit code 128 (fatal: couldn't find remote ref refs/heads/nope)",
            FailureKind::Fetch,
            &["no such ref", "refs/heads/nope"],
        ),
        (
            "program 'git' failed with exit code 128 (fatal: could not read Username for 'https://git.example.org': terminal prompts disabled)",
            FailureKind::Fetch,
            &["authentication is needed"],
        ),
        (
            "program 'git' failed with exit code 128 (fatal: Authentication failed for 'https://git.example.org/x.git/')",
            FailureKind::Fetch,
            &["authentication is needed"],
        ),
        (
            "program 'git' failed with exit code 128",
            FailureKind::Fetch,
            &["could not be fetched: git failed"],
        ),
        (
            "getting status of '/nix/store/049hdymiq47jsc3rzf7m78yy5cpajy7p-source/flake.nix': No such file or directory",
            FailureKind::Evaluation,
            &["no flake.nix"],
        ),
        (
            "[json.exception.parse_error.101] parse error at line 2, column 1: syntax error while parsing object",
            FailureKind::Evaluation,
            &["flake.lock is not valid JSON"],
        ),
        (
            "NAR hash mismatch in input 'github:o/r/abc' (/nix/store/x-source), expected 'sha256-a', got 'sha256-b'",
            FailureKind::Evaluation,
            &["flake.lock does not match"],
        ),
        (
            "lock file contains mutable lock 'path:/x'",
            FailureKind::Evaluation,
            &["flake.lock is not usable"],
        ),
        (
            "syntax error, unexpected '='",
            FailureKind::Evaluation,
            &["syntax error"],
        ),
        (
            "undefined variable 'nope'",
            FailureKind::Evaluation,
            &["undefined variable", "nope"],
        ),
        (
            "infinite recursion encountered",
            FailureKind::Evaluation,
            &["infinite recursion"],
        ),
        (
            "evaluation aborted with the following error message: 'aborted on purpose'",
            FailureKind::Evaluation,
            &["builtins.abort", "aborted on purpose"],
        ),
        (
            "getting status of '/nix/store/dicdg7ndrm7469zm83p0nmfm763la3j2-source/missing.nix': No such file or directory",
            FailureKind::Evaluation,
            &["imports does not exist", "'missing.nix'"],
        ),
        (
            "flake attribute 'checks.x86_64-linux.a' is not a derivation",
            FailureKind::Evaluation,
            &["not a derivation"],
        ),
        // nixpkgs' own check of the Nix that evaluates it.
        (
            "This version of Nixpkgs requires Nix >= 2.18, please upgrade:",
            FailureKind::Host,
            &["needs a newer Nix", "Nix >= 2.18"],
        ),
        (
            "lock file '/nix/store/ffffffffffffffffffffffffffffffff-source/flake.lock' has unsupported version 7",
            FailureKind::Host,
            &["too old for this flake.lock", "version 7"],
        ),
        (
            "resolving Git reference 'main': revspec 'main' not found",
            FailureKind::Fetch,
            &["no such ref"],
        ),
        (
            "builder for '/nix/store/wn879cdnxjr8085n60zcl37zjljbmc3j-a-fail.drv' failed with exit code 3",
            FailureKind::Check,
            &["failed: a-fail"],
        ),
    ];
    for (message, kind, words) in rows {
        row(message, *kind, words);
    }
    // Every rule of the table is proved by a row of its own, typed or
    // captured: a rule no message reaches would be dead.
    let captured = captured_errors();
    for (index, rule) in RULES.iter().enumerate() {
        let typed = rows.iter().map(|(m, _, _)| shorten_sources(m));
        assert!(
            typed
                .chain(captured.iter().cloned())
                .any(|m| rule_for(&m).is_some_and(|found| std::ptr::eq(found, rule))),
            "rule {index} ({:?}) has no row",
            rule.contains
        );
    }
}
