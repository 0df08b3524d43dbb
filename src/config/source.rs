//! Where a value came from, as every error names it: the file, the exact
//! environment variable or the built-in defaults; and figment's own errors
//! rephrased the same way.

use figment::{Figment, Metadata};

use super::ENV_PREFIX;
use super::defaults::absolute;

/// Figment's errors, rephrased to name the key without figment's profile
/// prefix and the exact file or environment variable it came from.
pub(super) fn describe_figment_error(error: figment::Error) -> String {
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

/// Environment variables that look meant for procurator-ci but that it
/// does not read (`PROCURATOR_BIND_ADDRESS`, `PROCURATORCI_WORKERS`): every
/// name starting with `PROCURATOR` outside `PROCURATOR_CI_*`, each with why
/// and the closest name it reads when one is plausible. A typo in a prefix
/// would otherwise leave a setting silently unapplied.
pub(super) fn foreign_variables(
    names: impl IntoIterator<Item = String>,
    keys: &[String],
) -> Vec<String> {
    let known: Vec<String> = keys
        .iter()
        .map(|key| format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()))
        .chain(std::iter::once(format!("{ENV_PREFIX}CONFIG")))
        .collect();
    let mut found: Vec<String> = names
        .into_iter()
        .filter(|name| {
            let upper = name.to_ascii_uppercase();
            upper.starts_with("PROCURATOR") && !upper.starts_with(ENV_PREFIX)
        })
        .map(|name| {
            let upper = name.to_ascii_uppercase();
            let closest = known
                .iter()
                .map(|k| (edit_distance(&upper, k), k))
                .min()
                .filter(|(distance, k)| *distance <= 3.max(k.len() / 4));
            match closest {
                Some((_, k)) => format!(
                    "the environment variable {name} is not read by procurator-ci (its variables \
                     start with {ENV_PREFIX}); did you mean {k}?"
                ),
                None => format!(
                    "the environment variable {name} is not read by procurator-ci (its variables \
                     start with {ENV_PREFIX})"
                ),
            }
        })
        .collect();
    found.sort();
    found
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

/// Names the provider that supplied `key`: the file path, the exact
/// environment variable, or the built-in defaults.
pub(super) fn source_of(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(metadata) => describe_metadata(metadata, key),
        None => "built-in defaults".into(),
    }
}

fn describe_metadata(metadata: &Metadata, key: &str) -> String {
    match &metadata.source {
        Some(figment::Source::File(path)) => format!("file {}", absolute(path.clone()).display()),
        // Figment names serialized defaults by their Rust type.
        Some(figment::Source::Code(_)) => "built-in defaults".into(),
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

#[cfg(test)]
// figment's `Jail` decides the closures' error type.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::super::testing::{clear_config_env, load_in};

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
    fn foreign_procurator_variables_are_named_with_the_closest_known_one() {
        let keys = ["bind_address".to_string(), "workers".to_string()];
        let said = super::foreign_variables(
            [
                "PROCURATOR_BIND_ADDRESS",
                "PROCURATORCI_WORKERS",
                "PROCURATOR_CI_WORKERS",
                "PROCURATOR_CI_CONFIG",
                "procurator_ci_workers",
                "PROCURATOR_SOMETHING_ELSE_ENTIRELY",
                "PATH",
            ]
            .map(String::from),
            &keys,
        );
        assert_eq!(
            said,
            [
                "the environment variable PROCURATORCI_WORKERS is not read by procurator-ci (its \
                 variables start with PROCURATOR_CI_); did you mean PROCURATOR_CI_WORKERS?",
                "the environment variable PROCURATOR_BIND_ADDRESS is not read by procurator-ci \
                 (its variables start with PROCURATOR_CI_); did you mean \
                 PROCURATOR_CI_BIND_ADDRESS?",
                "the environment variable PROCURATOR_SOMETHING_ELSE_ENTIRELY is not read by \
                 procurator-ci (its variables start with PROCURATOR_CI_)",
            ]
        );
    }

    #[test]
    fn defaults_are_named_as_such_not_by_their_type() {
        let figment = figment::Figment::from(figment::providers::Serialized::defaults(
            super::super::RawConfig::default(),
        ));
        assert_eq!(super::source_of(&figment, "workers"), "built-in defaults");
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
}
