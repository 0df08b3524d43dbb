//! The HTTP listeners' connections (TCP and the hook's Unix socket).
//!
//! - A client that stalls for `client_stall_timeout_secs` is dropped, so it
//!   holds neither memory nor a connection for ever: one whose connection
//!   accepts no data (it stopped reading an event stream or a followed log),
//!   and one that does not finish sending a request head in that time (or
//!   idles that long between requests). Request bodies have the same
//!   deadline where they are read (`crate::http::api`).
//! - A request that hyper refuses before it reaches the router (unparsable,
//!   or a head over its limits) is answered by hyper with an empty body;
//!   here that answer gets the JSON error body every other error has, and
//!   the connection lingers so the client can read it.
//! - TCP connections are capped in all and per peer address ([`Gate`]);
//!   the excess is accepted, answered 503 at once and closed, so `accept`
//!   never fails for want of descriptors: [`FD_RESERVE`] descriptors stay
//!   free for the hook's socket, the database, git and builds. Of the cap,
//!   long-lived answers may hold only a share
//!   ([`crate::http::streams`]): every request of an admitted connection
//!   carries its [`Peer`] for them.
//! - A connection buffers at most [`MAX_BUF`] of its answer (and of a
//!   request head): a client that stops reading holds that much, not the
//!   whole of what it asked for.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{Extensions, StatusCode};
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::http::api::ApiError;
use crate::http::streams::{Peer, Streams};

/// How long, and for how many bytes, a refused request's connection keeps
/// reading before it closes (see [`linger`]).
const LINGER: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// Most a connection buffers of its answer, and the largest request head.
pub const MAX_BUF: usize = 16 * 1024;

/// Descriptors kept free of client connections: the hook's socket and its
/// connections, the database (writer and readers), git, builds' pipes,
/// the pipes of the `nix store dump-path` behind each NAR download (two
/// each, at most 64) and refused connections while they are answered.
pub const FD_RESERVE: u64 = 256;

/// Refused connections being answered at once; past this, accepting waits
/// (the kernel's backlog holds the next ones) rather than take more
/// descriptors.
const REFUSING: usize = 64;

/// The caps on a listener's connections: in all and per peer address, and
/// the share of them long-lived answers may hold.
#[derive(Debug)]
pub struct Gate {
    total: usize,
    per_peer: usize,
    streams: Arc<Streams>,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refusing: Arc<tokio::sync::Semaphore>,
}

/// A connection's place under the caps, given back when it ends.
struct Admission {
    gate: Arc<Gate>,
    peer: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().expect("connection counts");
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.peer);
            }
        }
    }
}

impl Gate {
    /// At most `total` connections, `per_peer` of them from one address;
    /// at most `downloads_per_peer` NAR downloads from one address.
    pub fn new(total: usize, per_peer: usize, downloads_per_peer: usize) -> Arc<Gate> {
        Arc::new(Gate {
            total,
            per_peer,
            streams: Streams::new(total, downloads_per_peer),
            open: Mutex::new((0, HashMap::new())),
            refusing: Arc::new(tokio::sync::Semaphore::new(REFUSING)),
        })
    }

    /// The cap on all connections.
    pub fn total(&self) -> usize {
        self.total
    }

    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admission, &'static str> {
        let mut open = self.open.lock().expect("connection counts");
        if open.0 >= self.total {
            return Err(
                "the daemon has as many connections open as it serves at once \
                        (max_connections); try again shortly",
            );
        }
        let mine = open.1.entry(peer).or_insert(0);
        if *mine >= self.per_peer {
            return Err(
                "this address has as many connections open as one address may \
                        (max_connections_per_peer); close some or try again shortly",
            );
        }
        *mine += 1;
        open.0 += 1;
        Ok(Admission {
            gate: self.clone(),
            peer,
        })
    }
}

