//! The relay: publishes committed events, in global order, to Kafka (ADR 0002).
//!
//! It reads the events table in (txid, position) order, only below the oldest
//! transaction still open, so nothing committed late is skipped. Each batch is
//! produced (key = tenant id, idempotent producer, acks=all) and, once every
//! message is acknowledged, the checkpoint moves in Postgres together with the
//! offset each partition got. Accepted usage is also published, as CloudEvents, to the
//! billing topic (ADR 0013). After a crash the batch since the checkpoint is
//! published again; consumers drop the repeats by event id / order. Only one relay
//! runs at a time (a Postgres advisory lock); the others wait as standbys.
//!
//! One event never stops it (ADR 0017): an event the broker refuses for good (too
//! large, say) is parked in `relay_parked`, logged as an error, counted in
//! [`RelayStatus::parked`] and skipped. When the relay cannot go on for any other
//! reason it logs an error, again and again with backoff, and its status says since when.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use keel_domain::envelope::{Actor, ActorType, EventEnvelope, keys};
use keel_domain::usage::{self, BillingCloudEvent, UsageEvent};

/// Advisory lock key held by the running relay.
const RELAY_LOCK: i64 = 7_242_002;

pub use crate::relay_status::RelayStatus;

/// After failing this long without progress the relay logs errors, not warnings.
const LOUD_AFTER: Duration = Duration::from_secs(10);

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Topic to publish to (`keel.events`).
    pub topic: String,
    /// Most events per batch.
    pub batch_size: i64,
    /// Longest pause when there is nothing to publish.
    pub idle_poll: Duration,
    /// Where accepted usage is also published as CloudEvents (`keel.billing.v1`), if anywhere.
    pub billing_topic: Option<String>,
    /// The largest message the broker accepts (its `message.max.bytes`).
    pub max_message_bytes: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            topic: "keel.events".into(),
            batch_size: 2000,
            idle_poll: Duration::from_millis(5),
            billing_topic: Some(BILLING_TOPIC.into()),
            max_message_bytes: keel_domain::limits::DEFAULT_MESSAGE_MAX_BYTES,
        }
    }
}

/// The billing topic's default name: its messages are the contract billing systems consume.
pub const BILLING_TOPIC: &str = "keel.billing.v1";

/// The checkpoint: last published order and per-partition last offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Transaction id of the last published event.
    pub txid: i64,
    /// Position of the last published event.
    pub position: i64,
    /// Partition → offset of the last message published there.
    pub offsets: BTreeMap<i32, i64>,
}

/// Why a relay step failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Kafka did not acknowledge a message.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A stored event could not be turned into an envelope.
    #[error("malformed event at position {0}")]
    Malformed(i64),
}

/// An event the relay skipped for good, and why.
#[derive(Debug, Clone)]
struct Parked {
    event: EventEnvelope,
    size: usize,
    error: String,
}

/// Whether the broker (or the client) refuses this one message for good: publishing
/// it again can never succeed.
fn is_permanent(err: &rdkafka::error::KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
        )
    )
}

/// Publishes the event store to Kafka.
pub struct Relay {
    pool: PgPool,
    brokers: String,
    config: RelayConfig,
    status: Arc<RelayStatus>,
    partitions: Option<i32>,
}

impl Relay {
    /// A relay from `pool` to the Kafka cluster at `brokers`.
    /// Checkpoints need no synchronous commit (a lost one only means republishing),
    /// so `pool` may be a [`crate::store::relaxed_pool`].
    pub fn new(pool: PgPool, brokers: String, config: RelayConfig, status: Arc<RelayStatus>) -> Self {
        Self { pool, brokers, config, status, partitions: None }
    }

    /// Creates the topic with `partitions` partitions before publishing, if it is missing.
    pub fn creating_topic(self, partitions: i32) -> Self {
        Self { partitions: Some(partitions), ..self }
    }

    /// Runs until `shutdown` fires.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        self.status.alive.store(true, Ordering::Relaxed);
        let mut backoff = Duration::from_millis(100);
        while !*shutdown.borrow() {
            let result = tokio::select! {
                r = self.lead() => r,
                _ = shutdown.changed() => Ok(()),
            };
            self.status.leader.store(false, Ordering::Relaxed);
            if let Err(err) = result {
                let failing_for = self.status.failed();
                if failing_for >= LOUD_AFTER {
                    tracing::error!(error = %err, failing_for_s = failing_for.as_secs(), "relay stalled: nothing published; retrying");
                } else {
                    tracing::warn!(error = %err, "relay interrupted; retrying");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            } else {
                backoff = Duration::from_millis(100);
            }
        }
        self.status.alive.store(false, Ordering::Relaxed);
    }

