//! Configuration: built-in defaults, a TOML file and the environment, merged
//! by figment and validated before anything starts.
//!
//! Every error names the key, the bad value and where the value came from (a
//! file path or an environment variable), because a typo in a generated file
//! must fail loudly and point at its cause.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata};
use serde::{Deserialize, Serialize};

use crate::repos::validate_repo_name;

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
}

/// What the providers yield before paths derived from `state_dir` are filled
/// in; keys that default to something under the state directory are optional
/// here so that an explicit value can be told apart from the default.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<PathBuf>,
    database_url: Option<String>,
    repos_base_path: Option<PathBuf>,
    socket_path: Option<PathBuf>,
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
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            state_dir: None,
            database_url: None,
            repos_base_path: None,
            socket_path: None,
            bind_address: "127.0.0.1:3000".into(),
            public_url: None,
            ssh_push_base: None,
            workers: 1,
            max_retries: 3,
            retry_backoff_secs: 5,
            worker_poll_interval_ms: 2000,
            nix_bin: "nix".into(),
            nix_extra_args: Vec::new(),
            build_timeout_secs: 10_800,
            max_silent_secs: 3600,
            kill_grace_secs: 10,
            shutdown_timeout_secs: 30,
            client_stall_timeout_secs: 60,
            max_connections: 1024,
            max_connections_per_peer: 64,
            scan_interval_secs: 30,
            log_max_bytes: 64 * 1024 * 1024,
            log_retention_days: 90,
            log_format: LogFormat::Auto,
            api_token_file: None,
            public_read: true,
            repos: BTreeMap::new(),
            cancel_superseded: true,
            notify: Vec::new(),
            cache_push: Vec::new(),
            cache_secret_key_file: None,
            cache_serve: false,
            cache_keep_builds: 5,
            cache_push_jobs: 2,
        }
    }
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
            .map_err(|e| ConfigError::Load(describe_figment_error(e)))?;
        let config = resolve(raw, figment)?;
        validate(&config, figment, runtime_files)?;
        Ok(config)
    }

    /// The configuration as TOML, suitable for loading again.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configuration always serialises")
    }

    /// The directory for build logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// The private `HOME` and `XDG_CACHE_HOME` base given to nix and git.
    pub fn home_dir(&self) -> PathBuf {
        self.state_dir.join("home")
    }

    /// The token file the daemon generates when `api_token_file` is unset.
    pub fn generated_token_file(&self) -> PathBuf {
        self.state_dir.join("api-token")
    }
}

/// Figment's errors, rephrased to name the key without figment's profile
/// prefix and the exact file or environment variable it came from.
fn describe_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e
                .path
                .iter()
                .filter(|p| p.as_str() != "default")
                .cloned()
                .collect::<Vec<_>>()
                .join(".");
            let source = match &e.metadata {
                Some(metadata) => describe_metadata(metadata, &key),
                None => "built-in defaults".into(),
            };
            let kind = match &e.kind {
                figment::error::Kind::UnknownField(found, expected) => unknown_key(found, expected),
                other => other.to_string(),
            };
            if key.is_empty() {
                format!("{kind} (from {source})")
            } else {
                format!("{kind} for key `{key}` (from {source})")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// "unknown key `wrokers`; did you mean `workers`? (known keys: …)": the
/// closest known key when it is a plausible typo, and one clean list.
fn unknown_key(found: &str, expected: &[&str]) -> String {
    let closest = expected
        .iter()
        .map(|known| (edit_distance(found, known), *known))
        .min()
        .filter(|(distance, known)| *distance <= 2.max(known.len() / 3));
    let suggestion = match closest {
        Some((_, known)) => format!("; did you mean `{known}`?"),
        None => String::new(),
    };
    format!(
        "unknown key `{found}`{suggestion} (known keys: {})",
        expected.join(", ")
    )
}

/// Levenshtein distance between `a` and `b`, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// `path` made absolute and normalised (`/x/./a/../b` → `/x/b`), so that it
/// prints and compares as people write it. `..` is resolved by name, as a
/// shell's `cd` does: configured paths are not expected to cross symlinks
/// backwards.
fn absolute(path: PathBuf) -> PathBuf {
    use std::path::Component;
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(&path))
            .unwrap_or(path)
    };
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// The default public address of a daemon bound to `bind`: as bound, but
/// with the host's name when bound to all interfaces (`http://0.0.0.0:3000`
/// is no address anyone can open).
fn default_public_url(bind: SocketAddr) -> String {
    if bind.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("http://{host}:{}", bind.port())
    } else {
        format!("http://{bind}")
    }
}

