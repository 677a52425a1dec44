//! The projectors this process runs, one per read model.

use std::sync::Arc;

use sqlx::PgPool;

use keel_projections::flag_snapshots::FlagSnapshots;
use keel_projections::kafka::ConsumerSettings;
use keel_projections::projector::{Projector, ProjectorStatus};
use keel_projections::tenant_registry::TenantRegistry;

use super::tasks::Tasks;
use crate::config::Settings;

/// The status of each projector (all idle when the process runs none).
#[derive(Default)]
pub struct ProjectorStatuses {
    /// The tenant registry's.
    pub registry: Arc<ProjectorStatus>,
    /// The flag snapshots'.
    pub flag_snapshots: Arc<ProjectorStatus>,
    /// The routing model's.
    pub routing: Arc<ProjectorStatus>,
    /// The billing ledger's.
    pub billing_ledger: Arc<ProjectorStatus>,
    /// The billing rollups'.
    pub billing_rollups: Arc<ProjectorStatus>,
}

/// Spawns the projectors if `run`; returns their statuses.
pub fn start(settings: &Settings, relaxed: &PgPool, run: bool, tasks: &mut Tasks) -> ProjectorStatuses {
    let statuses = ProjectorStatuses::default();
    if !run {
        return statuses;
    }
    let rx = tasks.stop.clone();
    let consumer =
        ConsumerSettings { brokers: settings.kafka_brokers.clone(), session_timeout_ms: settings.session_timeout_ms };
    let projector = Projector::new(
        Arc::new(TenantRegistry),
        relaxed.clone(),
        consumer.clone(),
        settings.events_topic.clone(),
        statuses.registry.clone(),
    );
    tasks.spawn(projector.run(rx.clone()));
    let projector = Projector::new(
        Arc::new(FlagSnapshots),
        relaxed.clone(),
        consumer.clone(),
        settings.events_topic.clone(),
        statuses.flag_snapshots.clone(),
    );
    tasks.spawn(projector.run(rx.clone()));
    let projector = Projector::new(
        Arc::new(keel_projections::routing::RoutingModel),
        relaxed.clone(),
        consumer.clone(),
        settings.events_topic.clone(),
        statuses.routing.clone(),
    );
    tasks.spawn(projector.run(rx.clone()));
    let projector = Projector::new(
        Arc::new(keel_projections::billing_ledger::BillingLedger),
        relaxed.clone(),
        consumer.clone(),
        settings.events_topic.clone(),
        statuses.billing_ledger.clone(),
    );
    tasks.spawn(projector.run(rx.clone()));
    let projector = Projector::new(
        Arc::new(keel_projections::billing_rollups::BillingRollups),
        relaxed.clone(),
        consumer.clone(),
        settings.events_topic.clone(),
        statuses.billing_rollups.clone(),
    );
    tasks.spawn(projector.run(rx.clone()));
    let projector = Projector::new(
        Arc::new(keel_projections::audit_trail::AuditTrail),
        relaxed.clone(),
        consumer.clone(),
        settings.events_topic.clone(),
        Arc::new(ProjectorStatus::default()),
    );
    tasks.spawn(projector.run(rx.clone()));
    statuses
}
