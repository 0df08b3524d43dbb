//! The client side of the post-receive hook: reads git's ref updates, asks
//! the daemon over its Unix socket for one build per updated branch, prints
//! a line per build to the pusher, then runs the repository's chained hooks.
//! It never fails or hangs a push.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long the hook may spend talking to the daemon in total.
const BUDGET: Duration = Duration::from_secs(4);

/// One ref update from git's post-receive input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub branch: String,
    pub commit: String,
}

/// The branch updates worth a build: `refs/heads/*` whose new value is not
/// all zeros (a deletion). Tags and other refs, and malformed lines, are
/// skipped.
pub fn parse_updates(input: &str) -> Vec<Update> {
    input
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let (_old, new, name) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            let branch = name.strip_prefix("refs/heads/")?;
            if new.is_empty() || new.bytes().all(|b| b == b'0') {
                return None;
            }
            Some(Update {
                branch: branch.to_string(),
                commit: new.to_string(),
            })
        })
        .collect()
}

/// Tags created or moved by the push (deletions are left out): they get a
/// word that only branches are built.
pub fn pushed_tags(input: &str) -> Vec<String> {
    input
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let (_old, new, name) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || new.is_empty() || new.bytes().all(|b| b == b'0') {
                return None;
            }
            name.strip_prefix("refs/tags/")
                .filter(|tag| !tag.is_empty())
                .map(String::from)
        })
        .collect()
}

/// Whether the input deletes a branch: the daemon then reads the branch
/// heads again (it learns of new heads from the build requests).
pub fn deletes_branches(input: &str) -> bool {
    input.lines().any(|line| {
        let mut parts = line.split(' ');
        matches!(
            (parts.next(), parts.next(), parts.next(), parts.next()),
            (Some(_), Some(new), Some(name), None)
                if name.starts_with("refs/heads/")
                    && !new.is_empty()
                    && new.bytes().all(|b| b == b'0')
        )
    })
}

