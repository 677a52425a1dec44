//! gRPC `keel.v1.FlagService`: flag definitions, tenants' flag values and
//! entitlement overrides.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost_types::value::Kind;
use serde_json::Value;
use tonic::{Request, Response, Status};

use keel_commands::flags::{FlagCommands, FlagDefinition};
use keel_domain::access::Action;
use keel_domain::flag::FlagType;
use keel_domain::ids::TenantId;
use keel_domain::plan::Plan;

use crate::auth::Authenticator;
use crate::errors::{invalid_argument, status};
use crate::grpc_tenants::tenant_id;
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

/// A protobuf `Value` as JSON. Integral numbers become integers (so that quotas and
/// whole-number flags stay integers); a missing value is an error.
pub fn json_value(value: Option<prost_types::Value>, field: &str) -> Result<Value, Status> {
    let kind =
        value.and_then(|v| v.kind).ok_or_else(|| invalid_argument("missing_value", &format!("{field} is required")))?;
    Ok(from_kind(kind))
}

/// A protobuf `Struct` as a JSON object.
pub fn json_object(object: prost_types::Struct) -> Value {
    from_kind(Kind::StructValue(object))
}

fn from_kind(kind: Kind) -> Value {
    match kind {
        Kind::NullValue(_) => Value::Null,
        Kind::BoolValue(b) => Value::Bool(b),
        Kind::NumberValue(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => Value::from(n as i64),
        Kind::NumberValue(n) => serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
        Kind::StringValue(s) => Value::String(s),
        Kind::ListValue(list) => Value::Array(list.values.into_iter().filter_map(|v| v.kind).map(from_kind).collect()),
        Kind::StructValue(object) => Value::Object(
            object.fields.into_iter().filter_map(|(k, v)| v.kind.map(|kind| (k, from_kind(kind)))).collect(),
        ),
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
        crate::grpc::run(&self.auth, rpc, metadata, Action::ManageFlags, Some(&target), idempotency_key, {
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
        crate::grpc::run(&self.auth, "DefineFlag", &metadata, Action::ManageFlags, None, &req.idempotency_key, {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_values_become_json_with_whole_numbers_as_integers() {
        let num = |n| Some(prost_types::Value { kind: Some(Kind::NumberValue(n)) });
        assert_eq!(json_value(num(500.0), "v").unwrap(), serde_json::json!(500));
        assert_eq!(json_value(num(0.5), "v").unwrap(), serde_json::json!(0.5));
        let list = prost_types::Value {
            kind: Some(Kind::ListValue(prost_types::ListValue {
                values: vec![prost_types::Value { kind: Some(Kind::StringValue("a".into())) }],
            })),
        };
        assert_eq!(json_value(Some(list), "v").unwrap(), serde_json::json!(["a"]));
        assert!(json_value(None, "v").is_err());
    }
}
