//! Billing end to end: batched ingestion with per-event answers, the ledger's totals,
//! the export (NDJSON, CSV, cursors), the gRPC stream, and the `keel.billing.v1`
//! contract read by a stock Kafka client.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use keel_gateway::proto::billing_service_client::BillingServiceClient;
use keel_gateway::proto::tenant_service_client::TenantServiceClient;
use keel_gateway::proto::{ListRollupAllowlistRequest, RollupEventTypeRequest, SuspendTenantRequest, UsageEvent};
use keel_tests::TestEnv;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::apps::app_with_key;
use crate::support::{authed, domain, error_code, key, provision, tenant_client, tenant_with_owner};

/// A REST caller with a bearer credential.
#[derive(Clone)]
pub struct Caller {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Caller {
    pub fn new(addr: std::net::SocketAddr, token: &str) -> Self {
        Self { base: format!("http://{addr}"), http: reqwest::Client::new(), token: token.to_string() }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response =
            self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// GET, waiting for `position` (read-your-writes): (status, content type, body text).
    pub async fn get(&self, path: &str, position: i64) -> (u16, String, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-keel-min-position", position.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        (status, kind, response.text().await.unwrap_or_default())
    }

    pub async fn get_json(&self, path: &str, position: i64) -> (u16, Value) {
        let (status, _, text) = self.get(path, position).await;
        (status, serde_json::from_str(&text).unwrap_or_default())
    }
}

fn ago(hours: i64) -> String {
    (Utc::now() - chrono::Duration::hours(hours)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn usage(id: &str, tenant: &str, event_type: &str, quantity: i64, timestamp: &str) -> Value {
    json!({ "event_id": id, "tenant_id": tenant, "event_type": event_type, "quantity": quantity,
            "timestamp": timestamp, "properties": { "source": "it" } })
}

async fn suspend(client: &mut TenantServiceClient<Channel>, operator: &str, tenant: &str) {
    let request = SuspendTenantRequest { tenant_id: tenant.into(), reason: "unpaid".into(), idempotency_key: key() };
    client.suspend_tenant(authed(request, operator)).await.expect("suspend");
}

fn outcome(answer: &Value, index: usize) -> (String, String) {
    let r = &answer["results"][index];
    assert_eq!(r["index"], index, "{answer}");
    (r["status"].as_str().unwrap_or("").to_string(), r["reason"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn a_mixed_batch_is_answered_per_event_and_the_ledger_counts_each_event_once() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let active = provision(&mut tenants, &operator, &domain("bill")).await.tenant_id;
    let paused = provision(&mut tenants, &operator, &domain("bill")).await.tenant_id;
    suspend(&mut tenants, &operator, &paused).await;
    let (_, _, writer) = app_with_key(keel.grpc_addr, &operator, &["billing:write"]).await;
    let (_, _, reader) = app_with_key(keel.grpc_addr, &operator, &["billing:read"]).await;
    let writer = Caller::new(keel.rest_addr, &writer);
    let reader = Caller::new(keel.rest_addr, &reader);
    let now = ago(0);
    let unknown = "tnt_01jd0000000000000000000000";

    let batch = json!({ "events": [
        usage("e1", &active, "api.call", 5, &now),
        usage("e2", &active, "api.call", 7, &now),
        usage("e3", &active, "storage.gb", 100, &now),
        usage("e1", &active, "api.call", 5, &now),
        usage("e4", &active, "api.call", 1, "yesterday"),
        { "event_id": "e5", "tenant_id": active, "event_type": "api.call", "quantity": 2.5, "timestamp": now },
        usage("e6", unknown, "api.call", 1, &now),
        usage("e7", &active, "api.call", 1, &(Utc::now() + chrono::Duration::hours(1)).to_rfc3339()),
        usage("e8", &active, "api.call", 11, &ago(24 * 5)),
        usage("e9", &paused, "api.call", 13, &now),
        usage("e1", &active, "api.call", 6, &now),
        "not an object",
    ]});
    let (status, answer) = writer.post("/v1/billing/events:batch", batch).await;
    assert_eq!(status, 200, "{answer}");
    let expected = [
        ("accepted", ""),
        ("accepted", ""),
        ("accepted", ""),
        ("duplicate", ""),
        ("rejected", "invalid_timestamp"),
        ("rejected", "invalid_quantity"),
        ("rejected", "unknown_tenant"),
        ("rejected", "timestamp_in_future"),
        ("accepted", ""),
        ("accepted", ""),
        ("rejected", "event_id_conflict"),
        ("rejected", "invalid_event"),
    ];
    for (index, (status, reason)) in expected.iter().enumerate() {
        assert_eq!(outcome(&answer, index), (status.to_string(), reason.to_string()), "event {index}: {answer}");
    }
    assert_eq!(
        (answer["accepted"].as_u64(), answer["duplicates"].as_u64(), answer["rejected"].as_u64()),
        (Some(5), Some(1), Some(6))
    );
    assert!(answer["position"].as_i64().unwrap() > 0);

    // The same events again: every one a duplicate, nothing counted twice; a reused id is refused.
    let again =
        json!({ "events": [usage("e1", &active, "api.call", 5, &now), usage("e2", &active, "api.call", 8, &now)] });
    let (_, answer) = writer.post("/v1/billing/events:batch", again).await;
    assert_eq!(outcome(&answer, 0), ("duplicate".into(), "".into()));
    assert_eq!(outcome(&answer, 1), ("rejected".into(), "event_id_conflict".into()));

    // One event at a time: 201, then 200 as a duplicate; a bad one is a problem document.
    let (status, single) = writer.post("/v1/billing/events", usage("s1", &active, "api.call", 3, &now)).await;
    assert_eq!((status, single["status"].as_str()), (201, Some("accepted")), "{single}");
    let (status, dup) = writer.post("/v1/billing/events", usage("s1", &active, "api.call", 3, &now)).await;
    assert_eq!((status, dup["status"].as_str()), (200, Some("duplicate")));
    let (status, problem) = writer.post("/v1/billing/events", usage("s2", &active, "api.call", -1, &now)).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("invalid_quantity")));
    let (status, problem) = writer.post("/v1/billing/events", usage("s3", unknown, "api.call", 1, &now)).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("unknown_tenant")));
    let position = single["position"].as_i64().unwrap();

    // Only apps with billing:write report; only billing:read (or operators, auditors, the owner) reads.
    let (status, problem) = reader.post("/v1/billing/events", usage("r1", &active, "api.call", 1, &now)).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("missing_scope")));
    let (status, problem) = Caller::new(keel.rest_addr, &operator)
        .post("/v1/billing/events", usage("o1", &active, "api.call", 1, &now))
        .await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("apps_only")));
    let (status, _) = writer.get_json(&format!("/v1/billing/usage?tenant_id={active}"), position).await;
    assert_eq!(status, 403);

    // Totals: per hour and per day, each accepted event once.
    let from = ago(24 * 7);
    let (status, hourly) = reader
        .get_json(&format!("/v1/billing/usage?tenant_id={active}&granularity=day&from={from}&to={}", ago(-1)), position)
        .await;
    assert_eq!(status, 200, "{hourly}");
    let mut by_type: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for total in hourly["totals"].as_array().unwrap() {
        let entry = by_type.entry(total["event_type"].as_str().unwrap().to_string()).or_default();
        entry.0 += total["quantity"].as_i64().unwrap();
        entry.1 += total["events"].as_i64().unwrap();
    }
    assert_eq!(by_type["api.call"], (5 + 7 + 11 + 3, 4));
    assert_eq!(by_type["storage.gb"], (100, 1));
    let (status, hourly) =
        reader.get_json(&format!("/v1/billing/usage?tenant_id={active}&granularity=hour"), position).await;
    assert_eq!(status, 200);
    let recent: i64 = hourly["totals"].as_array().unwrap().iter().map(|t| t["quantity"].as_i64().unwrap()).sum();
    assert_eq!(recent, 5 + 7 + 100 + 3, "the late event is in its own (old) hour: {hourly}");
    let (status, problem) =
        reader.get_json(&format!("/v1/billing/usage?tenant_id={active}&granularity=week"), position).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("invalid_granularity")));

    // Export: NDJSON with a cursor per line; late and suspended usage is marked.
    let (status, kind, body) = reader.get(&format!("/v1/billing/events?tenant_id={active}"), position).await;
    assert_eq!((status, kind.as_str()), (200, "application/x-ndjson"));
    let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<&str> = lines.iter().map(|l| l["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e8", "s1"]);
    assert_eq!(lines[3]["late"], true);
    assert_eq!(lines[0]["late"], false);
    let (_, _, body) = reader.get(&format!("/v1/billing/events?tenant_id={paused}"), position).await;
    let suspended: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!((suspended["event_id"].as_str(), suspended["tenant_status"].as_str()), (Some("e9"), Some("suspended")));

    // Resuming from a cursor gives exactly the rest.
    let cursor = lines[1]["cursor"].as_str().unwrap();
    let (_, _, rest) = reader.get(&format!("/v1/billing/events?tenant_id={active}&cursor={cursor}"), position).await;
    let rest: Vec<String> = rest
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rest, ["e3", "e8", "s1"]);

    // CSV, with the same rows; a time filter on the usage's timestamp.
    let (status, kind, csv) =
        reader.get(&format!("/v1/billing/events?tenant_id={active}&format=csv&from={}", ago(1)), position).await;
    assert_eq!((status, kind.as_str()), (200, "text/csv; charset=utf-8"));
    let mut rows = csv.lines();
    assert!(rows.next().unwrap().starts_with("cursor,tenant_id,app_id,event_id,event_type,quantity"));
    assert_eq!(rows.count(), 4, "{csv}");
    let (status, _, _) = reader.get(&format!("/v1/billing/events?tenant_id={active}&cursor=%%%"), position).await;
    assert_eq!(status, 400);

    // The tenant's owner reads its own ledger; another tenant's is hidden.
    let (owned, _, _, owner) = tenant_with_owner(&env, &keel, &operator, "billown").await;
    let owner = Caller::new(keel.rest_addr, &owner);
    let (status, _) = owner.get_json(&format!("/v1/billing/usage?tenant_id={owned}"), position).await;
    assert_eq!(status, 200);
    let (status, _) = owner.get_json(&format!("/v1/billing/usage?tenant_id={active}"), position).await;
    assert_eq!(status, 404);
    keel.stop().await;
}