/// Fills in the keys that default to paths under `state_dir` and makes every
/// path absolute, so that flake references and hooks never depend on the
/// working directory.
fn resolve(raw: RawConfig, figment: &Figment) -> Result<Config, ConfigError> {
    let bind_address: SocketAddr = raw.bind_address.parse().map_err(|_| ConfigError::Invalid {
        key: "bind_address".into(),
        value: format!("{:?}", raw.bind_address),
        source_name: source_of(figment, "bind_address"),
        reason: "must be an IP address and port, such as 127.0.0.1:3000 or [::1]:3000".into(),
    })?;
    let state_dir = absolute(raw.state_dir.unwrap_or_else(default_state_dir));
    let database_url = match raw.database_url {
        Some(url) => absolute(PathBuf::from(strip_sqlite_scheme(&url))),
        None => state_dir.join("ci.db"),
    };
    let repos_base_path = absolute(
        raw.repos_base_path
            .unwrap_or_else(|| state_dir.join("repos")),
    );
    let socket_path = absolute(
        raw.socket_path
            .unwrap_or_else(|| state_dir.join("procurator-ci.sock")),
    );
    let public_url = raw
        .public_url
        .unwrap_or_else(|| default_public_url(bind_address))
        .trim_end_matches('/')
        .to_string();
    Ok(Config {
        state_dir,
        database_url,
        repos_base_path,
        socket_path,
        bind_address,
        public_url,
        ssh_push_base: raw.ssh_push_base,
        workers: raw.workers,
        max_retries: raw.max_retries,
        retry_backoff_secs: raw.retry_backoff_secs,
        worker_poll_interval_ms: raw.worker_poll_interval_ms,
        nix_bin: raw.nix_bin,
        nix_extra_args: raw.nix_extra_args,
        build_timeout_secs: raw.build_timeout_secs,
        max_silent_secs: raw.max_silent_secs,
        kill_grace_secs: raw.kill_grace_secs,
        shutdown_timeout_secs: raw.shutdown_timeout_secs,
        client_stall_timeout_secs: raw.client_stall_timeout_secs,
        max_connections: raw.max_connections,
        max_connections_per_peer: raw.max_connections_per_peer,
        scan_interval_secs: raw.scan_interval_secs,
        log_max_bytes: raw.log_max_bytes,
        log_retention_days: raw.log_retention_days,
        log_format: raw.log_format,
        api_token_file: raw.api_token_file.map(absolute),
        public_read: raw.public_read,
        repos: raw.repos,
        cancel_superseded: raw.cancel_superseded,
        notify: raw.notify,
        cache_push: raw.cache_push,
        cache_secret_key_file: raw.cache_secret_key_file.map(absolute),
        cache_serve: raw.cache_serve,
        cache_keep_builds: raw.cache_keep_builds,
        cache_push_jobs: raw.cache_push_jobs,
    })
}

fn default_state_dir() -> PathBuf {
    // systemd may list several directories separated by ':'; the first is ours.
    std::env::var("STATE_DIRECTORY")
        .ok()
        .and_then(|dirs| dirs.split(':').next().map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("./procurator-ci-data"))
}

fn strip_sqlite_scheme(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

/// Names the provider that supplied `key`: the file path, the exact
/// environment variable, or the built-in defaults.
fn source_of(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(metadata) => describe_metadata(metadata, key),
        None => "built-in defaults".into(),
    }
}

fn describe_metadata(metadata: &Metadata, key: &str) -> String {
    match &metadata.source {
        Some(figment::Source::File(path)) => format!("file {}", absolute(path.clone()).display()),
        _ if metadata.name.contains(ENV_PREFIX) => format!(
            "environment variable {ENV_PREFIX}{}",
            key.to_ascii_uppercase().replace('.', "__")
        ),
        _ if metadata.name.contains("environment") => {
            format!("environment variable {}", key.to_ascii_uppercase())
        }
        _ => metadata.name.to_string(),
    }
}

