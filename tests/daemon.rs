//! The daemon itself: configuration on the command line, systemd's notify
//! protocol, the journal and the HTTP skeleton, against the real binary.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, binary};

#[test]
fn check_config_prints_effective_toml_that_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.toml");
    std::fs::write(
        &first,
        "workers = 3\nnix_extra_args = [\"--option\", \"cores\", \"1\"]\n[repos.demo]\ndescription = \"Demo\"\n",
    )
    .unwrap();
    let run = |path: &std::path::Path| {
        common::run_ok(
            Command::new(binary())
                .args(["check-config", "--config"])
                .arg(path)
                .env_remove("PROCURATOR_CI_CONFIG")
                .env("STATE_DIRECTORY", "/var/lib/procurator-ci"),
        )
    };
    let text = run(&first);
    assert!(text.contains("workers = 3"), "{text}");
    assert!(
        text.contains("database_url = \"/var/lib/procurator-ci/ci.db\""),
        "{text}"
    );
    let second = dir.path().join("b.toml");
    std::fs::write(&second, &text).unwrap();
    assert_eq!(run(&second), text);
    assert!(
        !std::path::Path::new("/var/lib/procurator-ci/ci.db").exists(),
        "check-config creates nothing"
    );
}

/// Bound to every address without `public_url`, the daemon names itself by
/// the host's name, also where /proc/sys is hidden (systemd's
/// `ProcSubset=pid`, which the NixOS module sets).
#[test]
fn the_default_public_url_names_the_host_when_proc_sys_is_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "bind_address = \"0.0.0.0:3999\"\n").unwrap();
    let host = rustix::system::uname()
        .nodename()
        .to_str()
        .unwrap()
        .to_string();
    assert!(!host.is_empty() && host != "localhost", "{host}");
    // A mount namespace of its own, with an empty tmpfs over /proc/sys.
    let text = common::run_ok(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs none /proc/sys && test ! -e /proc/sys/kernel/hostname && exec "$0" check-config --config "$1""#)
            .arg(binary())
            .arg(&config)
            .env_remove("PROCURATOR_CI_CONFIG")
            .env("STATE_DIRECTORY", dir.path()),
    );
    assert!(
        text.contains(&format!("public_url = \"http://{host}:3999\"")),
        "{text}"
    );
}

#[test]
fn check_config_rejects_with_key_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "workers = 0\n").unwrap();
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`workers`") && err.contains(path.to_str().unwrap()),
        "{err}"
    );
    let serve = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!serve.status.success(), "serve refuses to start too");
}

/// Collects notify messages until `until` matches one or time runs out.
fn receive(
    socket: &UnixDatagram,
    deadline: Instant,
    mut until: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).to_string();
            let stop = until(&message);
            got.push(message);
            if stop {
                break;
            }
        }
    }
    got
}

#[test]
fn systemd_notify_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::configure(dir.path(), "", &[]);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut child = daemon
        .command()
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut ready_seen = false;
    let messages = receive(&socket, start + Duration::from_secs(30), |m| {
        if m.lines().any(|l| l == "READY=1") {
            // Readiness means the port already accepts connections.
            let connected = std::net::TcpStream::connect(("127.0.0.1", daemon.port));
            assert!(
                connected.is_ok(),
                "READY=1 before the port accepts connections"
            );
            ready_seen = true;
        }
        ready_seen
    });
    assert!(ready_seen, "no READY=1 in {messages:?}");
    let ready = messages.last().unwrap();
    assert!(ready.lines().any(|l| l.starts_with("STATUS=")), "{ready}");
    let pings = receive(&socket, Instant::now() + Duration::from_secs(2), |_| false);
    let watchdogs = pings
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    assert!(
        watchdogs >= 3,
        "WATCHDOG=1 should repeat every 200 ms: {pings:?}"
    );

    common::signal(child.id() as i32, "TERM");
    let stopping = receive(&socket, Instant::now() + Duration::from_secs(10), |m| {
        m.lines().any(|l| l == "STOPPING=1")
    });
    assert!(
        stopping.iter().any(|m| m.contains("STOPPING=1")),
        "{stopping:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn without_notify_socket_serve_starts_answers_and_stops_cleanly() {
    let mut daemon = Daemon::start("");
    let (status, body) = daemon.get("/api/health");
    assert_eq!(status, 200);
    // `starting` until the pre-flight has run, then `ok` exactly when it
    // found nothing wrong.
    let warnings = body["warnings"].as_array().expect("warnings");
    let expected = if body["preflight"]["pending"] == true {
        "starting"
    } else if warnings.is_empty() {
        "ok"
    } else {
        "degraded"
    };
    assert_eq!(body["status"], expected, "{body}");
    assert_eq!(body["public_read"], true);
    assert_eq!(body["public_url"], daemon.base());
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    assert!(
        !daemon.state().join("procurator-ci.sock").exists(),
        "socket removed on exit"
    );
}

