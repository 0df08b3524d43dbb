//! The HTTP API. Handlers parse, call `App`, and map errors through
//! `ApiError`; the router is built by `router` so tests can drive it without
//! a socket.

mod cache;
mod error;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::app::App;
use crate::build::diagnosis::CancelSource;
use crate::build::queue::{ListQuery, Status};
use crate::http::auth::LocalPeer;
use crate::repos::views::{BRANCH_PAGE_MAX, BranchPage};
use crate::storage::logs::window::{MAX_WINDOW, StripAnsi, Want, Window};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// JSON body extractor whose rejections are `ApiError`s. The body must
/// arrive within `client_stall_timeout_secs`: a client trickling it in would
/// otherwise hold the request open for as long as it likes.
struct Json<T>(T);

impl<T: serde::de::DeserializeOwned> FromRequest<Arc<App>> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let deadline = Duration::from_secs(app.config.client_stall_timeout_secs);
        match tokio::time::timeout(deadline, axum::Json::<T>::from_request(request, app)).await {
            Ok(parsed) => Ok(Json(parsed?.0)),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s (client_stall_timeout_secs)",
                    deadline.as_secs()
                ),
            )),
        }
    }
}

/// Query extractor whose rejections are `ApiError`s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
struct Query<T>(T);

/// Path extractor whose rejections are `ApiError`s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
struct Path<T>(T);

type AppState = State<Arc<App>>;
type ApiResult<T> = Result<T, ApiError>;

/// The whole HTTP application: API, web page and the layers around them.
pub fn router(app: Arc<App>) -> Router {
    let hosts = Arc::new(crate::http::hosts::AllowedHosts::of(&app.config));
    let api = Router::new()
        .route("/api/health", get(health))
        .route("/api/repos", get(list_repos).post(create_repo))
        .route("/api/repos/{name}", get(get_repo).delete(delete_repo))
        .route("/api/repos/{name}/scan", post(scan_repo))
        .route("/api/repos/{name}/badge.svg", get(badge))
        .route("/api/builds", get(list_builds).post(create_build))
        .route("/api/builds/{id}", get(get_build))
        .route("/api/builds/{id}/logs", get(build_logs))
        .route("/api/builds/{id}/cancel", post(cancel_build))
        .route("/api/builds/{id}/rebuild", post(rebuild_build))
        .route("/api/events", get(events))
        .route("/api/session", post(create_session).delete(end_session))
        .route("/metrics", get(crate::ops::metrics::handler))
        .route("/nix-cache/nix-cache-info", get(cache::info))
        .route("/nix-cache/{file}", get(cache::narinfo))
        .route("/nix-cache/nar/{file}", get(cache::nar))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), authorize))
        .with_state(app.clone());
    Router::new()
        .merge(api)
        .merge(crate::http::web::router())
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Inside the outer layers, so it sees each route's `MatchedPath`.
        .layer(axum::middleware::from_fn_with_state(
            app,
            crate::ops::metrics::count_requests,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::map_response(nosniff))
                .layer(axum::middleware::from_fn(drop_invalid_request_id))
                .layer(SetRequestIdLayer::x_request_id(RequestIds::default()))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request| {
                        let id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!(
                            "http",
                            method = %request.method(),
                            path = %request.uri().path(),
                            request_id = %id
                        )
                    }),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(
                    |_: Box<dyn std::any::Any + Send>| {
                        tracing::error!("a request handler panicked");
                        ApiError::internal().into_response()
                    },
                ))
                .layer(axum::middleware::from_fn_with_state(hosts, check_host))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .layer(axum::middleware::from_fn(refuse_declared_oversize)),
        )
}

