//! The table of nix's error messages we know, and the failure kinds they
//! stand for: [`FailureKind`] (title, hint, whether it is retried, which
//! kind explains a build best) and [`RULES`], matched by [`rule_for`]. A new
//! nix message to recognise is a row here, with its row in the test.

use serde::Serialize;

/// Why a build failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The flake does not evaluate: the user's Nix code.
    Evaluation,
    /// A check's build failed: the user's code.
    Check,
    /// An input could not be fetched (network, no such ref, authentication).
    Fetch,
    /// The host's Nix is misconfigured or broken.
    Host,
    /// The build ran longer than `build_timeout_secs`.
    Timeout,
    /// The build printed nothing for `max_silent_secs`.
    Silence,
    /// The CI itself failed: disk full, a process killed, log storage, the
    /// daemon stopping unexpectedly.
    Infrastructure,
}

impl FailureKind {
    /// Every kind, in the order the README's table lists them.
    pub const ALL: [FailureKind; 7] = [
        FailureKind::Evaluation,
        FailureKind::Check,
        FailureKind::Fetch,
        FailureKind::Host,
        FailureKind::Timeout,
        FailureKind::Silence,
        FailureKind::Infrastructure,
    ];

    /// The name stored in the database and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Evaluation => "evaluation",
            FailureKind::Check => "check",
            FailureKind::Fetch => "fetch",
            FailureKind::Host => "host",
            FailureKind::Timeout => "timeout",
            FailureKind::Silence => "silence",
            FailureKind::Infrastructure => "infrastructure",
        }
    }

    /// Parses a stored kind.
    pub fn parse(name: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// What happened, in a few words.
    pub fn title(self) -> &'static str {
        match self {
            FailureKind::Evaluation => "The flake does not evaluate",
            FailureKind::Check => "A check failed",
            FailureKind::Fetch => "An input could not be fetched",
            FailureKind::Host => "The CI host's Nix is misconfigured",
            FailureKind::Timeout => "Timed out",
            FailureKind::Silence => "Silent for too long",
            FailureKind::Infrastructure => "The CI itself failed",
        }
    }

    /// What to do about it, in one line.
    pub fn hint(self) -> &'static str {
        match self {
            FailureKind::Evaluation => {
                "Fix the Nix code at the place shown; `nix flake check` on your machine shows the same error."
            }
            FailureKind::Check => {
                "A check's build exited with an error: its excerpt shows why; reproduce it with `nix build .#checks.<system>.<name>`."
            }
            FailureKind::Fetch => {
                "Retried automatically. If it persists, check the input's URL and ref, and the CI host's network and credentials."
            }
            FailureKind::Host => {
                "Not your code: the CI host's Nix needs its administrator (see the health warnings; the nix client is the nix_bin setting, PROCURATOR_CI_NIX_BIN). Retried automatically."
            }
            FailureKind::Timeout => {
                "The build ran longer than build_timeout_secs: make the checks faster or ask for a higher limit."
            }
            FailureKind::Silence => {
                "Nothing was printed for max_silent_secs: a check may hang or wait for input; print progress or ask for a higher limit."
            }
            FailureKind::Infrastructure => {
                "Not your code: the CI failed (disk full, a process killed, the daemon stopped). Retried automatically."
            }
        }
    }

    /// Whether another attempt can help: never for the user's code, nor
    /// for a bound the build overran (it would overrun it again).
    pub fn retried(self) -> bool {
        matches!(
            self,
            FailureKind::Fetch | FailureKind::Host | FailureKind::Infrastructure
        )
    }

    /// Which of two kinds explains a build better: the host and the CI before
    /// the network, the network before the code, the evaluation before a
    /// check (a check that cannot evaluate cannot build either).
    pub(super) fn rank(self) -> u8 {
        match self {
            FailureKind::Host => 0,
            FailureKind::Infrastructure => 1,
            FailureKind::Fetch => 2,
            FailureKind::Evaluation => 3,
            FailureKind::Check => 4,
            FailureKind::Timeout | FailureKind::Silence => 5,
        }
    }
}