/// The connection cap that the descriptor limit allows: the soft limit is
/// first raised to the hard one, and [`FD_RESERVE`] descriptors are kept
/// out. Returns the cap and the limit.
pub fn connection_cap(configured: usize) -> (usize, u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let allowed = soft.saturating_sub(FD_RESERVE);
    (
        configured.min(usize::try_from(allowed).unwrap_or(usize::MAX)),
        soft,
    )
}

/// The peer address of a listener's connections, when it has one.
pub trait PeerAddr {
    /// The IP address of the peer; `None` for the Unix socket.
    fn ip(&self) -> Option<IpAddr>;
}

impl PeerAddr for std::net::SocketAddr {
    fn ip(&self) -> Option<IpAddr> {
        // An IPv4 client of a dual-stack socket counts as its IPv4 address.
        Some(self.ip().to_canonical())
    }
}

impl PeerAddr for tokio::net::unix::SocketAddr {
    fn ip(&self) -> Option<IpAddr> {
        None
    }
}

/// Answers a connection over the caps with 503 and closes it, quickly and
/// with a bounded number of them at a time.
async fn refuse<T: Connection>(gate: &Arc<Gate>, mut io: T, why: &'static str) {
    let Ok(permit) = gate.refusing.clone().acquire_owned().await else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let body = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_connections", why)
            .body()
            .to_string();
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\
             x-content-type-options: nosniff\r\n\r\n{body}",
            body.len()
        );
        let sent = tokio::time::timeout(REFUSAL_TIME, async {
            io.write_all(answer.as_bytes()).await?;
            io.shutdown().await
        })
        .await;
        if matches!(sent, Ok(Ok(()))) {
            // Read what the client sent meanwhile, so that closing does not
            // reset the connection under the answer.
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while io.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            })
            .await;
        }
    });
}

/// How long a refused connection is given to take its answer, and then to
/// finish sending its request.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
const DRAIN_TIME: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting and waits for the open connections to finish their requests.
/// A client stalling for `stall` is dropped (see the module's comment).
/// `peer` gives what every request of a connection carries about its peer
/// (the Unix socket's `LocalPeer`). Our own loop rather than `axum::serve`,
/// which sets no timer and so lets a client that never finishes its request
/// head hold a connection for ever.
pub async fn serve<L>(
    mut listener: L,
    stall: Duration,
    router: Router,
    shutdown: CancellationToken,
    gate: Option<Arc<Gate>>,
    peer: impl Fn(&L::Io) -> Extensions,
) where
    L: Listener,
    L::Addr: PeerAddr,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(stall)
        .max_buf_size(MAX_BUF);
    let graceful = GracefulShutdown::new();
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let mut extensions = peer(&io);
        let admission = match (&gate, addr.ip()) {
            (Some(gate), Some(ip)) => match gate.admit(ip) {
                Ok(admission) => {
                    extensions.insert(Peer {
                        ip,
                        streams: gate.streams.clone(),
                    });
                    Some(admission)
                }
                Err(why) => {
                    refuse(gate, io, why).await;
                    continue;
                }
            },
            _ => None,
        };
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().extend(extensions.clone());
                request
            });
        let io = StallGuard {
            io: Some(io),
            stall,
            timer: None,
            refusal: None,
        };
        let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _admission = admission;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection whose pending writes time out, and whose refusals by hyper
/// are answered in JSON.
struct StallGuard<T: Connection> {
    /// Taken only when the guard is dropped, to linger.
    io: Option<T>,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// The JSON answer written in place of hyper's empty one, and how much
    /// of it is written.
    refusal: Option<(Vec<u8>, usize)>,
}

/// What a listener's connection is.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for T {}

impl<T: Connection> StallGuard<T> {
    fn io(&mut self) -> Pin<&mut T> {
        Pin::new(
            self.io
                .as_mut()
                .expect("the stream lives as long as the guard"),
        )
    }