/// Runs the hook; always returns normally so that git sees success.
pub fn post_receive(socket: &Path, repo: &str, input: &mut impl Read, out: &mut impl Write) {
    let mut raw = Vec::new();
    let _ = input.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let deadline = Instant::now() + BUDGET;
    for update in parse_updates(&text) {
        let short = update.commit.get(..7).unwrap_or(&update.commit);
        let body =
            json!({"repo": repo, "branch": update.branch, "commit": update.commit}).to_string();
        match request(socket, "/api/builds", &body, deadline) {
            Ok((status, reply)) if status == 201 || status == 200 => {
                let id = reply.get("id").and_then(Value::as_i64).unwrap_or_default();
                let url = reply.get("url").and_then(Value::as_str).unwrap_or_default();
                let built_on = reply.get("branch").and_then(Value::as_str);
                let state = reply.get("status").and_then(Value::as_str);
                let verb = match (status, state) {
                    (201, _) => "queued",
                    (_, Some("success")) => "already passed",
                    (_, Some("failed")) => "already failed",
                    _ => "already queued",
                };
                // One build per commit and repository: a commit another
                // branch's build stands for is not built again.
                let shared = match built_on {
                    Some(other) if other != update.branch => {
                        format!(" (the same commit's build on {other})")
                    }
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "procurator-ci: build #{id} {verb} for {} ({short}){shared} — {url}",
                    update.branch
                );
            }
            Ok((status, reply)) => {
                let message = reply
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                let _ = writeln!(
                    out,
                    "procurator-ci: warning: no build for {} ({short}): the daemon refused it ({status}): {message}",
                    update.branch
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "procurator-ci: warning: cannot reach the procurator-ci daemon at {} ({e}); \
                     the push is kept: the daemon looks for unbuilt branch heads every \
                     scan_interval_secs (30 s unless configured) while it runs, and when it \
                     starts, and will queue {} ({short}) then",
                    socket.display(),
                    update.branch
                );
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    for tag in pushed_tags(&text) {
        let _ = writeln!(
            out,
            "procurator-ci: tag {} is not built (only branches are); push its commit to a branch to build it",
            tag.escape_debug()
        );
    }
    if deletes_branches(&text) {
        // Best effort: the periodic scan reads the heads again anyway.
        let _ = request(socket, &format!("/api/repos/{repo}/scan"), "", deadline);
    }
    let _ = out.flush();
    run_chained(&raw, out);
}

/// One HTTP/1.1 request over the Unix socket; returns status and JSON body.
fn request(
    socket: &Path,
    path: &str,
    body: &str,
    deadline: Instant,
) -> std::io::Result<(u16, Value)> {
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?;
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: procurator-ci\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_response(&response)
}

fn parse_response(response: &[u8]) -> std::io::Result<(u16, Value)> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("incomplete HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("malformed status line"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let raw = &response[split + 4..];
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// The body of a chunked HTTP/1.1 message (`Transfer-Encoding: chunked`);
/// a malformed or truncated encoding ends it where it breaks.
pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[end + 2..];
        if size == 0 || raw.len() < size {
            break;
        }
        body.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or_default();
    }
    body
}

/// Runs every executable in `hooks/post-receive.d/` with the same input,
/// in name order; their failures are reported, never fatal to the push.
fn run_chained(input: &[u8], out: &mut impl Write) {
    let git_dir = std::env::var_os("GIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = git_dir
        .join("hooks")
        .join(crate::repos::install::CHAINED_HOOKS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut hooks: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .collect();
    hooks.sort();
    for hook in hooks {
        let child = std::process::Command::new(&hook)
            .stdin(std::process::Stdio::piped())
            .spawn();
        let result = child.and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(input);
            }
            child.wait()
        });
        match result {
            Ok(status) if status.success() => {}
            Ok(status) => {
                let _ = writeln!(
                    out,
                    "procurator-ci: warning: hook {} exited with {status}",
                    hook.display()
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "procurator-ci: warning: cannot run hook {}: {e}",
                    hook.display()
                );
            }
        }
    }
}

/// Reads git's input from stdin and runs the hook.
/// The `pre-receive` hook: refuses the whole push when one of its branches
/// has a name procurator-ci would not build, saying which and why, so that
/// nothing is accepted and then not built. Returns whether git may go on.
pub fn pre_receive(input: &mut impl Read, out: &mut impl Write) -> bool {
    let mut raw = Vec::new();
    let _ = input.read_to_end(&mut raw);
    let updates = parse_updates(&String::from_utf8_lossy(&raw));
    let mut refused = Vec::new();
    for update in &updates {
        if let Err(reason) = crate::repos::validate_branch(&update.branch) {
            refused.push(update.branch.as_str());
            let _ = writeln!(
                out,
                "procurator-ci: refusing the push: branch {:?} cannot be built: its name {reason}",
                update.branch
            );
        }
    }
    // git refuses a push whole: a good branch beside a refused one is not
    // stored either, and its pusher is told why rather than left guessing.
    let refused_names = refused
        .iter()
        .map(|b| format!("{b:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let good = updates
        .iter()
        .filter(|u| !refused.is_empty() && !refused.contains(&u.branch.as_str()));
    for update in good {
        let _ = writeln!(
            out,
            "procurator-ci: branch {:?} is not pushed either: a push is refused whole, and it \
             carries {refused_names}; push {:?} on its own, or rename the refused branch",
            update.branch, update.branch
        );
    }
    let _ = out.flush();
    refused.is_empty()
}

/// Runs the `pre-receive` hook on this process's stdin and stdout.
pub fn pre_receive_main() -> bool {
    pre_receive(&mut std::io::stdin().lock(), &mut std::io::stdout())
}

/// Runs the `post-receive` hook on this process's stdin and stdout.
pub fn main(socket: &Path, repo: &str) {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let _ = input.fill_buf();
    post_receive(socket, repo, &mut input, &mut std::io::stdout());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pre_receive_refuses_only_names_that_cannot_be_built() {
        let zero = "0".repeat(40);
        let a = "a".repeat(40);
        let mut out = Vec::new();
        let ok = format!("{zero} {a} refs/heads/main\n{a} {zero} refs/heads/bad..gone\n");
        assert!(pre_receive(&mut ok.as_bytes(), &mut out));
        assert!(out.is_empty());
        let bad = format!("{zero} {a} refs/heads/main\n{zero} {a} refs/heads/feature/ä-x\n");
        assert!(!pre_receive(&mut bad.as_bytes(), &mut out));
        let said = String::from_utf8(out).unwrap();
        assert_eq!(
            said,
            "procurator-ci: refusing the push: branch \"feature/ä-x\" cannot be built: its name \
             must be printable ASCII, so that no branch can pass for another (found 'ä' U+00E4)\n\
             procurator-ci: branch \"main\" is not pushed either: a push is refused whole, and it \
             carries \"feature/ä-x\"; push \"main\" on its own, or rename the refused branch\n"
        );
        let mut out = Vec::new();
        let dash = format!("{zero} {a} refs/heads/-x\n");
        assert!(!pre_receive(&mut dash.as_bytes(), &mut out));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "procurator-ci: refusing the push: branch \"-x\" cannot be built: its name must not \
             have a path component starting with '-' (git and other tools would read it as an \
             option)\n"
        );
    }

    #[test]
    fn branches_only_and_no_deletions() {
        let zero = "0".repeat(40);
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let input = format!(
            "{zero} {a} refs/heads/main\n{a} {b} refs/heads/feature/x\n{a} {zero} refs/heads/gone\n\
             {zero} {a} refs/tags/v1\n{a} {b} refs/notes/commits\ngarbage\n{a} {b} refs/heads/x extra\n"
        );
        assert_eq!(
            parse_updates(&input),
            vec![
                Update {
                    branch: "main".into(),
                    commit: a.clone()
                },
                Update {
                    branch: "feature/x".into(),
                    commit: b.clone()
                },
            ]
        );
        assert_eq!(pushed_tags(&input), ["v1"]);
        assert!(pushed_tags(&format!("{a} {zero} refs/tags/gone\n")).is_empty());
    }

    #[test]
    fn branch_deletions_are_noticed_and_nothing_else() {
        let zero = "0".repeat(40);
        let a = "a".repeat(40);
        assert!(deletes_branches(&format!("{a} {zero} refs/heads/gone\n")));
        assert!(!deletes_branches(&format!("{a} {zero} refs/tags/v1\n")));
        assert!(!deletes_branches(&format!("{zero} {a} refs/heads/new\n")));
        assert!(!deletes_branches(&format!(
            "{a} {zero} refs/heads/x extra\n"
        )));
    }

    #[test]
    fn unreachable_daemon_warns_and_returns() {
        let dir = tempfile::tempdir().unwrap();
        let input = format!("{} {} refs/heads/main\n", "0".repeat(40), "a".repeat(40));
        let mut out = Vec::new();
        let started = Instant::now();
        post_receive(
            &dir.path().join("absent.sock"),
            "demo",
            &mut input.as_bytes(),
            &mut out,
        );
        assert!(started.elapsed() < BUDGET);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("procurator-ci: warning: cannot reach"),
            "{text}"
        );
        assert!(text.contains("main (aaaaaaa)"), "{text}");
    }

    #[test]
    fn responses_plain_and_chunked() {
        let plain = b"HTTP/1.1 201 Created\r\ncontent-length: 9\r\n\r\n{\"id\":42}";
        assert_eq!(parse_response(plain).unwrap(), (201, json!({"id": 42})));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n{\"id\r\n5\r\n\":42}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, json!({"id": 42})));
        assert!(parse_response(b"garbage").is_err());
    }

    proptest! {
        #[test]
        fn parser_never_yields_tags_deletions_or_spaces(input in "[ -~\n]{0,300}") {
            for update in parse_updates(&input) {
                prop_assert!(!update.branch.contains(' '));
                prop_assert!(!update.commit.bytes().all(|b| b == b'0'));
                prop_assert!(!update.commit.is_empty());
            }
        }
    }
}
