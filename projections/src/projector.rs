//! The live projector: a Kafka consumer group member that applies batches to its
//! read model's live schema and stores offsets with the effects.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use sqlx::PgPool;

use crate::batch::{BatchOutcome, Message, apply_batch, park_refused, store_offsets};
use crate::kafka::{ClosedOffThread, ConsumerSettings};
use crate::progress::messages_behind;
use crate::read_model::{ReadModel, live_schema, swap_lock_key};

/// Most messages applied in one transaction.
const MAX_BATCH: usize = 2000;
/// How long a batch waits for more messages once it has one.
const LINGER: Duration = Duration::from_millis(1);
/// How long the offsets of batches the read model ignores may wait before they are
/// stored (their loss only re-reads events that change nothing). This bounds the extra
/// wait of a read-your-writes query while other aggregates' events flow.
const IGNORED_FLUSH: Duration = Duration::from_millis(50);
/// After failing this long without progress the projector logs errors, not warnings.
const LOUD_AFTER: Duration = Duration::from_secs(10);
/// A consumer this old that has received nothing while published messages waited this
/// long (as [`ProjectorStatus::observe`] saw) is replaced by a new group member. Longer
/// than a group join takes (a few session timeouts), so a healthy rejoin is left alone.
const REPLACE_STUCK_AFTER: Duration = Duration::from_secs(30);
/// How often the consumer loop checks whether it is stuck.
const STUCK_CHECK: Duration = Duration::from_secs(1);

/// What a projector reports about itself.
#[derive(Debug, Default)]
pub struct ProjectorStatus {
    /// The consumer loop is running.
    pub running: AtomicBool,
    /// Events that changed the read model since start.
    pub applied: AtomicU64,
    /// Events parked since start.
    pub parked: AtomicU64,
    /// Since when applying has been failing without progress (Unix ms; 0: it is not).
    failing_since_ms: AtomicI64,
    /// Since when published messages have waited while the stored offsets did not move
    /// (Unix ms; 0: nothing waits, or they moved at the last look).
    waiting_since_ms: AtomicI64,
    /// The sum of the stored next offsets at the last look (offsets only grow, so a
    /// change of the sum is progress).
    last_offsets_sum: AtomicI64,
}

impl ProjectorStatus {
    /// Since when applying has been failing (retrying) without progress, if it is.
    pub fn failing_since(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let ms = self.failing_since_ms.load(Ordering::Relaxed);
        (ms != 0).then(|| chrono::DateTime::from_timestamp_millis(ms)).flatten()
    }

    /// Records a failure; returns how long the streak has lasted.
    fn failed(&self) -> Duration {
        let now = chrono::Utc::now();
        let _ = self.failing_since_ms.compare_exchange(0, now.timestamp_millis(), Ordering::Relaxed, Ordering::Relaxed);
        self.failing_since().and_then(|since| (now - since).to_std().ok()).unwrap_or_default()
    }

    /// Records progress: a failure streak, if any, ends.
    fn progressed(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
    }

