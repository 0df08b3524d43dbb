//! Notifications (`[[notify]]`) against the real binary: webhooks to a
//! receiver on loopback in the test, signed and retried, and commands fed
//! the build JSON on stdin.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::{Daemon, Work, build_one, failing_script, nonce, ok_script, wait_file};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// A request the receiver got.
#[derive(Debug)]
struct Received {
    path: String,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the receiver answers to its `n`th request (from 0): a status, or
/// `None` to hold the connection without answering.
type Script = Box<dyn Fn(usize) -> Option<u16> + Send + Sync>;

/// An HTTP receiver on 127.0.0.1; returns its port and what it receives.
fn receiver(script: Script) -> (u16, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, received) = mpsc::channel();
    let script = Arc::new(script);
    let count = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (sender, script, count) = (sender.clone(), script.clone(), count.clone());
            std::thread::spawn(move || {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let Some(request) = read_request(&stream) else {
                    return;
                };
                let _ = sender.send(request);
                match script(n) {
                    Some(status) => {
                        let mut stream = stream;
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        );
                    }
                    // Holds the connection open, silent, well past the test.
                    None => std::thread::sleep(Duration::from_secs(600)),
                }
            });
        }
    });
    (port, received)
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    assert!(line.starts_with("POST "), "not a POST: {line}");
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
        .map(|(_, v)| v.parse().unwrap())
        .expect("the webhook has a Content-Length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body,
    })
}

fn hex_hmac(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Asserts the request carries a valid signature of its body under `key`.
fn assert_signed(request: &Received, key: &[u8]) {
    let header = request
        .header("x-procurator-signature-256")
        .unwrap_or_else(|| panic!("no signature header: {request:?}"));
    assert_eq!(
        header,
        format!("sha256={}", hex_hmac(key, &request.body)),
        "signature does not verify"
    );
    assert_ne!(
        header,
        format!("sha256={}", hex_hmac(b"another key", &request.body))
    );
}

/// A daemon with repository `demo` and a clone of it.
fn setup(extra: &str) -> (Daemon, Work) {
    let daemon = Daemon::start(extra);
    daemon.create_repo("demo");
    let work = Work::clone(&daemon.repo_path("demo"));
    (daemon, work)
}

/// A `[[notify]]` command entry that writes its stdin to `path`.
fn recorder(on: &str, extra: &str, path: &Path) -> String {
    format!(
        "[[notify]]\non = \"{on}\"\n{extra}command = [\"/bin/sh\", \"-c\", \"cat > \\\"$1.tmp\\\" && mv \\\"$1.tmp\\\" \\\"$1\\\"\", \"sh\", \"{}\"]\n",
        path.display()
    )
}

#[test]
fn a_success_is_posted_signed_and_a_failure_is_not_when_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "  the-shared-secret\n").unwrap();
    let (port, received) = receiver(Box::new(|_| Some(200)));
    let (daemon, work) = setup(&format!(
        "[[notify]]\non = \"success\"\nurl = \"http://127.0.0.1:{port}/ok\"\nsecret_file = \"{}\"\n\
         [[notify]]\non = \"failure\"\nurl = \"http://127.0.0.1:{port}/failed\"\n",
        secret.display()
    ));

    let good = build_one(&daemon, &work, "main", &ok_script());
    assert_eq!(good["status"], "success", "{good}");
    let request = received
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no webhook for the success: {}", daemon.log()));
    assert_eq!(request.path, "/ok");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-procurator-event"), Some("build.finished"));
    assert!(request.header("x-procurator-delivery").is_some());
    assert_signed(&request, b"the-shared-secret");
    let body = request.json();
    assert_eq!(body["id"], good["id"]);
    assert_eq!(body["status"], "success");
    assert_eq!(body["repo"], "demo");
    assert_eq!(body["branch"], "main");
    assert_eq!(body["commit"], good["commit"]);
    assert!(
        body["url"].as_str().unwrap().contains("/#/builds/"),
        "{body}"
    );

    let bad = build_one(&daemon, &work, "main", &failing_script());
    assert_eq!(bad["status"], "failed", "{bad}");
    let request = received
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no webhook for the failure: {}", daemon.log()));
    assert_eq!(
        request.path, "/failed",
        "the success entry fired for a failure"
    );
    assert_eq!(request.json()["id"], bad["id"]);
    assert_eq!(
        request.header("x-procurator-signature-256"),
        None,
        "no secret_file, no signature"
    );
    // Both entries were dispatched together: a POST to /ok would be here.
    if let Ok(extra) = received.recv_timeout(Duration::from_secs(2)) {
        panic!("unexpected notification: {extra:?}");
    }
}

