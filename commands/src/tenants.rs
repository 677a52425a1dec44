//! Tenant commands: provisioning (domain claim, then tenant) and lifecycle.

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, EventStore};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use keel_domain::DomainError;
use keel_domain::ids::TenantId;
use keel_domain::tenant::{ProvisionTenant, Tenant, TenantCommand, TenantError, TenantStatus};
use keel_domain::tenant_domain::{TenantDomain, TenantDomainCommand, TenantDomainError};

use crate::bus::{self, CommandContext, CommandError, Framework};
use crate::idempotency::{Idempotency, fingerprint};
use crate::store::KeelEventRepository;
use crate::users::UserCommands;

/// A provisioning request as received.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// Display name.
    pub name: String,
    /// Unique domain.
    pub domain: String,
    /// Plan name.
    pub plan: String,
    /// First owner's e-mail.
    pub owner_email: String,
    /// Industry slug, if any.
    pub industry: Option<String>,
    /// Region slug, if any.
    pub region: Option<String>,
}

/// The outcome of provisioning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provisioned {
    /// The new tenant's id.
    pub tenant_id: String,
    /// Position of the last event written.
    pub position: i64,
}

/// The outcome of a lifecycle command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executed {
    /// Position of the last event written.
    pub position: i64,
}

/// Reads a tenant's state from its events.
pub type TenantLoader = PersistedEventStore<KeelEventRepository, Tenant>;

/// Refuses a tenant that was never provisioned or is purged (for commands on other
/// aggregates that belong to a tenant).
pub async fn require_tenant(loader: &TenantLoader, tenant_id: &TenantId) -> Result<(), CommandError> {
    let mut context = loader.load_aggregate(tenant_id.as_str()).await.map_err(|e| CommandError::unavailable(&e))?;
    match cqrs_es::AggregateContext::aggregate(&mut context).status {
        TenantStatus::Unprovisioned => Err(CommandError::domain(&TenantError::NotFound)),
        TenantStatus::Purged => Err(CommandError::domain(&TenantError::Purged)),
        _ => Ok(()),
    }
}

/// Runs tenant commands.
pub struct TenantCommands {
    pool: PgPool,
    tenants: Framework<Tenant>,
    domains: Framework<TenantDomain>,
    loader: TenantLoader,
    idempotency: Idempotency,
    users: Option<Arc<UserCommands>>,
}

impl TenantCommands {
    /// Tenant commands on `pools`.
    pub fn new(pools: impl Into<crate::pools::Pools>) -> Self {
        let pools: crate::pools::Pools = pools.into();
        let crate::pools::Pools { durable: pool, relaxed, .. } = pools.clone();
        Self {
            tenants: bus::framework(&pools),
            domains: bus::framework(&pools),
            loader: PersistedEventStore::new_event_store(KeelEventRepository::new(pools.group_commit.clone())),
            idempotency: Idempotency::new(relaxed),
            users: None,
            pool,
        }
    }

    /// Provisioning also invites the first owner (by e-mail) through `users`.
    pub fn inviting_owners(mut self, users: Arc<UserCommands>) -> Self {
        self.users = Some(users);
        self
    }

