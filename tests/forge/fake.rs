//! A fake forge on loopback: it checks every request against the forge's
//! documented commit status API (method, path, headers, JSON fields,
//! allowed states, lengths, contexts), records it, and answers as the
//! forge would, or as a test scripts it (500, 429 with `Retry-After`).
//!
//! GitHub: `POST /repos/{owner}/{repo}/statuses/{sha}` with `Accept:
//! application/vnd.github+json`, `Authorization: Bearer`,
//! `X-GitHub-Api-Version`, a `User-Agent`; states pending, success,
//! failure, error; description ≤ 140 characters; at most 1,000 statuses
//! per sha and context. Gitea and Forgejo: `POST
//! /api/v1/repos/{owner}/{repo}/statuses/{sha}` with `Authorization: token`;
//! states pending, success, error, failure, warning. GitLab: `POST
//! /api/v4/projects/{url-encoded path}/statuses/{sha}` with
//! `PRIVATE-TOKEN`; `name` (not `context`); states pending, running,
//! success, failed, canceled; posting the state a pending or running
//! status already has is refused with 400 "Cannot transition status".

// Shared with the browser tests, which use part of it.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Github,
    Gitea,
    Forgejo,
    Gitlab,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Github => "github",
            Kind::Gitea => "gitea",
            Kind::Forgejo => "forgejo",
            Kind::Gitlab => "gitlab",
        }
    }

    /// The API root the daemon is configured with.
    pub fn api_path(self) -> &'static str {
        match self {
            Kind::Github => "",
            Kind::Gitea | Kind::Forgejo => "/api/v1",
            Kind::Gitlab => "/api/v4",
        }
    }

    fn states(self) -> &'static [&'static str] {
        match self {
            Kind::Github => &["pending", "success", "failure", "error"],
            Kind::Gitea | Kind::Forgejo => &["pending", "success", "error", "failure", "warning"],
            Kind::Gitlab => &["pending", "running", "success", "failed", "canceled"],
        }
    }
}

/// One request the fake accepted.
#[derive(Debug, Clone)]
pub struct Post {
    pub sha: String,
    pub context: String,
    pub state: String,
    pub description: String,
    pub target_url: String,
    /// The HTTP status it was answered with.
    pub answered: u16,
    pub at: Instant,
}

/// A scripted answer: status and `Retry-After` seconds.
pub type Scripted = (u16, Option<u64>);

#[derive(Default)]
struct Shared {
    posts: Vec<Post>,
    violations: Vec<String>,
    script: VecDeque<Scripted>,
    /// GitLab: each (sha, name)'s current state.
    current: HashMap<(String, String), String>,
    /// Statuses created per (sha, context).
    counts: HashMap<(String, String), usize>,
}

pub struct Fake {
    pub kind: Kind,
    pub port: u16,
    pub owner_repo: String,
    token: String,
    shared: Arc<Mutex<Shared>>,
}

impl Fake {
    /// A fake `kind` forge on 127.0.0.1 (`port` 0: any free one) that
    /// accepts statuses for `owner_repo` posted with `token`.
    pub fn start(kind: Kind, port: u16, owner_repo: &str, token: &str) -> Fake {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let fake = Fake {
            kind,
            port,
            owner_repo: owner_repo.to_string(),
            token: token.to_string(),
            shared: Arc::default(),
        };
        let (shared, owner_repo, token) = (
            fake.shared.clone(),
            fake.owner_repo.clone(),
            fake.token.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (shared, owner_repo, token) =
                    (shared.clone(), owner_repo.clone(), token.clone());
                std::thread::spawn(move || serve(kind, stream, &shared, &owner_repo, &token));
            }
        });
        fake
    }

    /// `forge_api_url` for the daemon.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.kind.api_path())
    }

    /// The next requests are answered so, in order.
    pub fn script(&self, answers: &[Scripted]) {
        self.shared.lock().unwrap().script.extend(answers);
    }

    pub fn posts(&self) -> Vec<Post> {
        self.shared.lock().unwrap().posts.clone()
    }

    /// Accepted posts (2xx) for `sha`, in arrival order.
    pub fn accepted(&self, sha: &str) -> Vec<Post> {
        self.posts()
            .into_iter()
            .filter(|p| p.sha == sha && (200..300).contains(&p.answered))
            .collect()
    }

    /// The states `context` of `sha` was set to, in order.
    pub fn states(&self, sha: &str, context: &str) -> Vec<String> {
        self.accepted(sha)
            .into_iter()
            .filter(|p| p.context == context)
            .map(|p| p.state)
            .collect()
    }

    /// Requests that broke the documented format; none is expected.
    pub fn assert_no_violations(&self) {
        let violations = self.shared.lock().unwrap().violations.clone();
        assert!(
            violations.is_empty(),
            "{} requests broke the documented format: {violations:#?}",
            self.kind.name()
        );
    }
}