/// A body declared larger than the limit is refused at once: the limit
/// alone refuses it only once that much has arrived, and a client may never
/// send it (holding the connection and the request open meanwhile).
async fn refuse_declared_oversize(request: Request, next: Next) -> Response {
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
async fn nosniff(mut response: Response) -> Response {
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
async fn drop_invalid_request_id(mut request: Request, next: Next) -> Response {
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
async fn check_host(
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
struct RequestIds {
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

/// Mutations need the token over TCP (or a trusted peer on the Unix
/// socket); reads need it only when `public_read` is off. Runs before any
/// handler, so an unauthorised request writes nothing.
async fn authorize(State(app): AppState, request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<LocalPeer>>() {
        if peer.trusted() {
            return next.run(request).await;
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this user may not use the daemon's socket",
        )
        .into_response();
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

async fn health(State(app): AppState) -> ApiResult<impl IntoResponse> {
    let status = app.status_line().await?;
    let preflight = app.preflight.lock().expect("preflight report").clone();
    // What a client needs before its first read: whether reads need the
    // token, the daemon's public address for links it builds, and what the
    // pre-flight found wrong with the host's nix.
    Ok(axum::Json(json!({
        "status": if preflight.warnings.is_empty() { "ok" } else { "degraded" },
        "warnings": preflight.warnings,
        "preflight": {
            "checked_at": preflight.checked_at,
            "nix_version": preflight.nix_version,
        },
        "version": env!("CARGO_PKG_VERSION"),
        "builds": status,
        "public_read": app.config.public_read,
        "public_url": app.config.public_url,
        "cache": app.cache.as_ref().map(|cache| json!({
            "public_key": cache.key.public(),
            "url": app.config.cache_serve.then(|| format!("{}/nix-cache", app.config.public_url)),
            "push": app.config.cache_push.len(),
        })),
    })))
}

/// Sets the read cookie for a browser that has shown the token, so that
/// its event stream and plain links can read when `public_read` is off.
async fn create_session(State(app): AppState) -> impl IntoResponse {
    let secure = app.config.public_url.starts_with("https://");
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, app.token.set_read_cookie(secure))],
    )
}

/// Removes the read cookie.
async fn end_session() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, crate::http::auth::clear_read_cookie())],
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRepo {
    name: String,
    #[serde(default)]
    description: String,
}

/// Serialised JSON, sent as it is.
fn json_bytes(bytes: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], bytes)
}

async fn list_repos(State(app): AppState) -> ApiResult<impl IntoResponse> {
    Ok(json_bytes(app.views.summaries()))
}

