//! What procurator-ci knows about Nix: flake references, the command line of
//! a check, reading failures out of its log, and summarising `nix flake show`.

use std::path::Path;

use serde_json::{Map, Value};

/// Percent-encodes everything but RFC 3986 unreserved characters and, when
/// `keep_slash`, '/'.
fn percent_encode(value: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && byte == b'/');
        if keep {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The flake reference of `commit` on `branch` in the bare repository at
/// `repo` (an absolute path): `git+file:///abs/repo.git?ref=refs/heads/<branch>&rev=<sha>`,
/// with `&submodules=1` when the commit has submodules (nix leaves them
/// out otherwise, and the flake misses their files).
pub fn flake_ref(repo: &Path, branch: &str, commit: &str, submodules: bool) -> String {
    format!(
        "git+file://{}?ref={}&rev={}{}",
        percent_encode(&repo.to_string_lossy(), true),
        // A pull request's build carries its whole head ref.
        percent_encode(
            &if crate::repos::is_pull_ref(branch) {
                branch.to_string()
            } else {
                format!("refs/heads/{branch}")
            },
            true
        ),
        percent_encode(commit, false),
        if submodules { "&submodules=1" } else { "" }
    )
}

/// `nix flake <command> <options…> <extra…> <flake>`, with flakes enabled
/// whatever the host's nix.conf says.
fn flake_command(command: &[&str], extra: &[String], flake: &str) -> Vec<String> {
    let mut args = vec!["flake".to_string()];
    args.extend(command.iter().map(|a| a.to_string()));
    args.extend([
        "--extra-experimental-features".into(),
        "nix-command flakes".into(),
    ]);
    args.extend(extra.iter().cloned());
    args.push(flake.to_string());
    args
}

/// The arguments of `nix flake check` for `flake`. Its log is nix's
/// internal JSON, which the worker renders as plain text while attributing
/// every build to its derivation.
pub fn check_args(extra: &[String], flake: &str) -> Vec<String> {
    flake_command(
        &[
            "check",
            "--print-build-logs",
            "--keep-going",
            "--log-format",
            "internal-json",
        ],
        extra,
        flake,
    )
}

/// A word as a POSIX shell reads it: unchanged when it is safe, else in
/// single quotes (a flake reference's `&` would otherwise end the command).
fn shell_word(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command a user pastes into a shell to run the same checks: what the
/// worker runs, without the log format only procurator-ci reads, with the
/// configured extra arguments, every word quoted for the shell.
pub fn reproduce_command(extra: &[String], flake: &str) -> String {
    let mut words = vec!["nix".to_string()];
    words.extend(
        check_args(extra, flake)
            .into_iter()
            .filter(|a| a != "--log-format" && a != "internal-json"),
    );
    words
        .iter()
        .map(|w| shell_word(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The arguments of `nix eval --json <installable> --apply <function>`.
pub fn eval_args(extra: &[String], installable: &str, apply: &str) -> Vec<String> {
    let mut args = vec![
        "eval".to_string(),
        "--json".into(),
        "--extra-experimental-features".into(),
        "nix-command flakes".into(),
    ];
    args.extend(extra.iter().cloned());
    args.extend([installable.to_string(), "--apply".into(), apply.to_string()]);
    args
}

/// `name` as one attribute of a Nix attribute path, quoted when needed.
pub fn attr(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '\''))
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    if plain {
        name.to_string()
    } else {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace("${", "\\${");
        format!("\"{escaped}\"")
    }
}

/// The error of nix's stderr on one line, without colours, `error:`,
/// trace or code excerpt (see [`crate::build::nixlog::error_of`]; from 2.1x
/// on, nix puts a trace before it), any hash nix "got" withheld; the end of
/// stderr when no line is an error.
pub fn first_error(stderr: &[u8]) -> String {
    let text = strip_ansi(&String::from_utf8_lossy(stderr));
    let error = if text.lines().any(|l| l.trim_start().starts_with("error:")) {
        crate::build::nixlog::error_of(&text)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        crate::build::process::tail(stderr, 300)
    };
    crate::build::nixlog::publishable(&error)
}

/// The arguments of `nix flake show --json` for `flake`.
pub fn show_args(extra: &[String], flake: &str) -> Vec<String> {
    flake_command(&["show", "--json"], extra, flake)
}

/// Removes terminal escapes: CSI sequences (colours, `ESC [ … final`), OSC
/// sequences (hyperlinks, titles: `ESC ] … BEL` or `ESC ] … ESC \`) and
/// the other two-character escapes. Nix colours its messages even in
/// `--log-format internal-json` from 2.2x on, and may link paths with OSC 8.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' {
                        if chars.peek() == Some(&'\\') {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Output categories whose first level is the system (`checks.<system>.…`).
const PER_SYSTEM: [&str; 7] = [
    "checks",
    "packages",
    "apps",
    "devShells",
    "formatter",
    "legacyPackages",
    "bundlers",
];

/// Summarises `nix flake show --json` as
/// `{"checks": {"x86_64-linux": ["ok", …]}, "nixosModules": ["default"],
/// "lib": [], …}`: every output category nix reports, standard or not.
///
/// Per-system categories are maps of system to names; the others are lists
/// of names. A category (or a system's entry) that nix shows as one value
/// rather than an attribute set of them (`lib`, `formatter.<system>`, a
/// category nix does not know) has no names: an empty list, still listed.
/// Older Nix prints leaves as `{"type": …}` objects, newer ones may wrap
/// them in `{"children": …}` or print `{}` or `{"leaf": …}` for leaves; all
/// are accepted, and an unexpected shape yields what could be read.
pub fn summarize_show(show: &Value) -> Value {
    let mut summary = Map::new();
    let Some(top) = show.as_object() else {
        return Value::Object(summary);
    };
    let names = |value: &Value| -> Value {
        let value = unwrap_children(value);
        match value.as_object() {
            Some(entries) if !is_leaf(value) => {
                Value::Array(entries.keys().cloned().map(Value::String).collect())
            }
            _ => Value::Array(Vec::new()),
        }
    };
    for (category, value) in top {
        let value = unwrap_children(value);
        let entries = value.as_object().filter(|_| !is_leaf(value));
        let summarized = match entries {
            Some(systems) if PER_SYSTEM.contains(&category.as_str()) => Value::Object(
                systems
                    .iter()
                    .map(|(system, outputs)| (system.clone(), names(outputs)))
                    .collect(),
            ),
            _ => names(value),
        };
        summary.insert(category.clone(), summarized);
    }
    Value::Object(summary)
}

/// Whether `nix flake show` printed `value` as one output rather than an
/// attribute set of them.
fn is_leaf(value: &Value) -> bool {
    value.get("type").is_some_and(Value::is_string)
        || value.get("leaf").is_some()
        || value.as_object().is_some_and(Map::is_empty)
}

fn unwrap_children(value: &Value) -> &Value {
    match value.get("children") {
        Some(children) if children.is_object() => children,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_terminal_escape_is_stripped() {
        // As nix 2.34 prints an error, with an OSC 8 link of each kind of
        // terminator and a lone two-character escape.
        let coloured = "\u{1b}[31;1merror:\u{1b}[0m \u{1b}]8;;file:///x\u{7}path\u{1b}]8;;\u{7} \
                        \u{1b}]8;;file:///y\u{1b}\\other\u{1b}]8;;\u{1b}\\ \u{1b}=done";
        assert_eq!(strip_ansi(coloured), "error: path other done");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn the_reproducing_command_pastes_into_a_shell() {
        let flake = flake_ref(
            Path::new("/srv/my repo.git"),
            "main",
            &"a".repeat(40),
            false,
        );
        let line = reproduce_command(&["--option".into(), "cores".into(), "2".into()], &flake);
        assert_eq!(
            line,
            format!(
                "nix flake check --print-build-logs --keep-going --extra-experimental-features \
                 'nix-command flakes' --option cores 2 'git+file:///srv/my%20repo.git?ref=refs/heads/main&rev={}'",
                "a".repeat(40)
            )
        );
        assert!(!line.contains("internal-json"));
        // A real shell reads it back as the same words.
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("set -- {}; printf '%s\\n' \"$@\"", &line[4..]),
            ])
            .output()
            .unwrap();
        let words: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let mut expected = check_args(&["--option".into(), "cores".into(), "2".into()], &flake);
        expected.retain(|a| a != "--log-format" && a != "internal-json");
        assert_eq!(words, expected);
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }

    #[test]
    fn flake_ref_is_encoded() {
        let r = flake_ref(
            Path::new("/var/lib/ci/repos/my repo.git"),
            "feature/a+b",
            &"a".repeat(40),
            false,
        );
        assert_eq!(
            r,
            format!(
                "git+file:///var/lib/ci/repos/my%20repo.git?ref=refs/heads/feature/a%2Bb&rev={}",
                "a".repeat(40)
            )
        );
        assert!(
            flake_ref(Path::new("/r.git"), "main", &"a".repeat(40), true)
                .ends_with("&submodules=1")
        );
    }

    #[test]
    fn check_arguments() {
        let args = check_args(&["--option".into(), "cores".into(), "1".into()], "F");
        assert_eq!(
            args,
            [
                "flake",
                "check",
                "--print-build-logs",
                "--keep-going",
                "--log-format",
                "internal-json",
                "--extra-experimental-features",
                "nix-command flakes",
                "--option",
                "cores",
                "1",
                "F"
            ]
        );
    }

    #[test]
    fn attribute_names_are_quoted_when_needed() {
        assert_eq!(attr("ok"), "ok");
        assert_eq!(attr("x86_64-linux"), "x86_64-linux");
        assert_eq!(attr("a.b"), "\"a.b\"");
        assert_eq!(attr("1x"), "\"1x\"");
        assert_eq!(attr("a\"${b}"), "\"a\\\"\\${b}\"");
        assert_eq!(
            first_error(b"warning: x\n\x1b[31;1merror:\x1b[0m undefined variable 'nope'\n  at x"),
            "undefined variable 'nope'"
        );
        // As nix 2.26 prints a check that throws: the trace comes first.
        assert_eq!(
            first_error(
                b"\x1b[31;1merror:\x1b[0m\n       \xe2\x80\xa6 while evaluating the attribute 'drvPath'\n         at /nix/store/x-source/flake.nix:1:25:\n\n       \x1b[31;1merror:\x1b[0m broken on purpose\n"
            ),
            "broken on purpose"
        );
    }

    #[test]
    fn show_summary_tolerates_shapes() {
        let old = json!({
            "checks": {"x86_64-linux": {"ok": {"type": "derivation", "name": "ok"}, "fail": {}}},
            "packages": {"x86_64-linux": {"default": {"type": "derivation"}}},
            "nixosModules": {"default": {"type": "nixos-module"}},
            "formatter": {"x86_64-linux": {"type": "derivation"}}
        });
        let summary = summarize_show(&old);
        assert_eq!(summary["checks"]["x86_64-linux"], json!(["fail", "ok"]));
        assert_eq!(summary["packages"]["x86_64-linux"], json!(["default"]));
        assert_eq!(summary["nixosModules"], json!(["default"]));
        assert_eq!(summary["formatter"], json!({"x86_64-linux": []}));

        // Nix 2.8's own words for a flake-utils-like and a nixpkgs.lib-like
        // flake: every category is listed, those without names too.
        let all = json!({
            "lib": {"type": "unknown"},
            "overlays": {"default": {"type": "nixpkgs-overlay"}},
            "legacyPackages": {"x86_64-linux": {}},
            "templates": {"t": {"description": "t", "type": "template"}},
            "custom": {"type": "unknown"},
            "hydraJobs": {"a": {"name": "ok", "type": "derivation"}}
        });
        assert_eq!(
            summarize_show(&all),
            json!({
                "custom": [],
                "hydraJobs": ["a"],
                "legacyPackages": {"x86_64-linux": []},
                "lib": [],
                "overlays": ["default"],
                "templates": ["t"]
            })
        );

        let newer =
            json!({"checks": {"children": {"aarch64-linux": {"children": {"t": {"leaf": true}}}}}});
        assert_eq!(
            summarize_show(&newer)["checks"]["aarch64-linux"],
            json!(["t"])
        );
        assert_eq!(summarize_show(&json!("nonsense")), json!({}));
    }
}