#[test]
fn a_failing_receiver_is_retried_with_the_same_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "k3y").unwrap();
    let (port, received) = receiver(Box::new(|n| Some(if n == 0 { 500 } else { 200 })));
    let (daemon, work) = setup(&format!(
        "[[notify]]\non = \"finished\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret_file = \"{}\"\n",
        secret.display()
    ));
    let good = build_one(&daemon, &work, "main", &ok_script());
    let first = received
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no webhook: {}", daemon.log()));
    let second = received
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("a 500 was not retried: {}", daemon.log()));
    assert_eq!(first.body, second.body);
    assert_eq!(
        first.header("x-procurator-delivery"),
        second.header("x-procurator-delivery")
    );
    assert_signed(&second, b"k3y");
    assert_eq!(second.json()["id"], good["id"]);
    // Delivered on the second try: no third.
    assert!(received.recv_timeout(Duration::from_secs(3)).is_err());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("Webhook notification delivered") {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = daemon.request_text("GET", "/metrics", None, None);
    assert!(
        metrics
            .lines()
            .any(|l| l == "procurator_notifications_total{kind=\"webhook\",result=\"delivered\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_command_gets_the_build_json_on_stdin_and_its_output_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("build.json");
    let marker = nonce("said-the-command");
    let slow_pid = dir.path().join("slow.pid");
    let (daemon, work) = setup(&format!(
        "{}[[notify]]\non = \"finished\"\ncommand = [\"/bin/sh\", \"-c\", \
         \"read -r _json; echo {marker} build $PROCURATOR_BUILD_ID $PROCURATOR_BUILD_STATUS; echo on-stderr >&2\"]\n\
         [[notify]]\non = \"finished\"\ntimeout_secs = 1\ncommand = [\"/bin/sh\", \"-c\", \
         \"echo $$ > {}; exec sleep 60\"]\n",
        recorder("success", "", &out),
        slow_pid.display()
    ));
    let good = build_one(&daemon, &work, "main", &ok_script());
    let json: Value = serde_json::from_str(&wait_file(&out, Duration::from_secs(30), &daemon))
        .expect("the command got JSON");
    assert_eq!(json["id"], good["id"]);
    assert_eq!(json["status"], "success");
    assert_eq!(json["commit"], good["commit"]);

    // The output is in the daemon's (JSON) log, with the build's id.
    let id = good["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = daemon.log();
        let line = log.lines().find(|l| l.contains(&marker));
        if let Some(line) = line {
            let fields: Value = serde_json::from_str(line).unwrap();
            assert_eq!(fields["build_id"], id, "{line}");
            assert_eq!(fields["stream"], "stdout", "{line}");
            assert!(
                fields["line"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("build {id} success")),
                "{line}"
            );
            if log.lines().any(|l| l.contains("on-stderr")) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "output not logged: {log}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The slow command is killed after its timeout.
    let pid: i32 = wait_file(&slow_pid, Duration::from_secs(20), &daemon)
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        let logged = daemon.log().contains("timed out after 1s");
        if !alive && logged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow command not killed (alive: {alive}): {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn entries_whose_patterns_do_not_match_send_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sentinel = dir.path().join("sentinel.json");
    let (port, received) = receiver(Box::new(|_| Some(200)));
    let (daemon, work) = setup(&format!(
        "[[notify]]\non = \"finished\"\nrepo = \"other*\"\nurl = \"http://127.0.0.1:{port}/repo\"\n\
         [[notify]]\non = \"finished\"\nbranch = \"release/*\"\nurl = \"http://127.0.0.1:{port}/branch\"\n\
         [[notify]]\non = \"finished\"\nrepo = \"dem\"\nurl = \"http://127.0.0.1:{port}/prefix\"\n\
         {}",
        recorder("finished", "repo = \"d*o\"\nbranch = \"ma*\"\n", &sentinel)
    ));
    let good = build_one(&daemon, &work, "main", &ok_script());
    let json: Value =
        serde_json::from_str(&wait_file(&sentinel, Duration::from_secs(30), &daemon)).unwrap();
    assert_eq!(json["id"], good["id"], "the matching entry fired");
    // Every entry was considered when the sentinel's was queued.
    if let Ok(request) = received.recv_timeout(Duration::from_secs(2)) {
        panic!("a non-matching entry sent {request:?}");
    }
}

#[test]
fn a_silent_or_unreachable_receiver_never_delays_builds_or_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("last.json");
    let (port, received) = receiver(Box::new(|_| None));
    let closed = common::free_port();
    let (mut daemon, work) = setup(&format!(
        "[[notify]]\non = \"finished\"\ntimeout_secs = 600\nurl = \"http://127.0.0.1:{port}/silent\"\n\
         [[notify]]\non = \"finished\"\ntimeout_secs = 600\nurl = \"http://127.0.0.1:{closed}/nobody\"\n\
         {}",
        recorder("finished", "", &recorded)
    ));
    let started = Instant::now();
    let first = build_one(&daemon, &work, "main", &ok_script());
    let request = received
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no webhook: {}", daemon.log()));
    assert_eq!(request.json()["id"], first["id"]);
    // The receiver holds that request unanswered; builds go on regardless.
    let second = build_one(&daemon, &work, "main", &failing_script());
    let third = build_one(&daemon, &work, "main", &ok_script());
    assert_eq!(second["status"], "failed");
    assert_eq!(third["status"], "success");
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "builds waited for the receiver"
    );
    // The other entries were not held up by the silent one either.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = std::fs::read_to_string(&recorded).unwrap_or_default();
        if serde_json::from_str::<Value>(&last).is_ok_and(|v| v["id"] == third["id"]) {
            break;
        }
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let nobody = format!("127.0.0.1:{closed}/nobody");
    while !daemon
        .log()
        .lines()
        .any(|l| l.contains(&nobody) && l.contains("webhook notification not delivered"))
    {
        assert!(
            Instant::now() < deadline,
            "unreachable receiver not tried and given up on: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A delivery in flight does not hold up a graceful stop.
    let stopping = Instant::now();
    let status = daemon.stop();
    assert!(status.success(), "{status}: {}", daemon.log());
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        stopping.elapsed()
    );
}
