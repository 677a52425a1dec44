//! Kafka consumer settings for projectors and replays.

use rdkafka::ClientConfig;

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
        config
    }
}
