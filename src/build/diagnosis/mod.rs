//! Why a build did not pass, in the user's terms: the failure taxonomy.
//!
//! A build that does not pass gets one [`FailureKind`]; each kind has a
//! short title and a one-line hint (the API and the page show both), and
//! only the kinds that are not the user's code are retried. The kind is read
//! from nix's structured log ([`crate::build::nixlog`]): every error
//! message is matched against [`RULES`](rules::RULES), the table of nix
//! messages we know, and the most telling match wins (the host over the
//! network over the code).
//!
//! This module owns the accumulator ([`Diagnosis`]: nix's errors gathered
//! event by event), the [`Verdict`] and its summaries; [`rules`] owns the
//! kinds and the table of messages, `cancel` who cancelled a build
//! ([`CancelSource`]), and `notices` what a build that passed did not test
//! ([`notices()`]).

mod cancel;
mod notices;
#[cfg(test)]
mod rows;
pub mod rules;

pub use cancel::CancelSource;
pub use notices::notices;
pub use rules::FailureKind;
use rules::{Rule, rule_for};

use std::collections::HashSet;

use crate::build::checks::{CheckResult, CheckStatus};
use crate::build::nixlog::{ACT_BUILD, Event, LEVEL_ERROR, Message};

/// One error nix reported.
#[derive(Debug, Clone, PartialEq)]
pub struct NixError {
    /// The error itself on one line, without `error:`, trace and colours,
    /// store paths of the flake's source shortened to the file in the
    /// repository, and any hash nix "got" withheld.
    pub message: String,
    /// `file:line:col` in the repository, when nix gives one.
    pub location: Option<String>,
    /// The flake output nix was checking when it happened.
    pub output: Option<String>,
    /// What nix's trace says it was doing, when it says.
    pub doing: Doing,
}

/// What nix was doing when an error happened, from the structure of its
/// message (its place and trace) rather than the error's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing {
    /// Fetching or locking an input (`… while fetching the input`).
    Fetching,
    /// Evaluating the flake: the error has a place in it, a trace of
    /// evaluation, happened while an output was checked, or is one that
    /// `nix flake check` went past (`error (ignored)`).
    Evaluating,
    /// Nothing in the message says.
    Unknown,
}

/// What nix's log says about a build, gathered event by event.
#[derive(Debug, Default, Clone)]
pub struct Diagnosis {
    /// Errors in the order nix reported them.
    pub errors: Vec<NixError>,
    /// Derivations whose build failed, in order, without duplicates: those
    /// nix started building and then named in an error.
    pub failed_drvs: Vec<String>,
    /// Whether any line was nix's structured log: a `nix_bin` that prints
    /// none is not nix.
    pub structured: bool,
    /// git's `fatal:` lines since nix's last error: why a git input failed.
    git_fatal: Vec<String>,
    /// Open `checking flake output '…'` activities, innermost last.
    checking: Vec<(u64, String)>,
    /// Derivations nix started building.
    started: HashSet<String>,
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
            Event::Start {
                id,
                kind,
                text,
                fields,
                ..
            } => {
                if let Some(output) = text
                    .strip_prefix("checking flake output '")
                    .and_then(|rest| rest.strip_suffix('\''))
                {
                    self.checking.push((*id, output.to_string()));
                }
                if *kind == ACT_BUILD
                    && let Some(drv) = fields.first().and_then(|f| f.as_str())
                {
                    self.started.insert(drv.to_string());
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
            let error = crate::build::nixlog::error_of(line);
            self.add(&error, None, Doing::Unknown);
        } else if line.starts_with("fatal:") && self.git_fatal.len() < 3 {
            self.git_fatal.push(line.chars().take(200).collect());
        }
    }

