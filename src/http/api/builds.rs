//! Builds: enqueue, list, one build, cancel and rebuild.

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use crate::build::diagnosis::CancelSource;
use crate::build::queue::{ListQuery, Status};
use crate::http::auth::LocalPeer;

use super::{ApiError, ApiResult, AppState, Json, Path, Query};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBuild {
    repo: String,
    branch: String,
    commit: String,
    author: Option<String>,
}

pub(super) async fn create_build(
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
pub(super) struct ListParams {
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

pub(super) async fn list_builds(
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
pub(super) fn build_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::invalid("id", "a build id is a positive integer"))
}

pub(super) async fn get_build(
    State(app): AppState,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(axum::Json(app.build(build_id(&id)?).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelParams {
    /// `page` when the web page asks; anything else is the API.
    from: Option<String>,
}

/// 200 with the cancelled build, or 202 while a running build is still
/// stopping (it is then `running` with `stopping: true`).
pub(super) async fn cancel_build(
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

pub(super) async fn rebuild_build(
    State(app): AppState,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let (build, created) = app.rebuild(build_id(&id)?).await?;
    Ok(created_or_existing(build, created))
}
