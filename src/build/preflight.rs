//! The pre-flight: does this host's nix work as configured? Run at start and
//! on a schedule, so that a misconfigured host is obvious before anyone
//! pushes: its problems go to the journal, to `GET /api/health` as
//! `warnings`, and to a banner on the page.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::app::App;
use crate::build::{builders, diagnosis};

/// How often the pre-flight runs again after the first one at start.
pub const PERIOD: Duration = Duration::from_secs(15 * 60);

/// Longest a single nix command of the pre-flight may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Bound on one substituter's probe: a host without network must be told
/// within seconds, not after nix's own retries.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Oldest nix with flakes (`nix flake check`) as procurator-ci runs them.
const MIN_VERSION: (u64, u64) = (2, 4);

/// A problem the pre-flight found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Stable, for clients: `nix_unusable`, `nix_too_old`, `nix_untested`,
    /// `nix_config_unreadable`, `flakes_disabled`, `build_users_missing`,
    /// `sandbox_off`, `store_unreachable`, `substituter_unreachable`,
    /// `builder_unreachable`,
    /// `trivial_build_failed`, `evaluation_not_isolated`.
    pub code: &'static str,
    /// What is wrong and what to do, for people.
    pub message: String,
}

/// The last pre-flight's findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `None` until the first pre-flight has finished.
    pub checked_at: Option<String>,
    /// `nix --version`'s answer.
    pub nix_version: Option<String>,
    pub warnings: Vec<Warning>,
}

/// Runs the pre-flight now and then every [`PERIOD`] until shutdown,
/// recording each report in `app.preflight` and the journal.
pub fn spawn(app: Arc<App>) {
    tokio::spawn(async move {
        loop {
            let report = run(&app).await;
            if report.warnings.is_empty() {
                tracing::info!(
                    nix_version = report.nix_version.as_deref().unwrap_or("?"),
                    "Pre-flight: nix works as configured"
                );
            }
            for warning in &report.warnings {
                tracing::warn!(code = warning.code, "Pre-flight: {}", warning.message);
            }
            let changed = {
                let mut last = app.preflight.lock().expect("preflight report");
                let changed = last.checked_at.is_none() || last.warnings != report.warnings;
                *last = report.clone();
                changed
            };
            if changed {
                app.events.publish("health.changed", None, &report);
            }
            tokio::select! {
                _ = tokio::time::sleep(PERIOD) => {}
                _ = app.shutdown.cancelled() => return,
            }
        }
    });
}

/// What one nix command said: its stdout, or why it failed.
async fn nix(app: &App, args: &[&str]) -> Result<String, String> {
    let mut command = tokio::process::Command::from(
        app.repos
            .tools()
            .command(&app.config.nix_bin, args.iter().copied()),
    );
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await {
        Err(_) => return Err(format!("no answer within {} s", COMMAND_TIMEOUT.as_secs())),
        Ok(Err(e)) => {
            let described = crate::build::process::describe(&app.config.nix_bin, args);
            return Err(
                crate::build::process::spawn_error(&app.config.nix_bin, &described, e).to_string(),
            );
        }
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(crate::build::nix::first_error(&output.stderr))
    }
}

