//! Logging: journald with structured fields under systemd, pretty on a
//! terminal, plain or JSON otherwise; `RUST_LOG` filters.
//!
//! One event is one line in every format: values carry text from outside
//! (a webhook receiver's answer, nix's errors), and in the plain and pretty
//! formats a newline in one would start a line that passes for the
//! daemon's own. Their fields are written with control characters escaped
//! ([`escape_controls`]); JSON and journald escape them themselves.

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// The syslog identifier of our journal entries.
pub const SYSLOG_IDENTIFIER: &str = "procurator-ci";

/// The format `auto` resolves to here: journald when systemd connected our
/// stderr to the journal (it sets `JOURNAL_STREAM` exactly then), pretty on
/// a terminal, plain otherwise.
pub fn resolve(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Pretty,
        other => other,
    }
}

/// Installs the global subscriber. Journal fields are the upper-cased
/// field names without prefix (`build_id` → `BUILD_ID`), so
/// `journalctl -u procurator-ci BUILD_ID=42` finds a build's entries.
pub fn init(format: LogFormat) {
    let filter = || {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"))
    };
    let registry = tracing_subscriber::registry().with(filter());
    match resolve(format) {
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(layer) => {
                registry
                    .with(
                        layer
                            .with_syslog_identifier(SYSLOG_IDENTIFIER.into())
                            .with_field_prefix(None),
                    )
                    .init();
            }
            Err(e) => {
                registry
                    .with(
                        tracing_subscriber::fmt::layer()
                            .fmt_fields(escaped_fields())
                            .with_writer(std::io::stderr)
                            .with_ansi(false),
                    )
                    .init();
                tracing::warn!(error = %e, "cannot reach the journal; logging to stderr");
            }
        },
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(escaped_fields())
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Auto => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(escaped_fields())
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .init(),
    }
}

/// The fields of the plain and pretty formats: `name=value` (the message
/// alone), separated by spaces, each value with its control characters
/// escaped.
fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let raw = format!("{value:?}");
        let text = escape_controls(&raw);
        match field.name() {
            "message" => writer.write_str(&text),
            name => write!(writer, "{name}={text}"),
        }
    })
    .delimited(" ")
}

/// `text` with every control character, and the Unicode line and paragraph
/// separators, written as an escape (`\n`, `\r`, `\t`, `\u{1b}`), so that
/// it stays on its line and cannot drive a terminal.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !text.chars().any(escaped) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if escaped(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_controls("ok\nFAKE line\r\x1b[31mred\t\u{85}\u{2028}"),
            "ok\\nFAKE line\\r\\u{1b}[31mred\\t\\u{85}\\u{2028}"
        );
        assert!(matches!(
            escape_controls("plain ✓ text"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
