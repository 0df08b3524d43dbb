//! Property-based fuzzing of everything that parses input from outside:
//! repository names, branch names and commit ids, the hook's stdin, the API's
//! JSON bodies and query strings (through the real router, in process),
//! configuration files, and the read cookie's `Cookie` header.
//!
//! Each target runs `PROCURATOR_FUZZ_CASES` cases (default 2000, the short
//! pass CI runs). The long pass is documented in docs/reliability.md:
//!
//! ```sh
//! PROCURATOR_FUZZ_CASES=1000000 cargo test --release --test fuzz
//! ```
//!
//! The variable deliberately does not start with `PROCURATOR_CI_`: the
//! configuration reads every such variable as a key.
//!
//! Every property is checked against an oracle written here from the
//! documented rules (README.md "Repositories and the hook", git's
//! `check-ref-format`), not against the code under test; the branch oracle
//! is itself cross-checked against the real `git check-ref-format`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use serde_json::{Value, json};

mod common;

use common::Daemon;
use procurator_ci::repos::{validate_branch, validate_commit, validate_repo_name};

/// Cases per target: `PROCURATOR_FUZZ_CASES`, 2000 by default.
fn cases() -> u32 {
    std::env::var("PROCURATOR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(2000)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        // Shrinking a million-case run may take long; a failure is reported
        // with its (shrunk) input either way.
        max_shrink_iters: 10_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Generators

/// Pieces that make the interesting structures of names and refs.
const TOKENS: &[&str] = &[
    "a",
    "Z",
    "0",
    "9",
    "-",
    "_",
    ".",
    "..",
    "/",
    "//",
    ".git",
    ".GIT",
    ".lock",
    "@",
    "@{",
    "{",
    "}",
    "HEAD",
    "refs/",
    "refs/heads/",
    "~",
    "^",
    ":",
    "?",
    "*",
    "[",
    "\\",
    " ",
    "\t",
    "\n",
    "\r",
    "\0",
    "\u{7f}",
    "é",
    "е",
    "Ａ",
    "%2e",
    "%2F",
    "'",
    "\"",
    ";",
    "$(id)",
    "`",
    "&",
    "|",
    "#",
    "=",
    "+",
    ",",
    "!",
];

/// Strings biased towards the edges of the grammars: token soup, the
/// grammar's own alphabet, printable ASCII, and any Unicode.
fn name_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(TOKENS), 0..10).prop_map(|t| t.concat()),
        3 => "[A-Za-z0-9._-]{0,110}",
        2 => "[ -~]{0,40}",
        1 => "[a-z0-9./@{}~^:-]{0,300}",
        1 => any::<String>(),
        1 => "\\PC{0,130}",
    ]
}

fn hex_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[0-9a-f]{38,42}",
        2 => "[0-9a-f]{62,66}",
        2 => "[0-9a-fA-F]{40}",
        1 => "[0-9a-g]{40}",
        1 => "0{40}",
        1 => name_like(),
    ]
}

// ---------------------------------------------------------------------------
// Oracles, from the documented rules

/// README: `^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`, not ending in `.git`, no `..`.
fn repo_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 100
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && !name.contains("..")
        && !name.to_ascii_lowercase().ends_with(".git")
}

/// git's ref-name rules for `refs/heads/<branch>`, as `git check-ref-format
/// --branch` applies them (so also: not `HEAD`, not starting with `-`).
fn git_branch_ok(branch: &str) -> bool {
    !branch.is_empty()
        && branch != "HEAD"
        && !branch.starts_with('-')
        && !branch.contains("..")
        && !branch.contains("@{")
        && !branch.ends_with('.')
        && branch.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && !c.ends_with(".lock")
                && c.bytes().all(|b| {
                    b >= 0x20
                        && b != 0x7f
                        && !matches!(b, b' ' | b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\')
                })
        })
}

