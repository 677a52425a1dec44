//! Deployment targets, routing snapshots (publish, ETag, by version, rollback) and fleet
//! health with drift, through the public gRPC and REST APIs.

use std::time::Duration;

use keel_gateway::proto::routing_service_client::RoutingServiceClient;
use keel_gateway::proto::{
    PublishRoutingSnapshotRequest, RollbackRoutingSnapshotRequest, SetDeploymentTargetRequest, SuspendTenantRequest,
};
use keel_tests::TestEnv;
use serde_json::{Value, json};
use tonic::Code;

use crate::apps::app_with_key;
use crate::support::{authed, domain, error_code, key, provision, tenant_client};

fn target(tenant: &str, routing_target: &str, state: &str) -> SetDeploymentTargetRequest {
    SetDeploymentTargetRequest {
        tenant_id: tenant.into(),
        environment: "production".into(),
        cluster: "eu-west-1a".into(),
        namespace: "tenants".into(),
        routing_target: routing_target.into(),
        state: state.into(),
        idempotency_key: key(),
    }
}

async fn get(
    http: &reqwest::Client,
    url: String,
    token: &str,
    headers: &[(&str, String)],
) -> (u16, Option<String>, Value) {
    let mut request = http.get(url).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, etag, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn routing_snapshots_are_versioned_checksummed_and_rolled_back_and_fleet_drift_shows() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let (acme_domain, zeta_domain) = (domain("acme"), domain("zeta"));
    let acme = provision(&mut tenants, &operator, &acme_domain).await.tenant_id;
    let zeta = provision(&mut tenants, &operator, &zeta_domain).await.tenant_id;
    let mut routing = RoutingServiceClient::connect(format!("http://{}", keel.grpc_addr)).await.unwrap();
    routing.set_deployment_target(authed(target(&acme, "acme.eu1.internal:8443", "active"), &operator)).await.unwrap();
    routing.set_deployment_target(authed(target(&zeta, "zeta.eu1.internal:8443", "active"), &operator)).await.unwrap();
    let bad = routing.set_deployment_target(authed(target(&acme, "has space", "active"), &operator)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    let v1 = routing
        .publish_routing_snapshot(authed(PublishRoutingSnapshotRequest { idempotency_key: key() }, &operator))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v1.version, v1.entries), (1, 2));
    assert_eq!(v1.checksum.len(), 64);

    // Suspending a tenant drops it from the next snapshot.
    let suspend = SuspendTenantRequest { tenant_id: zeta.clone(), reason: String::new(), idempotency_key: key() };
    tenants.suspend_tenant(authed(suspend, &operator)).await.unwrap();
    let v2 = routing
        .publish_routing_snapshot(authed(PublishRoutingSnapshotRequest { idempotency_key: key() }, &operator))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v2.version, v2.entries), (2, 1));

    // Edge routers read with a fleet:write key: latest with ETag, 304, any version.
    let (_, _, fleet_key) = app_with_key(keel.grpc_addr, &operator, &["fleet:write"]).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", keel.rest_addr);
    let wait = [("x-keel-min-position", v2.position.to_string())];
    let (status, etag, latest) =
        get(&http, format!("{base}/v1/control-plane/routing/snapshots/latest"), &fleet_key, &wait).await;
    assert_eq!((status, latest["version"].as_i64()), (200, Some(2)), "{latest}");
    assert_eq!(etag.as_deref(), Some(format!("\"{}\"", v2.checksum).as_str()));
    assert_eq!(latest["entries"][0]["domain"], acme_domain.as_str());
    let (status, _, _) = get(
        &http,
        format!("{base}/v1/control-plane/routing/snapshots/latest"),
        &fleet_key,
        &[("if-none-match", etag.unwrap())],
    )
    .await;
    assert_eq!(status, 304);
    let (status, _, first) = get(&http, format!("{base}/v1/control-plane/routing/snapshots/1"), &fleet_key, &[]).await;
    assert_eq!((status, first["entries"].as_array().map(Vec::len)), (200, Some(2)));
    let (status, _, _) = get(&http, format!("{base}/v1/control-plane/routing/snapshots/99"), &fleet_key, &[]).await;
    assert_eq!(status, 404);

    // A rollback is a new, audited version with the old entries.
    let rollback = RollbackRoutingSnapshotRequest { to_version: 1, idempotency_key: key() };
    let v3 = routing.rollback_routing_snapshot(authed(rollback, &operator)).await.unwrap().into_inner();
    assert_eq!((v3.version, v3.checksum.as_str()), (3, v1.checksum.as_str()));
    let err = routing
        .rollback_routing_snapshot(authed(
            RollbackRoutingSnapshotRequest { to_version: 42, idempotency_key: key() },
            &operator,
        ))
        .await
        .unwrap_err();
    assert_eq!((err.code(), error_code(&err).as_str()), (Code::NotFound, "routing_version_not_found"));
    let wait = [("x-keel-min-position", v3.position.to_string())];
    let (_, _, latest) =
        get(&http, format!("{base}/v1/control-plane/routing/snapshots/latest"), &operator, &wait).await;
    assert_eq!((latest["version"].as_i64(), latest["kind"].as_str()), (Some(3), Some("rolled_back")), "{latest}");

    // An agent reports what it runs; the health view shows drift against the registry.
    let report = |tenant: &str, observed: &str| json!({ "tenant_id": tenant, "observed_target": observed, "observed_state": "active", "healthy": true });
    let response = http
        .post(format!("{base}/v1/control-plane/health/reports"))
        .bearer_auth(&fleet_key)
        .json(&report(&acme, "acme.eu1.internal:8443"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let response = http
        .post(format!("{base}/v1/control-plane/health/reports"))
        .bearer_auth(&fleet_key)
        .json(&report(&zeta, "zeta.old.internal:8443"))
        .send()
        .await
        .unwrap();
    let position = response.json::<Value>().await.unwrap()["position"].as_i64().expect("position");
    let wait = [("x-keel-min-position", position.to_string())];
    let (status, _, health) = get(&http, format!("{base}/v1/control-plane/health/tenants"), &operator, &wait).await;
    assert_eq!(status, 200, "{health}");
    let drift = |tenant: &str| {
        health["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["tenant_id"] == tenant))
            .map(|i| i["drift"].clone())
    };
    assert_eq!(drift(&acme), Some(json!("none")));
    assert_eq!(drift(&zeta), Some(json!("target_mismatch")));

    // Keys without fleet:write may not report; apps may not publish.
    let (_, _, flags_key) = app_with_key(keel.grpc_addr, &operator, &["flags:read"]).await;
    let response = http
        .post(format!("{base}/v1/control-plane/health/reports"))
        .bearer_auth(&flags_key)
        .json(&report(&acme, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let err = routing
        .publish_routing_snapshot(authed(PublishRoutingSnapshotRequest { idempotency_key: key() }, &fleet_key))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    tokio::time::sleep(Duration::from_millis(10)).await;
    keel.stop().await;
}