/// Whether a journald answers on its socket. The socket file alone proves
/// nothing: one left behind by a journald that has since exited (a finished
/// session, a rebooted container with a persistent `/run`) refuses datagrams.
fn journald_answers() -> bool {
    UnixDatagram::unbound()
        .and_then(|socket| socket.send_to(&[], JOURNAL_SOCKET))
        .is_ok()
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

fn ensure_journald() -> Option<std::process::Child> {
    if journald_answers() {
        return None;
    }
    // journald unlinks stale sockets itself before it binds.
    let log = std::env::temp_dir().join(format!("journald-{}.log", std::process::id()));
    let child = Command::new("/lib/systemd/systemd-journald")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("systemd-journald is needed for this test (apt-get install systemd)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !journald_answers() {
        assert!(
            Instant::now() < deadline,
            "journald did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(child)
}

#[test]
fn journald_entries_carry_structured_fields() {
    // Left running on purpose when we start it: other tests and later runs
    // share the journal, and it holds nothing of ours.
    let _journald = ensure_journald();
    let name = format!("journal{}", std::process::id());
    let daemon = Daemon::start("log_format = \"journald\"\n");
    let repo = daemon.create_repo(&name);
    assert_eq!(repo["name"], name.as_str());
    let work = common::Work::clone(&daemon.repo_path(&name));
    // New to nix, so that it is built (and its machine named).
    let commit = work.commit_flake(&[("ok", &common::passing(&common::nonce("journal")))]);
    work.push(&["HEAD:main"]);
    let build = daemon
        .builds()
        .into_iter()
        .find(|b| b["commit"] == commit.as_str())
        .unwrap();
    let id = build["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("journalctl")
            .args([
                "-o",
                "json",
                "--no-pager",
                "SYSLOG_IDENTIFIER=procurator-ci",
            ])
            .arg(format!("REPO={name}"))
            .output()
            .unwrap();
        let entries: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_default())
            .filter(|entry: &serde_json::Value| entry["BUILD_ID"] == id.to_string().as_str())
            .collect();
        let enqueued = entries
            .iter()
            .any(|entry| entry["MESSAGE"] == "Build enqueued successfully");
        // Where it was built (issue 22): on this host, no remote builder.
        let ended_here = entries
            .iter()
            .any(|entry| entry["MESSAGE"] == "Build succeeded" && entry["MACHINE"] == "local");
        if enqueued && ended_here {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no journal entries with BUILD_ID={id} (enqueued, and built with MACHINE=local): \
             {entries:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn http_errors_are_json() {
    let daemon = Daemon::start("");
    let (status, body) = daemon.get("/api/nothing-here");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = daemon.request("DELETE", "/api/builds", None, Some(&daemon.token()));
    assert_eq!(status, 405);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    // An oversized body is refused from its declared length, before it is
    // sent: the client reads a JSON 413 without writing the body.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    write!(
        raw,
        "POST /api/repos HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        daemon.token(),
        2 * 1024 * 1024
    )
    .unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut response = String::new();
    let _ = raw.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("\"code\":\"payload_too_large\""),
        "{response}"
    );
    let (status, body) = daemon.request(
        "POST",
        "/api/repos",
        Some("{not json"),
        Some(&daemon.token()),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_json");
    // The hook's Unix socket is served the same way: what does not parse
    // gets the JSON error too.
    let mut local =
        std::os::unix::net::UnixStream::connect(daemon.state().join("procurator-ci.sock")).unwrap();
    local
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    local.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut response = String::new();
    local.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("\"code\":\"malformed_request\""),
        "{response}"
    );
}

#[tokio::test]
async fn serves_on_a_listener_handed_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = procurator_ci::config::Config::load(None).unwrap();
    config.state_dir = dir.path().to_path_buf();
    config.database_url = dir.path().join("ci.db");
    config.repos_base_path = dir.path().join("repos");
    config.socket_path = dir.path().join("s.sock");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(procurator_ci::server::serve(
        config,
        Some(listener),
        shutdown.clone(),
    ));
    let body = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut response) =
                ureq::get(format!("http://127.0.0.1:{port}/api/health")).call()
            {
                return response.body_mut().read_to_string().unwrap();
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(body.contains("\"status\""), "{body}");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[test]
fn a_taken_port_stops_the_start_naming_the_variable_before_anything_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::configure(dir.path(), "", &[]);
    let config = std::fs::read_to_string(&daemon.config)
        .unwrap()
        .replace(&format!(":{}\"", daemon.port), &format!(":{port}\""));
    std::fs::write(&daemon.config, config).unwrap();
    let out = daemon.command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && stderr.contains("PROCURATOR_CI_BIND_ADDRESS"),
        "{stderr}"
    );
    assert!(
        !daemon.state().exists(),
        "the state directory was created before the listener worked"
    );
}

#[test]
fn the_start_says_where_it_listens_once_and_logs_under_one_target_prefix() {
    let daemon = Daemon::start("");
    let log = daemon.log();
    let listening: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("listening on http://"))
        .collect();
    assert_eq!(listening.len(), 1, "{log}");
    assert!(
        listening[0].contains(&format!("listening on http://127.0.0.1:{}", daemon.port)),
        "{log}"
    );
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let target = entry["target"].as_str().unwrap_or_default();
        assert!(
            target.starts_with("procurator_ci") || target.starts_with("tower_http"),
            "a log target outside procurator_ci::…: {line}"
        );
    }
}

