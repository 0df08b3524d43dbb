//! The rules every value must meet, checked once everything is merged, so
//! that an error can name the key, the value and where it came from.

use std::fmt::Display;
use std::ops::RangeInclusive;

use figment::Figment;

use super::source::source_of;
use super::{Config, ConfigError, RuntimeFiles};
use crate::repos::validate_repo_name;

/// The error for `key`'s `value`, naming where the value came from.
type Invalid<'a> = dyn Fn(&str, String, &str) -> ConfigError + 'a;

/// Makes the errors of top-level keys.
fn invalid_in(figment: &Figment) -> impl Fn(&str, String, &str) -> ConfigError + '_ {
    |key: &str, value: String, reason: &str| ConfigError::Invalid {
        key: key.to_string(),
        value,
        source_name: source_of(figment, key),
        reason: reason.to_string(),
    }
}

/// Fails with `invalid`'s error for `key` unless `value` lies in `range`;
/// `reason` says the range in words (and in the units a reader knows).
fn in_range<T: PartialOrd + Display>(
    invalid: &Invalid<'_>,
    key: &str,
    value: T,
    range: RangeInclusive<T>,
    reason: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(invalid(key, value.to_string(), reason))
    }
}

/// Checks every value of `config`; the first error found is returned.
pub(super) fn validate(
    config: &Config,
    figment: &Figment,
    runtime_files: RuntimeFiles,
) -> Result<(), ConfigError> {
    let invalid = invalid_in(figment);
    in_range(
        &invalid,
        "workers",
        config.workers,
        1..=64,
        "must be between 1 and 64",
    )?;
    in_range(
        &invalid,
        "max_retries",
        config.max_retries,
        0..=100,
        "must be at most 100",
    )?;
    in_range(
        &invalid,
        "retry_backoff_secs",
        config.retry_backoff_secs,
        0..=86_400,
        "must be at most 86400 (one day)",
    )?;
    in_range(
        &invalid,
        "worker_poll_interval_ms",
        config.worker_poll_interval_ms,
        10..=3_600_000,
        "must be between 10 and 3600000",
    )?;
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
        let reason = "must be between 1 and 604800 (one week)";
        in_range(&invalid, key, value, 1..=7 * 86_400, reason)?;
    }
    for (key, value) in [
        ("kill_grace_secs", config.kill_grace_secs),
        ("shutdown_timeout_secs", config.shutdown_timeout_secs),
    ] {
        in_range(&invalid, key, value, 0..=3600, "must be at most 3600")?;
    }
    in_range(
        &invalid,
        "max_connections",
        config.max_connections,
        16..=1_048_576,
        "must be between 16 and 1048576",
    )?;
    in_range(
        &invalid,
        "max_connections_per_peer",
        config.max_connections_per_peer,
        1..=config.max_connections,
        &format!(
            "must be between 1 and max_connections ({})",
            config.max_connections
        ),
    )?;
    in_range(
        &invalid,
        "scan_interval_secs",
        config.scan_interval_secs,
        1..=86_400,
        "must be between 1 and 86400 (one day)",
    )?;
    in_range(
        &invalid,
        "client_stall_timeout_secs",
        config.client_stall_timeout_secs,
        1..=3600,
        "must be between 1 and 3600",
    )?;
    in_range(
        &invalid,
        "log_max_bytes",
        config.log_max_bytes,
        1024..=u64::MAX,
        "must be at least 1024",
    )?;
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
        if let Some(mode) = exposed_mode(path) {
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
        in_range(
            &bad,
            "timeout_secs",
            entry.timeout_secs,
            1..=3600,
            "must be between 1 and 3600",
        )?;
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
        if let Some(branch) = &decl.default_branch
            && let Err(reason) = crate::repos::validate_branch(branch)
        {
            return Err(invalid(
                &format!("repos.{name}.default_branch"),
                format!("{branch:?}"),
                &format!("is not a branch name procurator-ci builds: it {reason}"),
            ));
        }
        super::upstreams::validate_upstream(name, decl, &invalid, runtime_files)?;
        if let Err(e) = super::forge::check_declared(decl, runtime_files == RuntimeFiles::Read) {
            return Err(invalid(
                &format!("repos.{name}.{}", e.key),
                e.value,
                &e.reason,
            ));
        }
    }
    validate_cache(config, figment, runtime_files)?;
    validate_local_inputs(config, figment)
}

