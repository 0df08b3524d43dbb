//! The HTTP API. Handlers parse, call `App`, and map errors through
//! `ApiError`; the router is built by `router` so tests can drive it without
//! a socket. This file holds the router, the extractors and health; the
//! handlers live with their resource (`repos`, `builds`, `logs`, `events`,
//! `cache`), the layers around them in `guards`.

mod builds;
mod cache;
mod error;
mod events;
mod guards;
mod logs;
mod repos;
mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use builds::{cancel_build, create_build, get_build, list_builds, rebuild_build};
pub use error::ApiError;
use events::events;
use guards::{
    RequestIds, authorize, check_host, drop_invalid_request_id, nosniff, refuse_declared_oversize,
};
use logs::build_logs;
use repos::{badge, change_repo, create_repo, delete_repo, get_repo, list_repos, scan_repo};

use crate::app::App;

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
        .route(
            "/api/repos/{name}",
            get(get_repo).patch(change_repo).delete(delete_repo),
        )
        .route("/api/repos/{name}/scan", post(scan_repo))
        .route("/api/repos/{name}/badge.svg", get(badge))
        .route(
            "/api/repos/{name}/upstream",
            get(upstreams::upstream_status),
        )
        .route(
            "/api/repos/{name}/pulls/{number}/approve",
            post(upstreams::approve_pull),
        )
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
    // The signature authenticates a forge's delivery; it has no token.
    let webhooks = Router::new()
        .route("/api/repos/{name}/webhook", post(upstreams::webhook))
        .with_state(app.clone());
    Router::new()
        .merge(api)
        .merge(webhooks)
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
async fn health(State(app): AppState) -> ApiResult<impl IntoResponse> {
    let status = app.status_line().await?;
    let preflight = app.preflight.lock().expect("preflight report").clone();
    // What a client needs before its first read: whether reads need the
    // token, the daemon's public address for links it builds, and what the
    // pre-flight found wrong with the host's nix.
    // Not `ok` before the pre-flight has looked at the host: a client that
    // waits for `ok` then knows nix works. Still 200, so that liveness
    // probes see an answering daemon.
    let pending = preflight.checked_at.is_none();
    // An upstream that cannot be read: its new commits are not built.
    let failing = app.upstreams.failing();
    let mut warnings = preflight.warnings.clone();
    for (repo, status) in &failing {
        warnings.push(crate::build::preflight::Warning {
            code: "upstream_failing",
            message: format!(
                "the upstream of repository {repo} cannot be read (failures in a row: {}; \
                 next try at {}): {}",
                status.failures,
                status.next_check_at.as_deref().unwrap_or("-"),
                status.last_error.as_deref().unwrap_or("-")
            ),
        });
    }
    let verdict = if pending {
        "starting"
    } else if warnings.is_empty() {
        "ok"
    } else {
        "degraded"
    };
    Ok(axum::Json(json!({
        "status": verdict,
        "warnings": warnings,
        "preflight": {
            "pending": pending,
            "checked_at": preflight.checked_at,
            "nix_version": preflight.nix_version,
        },
        // Where the token is, so that the page's token dialog can say: a
        // path, never the token.
        "api_token_file": app.token.source,
        "version": env!("CARGO_PKG_VERSION"),
        "builds": status,
        "public_read": app.config.public_read,
        "public_url": app.config.public_url,
        "upstreams": {
            "mirrored": app.upstreams.count(),
            "failing": failing,
        },
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
