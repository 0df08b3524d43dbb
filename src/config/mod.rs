//! Configuration: built-in defaults, a TOML file and the environment, merged
//! by figment and validated before anything starts.
//!
//! Every error names the key, the bad value and where the value came from (a
//! file path or an environment variable), because a typo in a generated file
//! must fail loudly and point at its cause.
//!
//! Here: the keys and their types, and loading. `defaults` holds the
//! built-in values and those derived from others, `validate` the rules
//! every value must meet, `source` how errors name a value's origin.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod defaults;
pub mod forge;
mod source;
mod upstreams;
mod validate;

pub use forge::{Forge, ForgeKeys, ForgeTarget};
pub use validate::exposed_mode;

/// Default location of the configuration file when neither `--config` nor
/// `$PROCURATOR_CI_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/procurator-ci/config.toml";

/// Prefix of the environment variables that override any key.
pub const ENV_PREFIX: &str = "PROCURATOR_CI_";

/// Environment names of the original design, kept as aliases.
const LEGACY_ENV: [&str; 5] = [
    "DATABASE_URL",
    "BIND_ADDRESS",
    "REPOS_BASE_PATH",
    "MAX_RETRIES",
    "WORKER_POLL_INTERVAL_MS",
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// journald under systemd, pretty on a terminal, plain otherwise.
    Auto,
    /// Native journal protocol with structured fields.
    Journald,
    /// One JSON object per line on stderr.
    Json,
    /// Human-oriented, coloured output on stderr.
    Pretty,
}

/// A repository declared in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RepoDecl {
    /// Shown in the API and the web page, and written to git's `description`.
    #[serde(default)]
    pub description: String,
    /// The branch the bare repository's `HEAD` names (its headline and
    /// badge); kept in sync at startup when set, `main` at creation unless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// A git URL the repository mirrors (fetched with prune into its
    /// branches, which are built as pushes are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// A token (`token` or `user:token`, for https) or an SSH private key
    /// that the upstream asks for; read at start, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_credentials_file: Option<PathBuf>,
    /// Seconds between looks at the upstream (300 unless set; 0: only
    /// webhooks make the daemon look).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_secs: Option<u64>,
    /// The secret webhooks of the upstream's forge are signed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Build pull requests from forks without a maintainer's approval
    /// (off: each new head of a fork's pull request waits for one).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub build_fork_pull_requests: bool,
    /// The forge its builds' commit statuses are posted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<Forge>,
    /// The forge's API root; each forge's public one by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge_api_url: Option<String>,
    /// `owner/name` on the forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge_repo: Option<String>,
    /// The file holding the token statuses are posted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge_token_file: Option<PathBuf>,
    /// Per-check statuses at most (`forge::DEFAULT_CHECK_STATUSES`
    /// unless set); more checks get one summary status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge_check_statuses: Option<u32>,
}

impl RepoDecl {
    /// Its forge keys, as written.
    pub fn forge_keys(&self) -> ForgeKeys {
        ForgeKeys {
            forge: self.forge,
            forge_api_url: self.forge_api_url.clone(),
            forge_repo: self.forge_repo.clone(),
            forge_token_file: self.forge_token_file.clone(),
            forge_check_statuses: self.forge_check_statuses,
        }
    }
}

/// When a notification fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    /// A build succeeded.
    Success,
    /// A build failed (any failure kind).
    Failure,
    /// A build ended: succeeded, failed or was cancelled.
    Finished,
}

/// A `[[notify]]` entry: where to tell about finished builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Which endings fire it.
    pub on: NotifyOn,
    /// Repository name pattern (`*` matches any run of characters).
    #[serde(default = "any_pattern")]
    pub repo: String,
    /// Branch name pattern (`*` matches any run of characters).
    #[serde(default = "any_pattern")]
    pub branch: String,
    /// POST the build JSON here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// File holding the HMAC-SHA256 key that signs webhook bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Or run this argument vector with the build JSON on stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Bound on one delivery attempt or command run.
    #[serde(default = "default_notify_timeout")]
    pub timeout_secs: u64,
}

fn any_pattern() -> String {
    "*".into()
}

fn default_notify_timeout() -> u64 {
    30
}

