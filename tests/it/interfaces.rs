//! Health, readiness, OpenAPI, gRPC reflection (v1 and v1alpha, listing gRPC health too), gRPC health and gRPC-Web.

use keel_gateway::proto::ProvisionTenantResponse;
use keel_tests::TestEnv;
use prost::Message;
use reqwest::StatusCode;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{domain, provision_request};

#[tokio::test]
async fn health_readiness_and_openapi() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let base = format!("http://{}", keel.rest_addr);
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/healthz")).send().await.expect("healthz").status(), StatusCode::OK);
    let ready = keel_tests::eventually(std::time::Duration::from_secs(20), || async {
        http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    assert!(ready, "ready once Postgres and Kafka answer and the relay runs");
    let doc: serde_json::Value =
        http.get(format!("{base}/v1/openapi.json")).send().await.expect("openapi").json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/control-plane/tenants/{tenant_id}"]["get"].is_object());
    assert!(doc["components"]["schemas"]["TenantRow"]["properties"]["status"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["paths"]["/v1/auth/login"]["post"]["responses"]["429"].is_object());
    assert!(doc["components"]["schemas"]["LoginRequest"]["properties"]["tenant"].is_object());
    assert!(doc["components"]["schemas"]["TokenResponse"]["properties"]["refresh_token"].is_object());
    for path in [
        "/v1/billing/events:batch",
        "/v1/billing/usage",
        "/v1/control-plane/billing/rollups",
        "/v1/audit/events",
        "/v1/audit/export.csv",
        "/v1/audit/keys",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    assert!(doc["paths"]["/v1/billing/events"]["get"]["parameters"].is_array());
    assert!(doc["components"]["schemas"]["BatchAnswer"]["properties"]["results"].is_object());
    keel.stop().await;
}

#[tokio::test]
async fn grpc_health_and_reflection_answer() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let endpoint = format!("http://{}", keel.grpc_addr);
    let channel = tonic::transport::Channel::from_shared(endpoint).expect("uri").connect().await.expect("connect");
    let mut health = HealthClient::new(channel.clone());
    let status = health
        .check(HealthCheckRequest { service: "keel.v1.TenantService".into() })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as V1;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Request;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as V1Response;
    let mut v1 = V1::new(channel.clone());
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(V1Request::ListServices(String::new())),
    };
    let mut stream =
        v1.server_reflection_info(futures::stream::iter([request])).await.expect("reflection v1").into_inner();
    let response = stream.message().await.expect("message").expect("response");
    let Some(V1Response::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"keel.v1.TenantService".to_string()), "{names:?}");

    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as V1Alpha;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let mut alpha = V1Alpha::new(channel);
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::FileContainingSymbol("keel.v1.TenantService".into())),
    };
    let mut stream =
        alpha.server_reflection_info(futures::stream::iter([request])).await.expect("reflection v1alpha").into_inner();
    let response = stream.message().await.expect("message").expect("response");
    assert!(
        matches!(response.message_response, Some(AlphaResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty())
    );
    keel.stop().await;
}

#[tokio::test]
async fn reflection_lists_grpc_health_and_describes_it() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let endpoint = format!("http://{}", keel.grpc_addr);
    let channel = tonic::transport::Channel::from_shared(endpoint).expect("uri").connect().await.expect("connect");
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as V1;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as V1Request;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as V1Response;
    let mut v1 = V1::new(channel);
    let requests =
        [V1Request::ListServices(String::new()), V1Request::FileContainingSymbol("grpc.health.v1.Health".into())].map(
            |message| tonic_reflection::pb::v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(message),
            },
        );
    let mut stream =
        v1.server_reflection_info(futures::stream::iter(requests)).await.expect("reflection v1").into_inner();
    let listed = stream.message().await.expect("message").expect("response");
    let Some(V1Response::ListServicesResponse(list)) = listed.message_response else {
        panic!("unexpected reflection answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
    let described = stream.message().await.expect("message").expect("response");
    assert!(
        matches!(described.message_response, Some(V1Response::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty())
    );
    keel.stop().await;
}

#[tokio::test]
async fn a_browser_can_send_commands_over_grpc_web() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let message = provision_request(&domain("web")).encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let response = reqwest::Client::new()
        .post(format!("http://{}/keel.v1.TenantService/ProvisionTenant", keel.grpc_addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "http://localhost:3000")
        .bearer_auth(&token)
        .body(body)
        .send()
        .await
        .expect("grpc-web");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], "http://localhost:3000");
    let bytes = response.bytes().await.expect("body");
    assert_eq!(bytes[0], 0, "a data frame first");
    let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let reply = ProvisionTenantResponse::decode(&bytes[5..5 + length]).expect("response message");
    assert!(reply.tenant_id.starts_with("tnt_") && reply.position > 0);
    let trailers = String::from_utf8_lossy(&bytes[5 + length + 5..]).to_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    keel.stop().await;
}

#[tokio::test]
async fn serve_refuses_to_start_on_an_unmigrated_database() {
    let env = TestEnv::new().await;
    let owner = env.owner_pool().await;
    sqlx::raw_sql("DROP SCHEMA rm_tenant_registry CASCADE").execute(&owner).await.expect("drop");
    let started = keel_gateway::server::start(env.settings(), keel_gateway::server::Workers::ALL).await;
    let Err(err) = started else { panic!("started without its read model schema") };
    assert!(err.to_string().contains("keel migrate"), "{err}");
}
