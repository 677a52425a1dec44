//! Flag and entitlement commands: flag definitions (platform-wide) and each tenant's
//! own flag values and entitlement overrides.

use std::collections::BTreeMap;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateContext, EventStore};
use serde_json::Value;
use sqlx::PgPool;

use keel_domain::flag::{Flag, FlagCommand, FlagError, FlagType};
use keel_domain::ids::TenantId;
use keel_domain::plan::Plan;
use keel_domain::tenant_config::{TenantConfig, TenantConfigCommand};

use crate::bus::{self, CommandContext, CommandError, Framework};
use crate::idempotency::{Idempotency, fingerprint};
use crate::store::KeelEventRepository;

pub use crate::apps::Executed;

/// A flag definition as requested.
#[derive(Debug, Clone)]
pub struct FlagDefinition {
    /// The key.
    pub key: String,
    /// The type.
    pub flag_type: FlagType,
    /// The default value.
    pub default_value: Value,
    /// Defaults per plan.
    pub plan_defaults: BTreeMap<Plan, Value>,
    /// What it is for.
    pub description: String,
}

/// Runs flag and entitlement commands.
pub struct FlagCommands {
    pool: PgPool,
    flags: Framework<Flag>,
    configs: Framework<TenantConfig>,
    flag_loader: PersistedEventStore<KeelEventRepository, Flag>,
    tenant_loader: crate::tenants::TenantLoader,
    idempotency: Idempotency,
}

impl FlagCommands {
    /// Flag commands on `pools`.
    pub fn new(pools: impl Into<crate::pools::Pools>) -> Self {
        let pools: crate::pools::Pools = pools.into();
        let crate::pools::Pools { durable: pool, relaxed, .. } = pools.clone();
        Self {
            flags: bus::framework(&pools),
            configs: bus::framework(&pools),
            flag_loader: PersistedEventStore::new_event_store(KeelEventRepository::new(pools.group_commit.clone())),
            tenant_loader: PersistedEventStore::new_event_store(KeelEventRepository::new(pools.group_commit.clone())),
            idempotency: Idempotency::new(relaxed),
            pool,
        }
    }

    /// Defines a flag or changes its defaults.
    pub async fn define(&self, ctx: &CommandContext, definition: FlagDefinition) -> Result<Executed, CommandError> {
        let key = definition.key.clone();
        let command = FlagCommand::Define {
            key: definition.key,
            flag_type: definition.flag_type,
            default_value: definition.default_value,
            plan_defaults: definition.plan_defaults,
            description: definition.description,
        };
        let hash = fingerprint(&["DefineFlag", &command.fingerprint()]);
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, &key.clone(), |_| async move {
                bus::execute(&self.flags, &key, command, ctx.metadata(None)).await?;
                Ok(Executed { position: bus::position_of(&self.pool, ctx.command_id).await? })
            })
            .await
    }

    /// The type of flag `key`, if defined.
    pub async fn flag_type(&self, key: &str) -> Result<Option<FlagType>, CommandError> {
        if !keel_domain::flag::valid_key(key) {
            return Ok(None);
        }
        let mut context = self.flag_loader.load_aggregate(key).await.map_err(|e| CommandError::unavailable(&e))?;
        Ok(context.aggregate().flag_type)
    }

    /// Sets (`Some`) or clears (`None`) a tenant's own value of flag `key`.
    pub async fn set_tenant_flag(
        &self,
        ctx: &CommandContext,
        tenant_id: &TenantId,
        key: &str,
        value: Option<Value>,
    ) -> Result<Executed, CommandError> {
        let shown = value.as_ref().map(Value::to_string).unwrap_or_default();
        let hash = fingerprint(&["SetTenantFlag", tenant_id.as_str(), key, &shown]);
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, tenant_id.as_str(), |_| async move {
                let flag_type = self.flag_type(key).await?.ok_or_else(|| CommandError::domain(&FlagError::NotFound))?;
                crate::tenants::require_tenant(&self.tenant_loader, tenant_id).await?;
                let command = match value {
                    Some(value) => TenantConfigCommand::SetFlag { key: key.to_string(), flag_type, value },
                    None => TenantConfigCommand::ClearFlag { key: key.to_string() },
                };
                self.run_config(ctx, tenant_id, command).await
            })
            .await
    }

    /// Overrides (`Some`) or clears (`None`) one of a tenant's entitlements.
    pub async fn override_entitlement(
        &self,
        ctx: &CommandContext,
        tenant_id: &TenantId,
        key: &str,
        value: Option<Value>,
    ) -> Result<Executed, CommandError> {
        let shown = value.as_ref().map(Value::to_string).unwrap_or_else(|| "clear".into());
        let hash = fingerprint(&["OverrideEntitlement", tenant_id.as_str(), key, &shown]);
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, tenant_id.as_str(), |_| async move {
                crate::tenants::require_tenant(&self.tenant_loader, tenant_id).await?;
                let command = match value {
                    Some(value) => TenantConfigCommand::OverrideEntitlement { key: key.to_string(), value },
                    None => TenantConfigCommand::ClearEntitlementOverride { key: key.to_string() },
                };
                self.run_config(ctx, tenant_id, command).await
            })
            .await
    }

    async fn run_config(
        &self,
        ctx: &CommandContext,
        tenant_id: &TenantId,
        command: TenantConfigCommand,
    ) -> Result<Executed, CommandError> {
        bus::execute(&self.configs, tenant_id.as_str(), command, ctx.metadata(Some(tenant_id.as_str()))).await?;
        Ok(Executed { position: bus::position_of(&self.pool, ctx.command_id).await? })
    }
}
