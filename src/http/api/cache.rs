//! `/nix-cache/`: the binary cache's HTTP face. Parsing and headers only;
//! what is served and how is `crate::cache::serve`.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiResult, Path};
use crate::app::{App, AppError};
use crate::cache::serve;
use crate::http::streams::{Peer, holding};

/// A NAR's bytes never change for its store path: a proxy may keep it.
/// A private daemon's cache is for token holders only, so shared caches
/// must not keep it.
fn nar_cache_control(app: &App) -> &'static str {
    if app.config.public_read {
        "public, max-age=31536000, immutable"
    } else {
        "private, max-age=31536000, immutable"
    }
}

/// A narinfo may become "not found" when its path is collected; kept
/// briefly.
fn narinfo_cache_control(app: &App) -> &'static str {
    if app.config.public_read {
        "public, max-age=300"
    } else {
        "private, max-age=300"
    }
}

/// `GET /nix-cache/nix-cache-info`.
pub async fn info(State(app): State<Arc<App>>) -> ApiResult<Response> {
    serve::enabled(&app)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/x-nix-cache-info"),
            (header::CACHE_CONTROL, narinfo_cache_control(&app)),
        ],
        serve::CACHE_INFO,
    )
        .into_response())
}

/// `GET /nix-cache/{hash}.narinfo`.
pub async fn narinfo(State(app): State<Arc<App>>, Path(file): Path<String>) -> ApiResult<Response> {
    let hash = file
        .strip_suffix(".narinfo")
        .ok_or_else(|| AppError::NotFound(format!("{file} is not in this cache")))?;
    let text = serve::narinfo(&app, hash).await?;
    Ok((
        [
            (header::CONTENT_TYPE, serve::NARINFO_TYPE),
            (header::CACHE_CONTROL, narinfo_cache_control(&app)),
        ],
        text,
    )
        .into_response())
}

/// `GET /nix-cache/nar/{hash}.nar.zst`.
pub async fn nar(
    State(app): State<Arc<App>>,
    peer: Option<Extension<Peer>>,
    Path(file): Path<String>,
) -> ApiResult<Response> {
    let hash = file
        .strip_suffix(".nar.zst")
        .ok_or_else(|| AppError::NotFound(format!("nar/{file} is not in this cache")))?;
    let slot = peer.as_deref().map(Peer::download).transpose()?;
    let stream = holding(serve::nar(&app, hash).await?, slot);
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-nix-nar"),
            (header::CACHE_CONTROL, nar_cache_control(&app)),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
