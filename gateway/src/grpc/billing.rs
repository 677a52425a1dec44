//! gRPC `keel.v1.BillingService`: streamed usage ingestion and the rollup allowlist.

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use keel_commands::billing::{BatchResult, BillingCommands, Outcome};
use keel_domain::access::{Action, Principal};
use keel_domain::ids::AppId;
use keel_domain::usage::{MAX_BATCH, Rejection, UsageInput};

use super::fields::{json_object, rfc3339};
use super::status::{auth_status, coded, status};
use crate::auth::Authenticator;
use crate::limits::streams::{StreamRefused, StreamSlots};
use crate::proto::billing_service_server::BillingService;
use crate::proto::{
    BillingCommandResponse, EventOutcome, IngestSummary, ListRollupAllowlistRequest, ListRollupAllowlistResponse,
    RollupAllowlistEntry, RollupEventTypeRequest, UsageEvent,
};

/// How long a chunk waits for more events once it has one.
const LINGER: Duration = Duration::from_millis(5);
/// Most not-accepted events listed in a summary (the counts stay complete).
const MAX_LISTED: usize = 10_000;

/// The billing command API.
pub struct BillingApi {
    commands: Arc<BillingCommands>,
    auth: Arc<Authenticator>,
    streams: Arc<StreamSlots>,
    recheck: Duration,
}

impl BillingApi {
    /// The API over `commands`, authenticating with `auth`; an ingestion stream holds one of
    /// `streams` while open and re-checks its key every `recheck`.
    pub fn new(
        commands: Arc<BillingCommands>,
        auth: Arc<Authenticator>,
        streams: Arc<StreamSlots>,
        recheck: Duration,
    ) -> Self {
        Self { commands, auth, streams, recheck }
    }

    /// UNAUTHENTICATED (with the key's refusal code) once `credential` stops working.
    async fn still_authenticated(&self, credential: Option<&str>) -> Result<(), Status> {
        self.auth.authenticate(credential).await.map(|_| ()).map_err(|err| {
            tracing::info!(error = %err, "ingestion stream ended: its credential stopped working");
            auth_status(err)
        })
    }

    async fn set_rollup(
        &self,
        rpc: &'static str,
        request: Request<RollupEventTypeRequest>,
        allow: bool,
    ) -> Result<Response<BillingCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let key = req.idempotency_key.clone();
        super::run(&self.auth, rpc, &metadata, Action::ManageRollups, None, &key, |ctx, _| async move {
            let done = self.commands.set_rollup(&ctx, req.event_type.trim(), allow).await.map_err(|e| status(&e))?;
            Ok(BillingCommandResponse { position: done.position })
        })
        .await
    }
}

/// The app a principal is, or PERMISSION_DENIED: usage is reported by managed apps only.
pub fn reporting_app(principal: &Principal) -> Result<AppId, Status> {
    match principal {
        Principal::App { id, .. } => id.parse().map_err(|_| coded(tonic::Code::Internal, "internal", "internal error")),
        _ => Err(coded(tonic::Code::PermissionDenied, "apps_only", "usage is reported by managed apps (API keys)")),
    }
}

/// A streamed event as ingestion input.
fn input(event: UsageEvent) -> UsageInput {
    UsageInput {
        event_id: event.event_id,
        tenant_id: event.tenant_id,
        event_type: event.event_type,
        quantity: Some(event.quantity),
        timestamp: event.timestamp.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)),
        properties: event.properties.map(json_object),
    }
}

/// Adds a chunk's answers to the summary; `offset` is the chunk's first index in the stream.
fn tally(summary: &mut IngestSummary, chunk: BatchResult, offset: usize) {
    summary.position = summary.position.max(chunk.position);
    for result in chunk.results {
        let (status, reason, detail) = match result.outcome {
            Outcome::Accepted => {
                summary.accepted += 1;
                continue;
            }
            Outcome::Duplicate => {
                summary.duplicates += 1;
                ("duplicate", String::new(), String::new())
            }
            Outcome::Rejected { reason, detail, .. } => {
                summary.rejected += 1;
                ("rejected", reason.to_string(), detail)
            }
        };
        if summary.not_accepted.len() < MAX_LISTED {
            summary.not_accepted.push(EventOutcome {
                index: (offset + result.index) as i64,
                event_id: result.event_id.unwrap_or_default(),
                status: status.into(),
                reason,
                detail,
            });
        }
    }
}

#[tonic::async_trait]
impl BillingService for BillingApi {
    async fn ingest_events(&self, request: Request<Streaming<UsageEvent>>) -> Result<Response<IngestSummary>, Status> {
        let (metadata, _, mut stream) = request.into_parts();
        let credential = metadata.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        super::run(&self.auth, "IngestEvents", &metadata, Action::RecordUsage, None, "", |ctx, principal| async move {
            let app = reporting_app(&principal)?;
            let _slot = self.streams.open(&principal).map_err(|refused| {
                let code = match refused {
                    StreamRefused::CallerFull => "too_many_streams",
                    StreamRefused::Full => "streams_full",
                };
                coded(tonic::Code::ResourceExhausted, code, &refused.to_string())
            })?;
            // A revoked or expired key, or a disabled app, ends the stream within `recheck`.
            let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + self.recheck, self.recheck);
            let mut summary = IngestSummary::default();
            let mut seen = 0;
            loop {
                let next = tokio::select! {
                    // First: a busy stream still re-checks on time.
                    biased;
                    _ = recheck.tick() => {
                        self.still_authenticated(credential.as_deref()).await?;
                        continue;
                    }
                    next = stream.next() => next,
                };
                let Some(first) = next else { break };
                let mut chunk: Vec<Result<UsageInput, Rejection>> = vec![Ok(input(first?))];
                let deadline = tokio::time::Instant::now() + LINGER;
                let mut ended = false;
                while chunk.len() < MAX_BATCH {
                    match tokio::time::timeout_at(deadline, stream.next()).await {
                        Ok(Some(event)) => chunk.push(Ok(input(event?))),
                        Ok(None) => {
                            ended = true;
                            break;
                        }
                        Err(_linger_over) => break,
                    }
                }
                let size = chunk.len();
                let done = self.commands.record(&app, &ctx, chunk).await.map_err(|e| status(&e))?;
                tally(&mut summary, done, seen);
                seen += size;
                if ended {
                    break;
                }
            }
            Ok(summary)
        })
        .await
    }

    async fn allow_rollup_event_type(
        &self,
        request: Request<RollupEventTypeRequest>,
    ) -> Result<Response<BillingCommandResponse>, Status> {
        self.set_rollup("AllowRollupEventType", request, true).await
    }

    async fn disallow_rollup_event_type(
        &self,
        request: Request<RollupEventTypeRequest>,
    ) -> Result<Response<BillingCommandResponse>, Status> {
        self.set_rollup("DisallowRollupEventType", request, false).await
    }

    async fn list_rollup_allowlist(
        &self,
        request: Request<ListRollupAllowlistRequest>,
    ) -> Result<Response<ListRollupAllowlistResponse>, Status> {
        let (metadata, _, _) = request.into_parts();
        super::run(&self.auth, "ListRollupAllowlist", &metadata, Action::ReadRollups, None, "", |_, _| async {
            let entries = self.commands.allowlist().await.map_err(|e| status(&e))?;
            Ok(ListRollupAllowlistResponse {
                entries: entries
                    .into_iter()
                    .map(|e| RollupAllowlistEntry {
                        event_type: e.event_type,
                        added_by: e.added_by,
                        added_at: rfc3339(e.added_at),
                    })
                    .collect(),
            })
        })
        .await
    }
}