    /// Becomes the leader (waiting as standby if another relay runs), then publishes forever.
    async fn lead(&self) -> Result<(), RelayError> {
        // Detached: the session lock must die with the connection, never go back to the pool.
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            let got: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(RELAY_LOCK).fetch_one(&mut conn).await?;
            if got {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.status.leader.store(true, Ordering::Relaxed);
        let mut topics = vec![self.config.topic.as_str()];
        topics.extend(self.config.billing_topic.as_deref());
        if let Some(partitions) = self.partitions
            && let Err(err) = crate::kafka::ensure_topics(&self.brokers, &topics, partitions).await
        {
            self.status.broker_ok.store(false, Ordering::Relaxed);
            return Err(err.into());
        }
        // A fresh producer per leadership term: after a failed delivery an idempotent
        // producer may be fenced for good, and only a new one can go on.
        let producer = crate::kafka::producer(&self.brokers, self.config.max_message_bytes)?;
        self.publish_forever(&mut conn, &producer).await
    }

    async fn publish_forever(&self, conn: &mut PgConnection, producer: &FutureProducer) -> Result<(), RelayError> {
        let mut checkpoint = load_checkpoint(conn, &self.config.topic).await?;
        let mut idle = Duration::from_millis(1);
        loop {
            let batch = read_batch(conn, &checkpoint, self.config.batch_size).await?;
            if batch.is_empty() {
                self.status.progressed();
                tokio::time::sleep(idle).await;
                idle = (idle * 2).min(self.config.idle_poll);
                continue;
            }
            idle = Duration::from_millis(1);
            let (next, parked) = self.publish(producer, &batch, &checkpoint).await?;
            save_checkpoint(conn, &self.config.topic, &next, &parked).await?;
            self.status.published.fetch_add((batch.len() - parked.len()) as u64, Ordering::Relaxed);
            self.status.parked.fetch_add(parked.len() as u64, Ordering::Relaxed);
            self.status.progressed();
            checkpoint = next;
        }
    }

    /// Produces `batch` (and its usage, as CloudEvents, to the billing topic) and waits
    /// for every acknowledgement; returns the advanced checkpoint and the events the
    /// broker refused for good (parked: every other event of the batch is published).
    async fn publish(
        &self,
        producer: &FutureProducer,
        batch: &[EventEnvelope],
        from: &Checkpoint,
    ) -> Result<(Checkpoint, Vec<Parked>), RelayError> {
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut billing = Vec::new();
        // Index in the batch → (message size, why the broker refuses it).
        let mut refused: BTreeMap<usize, (usize, String)> = BTreeMap::new();
        for (index, event) in batch.iter().enumerate() {
            let payload = serde_json::to_vec(event).map_err(|_| RelayError::Malformed(event.position))?;
            let limit = self.config.max_message_bytes;
            if payload.len() + event.key().len() > limit {
                let error = format!("{} bytes: more than the broker's message limit of {limit}", payload.len());
                refused.insert(index, (payload.len(), error));
                continue;
            }
            if let Some(topic) = &self.config.billing_topic
                && event.aggregate_type == usage::AGGREGATE_TYPE
            {
                let message = billing_message(event).ok_or(RelayError::Malformed(event.position))?;
                let headers = OwnedHeaders::new()
                    .insert(Header { key: "content-type", value: Some("application/cloudevents+json") });
                let record = FutureRecord::to(topic).key(event.key()).payload(&message).headers(headers);
                match producer.send_result(record) {
                    Ok(delivery) => billing.push((index, message.len(), delivery)),
                    Err((err, _)) if is_permanent(&err) => {
                        refused.insert(index, (message.len(), format!("billing message refused: {err}")));
                        continue;
                    }
                    Err((err, _)) => return Err(self.broker_failed(err)),
                }
            }
            let event_id = event.event_id.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header { key: "event_id", value: Some(event_id.as_str()) })
                .insert(Header { key: "event_type", value: Some(event.event_type.as_str()) })
                .insert(Header { key: "schema_version", value: Some(event.schema_version.as_str()) });
            let record = FutureRecord::to(&self.config.topic).key(event.key()).payload(&payload).headers(headers);
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push((index, payload.len(), delivery)),
                Err((err, _)) if is_permanent(&err) => {
                    refused.insert(index, (payload.len(), format!("refused: {err}")));
                }
                Err((err, _)) => return Err(self.broker_failed(err)),
            }
        }
        let mut next = from.clone();
        for (index, size, delivery) in deliveries {
            match delivery.await {
                Ok(Ok(d)) => {
                    let offset = next.offsets.entry(d.partition).or_insert(d.offset);
                    *offset = (*offset).max(d.offset);
                }
                Ok(Err((err, _))) if is_permanent(&err) => {
                    refused.entry(index).or_insert((size, format!("refused: {err}")));
                }
                Ok(Err((err, _))) => return Err(self.broker_failed(err)),
                Err(_canceled) => return Err(rdkafka::error::KafkaError::Canceled.into()),
            }
        }
        for (index, size, delivery) in billing {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) if is_permanent(&err) => {
                    refused.entry(index).or_insert((size, format!("billing message refused: {err}")));
                }
                Ok(Err((err, _))) => return Err(self.broker_failed(err)),
                Err(_canceled) => return Err(rdkafka::error::KafkaError::Canceled.into()),
            }
        }
        self.status.broker_ok.store(true, Ordering::Relaxed);
        let last = batch.last().map(EventEnvelope::order).unwrap_or((from.txid, from.position));
        (next.txid, next.position) = last;
        let parked: Vec<Parked> = refused
            .into_iter()
            .map(|(index, (size, error))| Parked { event: batch[index].clone(), size, error })
            .collect();
        for p in &parked {
            tracing::error!(
                position = p.event.position,
                event_id = %p.event.event_id,
                event_type = %p.event.event_type,
                size = p.size,
                error = %p.error,
                "event parked: the broker refuses it for good; skipped and recorded in relay_parked"
            );
        }
        Ok((next, parked))
    }

    /// Notes that the broker failed and passes the error on.
    fn broker_failed(&self, err: rdkafka::error::KafkaError) -> RelayError {
        self.status.broker_ok.store(false, Ordering::Relaxed);
        err.into()
    }
}

