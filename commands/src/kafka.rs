//! Kafka plumbing for the write side: the idempotent producer and topic creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

/// A client config for `brokers` with the `KEEL_KAFKA_*` settings of the environment
/// (TLS, SASL, …; `keel_domain::kafka_settings`). Their values are never logged.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (name, value) in keel_domain::kafka_settings::from_env_vars(std::env::vars()) {
        config.set(name, value);
    }
    config
}

/// An idempotent producer (acks=all) that partitions by key like the Java client
/// (murmur2), so every Kafka client agrees on a tenant's partition. It refuses, itself,
/// messages over `max_message_bytes` (the broker's `message.max.bytes`).
pub fn producer(brokers: &str, max_message_bytes: usize) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    let mut config = client_config(brokers);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "1")
        .set("batch.num.messages", "10000")
        .set("message.max.bytes", max_message_bytes.to_string())
        .set("message.timeout.ms", "15000")
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "1000");
    config.create()
}

/// Creates `topics` with `partitions` partitions where they do not exist yet, with
/// infinite retention and a replication factor of `KEEL_KAFKA_REPLICATION` (default 1).
pub async fn ensure_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<(), rdkafka::error::KafkaError> {
    let replication = std::env::var("KEEL_KAFKA_REPLICATION").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).set("socket.timeout.ms", "10000").create()?;
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