/// nix's caches go where systemd's `CacheDirectory=` says (`$CACHE_DIRECTORY`,
/// /var/cache/procurator-ci under the NixOS module), not into the state
/// directory: they are caches, and the state is what a backup keeps.
#[test]
fn nix_caches_go_to_the_cache_directory_systemd_names() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("var-cache");
    std::fs::create_dir(&cache).unwrap();
    let mut daemon = Daemon::configure(
        tmp.path(),
        "",
        &[("CACHE_DIRECTORY", cache.to_str().unwrap())],
    );
    daemon.spawn();
    daemon.create_repo("cached");
    let work = common::Work::clone(&daemon.repo_path("cached"));
    let build = common::build_one(&daemon, &work, "main", &common::ok_script());
    assert_eq!(build["status"], "success", "{build}");
    // Each repository's nix has caches of its own (another repository's
    // must not be readable from its evaluation: tests/hardening/).
    assert!(
        cache.join("repos/cached.git/.cache/nix").is_dir(),
        "nix wrote no cache into $CACHE_DIRECTORY: {:?}",
        std::fs::read_dir(&cache).unwrap().collect::<Vec<_>>()
    );
    for leftover in ["home/.cache/nix", "home/repos"] {
        assert!(
            !daemon.state().join(leftover).exists(),
            "nix's cache is in the state directory ({leftover})"
        );
    }
}

