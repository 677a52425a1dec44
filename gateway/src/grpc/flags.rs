//! gRPC `keel.v1.FlagService`: flag definitions, tenants' flag values and
//! entitlement overrides.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use keel_commands::flags::{FlagCommands, FlagDefinition};
use keel_domain::access::Action;
use keel_domain::flag::FlagType;
use keel_domain::ids::TenantId;
use keel_domain::plan::Plan;

use super::fields::{json_value, tenant_id};
use super::status::{invalid_argument, status};
use crate::auth::Authenticator;
use crate::proto::flag_service_server::FlagService;
use crate::proto::{
    ClearEntitlementOverrideRequest, ClearTenantFlagRequest, DefineFlagRequest, FlagCommandResponse,
    SetEntitlementOverrideRequest, SetTenantFlagRequest,
};

/// The flag command API.
pub struct FlagApi {
    commands: Arc<FlagCommands>,
    auth: Arc<Authenticator>,
}

impl FlagApi {
    /// The API over `commands`, authenticating with `auth`.
    pub fn new(commands: Arc<FlagCommands>, auth: Arc<Authenticator>) -> Self {
        Self { commands, auth }
    }
}

fn flag_key(raw: &str) -> Result<String, Status> {
    let key = raw.trim();
    if keel_domain::flag::valid_key(key) {
        Ok(key.to_string())
    } else {
        Err(invalid_argument("invalid_flag_key", "key must be 1 to 128 of a-z, 0-9, '.', '_' and '-'"))
    }
}

impl FlagApi {
    async fn tenant_command(
        &self,
        rpc: &'static str,
        metadata: &tonic::metadata::MetadataMap,
        tenant: TenantId,
        idempotency_key: &str,
        body: impl AsyncFnOnce(&keel_commands::bus::CommandContext, &TenantId) -> Result<i64, Status>,
    ) -> Result<Response<FlagCommandResponse>, Status> {
        let target = tenant.clone();
        super::run(&self.auth, rpc, metadata, Action::ManageFlags, Some(&target), idempotency_key, {
            |ctx, _| async move { Ok(FlagCommandResponse { position: body(&ctx, &tenant).await? }) }
        })
        .await
    }
}

#[tonic::async_trait]
impl FlagService for FlagApi {
    async fn define_flag(&self, request: Request<DefineFlagRequest>) -> Result<Response<FlagCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let key = flag_key(&req.key)?;
        let flag_type: FlagType = req
            .r#type
            .parse()
            .map_err(|_| invalid_argument("invalid_flag_type", "type must be boolean, string, number or object"))?;
        let default_value = json_value(req.default_value, "default_value")?;
        let mut plan_defaults = BTreeMap::new();
        for (plan, value) in req.plan_defaults {
            let plan: Plan =
                plan.parse().map_err(|_| invalid_argument("invalid_plan", "plan_defaults keys must be plans"))?;
            plan_defaults.insert(plan, json_value(Some(value), "plan_defaults")?);
        }
        let definition = FlagDefinition { key, flag_type, default_value, plan_defaults, description: req.description };
        super::run(&self.auth, "DefineFlag", &metadata, Action::ManageFlags, None, &req.idempotency_key, {
            |ctx, _| async move {
                let done = self.commands.define(&ctx, definition).await.map_err(|e| status(&e))?;
                Ok(FlagCommandResponse { position: done.position })
            }
        })
        .await
    }

    async fn set_tenant_flag(
        &self,
        request: Request<SetTenantFlagRequest>,
    ) -> Result<Response<FlagCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let key = flag_key(&req.key)?;
        let value = json_value(req.value, "value")?;
        self.tenant_command("SetTenantFlag", &metadata, tenant, &req.idempotency_key, async |ctx, tenant| {
            let done = self.commands.set_tenant_flag(ctx, tenant, &key, Some(value)).await.map_err(|e| status(&e))?;
            Ok(done.position)
        })
        .await
    }

    async fn clear_tenant_flag(
        &self,
        request: Request<ClearTenantFlagRequest>,
    ) -> Result<Response<FlagCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let key = flag_key(&req.key)?;
        self.tenant_command("ClearTenantFlag", &metadata, tenant, &req.idempotency_key, async |ctx, tenant| {
            let done = self.commands.set_tenant_flag(ctx, tenant, &key, None).await.map_err(|e| status(&e))?;
            Ok(done.position)
        })
        .await
    }

    async fn set_entitlement_override(
        &self,
        request: Request<SetEntitlementOverrideRequest>,
    ) -> Result<Response<FlagCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let value = json_value(req.value, "value")?;
        let key = req.key.trim().to_string();
        self.tenant_command("SetEntitlementOverride", &metadata, tenant, &req.idempotency_key, async |ctx, tenant| {
            let done =
                self.commands.override_entitlement(ctx, tenant, &key, Some(value)).await.map_err(|e| status(&e))?;
            Ok(done.position)
        })
        .await
    }

    async fn clear_entitlement_override(
        &self,
        request: Request<ClearEntitlementOverrideRequest>,
    ) -> Result<Response<FlagCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let key = req.key.trim().to_string();
        self.tenant_command("ClearEntitlementOverride", &metadata, tenant, &req.idempotency_key, async |ctx, tenant| {
            let done = self.commands.override_entitlement(ctx, tenant, &key, None).await.map_err(|e| status(&e))?;
            Ok(done.position)
        })
        .await
    }
}
