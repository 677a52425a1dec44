//! Visibility: `/metrics` names route templates and methods, never ids or addresses;
//! the system health API (FR-SYS-005) answers each component and each API's error rate
//! and latency from Keel's own counters, to operators and auditors only.

use std::time::Duration;

use keel_gateway::server::Workers;
use keel_tests::{TestEnv, eventually};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{PASSWORD, Rest, authed, provision_request, tenant_client, tenant_with_owner};

const HEALTH: &str = "/v1/control-plane/health/system";

/// `GET path` with an optional bearer token: (status, content type, body).
async fn get(base: &str, path: &str, token: Option<&str>) -> (StatusCode, String, String) {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET");
    let status = response.status();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, content_type, response.text().await.expect("body"))
}

/// The value of the series `series` (name and labels, exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_name_route_templates_and_methods_never_ids() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let base = format!("http://{}", keel.rest_addr);
    let (tenant, domain, email, owner) = tenant_with_owner(&env, &keel, &operator, "metrics").await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let mut invalid = provision_request(&domain);
    invalid.domain = "not a domain!".into();
    let refused = tenants.provision_tenant(authed(invalid, &operator)).await.expect_err("invalid domain");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    // Until the registry has the tenant this answers 404; the first 200 ends the loop.
    let read = eventually(Duration::from_secs(20), || async {
        get(&base, &format!("/v1/control-plane/tenants/{tenant}"), Some(&operator)).await.0 == StatusCode::OK
    })
    .await;
    assert!(read, "the tenant never showed in the registry");
    let (status, _, _) = get(&base, &format!("/v1/no-such-thing/{tenant}/{email}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, content_type, text) = get(&base, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let expected = [
        r#"keel_http_requests_total{method="GET",route="/v1/control-plane/tenants/{tenant_id}",status="200"}"#,
        r#"keel_http_requests_total{method="GET",route="unmatched",status="404"}"#,
        r#"keel_http_requests_total{method="POST",route="/v1/auth/login",status="200"}"#,
        r#"keel_http_request_duration_seconds_count{method="GET",route="/v1/control-plane/tenants/{tenant_id}"}"#,
        r#"keel_grpc_requests_total{service="keel.v1.TenantService",method="ProvisionTenant",code="OK"}"#,
        r#"keel_grpc_requests_total{service="keel.v1.TenantService",method="ProvisionTenant",code="INVALID_ARGUMENT"}"#,
        r#"keel_grpc_request_duration_seconds_count{service="keel.v1.TenantService",method="ProvisionTenant"}"#,
        "keel_relay_up",
        r#"keel_projector_running{read_model="tenant_registry"}"#,
        r#"keel_projector_parked_events{read_model="tenant_registry"}"#,
        r#"keel_projector_lag_events{read_model="audit_trail"}"#,
        "keel_password_hash_queue_depth",
        r#"keel_db_pool_max_connections{pool="runtime"}"#,
        r#"keel_db_pool_idle_connections{pool="workers"}"#,
    ];
    for series in expected {
        assert!(sample(&text, series).is_some(), "no {series} in\n{text}");
    }
    let tenant_reads =
        r#"keel_http_requests_total{method="GET",route="/v1/control-plane/tenants/{tenant_id}",status="200"}"#;
    assert_eq!(sample(&text, tenant_reads), Some(1.0));
    assert_eq!(sample(&text, "keel_relay_up"), Some(1.0));
    assert_eq!(sample(&text, r#"keel_projector_parked_events{read_model="tenant_registry"}"#), Some(0.0));
    let relay_lag = format!(r#"keel_relay_lag_events{{topic="{}"}}"#, env.topic);
    assert!(sample(&text, &relay_lag).is_some_and(|lag| lag >= 0.0), "{text}");
    for secret in [tenant.as_str(), domain.as_str(), email.as_str(), "owner@", operator.as_str(), owner.as_str()] {
        assert!(!text.contains(secret), "/metrics shows {secret:?}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit_once(' ').map(|(_, v)| v).unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "not a sample line: {line}");
    }

    // Once quiet, the relay and the projectors are caught up.
    let caught_up = eventually(Duration::from_secs(30), || async {
        let (_, _, text) = get(&base, "/metrics", None).await;
        sample(&text, &relay_lag) == Some(0.0)
            && sample(&text, r#"keel_projector_lag_events{read_model="tenant_registry"}"#) == Some(0.0)
    })
    .await;
    assert!(caught_up, "relay or tenant_registry still behind");

    // The health API: anonymous 401, a tenant's owner 403 (problem documents), operators and auditors 200.
    let (status, content_type, _) = get(&base, HEALTH, None).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::UNAUTHORIZED, "application/problem+json"));
    let (status, content_type, body) = get(&base, HEALTH, Some(&owner)).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::FORBIDDEN, "application/problem+json"), "{body}");
    env.platform_user("audit@keel.example.com", PASSWORD, "auditor").await;
    let (auditor, _) = Rest::new(keel.rest_addr).tokens("audit@keel.example.com", PASSWORD, None).await;
    for token in [&operator, &auditor] {
        let (status, _, body) = get(&base, HEALTH, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let health: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(health["status"], "up", "{health:#}");
        let components = &health["components"];
        for name in ["postgres", "broker", "relay", "mail"] {
            assert_eq!(components[name]["status"], "up", "{name}: {health:#}");
        }
        let projectors = components["projectors"].as_object().expect("projectors");
        assert_eq!(projectors.len(), keel_projections::registry::names().len());
        assert!(projectors.values().all(|p| p["status"] == "up" && p["parked"] == 0), "{health:#}");
        assert_eq!(projectors["tenant_registry"]["lag_events"], 0);
        let api = |name: &str| health["apis"].as_array().expect("apis").iter().find(|a| a["api"] == name).cloned();
        let refusals = api("rest GET /v1/control-plane/health/system").expect("the refused health calls");
        assert!(refusals["rejected"].as_u64() >= Some(2), "{refusals}");
        assert!(api("grpc keel.v1.TenantService/ProvisionTenant").is_some_and(|a| a["rejected"] == 1));
    }
    keel.stop().await;
}

#[tokio::test]
async fn system_health_counts_each_apis_errors_and_latency_from_keels_own_counters() {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    settings.min_position_wait_ms = 300;
    // No projectors: a read waiting for a position answers 503 (a server-side error) after 300 ms.
    let keel = env.start_with(settings, Workers { projectors: false, ..Workers::ALL }).await;
    let operator = env.operator_token().await;
    let base = format!("http://{}", keel.rest_addr);
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let created = tenants
        .provision_tenant(authed(provision_request(&crate::support::domain("health")), &operator))
        .await
        .expect("provision")
        .into_inner();
    let (status, _, body) = get(&base, "/v1/control-plane/tenants", Some(&operator)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let list = "rest GET /v1/control-plane/tenants";
    let stats = |health: &Value, api: &str| {
        health["apis"].as_array().expect("apis").iter().find(|a| a["api"] == api).cloned().unwrap_or(Value::Null)
    };
    let (_, _, body) = get(&base, HEALTH, Some(&operator)).await;
    let before: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (stats(&before, list)["requests"].as_u64(), stats(&before, list)["error_rate"].as_f64()),
        (Some(1), Some(0.0))
    );

    let waiting = reqwest::Client::new()
        .get(format!("{base}/v1/control-plane/tenants"))
        .bearer_auth(&operator)
        .header("X-Keel-Min-Position", created.position.to_string())
        .send()
        .await
        .expect("GET");
    assert_eq!(waiting.status(), StatusCode::SERVICE_UNAVAILABLE);

    let (status, _, body) = get(&base, HEALTH, Some(&operator)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let health: Value = serde_json::from_str(&body).expect("json");
    let listing = stats(&health, list);
    assert_eq!((listing["requests"].as_u64(), listing["errors"].as_u64()), (Some(2), Some(1)), "{health:#}");
    assert_eq!(listing["error_rate"].as_f64(), Some(0.5));
    assert!(listing["p99_ms"].as_f64().is_some_and(|p99| p99 >= 250.0), "the 300 ms wait shows: {listing}");
    assert!(
        listing["p50_ms"].as_f64().is_some_and(|p50| p50 > 0.0 && p50 <= listing["p99_ms"].as_f64().unwrap_or(0.0))
    );
    let provision = stats(&health, "grpc keel.v1.TenantService/ProvisionTenant");
    assert_eq!((provision["requests"].as_u64(), provision["error_rate"].as_f64()), (Some(1), Some(0.0)));
    assert_eq!(health["window_seconds"], 300);

    // This process runs no projector: each is down, and so is the whole; the rest is up.
    let components = &health["components"];
    for name in ["postgres", "broker", "relay", "mail"] {
        assert_eq!(components[name]["status"], "up", "{name}: {health:#}");
    }
    let projectors = components["projectors"].as_object().expect("projectors");
    assert!(!projectors.is_empty() && projectors.values().all(|p| p["status"] == "down"), "{health:#}");
    assert_eq!(health["status"], "down");
    keel.stop().await;
}
