//! No credential in any answer or log (issue 25, item 3): a `cache_push`
//! target and a `[[notify]] url` with credentials, a push that fails (nix's
//! error quotes the target) and a webhook that is refused. The API,
//! the event stream, the daemon's log in each format (JSON, plain, pretty,
//! the journal), `/metrics`, health and a configuration error
//! show the targets with `***` for the credentials, and never the
//! credentials themselves. (The page draws what the API gives: the browser
//! test `no_credentials_on_the_page` reads it there.)

use std::time::{Duration, Instant};

use crate::common::{self, Daemon, Work, nonce};

/// Words that appear only in the configured credentials.
const SECRETS: [&str; 5] = [
    "push-user",
    "push-s3cret",
    "hook-user",
    "hook-s3cret",
    "query-s3cret",
];

fn assert_no_secret(place: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{place} shows {secret}: {text}");
    }
}

/// A daemon logging in `format` whose push target and webhook both carry
/// credentials and both fail; a build passes and both failures happen.
/// Returns the daemon, the build id, the event stream's lines and the
/// closed port of the push target.
fn failing_with_credentials(format: &str) -> (Daemon, i64, Vec<String>, u16) {
    let tmp = tempfile::tempdir().unwrap();
    let closed = common::free_port();
    let hook = super::receiver(500, "{\"error\":\"down\"}");
    let daemon = Daemon::start(&format!(
        "log_format = \"{format}\"\ncache_secret_key_file = \"{}\"\n\
         cache_push = [\"http://push-user:push-s3cret@127.0.0.1:{closed}/\"]\n\
         [[notify]]\non = \"finished\"\n\
         url = \"http://hook-user:hook-s3cret@127.0.0.1:{hook}/hook?token=query-s3cret\"\n",
        super::signing_key(tmp.path()).display()
    ));
    let events = daemon.event_lines();
    daemon.create_repo("secret");
    let work = Work::clone(&daemon.repo_path("secret"));
    let commit = work.commit_flake(&[("ok", &common::passing(&nonce("secrets")))]);
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_build(id, Duration::from_secs(120), |b| {
        b["cache"]["pushes"][0]["error"].is_string()
    });
    assert_eq!(build["status"], "success", "{build}");
    // Events until the push's failure is published.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines
        .iter()
        .any(|l: &String| l.contains("\"attempts\":1") && l.contains("\"pushes\""))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("no build.cache event with the failed push: {lines:?}"),
        }
    }
    drop(tmp);
    (daemon, id, lines, closed)
}

