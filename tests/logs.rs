//! Reading logs over the API as people and the page do: without terminal
//! escapes unless asked, the end first (`tail`) or a byte range (`limit`)
//! with line numbers and the first error, a first line that reproduces the
//! build in a shell; and the commit message every build carries.

mod common;

use std::process::Command;

use common::{Daemon, NIX_CONFIG, Work, git, nonce, passing};

/// A check that prints a coloured error among `lines` numbered lines, then
/// fails.
fn coloured_failure(lines: u32, error_at: u32) -> String {
    format!(
        "echo {}; i=0; while [ $i -lt {lines} ]; do \
         if [ $i -eq {error_at} ]; then printf '\\033[31;1merror:\\033[0m coloured at %s\\n' $i; \
         else echo \"plain line $i\"; fi; i=$((i+1)); done; exit 1",
        nonce("coloured")
    )
}

/// A GET: status, headers (lower-case names) and body.
fn get_text(
    daemon: &Daemon,
    path: &str,
) -> (u16, std::collections::HashMap<String, String>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .get(format!("{}{path}", daemon.base()))
        .call()
        .unwrap();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = response.into_body().read_to_string().unwrap();
    (status, headers, text)
}

#[test]
fn logs_read_clean_from_their_end_and_reproduce_the_build() {
    let daemon = Daemon::start("");
    daemon.create_repo("logs");
    let work = Work::clone(&daemon.repo_path("logs"));
    std::fs::write(
        work.path().join("flake.nix"),
        common::flake(&[
            ("colour", &coloured_failure(3000, 1234)),
            ("fine", &passing(&nonce("fine"))),
        ]),
    )
    .unwrap();
    git(work.path(), &["add", "-A"]);
    git(
        work.path(),
        &[
            "commit",
            "-q",
            "-m",
            "Colour the errors\n\nA body that explains\nover two lines.",
        ],
    );
    work.push(&["HEAD:main"]);
    let builds = daemon.builds();
    let id = builds[0]["id"].as_i64().unwrap();
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "failed", "{build}");

    // The commit message is in the build, its subject on every list.
    assert_eq!(build["subject"], "Colour the errors");
    assert_eq!(
        build["message"],
        "Colour the errors\n\nA body that explains\nover two lines."
    );
    assert_eq!(daemon.builds()[0]["subject"], "Colour the errors");
    let (_, repos) = daemon.get("/api/repos");
    let repo = &repos["repos"][0];
    assert_eq!(repo["last_build"]["id"], id, "{repos}");
    assert_eq!(repo["last_build"]["status"], "failed");
    assert_eq!(repo["last_build"]["subject"], "Colour the errors");
    let (_, detail) = daemon.get("/api/repos/logs");
    assert_eq!(
        detail["branches"][0]["latest_build"]["subject"],
        "Colour the errors"
    );

    // The raw log has no escapes unless asked for; offsets count stored bytes.
    let (status, headers, plain) = get_text(&daemon, &format!("/api/builds/{id}/logs"));
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/plain"));
    assert!(!plain.contains('\x1b'), "no escapes: {plain:.300}");
    assert!(
        plain.contains("colour> error: coloured at 1234"),
        "{plain:.300}"
    );
    let (_, _, raw) = get_text(&daemon, &format!("/api/builds/{id}/logs?ansi=1"));
    assert!(raw.contains("\x1b[31;1merror:\x1b[0m coloured at 1234"));
    assert!(raw.len() > plain.len());

    // The first line is a command that runs the same checks in a shell.
    let first = plain.lines().next().unwrap();
    assert!(first.starts_with("nix flake check "), "{first}");
    assert!(!first.contains("internal-json"), "{first}");
    assert!(first.contains("'git+file://"), "quoted: {first}");
    let run = Command::new("sh")
        .args(["-c", first])
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && said.contains("coloured at 1234"),
        "pasted into a shell, the first line runs the failing check: {said:.2000}"
    );

    // The end of the log: a line start, its number, the first error.
    let (status, headers, tail) =
        get_text(&daemon, &format!("/api/builds/{id}/logs?ansi=1&tail=2000"));
    assert_eq!(status, 200);
    assert!(tail.len() <= 2000 && raw.ends_with(&tail), "{tail:.200}");
    let offset: usize = headers["x-log-offset"].parse().unwrap();
    assert_eq!(offset + tail.len(), raw.len());
    assert_eq!(raw.as_bytes()[offset - 1], b'\n', "starts at a line");
    let line: usize = headers["x-log-line"].parse().unwrap();
    assert_eq!(line, raw[..offset].matches('\n').count() + 1);
    assert_eq!(headers["x-log-size"], raw.len().to_string());
    let error_line: usize = headers["x-log-first-error-line"].parse().unwrap();
    let error_offset: usize = headers["x-log-first-error-offset"].parse().unwrap();
    assert!(
        raw[error_offset..].starts_with("colour> \x1b[31;1merror:"),
        "{:?}",
        &raw[error_offset..error_offset + 40]
    );
    assert_eq!(error_line, raw[..error_offset].matches('\n').count() + 1);
    let (_, _, stripped_tail) = get_text(&daemon, &format!("/api/builds/{id}/logs?tail=2000"));
    assert!(!stripped_tail.contains('\x1b') && stripped_tail.len() <= tail.len());

    // A byte range, and where it starts.
    let (status, headers, range) = get_text(
        &daemon,
        &format!("/api/builds/{id}/logs?ansi=1&offset={error_offset}&limit=100"),
    );
    assert_eq!(status, 200);
    assert_eq!(range, raw[error_offset..error_offset + 100]);
    assert_eq!(headers["x-log-line"], error_line.to_string());
    assert_eq!(headers["x-log-offset"], error_offset.to_string());

    // Bad windows are refused with the field at fault, and nothing else.
    for (query, field) in [
        ("tail=0", "tail"),
        ("tail=99999999999", "tail"),
        ("tail=10&offset=5", "tail"),
        ("tail=10&limit=5", "tail"),
        ("tail=10&follow=true", "tail"),
        ("limit=0", "limit"),
        ("limit=10&follow=true", "limit"),
        ("ansi=yes", "ansi"),
        ("tail=10&attempt=7", "attempt"),
    ] {
        let (status, body) = daemon.get(&format!("/api/builds/{id}/logs?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, body) = daemon.get("/api/builds/999999/logs?tail=10");
    assert_eq!(status, 404, "{body}");
}
