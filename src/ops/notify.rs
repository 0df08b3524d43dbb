//! Notifications of finished builds (`[[notify]]`): a webhook POST of the
//! build JSON signed with HMAC-SHA256, or a command run with the build JSON
//! on stdin.
//!
//! Builds never wait for a notification. One dispatcher listens on the event
//! bus and only appends to per-entry queues; each `[[notify]]` entry has its
//! own bounded queue (the oldest delivery is dropped, with a warning, when it
//! is full) and its own sender task, so a slow or unreachable receiver delays
//! nothing but its own later deliveries. Webhook requests run on plain
//! threads, not the runtime's blocking pool, so a hung receiver cannot hold
//! up the daemon's shutdown either.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::outbound::{self, Answer};
use crate::app::App;
use crate::config::{Notify, NotifyOn};

/// Deliveries waiting per `[[notify]]` entry; past it the oldest is dropped.
pub const QUEUE_CAPACITY: usize = 256;

/// Tries of one webhook delivery.
pub const WEBHOOK_ATTEMPTS: u32 = 3;

/// Wait before the second try; doubles for each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Procurator-Signature-256";

/// Lines of a command's stdout and of its stderr that are logged; the rest
/// is counted, not logged.
const OUTPUT_LINES: usize = 100;

/// Longest logged line, in bytes.
const OUTPUT_LINE_BYTES: usize = 2000;

/// One build to tell one entry about.
#[derive(Debug, Clone)]
struct Delivery {
    /// The event's id: the same for every try, so receivers can deduplicate.
    event_id: u64,
    build_id: i64,
    status: String,
    /// The build JSON, exactly as the `build.finished` event carries it.
    body: Arc<str>,
}

/// A bounded queue that drops its oldest item when full.
struct Queue {
    items: Mutex<VecDeque<Delivery>>,
    wake: tokio::sync::Notify,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            items: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Appends, returning the delivery dropped to make room, if any.
    fn push(&self, delivery: Delivery) -> Option<Delivery> {
        let mut items = self.items.lock().expect("notify queue");
        let dropped = (items.len() >= QUEUE_CAPACITY)
            .then(|| items.pop_front())
            .flatten();
        items.push_back(delivery);
        drop(items);
        self.wake.notify_one();
        dropped
    }

    fn pop(&self) -> Option<Delivery> {
        self.items.lock().expect("notify queue").pop_front()
    }

    fn len(&self) -> usize {
        self.items.lock().expect("notify queue").len()
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of
/// characters (including none) and everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `entry` wants to hear about `build` (a finished build's JSON).
pub fn matches(entry: &Notify, build: &Value) -> bool {
    let status = build["status"].as_str().unwrap_or_default();
    let wanted = match entry.on {
        NotifyOn::Success => status == "success",
        NotifyOn::Failure => status == "failed",
        NotifyOn::Finished => matches!(status, "success" | "failed" | "cancelled"),
    };
    wanted
        && glob_match(&entry.repo, build["repo"].as_str().unwrap_or_default())
        && glob_match(&entry.branch, build["branch"].as_str().unwrap_or_default())
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + digest.len() * 2);
    hex.push_str("sha256=");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// The key in `secret_file`: its content with surrounding whitespace
/// trimmed. Read at each delivery, so the secret can be rotated without a
/// restart.
fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = raw.trim_ascii();
    if key.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(key.to_vec())
}

/// Starts the notification tasks when `[[notify]]` entries exist.
/// Subscribes before returning, so nothing published afterwards is missed.
pub fn spawn(app: &Arc<App>) {
    if app.config.notify.is_empty() {
        return;
    }
    let mut events = app.events.listen();
    let queues: Vec<Arc<Queue>> = app
        .config
        .notify
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let queue = Arc::new(Queue::new());
            tokio::spawn(sender(app.clone(), index, entry.clone(), queue.clone()));
            queue
        })
        .collect();
    tracing::info!(
        entries = queues.len(),
        "Notifications of finished builds enabled"
    );
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                _ = app.shutdown.cancelled() => break,
            };
            let event = match event {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "notifications fell behind the event bus; some builds are not notified"
                    );
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            if event.kind != "build.finished" {
                continue;
            }
            let Ok(build) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            for (index, entry) in app.config.notify.iter().enumerate() {
                if !matches(entry, &build) {
                    continue;
                }
                // A fork's build gets no secret: no signed webhook, no
                // command (whose environment and argv are the operator's).
                if build["untrusted"] == true
                    && (entry.secret_file.is_some() || entry.command.is_some())
                {
                    tracing::info!(
                        notify = index,
                        build_id = build["id"].as_i64().unwrap_or_default(),
                        "not notifying about an untrusted build with a secret"
                    );
                    continue;
                }
                let delivery = Delivery {
                    event_id: event.id,
                    build_id: build["id"].as_i64().unwrap_or_default(),
                    status: build["status"].as_str().unwrap_or_default().to_string(),
                    body: event.data.clone(),
                };
                if let Some(dropped) = queues[index].push(delivery) {
                    tracing::warn!(
                        notify = index,
                        build_id = dropped.build_id,
                        capacity = QUEUE_CAPACITY,
                        "notification queue full; dropped its oldest notification"
                    );
                    app.metrics.notification(kind_of(entry), "dropped");
                }
            }
        }
        let pending: usize = queues.iter().map(|q| q.len()).sum();
        if pending > 0 {
            tracing::warn!(
                pending,
                "shutting down with notifications not yet delivered"
            );
        }
    });
}

