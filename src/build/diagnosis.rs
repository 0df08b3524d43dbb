//! Why a build did not pass, in the user's terms: the failure taxonomy.
//!
//! A build that does not pass gets one [`FailureKind`]; each kind has a
//! short title and a one-line hint (the API and the page show both), and
//! only the kinds that are not the user's code are retried. The kind is read
//! from nix's structured log ([`crate::build::nixlog`]): every error message is
//! matched against [`RULES`], the table of nix messages we know, and the
//! most telling match wins (the host over the network over the code).

use serde::Serialize;
use serde_json::Value;

use crate::build::checks::{CheckResult, CheckStatus};
use crate::build::nixlog::{Event, LEVEL_ERROR, Message};

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
    fn rank(self) -> u8 {
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
const ECHOES: [&str; 5] = [
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

/// One error nix reported.
#[derive(Debug, Clone, PartialEq)]
pub struct NixError {
    /// Its first line, without `error:` and colours, store paths of the
    /// flake's source shortened to the file in the repository.
    pub message: String,
    /// `file:line:col` in the repository, when nix gives one.
    pub location: Option<String>,
    /// The flake output nix was checking when it happened.
    pub output: Option<String>,
}

/// What nix's log says about a build, gathered event by event.
#[derive(Debug, Default, Clone)]
pub struct Diagnosis {
    /// Errors in the order nix reported them.
    pub errors: Vec<NixError>,
    /// Derivations whose builder failed, in order, without duplicates.
    pub failed_drvs: Vec<String>,
    /// Whether any line was nix's structured log: a `nix_bin` that prints
    /// none is not nix.
    pub structured: bool,
    /// git's `fatal:` lines since nix's last error: why a git input failed.
    git_fatal: Vec<String>,
    /// Open `checking flake output '…'` activities, innermost last.
    checking: Vec<(u64, String)>,
}

/// How a failed build is explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub kind: FailureKind,
    pub summary: String,
    /// For a fetch: why (the rule's explanation, maybe empty) and nix's
    /// message, which names the URL, repository or path that failed.
    pub fetch: Option<(&'static str, String)>,
}

impl Verdict {
    /// The summary of a fetch failure naming the input it is about:
    /// `input 'nixpkgs' (github:NixOS/nixpkgs/nixos-25.11) could not be
    /// fetched: …`.
    pub fn naming(mut self, input: &crate::build::flake_inputs::Input) -> Verdict {
        if let Some((why, message)) = &self.fetch {
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            };
            self.summary = format!(
                "input '{}' ({}) could not be fetched{why}: {message}",
                input.name, input.reference
            );
        }
        self
    }
}

impl Diagnosis {
    /// Looks at one event of nix's log.
    pub fn event(&mut self, event: &Event) {
        self.structured = true;
        match event {
            Event::Start { id, text, .. } => {
                if let Some(output) = text
                    .strip_prefix("checking flake output '")
                    .and_then(|rest| rest.strip_suffix('\''))
                {
                    self.checking.push((*id, output.to_string()));
                }
            }
            Event::Stop { id } => self.checking.retain(|(open, _)| open != id),
            Event::Msg(message) if message.level == LEVEL_ERROR => self.message(message),
            _ => {}
        }
    }

    /// Looks at a line that is not nix's JSON (nix writes plain text before
    /// its logger is set up, and so do the programs it runs).
    pub fn plain(&mut self, line: &[u8]) {
        let line = crate::build::nix::strip_ansi(&String::from_utf8_lossy(line));
        let line = line.trim();
        if line.starts_with("error:") {
            self.add(line, None);
        } else if line.starts_with("fatal:") && self.git_fatal.len() < 3 {
            self.git_fatal.push(line.chars().take(200).collect());
        }
    }

    fn message(&mut self, message: &Message) {
        let plain = message.plain();
        let location = match (&message.file, message.line, message.column) {
            (Some(file), Some(line), Some(column)) => {
                Some(format!("{}:{line}:{column}", repo_path(file)))
            }
            _ => trace_location(&plain),
        };
        self.add(&plain, location);
    }

    fn add(&mut self, text: &str, location: Option<String>) {
        let first = text.lines().next().unwrap_or_default().trim();
        let mut message = first
            .strip_prefix("error (ignored):")
            .unwrap_or(first)
            .trim();
        while let Some(rest) = message.strip_prefix("error:") {
            message = rest.trim();
        }
        if message.is_empty() || ECHOES.iter().any(|echo| message.contains(echo)) {
            return;
        }
        let fatal = std::mem::take(&mut self.git_fatal);
        let message = if message.starts_with("program 'git' failed") && !fatal.is_empty() {
            format!("{message} ({})", fatal.join("; "))
        } else {
            message.to_string()
        };
        let message = message.as_str();
        if let Some(drv) = failed_drv(message)
            && !self.failed_drvs.contains(&drv)
        {
            self.failed_drvs.push(drv);
        }
        let message: String = shorten_sources(message).chars().take(300).collect();
        self.errors.push(NixError {
            message,
            location,
            output: self.checking.last().map(|(_, output)| output.clone()),
        });
    }

    /// The explanation of a nix run that failed, with the per-check results
    /// when the flake's checks could be evaluated.
    pub fn verdict(&self, checks: Option<&[CheckResult]>) -> Option<Verdict> {
        let (error, rule) = self
            .errors
            .iter()
            .filter_map(|e| Some((e, rule_for(&e.message)?)))
            .min_by_key(|(_, rule)| rule.kind.rank())
            .or_else(|| {
                // An error of no known shape while no check failed: nix
                // stopped while evaluating.
                self.errors.first().map(|e| (e, &FALLBACK))
            })?;
        let summary = match rule.kind {
            FailureKind::Check | FailureKind::Evaluation => {
                user_summary(rule, error, checks, &self.failed_drvs)
            }
            _ => format!("{}: {}", rule.explanation(), error.message),
        };
        Some(Verdict {
            kind: rule.kind,
            summary,
            fetch: (rule.kind == FailureKind::Fetch).then(|| (rule.explain, error.message.clone())),
        })
    }
}

/// How an error nobody has described yet is explained.
const FALLBACK: Rule = Rule {
    contains: &[],
    kind: FailureKind::Evaluation,
    explain: "the evaluation failed",
};

/// The summary of a failure of the user's code: the failed checks when they
/// are known, otherwise the error with its place.
fn user_summary(
    rule: &Rule,
    error: &NixError,
    checks: Option<&[CheckResult]>,
    failed_drvs: &[String],
) -> String {
    let names: Vec<String> = checks
        .unwrap_or_default()
        .iter()
        .filter_map(|c| match (c.status, &c.error) {
            (CheckStatus::Failed, _) => Some(c.name.clone()),
            (_, Some(_)) => Some(format!("{} (evaluation)", c.name)),
            _ => None,
        })
        .collect();
    let place = match (&error.location, &error.output) {
        (Some(location), _) => format!("{location}: "),
        (None, Some(output)) => format!("in output '{output}': "),
        (None, None) => String::new(),
    };
    let explained = format!("{place}{}: {}", rule.explain, error.message);
    if !names.is_empty() {
        let failed = format!("failed checks: {}", names.join(", "));
        return match rule.kind {
            FailureKind::Evaluation => format!("{failed} — {explained}"),
            _ => failed,
        };
    }
    if rule.kind == FailureKind::Check && !failed_drvs.is_empty() {
        let names: Vec<&str> = failed_drvs
            .iter()
            .map(|d| crate::build::checks::drv_name(d))
            .collect();
        return format!("failed: {}", names.join(", "));
    }
    explained
}

/// `builder for '/nix/store/…-x.drv' failed …` → the derivation's path.
fn failed_drv(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("builder for '")
        .or_else(|| message.strip_prefix("builder for \""))?;
    let end = rest.find(['\'', '"'])?;
    let drv = &rest[..end];
    (drv.ends_with(".drv") && rest[end..].contains("failed")).then(|| drv.to_string())
}

/// `/nix/store/<hash>-source/dir/file.nix` → `dir/file.nix`: the flake's
/// source is the repository, and its store path means nothing to the user.
fn repo_path(file: &str) -> String {
    match file.strip_prefix("/nix/store/").and_then(|rest| {
        let (hash, rest) = rest.split_at_checked(32)?;
        let in_source = rest.strip_prefix("-source/")?;
        hash.bytes()
            .all(|b| b.is_ascii_alphanumeric())
            .then_some(in_source)
    }) {
        Some(path) => path.to_string(),
        None => file.to_string(),
    }
}

/// Every store path of a flake source in `text` shortened by [`repo_path`].
fn shorten_sources(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("/nix/store/") {
        out.push_str(&rest[..at]);
        let path = &rest[at..];
        let end = path
            .find(|c: char| c == '\'' || c == '"' || c == ':' || c.is_whitespace())
            .unwrap_or(path.len());
        out.push_str(&repo_path(&path[..end]));
        rest = &path[end..];
    }
    out.push_str(rest);
    out
}

/// The first `at /nix/store/…-source/file:line:col` of an error's trace.
fn trace_location(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let place = line.trim().strip_prefix("at ")?.trim_end_matches(':');
        let mut parts = place.rsplitn(3, ':');
        let (column, line, file) = (parts.next()?, parts.next()?, parts.next()?);
        (column.parse::<u64>().is_ok() && line.parse::<u64>().is_ok())
            .then(|| format!("{}:{line}:{column}", repo_path(file)))
    })
}