/// `allowed_local_inputs`: absolute, normalised roots that hold none of the
/// daemon's own files (those stay hidden from nix whatever this says).
fn validate_local_inputs(config: &Config, figment: &Figment) -> Result<(), ConfigError> {
    let mine = [
        ("state_dir", Some(&config.state_dir)),
        ("repos_base_path", Some(&config.repos_base_path)),
        ("database_url", Some(&config.database_url)),
        ("api_token_file", config.api_token_file.as_ref()),
        (
            "cache_secret_key_file",
            config.cache_secret_key_file.as_ref(),
        ),
    ];
    for (i, root) in config.allowed_local_inputs.iter().enumerate() {
        let rebuilt: std::path::PathBuf = root.components().collect();
        let normal = rebuilt.as_os_str() == root.as_os_str()
            && !root
                .components()
                .any(|c| c == std::path::Component::ParentDir);
        let reason = if !root.is_absolute() {
            "must be an absolute path".to_string()
        } else if !normal {
            "must be a normalised path (no `.`, `..` or trailing `/`)".to_string()
        } else if root.parent().is_none() {
            "would let a pushed flake read every file of the host".to_string()
        } else if config.allowed_local_inputs[..i].contains(root) {
            "is listed twice".to_string()
        } else if let Some((key, path)) = mine
            .iter()
            .filter_map(|(key, path)| Some((key, (*path)?)))
            .find(|(_, path)| path.starts_with(root) || root.starts_with(path))
        {
            format!(
                "overlaps {key} ({}): the daemon's own files are never a flake's input",
                path.display()
            )
        } else {
            continue;
        };
        return Err(ConfigError::Invalid {
            key: format!("allowed_local_inputs.{i}"),
            value: format!("{:?}", root.display().to_string()),
            source_name: source_of(figment, "allowed_local_inputs"),
            reason,
        });
    }
    Ok(())
}

/// The binary cache keys: targets, bounds and the signing key.
fn validate_cache(
    config: &Config,
    figment: &Figment,
    runtime_files: RuntimeFiles,
) -> Result<(), ConfigError> {
    let invalid = invalid_in(figment);
    for (i, url) in config.cache_push.iter().enumerate() {
        let reason = match store_url_problem(url) {
            Some(reason) => reason,
            None if config.cache_push[..i].contains(url) => "is listed twice".into(),
            None => continue,
        };
        return Err(ConfigError::Invalid {
            key: format!("cache_push.{i}"),
            value: format!("{url:?}"),
            source_name: source_of(figment, "cache_push"),
            reason,
        });
    }
    in_range(
        &invalid,
        "cache_keep_builds",
        config.cache_keep_builds,
        0..=1000,
        "must be at most 1000",
    )?;
    in_range(
        &invalid,
        "cache_push_jobs",
        config.cache_push_jobs,
        1..=32,
        "must be between 1 and 32",
    )?;
    // 32: the downloads the cache serves at once in all.
    in_range(
        &invalid,
        "cache_downloads_per_peer",
        config.cache_downloads_per_peer,
        1..=32,
        "must be between 1 and 32 (the downloads served at once in all)",
    )?;
    match &config.cache_secret_key_file {
        None if config.cache_serve || !config.cache_push.is_empty() => Err(invalid(
            "cache_secret_key_file",
            "none".into(),
            "is required when cache_serve is on or cache_push lists a cache: every pushed \
             or served path is signed (create one with `nix key generate-secret --key-name \
             <host>-1 > key; chmod 600 key`)",
        )),
        // Its contents are the cache's to read (`check-config` and the
        // start do): here, that the daemon can read it and others cannot.
        Some(path) if runtime_files == RuntimeFiles::Read => {
            let reason = match (exposed_mode(path), std::fs::read(path)) {
                (_, Err(e)) => format!("cannot read it: {e}"),
                (Some(mode), _) => format!(
                    "it is readable by group or others (mode {mode:o}): a secret key must be \
                     mode 600 or 400 (chmod 600 it)"
                ),
                (None, Ok(_)) => return Ok(()),
            };
            Err(invalid(
                "cache_secret_key_file",
                path.display().to_string(),
                &reason,
            ))
        }
        _ => Ok(()),
    }
}

