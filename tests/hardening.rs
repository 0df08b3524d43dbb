//! Browser-facing and local hardening, against the real binary: the `Host`
//! allow-list, `nosniff` on every answer, exactly one `Authorization`
//! header taken as sent, validated request ids, 401s counted and logged at
//! a bounded rate, the daemon's own file modes, and a token file others can
//! read refused. Beside it (issue 25): no credential in any answer or log
//! (`hardening/secrets.rs`) or on nix's command line
//! (`hardening/push_credentials.rs`), fair NAR downloads and room for short requests
//! while streams are held (`hardening/streams.rs`), and log lines that
//! cannot be forged (`hardening/log_lines.rs`).

mod common;
#[path = "hardening/log_lines.rs"]
mod log_lines;
#[path = "hardening/push_credentials.rs"]
mod push_credentials;
#[path = "hardening/secrets.rs"]
mod secrets;
#[path = "hardening/streams.rs"]
mod streams;
// Issue 25's attacks on what nix evaluates and what the cache signs.
#[path = "hardening/evaluation.rs"]
mod evaluation;
#[path = "hardening/signing.rs"]
mod signing;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::Daemon;

/// One raw request with `headers` (each ending in CRLF, `Host` included
/// when wanted); returns the status, the lower-cased head and the body.
fn exchange(daemon: &Daemon, request_line: &str, headers: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{request_line} HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn host(daemon: &Daemon) -> String {
    format!("Host: 127.0.0.1:{}\r\n", daemon.port)
}

/// A fresh binary cache signing key under `dir`; returns its file.
fn signing_key(dir: &std::path::Path) -> std::path::PathBuf {
    let secret = common::run_ok(
        std::process::Command::new("nix")
            .args(["key", "generate-secret", "--key-name", "hardening-1"])
            .env("NIX_CONFIG", common::NIX_CONFIG),
    );
    let path = dir.join("cache.secret");
    std::fs::write(&path, secret).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A connection to the daemon from `source` (a loopback address other
/// than 127.0.0.1 is another client), receiving at most a few KiB at a
/// time, with `GET path` sent and nothing read.
fn held_from(source: std::net::Ipv4Addr, port: u16, path: &str) -> std::net::TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket, sockopt};
    use std::net::{Ipv4Addr, SocketAddrV4};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_recv_buffer_size(&fd, 4096).unwrap();
    bind(&fd, &SocketAddrV4::new(source, 0)).unwrap();
    connect(&fd, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).unwrap();
    let mut stream = std::net::TcpStream::from(fd);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .unwrap();
    stream
}

/// The status and head of the answer on a held connection (read byte by
/// byte up to the blank line, so the body stays unread).
fn head_of(stream: &mut std::net::TcpStream) -> (u16, String) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head)
}

/// A webhook receiver on loopback that answers every request with
/// `status` and `body`; returns its port.
fn receiver(status: u16, body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                // The whole request, so that closing resets nothing.
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        if n == 0 {
                            break;
                        }
                        continue;
                    };
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if n == 0 || body.len() >= length {
                        break;
                    }
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

#[test]
fn only_the_hosts_it_serves_are_answered() {
    let daemon = Daemon::start("public_url = \"https://ci.example.org/\"\n");
    let port = daemon.port;
    for served in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
        "ci.example.org".to_string(),
        "CI.example.org:443".to_string(),
    ] {
        let (status, _, body) =
            exchange(&daemon, "GET /api/health", &format!("Host: {served}\r\n"));
        assert_eq!(status, 200, "{served}: {body}");
    }
    for refused in [
        format!("Host: rebound.example:{port}\r\n"),
        format!("Host: 127.0.0.1.rebound.example:{port}\r\n"),
        format!("Host: 10.1.2.3:{port}\r\n"),
        format!("Host: 127.0.0.1:{port}\r\nHost: rebound.example\r\n"),
    ] {
        for path in ["/api/health", "/", "/api/repos"] {
            let (status, head, body) = exchange(&daemon, &format!("GET {path}"), &refused);
            assert_eq!(status, 400, "{refused:?} {path}: {body}");
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(value["error"]["code"], "invalid_field", "{body}");
            assert_eq!(value["error"]["field"], "host", "{body}");
            assert!(
                value["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("serve"),
                "{body}"
            );
            assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        }
    }
    // The hook's socket is not reachable by a browser: any Host will do.
    daemon.create_repo("hooked");
    let work = common::Work::clone(&daemon.repo_path("hooked"));
    work.commit("x");
    let output = work.push(&["HEAD:main"]);
    assert!(output.contains("queued for main"), "{output}");
}

