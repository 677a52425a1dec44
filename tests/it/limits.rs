//! Resource limits end to end (ADR 0021): the connection budget, the Postgres timeouts,
//! load shedding and request timeouts on both APIs, bounded read-your-writes waits,
//! caps on open streams, and streams that end once their credential stops working.

use std::time::{Duration, Instant};

use chrono::Utc;
use keel_gateway::proto::billing_service_client::BillingServiceClient;
use keel_gateway::proto::{RevokeApiKeyRequest, UsageEvent};
use keel_gateway::server::Workers;
use keel_tests::{RUNTIME_ROLE, TestEnv};
use serde_json::Value;
use tonic::Code;

use crate::apps::{app_client, app_with_key};
use crate::support::{authed, domain, error_code, key, provision, provision_request, tenant_client, tenant_with_owner};

/// Connections of the runtime role (Keel's) to the test's database, whatever their name.
async fn keel_connections(owner: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = $1")
        .bind(RUNTIME_ROLE)
        .fetch_one(owner)
        .await
        .expect("count connections")
}

#[tokio::test]
async fn a_loaded_keel_holds_at_most_its_connection_budget() {
    const BUDGET: u32 = 16;
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    settings.limits.db_max_connections = BUDGET;
    let keel = env.start_with(settings, Workers::ALL).await;
    let operator = env.operator_token().await;
    let owner = env.owner_pool().await;

    let load = async {
        let calls = (0..48).map(|i| {
            let operator = operator.clone();
            let addr = keel.grpc_addr;
            async move {
                let mut client = tenant_client(addr).await;
                let created =
                    client.provision_tenant(authed(provision_request(&domain(&format!("budget{i}"))), &operator));
                let position = created.await.map(|r| r.into_inner().position).unwrap_or(0);
                let read = reqwest::Client::new()
                    .get(format!("http://{}/v1/control-plane/tenants", keel.rest_addr))
                    .bearer_auth(&operator)
                    .header("x-keel-min-position", position.to_string())
                    .send()
                    .await
                    .expect("GET");
                read.status().as_u16()
            }
        });
        futures::future::join_all(calls).await
    };
    let peak = std::sync::atomic::AtomicI64::new(0);
    let sample = async {
        loop {
            peak.fetch_max(keel_connections(&owner).await, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let statuses = tokio::select! {
        statuses = load => statuses,
        () = sample => unreachable!("sampling never ends"),
    };
    let peak = peak.into_inner().max(keel_connections(&owner).await);
    assert!(peak <= i64::from(BUDGET), "Keel held {peak} connections with a budget of {BUDGET}");
    // The load really ran: most reads answered (the rest at most shed with 503, never failed).
    let answered = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503) && answered >= 24, "{statuses:?}");
    println!("peak {peak} connections (budget {BUDGET}), {answered}/48 reads answered");
    // Every pool is named, and each served the load.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = current_database() AND usename = $1 ORDER BY 1",
    )
    .bind(RUNTIME_ROLE)
    .fetch_all(&owner)
    .await
    .unwrap();
    assert_eq!(names, ["keel:relaxed", "keel:requests", "keel:workers"]);
    owner.close().await;
    keel.stop().await;
}

#[tokio::test]
async fn every_connection_has_a_statement_and_an_idle_in_transaction_timeout() {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    settings.limits.db_statement_timeout_ms = 300;
    settings.limits.db_idle_in_transaction_timeout_ms = 300;
    let keel = env.start_with(settings, Workers::ALL).await;
    let slow = sqlx::query("SELECT pg_sleep(2)").execute(&keel.pool).await;
    assert!(slow.is_err_and(|e| e.to_string().contains("statement timeout")), "a slow statement is cancelled");
    let mut stuck = keel.pool.begin().await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *stuck).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(sqlx::query("SELECT 1").execute(&mut *stuck).await.is_err(), "an idle transaction's session is ended");
    drop(stuck);
    let show = |name: &'static str| {
        let pool = keel.pool.clone();
        async move { sqlx::query_scalar::<_, String>(&format!("SHOW {name}")).fetch_one(&pool).await.unwrap() }
    };
    assert_eq!(show("statement_timeout").await, "300ms");
    assert_eq!(show("idle_in_transaction_session_timeout").await, "300ms");
    keel.stop().await;
}