/// Runs every check once.
pub async fn run(app: &App) -> Report {
    let mut report = Report {
        checked_at: Some(crate::build::queue::format_ms(crate::build::queue::now_ms())),
        ..Report::default()
    };
    let warn = |report: &mut Report, code, message: String| {
        report.warnings.push(Warning { code, message });
    };
    if let Some(why) = app.isolation.unavailable() {
        warn(
            &mut report,
            "evaluation_not_isolated",
            format!(
                "nix evaluates pushed flakes without isolation, so a pusher's flake can read every \
                 file the daemon's user can, its API token and keys included: {why}; allow the \
                 daemon user and mount namespaces (see \"Security model\" in the README)"
            ),
        );
    }
    let nix_bin = &app.config.nix_bin;
    let version = match nix(app, &["--version"]).await {
        Ok(version) => version_line(&version),
        Err(error) => {
            warn(
                &mut report,
                "nix_unusable",
                format!(
                    "nix cannot run (nix_bin `{nix_bin}`, environment: PROCURATOR_CI_NIX_BIN): {error}; no build can run"
                ),
            );
            return report;
        }
    };
    if let Some((major, minor)) = parse_version(&version)
        && (major, minor) < MIN_VERSION
    {
        warn(
            &mut report,
            "nix_too_old",
            format!(
                "{version} is older than nix {}.{}, the first with `nix flake check`",
                MIN_VERSION.0, MIN_VERSION.1
            ),
        );
    }
    let too_old = parse_version(&version).is_some_and(|found| found < MIN_VERSION);
    if !too_old && let Some(untested) = untested(&version) {
        warn(&mut report, "nix_untested", untested);
    }
    report.nix_version = Some(version);
    let features = "nix-command flakes";
    match nix(
        app,
        &["show-config", "--extra-experimental-features", features],
    )
    .await
    {
        Ok(text) => {
            let settings = Settings::parse(&text);
            let uid = rustix::process::geteuid();
            let groups = tokio::task::spawn_blocking(|| {
                std::fs::read_to_string("/etc/group").unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            let remote = std::env::var("NIX_REMOTE").ok();
            for (code, message) in settings.problems(uid.is_root(), &groups, remote.as_deref()) {
                warn(&mut report, code, message);
            }
            for (machine, error) in unreachable_builders(app, &settings.builders).await {
                warn(
                    &mut report,
                    "builder_unreachable",
                    format!(
                        "the build machine {machine} (nix's builders) cannot be reached: {error}; \
                         nix builds elsewhere while another machine answers, and with \
                         max-jobs = 0 and no machine left every build fails as the host's"
                    ),
                );
            }
            for (url, error) in unreachable_substituters(&settings.substituters).await {
                warn(
                    &mut report,
                    "substituter_unreachable",
                    format!(
                        "the substituter {url} cannot be reached ({error}): nix asks it for \
                         every path it does not have, so builds wait on it and log `unable to \
                         download`; make it reachable, or leave it out (`substituters =` in \
                         NIX_CONFIG or nix.conf) before the daemon starts"
                    ),
                );
            }
        }
        Err(error) => warn(
            &mut report,
            "nix_config_unreadable",
            format!("nix cannot read its configuration: {error}"),
        ),
    }
    if let Err(error) = nix(
        app,
        &["store", "ping", "--extra-experimental-features", features],
    )
    .await
    {
        warn(
            &mut report,
            "store_unreachable",
            format!("the Nix store cannot be reached: {error}"),
        );
    }
    // Something new each time, so that it is really built.
    let expr = format!(
        "builtins.derivation {{ name = \"procurator-ci-preflight\"; system = builtins.currentSystem; \
         builder = \"/bin/sh\"; args = [ \"-c\" \"echo {} > $out\" ]; }}",
        crate::build::queue::now_ms()
    );
    if let Err(error) = nix(
        app,
        &[
            "build",
            "--no-link",
            "--impure",
            "--extra-experimental-features",
            features,
            "--expr",
            &expr,
        ],
    )
    .await
    {
        let why = diagnosis::rules::rule_for(&error)
            .map(|rule| format!("{}: ", rule.explanation()))
            .unwrap_or_default();
        warn(
            &mut report,
            "trivial_build_failed",
            format!(
                "nix cannot build a trivial derivation, so every check will fail: {why}{error}"
            ),
        );
    }
    report
}

/// The first line of `nix --version`'s answer, at most 200 characters: the
/// report goes into every `GET /api/health`, and a wrapper or a broken
/// `nix_bin` may print anything.
fn version_line(output: &str) -> String {
    output
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

/// The Nix releases the test command runs every Nix-facing test on (the
/// version matrix, scripts/nix-matrix); README's "Supported Nix versions".
pub const TESTED: [(u64, u64); 3] = [(2, 8), (2, 26), (2, 34)];

/// The warning for a Nix outside the tested range, or another
/// implementation (Lix, Determinate Nix name themselves in `--version`):
/// its messages and log may be read wrong.
fn untested(version: &str) -> Option<String> {
    let tested = TESTED
        .map(|(major, minor)| format!("{major}.{minor}"))
        .join(", ");
    let (first, last) = (TESTED[0], TESTED[TESTED.len() - 1]);
    let other = !version.contains("(Nix)");
    match parse_version(version) {
        Some(found) if !other && (first..=last).contains(&found) => None,
        _ => Some(format!(
            "{version} is not a Nix procurator-ci is tested with (Nix {tested}; between them \
             it is expected to work): failures may be explained wrongly; an error it cannot \
             place is shown as nix printed it and not retried"
        )),
    }
}

/// The SSH machines of nix's `builders` setting that do not answer, with
/// why, asked at once.
async fn unreachable_builders(app: &App, setting: &str) -> Vec<(String, String)> {
    let setting = setting.to_string();
    let text = tokio::task::spawn_blocking(move || builders::read_setting(&setting))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let machines = match text {
        Ok(text) => builders::parse(&text),
        Err(error) => return vec![("file".to_string(), error)],
    };
    builders::silent(
        app.repos.tools(),
        &app.config.nix_bin,
        &machines,
        builders::PING_TIMEOUT,
    )
    .await
}

/// The HTTP(S) substituters among `substituters` that do not answer
/// `nix-cache-info` within [`PROBE_TIMEOUT`], with why, probed at once. A
/// substituter's URL is shown without its user information.
async fn unreachable_substituters(substituters: &[String]) -> Vec<(String, String)> {
    let probes = substituters
        .iter()
        .filter(|url| url.starts_with("http://") || url.starts_with("https://"))
        .map(|url| {
            let url = url.clone();
            tokio::task::spawn_blocking(move || {
                let shown = crate::redact::urls(&url).into_owned();
                probe(&url).err().map(|error| (shown, error))
            })
        })
        .collect::<Vec<_>>();
    let mut unreachable = Vec::new();
    for probe in probes {
        if let Ok(Some(found)) = probe.await {
            unreachable.push(found);
        }
    }
    unreachable
}

/// Asks a binary cache for `nix-cache-info`, as nix does first.
fn probe(url: &str) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PROBE_TIMEOUT))
        .user_agent(concat!("procurator-ci/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let info = format!("{}/nix-cache-info", url.trim_end_matches('/'));
    match agent.get(&info).call() {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("it answered {}", response.status())),
        Err(ureq::Error::Timeout(_)) => {
            Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `nix (Nix) 2.8.0` → `(2, 8)`.
fn parse_version(text: &str) -> Option<(u64, u64)> {
    let number = text.split_whitespace().last()?;
    let mut parts = number.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The settings of `nix show-config` the pre-flight looks at.
#[derive(Debug, Default)]
struct Settings {
    build_users_group: String,
    experimental_features: Vec<String>,
    sandbox: String,
    store: String,
    substituters: Vec<String>,
    builders: String,
}

impl Settings {
    fn parse(text: &str) -> Settings {
        let mut settings = Settings::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(" = ") else {
                continue;
            };
            let value = value.trim().to_string();
            match key.trim() {
                "build-users-group" => settings.build_users_group = value,
                "experimental-features" => {
                    settings.experimental_features =
                        value.split_whitespace().map(str::to_string).collect()
                }
                "sandbox" => settings.sandbox = value,
                "store" => settings.store = value,
                "builders" => settings.builders = value,
                "substituters" => {
                    settings.substituters = value.split_whitespace().map(str::to_string).collect()
                }
                _ => {}
            }
        }
        settings
    }

    /// What is wrong with these settings for a daemon running as root or
    /// not, on a host whose `/etc/group` is `groups`, with `NIX_REMOTE`.
    fn problems(
        &self,
        root: bool,
        groups: &str,
        nix_remote: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !self.experimental_features.iter().any(|f| f == "flakes") {
            problems.push((
                "flakes_disabled",
                "nix does not enable flakes even when asked (experimental-features lacks `flakes`)"
                    .to_string(),
            ));
        }
        // Only a root nix that builds itself (no Nix daemon) uses the group.
        let local = !matches!(self.store.as_str(), "daemon" | "unix://")
            && nix_remote.is_none_or(|r| r.is_empty() || r == "local");
        let group = &self.build_users_group;
        let exists = groups
            .lines()
            .any(|line| line.split(':').next() == Some(group.as_str()));
        if root && local && !group.is_empty() && !exists {
            problems.push((
                "build_users_missing",
                format!(
                    "nix's build-users-group is `{group}` but the host has no such group, so every \
                     build fails: create the group and its build users, or run single-user with \
                     `build-users-group =` in NIX_CONFIG before the daemon starts"
                ),
            ));
        }
        if self.sandbox == "false" {
            problems.push((
                "sandbox_off",
                "builds are not sandboxed (nix's `sandbox = false`): a check can read and change \
                 whatever the build's user can, the daemon's API token and secrets included; \
                 enable the sandbox or build through a Nix daemon with build users"
                    .to_string(),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW_CONFIG: &str = "build-users-group = nixbld\nexperimental-features = flakes nix-command\n\
        sandbox = true\nsandbox-fallback = true\nstore = auto\n";

    #[test]
    fn the_version_kept_is_one_short_line() {
        assert_eq!(
            version_line("\n nix (Nix) 2.8.0 \nmore\n"),
            "nix (Nix) 2.8.0"
        );
        let loud = format!("{}\n", "x".repeat(1_000_000)).repeat(3);
        assert_eq!(version_line(&loud).len(), 200);
        assert_eq!(version_line(""), "");
    }

    #[test]
    fn a_nix_outside_the_tested_range_is_named_with_the_tested_ones() {
        for tested in [
            "nix (Nix) 2.8.0",
            "nix (Nix) 2.26.3",
            "nix (Nix) 2.31.2",
            "nix (Nix) 2.34.8",
        ] {
            assert_eq!(untested(tested), None, "{tested}");
        }
        for other in [
            "nix (Nix) 2.7.0",
            "nix (Nix) 2.35.0",
            "nix (Lix, like Nix) 2.91.1",
            "garbage",
        ] {
            let warning = untested(other).unwrap();
            assert!(
                warning.starts_with(other) && warning.contains("Nix 2.8, 2.26, 2.34"),
                "{warning}"
            );
        }
    }

    #[test]
    fn substituters_are_read_and_shown_without_credentials() {
        let settings = Settings::parse(&format!(
            "{SHOW_CONFIG}substituters = https://cache.nixos.org/ file:///x\n"
        ));
        assert_eq!(
            settings.substituters,
            ["https://cache.nixos.org/", "file:///x"]
        );
        assert!(Settings::parse("substituters = \n").substituters.is_empty());
    }

    #[test]
    fn versions_are_read() {
        assert_eq!(parse_version("nix (Nix) 2.8.0"), Some((2, 8)));
        assert_eq!(parse_version("nix (Nix) 2.31.2\n"), Some((2, 31)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn a_missing_build_users_group_is_a_problem_only_for_a_root_nix_without_daemon() {
        let settings = Settings::parse(SHOW_CONFIG);
        let codes = |root, groups| -> Vec<&str> {
            settings
                .problems(root, groups, None)
                .into_iter()
                .map(|(c, _)| c)
                .collect()
        };
        assert_eq!(codes(true, "root:x:0:\n"), ["build_users_missing"]);
        assert!(codes(true, "root:x:0:\nnixbld:x:30000:nixbld1\n").is_empty());
        assert!(codes(false, "root:x:0:\n").is_empty());
        let daemon = Settings::parse(&SHOW_CONFIG.replace("store = auto", "store = daemon"));
        assert!(daemon.problems(true, "", None).is_empty());
        assert!(settings.problems(true, "", Some("daemon")).is_empty());
    }

    #[test]
    fn no_sandbox_and_no_flakes_are_problems() {
        let settings = Settings::parse(
            "build-users-group = \nexperimental-features = nix-command\nsandbox = false\nstore = auto\n",
        );
        let problems = settings.problems(true, "", None);
        let codes: Vec<&str> = problems.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, ["flakes_disabled", "sandbox_off"]);
        assert!(problems[1].1.contains("API token"));
    }
}
