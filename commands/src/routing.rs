//! Deployment and routing commands: each tenant's deployment target and the fleet's
//! health reports (`deployment`, one aggregate per tenant), and the routing snapshots
//! edge routers consume (`routing`, one platform-wide aggregate).
//!
//! A snapshot is gathered from the write side, not from a read model, so that it never
//! lags: the newest `deployment.target_set` of each tenant in the event store, joined
//! with the active tenants of `auth_tenants` (kept in the append's transaction).

use std::collections::HashMap;

use cqrs_es::persist::PersistedEventStore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;

use keel_domain::deployment::{self, Deployment, DeploymentCommand, DeploymentTarget, HealthReport};
use keel_domain::ids::TenantId;
use keel_domain::routing::{self, Routing, RoutingCommand, RoutingEntry};

use crate::bus::{self, CommandContext, CommandError, Framework};
use crate::idempotency::{Idempotency, fingerprint};
use crate::store::KeelEventRepository;

/// A deployment target as requested.
#[derive(Debug, Clone)]
pub struct TargetRequest {
    /// Environment, e.g. `production`.
    pub environment: String,
    /// Cluster (a DNS label).
    pub cluster: String,
    /// Namespace (a DNS label).
    pub namespace: String,
    /// `host[:port]` or a URL.
    pub routing_target: String,
    /// `pending`, `deploying`, `active`, `failed` or `retired`.
    pub state: String,
}

/// A health report as received.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    /// The reporting agent (the app id of an API key).
    pub agent_id: String,
    /// The routing target the agent sees (empty: none).
    pub observed_target: String,
    /// The state it sees.
    pub observed_state: String,
    /// Whether the deployment answers its health checks.
    pub healthy: bool,
}

/// The outcome of a deployment command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executed {
    /// Position of the last event written (0 if nothing changed).
    pub position: i64,
}

/// The outcome of a publish or a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The new snapshot version.
    pub version: i64,
    /// Its checksum (hex SHA-256 of its entries' canonical JSON).
    pub checksum: String,
    /// How many entries it has.
    pub entries: i64,
    /// Position of its event.
    pub position: i64,
}

/// Runs deployment and routing commands.
pub struct RoutingCommands {
    pool: PgPool,
    deployments: Framework<Deployment>,
    routing: Framework<Routing>,
    tenant_loader: crate::tenants::TenantLoader,
    idempotency: Idempotency,
}

impl RoutingCommands {
    /// Routing commands on `pools`.
    pub fn new(pools: impl Into<crate::pools::Pools>) -> Self {
        let pools: crate::pools::Pools = pools.into();
        let crate::pools::Pools { durable: pool, relaxed, .. } = pools.clone();
        Self {
            deployments: bus::framework(&pools),
            routing: bus::framework(&pools),
            tenant_loader: PersistedEventStore::new_event_store(KeelEventRepository::new(pools.group_commit.clone())),
            idempotency: Idempotency::new(relaxed),
            pool,
        }
    }

