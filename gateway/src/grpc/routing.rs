//! gRPC `keel.v1.RoutingService`: deployment targets, routing snapshots and fleet
//! health reports.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use keel_commands::routing::{Published, ReportRequest, RoutingCommands, TargetRequest};
use keel_domain::access::Action;

use super::fields::tenant_id;
use super::status::status;
use crate::auth::Authenticator;
use crate::auth::agent_of;
use crate::proto::routing_service_server::RoutingService;
use crate::proto::{
    PublishRoutingSnapshotRequest, ReportHealthRequest, RollbackRoutingSnapshotRequest, RoutingCommandResponse,
    RoutingSnapshotResponse, SetDeploymentTargetRequest,
};

/// The routing command API.
pub struct RoutingApi {
    commands: Arc<RoutingCommands>,
    auth: Arc<Authenticator>,
}

impl RoutingApi {
    /// The API over `commands`, authenticating with `auth`.
    pub fn new(commands: Arc<RoutingCommands>, auth: Arc<Authenticator>) -> Self {
        Self { commands, auth }
    }
}

fn snapshot_response(done: Published) -> RoutingSnapshotResponse {
    RoutingSnapshotResponse {
        version: done.version,
        checksum: done.checksum,
        entries: done.entries,
        position: done.position,
    }
}

#[tonic::async_trait]
impl RoutingService for RoutingApi {
    async fn set_deployment_target(
        &self,
        request: Request<SetDeploymentTargetRequest>,
    ) -> Result<Response<RoutingCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let id = tenant_id(&req.tenant_id)?;
        let tenant = &id;
        let target = TargetRequest {
            environment: req.environment,
            cluster: req.cluster,
            namespace: req.namespace,
            routing_target: req.routing_target,
            state: req.state,
        };
        let key = req.idempotency_key;
        super::run(&self.auth, "SetDeploymentTarget", &metadata, Action::ManageRouting, Some(tenant), &key, {
            |ctx, _| async move {
                let done = self.commands.set_target(&ctx, tenant, &target).await.map_err(|e| status(&e))?;
                Ok(RoutingCommandResponse { position: done.position })
            }
        })
        .await
    }

    async fn publish_routing_snapshot(
        &self,
        request: Request<PublishRoutingSnapshotRequest>,
    ) -> Result<Response<RoutingSnapshotResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let key = req.idempotency_key;
        super::run(&self.auth, "PublishRoutingSnapshot", &metadata, Action::ManageRouting, None, &key, {
            |ctx, _| async move {
                let done = self.commands.publish(&ctx).await.map_err(|e| status(&e))?;
                Ok(snapshot_response(done))
            }
        })
        .await
    }

    async fn rollback_routing_snapshot(
        &self,
        request: Request<RollbackRoutingSnapshotRequest>,
    ) -> Result<Response<RoutingSnapshotResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let key = req.idempotency_key;
        let to_version = req.to_version;
        super::run(&self.auth, "RollbackRoutingSnapshot", &metadata, Action::ManageRouting, None, &key, {
            |ctx, _| async move {
                let done = self.commands.rollback(&ctx, to_version).await.map_err(|e| status(&e))?;
                Ok(snapshot_response(done))
            }
        })
        .await
    }

    async fn report_health(
        &self,
        request: Request<ReportHealthRequest>,
    ) -> Result<Response<RoutingCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let id = tenant_id(&req.tenant_id)?;
        let tenant = &id;
        let key = req.idempotency_key;
        super::run(&self.auth, "ReportHealth", &metadata, Action::ReportHealth, Some(tenant), &key, {
            |ctx, principal| async move {
                let report = ReportRequest {
                    agent_id: agent_of(&principal, &req.agent_id),
                    observed_target: req.observed_target,
                    observed_state: req.observed_state,
                    healthy: req.healthy,
                };
                let done = self.commands.report_health(&ctx, tenant, &report).await.map_err(|e| status(&e))?;
                Ok(RoutingCommandResponse { position: done.position })
            }
        })
        .await
    }
}
