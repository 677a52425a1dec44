//! Reading the whole event log (`keel.events`) outside the projectors: from Kafka, or
//! offline from an NDJSON export. Used by `keel log export`, `keel replay --tenant`
//! and the audit tools.
//!
//! - [`LogSource::Kafka`] reads every partition of the topic from offset 0 up to the
//!   high watermarks read when it starts, with an assigned consumer (no group joins,
//!   no offset commits), then stops. Partitions are interleaved, each in its own
//!   order, so every key (tenant) keeps its order.
//! - [`LogSource::File`] reads an export: one JSON [`EventEnvelope`] per line, exactly
//!   the Kafka message values ([`export`] writes it).
//!
//! [`read`] hands every record to a callback, in log order, and advances a progress
//! bar (messages for Kafka, bytes for a file). The log is at-least-once (ADR 0002): a
//! republished repeat can come after later events of its key, so folds should drop
//! events at or below their key's last applied `(txid, position)`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::io::AsyncBufReadExt;

use keel_domain::envelope::EventEnvelope;

/// How long a Kafka read may go without a message before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of metadata and watermark requests.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the event log is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    /// The event topic, from offset 0 up to the high watermarks read at the start.
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// The event topic (`keel.events`).
        topic: String,
    },
    /// An NDJSON export (`keel log export`): one envelope per line.
    File(PathBuf),
}

impl fmt::Display for LogSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogSource::Kafka { brokers, topic } => write!(f, "topic {topic} on {brokers}"),
            LogSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Where a record is in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A Kafka message.
    Kafka {
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
    /// A line of an export (from 1).
    Line(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Kafka { partition, offset } => write!(f, "partition {partition} offset {offset}"),
            Location::Line(line) => write!(f, "line {line}"),
        }
    }
}

/// One event of the log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Where it is.
    pub location: Location,
    /// The Kafka key (for an export, or a message without a key: the envelope's
    /// [`EventEnvelope::key`]).
    pub key: String,
    /// The exact bytes of the message value (or of the line, without its line break).
    pub raw: Vec<u8>,
    /// The decoded envelope.
    pub envelope: EventEnvelope,
}

/// What a [`read`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSummary<B> {
    /// Records handed to the callback.
    pub records: u64,
    /// For Kafka, the high watermark read at the start, per partition (the read
    /// stopped below it); empty for a file.
    pub high_watermarks: BTreeMap<i32, i64>,
    /// What the callback stopped with, if it stopped the read early.
    pub stopped: Option<B>,
}

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The topic does not exist (or has no partitions).
    #[error("topic {0} not found")]
    NoTopic(String),
    /// A partition no longer starts at offset 0: its history was deleted (retention).
    #[error(
        "partition {partition} of {topic} starts at offset {low}, not 0: the log lost history (it needs retention.ms=-1)"
    )]
    Truncated {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Its first offset.
        low: i64,
    },
    /// No message arrived for too long.
    #[error("no message from partition {partition} for {seconds} s (stopped at offset {next}, expected up to {high})")]
    Stalled {
        /// A partition still unfinished.
        partition: i32,
        /// The next offset expected from it.
        next: i64,
        /// Its high watermark at the start.
        high: i64,
        /// How long it waited.
        seconds: u64,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A message or line is not an event envelope.
    #[error("{location}: not an event envelope: {reason}")]
    Malformed {
        /// Where.
        location: Location,
        /// Why.
        reason: String,
    },
}

/// A progress bar for reading `source` (on stderr; drawn only on a terminal).
pub fn progress_bar(source: &LogSource) -> ProgressBar {
    let template = match source {
        LogSource::Kafka { .. } => "{spinner} reading the log [{bar:40}] {pos}/{len} events {per_sec} eta {eta}",
        LogSource::File(_) => "{spinner} reading the log [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    };
    ProgressBar::new(0)
        .with_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()))
}

/// Reads the whole log of `source` in order and hands each record to `each`, which
/// may stop early with `ControlFlow::Break(b)` (returned in the summary). `progress`
/// gets the total (messages, or bytes of a file) and is advanced per record; it is
/// finished at the end.
pub async fn read<B, F>(source: &LogSource, progress: &ProgressBar, each: F) -> Result<ReadSummary<B>, LogError>
where
    F: FnMut(LogRecord) -> ControlFlow<B>,
{
    let summary = match source {
        LogSource::Kafka { brokers, topic } => read_kafka(brokers, topic, progress, each).await?,
        LogSource::File(path) => read_file(path, progress, each).await?,
    };
    progress.finish();
    Ok(summary)
}