/// The effective, validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub state_dir: PathBuf,
    pub database_url: PathBuf,
    pub repos_base_path: PathBuf,
    pub socket_path: PathBuf,
    /// `XDG_CACHE_HOME` of nix and git (nix's fetcher and evaluation
    /// caches).
    pub cache_dir: PathBuf,
    pub bind_address: SocketAddr,
    pub public_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_push_base: Option<String>,
    pub workers: u32,
    pub max_retries: u32,
    pub retry_backoff_secs: u64,
    pub worker_poll_interval_ms: u64,
    pub nix_bin: String,
    pub nix_extra_args: Vec<String>,
    pub build_timeout_secs: u64,
    pub max_silent_secs: u64,
    pub kill_grace_secs: u64,
    pub shutdown_timeout_secs: u64,
    pub client_stall_timeout_secs: u64,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub scan_interval_secs: u64,
    pub log_max_bytes: u64,
    pub log_retention_days: u32,
    pub log_format: LogFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_file: Option<PathBuf>,
    pub public_read: bool,
    #[serde(default)]
    pub repos: BTreeMap<String, RepoDecl>,
    pub cancel_superseded: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
    /// Binary caches (`nix copy --to` URLs) that successful builds' outputs
    /// are pushed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cache_push: Vec<String>,
    /// The Nix secret key that signs pushed and served paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_secret_key_file: Option<PathBuf>,
    /// Serve a binary cache of built outputs under `/nix-cache/`.
    pub cache_serve: bool,
    /// Successful builds per branch whose outputs stay GC roots.
    pub cache_keep_builds: u32,
    /// Pushes that run at once.
    pub cache_push_jobs: u32,
    /// NAR downloads one IP address may hold at once.
    pub cache_downloads_per_peer: u32,
    /// Host directories whose files a pushed flake may name as local
    /// inputs (`path:`, `git+file:`, `file:`); any other local input
    /// outside the repository is refused before nix runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_local_inputs: Vec<PathBuf>,
}

/// What the providers yield before paths derived from `state_dir` are filled
/// in; keys that default to something under the state directory are optional
/// here so that an explicit value can be told apart from the default. (Its
/// built-in values are in `defaults`; defined here, because figment names
/// the defaults' provider by this type's path in error messages.)
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    database_url: Option<String>,
    repos_base_path: Option<PathBuf>,
    socket_path: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    bind_address: String,
    public_url: Option<String>,
    ssh_push_base: Option<String>,
    workers: u32,
    max_retries: u32,
    retry_backoff_secs: u64,
    worker_poll_interval_ms: u64,
    nix_bin: String,
    nix_extra_args: Vec<String>,
    build_timeout_secs: u64,
    max_silent_secs: u64,
    kill_grace_secs: u64,
    shutdown_timeout_secs: u64,
    client_stall_timeout_secs: u64,
    max_connections: u32,
    max_connections_per_peer: u32,
    scan_interval_secs: u64,
    log_max_bytes: u64,
    log_retention_days: u32,
    log_format: LogFormat,
    api_token_file: Option<PathBuf>,
    public_read: bool,
    #[serde(default)]
    repos: BTreeMap<String, RepoDecl>,
    cancel_superseded: bool,
    #[serde(default)]
    notify: Vec<Notify>,
    #[serde(default)]
    cache_push: Vec<String>,
    cache_secret_key_file: Option<PathBuf>,
    cache_serve: bool,
    cache_keep_builds: u32,
    cache_push_jobs: u32,
    cache_downloads_per_peer: u32,
    #[serde(default)]
    allowed_local_inputs: Vec<PathBuf>,
}

/// A configuration that could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The providers could not be merged or a value has the wrong type; the
    /// message already names the key and the source.
    #[error("configuration error: {0}")]
    Load(String),
    /// A value parsed but is not acceptable.
    #[error(
        "configuration error: invalid value {value} for key `{key}` (from {source_name}): {reason}"
    )]
    Invalid {
        key: String,
        value: String,
        source_name: String,
        reason: String,
    },
    /// An explicitly named configuration file does not exist or is unreadable.
    #[error("configuration error: cannot read configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Where the configuration file comes from, in order of precedence.
