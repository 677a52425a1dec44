//! Request size limits on the REST API (ADR 0017): a body carries at most one broker
//! message's worth, and a refused body is a problem document like any other refusal.

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// Answers `413 too_large` as a problem document where the body-limit refusal is plain text.
pub async fn too_large_as_problem(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "application/problem+json");
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE || is_problem {
        return response;
    }
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "the request body is larger than Keel accepts")
        .into_response()
}