    /// Sets a tenant's deployment target and state (position 0 if nothing changed).
    pub async fn set_target(
        &self,
        ctx: &CommandContext,
        tenant_id: &TenantId,
        req: &TargetRequest,
    ) -> Result<Executed, CommandError> {
        let target =
            DeploymentTarget::new(&req.environment, &req.cluster, &req.namespace, &req.routing_target, &req.state)
                .map_err(|e| CommandError::domain(&e))?;
        let command = DeploymentCommand::SetTarget(target);
        let hash = fingerprint(&["SetDeploymentTarget", tenant_id.as_str(), &command.fingerprint()]);
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, tenant_id.as_str(), |_| async move {
                crate::tenants::require_tenant(&self.tenant_loader, tenant_id).await?;
                bus::execute(&self.deployments, tenant_id.as_str(), command, ctx.metadata(Some(tenant_id.as_str())))
                    .await?;
                Ok(Executed { position: bus::position_of(&self.pool, ctx.command_id).await? })
            })
            .await
    }

    /// Records what a fleet agent sees of a tenant's deployment.
    pub async fn report_health(
        &self,
        ctx: &CommandContext,
        tenant_id: &TenantId,
        req: &ReportRequest,
    ) -> Result<Executed, CommandError> {
        let report =
            HealthReport::new(&req.agent_id, &req.observed_target, &req.observed_state, req.healthy, ctx.received_at)
                .map_err(|e| CommandError::domain(&e))?;
        let command = DeploymentCommand::ReportHealth(report);
        let hash = fingerprint(&["ReportHealth", tenant_id.as_str(), &command.fingerprint()]);
        let candidate = ctx.command_id.to_string();
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, &candidate, |first| async move {
                // A takeover of an interrupted first attempt must not record the report twice.
                if let Some((_, position)) = self.written_by(&first, deployment::AGGREGATE_TYPE).await? {
                    return Ok(Executed { position });
                }
                crate::tenants::require_tenant(&self.tenant_loader, tenant_id).await?;
                bus::execute(&self.deployments, tenant_id.as_str(), command, ctx.metadata(Some(tenant_id.as_str())))
                    .await?;
                Ok(Executed { position: bus::position_of(&self.pool, ctx.command_id).await? })
            })
            .await
    }

    /// Publishes a new routing snapshot: one entry per active tenant with a deployment target that is not retired.
    pub async fn publish(&self, ctx: &CommandContext) -> Result<Published, CommandError> {
        let hash = fingerprint(&["PublishRoutingSnapshot"]);
        let candidate = ctx.command_id.to_string();
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, &candidate, |first| async move {
                if let Some(done) = self.published_by(&first).await? {
                    return Ok(done);
                }
                let entries = self.current_entries().await?;
                let command = RoutingCommand::Publish { entries, generated_at: ctx.received_at };
                self.run_routing(ctx, command).await
            })
            .await
    }

    /// Makes a new snapshot version with the entries of version `to_version`.
    pub async fn rollback(&self, ctx: &CommandContext, to_version: i64) -> Result<Published, CommandError> {
        let hash = fingerprint(&["RollbackRoutingSnapshot", &to_version.to_string()]);
        let candidate = ctx.command_id.to_string();
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, &candidate, |first| async move {
                if let Some(done) = self.published_by(&first).await? {
                    return Ok(done);
                }
                // A negative version is no version: 0 is never one either.
                let to_version = u64::try_from(to_version).unwrap_or(0);
                self.run_routing(ctx, RoutingCommand::Rollback { to_version, at: ctx.received_at }).await
            })
            .await
    }

    /// The entries a snapshot published now would have, sorted by domain.
    pub async fn current_entries(&self) -> Result<Vec<RoutingEntry>, CommandError> {
        let db = |e: sqlx::Error| CommandError::unavailable(&e);
        let targets: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT ON (aggregate_id) aggregate_id, payload->>'routing_target', payload->>'state' FROM events
             WHERE aggregate_type = $1 AND event_type = 'deployment.target_set'
             ORDER BY aggregate_id, sequence DESC",
        )
        .bind(deployment::AGGREGATE_TYPE)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        // A retired deployment receives no traffic.
        let targets: HashMap<String, String> = targets
            .into_iter()
            .filter(|(_, _, state)| state.as_deref() != Some("retired"))
            .filter_map(|(tenant, target, _)| Some((tenant, target?)))
            .collect();
        let tenants: Vec<(String, String)> =
            sqlx::query_as("SELECT tenant_id, domain FROM auth_tenants WHERE status = 'active'")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(entries(tenants, &targets))
    }

    async fn run_routing(&self, ctx: &CommandContext, command: RoutingCommand) -> Result<Published, CommandError> {
        bus::execute(&self.routing, routing::AGGREGATE_ID, command, ctx.metadata(None)).await?;
        let id = ctx.command_id.to_string();
        self.published_by(&id).await?.ok_or_else(|| {
            tracing::error!(command_id = %id, "routing event not found after its command");
            CommandError::new(bus::Failure::Internal, "internal", "internal error")
        })
    }

    /// The snapshot command `command_id` wrote, if it wrote one.
    async fn published_by(&self, command_id: &str) -> Result<Option<Published>, CommandError> {
        let Some((payload, position)) = self.written_by(command_id, routing::AGGREGATE_TYPE).await? else {
            return Ok(None);
        };
        let version = payload.get("version").and_then(Value::as_i64).unwrap_or_default();
        let checksum = payload.get("checksum").and_then(Value::as_str).unwrap_or_default().to_string();
        let entries = payload.get("entries").and_then(Value::as_array).map_or(0, |e| e.len() as i64);
        Ok(Some(Published { version, checksum, entries, position }))
    }

    /// The payload and position of the last event of `aggregate_type` that command `command_id` wrote.
    async fn written_by(&self, command_id: &str, aggregate_type: &str) -> Result<Option<(Value, i64)>, CommandError> {
        let Ok(command_id) = command_id.parse::<uuid::Uuid>() else {
            return Ok(None);
        };
        sqlx::query_as(
            "SELECT payload, position FROM events WHERE command_id = $1 AND aggregate_type = $2
             ORDER BY position DESC LIMIT 1",
        )
        .bind(command_id)
        .bind(aggregate_type)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| CommandError::unavailable(&e))
    }
}

/// Joins active tenants `(tenant_id, domain)` with their routing targets (pure): one
/// entry per tenant that has both, sorted by domain.
pub fn entries(tenants: Vec<(String, String)>, targets: &HashMap<String, String>) -> Vec<RoutingEntry> {
    let mut entries: Vec<RoutingEntry> = tenants
        .into_iter()
        .filter_map(|(tenant_id, domain)| {
            let target = targets.get(&tenant_id)?.clone();
            Some(RoutingEntry { domain, target, tenant_id: tenant_id.parse().ok()? })
        })
        .collect();
    entries.sort();
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_need_an_active_tenant_and_a_target() {
        let tenant = |n: u8| format!("tnt_01jd00000000000000000000{n:02}");
        let tenants =
            vec![(tenant(2), "zeta".to_string()), (tenant(1), "acme".into()), (tenant(3), "no-target".into())];
        let targets = HashMap::from([
            (tenant(1), "acme.internal".to_string()),
            (tenant(2), "zeta.internal".into()),
            (tenant(9), "suspended.internal".into()),
        ]);
        let got = entries(tenants, &targets);
        let domains: Vec<&str> = got.iter().map(|e| e.domain.as_str()).collect();
        assert_eq!(domains, ["acme", "zeta"]);
        assert_eq!(got[0].tenant_id.as_str(), tenant(1));
        assert_eq!(got[0].target, "acme.internal");
    }
}