#[tokio::test]
async fn the_grpc_stream_records_thousands_of_events_in_chunks_with_one_summary() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let tenant = provision(&mut tenant_client(keel.grpc_addr).await, &operator, &domain("stream")).await.tenant_id;
    let (_, _, writer) = app_with_key(keel.grpc_addr, &operator, &["billing:write", "billing:read"]).await;
    let mut client = BillingServiceClient::connect(format!("http://{}", keel.grpc_addr)).await.unwrap();
    let now = prost_types::Timestamp { seconds: Utc::now().timestamp(), nanos: 0 };
    let events: Vec<UsageEvent> = (0..2500)
        .map(|i| UsageEvent {
            event_id: if i == 1700 { "g-0".into() } else { format!("g-{i}") },
            tenant_id: tenant.clone(),
            event_type: if i == 2000 { "bad type".into() } else { "api.call".into() },
            quantity: 2,
            timestamp: Some(now),
            properties: None,
        })
        .collect();
    let summary =
        client.ingest_events(authed(futures::stream::iter(events), &writer)).await.expect("ingest").into_inner();
    assert_eq!((summary.accepted, summary.duplicates, summary.rejected), (2498, 1, 1), "{summary:?}");
    let listed: Vec<(i64, &str)> = summary.not_accepted.iter().map(|o| (o.index, o.status.as_str())).collect();
    assert_eq!(listed, [(1700, "duplicate"), (2000, "rejected")]);
    assert_eq!(summary.not_accepted[1].reason, "invalid_event_type");

    let reader = Caller::new(keel.rest_addr, &writer);
    let (status, day) =
        reader.get_json(&format!("/v1/billing/usage?tenant_id={tenant}&granularity=day"), summary.position).await;
    assert_eq!(status, 200, "{day}");
    let total: i64 = day["totals"].as_array().unwrap().iter().map(|t| t["quantity"].as_i64().unwrap()).sum();
    assert_eq!(total, 2498 * 2);

    // Operators do not report usage; a key without billing:write is refused.
    let refused = client.ingest_events(authed(futures::stream::iter(Vec::<UsageEvent>::new()), &operator)).await;
    assert_eq!(error_code(&refused.unwrap_err()), "apps_only");
    let (_, _, flags_only) = app_with_key(keel.grpc_addr, &operator, &["flags:read"]).await;
    let refused = client.ingest_events(authed(futures::stream::iter(Vec::<UsageEvent>::new()), &flags_only)).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
    keel.stop().await;
}