/// GET `path` as `token`, with `X-Keel-Min-Position` if given: (status, code, Retry-After, content type).
async fn get(
    base: std::net::SocketAddr,
    path: &str,
    token: &str,
    position: Option<i64>,
) -> (u16, String, Option<String>, String) {
    let mut request = reqwest::Client::new().get(format!("http://{base}{path}")).bearer_auth(token);
    if let Some(p) = position {
        request = request.header("x-keel-min-position", p.to_string());
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (retry, kind) = (header("retry-after"), header("content-type").unwrap_or_default());
    let body: Value = response.json().await.unwrap_or_default();
    (status, body["code"].as_str().unwrap_or_default().to_string(), retry, kind)
}

/// [`get`] with a position, in a task.
fn spawn_get(
    base: std::net::SocketAddr,
    path: &str,
    token: &str,
    position: i64,
) -> tokio::task::JoinHandle<(u16, String, Option<String>, String)> {
    let (path, token) = (path.to_string(), token.to_string());
    tokio::spawn(async move { get(base, &path, &token, Some(position)).await })
}

#[tokio::test]
async fn requests_beyond_the_limits_are_shed_or_timed_out_never_queued() {
    let env = TestEnv::new().await;
    // No projectors: a read that waits for a position waits until its bound.
    let workers = Workers { relay: true, projectors: false, sweeper: false };
    let mut settings = env.settings();
    settings.limits.max_concurrent_requests = 1;
    settings.limits.request_timeout_ms = 1_500;
    settings.min_position_wait_ms = 10_000;
    let keel = env.start_with(settings, workers).await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let tenant = provision(&mut tenants, &operator, &domain("shed")).await;
    let path = format!("/v1/control-plane/tenants/{}", tenant.tenant_id);

    // REST: one request in progress; the next is shed at once; the first times out.
    let started = Instant::now();
    let waiting = spawn_get(keel.rest_addr, &path, &operator, tenant.position);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, code, retry, kind) = get(keel.rest_addr, "/healthz", &operator, None).await;
    assert_eq!((status, code.as_str(), retry.as_deref()), (503, "overloaded", Some("1")));
    assert_eq!(kind, "application/problem+json");
    let (status, code, _, kind) = waiting.await.unwrap();
    assert_eq!((status, code.as_str(), kind.as_str()), (503, "timeout", "application/problem+json"));
    assert!(started.elapsed() < Duration::from_secs(5), "timed out after {:?}", started.elapsed());

    // gRPC: a call stuck behind a lock times out (DEADLINE_EXCEEDED); meanwhile another is shed (UNAVAILABLE).
    let owner = env.owner_pool().await;
    let mut lock = owner.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let stuck = {
        let operator = operator.clone();
        let addr = keel.grpc_addr;
        tokio::spawn(async move {
            let mut client = tenant_client(addr).await;
            client.provision_tenant(authed(provision_request(&domain("stuck")), &operator)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = tenants.provision_tenant(authed(provision_request(&domain("shed2")), &operator)).await.unwrap_err();
    assert_eq!((shed.code(), error_code(&shed).as_str()), (Code::Unavailable, "overloaded"));
    let timed_out = stuck.await.unwrap().unwrap_err();
    assert_eq!((timed_out.code(), error_code(&timed_out).as_str()), (Code::DeadlineExceeded, "timeout"));
    lock.rollback().await.unwrap();
    owner.close().await;
    keel.stop().await;

    // Read-your-writes: one waiter at a time here; the next is answered 503 at once.
    let mut settings = env.settings();
    settings.limits.max_position_waiters = 1;
    settings.min_position_wait_ms = 2_000;
    let keel = env.start_with(settings, workers).await;
    let first = spawn_get(keel.rest_addr, &path, &operator, tenant.position);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let (status, code, retry, _) = get(keel.rest_addr, &path, &operator, Some(tenant.position)).await;
    assert_eq!((status, code.as_str(), retry.as_deref()), (503, "too_many_waiters", Some("1")));
    assert!(asked.elapsed() < Duration::from_secs(1), "refused at once, not after waiting");
    let (status, code, _, _) = first.await.unwrap();
    assert_eq!((status, code.as_str()), (503, "position_not_reached"), "the wait is bounded");
    keel.stop().await;
}

/// A usage event for `tenant`.
fn usage(tenant: &str, i: usize) -> UsageEvent {
    UsageEvent {
        event_id: format!("limits-{i}"),
        tenant_id: tenant.to_string(),
        event_type: "api.call".into(),
        quantity: 1,
        timestamp: Some(prost_types::Timestamp { seconds: Utc::now().timestamp(), nanos: 0 }),
        properties: None,
    }
}

#[tokio::test]
async fn a_revoked_key_ends_its_ingestion_stream_and_streams_are_capped_per_caller() {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    settings.limits.stream_recheck_ms = 200;
    settings.limits.max_streams_per_caller = 1;
    let keel = env.start_with(settings, Workers::ALL).await;
    let operator = env.operator_token().await;
    let tenant = provision(&mut tenant_client(keel.grpc_addr).await, &operator, &domain("ingest")).await.tenant_id;
    let (app_id, key_id, writer) = app_with_key(keel.grpc_addr, &operator, &["billing:write"]).await;
    let mut billing = BillingServiceClient::connect(format!("http://{}", keel.grpc_addr)).await.unwrap();

    let (events, stream) = futures::channel::mpsc::unbounded();
    let open = {
        let (writer, mut billing) = (writer.clone(), billing.clone());
        tokio::spawn(async move { billing.ingest_events(authed(stream, &writer)).await })
    };
    for i in 0..10 {
        events.unbounded_send(usage(&tenant, i)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The key has its one stream open: a second is refused.
    let (_keep, second) = futures::channel::mpsc::unbounded::<UsageEvent>();
    let refused = billing.ingest_events(authed(second, &writer)).await.unwrap_err();
    assert_eq!((refused.code(), error_code(&refused).as_str()), (Code::ResourceExhausted, "too_many_streams"));

    let revoke = RevokeApiKeyRequest { app_id, key_id, idempotency_key: key() };
    app_client(keel.grpc_addr).await.revoke_api_key(authed(revoke, &operator)).await.expect("revoke");
    let revoked_at = Instant::now();
    // The client keeps writing; the stream must end anyway.
    let writing = async {
        for i in 10.. {
            if events.unbounded_send(usage(&tenant, i)).is_err() {
                // The call is over: let its answer win the race.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ended = tokio::select! {
        ended = tokio::time::timeout(Duration::from_secs(5), open) => ended,
        () = writing => panic!("the writer stopped"),
    };
    let status = ended.expect("the stream ended within 5 s of the revocation").unwrap().unwrap_err();
    assert_eq!((status.code(), error_code(&status).as_str()), (Code::Unauthenticated, "key_revoked"));
    println!("ingestion stream ended {:?} after the revocation", revoked_at.elapsed());
    keel.stop().await;
}

#[tokio::test]
async fn an_ended_session_closes_its_sse_stream() {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    settings.limits.stream_recheck_ms = 200;
    settings.limits.max_streams_per_caller = 1;
    let keel = env.start_with(settings, Workers::ALL).await;
    let operator = env.operator_token().await;
    let (tenant, _, _, owner) = tenant_with_owner(&env, &keel, &operator, "sse-session").await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/ofrep/v1/events?tenant={tenant}", keel.rest_addr);
    // The flag cache learns of the new tenant shortly after it is provisioned.
    let mut stream = None;
    for _ in 0..100 {
        let response = http.get(&url).bearer_auth(&owner).send().await.expect("open stream");
        if response.status().as_u16() == 200 {
            stream = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = stream.expect("the stream opens within 10 s");

    // One stream per caller here: a second is refused with 429 problem+json.
    let second = http.get(&url).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(second.status().as_u16(), 429);
    assert_eq!(second.headers()["content-type"], "application/problem+json");
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["code"], "too_many_streams");

    let logout = http.post(format!("http://{}/v1/auth/logout", keel.rest_addr)).bearer_auth(&owner).send().await;
    assert_eq!(logout.unwrap().status().as_u16(), 204);
    let ended_at = Instant::now();
    let closed =
        tokio::time::timeout(Duration::from_secs(5), async { while let Ok(Some(_)) = stream.chunk().await {} }).await;
    assert!(closed.is_ok(), "the stream outlived its session by 5 s");
    println!("SSE stream closed {:?} after logout", ended_at.elapsed());
    keel.stop().await;
}
