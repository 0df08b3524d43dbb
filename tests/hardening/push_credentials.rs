//! A push target's password never on nix's command line, where every local
//! user reads it (`/proc/<pid>/cmdline`): a real `nix copy` pushes to an
//! HTTP binary cache that demands Basic credentials, and the command lines
//! the daemon ran are recorded by a `nix_bin` wrapper.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;

use crate::common::{self, Daemon, Work, nonce};

/// What the cache was asked: method, path and whether the request carried
/// the expected credentials.
type Requests = Arc<Mutex<Vec<(String, String, bool)>>>;

/// An HTTP binary cache on loopback that answers only requests with Basic
/// `login:password`, stores nothing and accepts every upload.
fn authenticating_cache(login: &str, password: &str) -> (u16, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"))
    );
    let requests: Requests = Arc::default();
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (expected, seen) = (expected.clone(), seen.clone());
            std::thread::spawn(move || serve(stream, &expected, &seen));
        }
    });
    (port, requests)
}

/// Requests on one kept-alive connection until the client closes it.
fn serve(stream: TcpStream, expected: &str, seen: &Requests) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let authorized = headers.get("authorization").map(String::as_str) == Some(expected);
        if headers
            .get("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            if !authorized {
                respond(&mut writer, "401 Unauthorized", "");
                seen.lock().unwrap().push((method, path, authorized));
                return;
            }
            write!(writer, "HTTP/1.1 100 Continue\r\n\r\n").unwrap();
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock()
            .unwrap()
            .push((method.clone(), path.clone(), authorized));
        match (authorized, method.as_str(), path.as_str()) {
            (false, ..) => respond(&mut writer, "401 Unauthorized", ""),
            (true, "GET", "/nix-cache-info") => respond(
                &mut writer,
                "200 OK",
                "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
            ),
            (true, "PUT", _) => respond(&mut writer, "200 OK", ""),
            _ => respond(&mut writer, "404 Not Found", ""),
        }
    }
}

fn respond(writer: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        writer,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nWWW-Authenticate: Basic realm=\"cache\"\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn a_push_targets_password_reaches_the_cache_but_not_nixs_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, requests) = authenticating_cache("pusher", "cmdline-s3cret");
    let argv = tmp.path().join("argv");
    let wrapper = tmp.path().join("nix-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nprintf '%s\\n' \"$*\" >> '{}'\n\
             # The daemon runs nix-store as nix with another argv[0], which a\n\
             # script cannot see.\n\
             [[ $1 == --query ]] && exec -a nix-store nix \"$@\"\nexec nix \"$@\"\n",
            argv.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start(&format!(
        "nix_bin = \"{}\"\ncache_secret_key_file = \"{}\"\n\
         cache_push = [\"http://pusher:cmdline-s3cret@127.0.0.1:{port}/\"]\n",
        wrapper.display(),
        super::signing_key(tmp.path()).display()
    ));
    daemon.create_repo("pushed");
    let work = Work::clone(&daemon.repo_path("pushed"));
    let commit = work.commit_flake(&[("ok", &common::passing(&nonce("netrc")))]);
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_build(id, Duration::from_secs(120), |b| {
        let status = &b["cache"]["pushes"][0]["status"];
        status.is_string() && status != "pending"
    });
    let push = &build["cache"]["pushes"][0];
    assert_eq!(push["status"], "pushed", "{build}");

    let requests = requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|(method, path, authorized)| method == "PUT"
                && path.ends_with(".narinfo")
                && *authorized),
        "the narinfo was uploaded with the credentials: {requests:?}"
    );
    let argv = std::fs::read_to_string(&argv).unwrap();
    let copies: Vec<&str> = argv.lines().filter(|l| l.starts_with("copy ")).collect();
    assert!(!copies.is_empty(), "{argv}");
    assert!(
        copies
            .iter()
            .all(|l| l.contains(&format!("http://127.0.0.1:{port}/"))),
        "{argv}"
    );
    assert!(!argv.contains("cmdline-s3cret"), "{argv}");
    // The credentials file lived as long as the copy.
    let left: Vec<_> = std::fs::read_dir(daemon.state().join("home/.cache/push-credentials"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!daemon.log().contains("cmdline-s3cret"));
}