/// systemd 254 and later hand credentials (`LoadCredential=`) over as mode
/// 0440 files in a directory only the unit may enter: there the daemon takes
/// them, while it still refuses the same mode anywhere else.
#[test]
fn credentials_of_systemd_254_and_later_are_accepted_with_mode_0440() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o500)).unwrap();
    let write = |path: &std::path::Path| {
        std::fs::write(path, "a-token-of-twenty-four-b").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o440)).unwrap();
    };
    let inside = credentials.join("api-token");
    let outside = dir.path().join("api-token");
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o700)).unwrap();
    write(&inside);
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o500)).unwrap();
    write(&outside);
    let check = |token: &std::path::Path| {
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\napi_token_file = \"{}\"\n",
                dir.path().join("state").display(),
                token.display()
            ),
        )
        .unwrap();
        Command::new(binary())
            .args(["check-config", "--config"])
            .arg(&config)
            .env_remove("PROCURATOR_CI_CONFIG")
            .env("CREDENTIALS_DIRECTORY", &credentials)
            .output()
            .unwrap()
    };
    let taken = check(&inside);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let refused = check(&outside);
    assert!(
        !refused.status.success(),
        "a 0440 token outside the credentials"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("mode 0440"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// Issue 24: a second daemon on the same state directory (another port) is
/// refused before it touches the queue, naming the first one's pid and the
/// directory; the first daemon's hook socket survives it and still answers.
#[test]
fn a_second_daemon_on_one_state_directory_is_refused_naming_the_first() {
    let first = Daemon::start("");
    let socket = first.state().join("procurator-ci.sock");
    assert!(socket.exists());
    let dir = tempfile::tempdir().unwrap();
    let second = Daemon::configure(dir.path(), "", &[]);
    let config = std::fs::read_to_string(&second.config).unwrap().replace(
        &second.state().display().to_string(),
        &first.state().display().to_string(),
    );
    std::fs::write(&second.config, config).unwrap();
    let out = second.command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.pid()))
            && stderr.contains(&first.state().display().to_string()),
        "{stderr}"
    );
    assert!(
        socket.exists(),
        "the second daemon removed the first one's socket"
    );
    let mut hook = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    hook.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    hook.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// Issue 24: a daemon removes at exit only the socket it bound. Here the
/// first daemon's socket is moved away and a second daemon (its own state
/// directory, the same `socket_path`) binds the path; stopping the first
/// leaves the second's socket in place and answering.
#[test]
fn a_daemon_leaves_a_socket_it_did_not_create() {
    let shared = tempfile::tempdir().unwrap();
    let socket = shared.path().join("hook.sock");
    let extra = format!("socket_path = \"{}\"", socket.display());
    let mut first = Daemon::start(&extra);
    // While the first listens there, a second start is refused.
    let dir = tempfile::tempdir().unwrap();
    let mut second = Daemon::configure(dir.path(), &extra, &[]);
    let out = second.command().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("socket of a running daemon"), "{stderr}");
    std::fs::rename(&socket, shared.path().join("moved.sock")).unwrap();
    second.spawn();
    first.stop();
    assert!(
        socket.exists(),
        "the first daemon removed the second's socket"
    );
    let mut hook = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    hook.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    hook.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    second.stop();
    assert!(!socket.exists(), "a daemon removes its own socket at exit");
}

/// Issue 24: a misspelt prefix (`PROCURATOR_` for `PROCURATOR_CI_`) is not
/// silently ignored: the daemon warns, naming the variable and the one it
/// reads, and `check-config` says the same.
#[test]
fn a_misspelt_environment_prefix_is_warned_about_naming_the_closest_variable() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::configure(
        dir.path(),
        "",
        &[("PROCURATOR_BIND_ADDRESS", "127.0.0.1:1")],
    );
    daemon.spawn();
    let log = daemon.log();
    let warning = log
        .lines()
        .find(|l| l.contains("PROCURATOR_BIND_ADDRESS"))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(
        warning.contains("\"level\":\"WARN\"")
            && warning.contains("did you mean PROCURATOR_CI_BIND_ADDRESS?"),
        "{warning}"
    );
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&daemon.config)
        .env("PROCURATOR_BIND_ADDRESS", "127.0.0.1:1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: the environment variable PROCURATOR_BIND_ADDRESS is not read by \
             procurator-ci"
        ) && stderr.contains("did you mean PROCURATOR_CI_BIND_ADDRESS?"),
        "{stderr}"
    );
}
