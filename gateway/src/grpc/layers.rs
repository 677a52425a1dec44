//! The gRPC server's layers: the caller's address stamped into each request, and an
//! audit record for every call refused before it reached a service (coalesced and
//! bounded for unauthenticated callers, see `auth::refusals`).

use std::sync::Arc;

use tonic::Status;

use super::{AUDITED_KEY, PEER_KEY, audit_input, correlation_id};
use crate::auth::Authenticator;

/// A layer that records, in the audit trail, every refused gRPC call that did not reach
/// [`run`] (malformed arguments are refused before it): so every refusal is recorded.
#[derive(Clone)]
pub struct AuditRefusals {
    auth: Arc<Authenticator>,
}

impl AuditRefusals {
    /// The layer, authenticating callers with `auth` to name them.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuditRefusals {
    type Service = AuditRefusalsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuditRefusalsService { inner, auth: self.auth.clone() }
    }
}

/// The service of [`AuditRefusals`].
#[derive(Clone)]
pub struct AuditRefusalsService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for AuditRefusalsService<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let rpc = request.uri().path().rsplit('/').next().unwrap_or_default().to_string();
        let metadata = tonic::metadata::MetadataMap::from_headers(request.headers().clone());
        let auth = self.auth.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let headers = response.headers();
            let status = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
            let refused = status.is_some_and(|code| code != 0) && !headers.contains_key(AUDITED_KEY);
            if refused && !rpc.is_empty() {
                let code = tonic::Code::from_i32(status.unwrap_or(2));
                let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let mut refusal = Status::new(code, message);
                if let Some(keel_code) = headers.get("x-keel-error-code").and_then(|v| v.to_str().ok())
                    && let Ok(value) = keel_code.parse()
                {
                    refusal.metadata_mut().insert("x-keel-error-code", value);
                }
                let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
                let principal = auth.authenticate(header).await.ok();
                let correlation = correlation_id(&metadata);
                let record = audit_input(&rpc, &metadata, &correlation, principal.as_ref(), None, Err(&refusal));
                if principal.is_none() {
                    // Anyone can repeat these: coalesced and bounded.
                    auth.refusals().record(record).await;
                } else if let Err(err) = auth.audit().append(vec![record]).await {
                    tracing::error!(error = %err, rpc, "audit record of a refusal not written");
                }
            }
            Ok(response)
        })
    }
}

/// Stamps each gRPC request with its connection's remote address ([`PEER_KEY`]).
pub fn stamp_peer(mut request: axum::http::Request<tonic::body::Body>) -> axum::http::Request<tonic::body::Body> {
    let peer = request
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .map(|addr| addr.ip().to_string());
    let headers = request.headers_mut();
    headers.remove(PEER_KEY);
    if let Some(value) = peer.and_then(|p| axum::http::HeaderValue::from_str(&p).ok()) {
        headers.insert(PEER_KEY, value);
    }
    request
}