/// Who or what cancelled a build. (A shutdown cancels nothing: it hands
/// running builds back to the queue.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelSource {
    /// Someone pressed Cancel on the web page.
    Page,
    /// A client of the API.
    Api,
    /// A newer push to the same branch.
    Superseded,
}

impl CancelSource {
    /// The recorded reason of a cancellation by `self`; `newer` is the
    /// superseding build.
    pub fn reason(self, newer: Option<i64>) -> String {
        match self {
            CancelSource::Page => "cancelled from the web page".into(),
            CancelSource::Api => "cancelled through the API".into(),
            CancelSource::Superseded => format!("superseded by #{}", newer.unwrap_or_default()),
        }
    }

    /// Who cancelled, read back from a recorded reason.
    pub fn of(reason: &str) -> Option<CancelSource> {
        [CancelSource::Page, CancelSource::Api]
            .into_iter()
            .find(|source| source.reason(None) == reason)
            .or_else(|| {
                reason
                    .starts_with("superseded by #")
                    .then_some(CancelSource::Superseded)
            })
    }

    /// The one-line hint shown with a cancelled build.
    pub fn hint(self) -> &'static str {
        match self {
            CancelSource::Page => {
                "Someone pressed Cancel on the build's page. Rebuild to run it again."
            }
            CancelSource::Api => "A client cancelled it through the API. Rebuild to run it again.",
            CancelSource::Superseded => {
                "A newer commit was pushed to the branch; its build has the current result."
            }
        }
    }
}

