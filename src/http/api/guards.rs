//! The layers every request passes: a declared oversize body, the `Host`
//! check, request ids, `nosniff`, and who may do what (the token, the read
//! cookie, the hook's socket).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::http::auth::LocalPeer;

use super::{ApiError, AppState, MAX_BODY_BYTES};

/// A body declared larger than the limit is refused at once: the limit
/// alone refuses it only once that much has arrived, and a client may never
/// send it (holding the connection and the request open meanwhile).
pub(super) async fn refuse_declared_oversize(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Every answer, JSON included, tells browsers not to guess its type.
pub(super) async fn nosniff(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    response
}

/// Whether `id` may be a request id: a client's own id is kept for tracing
/// only when it is short and plain, since it goes into logs and answers.
fn valid_request_id(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
}

/// Removes a client's `X-Request-Id` unless it is one valid id, so that one
/// of ours takes its place.
pub(super) async fn drop_invalid_request_id(mut request: Request, next: Next) -> Response {
    let ids = request.headers().get_all("x-request-id");
    let mut values = ids.iter();
    let keep = matches!(
        (values.next(), values.next()),
        (Some(id), None) if valid_request_id(id.as_bytes())
    );
    if !keep {
        request.headers_mut().remove("x-request-id");
    }
    next.run(request).await
}

/// Refuses a request over TCP whose `Host` this daemon does not serve: a
/// page on a name its author controls that resolves to this daemon (DNS
/// rebinding) would otherwise read it as its own origin. The hook's socket
/// is not reachable that way.
pub(super) async fn check_host(
    State(hosts): State<Arc<crate::http::hosts::AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    if request
        .extensions()
        .get::<ConnectInfo<LocalPeer>>()
        .is_some()
    {
        return next.run(request).await;
    }
    let mut values = request.headers().get_all(header::HOST).iter();
    let host = match (values.next(), values.next()) {
        (Some(host), None) => host.to_str().ok(),
        _ => None,
    };
    if let Err(message) = hosts.check(host) {
        return ApiError::invalid("host", message).into_response();
    }
    next.run(request).await
}

/// Request ids: a per-process counter prefixed with the start time, unique
/// across restarts and cheap.
#[derive(Clone, Default)]
pub(super) struct RequestIds {
    next: Arc<AtomicU64>,
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        static EPOCH: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        let epoch = EPOCH.get_or_init(|| chrono::Utc::now().timestamp());
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{epoch:x}-{n}"))
            .ok()
            .map(RequestId::new)
    }
}

/// Mutations need the token over TCP (the Unix socket's permissions admit
/// only our user, our group and root); reads need it only when `public_read` is off. Runs before any
/// handler, so an unauthorised request writes nothing.
pub(super) async fn authorize(State(app): AppState, request: Request, next: Next) -> Response {
    if request
        .extensions()
        .get::<ConnectInfo<LocalPeer>>()
        .is_some()
    {
        return next.run(request).await;
    }
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let path = request.uri().path();
    // Ending a session only removes a cookie: anyone may.
    let public = (reading && (app.config.public_read || path == "/api/health"))
        || (request.method() == Method::DELETE && path == "/api/session");
    // Two headers would leave which one counts to each proxy's reading.
    let mut authorizations = request.headers().get_all(header::AUTHORIZATION).iter();
    let presented = authorizations.next();
    if authorizations.next().is_some() {
        return ApiError::invalid("authorization", "send exactly one Authorization header")
            .into_response();
    }
    let presented = presented.map(|v| v.to_str().unwrap_or_default());
    let cookie = request
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok());
    // Nix sends the token from its netrc file as HTTP Basic credentials.
    let netrc = reading && path.starts_with("/nix-cache/") && app.token.accepts_basic(presented);
    if public || netrc || app.token.accepts(presented) {
        return next.run(request).await;
    }
    // The read cookie admits reads only, and only from the daemon's own
    // pages: a cookie goes with requests that other pages make the browser
    // send (a page on another port of this host is "same-site" and gets
    // it despite SameSite), so it must neither change anything nor tell
    // such a page what exists.
    if reading && app.token.accepts_read_cookie(cookie) {
        if same_origin(request.headers()) {
            return next.run(request).await;
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "the read cookie is accepted only on requests from the daemon's own pages \
             (Sec-Fetch-Site: same-origin); this one came from another page",
        )
        .into_response();
    }
    let message = match presented {
        Some(header) if !header.starts_with("Bearer ") => {
            "the Authorization header is not a bearer token: use `Authorization: Bearer <token>`"
        }
        Some(_) => "the API token is wrong",
        None => "this request needs the API token: send `Authorization: Bearer <token>`",
    };
    app.metrics
        .unauthorized(request.method(), request.uri().path());
    ApiError::unauthorized(message).into_response()
}

/// Whether a browser says the request comes from the daemon's own origin
/// (or from no page at all: the address typed or bookmarked). Clients that
/// are not browsers send no `Sec-Fetch-Site`.
fn same_origin(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all("sec-fetch-site").iter();
    match (values.next(), values.next()) {
        (None, _) => true,
        (Some(site), None) => matches!(site.as_bytes(), b"same-origin" | b"none"),
        _ => false,
    }
}
