//! A build's log: whole, a window of it (the end, a range), or followed
//! while the build runs.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use crate::app::App;
use crate::build::queue::Status;
use crate::storage::logs::window::{MAX_WINDOW, StripAnsi, Want, Window};

use super::builds::build_id;
use super::{ApiError, ApiResult, AppState, Path, Query};
use crate::http::streams::{Peer, holding, stream_slot};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogParams {
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

pub(super) async fn build_logs(
    State(app): AppState,
    peer: Option<Extension<Peer>>,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
) -> ApiResult<Response> {
    let id = build_id(&id)?;
    let request = parse_log_params(params)?;
    // A followed log lasts as long as its attempt runs.
    let slot = if request.follow {
        stream_slot(peer.as_deref())?
    } else {
        None
    };
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
    let stream = holding(stream, slot);
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
pub(super) async fn log_stream(
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