/// Ours on top (README): printable ASCII, at most 255 bytes, no component
/// starting with `-`, not `@` (git reads it as HEAD), not spelled as a full
/// ref.
fn stricter_ok(branch: &str) -> bool {
    branch.len() <= 255
        && branch.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !branch.split('/').any(|c| c.starts_with('-'))
        && branch != "@"
        && !branch.starts_with("refs/")
}

fn branch_ok(branch: &str) -> bool {
    git_branch_ok(branch) && stricter_ok(branch)
}

fn commit_ok(commit: &str) -> bool {
    (commit.len() == 40 || commit.len() == 64)
        && commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The real `git check-ref-format --branch`, outside any repository.
fn git_accepts_branch(name: &str) -> bool {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    Command::new("git")
        .args(["check-ref-format", "--branch", name])
        .current_dir(dir.path())
        .env("GIT_CEILING_DIRECTORIES", dir.path())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// How many cases so far also asked git (bounded: a process per case would
/// make the long pass take days).
static GIT_ASKED: AtomicUsize = AtomicUsize::new(0);
const GIT_SAMPLE: usize = 500;

// ---------------------------------------------------------------------------
// Validation

proptest! {
    #![proptest_config(config())]

    #[test]
    fn repo_names_are_exactly_the_documented_grammar(name in name_like()) {
        let accepted = validate_repo_name(&name).is_ok();
        prop_assert_eq!(accepted, repo_name_ok(&name), "{:?}", name);
        if accepted {
            // Safe as one path component under the repositories directory.
            let base = Path::new("/base");
            let joined = base.join(format!("{name}.git"));
            prop_assert_eq!(joined.parent(), Some(base));
            prop_assert!(joined.components().count() == 3);
        }
    }

    #[test]
    fn branches_are_never_accepted_against_the_rules(branch in name_like()) {
        let accepted = validate_branch(&branch).is_ok();
        prop_assert_eq!(accepted, branch_ok(&branch), "{:?}", branch);
        // The oracle agrees with git on a sample (git reads arguments as C
        // strings, so no NUL bytes; and `@{-N}` depends on the reflog).
        if !branch.contains('\0') && GIT_ASKED.fetch_add(1, Ordering::Relaxed) < GIT_SAMPLE {
            let git = git_accepts_branch(&branch);
            prop_assert_eq!(git_branch_ok(&branch), git, "oracle and git disagree on {:?}", branch);
        }
    }

    #[test]
    fn commits_are_full_lowercase_hex(commit in hex_like()) {
        prop_assert_eq!(validate_commit(&commit).is_ok(), commit_ok(&commit), "{:?}", commit);
    }
}

// ---------------------------------------------------------------------------
// The hook's stdin

/// git's post-receive input: `<old> <new> <ref>` lines, with the separators
/// and fields disturbed.
fn hook_input() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        3 => hex_like(),
        1 => Just("0".repeat(40)),
        1 => Just(String::new()),
    ];
    let refname = prop_oneof![
        3 => name_like().prop_map(|b| format!("refs/heads/{b}")),
        1 => name_like().prop_map(|b| format!("refs/tags/{b}")),
        1 => name_like(),
    ];
    let sep = prop_oneof![5 => Just(" "), 1 => Just("  "), 1 => Just("\t"), 1 => Just("")];
    let end = prop_oneof![5 => Just("\n"), 1 => Just("\r\n"), 1 => Just(""), 1 => Just(" \n")];
    let line = (field.clone(), sep.clone(), field, sep, refname, end)
        .prop_map(|(a, s1, b, s2, r, e)| format!("{a}{s1}{b}{s2}{r}{e}"));
    prop_oneof![
        4 => prop::collection::vec(line, 0..8).prop_map(|l| l.concat()),
        1 => any::<String>(),
    ]
}