#[tokio::test]
async fn billing_systems_read_schema_valid_cloud_events_from_the_billing_topic() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let tenant_ids = [
        provision(&mut tenants, &operator, &domain("ce")).await.tenant_id,
        provision(&mut tenants, &operator, &domain("ce")).await.tenant_id,
    ];
    let (app_id, _, writer) = app_with_key(keel.grpc_addr, &operator, &["billing:write"]).await;
    let writer = Caller::new(keel.rest_addr, &writer);
    let events: Vec<Value> =
        (0..300).map(|i| usage(&format!("ce-{i}"), &tenant_ids[i % 2], "api.call", i as i64, &ago(0))).collect();
    let (status, answer) = writer.post("/v1/billing/events:batch", json!({ "events": events })).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(300)));
    let (_, answer) = writer.post("/v1/billing/events:batch", json!({ "events": events[..10] })).await;
    assert_eq!(answer["duplicates"].as_u64(), Some(10));

    // Any Kafka client: here librdkafka, as a billing system would, from the beginning.
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", format!("billing-system-{}", key()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&env.billing_topic()]).expect("subscribe");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/keel.billing.v1.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 300 {
        let message = tokio::time::timeout_at(deadline, consumer.recv()).await.expect("all 300 within 60 s").unwrap();
        let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        if let Err(error) = validator.validate(&value) {
            panic!("message does not match schemas/keel.billing.v1.json: {error}\n{value}");
        }
        let key = std::str::from_utf8(message.key().unwrap()).unwrap();
        assert_eq!(key, value["subject"], "the key is the tenant");
        assert_eq!(value["source"], format!("/keel/apps/{app_id}"));
        assert_eq!(value["type"], "io.keel.billing.usage.v1");
        assert_eq!(
            value["data"]["quantity"].as_i64().unwrap(),
            value["id"].as_str().unwrap()[3..].parse::<i64>().unwrap()
        );
        // Deduplicate by (source, id), as the contract says.
        seen.insert((value["source"].to_string(), value["id"].to_string()));
    }
    // A message that breaks the contract would be caught.
    assert!(!validator.is_valid(&json!({ "specversion": "0.3", "id": "x" })));
    keel.stop().await;
}