/// What a build that passed did not test: no checks for this host's system,
/// or checks only for other systems.
pub fn notices(system: &str, checks: Option<&Value>, outputs: Option<&Value>) -> Vec<String> {
    let mut notices = Vec::new();
    if checks.and_then(Value::as_array).is_some_and(Vec::is_empty) {
        notices.push(format!("no checks for {system}: nothing was tested"));
    }
    if let Some(per_system) = outputs
        .and_then(|o| o.get("checks"))
        .and_then(Value::as_object)
    {
        for (other, names) in per_system {
            let names: Vec<&str> = names
                .as_array()
                .map(|n| n.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if other != system && !names.is_empty() {
                notices.push(format!(
                    "checks for {other} not checked on this host ({system}): {}",
                    names.join(", ")
                ));
            }
        }
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::nixlog::parse;

    /// The kind and explanation of one nix error line, through the whole
    /// path: nix's JSON, the diagnosis, the verdict.
    fn verdict_of(lines: &[&str]) -> Verdict {
        let mut diagnosis = Diagnosis::default();
        for line in lines {
            match parse(line.as_bytes()) {
                Some(event) => diagnosis.event(&event),
                None => diagnosis.plain(line.as_bytes()),
            }
        }
        diagnosis.verdict(None).expect("a verdict")
    }

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
    fn a_syntax_error_says_where() {
        let verdict = verdict_of(&[
            r#"@nix {"action":"msg","column":11,"file":"/nix/store/aawlnpgb61qfwd02fpj9vsn6v4c3aa3z-source/flake.nix","level":0,"line":4,"msg":"\u001b[31;1merror:\u001b[0m syntax error, unexpected '='\n\n       at x","raw_msg":"syntax error, unexpected '='"}"#,
        ]);
        assert_eq!(verdict.kind, FailureKind::Evaluation);
        assert_eq!(
            verdict.summary,
            "flake.nix:4:11: a syntax error: syntax error, unexpected '='"
        );
    }

    #[test]
    fn an_ignored_error_takes_its_place_from_the_trace_and_its_output() {
        let verdict = verdict_of(&[
            r#"@nix {"action":"start","id":2,"level":5,"text":"checking flake output 'checks'","type":0}"#,
            r#"@nix {"action":"msg","level":0,"msg":"error (ignored): \u001b[31;1merror:\u001b[0m infinite recursion encountered\n\n       \u001b[34;1mat \u001b[35;1m/nix/store/rlrqwaxjljz16gkpv759zl4yr1xbmvj1-source/flake.nix:2:31\u001b[0m:\n\n  1| {"}"#,
            r#"@nix {"action":"stop","id":2}"#,
            r#"@nix {"action":"msg","column":null,"file":null,"level":0,"line":null,"msg":"\u001b[31;1merror:\u001b[0m some errors were encountered during the evaluation","raw_msg":"some errors were encountered during the evaluation"}"#,
        ]);
        assert_eq!(verdict.kind, FailureKind::Evaluation);
        assert_eq!(
            verdict.summary,
            "flake.nix:2:31: an infinite recursion: infinite recursion encountered"
        );
        let throw = verdict_of(&[
            r#"@nix {"action":"start","id":2,"level":5,"text":"checking flake output 'checks'","type":0}"#,
            r#"@nix {"action":"msg","level":0,"msg":"error (ignored): \u001b[31;1merror:\u001b[0m broken on purpose"}"#,
        ]);
        assert_eq!(
            throw.summary,
            "in output 'checks': the evaluation failed: broken on purpose"
        );
    }

    #[test]
    fn the_host_outranks_the_code_and_warnings_and_echoes_never_decide() {
        let verdict = verdict_of(&[
            r#"@nix {"action":"msg","level":0,"msg":"warning: the group 'nixbld' specified in 'build-users-group' does not exist"}"#,
            r#"@nix {"action":"msg","level":1,"msg":"warning: error: unable to download 'https://x': Couldn't resolve host name (6); retrying in 273 ms"}"#,
            "error: builder for '/nix/store/wn879cdnxjr8085n60zcl37zjljbmc3j-a.drv' failed with exit code 1",
            r#"@nix {"action":"msg","level":0,"msg":"error: the group 'nixbld' specified in 'build-users-group' does not exist"}"#,
            r#"@nix {"action":"msg","level":0,"msg":"error: interrupted by the user"}"#,
        ]);
        assert_eq!(verdict.kind, FailureKind::Host);
        let mut only_echoes = Diagnosis::default();
        only_echoes.plain(b"error: interrupted by the user");
        only_echoes.plain(b"warning: something");
        assert_eq!(only_echoes.verdict(None), None);
    }

    #[test]
    fn gits_fatal_lines_say_why_a_git_input_failed_and_the_input_is_named() {
        let verdict = verdict_of(&[
            "fatal: '/nonexistent/dep' does not appear to be a git repository",
            "fatal: Could not read from remote repository.",
            r#"@nix {"action":"msg","column":null,"file":null,"level":0,"line":null,"msg":"\u001b[31;1merror:\u001b[0m program 'git' failed with exit code 128","raw_msg":"program 'git' failed with exit code 128"}"#,
        ]);
        assert_eq!(verdict.kind, FailureKind::Fetch);
        assert_eq!(
            verdict.summary,
            "an input could not be fetched: no such repository: program 'git' failed with exit code 128 \
             (fatal: '/nonexistent/dep' does not appear to be a git repository; fatal: Could not read from remote repository.)"
        );
        let inputs = crate::build::flake_inputs::Inputs::read(
            Some(
                "{ inputs.dep.url = \"git+file:///nonexistent/dep\"; outputs = { self, dep }: { }; }",
            ),
            None,
        );
        let (_, message) = verdict.fetch.clone().unwrap();
        let named = verdict.naming(inputs.owner_of(&message).unwrap());
        assert!(
            named.summary.starts_with(
                "input 'dep' (git+file:///nonexistent/dep) could not be fetched: no such repository: program 'git' failed"
            ),
            "{}",
            named.summary
        );
        // Only a fetch failure is renamed.
        let host = verdict_of(&[
            r#"@nix {"action":"msg","level":0,"msg":"error: the group 'nixbld' specified in 'build-users-group' does not exist"}"#,
        ]);
        let input = inputs.owner_of("/nonexistent/dep").unwrap();
        assert_eq!(host.clone().naming(input), host);
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
    fn cancel_sources_read_back_from_their_reasons() {
        for source in [
            CancelSource::Page,
            CancelSource::Api,
            CancelSource::Superseded,
        ] {
            assert_eq!(CancelSource::of(&source.reason(Some(7))), Some(source));
        }
        assert_eq!(CancelSource::Superseded.reason(Some(7)), "superseded by #7");
        assert_eq!(CancelSource::of("cancelled"), None);
    }

    #[test]
    fn passing_builds_say_what_was_not_tested() {
        let outputs = serde_json::json!({"checks": {"aarch64-linux": ["a"], "x86_64-linux": []}});
        assert_eq!(
            notices("x86_64-linux", Some(&serde_json::json!([])), Some(&outputs)),
            [
                "no checks for x86_64-linux: nothing was tested",
                "checks for aarch64-linux not checked on this host (x86_64-linux): a"
            ]
        );
        assert!(notices("x86_64-linux", Some(&serde_json::json!([{}])), None).is_empty());
    }
}