pub fn config_file_path(cli: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = cli {
        return Some(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("PROCURATOR_CI_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let default = Path::new(DEFAULT_CONFIG_FILE);
    default.exists().then(|| default.to_path_buf())
}

/// Whether validation reads the files that exist only where the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeFiles {
    /// Read them (the API token, notification secrets): what the daemon and a
    /// plain `check-config` do.
    Read,
    /// Check everything else. For a build that generates the configuration
    /// (the NixOS module's): its sandbox cannot see credentials that systemd
    /// hands the service only when it starts.
    Skip,
}

impl Config {
    /// Loads the configuration: defaults, then `file` (which must exist when
    /// given), then the legacy environment names, then `PROCURATOR_CI_*`.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_checking(file, RuntimeFiles::Read)
    }

    /// [`Config::load`], reading the run-time files or not.
    pub fn load_checking(
        file: Option<&Path>,
        runtime_files: RuntimeFiles,
    ) -> Result<Config, ConfigError> {
        if let Some(path) = file {
            std::fs::metadata(path).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment
            .merge(Env::raw().only(&LEGACY_ENV))
            .merge(Env::prefixed(ENV_PREFIX).ignore(&["CONFIG"]).split("__"));
        Self::from_figment(&figment, runtime_files)
    }

    fn from_figment(figment: &Figment, runtime_files: RuntimeFiles) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment
            .extract()
            .map_err(|e| ConfigError::Load(source::describe_figment_error(e)))?;
        let config = defaults::resolve(raw, figment)?;
        validate::validate(&config, figment, runtime_files)?;
        Ok(config)
    }

    /// Warnings for environment variables of this process that look meant
    /// for procurator-ci but are not read (a misspelt `PROCURATOR_CI_`
    /// prefix), each naming the variable and the closest one it reads.
    pub fn foreign_environment() -> Vec<String> {
        let keys: Vec<String> = match serde_json::to_value(RawConfig::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        source::foreign_variables(names, &keys)
    }

    /// The configuration as TOML, suitable for loading again.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configuration always serialises")
    }

    /// The directory for build logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// The private `HOME` given to nix and git.
    pub fn home_dir(&self) -> PathBuf {
        self.state_dir.join("home")
    }

    /// The token file the daemon generates when `api_token_file` is unset.
    pub fn generated_token_file(&self) -> PathBuf {
        self.state_dir.join("api-token")
    }
}

/// Configuration knows no feature: the features read it, never the other
/// way round.
#[cfg(test)]
#[test]
fn configuration_imports_no_feature_module() {
    let files = [
        ("mod.rs", include_str!("mod.rs")),
        ("defaults.rs", include_str!("defaults.rs")),
        ("forge.rs", include_str!("forge.rs")),
        ("source.rs", include_str!("source.rs")),
        ("validate.rs", include_str!("validate.rs")),
        ("upstreams.rs", include_str!("upstreams.rs")),
    ];
    for feature in ["cache", "http", "build", "app", "server", "ops"] {
        let path = format!("crate::{feature}");
        for (name, text) in files {
            assert!(!text.contains(&path), "src/config/{name} uses {path}");
        }
    }
}

/// What the tests of every part of the configuration share.
#[cfg(test)]
mod testing {
    use figment::Jail;

    use super::{Config, ConfigError, ENV_PREFIX, LEGACY_ENV};

    /// Unsets the variables the configuration reads, and only those, until
    /// the jail ends. `Jail::clear_env` would unset PATH too, under tests
    /// that start `git` or `sh` at the same time; the Nix build sandbox has
    /// no fallback search path for them.
    pub(super) fn clear_config_env(jail: &mut Jail) {
        let names: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| {
                name.starts_with(ENV_PREFIX)
                    || LEGACY_ENV.contains(&name.as_str())
                    || name == "STATE_DIRECTORY"
            })
            .collect();
        for name in names {
            // Records the value, which the jail restores when it ends.
            jail.set_env(&name, "");
            // SAFETY: the jail's lock serialises the tests that touch these
            // variables, and no other code of the test binary reads them.
            unsafe { std::env::remove_var(&name) };
        }
    }

    pub(super) fn load_in(jail: &Jail, file: Option<&str>) -> Result<Config, ConfigError> {
        let path = file.map(|f| jail.directory().join(f));
        Config::load(path.as_deref())
    }
}

#[cfg(test)]
// figment's `Jail` decides the closures' error type.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::testing::{clear_config_env, load_in};
    use super::*;

    #[test]
    fn precedence_default_file_legacy_prefixed() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file(
                "c.toml",
                "max_retries = 5\nworkers = 2\nbind_address = \"127.0.0.1:4000\"\n",
            )?;
            let config = load_in(jail, Some("c.toml")).unwrap();
            assert_eq!(config.max_retries, 5);
            assert_eq!(config.bind_address.port(), 4000);

            jail.set_env("MAX_RETRIES", "7");
            jail.set_env("BIND_ADDRESS", "127.0.0.1:5000");
            let config = load_in(jail, Some("c.toml")).unwrap();
            assert_eq!(config.max_retries, 7);
            assert_eq!(config.bind_address.port(), 5000);
            assert_eq!(config.workers, 2);

            jail.set_env("PROCURATOR_CI_MAX_RETRIES", "9");
            jail.set_env("PROCURATOR_CI_BIND_ADDRESS", "127.0.0.1:6000");
            let config = load_in(jail, Some("c.toml")).unwrap();
            assert_eq!(config.max_retries, 9);
            assert_eq!(config.bind_address.port(), 6000);
            Ok(())
        });
    }

    #[test]
    fn config_file_from_env_variable() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file("e.toml", "workers = 3\n")?;
            jail.set_env(
                "PROCURATOR_CI_CONFIG",
                jail.directory().join("e.toml").display(),
            );
            let path = config_file_path(None).unwrap();
            assert_eq!(Config::load(Some(&path)).unwrap().workers, 3);
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            let err = load_in(jail, Some("absent.toml")).unwrap_err().to_string();
            assert!(err.contains("absent.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn effective_toml_round_trips() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file(
                "c.toml",
                "workers = 4\nnix_extra_args = [\"--option\", \"cores\", \"1\"]\n\
                 ssh_push_base = \"ci@example.org:\"\n[repos.demo]\ndescription = \"Demo\"\n",
            )?;
            let first = load_in(jail, Some("c.toml")).unwrap();
            jail.create_file("out.toml", &first.to_toml())?;
            let second = load_in(jail, Some("out.toml")).unwrap();
            assert_eq!(first, second);
            Ok(())
        });
    }
}
