//! Repositories and the push trigger: real git pushes through the installed
//! hook to the real daemon.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod auth;
mod pushes;
mod view;

use std::path::Path;
use std::time::Duration;

use common::Daemon;

/// A daemon in `dir` that survives restarts, whose "nix" (`/bin/true`)
/// passes every build at once and whose scan waits an hour, with repository
/// `repo` created and cloned.
fn restartable(dir: &Path, repo: &str) -> (Daemon, common::Work) {
    let mut daemon = Daemon::configure(dir, QUICK, &[]);
    daemon.spawn();
    daemon.create_repo(repo);
    let work = common::Work::clone(&daemon.repo_path(repo));
    (daemon, work)
}

/// Builds pass at once; the scan leaves the test alone.
const QUICK: &str = "nix_bin = \"/bin/true\"\nscan_interval_secs = 3600\n";

fn builds_of(daemon: &Daemon, repo: &str) -> Vec<serde_json::Value> {
    let (status, body) = daemon.get(&format!("/api/builds?repo={repo}&limit=500"));
    assert_eq!(status, 200, "{body}");
    body["builds"].as_array().unwrap().clone()
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// One raw HTTP/1.1 request with `headers`; returns the status, the head
/// and the body.
fn exchange(daemon: &Daemon, method: &str, path: &str, headers: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// A `git` on the daemon's PATH that records every argument vector.
fn recording_git(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let script = bin.join("git");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> {}/git-args; done\nexec {} \"$@\"\n",
            dir.display(),
            real.trim()
        ),
    )
    .unwrap();
    make_executable(&script);
    bin
}
