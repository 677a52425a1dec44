//! The one list of read models. `keel migrate`, server start-up, `keel replay`,
//! `keel dlq` and readiness all read [`READ_MODELS`]: adding a read model is one
//! entry there.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use indicatif::ProgressBar;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit_trail::AuditTrail;
use crate::billing_ledger::BillingLedger;
use crate::billing_rollups::BillingRollups;
use crate::dead_letters::{self, ParkedEvent, RetryOutcome};
use crate::flag_snapshots::FlagSnapshots;
use crate::kafka::ConsumerSettings;
use crate::projector::{Projector, ProjectorStatus};
use crate::read_model::{ReadModel, ensure_schema};
use crate::replay::{ReplayError, ReplayReport, replay};
use crate::routing::RoutingModel;
use crate::tenant_registry::TenantRegistry;

/// Every read model, in the order `keel migrate` creates them and start-up spawns
/// their projectors.
pub static READ_MODELS: &[&dyn RegisteredReadModel] =
    &[&TenantRegistry, &FlagSnapshots, &RoutingModel, &BillingLedger, &BillingRollups, &AuditTrail];

/// What the gateway does with a read model, whatever its type (every [`ReadModel`]
/// that is `Copy` is one).
#[async_trait]
pub trait RegisteredReadModel: Send + Sync + 'static {
    /// The read model's name, e.g. `tenant_registry`.
    fn name(&self) -> &'static str;

    /// Creates the live schema if it does not exist yet (as the migration role `owner`);
    /// returns whether it did.
    async fn ensure_schema(&self, owner: &PgPool, runtime_role: &str) -> Result<bool, sqlx::Error>;

    /// Spawns the live projector on `topic`, writing through `pool` (the runtime role),
    /// reporting to `status`, until `shutdown` fires.
    fn spawn_projector(
        &self,
        pool: PgPool,
        settings: ConsumerSettings,
        topic: String,
        status: Arc<ProjectorStatus>,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()>;

    /// `keel replay <name>`: rebuilds the model from `topic` and swaps it in (as the
    /// migration role `owner`).
    async fn replay(
        &self,
        owner: &PgPool,
        settings: &ConsumerSettings,
        topic: &str,
        runtime_role: &str,
        progress: &ProgressBar,
    ) -> Result<ReplayReport, ReplayError>;

    /// `keel dlq retry`: retries a tenant's parked events, in order.
    async fn retry_dead_letters(&self, pool: &PgPool, tenant: &str) -> Result<RetryOutcome, sqlx::Error>;

    /// `keel dlq list`: the parked events, optionally of one tenant.
    async fn list_dead_letters(&self, pool: &PgPool, tenant: Option<&str>) -> Result<Vec<ParkedEvent>, sqlx::Error> {
        dead_letters::list(pool, self.name(), tenant).await
    }

    /// `keel dlq discard`: discards one parked event for good; returns whether it existed.
    async fn discard_dead_letter(&self, pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
        dead_letters::discard(pool, self.name(), id).await
    }
}

#[async_trait]
impl<R: ReadModel + Copy> RegisteredReadModel for R {
    fn name(&self) -> &'static str {
        ReadModel::name(self)
    }

    async fn ensure_schema(&self, owner: &PgPool, runtime_role: &str) -> Result<bool, sqlx::Error> {
        ensure_schema(owner, self, runtime_role).await
    }

    fn spawn_projector(
        &self,
        pool: PgPool,
        settings: ConsumerSettings,
        topic: String,
        status: Arc<ProjectorStatus>,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(Projector::new(Arc::new(*self), pool, settings, topic, status).run(shutdown))
    }

    async fn replay(
        &self,
        owner: &PgPool,
        settings: &ConsumerSettings,
        topic: &str,
        runtime_role: &str,
        progress: &ProgressBar,
    ) -> Result<ReplayReport, ReplayError> {
        replay(self, owner, settings, topic, runtime_role, progress).await
    }

    async fn retry_dead_letters(&self, pool: &PgPool, tenant: &str) -> Result<RetryOutcome, sqlx::Error> {
        dead_letters::retry(pool, self, tenant).await
    }
}