    /// Records a look at the read model from outside: `published` is the relay's last
    /// published offset per partition (`None`: unknown, e.g. the broker is away, which
    /// ends a wait), `next` the model's stored next offsets.
    pub fn observe(&self, published: Option<&HashMap<i32, i64>>, next: &HashMap<i32, i64>) {
        let sum: i64 = next.values().sum();
        let moved = self.last_offsets_sum.swap(sum, Ordering::Relaxed) != sum;
        let behind = published.is_some_and(|published| messages_behind(published, next) > 0);
        if !behind || moved {
            self.waiting_since_ms.store(0, Ordering::Relaxed);
        } else {
            let now = chrono::Utc::now().timestamp_millis();
            let _ = self.waiting_since_ms.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Since when published messages have waited without the read model moving (as of
    /// the last [`ProjectorStatus::observe`]), if they have.
    pub fn waiting_since(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let ms = self.waiting_since_ms.load(Ordering::Relaxed);
        (ms != 0).then(|| chrono::DateTime::from_timestamp_millis(ms)).flatten()
    }

    /// How long the projector has made no progress although work waits: applying
    /// fails, or published messages wait while its offsets do not move.
    pub fn stalled_for(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
        [self.failing_since(), self.waiting_since()]
            .into_iter()
            .flatten()
            .min()
            .and_then(|since| (now - since).to_std().ok())
    }
}

/// A projector for read model `R`.
pub struct Projector<R: ReadModel> {
    model: Arc<R>,
    pool: PgPool,
    settings: ConsumerSettings,
    topic: String,
    status: Arc<ProjectorStatus>,
}

impl<R: ReadModel> Projector<R> {
    /// A projector of `model` reading `topic`, writing through `pool` (the runtime role).
    pub fn new(
        model: Arc<R>,
        pool: PgPool,
        settings: ConsumerSettings,
        topic: String,
        status: Arc<ProjectorStatus>,
    ) -> Self {
        Self { model, pool, settings, topic, status }
    }

    /// The consumer group of read model `name` on `topic`, e.g. `keel.events.projector.tenant_registry`.
    pub fn group(topic: &str, name: &str) -> String {
        format!("{topic}.projector.{name}")
    }

    /// Runs until `shutdown` fires, reconnecting on errors.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            if let Err(err) = self.consume(&mut shutdown).await {
                tracing::warn!(read_model = self.model.name(), error = %err, "projector interrupted; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        self.status.running.store(false, Ordering::Relaxed);
    }

    async fn consume(
        &self,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let consumer =
            ClosedOffThread::new(self.settings.config(&Self::group(&self.topic, self.model.name())).create()?);
        consumer.subscribe(&[&self.topic])?;
        let created = tokio::time::Instant::now();
        self.status.running.store(true, Ordering::Relaxed);
        // Next offsets of batches that changed nothing, not stored yet.
        let mut ignored: BTreeMap<i32, i64> = BTreeMap::new();
        let mut ignored_since = tokio::time::Instant::now();
        loop {
            let wait =
                if ignored.is_empty() { Duration::MAX } else { IGNORED_FLUSH.saturating_sub(ignored_since.elapsed()) };
            // Only the wait for the first message races the flush timer: `recv` is cancel-safe,
            // a half-gathered batch would not be.
            let first = tokio::select! {
                first = first_message(&consumer) => Some(first?),
                _ = tokio::time::sleep(wait) => None,
                _ = tokio::time::sleep(STUCK_CHECK) => {
                    if self.stuck(created) {
                        return Ok(());
                    }
                    continue;
                }
                _ = shutdown.changed() => return Ok(()),
            };
            let batch = match first {
                Some(first) => gather(&consumer, first).await?,
                None => Vec::new(),
            };
            if !batch.is_empty() && self.ignores(&batch) {
                if ignored.is_empty() {
                    ignored_since = tokio::time::Instant::now();
                }
                for m in &batch {
                    let next = ignored.entry(m.partition).or_insert(0);
                    *next = (*next).max(m.offset + 1);
                }
                if ignored_since.elapsed() < IGNORED_FLUSH {
                    continue;
                }
            }
            let Some(outcome) = self.apply_or_park(&batch, &ignored, shutdown).await else { return Ok(()) };
            self.status.applied.fetch_add(outcome.applied as u64, Ordering::Relaxed);
            self.status.parked.fetch_add(outcome.parked as u64, Ordering::Relaxed);
            let mut hint = std::mem::take(&mut ignored);
            for (partition, next) in outcome.next_offsets {
                let entry = hint.entry(partition).or_insert(0);
                *entry = (*entry).max(next);
            }
            commit_hint(&consumer, &self.topic, &hint);
        }
    }

    /// Whether this consumer, made at `created`, gets nothing although published
    /// messages have waited too long: a group member left without partitions or
    /// without fetches after its session timed out mid-batch. Then it is replaced.
    fn stuck(&self, created: tokio::time::Instant) -> bool {
        let waited = self.status.waiting_since().and_then(|since| (chrono::Utc::now() - since).to_std().ok());
        let stuck = created.elapsed() >= REPLACE_STUCK_AFTER && waited.is_some_and(|w| w >= REPLACE_STUCK_AFTER);
        if stuck {
            let waited_s = waited.unwrap_or_default().as_secs();
            tracing::error!(
                read_model = self.model.name(),
                waited_s,
                "projector gets nothing while events wait; replacing its consumer"
            );
        }
        stuck
    }

    /// Whether the read model would change nothing for any message of `batch` (each is a
    /// well-formed envelope it does not use): then only its offsets need storing.
    fn ignores(&self, batch: &[Message]) -> bool {
        batch.iter().all(|m| {
            serde_json::from_slice::<keel_domain::envelope::EventEnvelope>(&m.payload)
                .is_ok_and(|env| matches!(self.model.decode(&env), Ok(None)))
        })
    }

    /// Applies `batch` (and stores `ignored`), retrying failures that may pass (the
    /// database away) every 200 ms, and parking what the read model refuses for good
    /// (a constraint, a value it cannot store): a refused batch is applied message by
    /// message, and each refused message is parked like a poison event. `None` if
    /// shutdown fired meanwhile.
    async fn apply_or_park(
        &self,
        batch: &[Message],
        ignored: &BTreeMap<i32, i64>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<BatchOutcome> {
        let name = self.model.name();
        loop {
            let error = match self.apply(batch, ignored).await {
                Ok(outcome) => {
                    self.status.progressed();
                    return Some(outcome);
                }
                Err(err) if is_refusal(&err) && batch.len() > 1 => {
                    tracing::warn!(read_model = name, error = %err, "batch refused; applying it message by message");
                    let mut total = BatchOutcome::default();
                    for message in batch {
                        total.merge(
                            Box::pin(self.apply_or_park(std::slice::from_ref(message), ignored, shutdown)).await?,
                        );
                    }
                    return Some(total);
                }
                Err(err) if is_refusal(&err) => match self.park(&batch[0], ignored, err.to_string()).await {
                    Ok(outcome) => {
                        self.status.progressed();
                        return Some(outcome);
                    }
                    Err(err) => err,
                },
                Err(err) => err,
            };
            let failing_for = self.status.failed();
            if failing_for >= LOUD_AFTER {
                let failing_for_s = failing_for.as_secs();
                tracing::error!(read_model = name, error = %error, failing_for_s, "projector stalled; retrying");
            } else {
                tracing::warn!(read_model = name, error = %error, "batch failed; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }

    /// Parks `message`, which the read model refuses for good (`error`), and stores `ignored`.
    async fn park(
        &self,
        message: &Message,
        ignored: &BTreeMap<i32, i64>,
        error: String,
    ) -> Result<BatchOutcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(swap_lock_key(self.model.name()))
            .execute(&mut *tx)
            .await?;
        let schema = live_schema(self.model.name());
        let outcome = park_refused(&mut tx, self.model.as_ref(), &schema, &self.topic, message, error).await?;
        store_offsets(&mut tx, &schema, &self.topic, ignored).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Applies `batch` and stores the offsets of earlier ignored batches, in one transaction.
    async fn apply(&self, batch: &[Message], ignored: &BTreeMap<i32, i64>) -> Result<BatchOutcome, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(swap_lock_key(self.model.name()))
            .execute(&mut *tx)
            .await?;
        let schema = live_schema(self.model.name());
        let outcome = apply_batch(&mut tx, self.model.as_ref(), &schema, &self.topic, batch).await?;
        store_offsets(&mut tx, &schema, &self.topic, ignored).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Whether the database refused the batch for good: the same batch would be refused
/// again (bad data for a constraint or a column), as opposed to a failure that may
/// pass (connection, conflict, lock, resources, shutdown).
fn is_refusal(err: &sqlx::Error) -> bool {
    match err {
        // Class 22: data exception; class 23: integrity constraint violation.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

/// Waits for one message, then gathers more for a few milliseconds.
pub async fn next_batch(consumer: &StreamConsumer) -> Result<Vec<Message>, rdkafka::error::KafkaError> {
    let first = first_message(consumer).await?;
    gather(consumer, first).await
}

/// Waits for one message. Cancel-safe: dropping it loses no message.
async fn first_message(consumer: &StreamConsumer) -> Result<Message, rdkafka::error::KafkaError> {
    loop {
        match consumer.recv().await {
            Ok(message) => return Ok(detach(&message)),
            // librdkafka reconnects by itself; a broker outage is not the consumer's end.
            Err(err) if is_transient(&err) => {
                tracing::debug!(error = %err, "kafka unavailable; waiting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Gathers what arrives within the linger after `first` (at most a batch).
async fn gather(consumer: &StreamConsumer, first: Message) -> Result<Vec<Message>, rdkafka::error::KafkaError> {
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + LINGER;
    while batch.len() < MAX_BATCH {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(detach(&m)),
            Ok(Err(err)) if is_transient(&err) => break,
            Ok(Err(err)) => return Err(err),
            Err(_elapsed) => break,
        }
    }
    Ok(batch)
}

/// Errors librdkafka recovers from by itself (the broker is away, not the consumer broken).
fn is_transient(err: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(
        err.rdkafka_error_code(),
        Some(
            AllBrokersDown
                | BrokerTransportFailure
                | NetworkException
                | RequestTimedOut
                | OperationTimedOut
                | UnknownTopicOrPartition
        )
    )
}

/// Copies a Kafka message out of the client's buffers.
pub fn detach(m: &rdkafka::message::BorrowedMessage<'_>) -> Message {
    Message {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        payload: m.payload().unwrap_or_default().to_vec(),
    }
}

/// Tells Kafka how far we got, so a new group member starts near there. Postgres
/// stays the truth: Kafka's committed offset never runs ahead of it.
fn commit_hint(consumer: &StreamConsumer, topic: &str, next: &BTreeMap<i32, i64>) {
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in next {
        if tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)).is_err() {
            return;
        }
    }
    if !next.is_empty() {
        let _ = consumer.commit(&tpl, CommitMode::Async);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projector_is_waiting_while_published_events_wait_and_its_offsets_stand_still() {
        let status = ProjectorStatus::default();
        let published = HashMap::from([(0, 9)]);
        status.observe(Some(&published), &HashMap::from([(0, 5)]));
        assert_eq!(status.waiting_since(), None, "the first look has nothing to compare with");
        status.observe(Some(&published), &HashMap::from([(0, 5)]));
        let since = status.waiting_since().expect("behind, and nothing moved");
        status.observe(Some(&published), &HashMap::from([(0, 5)]));
        assert_eq!(status.waiting_since(), Some(since), "the wait keeps its start while nothing moves");
        assert!(status.stalled_for(chrono::Utc::now()).is_some());
        status.observe(Some(&published), &HashMap::from([(0, 6)]));
        assert_eq!(status.waiting_since(), None, "moving ends the wait");
        status.observe(Some(&published), &HashMap::from([(0, 6)]));
        assert!(status.waiting_since().is_some());
        status.observe(None, &HashMap::from([(0, 6)]));
        assert_eq!(status.waiting_since(), None, "an unknown backlog (broker away) is no wait");
        status.observe(Some(&published), &HashMap::from([(0, 10)]));
        status.observe(Some(&published), &HashMap::from([(0, 10)]));
        assert_eq!(status.waiting_since(), None, "caught up is no wait");
        assert_eq!(status.stalled_for(chrono::Utc::now()), None);
    }
}