/// One row of the table of nix's messages: an error containing every one
/// of `contains` is of `kind`, and is explained as `explain`.
#[derive(Debug)]
pub struct Rule {
    pub contains: &'static [&'static str],
    pub kind: FailureKind,
    /// The explanation in the user's terms; nix's own words follow it. For
    /// a fetch, why the input could not be fetched (or nothing).
    pub explain: &'static str,
}

impl Rule {
    /// The explanation as a sentence of its own.
    pub fn explanation(&self) -> String {
        match (self.kind, self.explain) {
            (FailureKind::Fetch, "") => "an input could not be fetched".into(),
            (FailureKind::Fetch, why) => format!("an input could not be fetched: {why}"),
            (_, explain) => explain.into(),
        }
    }
}

/// The nix error messages we recognise, most specific first (the first
/// matching row decides). README.md shows the same table; every row has a
/// test below.
pub static RULES: &[Rule] = &[
    Rule {
        contains: &["specified in 'build-users-group' does not exist"],
        kind: FailureKind::Host,
        explain: "the host's nix setting build-users-group names a group that does not exist",
    },
    Rule {
        contains: &["experimental Nix feature", "is disabled"],
        kind: FailureKind::Host,
        explain: "the host's nix does not have flakes enabled",
    },
    Rule {
        contains: &["cannot connect to socket at"],
        kind: FailureKind::Host,
        explain: "the Nix daemon is not reachable",
    },
    Rule {
        contains: &["cannot open connection to remote store"],
        kind: FailureKind::Host,
        explain: "the Nix daemon is not reachable",
    },
    Rule {
        contains: &["unable to start the daemon"],
        kind: FailureKind::Host,
        explain: "the Nix daemon is not reachable",
    },
    Rule {
        contains: &["opening lock file", "Permission denied"],
        kind: FailureKind::Host,
        explain: "the Nix store is not writable by the daemon's user",
    },
    Rule {
        contains: &["No space left on device"],
        kind: FailureKind::Infrastructure,
        explain: "the disk is full",
    },
    Rule {
        contains: &["Nix daemon disconnected"],
        kind: FailureKind::Infrastructure,
        explain: "the Nix daemon went away during the build",
    },
    Rule {
        contains: &["unable to download", "Couldn't resolve host name"],
        kind: FailureKind::Fetch,
        explain: "the CI host has no network (the host name does not resolve)",
    },
    Rule {
        contains: &["unable to download", "HTTP error 404"],
        kind: FailureKind::Fetch,
        explain: "no such repository, ref or file",
    },
    Rule {
        contains: &["unable to download", "HTTP error 401"],
        kind: FailureKind::Fetch,
        explain: "authentication is needed",
    },
    Rule {
        contains: &["unable to download", "HTTP error 403"],
        kind: FailureKind::Fetch,
        explain: "access is denied",
    },
    Rule {
        contains: &["unable to download"],
        kind: FailureKind::Fetch,
        explain: "",
    },
    Rule {
        contains: &["Cannot find Git revision"],
        kind: FailureKind::Fetch,
        explain: "no such git revision",
    },
    // git's own `fatal:` lines, which nix prints before its error, follow
    // the error in parentheses.
    Rule {
        contains: &["program 'git' failed", "Could not resolve host"],
        kind: FailureKind::Fetch,
        explain: "the CI host has no network (the host name does not resolve)",
    },
    Rule {
        contains: &[
            "program 'git' failed",
            "does not appear to be a git repository",
        ],
        kind: FailureKind::Fetch,
        explain: "no such repository",
    },
    Rule {
        contains: &["program 'git' failed", "couldn't find remote ref"],
        kind: FailureKind::Fetch,
        explain: "no such ref",
    },
    Rule {
        contains: &["program 'git' failed", "could not read Username"],
        kind: FailureKind::Fetch,
        explain: "authentication is needed",
    },
    Rule {
        contains: &["program 'git' failed", "Authentication failed"],
        kind: FailureKind::Fetch,
        explain: "authentication is needed",
    },
    Rule {
        contains: &["program 'git' failed"],
        kind: FailureKind::Fetch,
        explain: "git failed",
    },
    Rule {
        contains: &["getting status of 'flake.nix'", "No such file or directory"],
        kind: FailureKind::Evaluation,
        explain: "the commit has no flake.nix at the root of the repository",
    },
    Rule {
        contains: &["json.exception.parse_error"],
        kind: FailureKind::Evaluation,
        explain: "flake.lock is not valid JSON",
    },
    Rule {
        contains: &["NAR hash mismatch in input"],
        kind: FailureKind::Evaluation,
        explain: "flake.lock does not match an input's contents",
    },
    Rule {
        contains: &["lock file"],
        kind: FailureKind::Evaluation,
        explain: "flake.lock is not usable",
    },
    Rule {
        contains: &["syntax error"],
        kind: FailureKind::Evaluation,
        explain: "a syntax error",
    },
    Rule {
        contains: &["undefined variable"],
        kind: FailureKind::Evaluation,
        explain: "an undefined variable",
    },
    Rule {
        contains: &["infinite recursion encountered"],
        kind: FailureKind::Evaluation,
        explain: "an infinite recursion",
    },
    Rule {
        contains: &["evaluation aborted with the following error message"],
        kind: FailureKind::Evaluation,
        explain: "the flake called builtins.abort",
    },
    Rule {
        contains: &["getting status of", "No such file or directory"],
        kind: FailureKind::Evaluation,
        explain: "a file the flake imports does not exist",
    },
    Rule {
        contains: &["is not a derivation"],
        kind: FailureKind::Evaluation,
        explain: "a check is not a derivation",
    },
    Rule {
        contains: &["builder for '", "failed"],
        kind: FailureKind::Check,
        explain: "a check's build failed",
    },
];

