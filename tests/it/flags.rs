//! Flags, entitlements and their delivery to apps end to end: gRPC FlagService, OFREP
//! (bulk, single, ETag/304, errors, SSE), the REST snapshot and entitlements, and a
//! stock OpenFeature SDK with its OFREP provider.

use std::time::{Duration, Instant};

use keel_gateway::proto::flag_service_client::FlagServiceClient;
use keel_gateway::proto::{
    ChangePlanRequest, DefineFlagRequest, SetEntitlementOverrideRequest, SetTenantFlagRequest, SuspendTenantRequest,
};
use keel_tests::{TestEnv, eventually};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::apps::app_with_key;
use crate::support::{authed, domain, error_code, key, provision, pv, tenant_client};

async fn flag_client(addr: std::net::SocketAddr) -> FlagServiceClient<Channel> {
    FlagServiceClient::connect(format!("http://{addr}")).await.expect("connect gRPC")
}

async fn define(
    flags: &mut FlagServiceClient<Channel>,
    operator: &str,
    key: &str,
    kind: &str,
    default: Value,
    plans: Value,
) {
    let plan_defaults =
        plans.as_object().cloned().unwrap_or_default().into_iter().map(|(plan, v)| (plan, pv(v))).collect();
    let request = DefineFlagRequest {
        key: key.into(),
        r#type: kind.into(),
        default_value: Some(pv(default)),
        plan_defaults,
        description: format!("{key} for tests"),
        idempotency_key: self::key(),
    };
    flags.define_flag(authed(request, operator)).await.expect("define flag");
}

async fn set_flag(
    flags: &mut FlagServiceClient<Channel>,
    operator: &str,
    tenant: &str,
    key: &str,
    value: Value,
) -> i64 {
    let request = SetTenantFlagRequest {
        tenant_id: tenant.into(),
        key: key.into(),
        value: Some(pv(value)),
        idempotency_key: self::key(),
    };
    flags.set_tenant_flag(authed(request, operator)).await.expect("set flag").into_inner().position
}

/// An OFREP client with an API key.
struct Ofrep {
    http: reqwest::Client,
    base: String,
    secret: String,
}

impl Ofrep {
    async fn post(
        &self,
        path: &str,
        body: Value,
        if_none_match: Option<&str>,
    ) -> (u16, Option<String>, Value, reqwest::header::HeaderMap) {
        let mut request = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.secret).json(&body);
        if let Some(tag) = if_none_match {
            request = request.header("if-none-match", tag);
        }
        let response = request.send().await.expect("POST");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let etag = headers.get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        (status, etag, response.json().await.unwrap_or_default(), headers)
    }

    async fn bulk(&self, tenant: &str, if_none_match: Option<&str>) -> (u16, Option<String>, Value) {
        let (status, etag, body, _) = self
            .post("/ofrep/v1/evaluate/flags", json!({ "context": { "targetingKey": tenant } }), if_none_match)
            .await;
        (status, etag, body)
    }
}

fn flag<'a>(bulk: &'a Value, key: &str) -> &'a Value {
    bulk["flags"].as_array().and_then(|flags| flags.iter().find(|f| f["key"] == key)).unwrap_or(&Value::Null)
}

/// A Keel with one pro tenant, flags defined, and a flags:read key.
struct Setup {
    _env: TestEnv,
    keel: keel_gateway::server::Running,
    operator: String,
    tenant: String,
    flags: FlagServiceClient<Channel>,
    ofrep: Ofrep,
}

async fn setup(prefix: &str) -> Setup {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let tenant = provision(&mut tenant_client(keel.grpc_addr).await, &operator, &domain(prefix)).await.tenant_id;
    let mut flags = flag_client(keel.grpc_addr).await;
    define(&mut flags, &operator, "beta", "boolean", json!(false), json!({ "pro": true })).await;
    define(&mut flags, &operator, "theme", "string", json!("light"), json!({})).await;
    define(&mut flags, &operator, "max-widgets", "number", json!(10), json!({ "enterprise": 1000 })).await;
    define(&mut flags, &operator, "layout", "object", json!({ "columns": 2 }), json!({})).await;
    define(&mut flags, &operator, "banner", "string", json!("none"), json!({})).await;
    let (_, _, secret) = app_with_key(keel.grpc_addr, &operator, &["flags:read"]).await;
    let ofrep = Ofrep { http: reqwest::Client::new(), base: format!("http://{}", keel.rest_addr), secret };
    let ready = eventually(Duration::from_secs(10), || async {
        let (status, _, body) = ofrep.bulk(&tenant, None).await;
        status == 200 && body["flags"].as_array().is_some_and(|f| f.len() == 5)
    })
    .await;
    assert!(ready, "the tenant's five flags are served");
    Setup { _env: env, keel, operator, tenant, flags, ofrep }
}