fn validate(
    config: &Config,
    figment: &Figment,
    runtime_files: RuntimeFiles,
) -> Result<(), ConfigError> {
    let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
        key: key.to_string(),
        value,
        source_name: source_of(figment, key),
        reason: reason.to_string(),
    };
    if !(1..=64).contains(&config.workers) {
        return Err(invalid(
            "workers",
            config.workers.to_string(),
            "must be between 1 and 64",
        ));
    }
    if config.max_retries > 100 {
        return Err(invalid(
            "max_retries",
            config.max_retries.to_string(),
            "must be at most 100",
        ));
    }
    if config.retry_backoff_secs > 86_400 {
        return Err(invalid(
            "retry_backoff_secs",
            config.retry_backoff_secs.to_string(),
            "must be at most 86400 (one day)",
        ));
    }
    if !(10..=3_600_000).contains(&config.worker_poll_interval_ms) {
        return Err(invalid(
            "worker_poll_interval_ms",
            config.worker_poll_interval_ms.to_string(),
            "must be between 10 and 3600000",
        ));
    }
    if config.nix_bin.trim().is_empty() || config.nix_bin.contains('\0') {
        return Err(invalid(
            "nix_bin",
            format!("{:?}", config.nix_bin),
            "must name a program",
        ));
    }
    if let Some(arg) = config.nix_extra_args.iter().find(|a| a.contains('\0')) {
        return Err(invalid(
            "nix_extra_args",
            format!("{arg:?}"),
            "arguments cannot contain NUL bytes",
        ));
    }
    for (key, value) in [
        ("build_timeout_secs", config.build_timeout_secs),
        ("max_silent_secs", config.max_silent_secs),
    ] {
        if value == 0 || value > 7 * 86_400 {
            return Err(invalid(
                key,
                value.to_string(),
                "must be between 1 and 604800 (one week)",
            ));
        }
    }
    for (key, value) in [
        ("kill_grace_secs", config.kill_grace_secs),
        ("shutdown_timeout_secs", config.shutdown_timeout_secs),
    ] {
        if value > 3600 {
            return Err(invalid(key, value.to_string(), "must be at most 3600"));
        }
    }
    if !(16..=1_048_576).contains(&config.max_connections) {
        return Err(invalid(
            "max_connections",
            config.max_connections.to_string(),
            "must be between 16 and 1048576",
        ));
    }
    if config.max_connections_per_peer == 0
        || config.max_connections_per_peer > config.max_connections
    {
        return Err(invalid(
            "max_connections_per_peer",
            config.max_connections_per_peer.to_string(),
            &format!(
                "must be between 1 and max_connections ({})",
                config.max_connections
            ),
        ));
    }
    if !(1..=86_400).contains(&config.scan_interval_secs) {
        return Err(invalid(
            "scan_interval_secs",
            config.scan_interval_secs.to_string(),
            "must be between 1 and 86400 (one day)",
        ));
    }
    if !(1..=3600).contains(&config.client_stall_timeout_secs) {
        return Err(invalid(
            "client_stall_timeout_secs",
            config.client_stall_timeout_secs.to_string(),
            "must be between 1 and 3600",
        ));
    }
    if config.log_max_bytes < 1024 {
        return Err(invalid(
            "log_max_bytes",
            config.log_max_bytes.to_string(),
            "must be at least 1024",
        ));
    }
    if !(config.public_url.starts_with("http://") || config.public_url.starts_with("https://")) {
        return Err(invalid(
            "public_url",
            format!("{:?}", config.public_url),
            "must start with http:// or https://",
        ));
    }
    if let Some(base) = &config.ssh_push_base
        && (base.is_empty() || base.chars().any(char::is_control))
    {
        return Err(invalid(
            "ssh_push_base",
            format!("{base:?}"),
            "must be a non-empty string without control characters",
        ));
    }
    if let Some(path) = &config.api_token_file
        && runtime_files == RuntimeFiles::Read
    {
        if let Some(mode) = crate::auth::exposed_mode(path) {
            return Err(invalid(
                "api_token_file",
                path.display().to_string(),
                &format!(
                    "it is readable by group or others (mode {mode:04o}); like ssh with \
                     keys, the daemon refuses a token others can read: chmod 600 it"
                ),
            ));
        }
        match std::fs::read_to_string(path) {
            Ok(token) if token.trim().len() >= 16 => {}
            Ok(_) => {
                return Err(invalid(
                    "api_token_file",
                    path.display().to_string(),
                    "the token in it must be at least 16 characters",
                ));
            }
            Err(e) => {
                return Err(invalid(
                    "api_token_file",
                    path.display().to_string(),
                    &format!("cannot read it: {e}"),
                ));
            }
        }
    }
    for (i, entry) in config.notify.iter().enumerate() {
        let key = format!("notify.{i}");
        let source = || source_of(figment, "notify");
        let bad = |field: &str, value: String, reason: &str| ConfigError::Invalid {
            key: format!("{key}.{field}"),
            value,
            source_name: source(),
            reason: reason.to_string(),
        };
        match (&entry.url, &entry.command) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(bad(
                    "url",
                    format!("{:?}", entry.url),
                    "give exactly one of `url` and `command`",
                ));
            }
            (Some(url), None) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                return Err(bad(
                    "url",
                    format!("{url:?}"),
                    "must start with http:// or https://",
                ));
            }
            (None, Some(command)) if command.is_empty() || command[0].is_empty() => {
                return Err(bad(
                    "command",
                    format!("{command:?}"),
                    "must name a program",
                ));
            }
            _ => {}
        }
        if entry.secret_file.is_some() && entry.url.is_none() {
            return Err(bad(
                "secret_file",
                format!("{:?}", entry.secret_file),
                "only signs webhooks (`url`)",
            ));
        }
        if let Some(path) = &entry.secret_file
            && runtime_files == RuntimeFiles::Read
            && let Err(e) = std::fs::read(path)
        {
            return Err(bad(
                "secret_file",
                path.display().to_string(),
                &format!("cannot read it: {e}"),
            ));
        }
        if !(1..=3600).contains(&entry.timeout_secs) {
            return Err(bad(
                "timeout_secs",
                entry.timeout_secs.to_string(),
                "must be between 1 and 3600",
            ));
        }
    }
    for (name, decl) in &config.repos {
        if let Err(reason) = validate_repo_name(name) {
            return Err(invalid(
                &format!("repos.{name}"),
                format!("{name:?}"),
                &reason,
            ));
        }
        if let Err(reason) =
            crate::text::check(&decl.description, crate::text::MAX_DESCRIPTION_CHARS, true)
        {
            return Err(invalid(
                &format!("repos.{name}.description"),
                format!("{:?}", decl.description),
                &reason,
            ));
        }
    }
    validate_cache(config, figment, runtime_files)
}