fn kind_of(entry: &Notify) -> &'static str {
    if entry.url.is_some() {
        "webhook"
    } else {
        "command"
    }
}

/// Delivers the deliveries of one entry, oldest first, until shutdown.
async fn sender(app: Arc<App>, index: usize, entry: Notify, queue: Arc<Queue>) {
    loop {
        let Some(delivery) = queue.pop() else {
            tokio::select! {
                _ = queue.wake.notified() => continue,
                _ = app.shutdown.cancelled() => return,
            }
        };
        let delivered = match (&entry.url, &entry.command) {
            (Some(url), _) => webhook(&entry, index, url, &delivery, &app.shutdown).await,
            (None, Some(argv)) => command(&entry, index, argv, &delivery, &app.shutdown).await,
            (None, None) => false,
        };
        app.metrics.notification(
            kind_of(&entry),
            if delivered { "delivered" } else { "failed" },
        );
        if app.shutdown.is_cancelled() {
            return;
        }
    }
}

/// POSTs one delivery, retrying transport errors, 5xx and 429 with
/// doubling backoff; returns whether a 2xx was received.
async fn webhook(
    entry: &Notify,
    index: usize,
    url: &str,
    delivery: &Delivery,
    shutdown: &CancellationToken,
) -> bool {
    let signature = match &entry.secret_file {
        None => None,
        Some(path) => match read_secret(path) {
            Ok(key) => Some(signature(&key, delivery.body.as_bytes())),
            Err(e) => {
                tracing::error!(
                    notify = index,
                    build_id = delivery.build_id,
                    error = %e,
                    "cannot sign the webhook; not sending it"
                );
                return false;
            }
        },
    };
    let timeout = Duration::from_secs(entry.timeout_secs);
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let (url_owned, body, signature_owned) =
            (url.to_string(), delivery.body.clone(), signature.clone());
        let event_id = delivery.event_id;
        let Some(outcome) = outbound::send("procurator-notify", shutdown, move || {
            post(
                &url_owned,
                &body,
                signature_owned.as_deref(),
                event_id,
                timeout,
            )
        })
        .await
        else {
            return false;
        };
        let retryable = match &outcome {
            Answer::Answered { status, .. } if (200..300).contains(status) => {
                tracing::info!(
                    notify = index,
                    build_id = delivery.build_id,
                    status = delivery.status.as_str(),
                    url = %crate::redact::urls(url),
                    http_status = status,
                    attempt,
                    "Webhook notification delivered"
                );
                return true;
            }
            Answer::Answered { status, body, .. } => {
                let retryable = *status >= 500 || *status == 429;
                tracing::warn!(
                    notify = index,
                    build_id = delivery.build_id,
                    url = %crate::redact::urls(url),
                    http_status = status,
                    response = %crate::redact::urls(body),
                    attempt,
                    of = WEBHOOK_ATTEMPTS,
                    retry = retryable && attempt < WEBHOOK_ATTEMPTS,
                    "webhook receiver refused the notification"
                );
                retryable
            }
            Answer::Transport(error) => {
                tracing::warn!(
                    notify = index,
                    build_id = delivery.build_id,
                    url = %crate::redact::urls(url),
                    error = %crate::redact::urls(error),
                    attempt,
                    of = WEBHOOK_ATTEMPTS,
                    retry = attempt < WEBHOOK_ATTEMPTS,
                    "cannot deliver webhook notification"
                );
                true
            }
        };
        if !retryable || attempt == WEBHOOK_ATTEMPTS {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return false,
        }
        backoff *= 2;
    }
    tracing::error!(
        notify = index,
        build_id = delivery.build_id,
        url = %crate::redact::urls(url),
        "webhook notification not delivered"
    );
    false
}