async fn create_repo(
    State(app): AppState,
    Json(body): Json<CreateRepo>,
) -> ApiResult<impl IntoResponse> {
    let repo = app.create_repo(body.name, body.description).await?;
    Ok((StatusCode::CREATED, axum::Json(repo)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoQuery {
    branches_offset: Option<String>,
    branches_limit: Option<String>,
}

fn parse_branch_page(query: &RepoQuery) -> Result<BranchPage, ApiError> {
    let mut page = BranchPage::default();
    if let Some(raw) = query.branches_offset.as_deref() {
        page.offset = raw.parse::<usize>().map_err(|_| {
            ApiError::invalid(
                "branches_offset",
                "branches_offset must be a non-negative integer",
            )
        })?;
    }
    if let Some(raw) = query.branches_limit.as_deref() {
        page.limit = raw
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=BRANCH_PAGE_MAX).contains(l))
            .ok_or_else(|| {
                ApiError::invalid(
                    "branches_limit",
                    format!("branches_limit must be an integer from 1 to {BRANCH_PAGE_MAX}"),
                )
            })?;
    }
    Ok(page)
}

/// The repository view: a page of branches (100 unless asked, ~33 KiB of
/// JSON), sent gzip-encoded to clients that accept it (browsers do).
async fn get_repo(
    State(app): AppState,
    Path(name): Path<String>,
    Query(query): Query<RepoQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let page = parse_branch_page(&query)?;
    let (body, gzipped) = app.repo_detail(&name, page, accepts_gzip(&headers)).await?;
    let mut response = json_bytes(body).into_response();
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzipped {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}

/// Whether `Accept-Encoding` admits gzip (`gzip` with no `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    confirm: Option<String>,
}

async fn delete_repo(
    State(app): AppState,
    Path(name): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult<impl IntoResponse> {
    app.delete_repo(&name, query.confirm.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn scan_repo(State(app): AppState, Path(name): Path<String>) -> ApiResult<impl IntoResponse> {
    let queued = app.scan(Some(&name)).await?;
    Ok(axum::Json(json!({ "queued": queued })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BadgeQuery {
    branch: Option<String>,
}

async fn badge(
    State(app): AppState,
    Path(name): Path<String>,
    Query(query): Query<BadgeQuery>,
) -> ApiResult<impl IntoResponse> {
    let branch = query.branch.unwrap_or_else(|| "main".into());
    crate::repos::validate_branch(&branch)
        .map_err(|r| ApiError::invalid("branch", format!("invalid branch name: {r}")))?;
    let status = app.branch_status(&name, &branch).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::http::web::badge_svg(status),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBuild {
    repo: String,
    branch: String,
    commit: String,
    author: Option<String>,
}

async fn create_build(
    State(app): AppState,
    peer: Option<axum::Extension<ConnectInfo<LocalPeer>>>,
    Json(body): Json<CreateBuild>,
) -> ApiResult<impl IntoResponse> {
    // Requests on the Unix socket come from the post-receive hook.
    let trigger = if peer.is_some() { "push" } else { "api" };
    tracing::info!(
        repo = %body.repo.escape_debug(),
        branch = %body.branch.escape_debug(),
        commit = %body.commit.chars().take(12).collect::<String>().escape_debug(),
        author = ?body.author,
        "Build request received"
    );
    let result = app
        .enqueue(
            &body.repo,
            &body.branch,
            &body.commit,
            body.author,
            trigger,
            None,
        )
        .await;
    let (build, created) = result.inspect_err(|e| {
        tracing::warn!(repo = %body.repo.escape_debug(), branch = %body.branch.escape_debug(), error = %e, "Failed to enqueue build");
    })?;
    Ok(created_or_existing(build, created))
}

/// 201 for a build just queued, 200 for the live one it matched.
fn created_or_existing(build: crate::app::BuildView, created: bool) -> impl IntoResponse {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, axum::Json(build))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    repo: Option<String>,
    branch: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

fn parse_list(params: ListParams) -> Result<ListQuery, ApiError> {
    let limit = match params.limit.as_deref() {
        None => 50,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=500).contains(l))
            .ok_or_else(|| ApiError::invalid("limit", "limit must be an integer from 1 to 500"))?,
    };
    let before =
        match params.before.as_deref() {
            None => None,
            Some(raw) => Some(raw.parse::<i64>().ok().filter(|b| *b > 0).ok_or_else(|| {
                ApiError::invalid("before", "before must be a positive build id")
            })?),
        };
    let status = match params.status.as_deref() {
        None => None,
        Some(raw) => Some(Status::parse(raw).ok_or_else(|| {
            ApiError::invalid(
                "status",
                "status must be one of queued, running, success, failed, cancelled",
            )
        })?),
    };
    if let Some(repo) = &params.repo {
        crate::repos::validate_repo_name(repo)
            .map_err(|r| ApiError::invalid("repo", format!("invalid repository name: {r}")))?;
    }
    if let Some(branch) = &params.branch {
        crate::repos::validate_branch(branch)
            .map_err(|r| ApiError::invalid("branch", format!("invalid branch name: {r}")))?;
    }
    Ok(ListQuery {
        repo: params.repo,
        branch: params.branch,
        status,
        before,
        limit,
    })
}

/// A page of builds. Serialised straight from the builds: going through a
/// `serde_json::Value` first allocated a map per build and was most of the
/// cost of a listing.
#[derive(serde::Serialize)]
struct BuildPage {
    builds: Vec<crate::app::BuildView>,
    next_before: Option<i64>,
}

async fn list_builds(
    State(app): AppState,
    Query(params): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    let (builds, next_before) = app.list_builds(parse_list(params)?).await?;
    Ok(axum::Json(BuildPage {
        builds,
        next_before,
    }))
}

/// A build id from the path: a positive integer.
fn build_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::invalid("id", "a build id is a positive integer"))
}

async fn get_build(State(app): AppState, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(app.build(build_id(&id)?).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelParams {
    /// `page` when the web page asks; anything else is the API.
    from: Option<String>,
}

/// 200 with the cancelled build, or 202 while a running build is still
/// stopping (it is then `running` with `stopping: true`).
async fn cancel_build(
    State(app): AppState,
    Path(id): Path<String>,
    Query(params): Query<CancelParams>,
) -> ApiResult<impl IntoResponse> {
    let source = match params.from.as_deref() {
        None | Some("api") => CancelSource::Api,
        Some("page") => CancelSource::Page,
        Some(_) => {
            return Err(ApiError::invalid(
                "from",
                "from must be `page` or `api` (who asks for the cancel)",
            ));
        }
    };
    let (build, ended) = app.cancel(build_id(&id)?, &source.reason(None)).await?;
    let status = if ended {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, axum::Json(build)))
}

async fn rebuild_build(
    State(app): AppState,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let (build, created) = app.rebuild(build_id(&id)?).await?;
    Ok(created_or_existing(build, created))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    offset: Option<u64>,
    follow: Option<bool>,
    attempt: Option<i64>,
    tail: Option<u64>,
    limit: Option<u64>,
    ansi: Option<String>,
}

/// What a log request asks for, validated.
struct LogRequest {
    offset: u64,
    follow: bool,
    attempt: Option<i64>,
    window: Option<Want>,
    ansi: bool,
}

fn parse_log_params(params: LogParams) -> Result<LogRequest, ApiError> {
    let ansi = match params.ansi.as_deref() {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "ansi",
                "ansi must be 1, true, 0 or false",
            ));
        }
    };
    let follow = params.follow.unwrap_or(false);
    let size = |field: &str, value: u64| {
        if (1..=MAX_WINDOW).contains(&value) {
            Ok(value)
        } else {
            Err(ApiError::invalid(
                field,
                format!("{field} must be a number of bytes from 1 to {MAX_WINDOW}"),
            ))
        }
    };
    let window = match (params.tail, params.limit) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "tail",
                "tail and limit exclude each other",
            ));
        }
        (Some(_), _) if params.offset.is_some() => {
            return Err(ApiError::invalid(
                "tail",
                "tail reads the end of the log: it takes no offset",
            ));
        }
        (Some(tail), None) => Some(Want::Tail(size("tail", tail)?)),
        (None, Some(limit)) => Some(Want::Range {
            offset: params.offset.unwrap_or(0),
            limit: size("limit", limit)?,
        }),
        (None, None) => None,
    };
    if follow && window.is_some() {
        return Err(ApiError::invalid(
            if params.tail.is_some() {
                "tail"
            } else {
                "limit"
            },
            "follow streams to the end of the attempt: it takes no tail or limit",
        ));
    }
    Ok(LogRequest {
        offset: params.offset.unwrap_or(0),
        follow,
        attempt: params.attempt,
        window,
        ansi,
    })
}