/// A name that is not in [`READ_MODELS`].
#[derive(Debug, thiserror::Error)]
#[error("unknown read model {name:?}; known: {known}", name = self.0, known = names().join(", "))]
pub struct UnknownReadModel(pub String);

/// Every read model's name, in registry order.
pub fn names() -> Vec<&'static str> {
    READ_MODELS.iter().map(|model| model.name()).collect()
}

/// The read model named `name`.
pub fn by_name(name: &str) -> Result<&'static dyn RegisteredReadModel, UnknownReadModel> {
    READ_MODELS.iter().copied().find(|model| model.name() == name).ok_or_else(|| UnknownReadModel(name.to_string()))
}

/// Creates each read model's live schema that does not exist yet (as the migration
/// role); returns the names of those created.
pub async fn ensure_schemas(owner: &PgPool, runtime_role: &str) -> Result<Vec<&'static str>, sqlx::Error> {
    let mut created = Vec::new();
    for model in READ_MODELS {
        if model.ensure_schema(owner, runtime_role).await? {
            created.push(model.name());
        }
    }
    Ok(created)
}

/// The first registered read model whose live schema does not exist (`keel migrate`
/// has not prepared this database for it), if any.
pub async fn first_unmigrated(pool: &PgPool) -> Result<Option<&'static str>, sqlx::Error> {
    let names = names();
    let schemas: Vec<String> = names.iter().map(|name| crate::read_model::live_schema(name)).collect();
    let present: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1)")
        .bind(&schemas)
        .fetch_all(pool)
        .await?;
    Ok(names.into_iter().zip(&schemas).find(|(_, schema)| !present.contains(schema)).map(|(name, _)| name))
}

/// One status per read model's projector, in registry order (for readiness and tests).
#[derive(Debug, Clone)]
pub struct ProjectorStatuses(Vec<(&'static str, Arc<ProjectorStatus>)>);

impl Default for ProjectorStatuses {
    fn default() -> Self {
        Self(READ_MODELS.iter().map(|model| (model.name(), Arc::default())).collect())
    }
}

impl ProjectorStatuses {
    /// The status of read model `name`'s projector.
    pub fn get(&self, name: &str) -> Option<&Arc<ProjectorStatus>> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, status)| status)
    }

    /// Each read model's name and its projector's status, in registry order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Arc<ProjectorStatus>)> {
        self.0.iter().map(|(name, status)| (*name, status))
    }

    /// Whether each read model's projector loop is running, by name.
    pub fn running(&self) -> BTreeMap<&'static str, bool> {
        self.iter().map(|(name, status)| (name, status.running.load(std::sync::atomic::Ordering::Relaxed))).collect()
    }

    /// Spawns every read model's live projector on `topic`, writing through `pool`
    /// (the runtime role) and reporting here, until `shutdown` fires.
    pub fn spawn_all(
        &self,
        pool: &PgPool,
        settings: &ConsumerSettings,
        topic: &str,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        READ_MODELS
            .iter()
            .zip(&self.0)
            .map(|(model, (_, status))| {
                model.spawn_projector(
                    pool.clone(),
                    settings.clone(),
                    topic.to_string(),
                    status.clone(),
                    shutdown.clone(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut unique = names();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), READ_MODELS.len());
    }

    #[test]
    fn finds_by_name_and_refuses_unknown_names() {
        assert!(names().iter().all(|name| by_name(name).is_ok_and(|model| model.name() == *name)));
        let known = names().join(", ");
        assert_eq!(
            by_name("nope").err().map(|e| e.to_string()),
            Some(format!("unknown read model \"nope\"; known: {known}"))
        );
    }

    #[test]
    fn every_read_model_has_a_status() {
        let statuses = ProjectorStatuses::default();
        assert!(names().iter().all(|name| statuses.get(name).is_some()));
        assert_eq!(statuses.running().len(), READ_MODELS.len());
    }
}
