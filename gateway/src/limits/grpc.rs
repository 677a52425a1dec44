//! The gRPC API's request limits, a tower layer: at most so many calls in progress
//! (beyond it a call is shed at once with `UNAVAILABLE`, never queued), and each
//! answered within the request timeout (else `DEADLINE_EXCEEDED`). Long-lived streams
//! ([`LONG_LIVED`]) are exempt from both: they hold a stream slot instead.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::grpc::status::coded;

/// The RPCs that stay open as long as the client sends (paths).
pub const LONG_LIVED: [&str; 1] = ["/keel.v1.BillingService/IngestEvents"];

/// The layer.
#[derive(Debug, Clone)]
pub struct GrpcLimits {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl GrpcLimits {
    /// At most `max_in_progress` calls at once, each answered within `timeout`.
    pub fn new(max_in_progress: usize, timeout: Duration) -> Self {
        Self { permits: Arc::new(Semaphore::new(max_in_progress.max(1))), timeout }
    }
}

impl<S> tower::Layer<S> for GrpcLimits {
    type Service = GrpcLimitsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcLimitsService { inner, limits: self.clone() }
    }
}

/// The service of [`GrpcLimits`].
#[derive(Debug, Clone)]
pub struct GrpcLimitsService<S> {
    inner: S,
    limits: GrpcLimits,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for GrpcLimitsService<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        if LONG_LIVED.contains(&request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = self.limits.permits.clone().try_acquire_owned() else {
            let status = coded(tonic::Code::Unavailable, "overloaded", "too many calls in progress; retry");
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let timeout = self.limits.timeout;
        let call = self.inner.call(request);
        Box::pin(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, call).await {
                Ok(answer) => answer,
                Err(_elapsed) => {
                    Ok(coded(tonic::Code::DeadlineExceeded, "timeout", "the call took too long; retry").into_http())
                }
            }
        })
    }
}