async fn build_logs(
    State(app): AppState,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
) -> ApiResult<Response> {
    let id = build_id(&id)?;
    let request = parse_log_params(params)?;
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    if let Some(want) = request.window {
        let window = log_window(&app, id, request.attempt, want).await?;
        let mut response = (headers, ()).into_response();
        let h = response.headers_mut();
        let mut set = |name: &'static str, value: u64| {
            h.insert(name, HeaderValue::from(value));
        };
        set("x-log-offset", window.offset);
        set("x-log-line", window.line);
        set("x-log-size", window.size);
        if let Some(error) = window.first_error {
            set("x-log-first-error-line", error.line);
            set("x-log-first-error-offset", error.offset);
        }
        let bytes = if request.ansi {
            window.bytes
        } else {
            StripAnsi::default().feed(&window.bytes)
        };
        *response.body_mut() = Body::from(bytes);
        return Ok(response);
    }
    let stream = log_stream(&app, id, request.attempt, request.offset, request.follow).await?;
    let body = if request.ansi {
        Body::from_stream(stream)
    } else {
        let mut strip = StripAnsi::default();
        Body::from_stream(stream.map(move |chunk| chunk.map(|c| strip.feed_bytes(c))))
    };
    Ok((headers, body).into_response())
}

/// A window of the log of attempt `attempt` (default: the latest) of build
/// `id`, read away from the executor.
async fn log_window(
    app: &Arc<App>,
    id: i64,
    attempt: Option<i64>,
    want: Want,
) -> Result<Window, ApiError> {
    let build = app.build(id).await?;
    let latest = build.build.build.attempt;
    if let Some(a) = attempt
        && (a < 1 || a > latest)
    {
        return Err(ApiError::invalid(
            "attempt",
            format!("build {id} has no attempt {a}"),
        ));
    }
    let attempt = attempt.unwrap_or(latest);
    let deleted = build
        .attempts
        .iter()
        .any(|a| a.attempt == attempt && a.log_deleted);
    if attempt == 0 || deleted {
        return Ok(Window {
            line: 1,
            ..Window::default()
        });
    }
    let logs = app.logs.clone();
    tokio::task::spawn_blocking(move || logs.window(id, attempt, want))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| {
            tracing::error!(build_id = id, attempt, error = %e, "cannot read a log");
            ApiError::internal()
        })
}

