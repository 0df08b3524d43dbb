//! Nix's structured log (`--log-format internal-json`), read once.
//!
//! Every line nix prints in this format is `@nix ` followed by one JSON
//! object: an activity starting or stopping, a result of an activity (a line
//! of build output, progress), or a message (errors and warnings, with the
//! file, line and column when nix knows them). [`parse`] turns a line into an
//! [`Event`]; the plain-text log ([`crate::build::checks::Renderer`]), the failure
//! diagnosis ([`crate::build::diagnosis::Diagnosis`]) and any later reader (live
//! per-check progress) consume the same events instead of each re-reading
//! the text.

use serde_json::Value;

/// Activity type of building a derivation (`fields`: drv path, machine,
/// current round, number of rounds).
pub const ACT_BUILD: u64 = 105;
/// Activity type of a whole `nix build`/`nix flake check` set of builds.
pub const ACT_BUILDS: u64 = 104;
/// Activity type of fetching a file (a flake input, a tarball).
pub const ACT_FILE_TRANSFER: u64 = 101;
/// Result type of an activity's progress; for the builds activity
/// (`ACT_BUILDS`), `fields` are builds done, expected, running, failed.
pub const RES_PROGRESS: u64 = 105;
/// Result type of one line of a build's output (`fields`: the line).
pub const RES_BUILD_LOG_LINE: u64 = 101;
/// Nix's verbosity of errors; warnings are 1, info 3.
pub const LEVEL_ERROR: u64 = 0;
/// Nix's verbosity of warnings.
pub const LEVEL_WARN: u64 = 1;
/// Nix's verbosity of informational messages: shown, as nix shows them.
pub const LEVEL_INFO: u64 = 3;

/// One line of nix's structured log.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An activity began.
    Start {
        id: u64,
        /// What kind of activity (`ACT_*`).
        kind: u64,
        level: u64,
        text: String,
        fields: Vec<Value>,
    },
    /// An activity ended.
    Stop { id: u64 },
    /// Something an activity produced (`RES_*`).
    Result {
        id: u64,
        kind: u64,
        fields: Vec<Value>,
    },
    /// A message: an error, a warning or information.
    Msg(Message),
}

/// A message of nix's.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub level: u64,
    /// The whole text as nix prints it (trace and code excerpt included),
    /// with its colours.
    pub text: String,
    /// The error itself, without the `error:` prefix and colours, when nix
    /// gives it apart (`raw_msg`).
    pub raw: Option<String>,
    /// Where the error is, when nix knows: the file as nix names it.
    pub file: Option<String>,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl Message {
    /// The whole text without colours.
    pub fn plain(&self) -> String {
        crate::build::nix::strip_ansi(&self.text)
    }

    /// The error itself, without `error:`, trace or code excerpt: nix's
    /// `raw_msg` where it gives one, else read from `plain`, the text
    /// without colours (see [`error_of`]).
    pub fn error(&self, plain: &str) -> String {
        match &self.raw {
            Some(raw) if !raw.trim().is_empty() => raw.trim().to_string(),
            _ => error_of(plain),
        }
    }
}

/// The line of an error's plain text that holds the error itself, and the
/// error on it, whichever way nix lays it out: `error: X` (2.8, also after
/// `error (ignored): `), or a trace of `… while …` lines with the error as
/// the last `error: X` (2.1x on, where `nix flake check` gives no `raw_msg`
/// for the errors it goes past).
pub fn innermost_error<'a>(lines: &[&'a str]) -> Option<(usize, &'a str)> {
    lines.iter().enumerate().rev().find_map(|(i, line)| {
        let mut rest = line.trim();
        rest = rest.strip_prefix("error (ignored):").unwrap_or(rest).trim();
        let mut found = false;
        while let Some(after) = rest.strip_prefix("error:") {
            rest = after.trim();
            found = true;
        }
        (found && !rest.is_empty()).then_some((i, rest))
    })
}

