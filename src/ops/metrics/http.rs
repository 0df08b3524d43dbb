//! The HTTP side of the metrics: the scrape endpoint, and the middleware
//! that counts requests and open event streams.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use prometheus_client::metrics::gauge::Gauge;

use super::UNMATCHED_ROUTE;
use crate::app::App;

/// The route whose open responses count as SSE subscribers.
const EVENTS_ROUTE: &str = "/api/events";

/// Decrements the SSE gauge when the stream it rides along with ends.
struct SubscriberGuard(Gauge);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics`.
pub async fn handler(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.store.read(crate::build::queue::counts).await {
        Ok((queued, running)) => {
            app.metrics.queued.set(queued);
            app.metrics.running.set(running);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read queue counts for /metrics"),
    }
    match app.store.read(crate::cache::pending_pushes).await {
        Ok(pending) => {
            app.metrics.cache_pushes_pending.set(pending);
        }
        Err(e) => tracing::warn!(error = %e, "cannot count pending pushes for /metrics"),
    }
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (content_type, text) = app.metrics.encode(openmetrics);
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// Middleware counting HTTP requests by route pattern (`MatchedPath`, never
/// the raw path) and status; responses of `/api/events` count as SSE
/// subscribers while their body is open.
pub async fn count_requests(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status();
    app.metrics.http_request(
        &method,
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        status.as_u16(),
    );
    if route.as_deref() == Some(EVENTS_ROUTE) && status.is_success() {
        let gauge = app.metrics.sse_subscribers.clone();
        gauge.inc();
        let guard = SubscriberGuard(gauge);
        let (parts, body) = response.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _ = &guard;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    response
}
