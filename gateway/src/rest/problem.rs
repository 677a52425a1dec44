//! REST errors: RFC 7807 problem documents (`application/problem+json`). They never
//! carry SQL, stack traces or internal names.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use keel_commands::bus::{CommandError, Failure};
use keel_domain::access::Denied;

use crate::auth::AuthError;

/// An RFC 7807 problem document (`application/problem+json`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this case.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// The request's correlation id, for support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Seconds to wait before retrying (also sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl Problem {
    /// A problem with `status`, a stable `code` and a `detail`.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://keel.dev/problems/{}", code.replace('_', "-")),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_string(),
            correlation_id: None,
            retry_after: None,
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 404, the same whether the thing is absent or hidden from the caller.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    /// 503 with a `Retry-After`.
    pub fn unavailable(code: &str, detail: impl Into<String>, retry_after: u32) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail) }
    }

    /// 500, logged with the cause; the caller sees nothing of it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl From<sqlx::Error> for Problem {
    fn from(err: sqlx::Error) -> Self {
        tracing::error!(error = %err, "database error");
        Self::unavailable("unavailable", "the service is temporarily unavailable; retry", 1)
    }
}

impl From<AuthError> for Problem {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Missing => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "a bearer credential is required")
            }
            AuthError::Invalid => Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "the credential is not valid"),
            AuthError::SessionEnded => Self::new(StatusCode::UNAUTHORIZED, "session_expired", err.to_string()),
            AuthError::Unavailable => Self::unavailable("unavailable", err.to_string(), 1),
            AuthError::KeyRevoked | AuthError::KeyExpired | AuthError::AppDisabled => {
                Self::new(StatusCode::UNAUTHORIZED, err.code(), err.to_string())
            }
        }
    }
}

impl From<CommandError> for Problem {
    fn from(err: CommandError) -> Self {
        let status = match err.failure {
            Failure::InvalidArgument => StatusCode::BAD_REQUEST,
            Failure::NotFound | Failure::Gone => StatusCode::NOT_FOUND,
            Failure::AlreadyExists | Failure::Aborted => StatusCode::CONFLICT,
            // ERR-VAL-422: the request is well-formed but the state forbids it.
            Failure::FailedPrecondition => StatusCode::UNPROCESSABLE_ENTITY,
            Failure::PermissionDenied => StatusCode::FORBIDDEN,
            Failure::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Failure::Unavailable => return Self::unavailable(&err.code, err.message, 1),
            Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, &err.code, err.message)
    }
}

impl From<Denied> for Problem {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Hidden => Self::not_found(),
            Denied::NotPermitted => Self::new(StatusCode::FORBIDDEN, "permission_denied", "you may not do this"),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
