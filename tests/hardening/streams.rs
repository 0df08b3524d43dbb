//! Long-lived answers against the real binary (issue 25, items 4 and 6):
//! one client cannot take every NAR download, and event streams and
//! followed logs from many addresses, up to every connection they could
//! take, leave room for health, the API and the page.

use std::io::Read;
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use super::{exchange, head_of, held_from, host};
use crate::common::{Daemon, Work, nonce};

fn client(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// The rest of a refused answer: its JSON error body.
fn error_body(stream: &mut TcpStream) -> Value {
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
}

/// A refusal: 503, when to retry, the connection closed; returns the JSON
/// error's code.
fn refusal_code(stream: &mut TcpStream, head: &str) -> String {
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    error_body(stream)["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn streams_from_many_addresses_leave_room_for_short_requests() {
    let tmp = tempfile::tempdir().unwrap();
    // A build that runs as long as the test: its log can be followed.
    let nix = tmp.path().join("slow-nix");
    std::fs::write(&nix, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&nix, std::fs::Permissions::from_mode(0o755)).unwrap();
    // 64 connections, 16 per address: four addresses could hold them all.
    let mut daemon = Daemon::configure(
        tmp.path(),
        &format!(
            "nix_bin = \"{}\"\nmax_connections = 64\nmax_connections_per_peer = 16\n\
             client_stall_timeout_secs = 3600\nshutdown_timeout_secs = 5\nkill_grace_secs = 1\n",
            nix.display()
        ),
        &[],
    );
    daemon.spawn();
    daemon.create_repo("held");
    let work = Work::clone(&daemon.repo_path("held"));
    let commit = work.commit("x");
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    daemon.wait_build(id, Duration::from_secs(30), |b| b["status"] == "running");

    // Two addresses hold event streams, two follow the log: 16 each.
    let mut held = Vec::new();
    for (n, path) in [
        (2, "/api/events".to_string()),
        (3, "/api/events".to_string()),
        (4, format!("/api/builds/{id}/logs?follow=true")),
        (5, format!("/api/builds/{id}/logs?follow=true")),
    ] {
        for _ in 0..16 {
            held.push(held_from(client(n), daemon.port, &path));
        }
    }
    let (mut served, mut refused) = (0, Vec::new());
    for stream in &mut held {
        let (status, head) = head_of(stream);
        match status {
            200 => served += 1,
            503 => refused.push(refusal_code(stream, &head)),
            other => panic!("{other}: {head}"),
        }
    }
    // Another address finds a connection: health, the API, the page.
    for path in ["/api/health", "/api/repos", "/", "/app.js"] {
        let mut stream = held_from(client(9), daemon.port, path);
        let (status, head) = head_of(&mut stream);
        assert_eq!(status, 200, "{path}: {head}");
    }
    let (status, _, body) = exchange(&daemon, "GET /api/health", &host(&daemon));
    assert_eq!(status, 200, "{body}");
    // Three quarters of the 64 connections; the rest is for short requests.
    // (The harness's own client keeps a few idle connections from
    // 127.0.0.1, so the last attempts may find every connection taken.)
    assert_eq!(served, 48, "{refused:?}");
    assert_eq!(refused.len(), 16, "{refused:?}");
    let streams = refused.iter().filter(|c| *c == "too_many_streams").count();
    let connections = refused.iter().filter(|c| *c == "too_many_connections");
    assert!(
        streams >= 8 && streams + connections.count() == 16,
        "{refused:?}"
    );

    // Streams ended give their places back.
    held.clear();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = held_from(client(2), daemon.port, "/api/events");
        if head_of(&mut stream).0 == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no place came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.stop();
}

#[test]
fn one_client_cannot_take_every_download() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&format!(
        "cache_serve = true\ncache_secret_key_file = \"{}\"\ncache_downloads_per_peer = 3\n\
         client_stall_timeout_secs = 3600\n",
        super::signing_key(tmp.path()).display()
    ));
    daemon.create_repo("nars");
    let work = Work::clone(&daemon.repo_path("nars"));
    // 16 MiB that do not compress: a download held by a client that does
    // not read stays running.
    let script = format!(
        "echo {}; /bin/dd if=/dev/urandom of=$out bs=1048576 count=16 2>/dev/null",
        nonce("nar")
    );
    let commit = work.commit_flake(&[("big", &script)]);
    work.push(&["HEAD:main"]);
    let build = daemon.wait_final(daemon.build_of("main", &commit));
    assert_eq!(build["status"], "success", "{build}");
    let out = build["checks"][0]["out_path"].as_str().unwrap().to_string();
    let hash = &out["/nix/store/".len().."/nix/store/".len() + 32];
    daemon.wait_build(
        build["id"].as_i64().unwrap(),
        Duration::from_secs(60),
        |b| b["cache"]["outputs"].is_array(),
    );
    let nar = format!("/nix-cache/nar/{hash}.nar.zst");

    // One client asks for eight downloads at once and reads none.
    let mut greedy: Vec<TcpStream> = (0..8)
        .map(|_| held_from(client(2), daemon.port, &nar))
        .collect();
    let mut statuses = Vec::new();
    for stream in &mut greedy {
        let (status, head) = head_of(stream);
        if status == 503 {
            assert_eq!(refusal_code(stream, &head), "too_many_downloads");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "cache_downloads_per_peer = 3: {statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 5);

    // Another client downloads the whole NAR meanwhile.
    let mut other = held_from(client(3), daemon.port, &nar);
    let (status, head) = head_of(&mut other);
    assert_eq!(status, 200, "{head}");
    let mut body = Vec::new();
    other
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    // Chunked: read until the terminating chunk.
    while !body.ends_with(b"\r\n0\r\n\r\n") {
        let n = other.read(&mut buf).unwrap();
        assert!(n > 0, "the download ended early after {} bytes", body.len());
        body.extend_from_slice(&buf[..n]);
    }
    assert!(body.len() > 16 << 20, "{} bytes", body.len());
}