async fn provision_with_profile(
    client: &mut TenantServiceClient<Channel>,
    operator: &str,
    plan: &str,
    industry: &str,
    region: &str,
) -> String {
    let mut request = crate::support::provision_request(&domain("roll"));
    (request.plan, request.industry, request.region) = (plan.into(), industry.into(), region.into());
    client.provision_tenant(authed(request, operator)).await.expect("provision").into_inner().tenant_id
}

async fn set_rollup(client: &mut BillingServiceClient<Channel>, operator: &str, event_type: &str, allow: bool) -> i64 {
    let request = RollupEventTypeRequest { event_type: event_type.into(), idempotency_key: key() };
    let response = if allow {
        client.allow_rollup_event_type(authed(request, operator)).await
    } else {
        client.disallow_rollup_event_type(authed(request, operator)).await
    };
    response.expect("allowlist change").into_inner().position
}

/// (event type, plan, industry, region) → (quantity, events), summed over buckets.
fn cells(rollups: &Value) -> BTreeMap<(String, String, String, String), (i64, i64)> {
    let mut cells = BTreeMap::new();
    for row in rollups["rows"].as_array().expect("rows") {
        let text = |k: &str| row[k].as_str().unwrap_or("").to_string();
        let cell: &mut (i64, i64) =
            cells.entry((text("event_type"), text("plan"), text("industry"), text("region"))).or_default();
        cell.0 += row["quantity"].as_i64().unwrap();
        cell.1 += row["events"].as_i64().unwrap();
    }
    cells
}

