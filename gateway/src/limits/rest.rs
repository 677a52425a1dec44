//! The REST API's request limits: at most so many requests in progress (beyond it a
//! request is shed at once with `503 overloaded` + `Retry-After`, never queued), and
//! each answered within the request timeout (else `503 timeout`). An event stream's
//! handler answers at once, so its body is not timed (it holds a stream slot instead).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::rest::problem::Problem;

/// The REST limits: the in-progress permits and the timeout.
#[derive(Debug, Clone)]
pub struct RestLimits {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl RestLimits {
    /// At most `max_in_progress` requests at once, each answered within `timeout`.
    pub fn new(max_in_progress: usize, timeout: Duration) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_in_progress.max(1))), timeout }
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn limit(State(limits): State<RestLimits>, request: Request, next: Next) -> Response {
    let Ok(_permit) = limits.permits.try_acquire_owned() else {
        return Problem::unavailable("overloaded", "too many requests in progress; retry", 1).into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => Problem::unavailable("timeout", "the request took too long; retry", 1).into_response(),
    }
}
