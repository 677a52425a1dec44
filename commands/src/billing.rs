//! Billing commands (ADR 0013): recording usage in batches, and the rollup allowlist.
//!
//! Usage skips the aggregate load: a batch is checked in memory, the tenants and the
//! allowlist are looked up in one round trip, and every accepted event is appended in
//! one `INSERT … ON CONFLICT DO NOTHING` that commits durably before anything is
//! acknowledged. A row that conflicts is an event the app reported before: the stored
//! one is compared, and the answer is `duplicate` (same usage) or `event_id_conflict`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use keel_domain::DomainError;
use keel_domain::envelope::keys;
use keel_domain::ids::AppId;
use keel_domain::rollup_allowlist::{ALLOWLIST_ID, RollupAllowlist, RollupAllowlistCommand};
use keel_domain::tenant::TenantStatus;
use keel_domain::usage::{self, Rejection, UsageEvent, UsageInput, UsagePolicy, ValidUsage};

use crate::bus::{self, CommandContext, CommandError, Failure, Framework};
use crate::idempotency::{Idempotency, fingerprint};

pub use crate::apps::Executed;

/// What became of one reported event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Recorded now.
    Accepted,
    /// Recorded before with the same content; not counted again.
    Duplicate,
    /// Refused; nothing was recorded.
    Rejected {
        /// The reason code, e.g. `invalid_quantity`.
        reason: &'static str,
        /// The reason in words.
        detail: String,
        /// Its class (for the status of a single-event request).
        #[serde(skip)]
        #[schemars(skip)]
        failure: Failure,
    },
}

impl From<Rejection> for Outcome {
    fn from(rejection: Rejection) -> Self {
        Outcome::Rejected {
            reason: rejection.code(),
            detail: rejection.to_string(),
            failure: Failure::from(rejection.kind()),
        }
    }
}

/// The answer for one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct EventResult {
    /// Its index in the batch.
    pub index: usize,
    /// Its `event_id`, if it had a usable one.
    pub event_id: Option<String>,
    /// What became of it.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The answer for a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchResult {
    /// One result per event, in batch order.
    pub results: Vec<EventResult>,
    /// The highest log position of the batch's accepted and duplicate events (0 if
    /// none): a query with `X-Keel-Min-Position` set to it sees them all.
    pub position: i64,
}

impl BatchResult {
    /// How many events had `outcome`'s kind.
    pub fn count(&self, kind: fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| kind(&r.outcome)).count()
    }
}

/// One allowlisted event type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AllowlistEntry {
    /// The usage event type.
    pub event_type: String,
    /// Who added it (`kind:id`).
    pub added_by: String,
    /// When.
    pub added_at: DateTime<Utc>,
}

/// Appends the accepted events; answers each stored row's aggregate id and position.
const APPEND: &str =
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
     SELECT $1, id, 1, $2, '1', p, m FROM UNNEST($3::text[], $4::jsonb[], $5::jsonb[]) AS u(id, p, m)
     ON CONFLICT DO NOTHING
     RETURNING aggregate_id, position";

/// Records usage and changes the rollup allowlist.
pub struct BillingCommands {
    pool: PgPool,
    policy: UsagePolicy,
    allowlist: Framework<RollupAllowlist>,
    idempotency: Idempotency,
}

impl BillingCommands {
    /// Billing commands on `pools` (events commit durably), with `policy` for late usage.
    pub fn new(pools: impl Into<crate::pools::Pools>, policy: UsagePolicy) -> Self {
        let pools: crate::pools::Pools = pools.into();
        let crate::pools::Pools { durable: pool, relaxed, .. } = pools.clone();
        Self { allowlist: bus::framework(&pools), idempotency: Idempotency::new(relaxed), pool, policy }
    }

