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
    /// Nix reported an error that neither its words nor its place tell
    /// apart: shown as nix printed it, never called ours by default.
    Unrecognised,
}

impl FailureKind {
    /// Every kind, in the order the README's table lists them.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Evaluation,
        FailureKind::Check,
        FailureKind::Fetch,
        FailureKind::Host,
        FailureKind::Timeout,
        FailureKind::Silence,
        FailureKind::Infrastructure,
        FailureKind::Unrecognised,
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
            FailureKind::Unrecognised => "unrecognised",
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
            FailureKind::Unrecognised => "Nix reported an error procurator-ci does not recognise",
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
            FailureKind::Unrecognised => {
                "Nix's own words are shown; it may be the code or the host, so it is not retried: `nix flake check` on your machine tells which. Rebuild once the cause is fixed."
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
            FailureKind::Unrecognised => 6,
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
    /// What to do, where the kind's own hint would send the user the wrong
    /// way.
    pub hint: Option<&'static str>,
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

/// The hint of the rules that say the host's Nix is older than the flake
/// needs.
const OLD_NIX: &str = "Not your code: the CI host's Nix is older than this flake needs (the message says what is missing); its administrator upgrades it (the health page names the version). Retried automatically.";
/// How a build that lost its remote build machine is explained: nix's
/// words follow (2.8: `unexpected end-of-file`), or, for a machine that
/// hung, what stopped the build and the machine that no longer answers.
pub const LOST_MACHINE: &str = "a build machine was lost";
/// The hint of the rules about remote builders.
const BUILDERS: &str = "Not your code: a remote build machine (nix's `builders`) was lost or could not take the build; the health page names a machine that does not answer. Retried automatically.";
/// The hint of a commit without a flake.
const NO_FLAKE: &str =
    "Add a flake.nix at the root of the repository (`nix flake init` makes one) and push again.";

/// The nix error messages we recognise, most specific first (the first
/// matching row decides). README.md shows the same table; every row has a
/// test below, and the messages of every Nix in the version matrix are
/// tested against it (`tests/nix-messages/`).
pub static RULES: &[Rule] = &[
    Rule {
        contains: &["specified in 'build-users-group' does not exist"],
        kind: FailureKind::Host,
        explain: "the host's nix setting build-users-group names a group that does not exist",
        hint: None,
    },
    Rule {
        contains: &["experimental Nix feature", "is disabled"],
        kind: FailureKind::Host,
        explain: "the host's nix does not have flakes enabled",
        hint: None,
    },
    Rule {
        contains: &["cannot connect to socket at"],
        kind: FailureKind::Host,
        explain: "the Nix daemon is not reachable",
        hint: None,
    },
    Rule {
        contains: &["cannot open connection to remote store"],
        kind: FailureKind::Host,
        explain: "the Nix daemon is not reachable",
        hint: None,
    },
    // Nix 2.8 when the builder's connection ends mid-build (its sshd or
    // nix-daemon killed, the machine gone); after the rows above, which
    // say the same of a local daemon that cannot be opened.
    Rule {
        contains: &["unexpected end-of-file"],
        kind: FailureKind::Host,
        explain: LOST_MACHINE,
        hint: Some(BUILDERS),
    },
    Rule {
        contains: &["unable to start any build"],
        kind: FailureKind::Host,
        explain: "no build machine could take the build (every remote builder failed to connect, \
                  or none has the system and features it needs)",
        hint: Some(BUILDERS),
    },
    Rule {
        contains: &["unable to start the daemon"],
        kind: FailureKind::Host,
        explain: "the Nix daemon is not reachable",
        hint: None,
    },
    Rule {
        contains: &["opening lock file", "Permission denied"],
        kind: FailureKind::Host,
        explain: "the Nix store is not writable by the daemon's user",
        hint: None,
    },
    Rule {
        contains: &["not in the host's Nix"],
        kind: FailureKind::Host,
        explain: "the host's Nix is too old for this flake: it lacks a builtin the flake uses",
        hint: Some(OLD_NIX),
    },
    Rule {
        contains: &["requires Nix", ">="],
        kind: FailureKind::Host,
        explain: "the flake needs a newer Nix than the host's",
        hint: Some(OLD_NIX),
    },
    Rule {
        contains: &["has unsupported version"],
        kind: FailureKind::Host,
        explain: "the host's Nix is too old for this flake.lock",
        hint: Some(OLD_NIX),
    },
    Rule {
        contains: &["No space left on device"],
        kind: FailureKind::Infrastructure,
        explain: "the disk is full",
        hint: None,
    },
    Rule {
        contains: &["Nix daemon disconnected"],
        kind: FailureKind::Infrastructure,
        explain: "the Nix daemon went away during the build",
        hint: None,
    },
    Rule {
        contains: &["unable to download", "resolve host"],
        kind: FailureKind::Fetch,
        explain: "the CI host has no network (the host name does not resolve)",
        hint: None,
    },
    Rule {
        contains: &["unable to download", "HTTP error 404"],
        kind: FailureKind::Fetch,
        explain: "no such repository, ref or file",
        hint: None,
    },
    Rule {
        contains: &["unable to download", "HTTP error 401"],
        kind: FailureKind::Fetch,
        explain: "authentication is needed",
        hint: None,
    },
    Rule {
        contains: &["unable to download", "HTTP error 403"],
        kind: FailureKind::Fetch,
        explain: "access is denied",
        hint: None,
    },
    Rule {
        contains: &["unable to download"],
        kind: FailureKind::Fetch,
        explain: "",
        hint: None,
    },
    Rule {
        contains: &["Cannot find Git revision"],
        kind: FailureKind::Fetch,
        explain: "no such git revision",
        hint: None,
    },
    Rule {
        contains: &["Could not resolve host"],
        kind: FailureKind::Fetch,
        explain: "the CI host has no network (the host name does not resolve)",
        hint: None,
    },
    Rule {
        contains: &["does not appear to be a git repository"],
        kind: FailureKind::Fetch,
        explain: "no such repository",
        hint: None,
    },
    Rule {
        contains: &["Git repository", "does not exist"],
        kind: FailureKind::Fetch,
        explain: "no such repository",
        hint: None,
    },
    Rule {
        contains: &["couldn't find remote ref"],
        kind: FailureKind::Fetch,
        explain: "no such ref",
        hint: None,
    },
    Rule {
        contains: &["could not read Username"],
        kind: FailureKind::Fetch,
        explain: "authentication is needed",
        hint: None,
    },
    Rule {
        contains: &["Authentication failed"],
        kind: FailureKind::Fetch,
        explain: "authentication is needed",
        hint: None,
    },
    Rule {
        contains: &["program 'git' failed"],
        kind: FailureKind::Fetch,
        explain: "git failed",
        hint: None,
    },
    Rule {
        contains: &["resolving Git reference"],
        kind: FailureKind::Fetch,
        explain: "no such ref",
        hint: None,
    },
    Rule {
        contains: &["getting status of 'flake.nix'", "No such file or directory"],
        kind: FailureKind::Evaluation,
        explain: "the commit has no flake.nix at the root of the repository",
        hint: Some(NO_FLAKE),
    },
    Rule {
        contains: &["path 'flake.nix' does not exist"],
        kind: FailureKind::Evaluation,
        explain: "the commit has no flake.nix at the root of the repository",
        hint: Some(NO_FLAKE),
    },
    Rule {
        contains: &["json.exception.parse_error"],
        kind: FailureKind::Evaluation,
        explain: "flake.lock is not valid JSON",
        hint: None,
    },
    Rule {
        contains: &["NAR hash mismatch in input"],
        kind: FailureKind::Evaluation,
        explain: "flake.lock does not match an input's contents",
        hint: None,
    },
    Rule {
        contains: &["mismatch in field", "of input"],
        kind: FailureKind::Evaluation,
        explain: "flake.lock does not match an input's contents",
        hint: None,
    },
    Rule {
        contains: &["lock file"],
        kind: FailureKind::Evaluation,
        explain: "flake.lock is not usable",
        hint: None,
    },
    Rule {
        contains: &["syntax error"],
        kind: FailureKind::Evaluation,
        explain: "a syntax error",
        hint: None,
    },
    Rule {
        contains: &["undefined variable"],
        kind: FailureKind::Evaluation,
        explain: "an undefined variable",
        hint: None,
    },
    Rule {
        contains: &["infinite recursion encountered"],
        kind: FailureKind::Evaluation,
        explain: "an infinite recursion",
        hint: None,
    },
    Rule {
        contains: &["evaluation aborted with the following error message"],
        kind: FailureKind::Evaluation,
        explain: "the flake called builtins.abort",
        hint: None,
    },
    Rule {
        contains: &["getting status of", "No such file or directory"],
        kind: FailureKind::Evaluation,
        explain: "a file the flake imports does not exist",
        hint: None,
    },
    Rule {
        contains: &["path '", "does not exist"],
        kind: FailureKind::Evaluation,
        explain: "a file the flake imports does not exist",
        hint: None,
    },
    Rule {
        contains: &["is not a derivation"],
        kind: FailureKind::Evaluation,
        explain: "a check is not a derivation",
        hint: None,
    },
    Rule {
        contains: &["builder for '", "failed"],
        kind: FailureKind::Check,
        explain: "a check's build failed",
        hint: None,
    },
    Rule {
        contains: &["Cannot build '"],
        kind: FailureKind::Check,
        explain: "a check's build failed",
        hint: None,
    },
];

/// Errors that only repeat or follow another one: they never decide.
const ECHOES: [&str; 5] = [
    "some errors were encountered during the evaluation",
    "interrupted by the user",
    "dependencies couldn't be built",
    "dependencies of derivation",
    "dependency failed",
];

/// Whether an error only repeats or follows another one (`build of '…'
/// failed` repeats the failure of the build it names; nix 2.8 adds a
/// `(use '--show-trace' …)` line).
///
/// `cannot build on '…'` is nix giving up on one remote builder and trying
/// another: it decides nothing by itself, and when no machine is left nix
/// says `unable to start any build`.
pub(super) fn is_echo(message: &str) -> bool {
    message.starts_with("build of '")
        || message.starts_with("cannot build on '")
        || message.starts_with("(use '--show-trace'")
        || ECHOES.iter().any(|echo| message.contains(echo))
}

/// The row of [`RULES`] an error message matches.
pub fn rule_for(message: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .find(|rule| rule.contains.iter().all(|part| message.contains(part)))
}

/// What to do about a failure of `kind` explained as `summary`: the hint of
/// the rule that explained it where it has one of its own, else the kind's.
pub fn hint_for(kind: FailureKind, summary: &str) -> &'static str {
    RULES
        .iter()
        .find(|rule| rule.kind == kind && rule.hint.is_some() && summary.contains(rule.explain))
        .and_then(|rule| rule.hint)
        .unwrap_or(kind.hint())
}

/// What happened, in a few words: the kind's title, but for the host's
/// failures that are a remote build machine's, which are not the CI host's
/// Nix being misconfigured.
pub fn title_for(kind: FailureKind, summary: &str) -> &'static str {
    if kind == FailureKind::Host && hint_for(kind, summary) == BUILDERS {
        "A build machine was lost or could not take the build"
    } else {
        kind.title()
    }
}

