//! The built-in defaults, and the values derived from others: paths under
//! `state_dir`, made absolute so that flake references and hooks never
//! depend on the working directory, and the public URL of the bound
//! address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;

use super::source::source_of;
use super::{Config, ConfigError, LogFormat, RawConfig};

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            state_dir: None,
            database_url: None,
            repos_base_path: None,
            socket_path: None,
            cache_dir: None,
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
            cache_downloads_per_peer: 8,
            allowed_local_inputs: Vec::new(),
        }
    }
}

/// `path` made absolute and normalised (`/x/./a/../b` → `/x/b`), so that it
/// prints and compares as people write it. `..` is resolved by name, as a
/// shell's `cd` does: configured paths are not expected to cross symlinks
/// backwards.
pub(super) fn absolute(path: PathBuf) -> PathBuf {
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
        // uname(2), not /proc/sys/kernel/hostname: systemd's ProcSubset=pid
        // hides /proc/sys, and the name is the same.
        let host = rustix::system::uname()
            .nodename()
            .to_str()
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && h != "(none)")
            .unwrap_or_else(|| "localhost".into());
        format!("http://{host}:{}", bind.port())
    } else {
        format!("http://{bind}")
    }
}

/// Fills in the keys that default to paths under `state_dir` and makes every
/// path absolute, so that flake references and hooks never depend on the
/// working directory.
pub(super) fn resolve(raw: RawConfig, figment: &Figment) -> Result<Config, ConfigError> {
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
    let cache_dir = absolute(
        raw.cache_dir
            .or_else(|| systemd_directory("CACHE_DIRECTORY"))
            .unwrap_or_else(|| state_dir.join("home").join(".cache")),
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
        cache_dir,
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
        cache_downloads_per_peer: raw.cache_downloads_per_peer,
        allowed_local_inputs: raw.allowed_local_inputs,
    })
}

fn default_state_dir() -> PathBuf {
    systemd_directory("STATE_DIRECTORY").unwrap_or_else(|| PathBuf::from("./procurator-ci-data"))
}

/// The first directory systemd lists in `variable` (`StateDirectory=`,
/// `CacheDirectory=`: several are separated by ':'; the first is ours).
fn systemd_directory(variable: &str) -> Option<PathBuf> {
    std::env::var(variable)
        .ok()
        .and_then(|dirs| dirs.split(':').next().map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
}

fn strip_sqlite_scheme(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

#[cfg(test)]
// figment's `Jail` decides the closures' error type.
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::PathBuf;

    use figment::Jail;

    use super::super::testing::{clear_config_env, load_in};
    use super::*;

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
}