/// Errors that only repeat or follow another one: they never decide.
pub(super) const ECHOES: [&str; 5] = [
    "some errors were encountered during the evaluation",
    "interrupted by the user",
    "dependencies couldn't be built",
    "dependency failed",
    "build of '",
];

/// The row of [`RULES`] an error message matches.
pub fn rule_for(message: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .find(|rule| rule.contains.iter().all(|part| message.contains(part)))
}

/// How an error nobody has described yet is explained.
pub(super) const FALLBACK: Rule = Rule {
    contains: &[],
    kind: FailureKind::Evaluation,
    explain: "the evaluation failed",
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::diagnosis::shorten_sources;
    use crate::build::diagnosis::tests::verdict_of;

    /// One row of the table: the message nix prints, the kind, and words
    /// the summary must contain.
    fn row(message: &str, kind: FailureKind, words: &[&str]) {
        let line = format!(
            "@nix {}",
            serde_json::json!({"action": "msg", "level": 0, "msg": format!("\u{1b}[31;1merror:\u{1b}[0m {message}")})
        );
        let verdict = verdict_of(&[&line]);
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
            (
                "builder for '/nix/store/wn879cdnxjr8085n60zcl37zjljbmc3j-a-fail.drv' failed with exit code 3",
                FailureKind::Check,
                &["failed: a-fail"],
            ),
        ];
        for (message, kind, words) in rows {
            row(message, *kind, words);
        }
        // Every rule of the table is proved by the row of its own
        // message: a rule no row reaches would be dead.
        for (index, rule) in RULES.iter().enumerate() {
            assert!(
                rows.iter()
                    .any(|(m, _, _)| std::ptr::eq(rule_for(&shorten_sources(m)).unwrap(), rule)),
                "rule {index} ({:?}) has no row",
                rule.contains
            );
        }
    }

    #[test]
    fn only_what_is_not_the_users_code_is_retried() {
        let retried: Vec<&str> = FailureKind::ALL
            .into_iter()
            .filter(|k| k.retried())
            .map(FailureKind::as_str)
            .collect();
        assert_eq!(retried, ["fetch", "host", "infrastructure"]);
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::parse(kind.as_str()), Some(kind));
            assert!(!kind.title().is_empty() && !kind.hint().contains('\n'));
        }
    }
}