/// The CloudEvent (JSON) of a usage event, or `None` if its payload cannot be read.
pub fn billing_message(event: &EventEnvelope) -> Option<Vec<u8>> {
    let mut payload = event.payload.clone();
    payload.as_object_mut()?.entry("type").or_insert_with(|| event.event_type.clone().into());
    let UsageEvent::Recorded(recorded) = serde_json::from_value(payload).ok()?;
    serde_json::to_vec(&BillingCloudEvent::new(&recorded, event.event_id, event.position)).ok()
}

/// The relay's checkpoint for `topic` (zero if it never ran).
pub async fn load_checkpoint(conn: &mut sqlx::PgConnection, topic: &str) -> Result<Checkpoint, sqlx::Error> {
    let row =
        sqlx::query("SELECT txid::text::bigint AS txid, position, offsets FROM relay_checkpoint WHERE topic = $1")
            .bind(topic)
            .fetch_optional(conn)
            .await?;
    Ok(match row {
        None => Checkpoint::default(),
        Some(row) => Checkpoint {
            txid: row.get("txid"),
            position: row.get("position"),
            offsets: serde_json::from_value::<BTreeMap<String, i64>>(row.get("offsets"))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(p, o)| Some((p.parse().ok()?, o)))
                .collect(),
        },
    })
}

/// Moves the checkpoint, recording the `parked` events of the batch with it.
async fn save_checkpoint(
    conn: &mut sqlx::PgConnection,
    topic: &str,
    cp: &Checkpoint,
    parked: &[Parked],
) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let offsets: BTreeMap<String, i64> = cp.offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect();
    let save = sqlx::query(
        "INSERT INTO relay_checkpoint (topic, txid, position, offsets, updated_at)
         VALUES ($1, $2::text::xid8, $3, $4, now())
         ON CONFLICT (topic) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position,
             offsets = EXCLUDED.offsets, updated_at = now()",
    )
    .bind(topic)
    .bind(cp.txid.to_string())
    .bind(cp.position)
    .bind(serde_json::to_value(offsets).unwrap_or_default());
    if parked.is_empty() {
        save.execute(conn).await?;
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    for p in parked {
        sqlx::query(
            "INSERT INTO relay_parked (topic, position, event_id, event_type, aggregate_type, aggregate_id, size_bytes, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(topic)
        .bind(p.event.position)
        .bind(p.event.event_id)
        .bind(&p.event.event_type)
        .bind(&p.event.aggregate_type)
        .bind(&p.event.aggregate_id)
        .bind(p.size as i64)
        .bind(&p.error)
        .execute(&mut *tx)
        .await?;
    }
    save.execute(&mut *tx).await?;
    tx.commit().await
}

/// An event the relay parked: it is in the event store but was never (fully) published.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct ParkedEvent {
    /// Its position in the event store.
    pub position: i64,
    /// Its id.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: String,
    /// Its message's size in bytes.
    pub size_bytes: i64,
    /// Why the broker refused it.
    pub error: String,
    /// When it was parked.
    pub parked_at: chrono::DateTime<chrono::Utc>,
}

