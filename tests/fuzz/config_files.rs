//! Configuration files: TOML of every key, valid and not.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;

use crate::names::repo_name_ok;
use crate::{config, name_like};

const KEYS: &[&str] = &[
    "state_dir",
    "database_url",
    "repos_base_path",
    "socket_path",
    "bind_address",
    "public_url",
    "ssh_push_base",
    "workers",
    "max_retries",
    "retry_backoff_secs",
    "worker_poll_interval_ms",
    "nix_bin",
    "nix_extra_args",
    "build_timeout_secs",
    "max_silent_secs",
    "kill_grace_secs",
    "shutdown_timeout_secs",
    "log_max_bytes",
    "log_retention_days",
    "log_format",
    "api_token_file",
    "public_read",
];

/// A TOML value as text: well-typed or not, in range or not.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<i64>().prop_map(|n| n.to_string()),
        2 => (0i64..100_000).prop_map(|n| n.to_string()),
        1 => Just("18446744073709551616".to_string()),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        3 => name_like().prop_map(|s| toml_string(&s)),
        1 => Just("\"127.0.0.1:0\"".to_string()),
        1 => Just("\"http://ci.example.org\"".to_string()),
        1 => prop::collection::vec(name_like(), 0..3)
            .prop_map(|v| format!("[{}]", v.iter().map(|s| toml_string(s)).collect::<Vec<_>>().join(", "))),
        1 => Just("1979-05-27T07:32:00Z".to_string()),
        1 => Just("{ a = 1 }".to_string()),
        1 => "[ -~]{0,12}",
    ]
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A configuration file: known and unknown keys, `[repos.<name>]` tables,
/// or random bytes.
fn config_file(scratch: String) -> impl Strategy<Value = Vec<u8>> {
    let pair = (
        prop_oneof![
            6 => prop::sample::select(KEYS).prop_map(str::to_string),
            1 => "[a-z_]{1,12}",
        ],
        toml_value(),
    );
    let repo = (
        name_like(),
        prop::option::of(name_like()),
        prop::option::of(("[a-z_]{1,8}", toml_value())),
    );
    let doc = (
        prop::collection::vec(pair, 0..8),
        prop::collection::vec(repo, 0..3),
    )
        .prop_map(move |(pairs, repos)| {
            // Keep every path the loader might touch inside the scratch
            // directory: paths are checked (token file), never created.
            let mut text = format!("state_dir = {}\n", toml_string(&scratch));
            let mut seen = BTreeSet::new();
            for (key, value) in pairs {
                if key == "state_dir" || !seen.insert(key.clone()) {
                    continue;
                }
                text.push_str(&format!("{key} = {value}\n"));
            }
            for (name, description, extra) in repos {
                text.push_str(&format!("[repos.{}]\n", toml_string(&name)));
                if let Some(d) = description {
                    text.push_str(&format!("description = {}\n", toml_string(&d)));
                }
                if let Some((k, v)) = extra {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            text.into_bytes()
        });
    prop_oneof![
        8 => doc,
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn configuration_files_load_only_when_valid(
        bytes in config_file(scratch().join("state").display().to_string()),
    ) {
        use procurator_ci::config::Config;
        let before: BTreeSet<_> = std::fs::read_dir(scratch()).unwrap().map(|e| e.unwrap().file_name()).collect();
        let file = tempfile::NamedTempFile::new_in(scratch()).unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let loaded = Config::load(Some(file.path()));
        drop(file);
        let after: BTreeSet<_> = std::fs::read_dir(scratch()).unwrap().map(|e| e.unwrap().file_name()).collect();
        prop_assert_eq!(before, after, "loading created files");
        let text = String::from_utf8_lossy(&bytes);
        match loaded {
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with("configuration error"), "{}", message);
            }
            Ok(config) => {
                prop_assert!((1..=64).contains(&config.workers), "{}", text);
                prop_assert!(config.max_retries <= 100);
                prop_assert!(config.retry_backoff_secs <= 86_400);
                prop_assert!((10..=3_600_000).contains(&config.worker_poll_interval_ms));
                prop_assert!(!config.nix_bin.trim().is_empty() && !config.nix_bin.contains('\0'));
                prop_assert!(config.nix_extra_args.iter().all(|a| !a.contains('\0')));
                prop_assert!((1..=604_800).contains(&config.build_timeout_secs));
                prop_assert!((1..=604_800).contains(&config.max_silent_secs));
                prop_assert!(config.kill_grace_secs <= 3600 && config.shutdown_timeout_secs <= 3600);
                prop_assert!(config.log_max_bytes >= 1024);
                prop_assert!(config.public_url.starts_with("http://") || config.public_url.starts_with("https://"));
                for path in [&config.state_dir, &config.database_url, &config.repos_base_path, &config.socket_path] {
                    prop_assert!(path.is_absolute(), "{}", path.display());
                }
                for name in config.repos.keys() {
                    prop_assert!(repo_name_ok(name), "declared repository {:?} accepted", name);
                }
                if let Some(base) = &config.ssh_push_base {
                    prop_assert!(!base.is_empty() && !base.chars().any(char::is_control));
                }
                // The effective configuration loads again to itself.
                let again = tempfile::NamedTempFile::new_in(scratch()).unwrap();
                std::fs::write(again.path(), config.to_toml()).unwrap();
                let reloaded = Config::load(Some(again.path()));
                prop_assert!(reloaded.is_ok(), "{:?}\n{}", reloaded.err().map(|e| e.to_string()), config.to_toml());
                prop_assert_eq!(reloaded.unwrap().to_toml(), config.to_toml());
            }
        }
    }
}
