//! Clients for the public APIs.

use std::net::SocketAddr;

use keel_gateway::proto::tenant_service_client::TenantServiceClient;
use keel_gateway::proto::{ProvisionTenantRequest, ProvisionTenantResponse};
use tonic::transport::Channel;

/// A gRPC tenant client.
pub async fn tenant_client(addr: SocketAddr) -> TenantServiceClient<Channel> {
    TenantServiceClient::connect(format!("http://{addr}")).await.expect("connect gRPC")
}

/// `message` with `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}

/// A provisioning request for `domain` with a fresh idempotency key.
pub fn provision_request(domain: &str) -> ProvisionTenantRequest {
    ProvisionTenantRequest {
        name: format!("Tenant {domain}"),
        domain: domain.to_string(),
        plan: "pro".into(),
        owner_email: format!("owner@{domain}.example.com"),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
    }
}

/// Provisions a tenant over gRPC.
pub async fn provision(
    client: &mut TenantServiceClient<Channel>,
    token: &str,
    domain: &str,
) -> ProvisionTenantResponse {
    client.provision_tenant(authed(provision_request(domain), token)).await.expect("provision").into_inner()
}

/// A unique domain for a test.
pub fn domain(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The `x-keel-error-code` of a gRPC error.
pub fn error_code(status: &tonic::Status) -> String {
    status.metadata().get("x-keel-error-code").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}