    /// Records `app`'s batch (at most [`usage::MAX_BATCH`] events, already read into
    /// inputs or refused). Every event gets its own answer; an error means nothing of
    /// the batch was recorded (the database was unavailable) and the app retries.
    pub async fn record(
        &self,
        app: &AppId,
        ctx: &CommandContext,
        inputs: Vec<Result<UsageInput, Rejection>>,
    ) -> Result<BatchResult, CommandError> {
        let now = Utc::now();
        let mut results: Vec<EventResult> = Vec::with_capacity(inputs.len());
        let mut valid: Vec<(usize, ValidUsage)> = Vec::new();
        let mut first_of: HashMap<String, usize> = HashMap::new();
        for (index, input) in inputs.into_iter().enumerate() {
            let event_id = input.as_ref().ok().and_then(UsageInput::named_id).map(str::to_string);
            let outcome = match input.and_then(|i| i.validate(now, &self.policy)) {
                Err(rejection) => Outcome::from(rejection),
                Ok(usage) => match first_of.get(&usage.event_id) {
                    Some(&earlier) if valid[earlier].1 == usage => Outcome::Duplicate,
                    Some(_) => Outcome::from(Rejection::EventIdConflict),
                    None => {
                        first_of.insert(usage.event_id.clone(), valid.len());
                        valid.push((index, usage));
                        Outcome::Accepted
                    }
                },
            };
            results.push(EventResult { index, event_id, outcome });
        }
        if valid.is_empty() {
            return Ok(BatchResult { results, position: 0 });
        }

        let (statuses, allowed) = self.lookup(&valid).await.map_err(|e| CommandError::unavailable(&e))?;
        let template = serde_json::to_value(ctx.metadata(None)).map_err(|e| CommandError::unavailable(&e))?;
        let mut ids: Vec<String> = Vec::with_capacity(valid.len());
        let mut payloads: Vec<Value> = Vec::with_capacity(valid.len());
        let mut metadatas: Vec<Value> = Vec::with_capacity(valid.len());
        let mut pending: HashMap<String, (usize, ValidUsage)> = HashMap::with_capacity(valid.len());
        for (index, usage) in valid {
            let status = statuses.get(usage.tenant_id.as_str()).copied();
            let rollup = allowed.contains(&usage.event_type);
            match usage.clone().record(app, status, rollup, now, &self.policy) {
                Err(rejection) => results[index].outcome = Outcome::from(rejection),
                Ok(event) => {
                    let mut metadata = template.clone();
                    if let Some(map) = metadata.as_object_mut() {
                        map.insert(keys::EVENT_ID.into(), Uuid::now_v7().to_string().into());
                        map.insert(keys::TENANT_ID.into(), event.tenant_id().to_string().into());
                    }
                    let id = usage::aggregate_id(app, &usage.event_id);
                    let payload = serde_json::to_value(&event).map_err(|e| CommandError::unavailable(&e))?;
                    // Every field is bounded by the domain; this is the last line of defence.
                    crate::limits::check_event(&payload, &metadata)
                        .map_err(|e| CommandError::new(Failure::InvalidArgument, "too_large", e.to_string()))?;
                    payloads.push(payload);
                    metadatas.push(metadata);
                    ids.push(id.clone());
                    pending.insert(id, (index, usage));
                }
            }
        }
        if ids.is_empty() {
            return Ok(BatchResult { results, position: 0 });
        }

        let stored: Vec<(String, i64)> = sqlx::query_as(APPEND)
            .bind(usage::AGGREGATE_TYPE)
            .bind(usage::RECORDED)
            .bind(ids)
            .bind(payloads)
            .bind(metadatas)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| CommandError::unavailable(&e))?;
        let mut position = stored.iter().map(|(_, p)| *p).max().unwrap_or(0);
        for (id, _) in &stored {
            pending.remove(id);
        }
        if !pending.is_empty() {
            position = position.max(self.settle_conflicts(pending, &mut results).await?);
        }
        Ok(BatchResult { results, position })
    }

    /// Answers the events whose id the app used before: `duplicate` if the stored
    /// usage is the same, else `event_id_conflict`. Returns their highest position.
    async fn settle_conflicts(
        &self,
        pending: HashMap<String, (usize, ValidUsage)>,
        results: &mut [EventResult],
    ) -> Result<i64, CommandError> {
        let ids: Vec<String> = pending.keys().cloned().collect();
        let stored: Vec<(String, Value, i64)> = sqlx::query_as(
            "SELECT aggregate_id, payload, position FROM events
             WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND sequence = 1",
        )
        .bind(usage::AGGREGATE_TYPE)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| CommandError::unavailable(&e))?;
        let mut position = 0;
        for (id, payload, at) in stored {
            let Some((index, usage)) = pending.get(&id) else { continue };
            let same = matches!(serde_json::from_value::<UsageEvent>(payload),
                Ok(UsageEvent::Recorded(recorded)) if usage.same_as(&recorded));
            results[*index].outcome = if same { Outcome::Duplicate } else { Outcome::from(Rejection::EventIdConflict) };
            position = position.max(at);
        }
        Ok(position)
    }

    /// The status of each known tenant of the batch, and which of its event types
    /// are allowlisted, in one round trip. Purged tenants are looked up in the log
    /// (the identity index forgets them).
    async fn lookup(
        &self,
        batch: &[(usize, ValidUsage)],
    ) -> Result<(HashMap<String, TenantStatus>, HashSet<String>), sqlx::Error> {
        let tenants: Vec<String> =
            batch.iter().map(|(_, u)| u.tenant_id.to_string()).collect::<HashSet<_>>().into_iter().collect();
        let types: Vec<String> =
            batch.iter().map(|(_, u)| u.event_type.clone()).collect::<HashSet<_>>().into_iter().collect();
        let rows: Vec<(bool, String, String)> = sqlx::query_as(
            "SELECT true, tenant_id, status FROM auth_tenants WHERE tenant_id = ANY($1)
             UNION ALL
             SELECT false, event_type, '' FROM billing_rollup_allowlist WHERE event_type = ANY($2)",
        )
        .bind(&tenants)
        .bind(&types)
        .fetch_all(&self.pool)
        .await?;
        let mut statuses = HashMap::new();
        let mut allowed = HashSet::new();
        for (is_tenant, key, status) in rows {
            if !is_tenant {
                allowed.insert(key);
            } else if let Ok(status) = serde_json::from_value::<TenantStatus>(Value::String(status)) {
                statuses.insert(key, status);
            }
        }
        let unknown: Vec<&String> = tenants.iter().filter(|t| !statuses.contains_key(*t)).collect();
        if !unknown.is_empty() {
            let purged: Vec<String> = sqlx::query_scalar(
                "SELECT aggregate_id FROM events
                 WHERE aggregate_type = 'tenant' AND aggregate_id = ANY($1) AND event_type = 'tenant.purged'",
            )
            .bind(unknown)
            .fetch_all(&self.pool)
            .await?;
            statuses.extend(purged.into_iter().map(|t| (t, TenantStatus::Purged)));
        }
        Ok((statuses, allowed))
    }

    /// Puts `event_type` on the rollup allowlist, or takes it off.
    pub async fn set_rollup(
        &self,
        ctx: &CommandContext,
        event_type: &str,
        allow: bool,
    ) -> Result<Executed, CommandError> {
        let command = if allow {
            RollupAllowlistCommand::Allow { event_type: event_type.to_string() }
        } else {
            RollupAllowlistCommand::Disallow { event_type: event_type.to_string() }
        };
        let hash = fingerprint(&["SetRollup", event_type, if allow { "allow" } else { "disallow" }]);
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, ALLOWLIST_ID, |_| async move {
                bus::execute(&self.allowlist, ALLOWLIST_ID, command, ctx.metadata(None)).await?;
                Ok(Executed { position: bus::position_of(&self.pool, ctx.command_id).await? })
            })
            .await
    }

    /// The rollup allowlist, by event type.
    pub async fn allowlist(&self) -> Result<Vec<AllowlistEntry>, CommandError> {
        sqlx::query_as("SELECT event_type, added_by, added_at FROM billing_rollup_allowlist ORDER BY event_type")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| CommandError::unavailable(&e))
    }
}
