//! The REST query API: registry reads, pagination, problems, isolation, read-your-writes.

use std::time::Duration;

use keel_gateway::server::Workers;
use keel_projections::tenant_registry::{self, Scope};
use keel_tests::{TestEnv, wait_projected};
use reqwest::StatusCode;

use crate::support::{authed, domain, provision, tenant_client};

#[tokio::test]
async fn lists_filter_and_paginate_with_a_cursor() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let mut last = 0;
    let mut ids = Vec::new();
    for i in 0..7 {
        let t = provision(&mut client, &token, &domain(&format!("list{i}"))).await;
        ids.push(t.tenant_id.clone());
        last = t.position;
    }
    for id in &ids[..3] {
        let request = keel_gateway::proto::SuspendTenantRequest {
            tenant_id: id.clone(),
            reason: "x".into(),
            idempotency_key: format!("s-{id}"),
        };
        last = client.suspend_tenant(authed(request, &token)).await.expect("suspend").into_inner().position;
    }
    let http = reqwest::Client::new();
    let base = format!("http://{}/v1/control-plane/tenants", keel.rest_addr);
    let get = |query: String| {
        let request =
            http.get(format!("{base}?{query}")).bearer_auth(&token).header("X-Keel-Min-Position", last.to_string());
        async move {
            let response = request.send().await.expect("GET");
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<serde_json::Value>().await.expect("json")
        }
    };
    let suspended = get("status=suspended".into()).await;
    assert_eq!(suspended["items"].as_array().map(Vec::len), Some(3));
    assert!(suspended["items"].as_array().expect("items").iter().all(|t| t["status"] == "suspended"));
    assert_eq!(get("plan=free".into()).await["items"].as_array().map(Vec::len), Some(0));

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get(format!("limit=3&cursor={cursor}")).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|t| t["tenant_id"].as_str().expect("id").to_string()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected, "every tenant once, in id (creation) order");
    keel.stop().await;
}

#[tokio::test]
async fn errors_are_problem_documents_without_internals() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", keel.rest_addr);
    let cases = [
        (http.get(format!("{base}/v1/control-plane/tenants")), StatusCode::UNAUTHORIZED, "unauthenticated"),
        (
            http.get(format!("{base}/v1/control-plane/tenants")).bearer_auth("keel_op_nope"),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            http.get(format!("{base}/v1/control-plane/tenants?status=sleeping")).bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "invalid_status",
        ),
        (
            http.get(format!("{base}/v1/control-plane/tenants?limit=0")).bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (
            http.get(format!("{base}/v1/control-plane/tenants?cursor=%27%3B")).bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            http.get(format!("{base}/v1/control-plane/tenants/tnt_01jd0000000000000000000000")).bearer_auth(&token),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            http.get(format!("{base}/v1/control-plane/tenants/'%20OR%201=1")).bearer_auth(&token),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            http.get(format!("{base}/v1/control-plane/tenants"))
                .bearer_auth(&token)
                .header("X-Keel-Min-Position", "soon"),
            StatusCode::BAD_REQUEST,
            "invalid_min_position",
        ),
        (
            http.get(format!("{base}/v1/control-plane/tenants"))
                .bearer_auth(&token)
                .header("X-Keel-Min-Position", "999999"),
            StatusCode::BAD_REQUEST,
            "unknown_position",
        ),
        (http.get(format!("{base}/no/such/route")), StatusCode::NOT_FOUND, "not_found"),
        // A malformed query string and a wrong method are problem documents too.
        (
            http.get(format!("{base}/v1/control-plane/tenants?status=active&status=purged")).bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            http.get(format!("{base}/v1/control-plane/tenants?limit=many")).bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            http.get(format!("{base}/v1/audit/events?outcome=success&outcome=failure")).bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            http.get(format!("{base}/v1/audit/export.csv?actor_id=a%00b")).bearer_auth(&token),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            http.delete(format!("{base}/v1/control-plane/tenants")).bearer_auth(&token),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.header("x-correlation-id", "corr-123").send().await.expect("send");
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{code}");
        assert_eq!(response.headers()["x-correlation-id"], "corr-123");
        let body: serde_json::Value = response.json().await.expect("problem");
        assert_eq!(body["code"], code);
        assert_eq!(body["status"], status.as_u16());
        assert_eq!(body["correlation_id"], "corr-123");
        assert!(body["type"].as_str().is_some_and(|t| t.starts_with("https://")) && body["title"].is_string());
        let text = body.to_string().to_lowercase();
        assert!(!text.contains("select") && !text.contains("sqlx") && !text.contains("panicked"), "{text}");
    }
    keel.stop().await;
}

#[tokio::test]
async fn a_query_waits_for_its_position_and_gives_up_with_503() {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    settings.min_position_wait_ms = 300;
    // No projector: the read model never gets there.
    let keel = env.start_with(settings, Workers { relay: true, projectors: false, sweeper: false }).await;
    let token = env.operator_token().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let tenant = provision(&mut client, &token, &domain("wait")).await;
    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/control-plane/tenants/{}", keel.rest_addr, tenant.tenant_id))
        .bearer_auth(&token)
        .header("X-Keel-Min-Position", tenant.position.to_string())
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(started.elapsed() >= Duration::from_millis(300));
    keel.stop().await;
}

#[tokio::test]
async fn row_level_security_keeps_each_tenant_to_its_own_rows() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let a = provision(&mut client, &token, &domain("rls-a")).await;
    let b = provision(&mut client, &token, &domain("rls-b")).await;
    let pool = env.app_pool().await;
    wait_projected(&pool, "tenant_registry", &env.topic, b.position.max(a.position), Duration::from_secs(30)).await;

    // The runtime role sees nothing without a scope, even with a query that forgets its WHERE.
    let unscoped: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rm_tenant_registry.tenants").fetch_one(&pool).await.expect("count");
    assert_eq!(unscoped, 0);
    // In tenant A's scope, B does not exist.
    let scope = Scope::Tenant(a.tenant_id.clone());
    assert!(tenant_registry::get(&pool, &scope, &a.tenant_id).await.expect("get").is_some());
    assert!(tenant_registry::get(&pool, &scope, &b.tenant_id).await.expect("get").is_none());
    let all = tenant_registry::list(&pool, &scope, &tenant_registry::ListFilter { limit: 10, ..Default::default() })
        .await
        .expect("list");
    assert_eq!(all.iter().map(|r| r.tenant_id.as_str()).collect::<Vec<_>>(), vec![a.tenant_id.as_str()]);
    // The runtime role cannot write around the projector, nor alter history.
    let write =
        sqlx::query("UPDATE rm_tenant_registry.tenants SET plan = 'free'").execute(&pool).await.expect("update");
    assert_eq!(write.rows_affected(), 0);
    let tamper = sqlx::query("UPDATE events SET payload = '{}'").execute(&pool).await;
    assert!(tamper.is_err(), "events are append-only for the runtime role");
    let delete = sqlx::query("DELETE FROM events").execute(&pool).await;
    assert!(delete.is_err(), "events cannot be deleted by the runtime role");
    keel.stop().await;
}