/// Why a `cache_push` entry is not a store URL as `nix copy --to` takes it
/// (`None` when it is one).
fn store_url_problem(url: &str) -> Option<String> {
    if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must be a store URL without spaces, such as file:///srv/cache".into());
    }
    if url.starts_with('/') {
        return None;
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some(
            "must be a store URL (file://, s3://, ssh://, ssh-ng://, http://, https://) or an \
             absolute path"
                .into(),
        );
    };
    let scheme_ok = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b));
    if !scheme_ok || rest.is_empty() {
        return Some("must be a store URL such as file:///srv/cache or s3://bucket".into());
    }
    None
}

/// The mode of `path` when group or others may read it (a secret there is
/// not secret); `None` when only its owner may, or it cannot be examined
/// (reading it then says why). A credential systemd passed to this unit
/// (`LoadCredential=`, below `$CREDENTIALS_DIRECTORY`) is private whatever
/// its mode: systemd 254 and later make the files 0440, in a directory only
/// the unit's user can enter.
pub fn exposed_mode(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    if is_credential(path) {
        return None;
    }
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o044 != 0).then_some(mode)
}

/// Whether `path` is one of the unit's credentials.
fn is_credential(path: &std::path::Path) -> bool {
    std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(std::path::PathBuf::from)
        .is_some_and(|dir| dir.is_absolute() && path.starts_with(&dir) && path != dir)
}

#[cfg(test)]
// figment's `Jail` decides the closures' error type.
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use figment::Jail;

    use super::super::testing::{clear_config_env, load_in};
    use super::super::{Config, NotifyOn, RuntimeFiles};
    use super::store_url_problem;

    #[test]
    fn push_targets_are_store_urls() {
        for good in [
            "file:///srv/cache",
            "s3://bucket?region=eu-west-1",
            "ssh-ng://ci@cache.example",
            "https://cache.example/upload",
            "/srv/store",
        ] {
            assert_eq!(store_url_problem(good), None, "{good}");
        }
        for bad in ["", "cache", "file://", "FILE:///x", "file:///a b", "x:/y"] {
            assert!(store_url_problem(bad).is_some(), "{bad:?}");
        }
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
                jail.create_file("config.toml", file)?;
                let err = load_in(jail, Some("config.toml")).unwrap_err().to_string();
                assert!(err.contains(key) && err.contains("config.toml"), "{err}");
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
    fn allowed_local_inputs_are_absolute_normal_roots_apart_from_the_daemons_files() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            assert!(load_in(jail, None).unwrap().allowed_local_inputs.is_empty());
            jail.create_file(
                "ok.toml",
                "allowed_local_inputs = [\"/srv/shared-flakes\"]\n",
            )?;
            let config = load_in(jail, Some("ok.toml")).unwrap();
            assert_eq!(
                config.allowed_local_inputs,
                [std::path::PathBuf::from("/srv/shared-flakes")]
            );
            let state = jail.directory().join("state");
            for (value, reason) in [
                ("\"shared\"".to_string(), "absolute"),
                ("\"/srv/./x\"".into(), "normalised"),
                ("\"/srv/x/\"".into(), "normalised"),
                ("\"/srv/../etc\"".into(), "normalised"),
                ("\"/\"".into(), "every file of the host"),
                (
                    format!("{:?}", state.join("repos").display().to_string()),
                    "overlaps state_dir",
                ),
                (
                    format!("{:?}", jail.directory().display().to_string()),
                    "overlaps state_dir",
                ),
            ] {
                jail.create_file(
                    "l.toml",
                    &format!(
                        "state_dir = \"state\"\nallowed_local_inputs = [\"/srv/a\", {value}]\n"
                    ),
                )?;
                let err = load_in(jail, Some("l.toml")).unwrap_err().to_string();
                assert!(
                    err.contains("`allowed_local_inputs.1`")
                        && err.contains(reason)
                        && err.contains("l.toml"),
                    "{value}: {err}"
                );
            }
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
}
