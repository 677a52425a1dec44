//! The event store: postgres-es, wrapped so that every persisted event gets its
//! own UUIDv7 `event_id` in its metadata (cqrs-es shares one metadata map across
//! the events of a commit).

use cqrs_es::Aggregate;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot};
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use keel_domain::envelope::keys;

/// postgres-es with per-event ids.
pub struct KeelEventRepository {
    inner: PostgresEventRepository,
}

impl KeelEventRepository {
    /// A repository on the `events` table.
    pub fn new(pool: PgPool) -> Self {
        Self { inner: PostgresEventRepository::new(pool) }
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
        self.inner.persist::<A>(&stamped, snapshot_update).await
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
