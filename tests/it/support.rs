//! Clients for the public APIs.

use std::net::SocketAddr;

use keel_gateway::proto::tenant_service_client::TenantServiceClient;
use keel_gateway::proto::{ProvisionTenantRequest, ProvisionTenantResponse};
use tonic::transport::Channel;

/// A gRPC tenant client.
pub async fn tenant_client(addr: SocketAddr) -> TenantServiceClient<Channel> {
    TenantServiceClient::connect(format!("http://{addr}")).await.expect("connect gRPC")
}

pub use keel_tests::bench::authed;

/// A provisioning request for `domain` with a fresh idempotency key.
pub fn provision_request(domain: &str) -> ProvisionTenantRequest {
    let owner_email = format!("owner@{domain}.example.com");
    keel_tests::logs::secret(&owner_email);
    ProvisionTenantRequest {
        name: format!("Tenant {domain}"),
        domain: domain.to_string(),
        plan: "pro".into(),
        owner_email,
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        industry: String::new(),
        region: String::new(),
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

/// A REST client for Keel's auth endpoints.
#[derive(Clone)]
pub struct Rest {
    /// `http://host:port`.
    pub base: String,
    /// The HTTP client.
    pub http: reqwest::Client,
}

impl Rest {
    /// A client of the Keel listening at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self { base: format!("http://{addr}"), http: reqwest::Client::new() }
    }

    /// POSTs `body` to `path`; returns the status and the JSON answer (Null if none).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self.http.post(format!("{}{path}", self.base)).json(&body).send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// Logs in; returns the status and answer.
    pub async fn login(&self, email: &str, password: &str, tenant: Option<&str>) -> (u16, serde_json::Value) {
        keel_tests::logs::secret(email);
        keel_tests::logs::secret(password);
        let mut body = serde_json::json!({ "email": email, "password": password });
        if let Some(tenant) = tenant {
            body["tenant"] = tenant.into();
        }
        self.post("/v1/auth/login", body).await
    }

    /// Logs in and returns (access token, refresh token); panics on failure.
    pub async fn tokens(&self, email: &str, password: &str, tenant: Option<&str>) -> (String, String) {
        let (status, body) = self.login(email, password, tenant).await;
        assert_eq!(status, 200, "login of {email}: {body}");
        let access = body["access_token"].as_str().expect("access");
        let refresh = body["refresh_token"].as_str().expect("refresh");
        keel_tests::logs::secret(access);
        keel_tests::logs::secret(refresh);
        (access.into(), refresh.into())
    }

    /// Whether introspection says `token` is active.
    pub async fn active(&self, token: &str) -> bool {
        let (status, body) = self.post("/v1/auth/introspect", serde_json::json!({ "token": token })).await;
        assert_eq!(status, 200, "{body}");
        body["active"].as_bool().expect("active")
    }
}

/// A gRPC user client.
pub async fn user_client(addr: SocketAddr) -> keel_gateway::proto::user_service_client::UserServiceClient<Channel> {
    keel_gateway::proto::user_service_client::UserServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect gRPC")
}

/// The password every test account uses (it satisfies the default policy).
pub const PASSWORD: &str = "correct horse battery staple";

/// A tenant with an active owner: (tenant id, domain, owner e-mail, owner access token).
pub async fn tenant_with_owner(
    env: &keel_tests::TestEnv,
    keel: &keel_gateway::server::Running,
    operator: &str,
    prefix: &str,
) -> (String, String, String, String) {
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let domain = domain(prefix);
    let tenant = provision(&mut tenants, operator, &domain).await;
    let email = format!("owner@{domain}.example.com");
    let token = env.mailed_token(&email, "keel_inv_").await;
    let rest = Rest::new(keel.rest_addr);
    keel_tests::logs::secret(PASSWORD);
    let (status, body) =
        rest.post("/v1/auth/invitations/accept", serde_json::json!({ "token": token, "password": PASSWORD })).await;
    assert_eq!(status, 200, "accept: {body}");
    let (access, _) = rest.tokens(&email, PASSWORD, Some(&domain)).await;
    (tenant.tenant_id, domain, email, access)
}

/// A fresh idempotency key.
pub fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `value` as a protobuf `Value` (flag values, entitlement overrides).
pub fn pv(value: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue { values: items.into_iter().map(pv).collect() }),
        Value::Object(map) => {
            Kind::StructValue(prost_types::Struct { fields: map.into_iter().map(|(k, v)| (k, pv(v))).collect() })
        }
    };
    prost_types::Value { kind: Some(kind) }
}