/// The error proper of an error's plain text ([`innermost_error`]), with
/// the lines that continue it; its `at` line, code excerpt and blank lines
/// are not kept. The whole text when no line is an error.
pub fn error_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some((start, first)) = innermost_error(&lines) else {
        return text.trim().to_string();
    };
    let mut error = first.to_string();
    for line in &lines[start + 1..] {
        let line = line.trim();
        if line.is_empty() || line.starts_with("at ") || line.starts_with('…') {
            break;
        }
        error.push('\n');
        error.push_str(line);
    }
    error
}

impl Event {
    /// The message of an error or warning event; `None` for other events.
    pub fn message(&self) -> Option<&Message> {
        match self {
            Event::Msg(message) => Some(message),
            _ => None,
        }
    }
}

/// Reads one line (without its newline). `None` when it is not nix's JSON
/// (plain output, or nix writing before its logger was set up).
pub fn parse(line: &[u8]) -> Option<Event> {
    let json = line.strip_prefix(b"@nix ")?;
    let mut value: Value = serde_json::from_slice(json).ok()?;
    let id = value["id"].as_u64().unwrap_or_default();
    let kind = value["type"].as_u64().unwrap_or_default();
    // Taken, not cloned: a build's output is one event per line.
    let fields = match value["fields"].take() {
        Value::Array(fields) => fields,
        _ => Vec::new(),
    };
    let text = |key: &str| value[key].as_str().map(str::to_string);
    Some(match value["action"].as_str()? {
        "start" => Event::Start {
            id,
            kind,
            level: value["level"].as_u64().unwrap_or(u64::MAX),
            text: text("text").unwrap_or_default(),
            fields,
        },
        "stop" => Event::Stop { id },
        "result" => Event::Result { id, kind, fields },
        "msg" => Event::Msg(Message {
            level: value["level"].as_u64().unwrap_or(u64::MAX),
            text: text("msg").unwrap_or_default(),
            raw: value["raw_msg"].as_str().map(crate::build::nix::strip_ansi),
            file: text("file"),
            line: value["line"].as_u64(),
            column: value["column"].as_u64(),
        }),
        _ => return None,
    })
}

/// A message of nix as the daemon shows it (log, summary, per-check
/// message): the credentials a flake reference's URL may carry as its user
/// masked, and every hash nix says it "got" withheld.
pub fn publishable(text: &str) -> String {
    withhold_hashes(&crate::redact::url_users(text))
}

