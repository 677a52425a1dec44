//! The gRPC command API (`keel.v1`): one file per service, and what they share —
//! correlation ids, the authenticate → authorize → command-context sequence around
//! each call with its audit record (here), status mapping (`status`), request and
//! answer fields (`fields`) and the server's layers (`layers`).

pub mod apps;
pub mod billing;
pub mod call_metrics;
pub mod fields;
pub mod flags;
pub mod layers;
pub mod routing;
pub mod status;
pub mod tenants;
pub mod users;

use tonic::{Response, Status};
use tracing::Instrument;

use keel_commands::bus::CommandContext;
use keel_commands::command_scope::{self, Committed};
use keel_domain::access::{Action, Principal, Target, authorize};
use keel_domain::audit::{AuditInput, Outcome};
use keel_domain::ids::TenantId;

use crate::auth::Authenticator;
use status::{auth_status, denied_status, keel_code};

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
    // An unauthenticated call is never filed under the tenant it names (ADR 0018): the
    // platform chain, with the name as unverified context.
    let tenant_id = match principal {
        Some(_) => target.map(TenantId::to_string).or(own_tenant),
        None => {
            if let Some(claimed) = target {
                context.insert(crate::auth::refusals::CLAIMED_TENANT_KEY.into(), claimed.to_string().into());
            }
            None
        }
    };
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
            let code = keel_code(status).unwrap_or_else(|| format!("{:?}", status.code()).to_lowercase());
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
/// accepted or refused, is recorded in the audit trail: a command's record commits in
/// the same transaction as each change it appends (ADR 0016); a refusal, or a success
/// that changed nothing, gets its record afterwards.
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
    let mut committed = Committed::default();
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
        let record = audit_input(rpc, metadata, &correlation, Some(&principal), target, Ok(()));
        let (result, appended) = command_scope::audited(record, body(ctx, principal)).await;
        committed = appended;
        match &result {
            Ok(_) => tracing::info!("command accepted"),
            Err(s) => tracing::info!(code = ?s.code(), "command refused"),
        }
        result
    }
    .instrument(span)
    .await;
    if result.is_err() || committed.audited_appends == 0 {
        let record = audit_input(rpc, metadata, &correlation, caller.as_ref(), target, result.as_ref().map(|_| ()));
        if caller.is_none() {
            // Unauthenticated: coalesced and bounded, on the platform chain (ADR 0018).
            auth.refusals().record(record).await;
        } else if let Err(err) = auth.audit().append(vec![record]).await {
            tracing::error!(error = %err, rpc, "audit record not written");
        }
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
