//! Outbound HTTP requests of the daemon's own (notification webhooks,
//! forge statuses): one client configuration, each request on a plain
//! thread of its own so a hung receiver holds up neither the runtime's
//! blocking pool nor the daemon's shutdown.

use std::io::Read;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Bytes of an answer's body kept (for the log and the record).
const BODY_START: u64 = 512;

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The receiver answered with this status, its `Retry-After` in
    /// seconds (when it sent one in that form) and the start of its body.
    Answered {
        status: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// No answer: connection refused, timeout, TLS or protocol error.
    Transport(String),
}

/// A client that reports every HTTP status as an answer, follows no
/// redirect and gives up after `timeout` for the whole request.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .user_agent(concat!("procurator-ci/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Sends `request` (built on the request's thread) and reads the answer;
/// `None` when the daemon shuts down first.
pub async fn send<F>(name: &str, shutdown: &CancellationToken, request: F) -> Option<Answer>
where
    F: FnOnce() -> Result<ureq::http::Response<ureq::Body>, ureq::Error> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = tx.send(read(request()));
        });
    match spawned {
        Err(e) => Some(Answer::Transport(format!("cannot start a thread: {e}"))),
        Ok(_) => tokio::select! {
            result = rx => Some(result.unwrap_or_else(|_| Answer::Transport("the request thread died".into()))),
            _ = shutdown.cancelled() => None,
        },
    }
}

fn read(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let mut start = Vec::new();
            let _ = response
                .body_mut()
                .as_reader()
                .take(BODY_START)
                .read_to_end(&mut start);
            Answer::Answered {
                status,
                retry_after,
                body: String::from_utf8_lossy(&start).trim().to_string(),
            }
        }
        Err(e) => Answer::Transport(e.to_string()),
    }
}