#[test]
fn every_answer_says_nosniff_and_request_ids_are_validated() {
    let daemon = Daemon::start("nix_bin = \"/bin/true\"\n");
    let h = host(&daemon);
    for request in [
        "GET /",
        "GET /app.js",
        "GET /api/health",
        "GET /api/repos",
        "GET /api/builds/999",
        "GET /api/repos/absent/badge.svg",
        "GET /no/such/route",
        "PATCH /api/builds",
        "POST /api/repos",
        "GET /metrics",
        "GET /api/builds?limit=0",
    ] {
        let (status, head, _) = exchange(&daemon, request, &h);
        assert!(status > 0, "{request}");
        assert!(
            head.contains("\r\nx-content-type-options: nosniff"),
            "{request}: {head}"
        );
    }
    // A plain id is kept for tracing; anything else is replaced by ours.
    let (_, head, _) = exchange(
        &daemon,
        "GET /api/health",
        &format!("{h}X-Request-Id: job-42.a:b\r\n"),
    );
    assert!(head.contains("\r\nx-request-id: job-42.a:b"), "{head}");
    for bad in [
        "X-Request-Id: has space\r\n".to_string(),
        "X-Request-Id: <script>\r\n".to_string(),
        format!("X-Request-Id: {}\r\n", "a".repeat(65)),
        "X-Request-Id: one\r\nX-Request-Id: two\r\n".to_string(),
    ] {
        let (status, head, _) = exchange(&daemon, "GET /api/health", &format!("{h}{bad}"));
        assert_eq!(status, 200);
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap_or_else(|| panic!("no id: {head}"));
        let (epoch, n) = id
            .split_once('-')
            .unwrap_or_else(|| panic!("{bad:?}: {id}"));
        assert!(
            epoch.bytes().all(|b| b.is_ascii_hexdigit()) && n.parse::<u64>().is_ok(),
            "{bad:?} gave {id}"
        );
        assert_eq!(head.matches("x-request-id").count(), 1, "{head}");
    }
}

