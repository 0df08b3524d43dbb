//! The API, in process: JSON bodies and query strings through the real
//! router.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::{self, Daemon};
use crate::names::repo_name_ok;
use crate::{config, name_like};

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
