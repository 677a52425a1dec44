//! One record never freezes the platform (issue 13, ADR 0017): inputs larger than the
//! broker takes are refused, the relay parks what the broker refuses and goes on,
//! projectors park what their read model refuses, and readiness tells the truth.

use std::net::SocketAddr;
use std::time::Duration;

use keel_gateway::server::Workers;
use keel_projections::tenant_registry;
use keel_tests::{TestEnv, wait_projected};
use serde_json::{Value, json};

use crate::apps::app_with_key;
use crate::support::{domain, provision, provision_request, tenant_client};

/// `GET /readyz`: (status, body).
async fn readyz(rest: SocketAddr) -> (u16, Value) {
    let response = reqwest::get(format!("http://{rest}/readyz")).await.expect("readyz");
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

/// Waits until `/readyz` answers `status`; returns the body.
async fn readyz_becomes(rest: SocketAddr, status: u16, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (got, body) = readyz(rest).await;
        if got == status {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "/readyz did not answer {status} within {within:?}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends an event of about `bytes` bytes straight to the store, past every check
/// (as a bug or an older Keel could have); returns its position.
async fn append_raw_event(env: &TestEnv, bytes: usize) -> i64 {
    let owner = env.owner_pool().await;
    let position = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('probe', $1, 1, 'probe.written', '1', $2, $3) RETURNING position",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(json!({ "blob": "x".repeat(bytes) }))
    .bind(json!({ "event_id": uuid::Uuid::now_v7().to_string(), "actor_type": "system", "actor_id": "test",
                  "occurred_at": "2026-01-01T00:00:00Z", "command_id": uuid::Uuid::now_v7().to_string() }))
    .fetch_one(&owner)
    .await
    .expect("insert");
    owner.close().await;
    position
}

#[tokio::test]
async fn an_oversized_audit_record_is_refused_and_nothing_is_appended() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (_, _, writer) = app_with_key(keel.grpc_addr, &operator, &["audit:write"]).await;
    let http = reqwest::Client::new();
    let post = |reason: String, event_id: &str| {
        let record = json!({ "event_id": event_id, "timestamp": "2026-11-22T10:00:00Z", "actor_id": "alice",
            "event_type": "document.delete", "resource_id": "doc/42", "outcome": "failure", "reason": reason });
        http.post(format!("http://{}/v1/audit/events", keel.rest_addr)).bearer_auth(&writer).json(&record).send()
    };

    // Reproduction 1 of issue 13: a 1.5 MB reason.
    let response = post("r".repeat(1_500_000), "huge-1").await.expect("post");
    let status = response.status().as_u16();
    let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = response.json().await.unwrap_or_default();
    assert!(matches!(status, 400 | 413), "{status} {body}");
    assert_eq!(kind, "application/problem+json", "{body}");
    assert_eq!(body["code"], "too_large", "{body}");
    // Small enough for the body, too long for the field.
    let response = post("r".repeat(2_001), "long-1").await.expect("post");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap_or_default();
    assert_eq!(body["code"], "invalid_reason", "{body}");
    // At the limit it is recorded.
    let response = post("é".repeat(2_000), "fits-1").await.expect("post");
    assert_eq!(response.status().as_u16(), 201);

    let owner = env.owner_pool().await;
    let appended: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'audit' AND payload::text LIKE ANY($1)")
            .bind(vec!["%huge-1%", "%long-1%"])
            .fetch_one(&owner)
            .await
            .expect("count");
    assert_eq!(appended, 0, "a refused record must append nothing");

    // And the platform keeps projecting.
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let position = provision(&mut tenants, &operator, &domain("after-huge")).await.position;
    wait_projected(&keel.pool, tenant_registry::NAME, &env.topic, position, Duration::from_secs(30)).await;
    keel.stop().await;
}

#[tokio::test]
async fn the_relay_parks_an_event_the_broker_refuses_and_goes_on() {
    let env = TestEnv::new().await;
    let oversized = append_raw_event(&env, 1_500_000).await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let position = provision(&mut tenants, &operator, &domain("after-parked")).await.position;
    assert!(position > oversized);
    wait_projected(&keel.pool, tenant_registry::NAME, &env.topic, position, Duration::from_secs(30)).await;

    let parked = keel_commands::relay::parked(&keel.pool, &env.topic, 10).await.expect("parked");
    assert_eq!(parked.iter().map(|p| p.position).collect::<Vec<_>>(), vec![oversized], "{parked:?}");
    assert!(parked[0].size_bytes > 1_500_000 && parked[0].error.contains("message limit"), "{parked:?}");
    assert_eq!(keel.relay.parked.load(std::sync::atomic::Ordering::Relaxed), 1);
    let body = readyz_becomes(keel.rest_addr, 200, Duration::from_secs(15)).await;
    assert_eq!(body["relay"]["parked"], 1, "{body}");
    keel.stop().await;
}

#[tokio::test]
async fn readiness_shows_a_stalled_relay_within_seconds_and_its_recovery() {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    settings.stall_seconds = 2;
    settings.ready_probe_ms = 200;
    let keel = env.start_with(settings, Workers::ALL).await;
    let operator = env.operator_token().await;
    let body = readyz_becomes(keel.rest_addr, 200, Duration::from_secs(15)).await;
    assert_eq!((body["postgres"].as_bool(), body["broker"].as_bool()), (Some(true), Some(true)), "{body}");

    // Hold the relay's checkpoint: it publishes, then cannot record it, so it goes
    // no further. A table lock takes no transaction id, so other tests' relays
    // (the same cluster) are not held back.
    let owner = env.owner_pool().await;
    let mut hold = owner.begin().await.expect("begin");
    sqlx::query("LOCK TABLE relay_checkpoint IN EXCLUSIVE MODE").execute(&mut *hold).await.expect("lock");
    let mut tenants = tenant_client(keel.grpc_addr).await;
    provision(&mut tenants, &operator, &domain("stall")).await;
    let body = readyz_becomes(keel.rest_addr, 503, Duration::from_secs(20)).await;
    assert!(body["reasons"].to_string().contains("relay stalled"), "{body}");
    assert!(body["relay"]["pending"].as_i64() >= Some(1) && body["relay"]["stalled_seconds"].as_u64() >= Some(2));

    hold.rollback().await.expect("release");
    let body = readyz_becomes(keel.rest_addr, 200, Duration::from_secs(20)).await;
    assert_eq!(body["relay"]["pending"], 0, "{body}");
    owner.close().await;
    keel.stop().await;
}

#[tokio::test]
async fn without_a_broker_the_gateway_stays_ready_and_takes_commands() {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    // Nothing listens on the discard port.
    settings.kafka_brokers = "127.0.0.1:9".into();
    settings.stall_seconds = 1;
    settings.ready_probe_ms = 200;
    let keel = env.start_with(settings, Workers::ALL).await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let accepted = tenants
        .provision_tenant(keel_tests::bench::authed(provision_request(&domain("nobroker")), &operator))
        .await
        .expect("a command needs only Postgres");
    assert!(accepted.into_inner().position > 0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = readyz(keel.rest_addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["postgres"].as_bool(), body["broker"].as_bool()), (Some(true), Some(false)), "{body}");
    assert!(body["relay"]["pending"].as_i64() >= Some(1), "the waiting events are reported: {body}");
    keel.kill().await;
}

#[tokio::test]
async fn a_projector_parks_an_event_its_read_model_refuses_and_goes_on() {
    let env = TestEnv::new().await;
    // The registry refuses one name for good, as a bug or a stricter column would.
    let owner = env.owner_pool().await;
    sqlx::query("ALTER TABLE rm_tenant_registry.tenants ADD CONSTRAINT no_refused CHECK (name NOT LIKE '%refused%')")
        .execute(&owner)
        .await
        .expect("constraint");
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let refused = provision(&mut tenants, &operator, &domain("refused")).await;
    let later = provision(&mut tenants, &operator, &domain("accepted")).await;
    wait_projected(&keel.pool, tenant_registry::NAME, &env.topic, later.position, Duration::from_secs(30)).await;

    let parked = keel_projections::dead_letters::list(&keel.pool, tenant_registry::NAME, Some(&refused.tenant_id))
        .await
        .expect("list");
    assert!(!parked.is_empty() && parked[0].error.contains("no_refused"), "{parked:?}");
    let status = keel.projectors.get(tenant_registry::NAME).expect("status");
    assert!(status.parked.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let (_, body) = readyz(keel.rest_addr).await;
    assert!(body["projectors"][tenant_registry::NAME]["parked"].as_u64() >= Some(1), "{body}");
    owner.close().await;
    keel.stop().await;
}
