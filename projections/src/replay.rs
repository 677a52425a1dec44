//! `keel replay <read-model>`: rebuild a read model from offset 0 into a shadow
//! schema, catch it up with the live one, and swap it in atomically.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{Executor as _, PgPool};

use crate::batch::apply_batch;
use crate::kafka::ConsumerSettings;
use crate::projector::next_batch;
use crate::read_model::{ReadModel, live_schema, schema_ddl, swap_lock_key};

/// What a replay did.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// Messages read from Kafka.
    pub messages: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl ReplayReport {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The topic does not exist.
    #[error("topic {0} not found")]
    NoTopic(String),
}

/// Rebuilds `model` from `topic` and swaps it in. Runs as the migration role (`owner`).
pub async fn replay<R: ReadModel>(
    model: &R,
    owner: &PgPool,
    settings: &ConsumerSettings,
    topic: &str,
    runtime_role: &str,
    progress: &ProgressBar,
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let live = live_schema(model.name());
    let shadow = format!("{live}__shadow");
    // `Executor::execute`, not `RawSql::execute`, as in `read_model::ensure_schema`.
    let mut tx = owner.begin().await?;
    (&mut *tx).execute(sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {shadow} CASCADE"))).await?;
    (&mut *tx).execute(sqlx::raw_sql(&schema_ddl(model, &shadow, runtime_role))).await?;
    tx.commit().await?;

    let group = format!("keel-replay.{}.{}", model.name(), uuid::Uuid::now_v7());
    let mut config = settings.config(&group);
    config.set("queued.min.messages", "100000").set("fetch.max.bytes", "104857600");
    let consumer: StreamConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .filter(|p: &Vec<i32>| !p.is_empty())
        .ok_or_else(|| ReplayError::NoTopic(topic.to_string()))?;
    let mut target = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut total = 0u64;
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        target.insert(p, high);
        total += (high - low).max(0) as u64;
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    progress.set_length(total);

    let mut reached: BTreeMap<i32, i64> = BTreeMap::new();
    let mut messages = 0u64;
    let catch_up = |target: &BTreeMap<i32, i64>, reached: &BTreeMap<i32, i64>| {
        target.iter().any(|(p, high)| reached.get(p).copied().unwrap_or(0) < *high)
    };
    while catch_up(&target, &reached) {
        messages += consume_once(model, owner, &consumer, &shadow, topic, &mut reached, progress).await?;
    }

    // Swap: hold the projector lock exclusively, so no live batch runs; catch the
    // shadow up to the live offsets; rename; drop the old schema.
    let mut swap = owner.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(swap_lock_key(model.name())).execute(&mut *swap).await?;
    let live_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(&live)
        .fetch_one(&mut *swap)
        .await?;
    if live_exists {
        let live_offsets: BTreeMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(&format!(
            "SELECT partition, next_offset FROM {live}._offsets WHERE topic = $1"
        ))
        .bind(topic)
        .fetch_all(&mut *swap)
        .await?
        .into_iter()
        .collect();
        while catch_up(&live_offsets, &reached) {
            messages += consume_once(model, owner, &consumer, &shadow, topic, &mut reached, progress).await?;
        }
        (&mut *swap)
            .execute(sqlx::raw_sql(&format!(
                "ALTER SCHEMA {live} RENAME TO {live}__old; ALTER SCHEMA {shadow} RENAME TO {live}; DROP SCHEMA {live}__old CASCADE;"
            )))
            .await?;
    } else {
        (&mut *swap).execute(sqlx::raw_sql(&format!("ALTER SCHEMA {shadow} RENAME TO {live}"))).await?;
    }
    swap.commit().await?;
    progress.finish();
    Ok(ReplayReport { messages, elapsed: started.elapsed() })
}

async fn consume_once<R: ReadModel>(
    model: &R,
    owner: &PgPool,
    consumer: &StreamConsumer,
    shadow: &str,
    topic: &str,
    reached: &mut BTreeMap<i32, i64>,
    progress: &ProgressBar,
) -> Result<u64, ReplayError> {
    let batch = next_batch(consumer).await?;
    let mut tx = owner.begin().await?;
    apply_batch(&mut tx, model, shadow, topic, &batch).await?;
    tx.commit().await?;
    for m in &batch {
        let next = reached.entry(m.partition).or_insert(0);
        *next = (*next).max(m.offset + 1);
    }
    progress.inc(batch.len() as u64);
    Ok(batch.len() as u64)
}
