//! What every gRPC service shares: correlation ids, and the authenticate → authorize →
//! command-context sequence around each call.

use tonic::{Response, Status};
use tracing::Instrument;

use keel_commands::bus::CommandContext;
use keel_domain::access::{Action, Principal, Target, authorize};
use keel_domain::audit::{AuditInput, Outcome};
use keel_domain::ids::TenantId;

use crate::auth::Authenticator;
use crate::errors::{auth_status, denied_status};

/// The correlation id of a request: `x-correlation-id` if sane, else a new one.
pub fn correlation_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The metadata key the server sets to the caller's address, from the connection (a
/// value the client sent is replaced), for the audit trail.
pub const PEER_KEY: &str = "x-keel-peer";

/// The metadata key on answers whose call [`run`] recorded in the audit trail; the
/// [`AuditRefusals`] layer records the others (refused before `run`, e.g. bad input).
pub const AUDITED_KEY: &str = "x-keel-audited";

/// A layer that records, in the audit trail, every refused gRPC call that did not reach
/// [`run`] (malformed arguments are refused before it): so every refusal is recorded.
#[derive(Clone)]
pub struct AuditRefusals {
    auth: std::sync::Arc<crate::auth::Authenticator>,
}

impl AuditRefusals {
    /// The layer, authenticating callers with `auth` to name them.
    pub fn new(auth: std::sync::Arc<crate::auth::Authenticator>) -> Self {
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
    auth: std::sync::Arc<crate::auth::Authenticator>,
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
                if let Err(err) = auth.audit().append(vec![record]).await {
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

/// The audit record of a gRPC call: who, what, on which tenant, and how it ended.
fn audit_input(
    rpc: &str,
    metadata: &tonic::metadata::MetadataMap,
    correlation: &str,
    principal: Option<&Principal>,
    target: Option<&TenantId>,
    outcome: Result<(), &Status>,
) -> AuditInput {
    let text =
        |key: &str| metadata.get(key).and_then(|v| v.to_str().ok()).map(|v| v.chars().take(256).collect::<String>());
    let mut context = serde_json::Map::new();
    context.insert("correlation_id".into(), correlation.into());
    context.insert("rpc".into(), rpc.into());
    if let Some(address) = text(PEER_KEY) {
        context.insert("client_address".into(), address.into());
    }
    if let Some(agent) = text("user-agent") {
        context.insert("user_agent".into(), agent.into());
    }
    let own_tenant = match principal {
        Some(Principal::TenantUser { tenant_id, .. }) => Some(tenant_id.to_string()),
        _ => None,
    };
    let tenant_id = target.map(TenantId::to_string).or(own_tenant);
    let (actor_type, actor_id) = match principal {
        Some(p) => {
            let actor = p.actor();
            (actor.kind.as_str().to_string(), actor.id)
        }
        None => ("anonymous".to_string(), String::new()),
    };
    let (outcome, reason) = match outcome {
        Ok(()) => (Outcome::Success, None),
        Err(status) => {
            let code =
                crate::errors::keel_code(status).unwrap_or_else(|| format!("{:?}", status.code()).to_lowercase());
            (Outcome::Failure, Some(code))
        }
    };
    AuditInput {
        timestamp: chrono::Utc::now(),
        resource: tenant_id.as_ref().map_or_else(|| "platform".to_string(), |t| format!("tenant/{t}")),
        tenant_id,
        actor_type,
        actor_id,
        action: keel_domain::audit::action_of(rpc),
        outcome,
        reason,
        source: "keel".into(),
        source_event_id: None,
        metadata: context,
    }
}

/// Authenticates, authorizes `action` on `target` and builds the command context; runs
/// `body` in a span carrying the correlation id, which every answer echoes. Every call,
/// accepted or refused, is recorded in the audit trail.
pub async fn run<T, F, Fut>(
    auth: &Authenticator,
    rpc: &'static str,
    metadata: &tonic::metadata::MetadataMap,
    action: Action,
    target: Option<&TenantId>,
    idempotency_key: &str,
    body: F,
) -> Result<Response<T>, Status>
where
    F: FnOnce(CommandContext, Principal) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let correlation = correlation_id(metadata);
    let span = tracing::info_span!("command", rpc, correlation_id = %correlation);
    let mut caller = None;
    let mut command = None;
    let result = async {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let principal = auth.authenticate(header).await.map_err(|e| {
            tracing::info!(error = %e, "unauthenticated command");
            auth_status(e)
        })?;
        caller = Some(principal.clone());
        authorize(&principal, action, Target { tenant: target, plan: None }).map_err(|d| {
            tracing::info!(actor = %principal.actor(), "command denied");
            denied_status(d)
        })?;
        let ctx = CommandContext::new(principal.actor(), correlation.clone(), idempotency_key.to_string());
        command = Some(ctx.command_id);
        let result = body(ctx, principal).await;
        match &result {
            Ok(_) => tracing::info!("command accepted"),
            Err(s) => tracing::info!(code = ?s.code(), "command refused"),
        }
        result
    }
    .instrument(span)
    .await;
    let mut record = audit_input(rpc, metadata, &correlation, caller.as_ref(), target, result.as_ref().map(|_| ()));
    if result.is_ok()
        && let Some(command) = command
    {
        // What the command changed, previous values included where its events carry them.
        match auth.audit().changes_of(command).await {
            Ok(changes) if !changes.is_empty() => {
                record.metadata.insert("changes".into(), serde_json::Value::Array(changes));
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "the command's events could not be read for its audit record"),
        }
    }
    if let Err(err) = auth.audit().append(vec![record]).await {
        tracing::error!(error = %err, rpc, "audit record not written");
    }
    let value = correlation.parse().ok();
    let audited = tonic::metadata::MetadataValue::from_static("1");
    match result {
        Ok(body) => {
            let mut response = Response::new(body);
            if let Some(value) = value {
                response.metadata_mut().insert("x-correlation-id", value);
            }
            response.metadata_mut().insert(AUDITED_KEY, audited);
            Ok(response)
        }
        Err(mut status) => {
            if let Some(value) = value {
                status.metadata_mut().insert("x-correlation-id", value);
            }
            status.metadata_mut().insert(AUDITED_KEY, audited);
            Err(status)
        }
    }
}
