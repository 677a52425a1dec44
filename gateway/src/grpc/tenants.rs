//! gRPC `keel.v1.TenantService`: tenant commands.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use keel_commands::bus::CommandContext;
use keel_commands::tenants::{ProvisionRequest, TenantCommands};
use keel_domain::DomainError;
use keel_domain::access::{Action, Principal};
use keel_domain::ids::TenantId;
use keel_domain::plan::{Plan, UnknownPlan};
use keel_domain::tenant::{TenantCommand, TenantError};

use super::fields::tenant_id;
use super::status::{invalid_argument, status};
use crate::auth::Authenticator;
use crate::proto::tenant_service_server::TenantService;
use crate::proto::{
    ChangePlanRequest, CommandResponse, ProvisionTenantRequest, ProvisionTenantResponse, ReactivateTenantRequest,
    RequestTenantDeletionRequest, RequestTenantDeletionResponse, RestoreTenantRequest, SetTenantProfileRequest,
    SuspendTenantRequest,
};

/// The tenant command API.
pub struct TenantApi {
    commands: Arc<TenantCommands>,
    auth: Arc<Authenticator>,
}

impl TenantApi {
    /// The API over `commands`, authenticating with `auth`.
    pub fn new(commands: Arc<TenantCommands>, auth: Arc<Authenticator>) -> Self {
        Self { commands, auth }
    }
}

/// An optional string field: empty (or blank) means none.
fn optional(raw: String) -> Option<String> {
    (!raw.trim().is_empty()).then_some(raw)
}

impl TenantApi {
    /// Authenticates, authorizes and builds the command context (see `grpc::run`).
    async fn run<T, F, Fut>(
        &self,
        rpc: &'static str,
        metadata: &tonic::metadata::MetadataMap,
        action: Action,
        target: Option<&TenantId>,
        idempotency_key: &str,
        body: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(CommandContext, Principal) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        super::run(&self.auth, rpc, metadata, action, target, idempotency_key, body).await
    }

    async fn lifecycle(
        &self,
        rpc: &'static str,
        metadata: &tonic::metadata::MetadataMap,
        action: Action,
        raw_tenant_id: &str,
        idempotency_key: &str,
        command: impl FnOnce(DateTime<Utc>) -> TenantCommand,
    ) -> Result<Response<CommandResponse>, Status> {
        let id = tenant_id(raw_tenant_id)?;
        let target = id.clone();
        self.run(rpc, metadata, action, Some(&target), idempotency_key, |ctx, _| async move {
            let command = command(ctx.received_at);
            let done = self.commands.execute(&ctx, &id, command).await.map_err(|e| status(&e))?;
            Ok(CommandResponse { position: done.position })
        })
        .await
    }
}

#[tonic::async_trait]
impl TenantService for TenantApi {
    async fn provision_tenant(
        &self,
        request: Request<ProvisionTenantRequest>,
    ) -> Result<Response<ProvisionTenantResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        self.run(
            "ProvisionTenant",
            &metadata,
            Action::ProvisionTenant,
            None,
            &req.idempotency_key,
            |ctx, _| async move {
                let request = ProvisionRequest {
                    name: req.name,
                    domain: req.domain,
                    plan: req.plan,
                    owner_email: req.owner_email,
                    industry: optional(req.industry),
                    region: optional(req.region),
                };
                let done = self.commands.provision(&ctx, &request).await.map_err(|e| status(&e))?;
                Ok(ProvisionTenantResponse { tenant_id: done.tenant_id, position: done.position })
            },
        )
        .await
    }

    async fn suspend_tenant(
        &self,
        request: Request<SuspendTenantRequest>,
    ) -> Result<Response<CommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        if req.reason.chars().count() > 500 {
            return Err(invalid_argument("invalid_reason", "reason must be 500 characters at most"));
        }
        let command = |_| TenantCommand::Suspend { reason: req.reason };
        self.lifecycle("SuspendTenant", &metadata, Action::SuspendTenant, &req.tenant_id, &req.idempotency_key, command)
            .await
    }

    async fn reactivate_tenant(
        &self,
        request: Request<ReactivateTenantRequest>,
    ) -> Result<Response<CommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let command = |_| TenantCommand::Reactivate;
        self.lifecycle(
            "ReactivateTenant",
            &metadata,
            Action::ReactivateTenant,
            &req.tenant_id,
            &req.idempotency_key,
            command,
        )
        .await
    }

    async fn change_plan(&self, request: Request<ChangePlanRequest>) -> Result<Response<CommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let plan: Plan = req.plan.parse().map_err(|e: UnknownPlan| invalid_argument("invalid_plan", &e.to_string()))?;
        let command = move |_| TenantCommand::ChangePlan { plan };
        self.lifecycle("ChangePlan", &metadata, Action::ChangePlan, &req.tenant_id, &req.idempotency_key, command).await
    }

    async fn set_tenant_profile(
        &self,
        request: Request<SetTenantProfileRequest>,
    ) -> Result<Response<CommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let (industry, region) = (optional(req.industry), optional(req.region));
        let command = TenantCommand::set_profile(industry.as_deref(), region.as_deref())
            .map_err(|e: TenantError| invalid_argument(e.code(), &e.to_string()))?;
        self.lifecycle(
            "SetTenantProfile",
            &metadata,
            Action::UpdateTenantProfile,
            &req.tenant_id,
            &req.idempotency_key,
            |_| command,
        )
        .await
    }

    async fn request_tenant_deletion(
        &self,
        request: Request<RequestTenantDeletionRequest>,
    ) -> Result<Response<RequestTenantDeletionResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let command = |at| TenantCommand::RequestDeletion { at };
        let response = self
            .lifecycle(
                "RequestTenantDeletion",
                &metadata,
                Action::RequestTenantDeletion,
                &req.tenant_id,
                &req.idempotency_key,
                command,
            )
            .await?;
        let (metadata, body, extensions) = response.into_parts();
        Ok(Response::from_parts(metadata, RequestTenantDeletionResponse { position: body.position }, extensions))
    }

    async fn restore_tenant(
        &self,
        request: Request<RestoreTenantRequest>,
    ) -> Result<Response<CommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let command = |at| TenantCommand::Restore { at };
        self.lifecycle("RestoreTenant", &metadata, Action::RestoreTenant, &req.tenant_id, &req.idempotency_key, command)
            .await
    }
}