    /// Creates a tenant: validates, claims the domain (unique across the platform), then provisions.
    pub async fn provision(&self, ctx: &CommandContext, req: &ProvisionRequest) -> Result<Provisioned, CommandError> {
        let (industry, region) = (req.industry.as_deref(), req.region.as_deref());
        let profile = format!("{industry:?}|{region:?}");
        let hash = fingerprint(&["ProvisionTenant", &req.name, &req.domain, &req.plan, &req.owner_email, &profile]);
        let candidate = TenantId::from_ulid(ulid::Ulid::new());
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, candidate.as_str(), |id| async move {
                let tenant_id: TenantId = id.parse().map_err(|_| CommandError::domain(&TenantError::NotFound))?;
                let cmd = ProvisionTenant::new(
                    tenant_id.clone(),
                    &req.name,
                    &req.domain,
                    &req.plan,
                    &req.owner_email,
                    ctx.received_at,
                )
                .and_then(|cmd| cmd.with_profile(industry, region))
                .map_err(|e| CommandError::domain(&e))?;
                let meta = ctx.metadata(Some(tenant_id.as_str()));
                let claim = TenantDomainCommand::Claim { domain: cmd.domain.clone(), tenant_id: tenant_id.clone() };
                let (tenant_id, cmd, meta) = match bus::execute(&self.domains, &cmd.domain, claim, meta.clone()).await {
                    Ok(()) => (tenant_id, cmd, meta),
                    Err(err) if err.code == TenantDomainError::Taken.code() => {
                        // An earlier attempt of this very request may hold it (its idempotency
                        // record lost or released): then go on with the tenant id it chose.
                        let Some(own) = self.own_claim(ctx, &cmd.domain).await? else { return Err(err) };
                        let cmd = ProvisionTenant { tenant_id: own.clone(), ..cmd };
                        (own.clone(), cmd, ctx.metadata(Some(own.as_str())))
                    }
                    Err(err) => return Err(err),
                };
                let owner_email = cmd.owner_email.clone();
                match bus::execute(&self.tenants, tenant_id.as_str(), TenantCommand::Provision(cmd), meta).await {
                    // Only a takeover of an interrupted first attempt can meet its own tenant.
                    Err(err) if err.code == TenantError::AlreadyProvisioned.code() => {}
                    other => other?,
                }
                if let Some(users) = &self.users {
                    users.invite_owner(ctx, &tenant_id, &owner_email).await?;
                }
                let position = bus::position_of(&self.pool, ctx.command_id).await?;
                Ok(Provisioned { tenant_id: tenant_id.to_string(), position })
            })
            .await
    }

    /// The tenant holding `domain`, if an earlier attempt of the request in `ctx` claimed it.
    async fn own_claim(&self, ctx: &CommandContext, domain: &str) -> Result<Option<TenantId>, CommandError> {
        let holder: Option<String> = sqlx::query_scalar(
            "SELECT payload->>'tenant_id' FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2
             ORDER BY sequence DESC LIMIT 1",
        )
        .bind(TenantDomain::TYPE)
        .bind(domain)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| CommandError::unavailable(&e))?;
        let mine: Option<String> = sqlx::query_scalar(
            "SELECT payload->>'tenant_id' FROM events
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND event_type = 'tenant_domain.claimed'
               AND metadata->>'idempotency_key' = $3 AND metadata->>'actor_type' = $4 AND metadata->>'actor_id' = $5
             ORDER BY sequence DESC LIMIT 1",
        )
        .bind(TenantDomain::TYPE)
        .bind(domain)
        .bind(&ctx.idempotency_key)
        .bind(ctx.actor.kind.as_str())
        .bind(&ctx.actor.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| CommandError::unavailable(&e))?;
        Ok(match (holder, mine) {
            (Some(holder), Some(mine)) if holder == mine => mine.parse().ok(),
            _ => None,
        })
    }

    /// Runs a lifecycle or profile command on an existing tenant.
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        tenant_id: &TenantId,
        command: TenantCommand,
    ) -> Result<Executed, CommandError> {
        let hash = fingerprint(&[tenant_id.as_str(), &command.fingerprint()]);
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, tenant_id.as_str(), |_| async move {
                let purge = matches!(command, TenantCommand::Purge { .. });
                let meta = ctx.metadata(Some(tenant_id.as_str()));
                bus::execute(&self.tenants, tenant_id.as_str(), command, meta.clone()).await?;
                if purge {
                    self.release_domain(tenant_id, meta).await?;
                }
                Ok(Executed { position: bus::position_of(&self.pool, ctx.command_id).await? })
            })
            .await
    }

    /// The tenant's current state, from its events.
    pub async fn load(&self, tenant_id: &TenantId) -> Result<Tenant, CommandError> {
        let mut context =
            self.loader.load_aggregate(tenant_id.as_str()).await.map_err(|e| CommandError::unavailable(&e))?;
        Ok(cqrs_es::AggregateContext::aggregate(&mut context).clone())
    }

    async fn release_domain(&self, tenant_id: &TenantId, meta: HashMap<String, String>) -> Result<(), CommandError> {
        let tenant = self.load(tenant_id).await?;
        let release = TenantDomainCommand::Release { tenant_id: tenant_id.clone() };
        match bus::execute(&self.domains, &tenant.domain, release, meta).await {
            Err(err) if err.code == TenantDomainError::NotHeld.code() => Ok(()),
            other => other,
        }
    }
}