#[tokio::test]
async fn only_allowlisted_usage_reaches_the_rollups_and_only_operators_can_read_them() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let mut billing = BillingServiceClient::connect(format!("http://{}", keel.grpc_addr)).await.unwrap();
    let fintech = provision_with_profile(&mut tenants, &operator, "pro", "fintech", "eu-west").await;
    let retail = provision_with_profile(&mut tenants, &operator, "free", "retail", "").await;
    set_rollup(&mut billing, &operator, "api.call", true).await;
    let listed = billing.list_rollup_allowlist(authed(ListRollupAllowlistRequest {}, &operator)).await.unwrap();
    let listed = listed.into_inner().entries;
    assert_eq!(listed.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(), ["api.call"]);
    assert!(listed[0].added_by.starts_with("operator:"));

    let (_, _, writer) = app_with_key(keel.grpc_addr, &operator, &["billing:write"]).await;
    let writer = Caller::new(keel.rest_addr, &writer);
    let now = ago(0);
    let batch = json!({ "events": [
        usage("r1", &fintech, "api.call", 10, &now),
        usage("r2", &fintech, "api.call", 5, &now),
        usage("r3", &retail, "api.call", 7, &now),
        usage("r4", &fintech, "storage.gb", 1000, &now),
    ]});
    let (_, answer) = writer.post("/v1/billing/events:batch", batch).await;
    assert_eq!(answer["accepted"], 4, "{answer}");

    // A plan change, then more usage: it counts under the new plan.
    let change = keel_gateway::proto::ChangePlanRequest {
        tenant_id: fintech.clone(),
        plan: "enterprise".into(),
        idempotency_key: key(),
    };
    tenants.change_plan(authed(change, &operator)).await.expect("plan change");
    // Off the allowlist: usage recorded from now on is not counted.
    set_rollup(&mut billing, &operator, "api.call", false).await;
    let (_, answer) = writer
        .post("/v1/billing/events:batch", json!({ "events": [usage("r5", &retail, "api.call", 1000, &now)] }))
        .await;
    assert_eq!(answer["accepted"], 1);
    set_rollup(&mut billing, &operator, "api.call", true).await;
    let (_, answer) = writer
        .post("/v1/billing/events:batch", json!({ "events": [usage("r6", &fintech, "api.call", 3, &now), usage("r7", &retail, "api.call", 2, &now)] }))
        .await;
    let position = answer["position"].as_i64().unwrap();

    let ops = Caller::new(keel.rest_addr, &operator);
    let window = format!("from={}&to={}", ago(2), ago(-1));
    let (status, hourly) =
        ops.get_json(&format!("/v1/control-plane/billing/rollups?granularity=hour&{window}"), position).await;
    assert_eq!(status, 200, "{hourly}");
    let cell = |t: &str, p: &str, i: &str, r: &str| (t.to_string(), p.to_string(), i.to_string(), r.to_string());
    let expected = BTreeMap::from([
        (cell("api.call", "pro", "fintech", "eu-west"), (15, 2)),
        (cell("api.call", "enterprise", "fintech", "eu-west"), (3, 1)),
        (cell("api.call", "free", "retail", ""), (9, 2)),
    ]);
    assert_eq!(cells(&hourly), expected, "{hourly}");
    let (_, minutes) = ops.get_json(&format!("/v1/control-plane/billing/rollups?{window}"), position).await;
    assert_eq!(minutes["granularity"], "minute");
    assert_eq!(cells(&minutes), expected);

    // Nobody else: not auditors, not tenant owners, not apps; and not in the database either.
    env.platform_user("audit@keel.example.com", crate::support::PASSWORD, "auditor").await;
    let (auditor, _) = crate::support::Rest::new(keel.rest_addr)
        .tokens("audit@keel.example.com", crate::support::PASSWORD, None)
        .await;
    let (status, _) = Caller::new(keel.rest_addr, &auditor).get_json("/v1/control-plane/billing/rollups", 0).await;
    assert_eq!(status, 403);
    let (_, _, _, owner) = tenant_with_owner(&env, &keel, &operator, "rollown").await;
    let (status, _) = Caller::new(keel.rest_addr, &owner).get_json("/v1/control-plane/billing/rollups", 0).await;
    assert_eq!(status, 403);
    let refused = billing.list_rollup_allowlist(authed(ListRollupAllowlistRequest {}, &auditor)).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);

    let pool = env.app_pool().await;
    let count = |setup: &'static str| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            sqlx::raw_sql(setup).execute(&mut *tx).await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_billing_rollups.rollup_hour")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            let dims: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_billing_rollups.tenant_dims")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            n + dims
        }
    };
    let tenant_scope = format!("SELECT set_config('keel.tenant_id', '{fintech}', true)");
    let tenant_scope: &'static str = Box::leak(tenant_scope.into_boxed_str());
    assert_eq!(count(tenant_scope).await, 0, "a tenant scope reads no rollup row");
    assert_eq!(count("SELECT set_config('keel.scope', 'platform', true)").await, 0, "nor does a bare platform scope");
    assert_eq!(
        count("SELECT set_config('keel.scope', 'platform', true), set_config('keel.platform_role', 'auditor', true)")
            .await,
        0
    );
    assert!(
        count("SELECT set_config('keel.scope', 'platform', true), set_config('keel.platform_role', 'operator', true)")
            .await
            > 0
    );
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(
        "SELECT set_config('keel.scope', 'platform', true), set_config('keel.platform_role', 'operator', true)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let changed =
        sqlx::query("UPDATE rm_billing_rollups.rollup_hour SET quantity = 0").execute(&mut *tx).await.unwrap();
    assert_eq!(changed.rows_affected(), 0, "operators read, never write");
    keel.stop().await;
}

