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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use keel_domain::envelope::{Actor, ActorType, EventEnvelope, keys};
use keel_domain::usage::{self, BillingCloudEvent, UsageEvent};

/// Advisory lock key held by the running relay.
const RELAY_LOCK: i64 = 7_242_002;

/// What the relay reports about itself (for /readyz and benchmarks).
#[derive(Debug, Default)]
pub struct RelayStatus {
    /// The relay task is alive (as leader or standby).
    pub alive: AtomicBool,
    /// This process holds the relay lock.
    pub leader: AtomicBool,
    /// The last publish attempt reached the broker.
    pub broker_ok: AtomicBool,
    /// Events published since start.
    pub published: AtomicU64,
}

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
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            topic: "keel.events".into(),
            batch_size: 2000,
            idle_poll: Duration::from_millis(5),
            billing_topic: Some(BILLING_TOPIC.into()),
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
                tracing::warn!(error = %err, "relay interrupted; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
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
        let producer = crate::kafka::producer(&self.brokers)?;
        self.publish_forever(&mut conn, &producer).await
    }

    async fn publish_forever(&self, conn: &mut PgConnection, producer: &FutureProducer) -> Result<(), RelayError> {
        let mut checkpoint = load_checkpoint(conn, &self.config.topic).await?;
        let mut idle = Duration::from_millis(1);
        loop {
            let batch = read_batch(conn, &checkpoint, self.config.batch_size).await?;
            if batch.is_empty() {
                tokio::time::sleep(idle).await;
                idle = (idle * 2).min(self.config.idle_poll);
                continue;
            }
            idle = Duration::from_millis(1);
            let next = self.publish(producer, &batch, &checkpoint).await?;
            save_checkpoint(conn, &self.config.topic, &next).await?;
            self.status.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
            checkpoint = next;
        }
    }

    /// Produces `batch` (and its usage, as CloudEvents, to the billing topic) and waits
    /// for every acknowledgement; returns the advanced checkpoint.
    async fn publish(
        &self,
        producer: &FutureProducer,
        batch: &[EventEnvelope],
        from: &Checkpoint,
    ) -> Result<Checkpoint, RelayError> {
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut billing = Vec::new();
        for event in batch {
            if let Some(topic) = &self.config.billing_topic
                && event.aggregate_type == usage::AGGREGATE_TYPE
            {
                let message = billing_message(event).ok_or(RelayError::Malformed(event.position))?;
                let headers = OwnedHeaders::new()
                    .insert(Header { key: "content-type", value: Some("application/cloudevents+json") });
                let record = FutureRecord::to(topic).key(event.key()).payload(&message).headers(headers);
                match producer.send_result(record) {
                    Ok(delivery) => billing.push(delivery),
                    Err((err, _)) => {
                        self.status.broker_ok.store(false, Ordering::Relaxed);
                        return Err(err.into());
                    }
                }
            }
            let payload = serde_json::to_vec(event).map_err(|_| RelayError::Malformed(event.position))?;
            let event_id = event.event_id.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header { key: "event_id", value: Some(event_id.as_str()) })
                .insert(Header { key: "event_type", value: Some(event.event_type.as_str()) })
                .insert(Header { key: "schema_version", value: Some(event.schema_version.as_str()) });
            let record = FutureRecord::to(&self.config.topic).key(event.key()).payload(&payload).headers(headers);
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((err, _)) => {
                    self.status.broker_ok.store(false, Ordering::Relaxed);
                    return Err(err.into());
                }
            }
        }
        let mut next = from.clone();
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(d)) => {
                    let offset = next.offsets.entry(d.partition).or_insert(d.offset);
                    *offset = (*offset).max(d.offset);
                }
                Ok(Err((err, _))) => {
                    self.status.broker_ok.store(false, Ordering::Relaxed);
                    return Err(err.into());
                }
                Err(_canceled) => return Err(rdkafka::error::KafkaError::Canceled.into()),
            }
        }
        for delivery in billing {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((err, _))) => {
                    self.status.broker_ok.store(false, Ordering::Relaxed);
                    return Err(err.into());
                }
                Err(_canceled) => return Err(rdkafka::error::KafkaError::Canceled.into()),
            }
        }
        self.status.broker_ok.store(true, Ordering::Relaxed);
        let last = batch.last().map(EventEnvelope::order).unwrap_or((from.txid, from.position));
        (next.txid, next.position) = last;
        Ok(next)
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

async fn save_checkpoint(conn: &mut sqlx::PgConnection, topic: &str, cp: &Checkpoint) -> Result<(), sqlx::Error> {
    let offsets: BTreeMap<String, i64> = cp.offsets.iter().map(|(p, o)| (p.to_string(), *o)).collect();
    sqlx::query(
        "INSERT INTO relay_checkpoint (topic, txid, position, offsets, updated_at)
         VALUES ($1, $2::text::xid8, $3, $4, now())
         ON CONFLICT (topic) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position,
             offsets = EXCLUDED.offsets, updated_at = now()",
    )
    .bind(topic)
    .bind(cp.txid.to_string())
    .bind(cp.position)
    .bind(serde_json::to_value(offsets).unwrap_or_default())
    .execute(conn)
    .await?;
    Ok(())
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
