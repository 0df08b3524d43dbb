//! Upstreams: a mirrored repository's status, and the forges' webhooks
//! (`POST /api/repos/{name}/webhook`, authenticated by its signature, not
//! the token).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{ApiError, ApiResult, AppState, MAX_BODY_BYTES, Path};

/// `GET /api/repos/{name}/upstream`: what the daemon knows of the
/// repository's upstream (never its credentials).
pub(super) async fn upstream_status(
    State(app): AppState,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    app.find_repo(&name).await?;
    // A repository that mirrors nothing has no upstream to show, which is
    // no error: the page asks every repository.
    Ok(match app.upstreams.status(&name) {
        Some(status) => axum::Json(status).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `POST /api/repos/{name}/webhook`: 202 when the daemon looks at the
/// upstream now, 200 for a ping or a replayed delivery, 401 when the
/// signature does not hold.
pub(super) async fn webhook(
    State(app): AppState,
    Path(name): Path<String>,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    let (parts, body) = request.into_parts();
    let deadline = Duration::from_secs(app.config.client_stall_timeout_secs);
    let body =
        match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
                ));
            }
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the request body did not arrive in time",
                ));
            }
        };
    // One value per header: two signatures would leave which one counts to
    // whoever reads them.
    let header = |name: &str| {
        let mut values = parts.headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        }
    };
    let answer = app.webhook(&name, header, &body).await?;
    let status = if answer.status == "accepted" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(answer)))
}

/// `POST /api/repos/{name}/pulls/{number}/approve`: a maintainer lets the
/// head of a fork's pull request that waits for approval build (without
/// secrets). 201 with the build, 200 when an identical build exists.
pub(super) async fn approve_pull(
    State(app): AppState,
    Path((name, number)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let number: u64 = number
        .parse()
        .map_err(|_| ApiError::invalid("number", "a pull request number is a positive integer"))?;
    let (build, created) = app.approve_pull(&name, number).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(build)))
}
