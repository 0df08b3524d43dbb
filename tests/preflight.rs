//! The pre-flight as a newcomer meets it (issue 24): health is not `ok`
//! before the pre-flight has run, and a substituter the host cannot reach
//! (the default cache.nixos.org on an offline machine) is said at start
//! with a code, in the journal and in health, within a bounded probe.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Daemon, NIX_CONFIG};
use serde_json::Value;

/// The daemon's health once its first pre-flight has finished.
fn health_after_preflight(daemon: &Daemon) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, health) = daemon.get("/api/health");
        assert_eq!(status, 200, "{health}");
        if health["preflight"]["pending"] == false {
            return health;
        }
        assert_eq!(health["status"], "starting", "{health}");
        assert!(
            Instant::now() < deadline,
            "no pre-flight: {health}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_says_starting_until_the_preflight_has_run() {
    // A nix that takes its time to say its version holds the pre-flight.
    let scratch = tempfile::tempdir().unwrap();
    let slow = scratch.path().join("slow-nix");
    std::fs::write(
        &slow,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then /bin/sleep 3; fi\nexec nix \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut daemon = Daemon::configure(
        scratch.path(),
        &format!("nix_bin = \"{}\"", slow.display()),
        &[],
    );
    daemon.spawn();
    let (status, health) = daemon.get("/api/health");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "starting", "{health}");
    assert_eq!(health["preflight"]["pending"], true, "{health}");
    let health = health_after_preflight(&daemon);
    assert_eq!(health["status"], "degraded", "sandbox_off: {health}");
    // The page's token dialog names the real file (and never the token).
    let file = daemon.state().join("api-token");
    assert_eq!(health["api_token_file"], file.display().to_string());
    assert!(!health.to_string().contains(&daemon.token()));
}

/// A loopback server that accepts connections and answers nothing, each
/// for 5 s (longer than the probe waits), then hangs up: a substituter
/// behind a firewall that drops packets, short enough that nix's own
/// download of the pre-flight's trivial build gives up soon.
fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(5));
                drop(stream);
            });
        }
    });
    port
}

/// A loopback binary cache that answers `nix-cache-info` (and 404 to the
/// rest), on a thread that lives as long as the test.
fn cache_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 2048];
            let n = stream.read(&mut head).unwrap_or(0);
            let request = String::from_utf8_lossy(&head[..n]);
            let answer = if request.starts_with("GET /nix-cache-info ") {
                let body = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    port
}

#[test]
fn an_unreachable_substituter_is_a_warning_at_start_and_a_reachable_one_is_not() {
    let closed = common::free_port();
    let silent = silent_server();
    let good = cache_server();
    let substituters = format!(
        "http://127.0.0.1:{closed} http://user:hunter2@127.0.0.1:{silent}/ http://127.0.0.1:{good}"
    );
    // One download attempt: nix's own retries are not under test.
    let config = NIX_CONFIG.replace(
        "substituters =",
        &format!("download-attempts = 1\nsubstituters = {substituters}"),
    );
    let scratch = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(scratch.path(), "", &[("NIX_CONFIG", &config)]);
    daemon.spawn();
    let health = health_after_preflight(&daemon);
    let warned: Vec<&Value> = health["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["code"] == "substituter_unreachable")
        .collect();
    let messages: Vec<&str> = warned
        .iter()
        .map(|w| w["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 2, "{health}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains(&format!("http://127.0.0.1:{closed} cannot be reached"))),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains(&format!(
            "http://***@127.0.0.1:{silent}/ cannot be reached (no answer within 3 s)"
        ))),
        "{messages:?}"
    );
    assert!(
        messages.iter().all(|m| m.contains("substituters =")),
        "{messages:?}"
    );
    assert!(!health.to_string().contains("hunter2"), "{health}");
    assert!(!daemon.log().contains("hunter2"));
    assert!(
        daemon
            .log()
            .contains("\"code\":\"substituter_unreachable\""),
        "the journal has the warning: {}",
        daemon.log()
    );
}