/// `text` with every hash nix says it "got" withheld: the hash of an
/// input's contents (`NAR hash mismatch in input …, got 'sha256-…'`, and
/// nix 2.3x's `mismatch in field '…' of input '{…}', got '{…}'` whose JSON
/// carries it) or of a fixed-output build (`got:    sha256-…`). A pusher may
/// point an input at a file they cannot read; its hash must not come back
/// to them in the summary or the public log.
fn withhold_hashes(text: &str) -> String {
    const WITHHELD: &str = "(withheld by procurator-ci)";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let quoted = rest.find("got '");
        let colon = rest.find("got:");
        let at = match (quoted, colon) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(at) => at,
                None => break,
            },
        };
        if quoted == Some(at) {
            let open = at + "got '".len();
            out.push_str(&rest[..open]);
            let after = &rest[open..];
            match after.find('\'') {
                Some(close) => {
                    out.push_str(WITHHELD);
                    rest = &after[close..];
                }
                None => {
                    out.push_str(WITHHELD);
                    rest = "";
                }
            }
        } else {
            let open = at + "got:".len();
            out.push_str(&rest[..open]);
            let after = &rest[open..];
            let spaces = after.len() - after.trim_start_matches([' ', '\t']).len();
            out.push_str(&after[..spaces]);
            let hash = &after[spaces..];
            let end = hash
                .find(|c: char| c.is_whitespace() || c == '\u{1b}')
                .unwrap_or(hash.len());
            out.push_str(WITHHELD);
            rest = &hash[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_is_read() {
        let start = parse(
            br#"@nix {"action":"start","fields":["/nix/store/x.drv","",1,1],"id":7,"level":3,"text":"building '/nix/store/x.drv'","type":105}"#,
        )
        .unwrap();
        assert!(
            matches!(start, Event::Start { id: 7, kind: ACT_BUILD, level: 3, ref fields, .. } if fields.len() == 4)
        );
        assert_eq!(
            parse(br#"@nix {"action":"stop","id":7}"#),
            Some(Event::Stop { id: 7 })
        );
        let result = parse(br#"@nix {"action":"result","fields":["a line"],"id":7,"type":101}"#);
        assert!(
            matches!(result, Some(Event::Result { id: 7, kind: RES_BUILD_LOG_LINE, ref fields }) if fields[0] == "a line")
        );
    }

    #[test]
    fn an_error_keeps_its_location_without_colours() {
        let event = parse(
            br#"@nix {"action":"msg","column":11,"file":"/nix/store/aawlnpgb61qfwd02fpj9vsn6v4c3aa3z-source/flake.nix","level":0,"line":4,"msg":"\u001b[31;1merror:\u001b[0m syntax error, unexpected '='","raw_msg":"syntax error, unexpected '='"}"#,
        )
        .unwrap();
        let message = event.message().unwrap();
        assert_eq!(message.level, LEVEL_ERROR);
        assert_eq!(
            message.text,
            "\u{1b}[31;1merror:\u{1b}[0m syntax error, unexpected '='"
        );
        assert_eq!(message.raw.as_deref(), Some("syntax error, unexpected '='"));
        assert_eq!((message.line, message.column), (Some(4), Some(11)));
        assert!(
            message
                .file
                .as_deref()
                .unwrap()
                .ends_with("-source/flake.nix")
        );
    }

    #[test]
    fn the_error_is_found_in_every_layout() {
        // 2.8: the error on the first line, after `error (ignored):`.
        assert_eq!(
            error_of(
                "error (ignored): error: infinite recursion encountered\n\n       at /nix/store/x-source/flake.nix:1:31:\n\n            1| x"
            ),
            "infinite recursion encountered"
        );
        // 2.26: a trace first, the error last, then its place.
        assert_eq!(
            error_of(
                "error (ignored): error:\n       … while checking the derivation 'checks.x86_64-linux.a'\n         at /nix/store/x-source/flake.nix:1:43:\n            1| x\n\n       error: infinite recursion encountered\n       at /nix/store/x-source/flake.nix:1:31:"
            ),
            "infinite recursion encountered"
        );
        // Continuation lines stay with it.
        assert_eq!(
            error_of("error: Cannot build 'x.drv'.\n       Reason: builder failed.\n\n  1| x"),
            "Cannot build 'x.drv'.\nReason: builder failed."
        );
        // Nothing that looks like an error: the whole text.
        assert_eq!(error_of("  something else  "), "something else");
    }

    #[test]
    fn hashes_nix_got_are_withheld() {
        assert_eq!(
            withhold_hashes(
                "NAR hash mismatch in input 'git+file:///x' (/nix/store/y-source), expected 'sha256-AAA=', got 'sha256-bZs='"
            ),
            "NAR hash mismatch in input 'git+file:///x' (/nix/store/y-source), expected 'sha256-AAA=', got '(withheld by procurator-ci)'"
        );
        assert_eq!(
            withhold_hashes(
                "mismatch in field 'lastModified' of input '{\"narHash\":\"sha256-AAA=\"}', got '{\"narHash\":\"sha256-real=\"}'"
            ),
            "mismatch in field 'lastModified' of input '{\"narHash\":\"sha256-AAA=\"}', got '(withheld by procurator-ci)'"
        );
        assert_eq!(
            withhold_hashes("  specified: sha256-AAA=\n     got:    sha256-real=\nmore"),
            "  specified: sha256-AAA=\n     got:    (withheld by procurator-ci)\nmore"
        );
        assert_eq!(withhold_hashes("nothing to hide"), "nothing to hide");
    }

    #[test]
    fn other_lines_are_not_events() {
        assert_eq!(parse(b"plain output"), None);
        assert_eq!(parse(b"@nix {not json"), None);
        assert_eq!(parse(br#"@nix {"action":"unknown"}"#), None);
    }
}