    /// Writes `buf`, or the JSON answer in its place when `buf` is hyper's
    /// answer to a request it refused. The replacement counts as `buf`
    /// written only once all of it is.
    fn write_or_answer(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.refusal.is_none() {
            match json_refusal(buf) {
                Some(answer) => self.refusal = Some((answer, 0)),
                None => return self.io().poll_write(cx, buf),
            }
        }
        let StallGuard {
            io,
            refusal: Some((answer, written)),
            ..
        } = self
        else {
            unreachable!("the refusal was set above");
        };
        let stream = io.as_mut().expect("the stream lives as long as the guard");
        while *written < answer.len() {
            let n = ready!(Pin::new(&mut *stream).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(buf.len()))
    }

    /// Passes `result` through; while it is pending, counts towards the
    /// stall limit, and once that is reached fails the write.
    fn guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.timer = None;
            return result;
        }
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        )))
    }
}

impl<T: Connection> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<T: Connection> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = self.write_or_answer(cx, buf);
        self.guard(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Hyper's refusal is a head without a body: one non-empty slice.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        let result = match (filled.next(), filled.next()) {
            (Some(only), None) => self.write_or_answer(cx, only),
            _ => self.io().poll_write_vectored(cx, bufs),
        };
        self.guard(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(T::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = self.io().poll_flush(cx);
        self.guard(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

impl<T: Connection> Drop for StallGuard<T> {
    fn drop(&mut self) {
        if self.refusal.is_none() {
            return;
        }
        if let (Some(io), Ok(runtime)) = (self.io.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(linger(io));
        }
    }
}

/// Closes a refused request's connection without destroying the answer.
/// Hyper refuses a head before the client has sent all of it; closing a
/// socket with unread bytes makes the kernel send a reset, which can discard
/// the answer before the client reads it. So: send FIN, then read and drop
/// what the client still sends, for a bounded time and amount (nginx's
/// lingering close).
async fn linger(mut io: impl Connection) {
    let _ = io.shutdown().await;
    let mut sink = vec![0; 16 * 1024];
    let _ = tokio::time::timeout(LINGER, async {
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// The JSON answer for `head` when it is hyper's answer to a request it
/// refused: a 4xx or 5xx status line with `connection: close`,
/// `content-length: 0`, `date` and nothing else. The router's answers never
/// look like that: every error it returns has a JSON body and a content type.
fn json_refusal(head: &[u8]) -> Option<Vec<u8>> {
    // Cheap refusals first: this sees every write of every response.
    if head.len() > 256 || !(head.starts_with(b"HTTP/1.1 4") || head.starts_with(b"HTTP/1.1 5")) {
        return None;
    }
    let head = std::str::from_utf8(head).ok()?.strip_suffix("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    let status = StatusCode::from_bytes(status.as_bytes()).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let (mut closes, mut empty, mut date) = (false, false, None);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match (name.to_ascii_lowercase().as_str(), value.trim()) {
            ("connection", "close") => closes = true,
            ("content-length", "0") => empty = true,
            ("date", value) => date = Some(value),
            _ => return None,
        }
    }
    if !(closes && empty) {
        return None;
    }
    let body = ApiError::refused(status).body().to_string();
    let mut answer = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\nx-content-type-options: nosniff\r\n",
        body.len()
    );
    if let Some(date) = date {
        answer.push_str(&format!("date: {date}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    Some(answer.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::json_refusal;

    #[test]
    fn hypers_refusals_get_a_json_body_and_keep_their_status() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                     content-length: 0\r\ndate: Thu, 26 Nov 2026 22:49:16 GMT\r\n\r\n";
        let answer = String::from_utf8(json_refusal(head).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ncontent-type: application/json\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        assert!(head.contains("\r\ndate: Thu, 26 Nov 2026 22:49:16 GMT"));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "headers_too_large");
    }

    #[test]
    fn the_routers_answers_pass_untouched() {
        for head in [
            // Success, and an empty success.
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..],
            // An error with a body of its own.
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n",
            // An empty error that keeps the connection open, or names a type.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ncontent-type: text/plain\r\n\r\n",
            // A head followed by body bytes, or cut short.
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\nx",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-len",
        ] {
            assert!(json_refusal(head).is_none(), "{}", String::from_utf8_lossy(head));
        }
    }
}