/// Posts `batch` to whichever gateway is current until one acknowledges it (a crash
/// in between is the client's problem to retry, with the same event ids).
async fn post_until_acknowledged(
    http: &reqwest::Client,
    gateway: &tokio::sync::watch::Receiver<String>,
    secret: &str,
    batch: &Value,
) -> Value {
    loop {
        let base = gateway.borrow().clone();
        let sent = http
            .post(format!("{base}/v1/billing/events:batch"))
            .bearer_auth(secret)
            .timeout(Duration::from_secs(10))
            .json(batch)
            .send()
            .await;
        if let Ok(response) = sent
            && response.status().is_success()
            && let Ok(answer) = response.json::<Value>().await
        {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_acknowledged_event_is_in_the_ledger_exactly_once_after_gateway_and_projector_crashes() {
    use keel_gateway::server::Workers;
    let env = TestEnv::new().await;
    let background = Workers { relay: true, projectors: true, sweeper: false };
    let front = Workers { relay: false, projectors: false, sweeper: false };
    let mut workers = env.start_with(env.settings(), background).await;
    let mut gateway = env.start_with(env.settings(), front).await;
    let operator = env.operator_token().await;
    let tenant = provision(&mut tenant_client(gateway.grpc_addr).await, &operator, &domain("crash")).await.tenant_id;
    let (_, _, secret) = app_with_key(gateway.grpc_addr, &operator, &["billing:write"]).await;

    let (address, current) = tokio::sync::watch::channel(format!("http://{}", gateway.rest_addr));
    let (batches, per_batch) = (100usize, 250usize);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = done.clone();
    let client = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut acknowledged = 0usize;
        let mut position = 0;
        for b in 0..batches {
            let events: Vec<Value> = (0..per_batch)
                .map(|i| usage(&format!("c-{b}-{i}"), &tenant, "api.call", ((b + i) % 7 + 1) as i64, &ago(0)))
                .collect();
            let answer = post_until_acknowledged(&http, &current, &secret, &json!({ "events": events })).await;
            let accepted = answer["accepted"].as_u64().unwrap() + answer["duplicates"].as_u64().unwrap();
            assert_eq!(accepted as usize, per_batch, "every event acknowledged: {answer}");
            acknowledged += per_batch;
            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            position = position.max(answer["position"].as_i64().unwrap());
        }
        (acknowledged, position)
    });

    // Mid-ingestion: the relay and projectors die (a crash, no clean stop), then come back.
    let ledger = env.owner_pool().await;
    let rows = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rm_billing_ledger.usage_events")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert!(keel_tests::eventually(Duration::from_secs(60), || async { rows(ledger.clone()).await > 2_000 }).await);
    assert!(!client.is_finished(), "the workers crash mid-ingestion");
    workers.kill().await;
    workers = env.start_with(env.settings(), background).await;
    // Then the gateway dies; clients move to a new one and retry what was not acknowledged.
    let halfway = || std::future::ready(done.load(std::sync::atomic::Ordering::Relaxed) >= batches / 2);
    assert!(keel_tests::eventually(Duration::from_secs(60), halfway).await);
    assert!(!client.is_finished(), "the gateway crashes mid-ingestion");
    gateway.kill().await;
    gateway = env.start_with(env.settings(), front).await;
    address.send(format!("http://{}", gateway.rest_addr)).unwrap();

    let (acknowledged, position) = client.await.unwrap();
    let pool = env.app_pool().await;
    keel_tests::wait_projected(&pool, "billing_ledger", &env.topic, position, Duration::from_secs(60)).await;
    let (count, distinct, quantity): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (app_id, event_id)), COALESCE(sum(quantity), 0)::bigint
         FROM rm_billing_ledger.usage_events",
    )
    .fetch_one(&ledger)
    .await
    .unwrap();
    let expected: i64 = (0..batches).flat_map(|b| (0..per_batch).map(move |i| ((b + i) % 7 + 1) as i64)).sum();
    assert_eq!((count, distinct), (acknowledged as i64, acknowledged as i64), "none lost, none doubled");
    assert_eq!(quantity, expected);
    let daily: i64 = sqlx::query_scalar("SELECT COALESCE(sum(quantity), 0)::bigint FROM rm_billing_ledger.usage_daily")
        .fetch_one(&ledger)
        .await
        .unwrap();
    assert_eq!(daily, expected, "the totals count each event once");
    gateway.stop().await;
    workers.stop().await;
}
