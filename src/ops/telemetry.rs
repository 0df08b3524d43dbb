//! Logging: journald with structured fields under systemd, pretty on a
//! terminal, plain or JSON otherwise; `RUST_LOG` filters.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
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
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
        LogFormat::Auto => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .init(),
    }
}
