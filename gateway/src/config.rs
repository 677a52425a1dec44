//! Settings of `keel serve`, all from the environment (or flags).

use std::net::SocketAddr;
use std::time::Duration;

/// Everything a running Keel needs.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Postgres URL of the runtime role (row-level security applies to it).
    #[arg(long, env = "KEEL_DATABASE_URL")]
    pub database_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KEEL_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Where the REST query API listens.
    #[arg(long, env = "KEEL_REST_ADDR", default_value = "127.0.0.1:8080")]
    pub rest_addr: SocketAddr,
    /// Where the gRPC command API listens.
    #[arg(long, env = "KEEL_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// The event topic.
    #[arg(long, env = "KEEL_EVENTS_TOPIC", default_value = "keel.events")]
    pub events_topic: String,
    /// Partitions of the event topic when Keel creates it.
    #[arg(long, env = "KEEL_KAFKA_PARTITIONS", default_value_t = 12)]
    pub partitions: i32,
    /// Kafka consumer-group session timeout.
    #[arg(long, env = "KEEL_KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,
    /// How long a query with `X-Keel-Min-Position` waits before answering 503.
    #[arg(long, env = "KEEL_MIN_POSITION_WAIT_MS", default_value_t = 5_000)]
    pub min_position_wait_ms: u64,
    /// How often the purge sweeper looks for tenants past their grace period.
    #[arg(long, env = "KEEL_PURGE_SWEEP_SECONDS", default_value_t = 60)]
    pub purge_sweep_seconds: u64,
    /// Postgres connections of this process.
    #[arg(long, env = "KEEL_DB_POOL_SIZE", default_value_t = 32)]
    pub db_pool_size: u32,
}

impl Settings {
    /// Settings for a database and broker, with default addresses.
    pub fn new(database_url: &str, kafka_brokers: &str) -> Self {
        Self {
            database_url: database_url.to_string(),
            kafka_brokers: kafka_brokers.to_string(),
            rest_addr: ([127, 0, 0, 1], 8080).into(),
            grpc_addr: ([127, 0, 0, 1], 50051).into(),
            events_topic: "keel.events".into(),
            partitions: 12,
            session_timeout_ms: 10_000,
            min_position_wait_ms: 5_000,
            purge_sweep_seconds: 60,
            db_pool_size: 32,
        }
    }

    /// The read-your-writes wait bound.
    pub fn min_position_wait(&self) -> Duration {
        Duration::from_millis(self.min_position_wait_ms)
    }
}