fn validate_cache(
    config: &Config,
    figment: &Figment,
    runtime_files: RuntimeFiles,
) -> Result<(), ConfigError> {
    let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
        key: key.to_string(),
        value,
        source_name: source_of(figment, key),
        reason: reason.to_string(),
    };
    for (i, url) in config.cache_push.iter().enumerate() {
        let reason = match crate::cache::validate_target(url) {
            Err(reason) => reason,
            Ok(()) if config.cache_push[..i].contains(url) => "is listed twice".into(),
            Ok(()) => continue,
        };
        return Err(ConfigError::Invalid {
            key: format!("cache_push.{i}"),
            value: format!("{url:?}"),
            source_name: source_of(figment, "cache_push"),
            reason,
        });
    }
    if config.cache_keep_builds > 1000 {
        return Err(invalid(
            "cache_keep_builds",
            config.cache_keep_builds.to_string(),
            "must be at most 1000",
        ));
    }
    if !(1..=32).contains(&config.cache_push_jobs) {
        return Err(invalid(
            "cache_push_jobs",
            config.cache_push_jobs.to_string(),
            "must be between 1 and 32",
        ));
    }
    match &config.cache_secret_key_file {
        None if config.cache_serve || !config.cache_push.is_empty() => Err(invalid(
            "cache_secret_key_file",
            "none".into(),
            "is required when cache_serve is on or cache_push lists a cache: every pushed \
             or served path is signed (create one with `nix key generate-secret --key-name \
             <host>-1 > key; chmod 600 key`)",
        )),
        Some(path) if runtime_files == RuntimeFiles::Read => match crate::cache::load_key(path) {
            Ok(_) => Ok(()),
            Err(reason) => Err(invalid(
                "cache_secret_key_file",
                path.display().to_string(),
                &reason,
            )),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
// figment's `Jail` decides the closures' error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    /// Unsets the variables the configuration reads, and only those, until
    /// the jail ends. `Jail::clear_env` would unset PATH too, under tests
    /// that start `git` or `sh` at the same time; the Nix build sandbox has
    /// no fallback search path for them.
    fn clear_config_env(jail: &mut Jail) {
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

    fn load_in(jail: &Jail, file: Option<&str>) -> Result<Config, ConfigError> {
        let path = file.map(|f| jail.directory().join(f));
        Config::load(path.as_deref())
    }

    #[test]
    fn defaults_derive_paths_from_state_dir() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            let config = load_in(jail, None).unwrap();
            assert!(config.state_dir.ends_with("procurator-ci-data"));
            assert!(config.state_dir.is_absolute());
            assert_eq!(config.database_url, config.state_dir.join("ci.db"));
            assert_eq!(config.repos_base_path, config.state_dir.join("repos"));
            assert_eq!(config.bind_address.to_string(), "127.0.0.1:3000");
            assert_eq!(config.public_url, "http://127.0.0.1:3000");
            assert_eq!(config.workers, 1);
            assert_eq!(config.log_max_bytes, 64 * 1024 * 1024);
            assert!(config.public_read);
            Ok(())
        });
    }

    #[test]
    fn state_directory_from_systemd() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.set_env("STATE_DIRECTORY", "/var/lib/procurator-ci:/var/lib/other");
            let config = load_in(jail, None).unwrap();
            assert_eq!(config.state_dir, PathBuf::from("/var/lib/procurator-ci"));
            assert_eq!(
                config.database_url,
                PathBuf::from("/var/lib/procurator-ci/ci.db")
            );
            Ok(())
        });
    }

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
    fn nested_keys_from_env_and_legacy_database_url() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.set_env("PROCURATOR_CI_REPOS__DEMO__DESCRIPTION", "from env");
            jail.set_env("DATABASE_URL", "sqlite:///tmp/x/ci.db");
            let config = load_in(jail, None).unwrap();
            assert_eq!(config.repos["demo"].description, "from env");
            assert_eq!(config.database_url, PathBuf::from("/tmp/x/ci.db"));
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
    fn unknown_key_is_named() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file("c.toml", "wrokers = 2\n")?;
            let err = load_in(jail, Some("c.toml")).unwrap_err().to_string();
            assert!(
                err.contains("unknown key `wrokers`; did you mean `workers`?"),
                "{err}"
            );
            assert!(err.contains("c.toml"), "{err}");
            // One clean list: every key once, each quoted once.
            assert!(err.contains("(known keys: state_dir, "), "{err}");
            assert!(!err.contains("``") && !err.contains("one of"), "{err}");
            jail.create_file("b.toml", "bind_adress = \"127.0.0.1:1\"\n")?;
            let err = load_in(jail, Some("b.toml")).unwrap_err().to_string();
            assert!(err.contains("did you mean `bind_address`?"), "{err}");
            jail.create_file("z.toml", "zzzzzz = 1\n")?;
            let err = load_in(jail, Some("z.toml")).unwrap_err().to_string();
            assert!(!err.contains("did you mean"), "{err}");

            jail.create_file("r.toml", "[repos.demo]\ndescripton = \"x\"\n")?;
            let err = load_in(jail, Some("r.toml")).unwrap_err().to_string();
            assert!(err.contains("descripton"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn paths_are_normalised_and_all_interfaces_get_the_hosts_name() {
        assert_eq!(
            absolute(PathBuf::from("/x/./state/../data/")),
            PathBuf::from("/x/data")
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(absolute(PathBuf::from("./data")), cwd.join("data"));
        assert_eq!(
            default_public_url("127.0.0.1:3000".parse().unwrap()),
            "http://127.0.0.1:3000"
        );
        let all = default_public_url("0.0.0.0:3000".parse().unwrap());
        assert!(!all.contains("0.0.0.0") && all.ends_with(":3000"), "{all}");
        assert!(!default_public_url("[::]:80".parse().unwrap()).contains("::"));
    }

    #[test]
    fn unknown_env_key_is_named() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.set_env("PROCURATOR_CI_WROKERS", "2");
            let err = load_in(jail, None).unwrap_err().to_string();
            assert!(err.contains("wrokers"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn invalid_values_name_key_value_and_source() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file("a.toml", "bind_address = \"nonsense\"\n")?;
            let err = load_in(jail, Some("a.toml")).unwrap_err().to_string();
            assert!(err.contains("bind_address"), "{err}");
            assert!(err.contains("nonsense"), "{err}");
            assert!(err.contains("a.toml"), "{err}");

            jail.create_file("w.toml", "workers = 0\n")?;
            let err = load_in(jail, Some("w.toml")).unwrap_err().to_string();
            assert!(err.contains("`workers`"), "{err}");
            assert!(err.contains("invalid value 0"), "{err}");
            assert!(err.contains("w.toml"), "{err}");

            jail.set_env("PROCURATOR_CI_WORKERS", "0");
            let err = load_in(jail, None).unwrap_err().to_string();
            assert!(err.contains("PROCURATOR_CI_WORKERS"), "{err}");

            jail.set_env("PROCURATOR_CI_WORKERS", "many");
            let err = load_in(jail, None).unwrap_err().to_string();
            assert!(err.contains("workers"), "{err}");
            assert!(err.contains("many"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unreadable_token_file_is_rejected() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file("t.toml", "api_token_file = \"/nonexistent/token\"\n")?;
            let err = load_in(jail, Some("t.toml")).unwrap_err().to_string();
            assert!(err.contains("api_token_file"), "{err}");
            assert!(err.contains("/nonexistent/token"), "{err}");
            assert!(err.contains("t.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_token_file_others_can_read_is_refused_naming_key_and_file() {
        use std::os::unix::fs::PermissionsExt;
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file("token", "a-token-of-sixteen-chars")?;
            let token = jail.directory().join("token");
            jail.create_file("t.toml", "api_token_file = \"token\"\n")?;
            for mode in [0o644, 0o640, 0o604] {
                std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
                let err = load_in(jail, Some("t.toml")).unwrap_err().to_string();
                assert!(err.contains("`api_token_file`"), "{err}");
                assert!(err.contains(&token.display().to_string()), "{err}");
                assert!(err.contains("readable by group or others"), "{err}");
            }
            for mode in [0o600, 0o400] {
                std::fs::set_permissions(&token, std::fs::Permissions::from_mode(mode)).unwrap();
                load_in(jail, Some("t.toml")).unwrap();
            }
            Ok(())
        });
    }

    #[test]
    fn connection_caps_and_scan_interval_are_bounded() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            let config = load_in(jail, None).unwrap();
            assert_eq!(config.max_connections, 1024);
            assert_eq!(config.max_connections_per_peer, 64);
            assert_eq!(config.scan_interval_secs, 30);
            for (file, key) in [
                ("max_connections = 8\n", "`max_connections`"),
                (
                    "max_connections_per_peer = 0\n",
                    "`max_connections_per_peer`",
                ),
                (
                    "max_connections = 100\nmax_connections_per_peer = 101\n",
                    "`max_connections_per_peer`",
                ),
                ("scan_interval_secs = 0\n", "`scan_interval_secs`"),
            ] {
                jail.create_file("c.toml", file)?;
                let err = load_in(jail, Some("c.toml")).unwrap_err().to_string();
                assert!(err.contains(key) && err.contains("c.toml"), "{err}");
            }
            jail.set_env("PROCURATOR_CI_MAX_CONNECTIONS_PER_PEER", "7");
            assert_eq!(load_in(jail, None).unwrap().max_connections_per_peer, 7);
            Ok(())
        });
    }

    #[test]
    fn bad_repo_name_and_log_format_are_rejected() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file("r.toml", "[repos.\"x.git\"]\n")?;
            let err = load_in(jail, Some("r.toml")).unwrap_err().to_string();
            assert!(err.contains("repos.x.git"), "{err}");

            jail.create_file("d.toml", "[repos.ok]\ndescription = \"a\\u202Eb\"\n")?;
            let err = load_in(jail, Some("d.toml")).unwrap_err().to_string();
            assert!(
                err.contains("repos.ok.description") && err.contains("U+202E"),
                "{err}"
            );

            jail.create_file("l.toml", "log_format = \"xml\"\n")?;
            let err = load_in(jail, Some("l.toml")).unwrap_err().to_string();
            assert!(err.contains("log_format") && err.contains("xml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn notify_entries_are_validated() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file(
                "n.toml",
                "[[notify]]\non = \"success\"\nurl = \"http://127.0.0.1:9/hook\"\n\
                 [[notify]]\non = \"finished\"\nrepo = \"web*\"\ncommand = [\"/bin/true\"]\n",
            )?;
            let config = load_in(jail, Some("n.toml")).unwrap();
            assert_eq!(config.notify.len(), 2);
            assert_eq!(config.notify[0].branch, "*");
            assert_eq!(config.notify[1].on, NotifyOn::Finished);
            assert!(config.cancel_superseded);

            jail.create_file("b.toml", "[[notify]]\non = \"success\"\n")?;
            let err = load_in(jail, Some("b.toml")).unwrap_err().to_string();
            assert!(
                err.contains("notify.0.url") && err.contains("exactly one"),
                "{err}"
            );

            jail.create_file(
                "o.toml",
                "[[notify]]\non = \"sometimes\"\ncommand = [\"x\"]\n",
            )?;
            let err = load_in(jail, Some("o.toml")).unwrap_err().to_string();
            assert!(err.contains("sometimes"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn build_time_checks_skip_only_the_runtime_files() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file(
                "r.toml",
                "api_token_file = \"/run/credentials/x/api-token\"\n\
                 [[notify]]\non = \"success\"\nurl = \"http://127.0.0.1:9/hook\"\n\
                 secret_file = \"/run/credentials/x/notify-secret-0\"\n",
            )?;
            let path = jail.directory().join("r.toml");
            let err = Config::load(Some(&path)).unwrap_err().to_string();
            assert!(
                err.contains("api_token_file") && err.contains("cannot read it"),
                "{err}"
            );
            let config = Config::load_checking(Some(&path), RuntimeFiles::Skip).unwrap();
            assert_eq!(
                config.notify[0].secret_file.as_deref(),
                Some(Path::new("/run/credentials/x/notify-secret-0"))
            );

            jail.create_file("token", "a-token-of-sixteen-chars")?;
            std::fs::set_permissions(
                jail.directory().join("token"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
            jail.create_file(
                "s.toml",
                "api_token_file = \"token\"\n\
                 [[notify]]\non = \"success\"\nurl = \"http://127.0.0.1:9/hook\"\n\
                 secret_file = \"/run/credentials/x/notify-secret-0\"\n",
            )?;
            let err = load_in(jail, Some("s.toml")).unwrap_err().to_string();
            assert!(
                err.contains("notify.0.secret_file") && err.contains("cannot read it"),
                "{err}"
            );

            // Everything else is still checked.
            jail.create_file(
                "w.toml",
                "workers = 0\napi_token_file = \"/run/credentials/x/api-token\"\n",
            )?;
            let path = jail.directory().join("w.toml");
            let err = Config::load_checking(Some(&path), RuntimeFiles::Skip)
                .unwrap_err()
                .to_string();
            assert!(err.contains("workers"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn cache_keys_are_validated() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            let config = load_in(jail, None).unwrap();
            assert!(!config.cache_serve && config.cache_push.is_empty());
            assert_eq!(config.cache_keep_builds, 5);
            assert_eq!(config.cache_push_jobs, 2);

            jail.create_file("s.toml", "cache_serve = true\n")?;
            let err = load_in(jail, Some("s.toml")).unwrap_err().to_string();
            assert!(
                err.contains("`cache_secret_key_file`") && err.contains("required"),
                "{err}"
            );

            jail.create_file("p.toml", "cache_push = [\"file:///c\", \"cache\"]\n")?;
            let err = load_in(jail, Some("p.toml")).unwrap_err().to_string();
            assert!(
                err.contains("cache_push.1") && err.contains("p.toml"),
                "{err}"
            );

            jail.create_file("j.toml", "cache_push_jobs = 0\n")?;
            let err = load_in(jail, Some("j.toml")).unwrap_err().to_string();
            assert!(err.contains("cache_push_jobs"), "{err}");

            // A key readable by others is refused at run time; the
            // build-time check does not read it (systemd hands it over only
            // when the service starts).
            jail.create_file("key", "k-1:AAAA\n")?;
            std::fs::set_permissions(
                jail.directory().join("key"),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .unwrap();
            jail.create_file(
                "k.toml",
                "cache_serve = true\ncache_secret_key_file = \"key\"\n",
            )?;
            let err = load_in(jail, Some("k.toml")).unwrap_err().to_string();
            assert!(
                err.contains("cache_secret_key_file") && err.contains("mode 644"),
                "{err}"
            );
            jail.create_file(
                "r.toml",
                "cache_serve = true\ncache_secret_key_file = \"/run/credentials/x/cache-key\"\n",
            )?;
            let path = jail.directory().join("r.toml");
            let config = Config::load_checking(Some(&path), RuntimeFiles::Skip).unwrap();
            assert!(config.cache_serve);
            let err = Config::load(Some(&path)).unwrap_err().to_string();
            assert!(err.contains("cannot read it"), "{err}");
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
