//! Running commands on aggregates: cqrs-es over the Keel event store (with the
//! aggregates it last committed in memory), with optimistic-concurrency retries,
//! classified errors and the command's position.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use keel_domain::envelope::{Actor, EventMetadata};
use keel_domain::{DomainError, ErrorKind};

use crate::aggregate_cache::{AggregateCache, CachedEventStore};
use crate::pools::Pools;
use crate::store::KeelEventRepository;

/// How often a command is retried after losing an optimistic-concurrency race.
const CONFLICT_RETRIES: usize = 5;

/// cqrs-es on the Keel event store, with the aggregates it last committed in memory.
pub struct Framework<A: Aggregate + Clone> {
    cqrs: CqrsFramework<A, CachedEventStore<A>>,
    cache: AggregateCache<A>,
}

/// A framework for aggregate `A` whose appends go through `pools`' group commit.
pub fn framework<A>(pools: &Pools) -> Framework<A>
where
    A: Aggregate<Services = ()> + Clone,
{
    let cache = AggregateCache::new(pools.aggregate_cache_entries);
    let store = PersistedEventStore::new_event_store(KeelEventRepository::new(pools.group_commit.clone()));
    Framework { cqrs: CqrsFramework::new(CachedEventStore::new(store, cache.clone()), vec![], ()), cache }
}

/// Who sent a command and how to trace it.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Who is acting.
    pub actor: Actor,
    /// The request's correlation id.
    pub correlation_id: String,
    /// This command's own id (UUIDv7); the causation id of its events.
    pub command_id: Uuid,
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// When the command arrived.
    pub received_at: DateTime<Utc>,
}

impl CommandContext {
    /// A context for `actor` with a fresh command id.
    pub fn new(actor: Actor, correlation_id: String, idempotency_key: String) -> Self {
        Self { actor, correlation_id, command_id: Uuid::now_v7(), idempotency_key, received_at: Utc::now() }
    }

    /// The metadata of the events this command writes for `tenant_id`.
    pub fn metadata(&self, tenant_id: Option<&str>) -> HashMap<String, String> {
        EventMetadata {
            tenant_id: tenant_id.map(str::to_string),
            actor: self.actor.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.command_id.to_string(),
            command_id: self.command_id,
            occurred_at: self.received_at,
            idempotency_key: Some(self.idempotency_key.clone()),
        }
        .to_map()
    }
}

/// The class of a failed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Malformed request.
    InvalidArgument,
    /// No such target.
    NotFound,
    /// It exists already.
    AlreadyExists,
    /// Not allowed in the target's current state.
    FailedPrecondition,
    /// The caller may not do this.
    PermissionDenied,
    /// The target was permanently removed.
    Gone,
    /// Too many attempts (brute-force protection); retry later.
    ResourceExhausted,
    /// Lost too many concurrency races; retry.
    Aborted,
    /// A dependency (the database) is unavailable; retry.
    Unavailable,
    /// A bug or corrupt data; details are in the log only.
    Internal,
}

impl From<ErrorKind> for Failure {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => Failure::InvalidArgument,
            ErrorKind::NotFound => Failure::NotFound,
            ErrorKind::AlreadyExists => Failure::AlreadyExists,
            ErrorKind::FailedPrecondition => Failure::FailedPrecondition,
            ErrorKind::PermissionDenied => Failure::PermissionDenied,
            ErrorKind::Gone => Failure::Gone,
        }
    }
}

/// A refused or failed command: its class, a stable code, and a message safe to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    /// The class.
    pub failure: Failure,
    /// Stable snake_case code.
    pub code: String,
    /// Human-readable, safe to return to the caller.
    pub message: String,
}

impl CommandError {
    /// An error of class `failure`.
    pub fn new(failure: Failure, code: &str, message: impl Into<String>) -> Self {
        Self { failure, code: code.to_string(), message: message.into() }
    }

    /// A refusal from the domain.
    pub fn domain(err: &impl DomainError) -> Self {
        Self::new(err.kind().into(), err.code(), err.to_string())
    }

    /// The database could not be reached or failed; the details go to the log only.
    pub fn unavailable(err: &dyn std::error::Error) -> Self {
        tracing::error!(error = %err, "store unavailable");
        Self::new(Failure::Unavailable, "unavailable", "the service is temporarily unavailable; retry")
    }

    /// Whether a retry may succeed (so the outcome must not be remembered).
    pub fn is_transient(&self) -> bool {
        matches!(self.failure, Failure::Aborted | Failure::Unavailable | Failure::Internal | Failure::ResourceExhausted)
    }
}

/// Executes `command` on aggregate `aggregate_id`, retrying optimistic-concurrency
/// conflicts, and a refusal taken on the cached aggregate once on the stored one.
pub async fn execute<A>(
    framework: &Framework<A>,
    aggregate_id: &str,
    command: A::Command,
    metadata: HashMap<String, String>,
) -> Result<(), CommandError>
where
    A: Aggregate<Services = ()> + Clone,
    A::Command: Clone,
    A::Error: DomainError,
{
    for _ in 0..CONFLICT_RETRIES {
        let cached = framework.cache.contains(aggregate_id);
        match framework.cqrs.execute_with_metadata(aggregate_id, command.clone(), metadata.clone()).await {
            Ok(()) => return Ok(()),
            Err(AggregateError::AggregateConflict) => continue,
            Err(AggregateError::UserError(_)) if cached => {
                // The cached aggregate may be stale (another process wrote): decide again on the stored one.
                framework.cache.forget(aggregate_id);
                continue;
            }
            Err(AggregateError::UserError(err)) => return Err(CommandError::domain(&err)),
            Err(AggregateError::DatabaseConnectionError(err)) => return Err(CommandError::unavailable(err.as_ref())),
            Err(AggregateError::UnexpectedError(err)) if err.is::<crate::limits::EventTooLarge>() => {
                return Err(CommandError::new(Failure::InvalidArgument, "too_large", err.to_string()));
            }
            Err(err) => {
                tracing::error!(error = %err, aggregate = A::TYPE, "command failed");
                return Err(CommandError::new(Failure::Internal, "internal", "internal error"));
            }
        }
    }
    Err(CommandError::new(Failure::Aborted, "concurrent_modification", "concurrent modification; retry"))
}

/// The position of the last event command `command_id` wrote (0 if it wrote none):
/// known without a query when this task's command scope appended it.
pub async fn position_of(pool: &PgPool, command_id: Uuid) -> Result<i64, CommandError> {
    if let Some(position) = crate::command_scope::position() {
        return Ok(position);
    }
    sqlx::query_scalar("SELECT COALESCE(max(position), 0) FROM events WHERE command_id = $1")
        .bind(command_id)
        .fetch_one(pool)
        .await
        .map_err(|e| CommandError::unavailable(&e))
}