/// The documented parse: lines of exactly three space-separated fields,
/// branches only, no deletions.
fn expected_updates(input: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in input.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() != 3 {
            continue;
        }
        let Some(branch) = fields[2].strip_prefix("refs/heads/") else {
            continue;
        };
        if fields[1].is_empty() || fields[1].chars().all(|c| c == '0') {
            continue;
        }
        out.push((branch.to_string(), fields[1].to_string()));
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hook_input_parses_to_exactly_the_branch_updates(input in hook_input()) {
        let got: Vec<(String, String)> = procurator_ci::repos::hook::parse_updates(&input)
            .into_iter()
            .map(|u| (u.branch, u.commit))
            .collect();
        prop_assert_eq!(got, expected_updates(&input));
    }

    /// The whole hook with any bytes on stdin and no daemon: it returns,
    /// and tells the pusher about each update it could not queue and each
    /// tag it does not build.
    #[test]
    fn hook_never_fails_on_any_input(raw in prop_oneof![
        3 => hook_input().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..400),
    ]) {
        let socket = Path::new("/nonexistent/procurator-ci-fuzz.sock");
        let mut out = Vec::new();
        procurator_ci::repos::hook::post_receive(socket, "repo", &mut raw.as_slice(), &mut out);
        let text = String::from_utf8(out).expect("the hook prints UTF-8");
        let updates = procurator_ci::repos::hook::parse_updates(&String::from_utf8_lossy(&raw));
        let tags = procurator_ci::repos::hook::pushed_tags(&String::from_utf8_lossy(&raw));
        prop_assert_eq!(text.lines().count(), updates.len() + tags.len(), "{}", text);
        for line in text.lines() {
            prop_assert!(
                line.starts_with("procurator-ci: warning: cannot reach")
                    || line.starts_with("procurator-ci: tag "),
                "{}",
                line
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The API, in process

/// The real daemon (nix replaced by a stand-in that never finishes, so
/// builds stay queued) with one repository `r` holding one commit, and a
/// keep-alive HTTP client. Running the binary rather than the router in
/// process costs a loopback round trip per case (the long pass still runs
/// 10^6 cases in minutes) and exercises hyper's parsing too.
struct Api {
    daemon: Daemon,
    agent: ureq::Agent,
    /// A client without connection reuse, for the retry.
    fresh: ureq::Agent,
    token: String,
    commit: String,
    _scratch: tempfile::TempDir,
}

fn api() -> &'static Mutex<Api> {
    static API: OnceLock<Mutex<Api>> = OnceLock::new();
    API.get_or_init(|| Mutex::new(Api::new()))
}

/// The commit of `r` (a function, so that the lock is not held while the
/// strategy built from it runs).
fn the_commit() -> String {
    api()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .commit
        .clone()
}

impl Api {
    fn new() -> Api {
        let scratch = tempfile::tempdir().unwrap();
        let nix = scratch.path().join("nix");
        std::fs::write(&nix, "#!/bin/sh\nexec /bin/sleep 1000\n").unwrap();
        Command::new("chmod").arg("755").arg(&nix).status().unwrap();
        let daemon = Daemon::start(&format!(
            "nix_bin = \"{}\"\nworkers = 1\nkill_grace_secs = 1\nshutdown_timeout_secs = 5\n",
            nix.display()
        ));
        daemon.create_repo("r");
        let bare = daemon.repo_path("r");
        let git = |args: &[&str]| {
            common::run_ok(
                Command::new("git")
                    .arg("--git-dir")
                    .arg(&bare)
                    .args(["-c", "user.name=F", "-c", "user.email=f@example.org"])
                    .args(args)
                    .stdin(std::process::Stdio::null()),
            )
            .trim()
            .to_string()
        };
        let tree = git(&["hash-object", "-t", "tree", "-w", "/dev/null"]);
        let commit = git(&["commit-tree", &tree, "-m", "fuzz"]);
        git(&["update-ref", "refs/keep/fuzz", &commit]);
        // The only branch: a valid name the repository does not have is
        // refused like an invalid one.
        git(&["update-ref", "refs/heads/main", &commit]);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        let fresh = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(0)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        Api {
            token: daemon.token(),
            daemon,
            agent,
            fresh,
            commit,
            _scratch: scratch,
        }
    }

    /// Sends one request; returns status and body (not read for a
    /// successful event stream, which never ends).
    fn send(&self, request: Request<Vec<u8>>) -> (StatusCode, Vec<u8>) {
        let (parts, body) = request.into_parts();
        let uri = format!("{}{}", self.daemon.base(), parts.uri);
        let mut builder = ureq::http::Request::builder().method(parts.method).uri(uri);
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        let sse = parts.uri.path() == "/api/events";
        let request = builder.body(body).unwrap();
        // A server may close a kept-alive connection after any response
        // (hyper does after refusing a body it did not read); a client then
        // retries on a new connection. A second failure is the daemon's.
        let mut response = match self.agent.run(request.clone()) {
            Ok(r) => r,
            Err(_) => match self.fresh.run(request) {
                Ok(r) => r,
                Err(e) => panic!("the daemon did not answer ({e}): {}", self.daemon.log()),
            },
        };
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        if sse && status.is_success() {
            return (status, Vec::new());
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(8 << 20)
            .read_to_vec()
            .unwrap();
        (status, body)
    }

    /// Entries of the repositories directory.
    fn repo_dirs(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.daemon.state().join("repos"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// Every 4xx/5xx must be the documented JSON error.
fn assert_error_shape(status: StatusCode, body: &[u8]) -> Result<(), TestCaseError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        TestCaseError::fail(format!(
            "{status}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        ))
    })?;
    prop_assert!(value["error"]["code"].is_string(), "{}: {}", status, value);
    prop_assert!(
        value["error"]["message"].is_string(),
        "{}: {}",
        status,
        value
    );
    Ok(())
}

/// JSON of any shape, with the API's field names likely.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        name_like().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    3 => prop::sample::select(&["repo", "branch", "commit", "author", "name", "description"][..])
                        .prop_map(str::to_string),
                    1 => name_like(),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A build request with each field either plausible, hostile or mistyped.
fn build_body(commit: String) -> BoxedStrategy<Value> {
    let field = move |good: Value| {
        prop_oneof![
            4 => Just(good),
            3 => name_like().prop_map(Value::from),
            1 => json_value(),
        ]
    };
    (
        field(json!("r")),
        field(json!("main")),
        field(json!(commit)),
        prop::option::of(field(json!("Ann <ann@example.org>"))),
        prop::option::of((name_like(), json_value())),
    )
        .prop_map(|(repo, branch, commit, author, extra)| {
            let mut body = json!({"repo": repo, "branch": branch, "commit": commit});
            if let Some(author) = author {
                body["author"] = author;
            }
            if let Some((key, value)) = extra {
                body[key] = value;
            }
            body
        })
        .boxed()
}

/// The raw bytes of a body: well-formed JSON, or broken in some way.
fn raw_body(json: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => json.clone().prop_map(|v| v.to_string().into_bytes()),
        1 => json.clone().prop_flat_map(|v| {
            let bytes = v.to_string().into_bytes();
            let len = bytes.len();
            (Just(bytes), 0..=len).prop_map(|(b, cut)| b[..cut].to_vec())
        }),
        1 => (json, any::<u8>(), any::<prop::sample::Index>()).prop_map(|(v, byte, at)| {
            let mut bytes = v.to_string().into_bytes();
            let i = at.index(bytes.len() + 1);
            bytes.insert(i, byte);
            bytes
        }),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json"),
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("application/jsonx"),
    Some("multipart/form-data; boundary=x"),
    None,
];

/// Whether `body` is a build request the daemon must accept: `main` is the
/// only branch of `r`.
fn acceptable_build(body: &[u8], commit: &str) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let known = ["repo", "branch", "commit", "author"];
    map.keys().all(|k| known.contains(&k.as_str()))
        && map.get("repo") == Some(&json!("r"))
        && map.get("branch") == Some(&json!("main"))
        && map.get("commit") == Some(&json!(commit))
        && match map.get("author") {
            None | Some(Value::Null) => true,
            Some(Value::String(a)) => a.len() <= 512 && !a.chars().any(char::is_control),
            Some(_) => false,
        }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn build_requests_are_accepted_exactly_when_valid(
        body in raw_body(build_body(the_commit())),
        content_type in prop::sample::select(CONTENT_TYPES),
        auth in prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    ) {
        let api = api().lock().unwrap_or_else(|e| e.into_inner());
        let mut request = Request::post("/api/builds");
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        request = match auth {
            0 => request.header("authorization", format!("Bearer {}", api.token)),
            1 => request.header("authorization", "Bearer wrong-token-wrong-token"),
            _ => request,
        };
        let (status, reply) = api.send(request.body(body.clone()).unwrap());
        let json_type = content_type.is_some_and(|c| c.starts_with("application/json") && !c.starts_with("application/jsonx"));
        let must_accept = auth == 0 && json_type && acceptable_build(&body, &api.commit);
        prop_assert!(status.as_u16() < 500, "{}: {:?}", status, String::from_utf8_lossy(&reply));
        if must_accept {
            prop_assert!(matches!(status.as_u16(), 200 | 201), "{}: {:?} for {:?}", status, String::from_utf8_lossy(&reply), String::from_utf8_lossy(&body));
            let build: Value = serde_json::from_slice(&reply).unwrap();
            prop_assert_eq!(&build["repo"], "r");
            prop_assert_eq!(&build["commit"], &json!(api.commit));
            prop_assert_eq!(&build["branch"], "main");
        } else {
            prop_assert!(status.is_client_error(), "{} for {:?}: {:?}", status, String::from_utf8_lossy(&body), String::from_utf8_lossy(&reply));
            assert_error_shape(status, &reply)?;
        }
    }

    #[test]
    fn repo_requests_create_only_valid_names_inside_the_base(
        body in raw_body(prop_oneof![
            3 => (name_like(), prop::option::of(name_like())).prop_map(|(n, d)| match d {
                Some(d) => json!({"name": n, "description": d}),
                None => json!({"name": n}),
            }),
            1 => json_value(),
        ].boxed()),
    ) {
        let api = api().lock().unwrap_or_else(|e| e.into_inner());
        let before = api.repo_dirs();
        let request = Request::post("/api/repos")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", api.token))
            .body(body.clone())
            .unwrap();
        let (status, reply) = api.send(request);
        prop_assert!(status.as_u16() < 500, "{}: {:?}", status, String::from_utf8_lossy(&reply));
        let after = api.repo_dirs();
        if status == StatusCode::CREATED {
            let created: Value = serde_json::from_slice(&reply).unwrap();
            let name = created["name"].as_str().unwrap();
            prop_assert!(repo_name_ok(name), "created {:?}", name);
            let added: Vec<_> = after.difference(&before).cloned().collect();
            prop_assert_eq!(added, vec![format!("{name}.git")]);
            // Removed again, so that a long pass neither fills the disk nor
            // slows down with a growing directory.
            let delete = Request::delete(format!("/api/repos/{name}?confirm={name}"))
                .header("authorization", format!("Bearer {}", api.token))
                .body(Vec::new())
                .unwrap();
            let (status, reply) = api.send(delete);
            prop_assert_eq!(status, StatusCode::NO_CONTENT, "{:?}", String::from_utf8_lossy(&reply));
            prop_assert_eq!(&api.repo_dirs(), &before);
        } else {
            assert_error_shape(status, &reply)?;
            prop_assert_eq!(&before, &after, "a refused request changed the repositories directory");
        }
        for entry in &api.repo_dirs() {
            let name = entry.strip_suffix(".git");
            prop_assert!(name.is_some_and(repo_name_ok), "unexpected entry {:?}", entry);
        }
    }

    #[test]
    fn listing_queries_answer_200_or_a_json_400(
        params in prop::collection::vec(
            (
                prop_oneof![
                    4 => prop::sample::select(&["repo", "branch", "status", "limit", "before"][..]).prop_map(str::to_string),
                    1 => name_like(),
                ],
                prop_oneof![
                    2 => name_like(),
                    2 => any::<i64>().prop_map(|n| n.to_string()),
                    1 => Just("1e3".to_string()),
                    1 => Just("' OR 1=1 --".to_string()),
                    1 => Just("99999999999999999999999".to_string()),
                ],
            ),
            0..4,
        ),
        path in prop::sample::select(&["/api/builds", "/api/events", "/api/repos/r/badge.svg"][..]),
    ) {
        let api = api().lock().unwrap_or_else(|e| e.into_inner());
        let query: String = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let uri = format!("{path}?{query}");
        let (status, reply) = api.send(Request::get(&uri).body(Vec::new()).unwrap());
        prop_assert!(status == StatusCode::OK || status.is_client_error(), "{} for {}: {:?}", status, uri, String::from_utf8_lossy(&reply));
        if status != StatusCode::OK {
            assert_error_shape(status, &reply)?;
        } else if path == "/api/builds" {
            let listing: Value = serde_json::from_slice(&reply).unwrap();
            prop_assert!(listing["builds"].is_array());
        }
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Configuration files

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

// ---------------------------------------------------------------------------
// The read cookie

fn read_token() -> &'static procurator_ci::http::auth::Token {
    // Its own directory: the configuration target checks that loading
    // creates nothing in scratch(), while this one may be creating the token.
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static TOKEN: OnceLock<procurator_ci::http::auth::Token> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
        procurator_ci::http::auth::Token::load(None, &dir.path().join("api-token"))
            .unwrap()
            .0
    })
}

/// One `name=value` of a `Cookie` header: names near ours, values of
/// printable ASCII (hex among them), stray spaces and `=`.
fn cookie_pair() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("procurator_ci_read".to_string()),
        Just("procurator_ci_read ".to_string()),
        Just("Procurator_ci_read".to_string()),
        Just("procurator_ci_rea".to_string()),
        "[a-z_]{1,20}",
    ];
    let value = prop_oneof!["[0-9a-f]{0,70}", "[ -:<-~]{0,40}"];
    (name, value, any::<bool>()).prop_map(|(n, v, spaced)| {
        if spaced {
            format!(" {n}= {v} ")
        } else {
            format!("{n}={v}")
        }
    })
}

/// The documented rule: some `;`-separated pair of the header is exactly
/// `procurator_ci_read=<the token's cookie>`, give or take the spaces
/// around the pair.
fn cookie_ok(header: &str, expected: &str) -> bool {
    header
        .split(';')
        .any(|pair| pair.trim() == format!("procurator_ci_read={expected}"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cookie_headers_admit_only_the_exact_read_cookie(
        before in prop::collection::vec(cookie_pair(), 0..4),
        after in prop::collection::vec(cookie_pair(), 0..4),
        change in prop::option::of((any::<prop::sample::Index>(), "[ -~]")),
        noise in "\\PC{0,120}",
    ) {
        let token = read_token();
        let expected = token.read_cookie();
        // The right value, or one with a character replaced.
        let mut value = expected.to_string();
        if let Some((at, with)) = change {
            let i = at.index(value.len());
            value.replace_range(i..=i, &with);
        }
        let mut pairs = before;
        pairs.push(format!("procurator_ci_read={value}"));
        pairs.extend(after);
        for header in [pairs.join(";"), pairs.join("; "), noise] {
            prop_assert_eq!(
                token.accepts_read_cookie(Some(&header)),
                cookie_ok(&header, expected),
                "{:?}", header
            );
        }
        if value == expected {
            prop_assert!(token.accepts_read_cookie(Some(&pairs.join("; "))));
        }
    }
}
