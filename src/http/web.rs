//! The web page: files from `static/`, embedded at compile time and served
//! with ETags and a strict Content-Security-Policy; and the status badge.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::build::queue::Status;

/// Scripts and styles only from this origin, no inline code, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const FAVICON: &[u8] = include_bytes!("../../static/favicon.svg");

/// A JavaScript module of the page (the page is split along its views).
macro_rules! script {
    ($name:literal) => {
        Asset {
            path: concat!("/", $name, ".js"),
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!(concat!("../../static/", $name, ".js")),
        }
    };
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../static/index.html"),
    },
    script!("app"),
    script!("ui"),
    script!("api"),
    script!("feed"),
    script!("log"),
    script!("builds"),
    script!("build"),
    script!("repos"),
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../static/style.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: FAVICON,
    },
    // Browsers ask for it on pages that name no icon (a raw log in a tab);
    // the content type, not the name, tells them it is SVG.
    Asset {
        path: "/favicon.ico",
        content_type: "image/svg+xml",
        body: FAVICON,
    },
];

/// A strong ETag from the content (FNV-1a; collisions only cost a reload).
fn etag(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    });
    format!("\"{hash:016x}\"")
}

fn serve(asset: &'static Asset, tag: &str, headers: &HeaderMap) -> Response {
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(tag).expect("hex etag"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Routes for the embedded files. Each file's ETag is computed once, here,
/// not at every request.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let tag = etag(asset.body);
        router.route(
            asset.path,
            get(move |headers: HeaderMap| {
                let response = serve(asset, &tag, &headers);
                async move { response }
            }),
        )
    })
}

/// A shields-style SVG badge for the latest build status of a branch.
pub fn badge_svg(status: Option<Status>) -> String {
    let (label, colour) = match status {
        Some(Status::Success) => ("passing", "#2e7d32"),
        Some(Status::Failed) => ("failing", "#c62828"),
        Some(Status::Queued | Status::Running) => ("running", "#b26a00"),
        Some(Status::Cancelled) | None => ("unknown", "#616161"),
    };
    let left = 30 + 6 * 6;
    let right = 12 + 7 * label.len();
    let width = left + right;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" aria-label="build: {label}"><title>build: {label}</title><rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" fill="{colour}"/><g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" text-anchor="middle"><text x="{lx}" y="14">build</text><text x="{rx}" y="14">{label}</text></g></svg>"##,
        lx = left / 2,
        rx = left + right / 2,
    )
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router::<()>()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn files_are_served_with_an_etag_that_answers_304() {
        for asset in ASSETS {
            let response = get(asset.path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            let headers = response.headers().clone();
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
            let tag = headers[header::ETAG].to_str().unwrap().to_string();
            assert_eq!(tag, etag(asset.body));
            let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
            assert_eq!(&body[..], asset.body, "{}", asset.path);

            let cached = get(asset.path, Some(&format!("\"other\", {tag}"))).await;
            assert_eq!(cached.status(), StatusCode::NOT_MODIFIED, "{}", asset.path);
            assert_eq!(cached.headers()[header::ETAG], tag.as_str());
            let body = to_bytes(cached.into_body(), usize::MAX).await.unwrap();
            assert!(body.is_empty());
            let stale = get(asset.path, Some("\"0000000000000000\"")).await;
            assert_eq!(stale.status(), StatusCode::OK, "{}", asset.path);
        }
        // Every module a script imports is served: a module left out of
        // `ASSETS` would stop the whole page.
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for import in text.split("from \"./").skip(1) {
                let name = format!("/{}", import.split('"').next().unwrap());
                assert!(
                    ASSETS.iter().any(|a| a.path == name),
                    "{} imports {name}, which is not served",
                    asset.path
                );
            }
        }
        // Different files have different tags.
        let tags: std::collections::BTreeSet<_> = [ASSETS[0].body, ASSETS[1].body, ASSETS[2].body]
            .map(etag)
            .into();
        assert_eq!(tags.len(), 3);
    }
}
