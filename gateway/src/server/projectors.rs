//! The projectors this process runs: one per registered read model
//! (`keel_projections::registry`).

use sqlx::PgPool;

use keel_projections::kafka::ConsumerSettings;
use keel_projections::registry::ProjectorStatuses;

use super::tasks::Tasks;
use crate::config::Settings;

/// Spawns every registered read model's projector if `run`; returns their statuses
/// (all idle when the process runs none).
pub fn start(settings: &Settings, relaxed: &PgPool, run: bool, tasks: &mut Tasks) -> ProjectorStatuses {
    let statuses = ProjectorStatuses::default();
    if run {
        let consumer = ConsumerSettings {
            brokers: settings.kafka_brokers.clone(),
            session_timeout_ms: settings.session_timeout_ms,
        };
        let handles = statuses.spawn_all(relaxed, &consumer, &settings.events_topic, &tasks.stop);
        tasks.handles.extend(handles);
    }
    statuses
}