fn serve(kind: Kind, stream: TcpStream, shared: &Mutex<Shared>, owner_repo: &str, token: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let Some((method, path, headers, body)) = read(&stream) else {
        return;
    };
    let checked = check(kind, &method, &path, &headers, &body, owner_repo, token);
    let mut shared = shared.lock().unwrap();
    let (status, retry_after, text) = match checked {
        Err(violation) => {
            shared.violations.push(violation.clone());
            (422, None, format!("{{\"message\":{violation:?}}}"))
        }
        Ok(post) => {
            let scripted = shared.script.pop_front();
            let key = (post.sha.clone(), post.context.clone());
            let (status, retry_after, text) = match scripted {
                Some((status, retry_after)) => (
                    status,
                    retry_after,
                    "{\"message\":\"scripted\"}".to_string(),
                ),
                None if shared.counts.get(&key).copied().unwrap_or(0) >= 1000 => {
                    shared
                        .violations
                        .push(format!("more than 1000 statuses for {key:?}"));
                    (422, None, "{\"message\":\"This SHA and context has reached the maximum number of statuses.\"}".into())
                }
                None if kind == Kind::Gitlab
                    && shared.current.get(&key).is_some_and(|s| {
                        s == &post.state && (s == "pending" || s == "running")
                    }) =>
                {
                    // What GitLab answers; the daemon never repeats a state
                    // in these tests, so it counts as a violation too.
                    shared
                        .violations
                        .push(format!("{} repeated for {key:?}", post.state));
                    (
                        400,
                        None,
                        format!(
                            "{{\"message\":\"Cannot transition status via :{0} from :{0}\"}}",
                            post.state
                        ),
                    )
                }
                None => (201, None, "{}".to_string()),
            };
            if (200..300).contains(&status) {
                *shared.counts.entry(key.clone()).or_default() += 1;
                shared.current.insert(key, post.state.clone());
            }
            shared.posts.push(Post {
                answered: status,
                ..post
            });
            (status, retry_after, text)
        }
    };
    drop(shared);
    let mut stream = stream;
    let retry = retry_after
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{retry}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

type Headers = Vec<(String, String)>;

fn read(stream: &TcpStream) -> Option<(String, String, Headers, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, path, headers, body))
}

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn check(
    kind: Kind,
    method: &str,
    path: &str,
    headers: &Headers,
    body: &[u8],
    owner_repo: &str,
    token: &str,
) -> Result<Post, String> {
    let fail = |what: String| Err(format!("{method} {path}: {what}"));
    if method != "POST" {
        return fail("not a POST".into());
    }
    let repo_part = match kind {
        Kind::Gitlab => format!(
            "/api/v4/projects/{}/statuses/",
            owner_repo.replace('/', "%2F")
        ),
        Kind::Gitea | Kind::Forgejo => format!("/api/v1/repos/{owner_repo}/statuses/"),
        Kind::Github => format!("/repos/{owner_repo}/statuses/"),
    };
    let Some(sha) = path.strip_prefix(&repo_part) else {
        return fail(format!("path is not {repo_part}{{sha}}"));
    };
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return fail(format!("{sha:?} is not a full commit id"));
    }
    if header(headers, "content-type") != Some("application/json") {
        return fail("Content-Type is not application/json".into());
    }
    if header(headers, "user-agent").is_none_or(str::is_empty) {
        return fail("no User-Agent".into());
    }
    let auth_ok = match kind {
        Kind::Github => {
            header(headers, "accept") == Some("application/vnd.github+json")
                && header(headers, "authorization") == Some(&format!("Bearer {token}"))
                && header(headers, "x-github-api-version") == Some("2022-11-28")
        }
        Kind::Gitea | Kind::Forgejo => {
            header(headers, "authorization") == Some(&format!("token {token}"))
        }
        Kind::Gitlab => header(headers, "private-token") == Some(token),
    };
    if !auth_ok {
        return fail(format!("headers are not {}'s: {headers:?}", kind.name()));
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return fail("the body is not a JSON object".into());
    };
    let label = if kind == Kind::Gitlab {
        "name"
    } else {
        "context"
    };
    for key in fields.keys() {
        if !["state", "target_url", "description", label].contains(&key.as_str()) {
            return fail(format!("unknown field {key:?}"));
        }
    }
    let text = |key: &str| {
        fields
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (state, context, description, target_url) = (
        text("state"),
        text(label),
        text("description"),
        text("target_url"),
    );
    if !kind.states().contains(&state.as_str()) {
        return fail(format!("state {state:?} is not one of {:?}", kind.states()));
    }
    if description.chars().count() > 140 {
        return fail(format!(
            "description longer than 140 characters: {description:?}"
        ));
    }
    if context != "procurator-ci" && !context.starts_with("procurator-ci/") {
        return fail(format!(
            "context {context:?} is not procurator-ci[/<check>]"
        ));
    }
    if !target_url.starts_with("http://") && !target_url.starts_with("https://") {
        return fail(format!("target_url {target_url:?} is not a URL"));
    }
    Ok(Post {
        sha: sha.to_string(),
        context,
        state,
        description,
        target_url,
        answered: 0,
        at: Instant::now(),
    })
}
