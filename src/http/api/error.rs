//! The one mapping of errors to HTTP: `{"error": {"code", "message",
//! "field"?}}` for every 4xx and 5xx. Server errors are logged in full and
//! shown to clients without internal detail.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// An error with `status`, machine-readable `code` and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400 for `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.to_string()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message)
        }
    }

    /// 401.
    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 for an unknown route.
    pub fn no_route() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// 405.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not accept that method",
        )
    }

    /// 500 after a panic in a handler.
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the daemon's log has the details",
        )
    }

    /// A request the HTTP layer refused before routing: it could not be
    /// parsed, or its head is over hyper's limits (100 headers, 16 KiB).
    /// Hyper answers those with an empty body;
    /// [`crate::http::listener`] puts this one in its place.
    pub fn refused(status: StatusCode) -> ApiError {
        let (code, message) = match status {
            StatusCode::URI_TOO_LONG => ("uri_too_long", "the request target is too long"),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
                "headers_too_large",
                "the request's head is too large: at most 100 headers and 16 KiB in all, request line included",
            ),
            StatusCode::HTTP_VERSION_NOT_SUPPORTED => (
                "http_version_not_supported",
                "only HTTP/1.0 and HTTP/1.1 are served",
            ),
            _ => (
                "malformed_request",
                "the request is not valid HTTP: its request line, a header or its framing cannot be parsed",
            ),
        };
        ApiError::new(status, code, message)
    }

    /// The JSON body every error response carries.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = &self.field {
            error["field"] = field.as_str().into();
        }
        json!({ "error": error })
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Invalid { field, message } => ApiError::invalid(&field, message),
            AppError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            AppError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            AppError::Unauthorized(m) => ApiError::unauthorized(&m),
            AppError::Unavailable(m) => {
                tracing::warn!(error = %m, "request refused: service unavailable");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            AppError::Internal(m) => {
                tracing::error!(error = %m, "request failed");
                ApiError::internal()
            }
        }
    }
}

/// The first `name` quoted in backticks in serde's messages ("missing field
/// `commit`").
fn quoted_field(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The field a JSON body's error is about. axum puts the path of a value of
/// the wrong type before serde's message (`…target type: name: invalid type:
/// integer `5`, expected a string…`), where the backticks quote the value,
/// not the field; missing and unknown fields are quoted instead.
fn json_field(message: &str) -> Option<String> {
    let detail = message
        .split_once("target type: ")
        .map_or(message, |(_, detail)| detail);
    if let Some((path, _)) = detail.split_once(": ")
        && !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
    {
        return Some(path.to_string());
    }
    if detail.starts_with("missing field") || detail.starts_with("unknown field") {
        return quoted_field(detail);
    }
    None
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let message = rejection.body_text();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_json",
        };
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        // serde's messages quote the field at fault; others (the content
        // type, the size) concern no field.
        let field = (code == "invalid_json")
            .then(|| json_field(&message))
            .flatten();
        ApiError {
            field,
            ..ApiError::new(status, code, message)
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let message = rejection.body_text();
        ApiError {
            field: quoted_field(&message),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message)
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // Every 503 passes: the client is told when to try again, and the
        // connection is closed rather than kept, so an overloaded daemon
        // holds nothing for a client it turned away.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: Option<u32>,
    }

    fn field_of(body: &[u8]) -> Option<String> {
        let rejection = axum::Json::<Body>::from_bytes(body).unwrap_err();
        ApiError::from(rejection).field
    }

    #[test]
    fn json_errors_name_the_field_not_the_value() {
        assert_eq!(field_of(br#"{"name":5}"#).as_deref(), Some("name"));
        assert_eq!(
            field_of(br#"{"name":"x","count":"7"}"#).as_deref(),
            Some("count")
        );
        assert_eq!(field_of(br#"{}"#).as_deref(), Some("name"));
        assert_eq!(
            field_of(br#"{"name":"x","nope":1}"#).as_deref(),
            Some("nope")
        );
        assert_eq!(field_of(b"{not json").as_deref(), None);
    }
}
