//! Readiness: Postgres answers, Kafka answers, and the relay runs; each registered
//! read model's projector is reported beside them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use sqlx::PgPool;

use keel_commands::relay::RelayStatus;
use keel_projections::registry::ProjectorStatuses;

/// What /readyz reports.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Postgres answered `SELECT 1`.
    pub postgres: bool,
    /// The broker answered a metadata request.
    pub kafka: bool,
    /// The relay task is running (as leader or standby).
    pub relay: bool,
    /// Whether each read model's projector loop is running, by name (not part of
    /// `ready`: a process may run without projectors).
    pub projectors: BTreeMap<&'static str, bool>,
}

impl Readiness {
    /// All three.
    pub fn ready(&self) -> bool {
        self.postgres && self.kafka && self.relay
    }
}

/// Checks the dependencies.
pub struct ReadyCheck {
    pool: PgPool,
    kafka: Arc<BaseConsumer>,
    relay: Arc<RelayStatus>,
    projectors: ProjectorStatuses,
}

impl ReadyCheck {
    /// A check of `pool`, the brokers, `relay` and the `projectors`.
    pub fn new(
        pool: PgPool,
        brokers: &str,
        relay: Arc<RelayStatus>,
        projectors: ProjectorStatuses,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let kafka: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("socket.timeout.ms", "2000")
            .set("reconnect.backoff.max.ms", "1000")
            .create()?;
        Ok(Self { pool, kafka: Arc::new(kafka), relay, projectors })
    }

    /// Runs the checks (each bounded to two seconds).
    pub async fn check(&self) -> Readiness {
        let postgres = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .is_ok_and(|r| r.is_ok());
        let kafka = {
            let consumer = self.kafka.clone();
            tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, Duration::from_secs(2)).is_ok())
                .await
                .unwrap_or(false)
        };
        Readiness {
            postgres,
            kafka,
            relay: self.relay.alive.load(Ordering::Relaxed),
            projectors: self.projectors.running(),
        }
    }
}