    fn message(&mut self, message: &Message) {
        let plain = message.plain();
        // Nix 2.3x sends some warnings at the error level.
        if plain.starts_with("warning:") {
            return;
        }
        let location = match (&message.file, message.line, message.column) {
            (Some(file), Some(line), Some(column)) => {
                // From 2.2x on, `file` ends in the place itself.
                let file = file
                    .strip_suffix(&format!(":{line}:{column}"))
                    .unwrap_or(file);
                Some(format!("{}:{line}:{column}", repo_path(file)))
            }
            _ => trace_location(&plain),
        };
        let doing = if plain.contains("… while fetching the input")
            || plain.contains("… while updating the lock file")
        {
            Doing::Fetching
        } else if plain.starts_with("error (ignored):")
            || plain.contains("… while ")
            || !self.checking.is_empty()
            || location.as_deref().is_some_and(|l| !l.starts_with('/'))
        {
            Doing::Evaluating
        } else {
            Doing::Unknown
        };
        let mut error = message.error(&plain);
        // Nix 2.8 meets a builtin of a later Nix as a missing attribute;
        // the code excerpt shows it was one of `builtins`.
        if let Some(name) = error
            .strip_prefix("attribute '")
            .and_then(|rest| rest.strip_suffix("' missing"))
            && plain.contains(&format!("builtins.{name}"))
        {
            error = format!("{error}: builtins.{name} is not in the host's Nix");
        }
        self.add(&error, location, doing);
    }

    fn add(&mut self, error: &str, location: Option<String>, doing: Doing) {
        // One line: nix 2.3x continues an error on the lines below it.
        let message = error.split_whitespace().collect::<Vec<_>>().join(" ");
        if message.is_empty() || rules::is_echo(&message) {
            return;
        }
        let fatal = std::mem::take(&mut self.git_fatal);
        let gitish = message.contains("'git'")
            || message.contains("Git ")
            || (doing == Doing::Fetching && !fatal.is_empty());
        let message = if gitish && !fatal.is_empty() {
            format!("{message} ({})", fatal.join("; "))
        } else {
            message
        };
        for drv in store_drvs(&message) {
            if self.started.contains(&drv) && !self.failed_drvs.contains(&drv) {
                self.failed_drvs.push(drv);
            }
        }
        let message = crate::build::nixlog::publishable(&shorten_sources(&message));
        let message: String = message.chars().take(300).collect();
        self.errors.push(NixError {
            message,
            location,
            output: self.checking.last().map(|(_, output)| output.clone()),
            doing,
        });
    }

    /// The explanation of a nix run that failed, with the per-check results
    /// when the flake's checks could be evaluated. `None` when nix reported
    /// no error at all.
    pub fn verdict(&self, checks: Option<&[CheckResult]>) -> Option<Verdict> {
        let matched = self
            .errors
            .iter()
            .filter_map(|e| Some((e, rule_for(&e.message)?)))
            .min_by_key(|(_, rule)| rule.kind.rank());
        let checks_failed = checks
            .unwrap_or_default()
            .iter()
            .any(|c| c.status == CheckStatus::Failed);
        let (error, rule) = match matched {
            Some(found) => found,
            // No row knows the words: what nix was doing decides. A build
            // that nix started and that failed is a check's failure
            // whatever nix calls it; then the place of the error.
            None => {
                let first = self.errors.first()?;
                if !self.failed_drvs.is_empty() || checks_failed {
                    (first, &rules::BUILD_FAILED)
                } else if let Some(fetching) =
                    self.errors.iter().find(|e| e.doing == Doing::Fetching)
                {
                    (fetching, &rules::FETCH_FAILED)
                } else if let Some(evaluating) =
                    self.errors.iter().find(|e| e.doing == Doing::Evaluating)
                {
                    (evaluating, &rules::EVALUATION_FAILED)
                } else {
                    (first, &rules::UNRECOGNISED)
                }
            }
        };
        let summary = match rule.kind {
            FailureKind::Check | FailureKind::Evaluation => {
                user_summary(rule, error, checks, &self.failed_drvs)
            }
            FailureKind::Unrecognised => error.message.clone(),
            _ => format!("{}: {}", rule.explanation(), error.message),
        };
        Some(Verdict {
            kind: rule.kind,
            summary,
            fetch: (rule.kind == FailureKind::Fetch).then(|| (rule.explain, error.message.clone())),
        })
    }
}

