//! The event stream (`/api/events`): every change, or one build's, as
//! server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::builds::build_id;
use super::logs::log_stream;
use super::{ApiResult, AppState, Query};
use crate::http::streams::{Peer, holding, stream_slot};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventParams {
    build: Option<String>,
    offset: Option<u64>,
}

/// Server-Sent Events: build and repository changes for everyone, and with
/// `?build=<id>` that build's log as `build.log` events.
pub(super) async fn events(
    State(app): AppState,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Query(params): Query<EventParams>,
) -> ApiResult<impl IntoResponse> {
    let slot = stream_slot(peer.as_deref())?;
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
    let stream = holding(feed.map(Ok::<_, Infallible>).take_until(shutdown), slot);
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