/// How an error no row knows is explained when nix had started a build
/// that then failed: a check's failure, whatever nix's words.
pub(super) const BUILD_FAILED: Rule = Rule {
    contains: &[],
    kind: FailureKind::Check,
    explain: "a check's build failed",
    hint: None,
};

/// An error no row knows, in nix's trace of fetching an input.
pub(super) const FETCH_FAILED: Rule = Rule {
    contains: &[],
    kind: FailureKind::Fetch,
    explain: "",
    hint: None,
};

/// An error no row knows, placed in the flake's evaluation.
pub(super) const EVALUATION_FAILED: Rule = Rule {
    contains: &[],
    kind: FailureKind::Evaluation,
    explain: "the evaluation failed",
    hint: None,
};

/// An error no row knows and nothing places.
pub(super) const UNRECOGNISED: Rule = Rule {
    contains: &[],
    kind: FailureKind::Unrecognised,
    explain: "",
    hint: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_with_a_hint_of_its_own_sends_the_user_the_right_way() {
        let no_flake = "the commit has no flake.nix at the root of the repository: path 'flake.nix' does not exist";
        assert_eq!(hint_for(FailureKind::Evaluation, no_flake), NO_FLAKE);
        let old_nix =
            "the host's Nix is too old for this flake: it lacks a builtin the flake uses: …";
        assert_eq!(hint_for(FailureKind::Host, old_nix), OLD_NIX);
        // Any other summary of the kind keeps the kind's hint.
        let syntax = "flake.nix:1:2: a syntax error: syntax error, unexpected '='";
        assert_eq!(
            hint_for(FailureKind::Evaluation, syntax),
            FailureKind::Evaluation.hint()
        );
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

    #[test]
    fn a_lost_build_machine_is_titled_and_hinted_as_the_machines() {
        let none_left = rule_for("unable to start any build").unwrap().explanation();
        for summary in [
            format!("{LOST_MACHINE}: unexpected end-of-file"),
            format!(
                "{LOST_MACHINE}: the build printed nothing for max_silent_secs (4 s) while building \
                 on ssh-ng://root@b (no answer within 10 s), which no longer answers"
            ),
            format!("{none_left}: unable to start any build"),
        ] {
            assert_eq!(hint_for(FailureKind::Host, &summary), BUILDERS, "{summary}");
            assert!(title_for(FailureKind::Host, &summary).starts_with("A build machine"));
        }
        let daemon = "the Nix daemon is not reachable: cannot connect to socket";
        assert_eq!(
            title_for(FailureKind::Host, daemon),
            FailureKind::Host.title()
        );
    }
}