/// Every `/nix/store/…​.drv` path in `text`.
fn store_drvs(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("/nix/store/") {
        let path = &rest[at..];
        let end = path
            .find(|c: char| c == '\'' || c == '"' || c == '^' || c == '!' || c.is_whitespace())
            .unwrap_or(path.len());
        let drv = path[..end].trim_end_matches(['.', ',', ':']);
        if drv.ends_with(".drv") {
            found.push(drv.to_string());
        }
        rest = &path[end..];
    }
    found
}

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

/// How nix 2.3x begins the name of a flake's source: `«git+file:///…»`.
const SOURCE_URL: &str = "«git+file:";

/// A file of the flake's source as the user knows it, in the repository:
/// `/nix/store/<hash>-source/dir/file.nix` (nix before 2.2x) and
/// `«git+file:///…?ref=…&rev=…»/dir/file.nix` (nix 2.3x names the source by
/// its flake reference) are both `dir/file.nix`; the store path or the URL
/// means nothing to the user.
fn repo_path(file: &str) -> String {
    if let Some(rest) = file.strip_prefix(SOURCE_URL)
        && let Some((_, path)) = rest.split_once("»/")
    {
        return path.to_string();
    }
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

/// Every file of a flake source in `text` shortened by [`repo_path`].
fn shorten_sources(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = next_source(rest) {
        out.push_str(&rest[..at]);
        let path = &rest[at..];
        // A URL's own colons (`«git+file:///…»`) do not end the path.
        let url = path
            .strip_prefix(SOURCE_URL)
            .and_then(|url| url.find('»'))
            .map_or(0, |close| SOURCE_URL.len() + close + '»'.len_utf8());
        let end = url
            + path[url..]
                .find(|c: char| c == '\'' || c == '"' || c == ':' || c.is_whitespace())
                .unwrap_or(path.len() - url);
        out.push_str(&repo_path(&path[..end]));
        rest = &path[end..];
    }
    out.push_str(rest);
    out
}

/// Where the next store path or `«git+file:…»` source in `text` starts.
fn next_source(text: &str) -> Option<usize> {
    match (text.find("/nix/store/"), text.find(SOURCE_URL)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The place of an error from its trace: the first `at file:line:col`
/// after the error itself (2.8 puts it there), else the innermost frame of
/// the trace above it (2.1x on).
fn trace_location(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let place = |line: &&str| -> Option<String> {
        let place = line.trim().strip_prefix("at ")?.trim_end_matches(':');
        let mut parts = place.rsplitn(3, ':');
        let (column, line, file) = (parts.next()?, parts.next()?, parts.next()?);
        (column.parse::<u64>().is_ok() && line.parse::<u64>().is_ok())
            .then(|| format!("{}:{line}:{column}", repo_path(file)))
    };
    let error = crate::build::nixlog::innermost_error(&lines).map_or(0, |(at, _)| at);
    lines[error..]
        .iter()
        .find_map(place)
        .or_else(|| lines[..error].iter().rev().find_map(place))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::nixlog::parse;

    /// The kind and explanation of one nix error line, through the whole
    /// path: nix's JSON, the diagnosis, the verdict.
    pub(super) fn verdict_of(lines: &[&str]) -> Verdict {
        let mut diagnosis = Diagnosis::default();
        for line in lines {
            match parse(line.as_bytes()) {
                Some(event) => diagnosis.event(&event),
                None => diagnosis.plain(line.as_bytes()),
            }
        }
        diagnosis.verdict(None).expect("a verdict")
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
}