/// The events the relay on `topic` parked, oldest first (at most `limit`).
pub async fn parked(pool: &PgPool, topic: &str, limit: i64) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, event_id, event_type, size_bytes, error, parked_at FROM relay_parked
         WHERE topic = $1 ORDER BY position LIMIT $2",
    )
    .bind(topic)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Reads up to `limit` events after `after`, in global order, below the oldest open transaction.
/// The order names the table's columns: the select list's `txid` is a bigint expression, and
/// sorting by it would sort the whole backlog instead of walking the `(txid, position)` index.
pub async fn read_batch(
    conn: &mut sqlx::PgConnection,
    after: &Checkpoint,
    limit: i64,
) -> Result<Vec<EventEnvelope>, RelayError> {
    let rows = sqlx::query(
        "SELECT position, txid::text::bigint AS txid, aggregate_type, aggregate_id, sequence,
                event_type, event_version, payload, metadata
         FROM events
         WHERE (txid, position) > ($1::text::xid8, $2)
           AND txid < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY events.txid, events.position
         LIMIT $3",
    )
    .bind(after.txid.to_string())
    .bind(after.position)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(envelope_from_row).collect()
}

/// Builds the published envelope from an events row.
pub fn envelope_from_row(row: &sqlx::postgres::PgRow) -> Result<EventEnvelope, RelayError> {
    let position: i64 = row.get("position");
    let bad = || RelayError::Malformed(position);
    let metadata: Value = row.get("metadata");
    let field = |k: &str| metadata.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(EventEnvelope {
        event_id: field(keys::EVENT_ID).and_then(|s| Uuid::parse_str(&s).ok()).ok_or_else(bad)?,
        tenant_id: field(keys::TENANT_ID),
        position,
        txid: row.get("txid"),
        aggregate_type: row.get("aggregate_type"),
        aggregate_id: row.get("aggregate_id"),
        sequence: row.get("sequence"),
        event_type: row.get("event_type"),
        schema_version: row.get("event_version"),
        occurred_at: field(keys::OCCURRED_AT).and_then(|s| s.parse().ok()).ok_or_else(bad)?,
        actor: Actor {
            kind: field(keys::ACTOR_TYPE).and_then(|s| ActorType::parse(&s)).ok_or_else(bad)?,
            id: field(keys::ACTOR_ID).unwrap_or_default(),
        },
        correlation_id: field(keys::CORRELATION_ID).unwrap_or_default(),
        causation_id: field(keys::CAUSATION_ID).unwrap_or_default(),
        payload: row.get("payload"),
    })
}

/// How far the relay has published, seen from one event's position (read-your-writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The event is published: the offset of the last message the relay published on
    /// each partition (every message up to the event is at or below them).
    Through(HashMap<i32, i64>),
    /// The relay has not published the event yet.
    NotYet,
    /// No event has this position.
    UnknownPosition,
}

/// Whether the relay on `topic` has published the event at `position`, and up to which
/// offset per partition. The relay's checkpoint records, per partition, the offset of
/// the last message published; it is at or beyond the event once the event is out.
pub async fn published_through(pool: &PgPool, topic: &str, position: i64) -> Result<Published, sqlx::Error> {
    let Some(txid) = sqlx::query_scalar::<_, i64>("SELECT txid::text::bigint FROM events WHERE position = $1")
        .bind(position)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(Published::UnknownPosition);
    };
    let checkpoint: Option<(i64, i64, Value)> =
        sqlx::query_as("SELECT txid::text::bigint, position, offsets FROM relay_checkpoint WHERE topic = $1")
            .bind(topic)
            .fetch_optional(pool)
            .await?;
    let Some((cp_txid, cp_position, offsets)) = checkpoint else {
        return Ok(Published::NotYet);
    };
    if (cp_txid, cp_position) < (txid, position) {
        return Ok(Published::NotYet);
    }
    let offsets: HashMap<String, i64> = serde_json::from_value(offsets).unwrap_or_default();
    Ok(Published::Through(offsets.into_iter().filter_map(|(p, o)| Some((p.parse().ok()?, o))).collect()))
}