/// The log of attempt `attempt` (default: the latest) of build `id`. With
/// `follow`, a build that has not started yet is waited for, and the stream
/// lasts until the attempt ends (or the daemon stops).
async fn log_stream(
    app: &Arc<App>,
    id: i64,
    attempt: Option<i64>,
    offset: u64,
    follow: bool,
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, ApiError> {
    let mut listener = app.events.listen();
    let mut build = app.build(id).await?;
    if let Some(a) = attempt
        && (a < 1 || a > build.build.build.attempt)
    {
        return Err(ApiError::invalid(
            "attempt",
            format!("build {id} has no attempt {a}"),
        ));
    }
    while follow && attempt.is_none() && build.build.build.status == Status::Queued {
        tokio::select! {
            event = listener.recv() => {
                if event.is_ok_and(|e| e.build != Some(id)) {
                    continue;
                }
            }
            _ = app.shutdown.cancelled() => break,
        }
        build = app.build(id).await?;
    }
    let attempt = attempt.unwrap_or(build.build.build.attempt);
    let shutdown = app.shutdown.clone().cancelled_owned();
    let stream = if attempt == 0
        || build
            .attempts
            .iter()
            .any(|a| a.attempt == attempt && a.log_deleted)
    {
        futures_util::stream::empty().boxed()
    } else {
        app.logs.stream(id, attempt, offset, follow).boxed()
    };
    Ok(stream
        .map(|chunk| match chunk {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Bytes::new()),
            other => other,
        })
        .take_until(shutdown))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    build: Option<String>,
    offset: Option<u64>,
}

/// Server-Sent Events: build and repository changes for everyone, and with
/// `?build=<id>` that build's log as `build.log` events.
async fn events(
    State(app): AppState,
    headers: HeaderMap,
    Query(params): Query<EventParams>,
) -> ApiResult<impl IntoResponse> {
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let build = params.build.as_deref().map(build_id).transpose()?;
    let subscription = app.events.subscribe(last_id);
    let mut head = Vec::new();
    if subscription.resync {
        head.push(SseEvent::default().event("resync").data("{}"));
    }
    head.extend(subscription.replay.iter().map(to_sse));
    let live = futures_util::stream::unfold(subscription.live, |mut receiver| async move {
        match receiver.recv().await {
            Ok(event) => Some((to_sse(&event), receiver)),
            // Missed events cannot be replayed: the client reloads.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                Some((SseEvent::default().event("resync").data("{}"), receiver))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    let feed = futures_util::stream::iter(head).chain(live).boxed();
    let feed = match build {
        None => feed,
        Some(id) => {
            app.build(id).await?;
            let offset = params.offset.unwrap_or(0);
            // Opened inside the stream: for a queued build it waits for the
            // start, and the other events must flow meanwhile.
            let app = app.clone();
            let log = futures_util::stream::once(async move {
                match log_stream(&app, id, None, offset, true).await {
                    Ok(log) => log_events(id, offset, log).boxed(),
                    Err(_) => futures_util::stream::empty().boxed(),
                }
            })
            .flatten();
            futures_util::stream::select(feed, log).boxed()
        }
    };
    let shutdown = app.shutdown.clone().cancelled_owned();
    let stream = feed.map(Ok::<_, Infallible>).take_until(shutdown);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn to_sse(event: &crate::events::Event) -> SseEvent {
    SseEvent::default()
        .id(event.id.to_string())
        .event(event.kind)
        .data(&*event.data)
}

/// Log bytes as `build.log` events with the byte offset of each piece;
/// pieces end on UTF-8 boundaries so text is never split inside a character.
fn log_events(
    id: i64,
    offset: u64,
    log: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = SseEvent> + Send + 'static {
    let state = (Vec::<u8>::new(), offset);
    log.scan(state, move |(carry, offset), chunk| {
        let Ok(chunk) = chunk else {
            return futures_util::future::ready(None);
        };
        carry.extend_from_slice(&chunk);
        let valid = match std::str::from_utf8(carry) {
            Ok(_) => carry.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => carry.len(),
        };
        let piece: Vec<u8> = carry.drain(..valid).collect();
        let event = SseEvent::default().event("build.log").data(
            json!({"build": id, "offset": *offset, "text": String::from_utf8_lossy(&piece)})
                .to_string(),
        );
        *offset += piece.len() as u64;
        futures_util::future::ready(Some(event))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            accepts_gzip(&headers)
        };
        assert!(with("gzip"));
        assert!(with("gzip, deflate, br, zstd"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(!with("gzip;q=0"));
        assert!(!with("gzip; q=0.0, br"));
        assert!(!with("br, zstd"));
        assert!(!with("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
