//! The background workers besides the projectors: the relay to Kafka, the purge
//! sweeper and the audit checkpoint signer.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use keel_commands::kek::Kek;
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

/// Spawns the purge sweeper, the audit checkpoint signer and the KEK rotation check.
pub fn sweepers(settings: &Settings, pool: &PgPool, services: &Services, tasks: &mut Tasks) {
    let every = Duration::from_secs(settings.purge_sweep_seconds.max(1));
    tasks.spawn(super::sweeper::run(pool.clone(), services.tenants.clone(), every, tasks.stop.clone()));
    let every = Duration::from_secs(settings.audit_checkpoint_seconds.max(1));
    tasks.spawn(checkpoints(pool.clone(), services.kek.clone(), every, tasks.stop.clone()));
    let every = Duration::from_secs(settings.kek_check_seconds.max(1));
    let max_age = chrono::Duration::days(i64::from(settings.kek_rotation_days.max(1)));
    tasks.spawn(kek_rotation(pool.clone(), services.kek.clone(), max_age, every, tasks.stop.clone()));
}

/// Rotates the KEK once its current version is `max_age` old (checked every `every`),
/// and finishes any interrupted re-wrap or destruction, until shutdown.
async fn kek_rotation(
    pool: PgPool,
    kek: Kek,
    max_age: chrono::Duration,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        match keel_commands::wrapped_secrets::check(&pool, kek.as_ref(), max_age).await {
            Ok(Some(rotation)) => tracing::info!(current = %rotation.current, "key-encryption key rotated (yearly)"),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "key-encryption key check failed; retrying"),
        }
    }
}

/// Signs a checkpoint of the audit chains that moved, every `every`, until shutdown.
async fn checkpoints(pool: PgPool, kek: Kek, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        match keel_commands::audit::sign_checkpoint(&pool, kek.as_ref()).await {
            Ok(Some(number)) => tracing::debug!(number, "audit checkpoint signed"),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "audit checkpoint failed; retrying"),
        }
    }
}
