//! What every gRPC service shares: correlation ids, and the authenticate → authorize →
//! command-context sequence around each call.

use tonic::{Response, Status};
use tracing::Instrument;

use keel_commands::bus::CommandContext;
use keel_domain::access::{Action, Principal, Target, authorize};
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

/// Authenticates, authorizes `action` on `target` and builds the command context; runs
/// `body` in a span carrying the correlation id, which every answer echoes.
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
    let result = async {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let principal = auth.authenticate(header).await.map_err(|e| {
            tracing::info!(error = %e, "unauthenticated command");
            auth_status(e)
        })?;
        authorize(&principal, action, Target { tenant: target, plan: None }).map_err(|d| {
            tracing::info!(actor = %principal.actor(), "command denied");
            denied_status(d)
        })?;
        let ctx = CommandContext::new(principal.actor(), correlation.clone(), idempotency_key.to_string());
        let result = body(ctx, principal).await;
        match &result {
            Ok(_) => tracing::info!("command accepted"),
            Err(s) => tracing::info!(code = ?s.code(), "command refused"),
        }
        result
    }
    .instrument(span)
    .await;
    let value = correlation.parse().ok();
    match result {
        Ok(body) => {
            let mut response = Response::new(body);
            if let Some(value) = value {
                response.metadata_mut().insert("x-correlation-id", value);
            }
            Ok(response)
        }
        Err(mut status) => {
            if let Some(value) = value {
                status.metadata_mut().insert("x-correlation-id", value);
            }
            Err(status)
        }
    }
}
