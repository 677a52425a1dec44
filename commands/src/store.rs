//! The event store: postgres-es for reading; appends are Keel's own, so that every
//! persisted event gets its own UUIDv7 `event_id` in its metadata (cqrs-es shares one
//! metadata map across the events of a commit), the write-side indexes
//! ([`crate::group_commit::WRITE_SIDE_INDEXES`]) and the running command's audit record ([`command_scope`])
//! commit in the same transaction, and concurrent commits share that transaction
//! ([`GroupCommit`]) (ADR 0009, 0010, 0013, 0016, 0025, 0029).

use cqrs_es::Aggregate;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use keel_domain::envelope::keys;

use crate::command_scope;
use crate::group_commit::{Append, GroupCommit};

/// postgres-es with per-event ids, the write-side indexes and group commit.
pub struct KeelEventRepository {
    inner: PostgresEventRepository,
    group_commit: GroupCommit,
}

impl KeelEventRepository {
    /// A repository on the `events` table of `group_commit`'s pool.
    pub fn new(group_commit: GroupCommit) -> Self {
        Self { inner: PostgresEventRepository::new(group_commit.pool().clone()), group_commit }
    }

    /// Appends one commit, with the running command's audit record, if any, in the
    /// same transaction (which other commands' appends may share: [`GroupCommit`]).
    async fn append(&self, events: Vec<SerializedEvent>) -> Result<(), sqlx::Error> {
        let record = command_scope::record_for(&events);
        let audited = record.is_some();
        let position = self.group_commit.append(Append { events, record }).await?;
        command_scope::note_commit(position, audited);
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
        self.append(stamped).await.map_err(persistence_error)
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