#[test]
fn one_authorization_header_taken_as_sent_and_401s_counted_not_flooding_the_log() {
    let daemon = Daemon::start("public_read = false\n");
    let token = daemon.token();
    let h = host(&daemon);
    let (status, _, _) = exchange(
        &daemon,
        "GET /api/builds",
        &format!("{h}Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(status, 200);
    let (status, _, body) = exchange(
        &daemon,
        "GET /api/builds",
        &format!("{h}Authorization: Bearer {token}\r\nAuthorization: Bearer wrong-token-here\r\n"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"field\":\"authorization\""), "{body}");
    assert!(body.contains("exactly one Authorization header"), "{body}");
    for spaced in [
        format!("Bearer  {token}"),
        format!("Bearer \t{token}"),
        format!("bearer {token}"),
    ] {
        let (status, _, _) = exchange(
            &daemon,
            "GET /api/builds",
            &format!("{h}Authorization: {spaced}\r\n"),
        );
        assert_eq!(status, 401, "{spaced:?}");
    }
    // Many refusals: each is counted, few are logged.
    for _ in 0..200 {
        let (status, _, _) = exchange(&daemon, "POST /api/repos", &h);
        assert_eq!(status, 401);
    }
    let (status, _, metrics) = exchange(
        &daemon,
        "GET /metrics",
        &format!("{h}Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(status, 200);
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("procurator_http_unauthorized_total "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(counted, 3 + 200, "{metrics}");
    let lines = daemon.log().matches("unauthorised request refused").count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} log lines for 203 refusals"
    );
}

#[test]
fn the_daemon_keeps_its_files_to_itself_whatever_umask_it_inherits() {
    // The test process's umask is the daemon's inherited one.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut daemon = Daemon::configure(tmp.path(), "nix_bin = \"/bin/true\"\n", &[]);
    daemon.spawn();
    daemon.create_repo("r");
    let work = common::Work::clone(&daemon.repo_path("r"));
    let commit = work.commit("x");
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    daemon.wait_final(id);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o750, "the state directory");
    assert_eq!(mode(&state.join("logs")), 0o750);
    assert_eq!(mode(&state.join("logs").join(id.to_string())), 0o750);
    assert_eq!(mode(&state.join("ci.db")), 0o640);
    assert_eq!(mode(&state.join("api-token")), 0o600);
    let log = state.join("logs").join(id.to_string()).join("1.log.zst");
    assert_eq!(mode(&log), 0o640);
    daemon.stop();
}

#[test]
fn a_token_file_others_can_read_is_refused_with_key_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "a-token-of-at-least-sixteen\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let daemon = Daemon::configure(
        tmp.path(),
        &format!("api_token_file = \"{}\"\n", token.display()),
        &[],
    );
    // Bounded: a daemon that accepted the file would serve for ever.
    let mut child = daemon
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the daemon started with a token file others can read");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("api_token_file"), "{stderr}");
    assert!(stderr.contains(&token.display().to_string()), "{stderr}");
    assert!(stderr.contains("readable by group or others"), "{stderr}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut daemon = daemon;
    daemon.spawn();
    let (status, _, _) = exchange(
        &daemon,
        "POST /api/session",
        &format!(
            "{}Authorization: Bearer a-token-of-at-least-sixteen\r\n",
            host(&daemon)
        ),
    );
    assert_eq!(status, 204);
}

/// The socket admits our user, root and our group, and the group's members
/// may queue builds on it without a token, as the NixOS module's `group`
/// option says; anyone else cannot even connect. Run as root, the daemon's
/// group is root's: the member is uid 65534 with gid 0, the stranger uid
/// 65534 with gid 65534.
#[test]
fn members_of_the_group_queue_builds_on_the_socket_and_others_cannot_connect() {
    let tmp = tempfile::tempdir().unwrap();
    // Group members traverse to the state directory, as they do to
    // /var/lib/procurator-ci (mode 0750) under the unit.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
    let mut daemon = Daemon::configure(tmp.path(), "nix_bin = \"/bin/true\"\n", &[]);
    daemon.spawn();
    daemon.create_repo("grouped");
    let work = common::Work::clone(&daemon.repo_path("grouped"));
    let commit = work.commit("x");
    work.push(&["HEAD:main"]);
    let socket = daemon.state().join("procurator-ci.sock");
    let as_user = |gid: &str| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
            .args(["curl", "--silent", "--show-error", "--max-time", "20"])
            .args(["--write-out", "\\n%{http_code}", "--unix-socket"])
            .arg(&socket)
            .args(["-H", "Content-Type: application/json", "--data"])
            .arg(format!(
                r#"{{"repo":"grouped","branch":"main","commit":"{commit}"}}"#
            ))
            .arg("http://localhost/api/builds")
            .output()
            .unwrap()
    };
    let member = as_user("0");
    let text = String::from_utf8_lossy(&member.stdout).to_string();
    assert!(member.status.success(), "{text} {:?}", member.stderr);
    let (body, code) = text.rsplit_once('\n').unwrap();
    // 201 for a new build, 200 for the push's build still live.
    assert!(
        code == "201" || code == "200",
        "a member of the daemon's group: {code} {body}"
    );
    let build: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(build["branch"], "main", "{body}");
    assert_eq!(build["commit"], commit.as_str(), "{body}");
    let stranger = as_user("65534");
    assert!(!stranger.status.success(), "a stranger reached the socket");
    assert!(
        String::from_utf8_lossy(&stranger.stderr).contains("ermission denied")
            || String::from_utf8_lossy(&stranger.stderr).contains("connect"),
        "{:?}",
        String::from_utf8_lossy(&stranger.stderr)
    );
}