fn decode(location: Location, key: Option<&[u8]>, raw: &[u8]) -> Result<LogRecord, LogError> {
    let envelope: EventEnvelope =
        serde_json::from_slice(raw).map_err(|e| LogError::Malformed { location, reason: e.to_string() })?;
    let key = match key {
        Some(bytes) => String::from_utf8(bytes.to_vec())
            .map_err(|_| LogError::Malformed { location, reason: "the message key is not UTF-8".into() })?,
        None => envelope.key().to_string(),
    };
    Ok(LogRecord { location, key, raw: raw.to_vec(), envelope })
}

async fn read_kafka<B, F>(
    brokers: &str,
    topic: &str,
    progress: &ProgressBar,
    mut each: F,
) -> Result<ReadSummary<B>, LogError>
where
    F: FnMut(LogRecord) -> ControlFlow<B>,
{
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // Required by the client, but never joined: the partitions are assigned and
        // no offset is ever committed.
        .set("group.id", format!("keel-log-reader.{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .set("queued.min.messages", "100000")
        .set("fetch.max.bytes", "104857600")
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "1000");
    for (name, value) in keel_domain::kafka_settings::from_env_vars(std::env::vars()) {
        config.set(name, value);
    }
    let consumer: StreamConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .filter(|p: &Vec<i32>| !p.is_empty())
        .ok_or_else(|| LogError::NoTopic(topic.to_string()))?;

    // The end of each partition as of now; `next` is the next offset wanted from it.
    let mut high_watermarks = BTreeMap::new();
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut total = 0u64;
    for &partition in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
        if low > 0 {
            return Err(LogError::Truncated { topic: topic.to_string(), partition, low });
        }
        high_watermarks.insert(partition, high);
        if high > 0 {
            next.insert(partition, 0);
            total += high as u64;
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    progress.set_length(total);
    let mut records = 0u64;
    if next.is_empty() {
        return Ok(ReadSummary { records, high_watermarks, stopped: None });
    }
    consumer.assign(&assignment)?;

    while !next.is_empty() {
        let received = match tokio::time::timeout(STALL_TIMEOUT, consumer.recv()).await {
            Ok(received) => received,
            Err(_) => {
                let (&partition, &at) = next.iter().next().unwrap_or((&0, &0));
                return Err(LogError::Stalled {
                    partition,
                    next: at,
                    high: high_watermarks.get(&partition).copied().unwrap_or_default(),
                    seconds: STALL_TIMEOUT.as_secs(),
                });
            }
        };
        let message = match received {
            Ok(message) => message,
            // The end of the partition as it is now, which is at or past where it
            // was at the start.
            Err(KafkaError::PartitionEOF(partition)) => {
                next.remove(&partition);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let (partition, offset) = (message.partition(), message.offset());
        let Some(high) = next.contains_key(&partition).then(|| high_watermarks[&partition]) else { continue };
        if offset >= high {
            // Written after the read started.
            next.remove(&partition);
            continue;
        }
        let location = Location::Kafka { partition, offset };
        let raw = message
            .payload()
            .ok_or_else(|| LogError::Malformed { location, reason: "the message has no value".into() })?;
        let record = decode(location, message.key(), raw)?;
        progress.inc(1);
        records += 1;
        if offset + 1 >= high {
            next.remove(&partition);
        } else {
            next.insert(partition, offset + 1);
        }
        if let ControlFlow::Break(stopped) = each(record) {
            return Ok(ReadSummary { records, high_watermarks, stopped: Some(stopped) });
        }
    }
    Ok(ReadSummary { records, high_watermarks, stopped: None })
}

async fn read_file<B, F>(path: &Path, progress: &ProgressBar, mut each: F) -> Result<ReadSummary<B>, LogError>
where
    F: FnMut(LogRecord) -> ControlFlow<B>,
{
    let io = |source| LogError::Io { path: path.to_path_buf(), source };
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    progress.set_length(file.metadata().await.map_err(io)?.len());
    let mut reader = tokio::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut number = 0u64;
    let mut records = 0u64;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).await.map_err(io)?;
        if read == 0 {
            break;
        }
        number += 1;
        progress.inc(read as u64);
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = decode(Location::Line(number), None, &line)?;
        records += 1;
        if let ControlFlow::Break(stopped) = each(record) {
            return Ok(ReadSummary { records, high_watermarks: BTreeMap::new(), stopped: Some(stopped) });
        }
    }
    Ok(ReadSummary { records, high_watermarks: BTreeMap::new(), stopped: None })
}

/// Writes the whole log of `source` to `out` as NDJSON, one message value per line,
/// each partition in its order (partitions interleaved). The file appears only once
/// complete (it is written beside `out` and renamed). Returns the number of events.
pub async fn export(source: &LogSource, out: &Path, progress: &ProgressBar) -> Result<u64, LogError> {
    let io = |source| LogError::Io { path: out.to_path_buf(), source };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&partial).map_err(io)?);
    let written = read(source, progress, |record| {
        let line = one_line(&record);
        match writer.write_all(&line).and_then(|()| writer.write_all(b"\n")) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    })
    .await;
    let finished = match written {
        Ok(ReadSummary { stopped: Some(e), .. }) => Err(io(e)),
        Ok(summary) => writer
            .into_inner()
            .map_err(|e| io(e.into_error()))
            .and_then(|file| file.sync_all().map_err(io))
            .and_then(|()| std::fs::rename(&partial, out).map_err(io))
            .map(|()| summary.records),
        Err(e) => Err(e),
    };
    if finished.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    finished
}

