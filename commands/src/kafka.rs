//! Kafka plumbing for the write side: the idempotent producer and topic creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

/// An idempotent producer (acks=all) that partitions by key like the Java client
/// (murmur2), so every Kafka client agrees on a tenant's partition.
pub fn producer(brokers: &str) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "1")
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "15000")
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "1000")
        .create()
}

/// Creates `topics` with `partitions` partitions where they do not exist yet, with
/// infinite retention and a replication factor of `KEEL_KAFKA_REPLICATION` (default 1).
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<(), rdkafka::error::KafkaError> {
    let replication = std::env::var("KEEL_KAFKA_REPLICATION").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("socket.timeout.ms", "10000").create()?;
    // The log is the replay source: keep it for ever.
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication)).set("retention.ms", "-1"))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(new.iter(), &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(rdkafka::error::KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic, ?code, "could not create topic");
                });
            }
        }
    }
    Ok(())
}
