//! Repositories: list, create, view (a page of branches), delete, scan,
//! and the status badge.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::repos::views::{BRANCH_PAGE_MAX, BranchPage};

use super::{ApiError, ApiResult, AppState, Json, Path, Query};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRepo {
    name: String,
    #[serde(default)]
    description: String,
    /// The branch its `HEAD` names; `main` unless given.
    default_branch: Option<String>,
    upstream: Option<String>,
    upstream_credentials_file: Option<std::path::PathBuf>,
    poll_interval_secs: Option<u64>,
    webhook_secret_file: Option<std::path::PathBuf>,
    build_fork_pull_requests: Option<bool>,
    /// Where its builds' commit statuses go (see `[repos.NAME]`).
    forge: Option<crate::config::Forge>,
    forge_api_url: Option<String>,
    forge_repo: Option<String>,
    forge_token_file: Option<std::path::PathBuf>,
    forge_check_statuses: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangeRepo {
    default_branch: String,
}

/// Serialised JSON, sent as it is.
fn json_bytes(bytes: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], bytes)
}

pub(super) async fn list_repos(State(app): AppState) -> ApiResult<impl IntoResponse> {
    Ok(json_bytes(app.views.summaries()))
}

pub(super) async fn create_repo(
    State(app): AppState,
    Json(body): Json<CreateRepo>,
) -> ApiResult<impl IntoResponse> {
    let upstream = crate::app::UpstreamRequest {
        upstream: body.upstream,
        upstream_credentials_file: body.upstream_credentials_file,
        poll_interval_secs: body.poll_interval_secs,
        webhook_secret_file: body.webhook_secret_file,
        build_fork_pull_requests: body.build_fork_pull_requests,
    }
    .settings()?;
    let repo = app
        .create_repo(
            body.name,
            body.description,
            body.default_branch,
            upstream,
            crate::config::ForgeKeys {
                forge: body.forge,
                forge_api_url: body.forge_api_url,
                forge_repo: body.forge_repo,
                forge_token_file: body.forge_token_file,
                forge_check_statuses: body.forge_check_statuses,
            },
        )
        .await?;
    let mut json = serde_json::to_value(&repo).map_err(|_| ApiError::internal())?;
    if let Some(status) = app.upstreams.status(&repo.name) {
        json["upstream"] = serde_json::to_value(status).map_err(|_| ApiError::internal())?;
    }
    Ok((StatusCode::CREATED, axum::Json(json)))
}

/// `PATCH /api/repos/{name}`: changes the default branch; answers the
/// repository's view as `GET` does.
pub(super) async fn change_repo(
    State(app): AppState,
    Path(name): Path<String>,
    Json(body): Json<ChangeRepo>,
) -> ApiResult<impl IntoResponse> {
    app.set_default_branch(&name, body.default_branch).await?;
    let (json, _) = app.repo_detail(&name, BranchPage::default(), false).await?;
    Ok(json_bytes(json))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RepoQuery {
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
pub(super) async fn get_repo(
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
pub(super) struct DeleteQuery {
    confirm: Option<String>,
}

pub(super) async fn delete_repo(
    State(app): AppState,
    Path(name): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult<impl IntoResponse> {
    app.delete_repo(&name, query.confirm.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn scan_repo(
    State(app): AppState,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let queued = app.scan(Some(&name)).await?;
    // A mirrored repository also looks at its upstream now.
    app.upstreams.look(&name);
    Ok(axum::Json(json!({ "queued": queued })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BadgeQuery {
    branch: Option<String>,
}

pub(super) async fn badge(
    State(app): AppState,
    Path(name): Path<String>,
    Query(query): Query<BadgeQuery>,
) -> ApiResult<impl IntoResponse> {
    // Without `?branch`, the repository's default branch (its `HEAD`).
    let branch = match query.branch {
        Some(branch) => {
            crate::repos::validate_branch(&branch)
                .map_err(|r| ApiError::invalid("branch", format!("invalid branch name: {r}")))?;
            Some(branch)
        }
        None => app.default_branch(&name).await?,
    };
    let status = match branch {
        Some(branch) => app.branch_status(&name, &branch).await?,
        None => None,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::http::web::badge_svg(status),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, header};

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
