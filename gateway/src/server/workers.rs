//! The background workers besides the projectors: the relay to Kafka, the purge
//! sweeper and the audit checkpoint signer.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use keel_commands::relay::{Relay, RelayConfig, RelayStatus};

use super::services::Services;
use super::tasks::Tasks;
use crate::config::Settings;

/// Spawns the relay if `run`; returns its status (idle when it does not run here).
pub fn relay(settings: &Settings, relaxed: &PgPool, run: bool, tasks: &mut Tasks) -> Arc<RelayStatus> {
    let status = Arc::new(RelayStatus::default());
    if run {
        let config = RelayConfig {
            topic: settings.events_topic.clone(),
            billing_topic: Some(settings.billing_topic.clone()),
            max_message_bytes: settings.kafka_message_max_bytes,
            ..RelayConfig::default()
        };
        let relay = Relay::new(relaxed.clone(), settings.kafka_brokers.clone(), config, status.clone())
            .creating_topic(settings.partitions);
        tasks.spawn(relay.run(tasks.stop.clone()));
    }
    status
}

/// Spawns the purge sweeper and the audit checkpoint signer.
pub fn sweepers(settings: &Settings, pool: &PgPool, services: &Services, tasks: &mut Tasks) {
    let every = Duration::from_secs(settings.purge_sweep_seconds.max(1));
    tasks.spawn(super::sweeper::run(pool.clone(), services.tenants.clone(), every, tasks.stop.clone()));
    let every = Duration::from_secs(settings.audit_checkpoint_seconds.max(1));
    tasks.spawn(checkpoints(pool.clone(), every, tasks.stop.clone()));
}

/// Signs a checkpoint of the audit chains that moved, every `every`, until shutdown.
async fn checkpoints(pool: PgPool, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        match keel_commands::audit::sign_checkpoint(&pool).await {
            Ok(Some(number)) => tracing::debug!(number, "audit checkpoint signed"),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "audit checkpoint failed; retrying"),
        }
    }
}