/// The daemon's log (stderr) once the webhook's three refusals are in it.
pub(crate) fn log_with_refusals(daemon: &Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = daemon.log();
        if log.contains("webhook notification not delivered") {
            return log;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn credentials_in_push_targets_and_webhook_urls_are_shown_nowhere() {
    let (daemon, id, events, closed) = failing_with_credentials("json");
    let masked = format!("http://***@127.0.0.1:{closed}/");

    // The API: the build (pushes and nix's error), the builds list, health.
    let build = daemon.build(id);
    let push = &build["cache"]["pushes"][0];
    assert_eq!(push["target"], masked.as_str(), "{build}");
    // nix is given the target without its credentials (they go in a netrc
    // file), so its error names the bare target.
    let error = push["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("127.0.0.1:{closed}")),
        "nix's error names the target: {error}"
    );
    assert_no_secret("GET /api/builds/{id}", &build.to_string());
    let (_, list) = daemon.request_text("GET", "/api/builds", None, None);
    assert_no_secret("GET /api/builds", &list);
    let (_, health) = daemon.request_text("GET", "/api/health", None, None);
    assert_no_secret("GET /api/health", &health);

    // The event stream.
    let events = events.concat();
    assert!(events.contains(&masked), "{events}");
    assert_no_secret("/api/events", &events);

    // Metrics.
    let (_, metrics) = daemon.request_text("GET", "/metrics", None, None);
    assert!(
        metrics.contains("procurator_cache_pushes_total"),
        "{metrics}"
    );
    assert_no_secret("/metrics", &metrics);

    // The log: the push's failure and the webhook's, with their targets.
    let log = log_with_refusals(&daemon);
    let push_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Pushing the build's outputs failed"))
        .collect();
    assert!(
        push_lines.iter().any(|l| l.contains(&masked)),
        "the push's failure names its target: {log}"
    );
    let hook_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("webhook receiver refused"))
        .collect();
    assert!(
        hook_lines
            .iter()
            .any(|l| l.contains("http://***@127.0.0.1:") && l.contains("/hook?token=***")),
        "the webhook's failure names its URL: {log}"
    );
    assert_no_secret("the log", &log);
}

/// A flake input whose URL carries a token as its user (how a private
/// repository is often reached) that cannot be fetched: nix's error quotes
/// the URL, and the summary and the log show it with the token masked.
#[test]
fn credentials_in_a_flake_inputs_url_are_masked_in_the_summary_and_the_log() {
    let closed = common::free_port();
    let daemon = Daemon::start("max_retries = 0");
    daemon.create_repo("private-input");
    let work = Work::clone(&daemon.repo_path("private-input"));
    let url =
        format!("git+http://input-user:input-s3cret@127.0.0.1:{closed}/team/private.git?ref=main");
    std::fs::write(
        work.path().join("flake.nix"),
        format!(
            "{{\n  inputs.private = {{ url = \"{url}\"; flake = false; }};\n  \
             outputs = {{ self, private }}: {{ checks.x86_64-linux = {{}}; }};\n}}\n"
        ),
    )
    .unwrap();
    let commit = work.commit("a private input");
    work.push(&["HEAD:main"]);
    let id = daemon.build_of("main", &commit);
    let build = daemon.wait_final(id);
    assert_eq!(build["status"], "failed", "{build}");
    let log = daemon.log_of(id);
    // Nix 2.8 quotes only git's error, which leaves the user information
    // out; later versions name the input by its URL.
    let quoted = format!("@127.0.0.1:{closed}/team/private.git");
    if log.contains(&quoted) {
        assert!(log.contains(&format!("***{quoted}")), "{log}");
    }
    for text in [&build.to_string(), &log, &daemon.log()] {
        assert!(!text.contains("input-s3cret"), "{text}");
        assert!(!text.contains("input-user"), "{text}");
    }
}

#[test]
fn the_plain_log_shows_no_credential_either() {
    let (daemon, _, _, closed) = failing_with_credentials("auto");
    let log = log_with_refusals(&daemon);
    assert!(
        log.contains(&format!("target=http://***@127.0.0.1:{closed}/")),
        "{log}"
    );
    assert_no_secret("the plain log", &log);
}

#[test]
fn a_configuration_error_does_not_repeat_the_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let daemon = Daemon::configure(
        tmp.path(),
        "cache_push = [\"http://push-user:push-s3cret@cache.example/ with a space\"]\n",
        &[],
    );
    let output = daemon.command().output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cache_push.0"), "{stderr}");
    assert!(stderr.contains("http://***@cache.example/"), "{stderr}");
    assert_no_secret("the configuration error", &stderr);
}

#[test]
fn the_pretty_log_shows_no_credential_either() {
    let (daemon, _, _, closed) = failing_with_credentials("pretty");
    let log = log_with_refusals(&daemon);
    assert!(
        log.contains(&format!("http://***@127.0.0.1:{closed}/")),
        "{log}"
    );
    assert_no_secret("the pretty log", &log);
}

/// Whether a journald answers on its socket (a stale socket file refuses).
fn journald_answers() -> bool {
    std::os::unix::net::UnixDatagram::unbound()
        .and_then(|socket| socket.send_to(&[], "/run/systemd/journal/socket"))
        .is_ok()
}

/// A journald this test started, stopped when the test ends.
struct Journald(Option<std::process::Child>);

impl Journald {
    /// The machine's journald when one answers, else one of our own.
    fn ensure() -> Journald {
        if journald_answers() {
            return Journald(None);
        }
        // journald unlinks a stale socket itself before it binds.
        let child = std::process::Command::new("/lib/systemd/systemd-journald")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("systemd-journald is needed for this test (apt-get install systemd)");
        let started = Journald(Some(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !journald_answers() {
            assert!(Instant::now() < deadline, "journald did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        started
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn the_journal_shows_no_credential_either() {
    let _journald = Journald::ensure();
    let (daemon, _, _, closed) = failing_with_credentials("journald");
    let masked = format!("http://***@127.0.0.1:{closed}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let out = std::process::Command::new("journalctl")
            .args([
                "-o",
                "json",
                "--no-pager",
                "SYSLOG_IDENTIFIER=procurator-ci",
            ])
            .arg(format!("_PID={}", daemon.pid()))
            .output()
            .unwrap();
        let entries = String::from_utf8_lossy(&out.stdout).to_string();
        if entries.contains("webhook notification not delivered")
            && entries.contains("Pushing the build's outputs failed")
        {
            break entries;
        }
        assert!(Instant::now() < deadline, "not in the journal: {entries}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The push's entry carries the target as a field of its own.
    assert!(
        entries
            .lines()
            .any(|e| e.contains("Pushing the build's outputs failed") && e.contains(&masked)),
        "{entries}"
    );
    assert_no_secret("the journal", &entries);
}
