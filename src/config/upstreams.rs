//! The keys of a repository mirrored from an upstream (`[repos.NAME]`
//! `upstream`, `upstream_credentials_file`, `poll_interval_secs`,
//! `webhook_secret_file`, `build_fork_pull_requests`): what each must be,
//! by the rules the repositories' own code applies to the API's requests.

use super::{ConfigError, RuntimeFiles};

/// A repository's `upstream` keys: a URL git fetches from without a
/// secret in it, the files only with an upstream, and readable.
pub(super) fn validate_upstream(
    name: &str,
    decl: &crate::config::RepoDecl,
    invalid: &impl Fn(&str, String, &str) -> ConfigError,
    runtime_files: RuntimeFiles,
) -> Result<(), ConfigError> {
    let key = |k: &str| format!("repos.{name}.{k}");
    if let Some(url) = &decl.upstream
        && let Err(reason) = crate::repos::upstream::validate_url(url)
    {
        return Err(invalid(
            &key("upstream"),
            format!("{:?}", crate::redact::urls(url)),
            &reason,
        ));
    }
    let files = [
        ("upstream_credentials_file", &decl.upstream_credentials_file),
        ("webhook_secret_file", &decl.webhook_secret_file),
    ];
    for (field, file) in files {
        let Some(path) = file else { continue };
        if decl.upstream.is_none() {
            return Err(invalid(
                &key(field),
                path.display().to_string(),
                "needs `upstream`: only a repository mirrored from an upstream uses it",
            ));
        }
        if runtime_files == RuntimeFiles::Read
            && let Err(reason) = crate::repos::upstream::read_secret_file(path)
        {
            return Err(invalid(&key(field), path.display().to_string(), &reason));
        }
    }
    if decl.build_fork_pull_requests && decl.upstream.is_none() {
        return Err(invalid(
            &key("build_fork_pull_requests"),
            "true".into(),
            "needs `upstream`: pull requests come from an upstream's forge",
        ));
    }
    if let Some(secs) = decl.poll_interval_secs {
        if decl.upstream.is_none() {
            return Err(invalid(
                &key("poll_interval_secs"),
                secs.to_string(),
                "needs `upstream`: only a repository mirrored from an upstream is polled",
            ));
        }
        if let Err(reason) = crate::repos::upstream::validate_poll_interval(secs) {
            return Err(invalid(
                &key("poll_interval_secs"),
                secs.to_string(),
                &reason,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
// figment's `Jail` decides the closures' error type.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::super::testing::{clear_config_env, load_in};

    #[test]
    fn upstream_keys_are_checked_naming_the_key() {
        Jail::expect_with(|jail| {
            clear_config_env(jail);
            jail.create_file("secret", "s3cret\n")?;
            let cases = [
                (
                    "[repos.app]\nupstream = \"https://ci:hunter2@git.example.org/app.git\"\n",
                    "repos.app.upstream",
                    "upstream_credentials_file",
                ),
                (
                    "[repos.app]\nupstream = \"ftp://git.example.org/app\"\n",
                    "repos.app.upstream",
                    "scheme",
                ),
                (
                    "[repos.app]\nwebhook_secret_file = \"secret\"\n",
                    "repos.app.webhook_secret_file",
                    "needs `upstream`",
                ),
                (
                    "[repos.app]\nupstream = \"git://h/a.git\"\nupstream_credentials_file = \"/nonexistent/creds\"\n",
                    "repos.app.upstream_credentials_file",
                    "cannot read it",
                ),
                (
                    "[repos.app]\nupstream = \"git://h/a.git\"\npoll_interval_secs = 100000\n",
                    "repos.app.poll_interval_secs",
                    "at most 86400",
                ),
                (
                    "[repos.app]\nbuild_fork_pull_requests = true\n",
                    "repos.app.build_fork_pull_requests",
                    "needs `upstream`",
                ),
            ];
            for (toml, key, why) in cases {
                jail.create_file("u.toml", toml)?;
                let err = load_in(jail, Some("u.toml")).unwrap_err().to_string();
                assert!(err.contains(key) && err.contains(why), "{toml}: {err}");
                assert!(!err.contains("hunter2"), "{err}");
            }
            jail.create_file(
                "u.toml",
                "[repos.app]\nupstream = \"git@git.example.org:team/app.git\"\n\
                 webhook_secret_file = \"secret\"\npoll_interval_secs = 0\n",
            )?;
            let config = load_in(jail, Some("u.toml")).unwrap();
            assert_eq!(config.repos["app"].poll_interval_secs, Some(0));
            Ok(())
        });
    }
}
