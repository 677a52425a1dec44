//! The event store: postgres-es for reading; appends are Keel's own, so that every
//! persisted event gets its own UUIDv7 `event_id` in its metadata (cqrs-es shares one
//! metadata map across the events of a commit), a commit is one INSERT returning the
//! positions, and the write-side indexes ([`WRITE_SIDE_INDEXES`]) and the running
//! command's audit record ([`command_scope`]) commit in the same transaction
//! (ADR 0009, 0010, 0013, 0016, 0025).

use cqrs_es::Aggregate;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use keel_domain::envelope::keys;

use crate::audit;
use crate::command_scope;
use crate::identity_index::IdentityIndex;
use crate::key_index::ApiKeyIndex;
use crate::oidc_clients::OidcClientIndex;
use crate::rollup_allowlist_index::RollupAllowlistIndex;
use crate::write_index::WriteSideIndex;

/// The write-side indexes, updated in the transaction that appends the events they
/// fold, in this order. Adding an index is one entry here.
/// (`OidcClientIndex` follows `ApiKeyIndex`: its rows refer to `auth_apps`.)
pub const WRITE_SIDE_INDEXES: (IdentityIndex, ApiKeyIndex, OidcClientIndex, RollupAllowlistIndex) =
    (IdentityIndex, ApiKeyIndex, OidcClientIndex, RollupAllowlistIndex);

/// The append of a commit: all its events in one statement. Postgres assigns the
/// positions in the order of the arrays; the primary key refuses a stale sequence.
const APPEND: &str =
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
     RETURNING position";

/// postgres-es with per-event ids and the write-side indexes.
pub struct KeelEventRepository {
    inner: PostgresEventRepository,
    pool: PgPool,
}

impl KeelEventRepository {
    /// A repository on the `events` table.
    pub fn new(pool: PgPool) -> Self {
        Self { inner: PostgresEventRepository::new(pool.clone()), pool }
    }

    /// Appends one commit; with the running command's audit record, if any, in the
    /// same transaction.
    async fn append(&self, events: &[SerializedEvent]) -> Result<(), sqlx::Error> {
        let record = command_scope::record_for(events);
        let insert = sqlx::query_scalar(APPEND)
            .bind(events.iter().map(|e| e.aggregate_type.clone()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.aggregate_id.clone()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.sequence as i64).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.event_type.clone()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.event_version.clone()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.metadata.clone()).collect::<Vec<_>>());
        if record.is_none() && !events.iter().any(|e| WRITE_SIDE_INDEXES.affects(e)) {
            // One statement is its own transaction: one round trip.
            let positions: Vec<i64> = insert.fetch_all(&self.pool).await?;
            command_scope::note_commit(positions.into_iter().max().unwrap_or(0), false);
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        if let Some(record) = &record {
            audit::lock_chains(&mut tx, [record]).await?;
        }
        let positions: Vec<i64> = insert.fetch_all(&mut *tx).await?;
        for event in events {
            WRITE_SIDE_INDEXES.apply(&mut tx, event).await?;
        }
        let audited = record.is_some();
        if let Some(record) = record {
            audit::append_in(&mut tx, vec![record]).await?;
        }
        tx.commit().await?;
        command_scope::note_commit(positions.into_iter().max().unwrap_or(0), audited);
        Ok(())
    }
}

fn persistence_error(err: sqlx::Error) -> PersistenceError {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") && db.table() == Some("events") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => {
            PersistenceError::DeserializationError(Box::new(err))
        }
        sqlx::Error::Protocol(_) => PersistenceError::UnknownError(Box::new(err)),
        _ => PersistenceError::ConnectionError(Box::new(err)),
    }
}

impl PersistedEventRepository for KeelEventRepository {
    async fn get_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_last_events::<A>(aggregate_id, last_sequence).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let stamped: Vec<SerializedEvent> = events.iter().cloned().map(with_event_id).collect();
        if snapshot_update.is_some() {
            // Keel configures no snapshots; should one be added, postgres-es keeps it consistent.
            return self.inner.persist::<A>(&stamped, snapshot_update).await;
        }
        if stamped.is_empty() {
            return Ok(());
        }
        for event in &stamped {
            crate::limits::check_event(&event.payload, &event.metadata)
                .map_err(|err| PersistenceError::UnknownError(Box::new(err)))?;
        }
        self.append(&stamped).await.map_err(persistence_error)
    }

    async fn stream_events<A: Aggregate>(&self, aggregate_id: &str) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}

fn with_event_id(mut event: SerializedEvent) -> SerializedEvent {
    if let Value::Object(map) = &mut event.metadata {
        map.insert(keys::EVENT_ID.to_string(), Value::String(Uuid::now_v7().to_string()));
    }
    event
}

/// A pool on the same database whose commits do not wait for the WAL flush.
///
/// For writes that are safe to lose in a database crash because they are derived
/// or re-done: idempotency records (commands are guarded by their preconditions and
/// by the idempotency key stamped into event metadata), the relay checkpoint (the
/// relay republishes, consumers drop repeats) and projector batches (offsets roll
/// back with the effects, Kafka redelivers). Events themselves always commit durably.
pub fn relaxed_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    let options = (*pool.connect_options()).clone().options([("synchronous_commit", "off")]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_lazy_with(options)
}