/// One blocking POST, bounded by `timeout` as a whole.
fn post(
    url: &str,
    body: &str,
    signature: Option<&str>,
    event_id: u64,
    timeout: Duration,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let mut request = outbound::agent(timeout)
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Procurator-Event", "build.finished")
        .header("X-Procurator-Delivery", event_id.to_string());
    if let Some(signature) = signature {
        request = request.header(SIGNATURE_HEADER, signature);
    }
    request.send(body.as_bytes())
}

/// Runs the entry's command with the build JSON on stdin, in a process
/// group of its own that is killed after `timeout_secs`; its output is
/// logged line by line. Returns whether it exited 0 in time.
async fn command(
    entry: &Notify,
    index: usize,
    argv: &[String],
    delivery: &Delivery,
    shutdown: &CancellationToken,
) -> bool {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("NOTIFY_SOCKET")
        .env("PROCURATOR_EVENT", "build.finished")
        .env("PROCURATOR_BUILD_ID", delivery.build_id.to_string())
        .env("PROCURATOR_BUILD_STATUS", &delivery.status)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(
                notify = index,
                build_id = delivery.build_id,
                program = %argv[0],
                error = %e,
                "cannot run notification command"
            );
            return false;
        }
    };
    let pgid = child.id().map(|pid| pid as i32);
    let build_id = delivery.build_id;
    let mut stdin = child.stdin.take();
    let body = delivery.body.clone();
    let feeder = tokio::spawn(async move {
        if let Some(stdin) = stdin.as_mut() {
            // A command that does not read its input is fine.
            let _ = stdin.write_all(body.as_bytes()).await;
            let _ = stdin.shutdown().await;
        }
    });
    let readers = [
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(log_output(out, build_id, index, "stdout"))),
        child
            .stderr
            .take()
            .map(|err| tokio::spawn(log_output(err, build_id, index, "stderr"))),
    ];
    let timeout = Duration::from_secs(entry.timeout_secs);
    let waited = tokio::select! {
        status = tokio::time::timeout(timeout, child.wait()) => Some(status),
        _ = shutdown.cancelled() => None,
    };
    let result = match waited {
        Some(Ok(Ok(status))) => Ok(status),
        Some(Ok(Err(e))) => Err(format!("cannot wait for it: {e}")),
        Some(Err(_)) => Err(format!("timed out after {}s; killed", entry.timeout_secs)),
        None => Err("the daemon is shutting down; killed".into()),
    };
    if result.is_err() {
        // The whole group: whatever the command started goes too.
        if let Some(pgid) = pgid {
            crate::build::process::signal_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = child.kill().await;
    }
    feeder.abort();
    for reader in readers.into_iter().flatten() {
        // A grandchild that left the group may hold the pipe open: bounded.
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    match result {
        Ok(status) if status.success() => {
            tracing::info!(
                notify = index,
                build_id,
                program = %argv[0],
                "Notification command succeeded"
            );
            true
        }
        Ok(status) => {
            tracing::warn!(
                notify = index,
                build_id,
                program = %argv[0],
                status = %crate::build::process::describe_status(status),
                "notification command failed"
            );
            false
        }
        Err(reason) => {
            tracing::warn!(
                notify = index,
                build_id,
                program = %argv[0],
                reason = %reason,
                "notification command did not finish"
            );
            false
        }
    }
}

/// Logs a command's output line by line, at most `OUTPUT_LINES` lines, and
/// drains the rest so the command never blocks on a full pipe.
async fn log_output(
    stream: impl AsyncRead + Unpin,
    build_id: i64,
    index: usize,
    name: &'static str,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let (mut logged, mut skipped_bytes) = (0usize, 0usize);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(n) if logged >= OUTPUT_LINES => skipped_bytes += n,
            Ok(_) => {
                logged += 1;
                let end = line.len().min(OUTPUT_LINE_BYTES);
                let text = String::from_utf8_lossy(&line[..end]);
                tracing::info!(
                    notify = index,
                    build_id,
                    stream = name,
                    line = %text.trim_end(),
                    "notification command output"
                );
            }
        }
    }
    if skipped_bytes > 0 {
        tracing::info!(
            notify = index,
            build_id,
            stream = name,
            skipped_bytes,
            "notification command output past {OUTPUT_LINES} lines not logged"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(on: NotifyOn, repo: &str, branch: &str) -> Notify {
        Notify {
            on,
            repo: repo.into(),
            branch: branch.into(),
            url: None,
            secret_file: None,
            command: Some(vec!["/bin/true".into()]),
            timeout_secs: 5,
        }
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything/at all"));
        assert!(glob_match("main", "main"));
        assert!(!glob_match("main", "mainline"));
        assert!(glob_match("release/*", "release/1.2"));
        assert!(!glob_match("release/*", "releases/1.2"));
        assert!(glob_match("web*", "web"));
        assert!(glob_match("*-ci", "procurator-ci"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("**x", "yx"));
        assert!(glob_match("ä*", "äöü"));
    }

    #[test]
    fn entries_match_status_repo_and_branch() {
        let build = |status: &str| json!({"repo": "web-app", "branch": "main", "status": status});
        let success = entry(NotifyOn::Success, "web*", "*");
        assert!(matches(&success, &build("success")));
        assert!(!matches(&success, &build("failed")));
        let failure = entry(NotifyOn::Failure, "*", "main");
        assert!(matches(&failure, &build("failed")));
        assert!(!matches(&failure, &build("cancelled")));
        let finished = entry(NotifyOn::Finished, "*", "*");
        for status in ["success", "failed", "cancelled"] {
            assert!(matches(&finished, &build(status)), "{status}");
        }
        assert!(!matches(&finished, &build("running")));
        assert!(!matches(
            &entry(NotifyOn::Finished, "api", "*"),
            &build("success")
        ));
        assert!(!matches(
            &entry(NotifyOn::Finished, "*", "release/*"),
            &build("success")
        ));
    }

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn queue_drops_its_oldest_when_full() {
        let queue = Queue::new();
        let delivery = |id| Delivery {
            event_id: id,
            build_id: id as i64,
            status: "success".into(),
            body: "{}".into(),
        };
        for id in 0..QUEUE_CAPACITY as u64 {
            assert!(queue.push(delivery(id)).is_none());
        }
        let dropped = queue.push(delivery(QUEUE_CAPACITY as u64)).unwrap();
        assert_eq!(dropped.event_id, 0);
        assert_eq!(queue.len(), QUEUE_CAPACITY);
        assert_eq!(queue.pop().unwrap().event_id, 1);
    }

    #[test]
    fn secrets_are_trimmed_and_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "  s3cret\n").unwrap();
        assert_eq!(read_secret(&path).unwrap(), b"s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret(&path).unwrap_err().contains("empty"));
        assert!(read_secret(&dir.path().join("absent")).is_err());
    }
}
