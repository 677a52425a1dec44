//! Kafka consumer settings for projectors and replays.

use std::ops::Deref;

use rdkafka::ClientConfig;
use rdkafka::consumer::StreamConsumer;

/// Settings shared by every projector consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Group session timeout; keep it low in tests so joins are quick.
    pub session_timeout_ms: u32,
}

impl ConsumerSettings {
    /// A consumer config in group `group`, offsets never auto-committed (Postgres holds them).
    pub fn config(&self, group: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (self.session_timeout_ms / 3).max(100).to_string())
            .set("fetch.wait.max.ms", "5")
            .set("socket.timeout.ms", "10000")
            .set("reconnect.backoff.max.ms", "1000")
            .set("enable.partition.eof", "false");
        // `KEEL_KAFKA_*` (TLS, SASL, …) last, so an operator's setting wins; values are never logged.
        for (name, value) in keel_domain::kafka_settings::from_env_vars(std::env::vars()) {
            config.set(name, value);
        }
        config
    }
}

/// A group consumer whose close runs on a thread of its own when it is dropped.
///
/// Dropping a group consumer leaves the group, and rdkafka waits for that to finish,
/// polling for as long as the group coordinator does not answer. On an async runtime
/// thread that would stall every task on it, including whatever carries the traffic
/// to the broker (a single-threaded runtime then never gets the answer it waits for).
pub struct ClosedOffThread(Option<StreamConsumer>);

impl ClosedOffThread {
    /// Wraps `consumer`.
    pub fn new(consumer: StreamConsumer) -> Self {
        Self(Some(consumer))
    }
}

impl Deref for ClosedOffThread {
    type Target = StreamConsumer;

    fn deref(&self) -> &StreamConsumer {
        self.0.as_ref().expect("the consumer is only taken when dropped")
    }
}

impl Drop for ClosedOffThread {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            // If no thread can be started, the closure and the consumer in it are dropped here.
            let _ = std::thread::Builder::new().name("kafka-consumer-close".into()).spawn(move || drop(consumer));
        }
    }
}