#[tokio::test]
async fn ofrep_serves_effective_values_with_etags_and_spec_errors() {
    let Setup { keel, operator, tenant, mut flags, ofrep, .. } = setup("ofrep").await;
    let (status, etag, bulk) = ofrep.bulk(&tenant, None).await;
    assert_eq!(status, 200);
    assert_eq!(flag(&bulk, "beta")["value"], json!(true), "pro plan default: {bulk}");
    assert_eq!(flag(&bulk, "beta")["reason"], "TARGETING_MATCH");
    assert_eq!(flag(&bulk, "theme")["value"], "light");
    assert_eq!(flag(&bulk, "theme")["reason"], "DEFAULT");
    assert_eq!(flag(&bulk, "layout")["value"], json!({ "columns": 2 }));
    assert_eq!(bulk["eventStreams"][0]["type"], "sse");
    let etag = etag.expect("ETag");
    assert_eq!(ofrep.bulk(&tenant, Some(&etag)).await.0, 304, "unchanged: 304");

    // A tenant's own value wins, and changes the ETag.
    set_flag(&mut flags, &operator, &tenant, "theme", json!("dark")).await;
    let changed =
        eventually(Duration::from_secs(5), || async { ofrep.bulk(&tenant, Some(&etag)).await.0 == 200 }).await;
    assert!(changed, "a change answers 200 to the old ETag");
    let (_, new_etag, bulk) = ofrep.bulk(&tenant, None).await;
    assert_eq!(flag(&bulk, "theme")["value"], "dark");
    assert_ne!(new_etag.as_deref(), Some(etag.as_str()));

    // Single evaluation, both credential headers, and the spec's errors.
    let context = json!({ "context": { "targetingKey": tenant } });
    let (status, _, one, _) = ofrep.post("/ofrep/v1/evaluate/flags/theme", context.clone(), None).await;
    assert_eq!((status, one["key"].as_str(), one["value"].as_str()), (200, Some("theme"), Some("dark")));
    let via_header = ofrep
        .http
        .post(format!("{}/ofrep/v1/evaluate/flags/beta", ofrep.base))
        .header("x-api-key", &ofrep.secret)
        .json(&context)
        .send()
        .await
        .unwrap();
    assert_eq!(via_header.status().as_u16(), 200, "X-API-Key works too");
    let (status, _, missing, _) = ofrep.post("/ofrep/v1/evaluate/flags/nope", context.clone(), None).await;
    assert_eq!(
        (status, missing["errorCode"].as_str(), missing["key"].as_str()),
        (404, Some("FLAG_NOT_FOUND"), Some("nope"))
    );
    let (status, _, no_key, _) = ofrep.post("/ofrep/v1/evaluate/flags/beta", json!({ "context": {} }), None).await;
    assert_eq!((status, no_key["errorCode"].as_str()), (400, Some("TARGETING_KEY_MISSING")));
    let (status, _, bad, _) =
        ofrep.post("/ofrep/v1/evaluate/flags", json!({ "context": { "targetingKey": "acme" } }), None).await;
    assert_eq!((status, bad["errorCode"].as_str()), (400, Some("INVALID_CONTEXT")));
    let unauthenticated =
        ofrep.http.post(format!("{}/ofrep/v1/evaluate/flags", ofrep.base)).json(&context).send().await.unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    assert_eq!(unauthenticated.headers()["content-type"], "application/problem+json");

    // Bad commands change nothing.
    let wrong_type = SetTenantFlagRequest {
        tenant_id: tenant.clone(),
        key: "theme".into(),
        value: Some(pv(json!(5))),
        idempotency_key: key(),
    };
    let err = flags.set_tenant_flag(authed(wrong_type, &operator)).await.unwrap_err();
    assert_eq!((err.code(), error_code(&err).as_str()), (Code::InvalidArgument, "type_mismatch"));
    let unknown = SetTenantFlagRequest {
        tenant_id: tenant.clone(),
        key: "ghost".into(),
        value: Some(pv(json!(true))),
        idempotency_key: key(),
    };
    let err = flags.set_tenant_flag(authed(unknown, &operator)).await.unwrap_err();
    assert_eq!((err.code(), error_code(&err).as_str()), (Code::NotFound, "flag_not_found"));
    let retype = DefineFlagRequest {
        key: "theme".into(),
        r#type: "number".into(),
        default_value: Some(pv(json!(1))),
        plan_defaults: Default::default(),
        description: String::new(),
        idempotency_key: key(),
    };
    let err = flags.define_flag(authed(retype, &operator)).await.unwrap_err();
    assert_eq!(error_code(&err), "flag_type_changed");

    // A suspended tenant's evaluation is a documented error, never stale flags.
    let suspend = SuspendTenantRequest { tenant_id: tenant.clone(), reason: String::new(), idempotency_key: key() };
    tenant_client(keel.grpc_addr).await.suspend_tenant(authed(suspend, &operator)).await.unwrap();
    let refused = eventually(Duration::from_secs(5), || async {
        let (status, _, body, headers) =
            ofrep.post("/ofrep/v1/evaluate/flags", json!({ "context": { "targetingKey": tenant } }), None).await;
        status == 400
            && body["errorCode"] == "GENERAL"
            && headers.get("keel-error-code").is_some_and(|v| v == "tenant_suspended")
    })
    .await;
    assert!(refused, "suspended tenants get tenant_suspended");
    let snapshot = ofrep
        .http
        .get(format!("{}/v1/tenants/{tenant}/flags", ofrep.base))
        .bearer_auth(&ofrep.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(snapshot.status().as_u16(), 422);
    keel.stop().await;
}

#[tokio::test]
async fn entitlements_follow_the_plan_and_overrides_with_their_source() {
    let Setup { keel, operator, tenant, mut flags, ofrep, .. } = setup("ents").await;
    let http = &ofrep.http;
    let entitlements = |position: i64| {
        let url = format!("{}/v1/control-plane/tenants/{tenant}/entitlements", ofrep.base);
        let operator = operator.clone();
        async move {
            let response = http
                .get(url)
                .bearer_auth(&operator)
                .header("x-keel-min-position", position.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
            let body: Value = response.json().await.unwrap();
            body["entitlements"].as_array().cloned().unwrap_or_default()
        }
    };
    let find = |items: &[Value], key: &str| items.iter().find(|e| e["key"] == key).cloned().unwrap_or_default();
    let items = entitlements(0).await;
    let aws = find(&items, "connectors.aws_discovery");
    assert_eq!(
        (aws["value"].clone(), aws["source"].as_str(), aws["kind"].as_str()),
        (json!(true), Some("plan"), Some("capability"))
    );
    assert!(aws["changed_by"].as_str().is_some_and(|a| a.starts_with("operator:")), "{aws}");
    assert_eq!(find(&items, "seats")["value"], json!(50));

    let request = SetEntitlementOverrideRequest {
        tenant_id: tenant.clone(),
        key: "seats".into(),
        value: Some(pv(json!(500))),
        idempotency_key: key(),
    };
    let position = flags.set_entitlement_override(authed(request, &operator)).await.unwrap().into_inner().position;
    let items = entitlements(position).await;
    let seats = find(&items, "seats");
    assert_eq!((seats["value"].clone(), seats["source"].as_str()), (json!(500), Some("override")));

    let change = ChangePlanRequest { tenant_id: tenant.clone(), plan: "free".into(), idempotency_key: key() };
    let position =
        tenant_client(keel.grpc_addr).await.change_plan(authed(change, &operator)).await.unwrap().into_inner().position;
    let items = entitlements(position).await;
    assert_eq!(
        find(&items, "connectors.aws_discovery")["value"],
        json!(false),
        "downgrade removes the capability at once"
    );
    assert_eq!(find(&items, "seats")["value"], json!(500), "the override survives the plan change");

    let bad = SetEntitlementOverrideRequest {
        tenant_id: tenant.clone(),
        key: "seats".into(),
        value: Some(pv(json!(true))),
        idempotency_key: key(),
    };
    let err = flags.set_entitlement_override(authed(bad, &operator)).await.unwrap_err();
    assert_eq!(error_code(&err), "invalid_entitlement_value");

    // Apps read entitlements with flags:read; the REST snapshot carries ETags too.
    let by_app = http
        .get(format!("{}/v1/control-plane/tenants/{tenant}/entitlements", ofrep.base))
        .bearer_auth(&ofrep.secret)
        .send()
        .await
        .unwrap();
    assert_eq!(by_app.status().as_u16(), 200);
    let snapshot =
        http.get(format!("{}/v1/tenants/{tenant}/flags", ofrep.base)).bearer_auth(&ofrep.secret).send().await.unwrap();
    let etag = snapshot.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = snapshot.json().await.unwrap();
    assert_eq!(body["checksum"].as_str().map(str::len), Some(64));
    assert!(body["version"].as_i64().is_some_and(|v| v > 0));
    let again = http
        .get(format!("{}/v1/tenants/{tenant}/flags", ofrep.base))
        .bearer_auth(&ofrep.secret)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
    keel.stop().await;
}

/// Reads SSE `data:` payloads from a streaming response.
async fn next_event(response: &mut reqwest::Response, buffer: &mut String) -> Option<Value> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let data: String = frame.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
            if !data.is_empty() {
                return serde_json::from_str(&data).ok();
            }
            continue;
        }
        let chunk = response.chunk().await.ok()??;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn flag_changes_reach_sse_clients_and_forged_stream_tokens_are_refused() {
    let Setup { keel, operator, tenant, mut flags, ofrep, .. } = setup("sse").await;
    let (_, _, bulk) = ofrep.bulk(&tenant, None).await;
    let uri = bulk["eventStreams"][0]["endpoint"]["requestUri"].as_str().expect("advertised stream").to_string();
    assert!(uri.contains("token="), "the advertised stream carries its own credential: {uri}");
    // Like a browser's EventSource: no headers.
    let mut stream = reqwest::get(format!("{}{uri}", ofrep.base)).await.expect("open stream");
    assert_eq!(stream.status().as_u16(), 200);
    let mut buffer = String::new();
    let mut latencies = Vec::new();
    for i in 0..20 {
        let sent = Instant::now();
        set_flag(&mut flags, &operator, &tenant, "banner", json!(format!("sale-{i}"))).await;
        let event = tokio::time::timeout(Duration::from_secs(5), next_event(&mut stream, &mut buffer))
            .await
            .expect("the change arrives")
            .expect("an event");
        latencies.push(sent.elapsed());
        assert_eq!(event["type"], "refetchEvaluation");
        let (status, etag, body) = ofrep.bulk(&tenant, None).await;
        assert_eq!(
            (status, flag(&body, "banner")["value"].clone()),
            (200, json!(format!("sale-{i}"))),
            "re-fetch sees it"
        );
        assert_eq!(event["etag"].as_str(), etag.as_deref(), "the event names the new ETag");
    }
    latencies.sort();
    println!("SSE delivery over 20 changes: p50 {:?}, max {:?}", latencies[10], latencies[19]);

    // A tampered token is refused.
    let forged = uri.replace("token=", "token=x");
    assert_eq!(reqwest::get(format!("{}{forged}", ofrep.base)).await.unwrap().status().as_u16(), 401);
    keel.stop().await;
}

/// Runs `tests/ofrep-sdk/evaluate.mjs` with `vars`; returns the child once it printed READY.
async fn sdk(
    vars: &[(&str, String)],
) -> (tokio::process::Child, tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ofrep-sdk");
    assert!(dir.join("node_modules").exists(), "run `npm ci` in tests/ofrep-sdk (make test does)");
    let mut child = tokio::process::Command::new("node")
        .arg("evaluate.mjs")
        .current_dir(&dir)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line == "READY" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(ready, "the SDK evaluated the first value");
    (child, lines)
}

#[tokio::test]
async fn a_stock_openfeature_sdk_evaluates_keel_flags_and_sees_changes_without_a_restart() {
    let Setup { keel, operator, tenant, mut flags, ofrep, .. } = setup("sdk").await;
    let common = |flag: &str, first: &str, changed: &str, mode: &str| {
        vec![
            ("KEEL_URL", ofrep.base.clone()),
            ("KEEL_API_KEY", ofrep.secret.clone()),
            ("TENANT_ID", tenant.clone()),
            ("FLAG_KEY", flag.to_string()),
            ("EXPECT_FIRST", first.to_string()),
            ("EXPECT_CHANGED", changed.to_string()),
            ("TIMEOUT_MS", "20000".to_string()),
            ("OFREP_MODE", mode.to_string()),
            // Web mode: no polling, so only the SSE stream can bring the change.
            ("OFREP_POLL_MS", "0".to_string()),
        ]
    };
    // The server SDK evaluates remotely each time; the web SDK caches the bulk answer and
    // re-fetches when Keel's SSE stream says so.
    let (mut server_sdk, _) = sdk(&common("beta", "true", "false", "server")).await;
    let (mut web_sdk, _) = sdk(&common("theme", "\"light\"", "\"dark\"", "web")).await;
    set_flag(&mut flags, &operator, &tenant, "beta", json!(false)).await;
    set_flag(&mut flags, &operator, &tenant, "theme", json!("dark")).await;
    for (name, child) in [("server", &mut server_sdk), ("web", &mut web_sdk)] {
        let status = tokio::time::timeout(Duration::from_secs(25), child.wait()).await.expect("SDK finishes").unwrap();
        assert!(status.success(), "the {name} SDK saw the change");
    }
    keel.stop().await;
}

#[tokio::test]
async fn a_tenant_scoped_flag_read_never_sees_another_tenants_row() {
    use keel_projections::flag_snapshots;
    use keel_projections::tenant_registry::Scope;

    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let a = provision(&mut tenants, &operator, &domain("rls-a")).await;
    let b = provision(&mut tenants, &operator, &domain("rls-b")).await;
    let newest = a.position.max(b.position);
    keel_tests::wait_projected(&keel.pool, flag_snapshots::NAME, &env.topic, newest, Duration::from_secs(60)).await;

    // The runtime role, as the gateway connects: row-level security decides, not the code.
    let pool = env.app_pool().await;
    let scope_a = Scope::Tenant(a.tenant_id.clone());
    let own = flag_snapshots::tenant_row(&pool, &scope_a, &a.tenant_id).await.expect("read");
    assert_eq!(own.map(|r| r.tenant_id), Some(a.tenant_id.clone()), "a tenant reads its own row");
    let other = flag_snapshots::tenant_row(&pool, &scope_a, &b.tenant_id).await.expect("read");
    assert!(other.is_none(), "tenant A's scope must not see tenant B's flags even when asked for them");
    let platform = flag_snapshots::tenant_row(&pool, &Scope::Platform, &b.tenant_id).await.expect("read");
    assert!(platform.is_some(), "the platform scope sees every tenant (so the check above can fail)");

    // OFREP with a tenant owner's token reads that way too: its own tenant's flags, and
    // another tenant's look like a tenant that does not exist.
    let (owned, _, _, owner) = crate::support::tenant_with_owner(&env, &keel, &operator, "rls-own").await;
    let ofrep = |tenant: &str| {
        let (url, owner, tenant) =
            (format!("http://{}/ofrep/v1/evaluate/flags", keel.rest_addr), owner.clone(), tenant.to_string());
        async move {
            let answer = reqwest::Client::new()
                .post(url)
                .bearer_auth(owner)
                .json(&json!({ "context": { "targetingKey": tenant } }))
                .send()
                .await
                .expect("ofrep");
            (answer.status().as_u16(), answer.json::<Value>().await.unwrap_or_default())
        }
    };
    let served = eventually(Duration::from_secs(30), || async { ofrep(&owned).await.0 == 200 }).await;
    assert!(served, "the owner reads its own tenant's flags over OFREP: {:?}", ofrep(&owned).await);
    let (status, body) = ofrep(&b.tenant_id).await;
    assert_eq!((status, body["errorCode"].as_str()), (400, Some("INVALID_CONTEXT")), "{body}");
    keel.stop().await;
}