/// The record's value on one line: its exact bytes, unless they span lines (then the
/// same JSON, compact).
fn one_line(record: &LogRecord) -> Vec<u8> {
    if !record.raw.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return record.raw.clone();
    }
    serde_json::from_slice::<serde_json::Value>(&record.raw)
        .and_then(|value| serde_json::to_vec(&value))
        .unwrap_or_else(|_| record.raw.iter().copied().filter(|b| *b != b'\n' && *b != b'\r').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(position: i64) -> serde_json::Value {
        serde_json::json!({
            "event_id": uuid::Uuid::now_v7(),
            "tenant_id": "tnt_01jd0000000000000000000000",
            "position": position,
            "txid": 7,
            "aggregate_type": "tenant",
            "aggregate_id": "tnt_01jd0000000000000000000000",
            "sequence": position,
            "event_type": "tenant.reactivated",
            "schema_version": "1",
            "occurred_at": "2026-02-01T00:00:00Z",
            "actor": { "type": "system", "id": "test" },
            "correlation_id": "c",
            "causation_id": "c",
            "payload": {}
        })
    }

    fn file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("keel-event-log-{name}-{}.ndjson", uuid::Uuid::now_v7()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn a_file_is_read_in_order_skipping_blank_lines() {
        let text = format!("{}\n\n{}\r\n", envelope(1), envelope(2));
        let path = file("ok", &text);
        let mut seen = Vec::new();
        let summary = read::<(), _>(&LogSource::File(path.clone()), &ProgressBar::hidden(), |r| {
            seen.push((r.location, r.envelope.position, r.key));
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
        std::fs::remove_file(path).unwrap();
        assert_eq!(summary.records, 2);
        let tenant = "tnt_01jd0000000000000000000000".to_string();
        assert_eq!(seen, vec![(Location::Line(1), 1, tenant.clone()), (Location::Line(3), 2, tenant)]);
    }

    #[tokio::test]
    async fn a_malformed_line_is_named_by_its_number() {
        let path = file("bad", &format!("{}\n{{\"position\": 2}}\n", envelope(1)));
        let err = read::<(), _>(&LogSource::File(path.clone()), &ProgressBar::hidden(), |_| ControlFlow::Continue(()))
            .await
            .unwrap_err();
        std::fs::remove_file(path).unwrap();
        assert!(err.to_string().starts_with("line 2: not an event envelope"), "{err}");
    }

    #[tokio::test]
    async fn the_callback_can_stop_the_read() {
        let path = file("stop", &format!("{}\n{}\n", envelope(1), envelope(2)));
        let summary =
            read(&LogSource::File(path.clone()), &ProgressBar::hidden(), |r| ControlFlow::Break(r.envelope.position))
                .await
                .unwrap();
        std::fs::remove_file(path).unwrap();
        assert_eq!((summary.records, summary.stopped), (1, Some(1)));
    }

    #[tokio::test]
    async fn an_export_of_an_export_is_the_same_file() {
        let text = format!("{}\n{}\n", envelope(1), envelope(2));
        let path = file("copy", &text);
        let out = path.with_extension("copy.ndjson");
        let n = export(&LogSource::File(path.clone()), &out, &ProgressBar::hidden()).await.unwrap();
        assert_eq!((n, std::fs::read_to_string(&out).unwrap()), (2, text));
        std::fs::remove_file(path).unwrap();
        std::fs::remove_file(out).unwrap();
    }
}
