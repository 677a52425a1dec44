//! The audit trail end to end: every gRPC command recorded on success and on refusal,
//! apps' own records (idempotent), the views and the CSV export, signed checkpoints,
//! and `keel audit verify` catching an edited, deleted or reordered record.

use std::time::Duration;

use keel_gateway::proto::{ChangePlanRequest, ReactivateTenantRequest, SuspendTenantRequest};
use keel_tests::{TestEnv, eventually};
use serde_json::{Value, json};
use tonic::Code;

use crate::apps::app_with_key;
use crate::billing::Caller;
use crate::support::{PASSWORD, Rest, authed, domain, key, provision, tenant_client, tenant_with_owner};

/// Runs the built `keel` binary: (success, stdout, stderr).
fn keel_cli(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let exe = std::env::current_exe().expect("test binary");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("keel");
    let output = std::process::Command::new(&bin)
        .args(args)
        .env("KEEL_KAFKA_BROKERS", &env.brokers)
        .env("KEEL_EVENTS_TOPIC", &env.topic)
        .output()
        .expect("run keel");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[tokio::test]
async fn commands_and_refusals_are_in_a_verifiable_signed_trail_that_catches_tampering() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let tenant = provision(&mut tenants, &operator, &domain("aud")).await.tenant_id;
    let change = ChangePlanRequest { tenant_id: tenant.clone(), plan: "enterprise".into(), idempotency_key: key() };
    tenants.change_plan(authed(change, &operator)).await.expect("plan change");
    // Refusals: bad input, a state that forbids it, no credential at all.
    let bad = ChangePlanRequest { tenant_id: tenant.clone(), plan: "platinum".into(), idempotency_key: key() };
    assert_eq!(tenants.change_plan(authed(bad, &operator)).await.unwrap_err().code(), Code::InvalidArgument);
    let active = ReactivateTenantRequest { tenant_id: tenant.clone(), idempotency_key: key() };
    assert_eq!(
        tenants.reactivate_tenant(authed(active, &operator)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let anonymous = SuspendTenantRequest { tenant_id: tenant.clone(), reason: "x".into(), idempotency_key: key() };
    assert_eq!(tenants.suspend_tenant(tonic::Request::new(anonymous)).await.unwrap_err().code(), Code::Unauthenticated);
    // A tenant owner reaching for another tenant.
    let (owned, _, _, owner) = tenant_with_owner(&env, &keel, &operator, "audown").await;
    let cross = SuspendTenantRequest { tenant_id: tenant.clone(), reason: "x".into(), idempotency_key: key() };
    assert_eq!(tenants.suspend_tenant(authed(cross, &owner)).await.unwrap_err().code(), Code::NotFound);

    // An app sends its own records: once, a retry is a duplicate, bad ones are refused.
    let (_, _, writer) = app_with_key(keel.grpc_addr, &operator, &["audit:write"]).await;
    let app = Caller::new(keel.rest_addr, &writer);
    let record = json!({ "event_id": "doc-1", "timestamp": "2026-11-22T10:00:00Z", "tenant_id": tenant,
        "actor_id": "alice", "event_type": "document.delete", "resource_id": "doc/42", "outcome": "success",
        "client_address": "203.0.113.9" });
    let (status, first) = app.post("/v1/audit/events", record.clone()).await;
    assert_eq!((status, first["status"].as_str()), (201, Some("accepted")), "{first}");
    let (status, again) = app.post("/v1/audit/events", record.clone()).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")));
    let batch = json!({ "events": [record, { "event_id": "doc-2", "timestamp": "2026-11-22T10:01:00Z",
        "actor_id": "bob", "event_type": "Not Valid", "resource_id": "doc/43", "outcome": "failure" }] });
    let (status, answer) = app.post("/v1/audit/events:batch", batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["status"], "duplicate");
    assert_eq!(
        (answer["results"][1]["status"].as_str(), answer["results"][1]["reason"].as_str()),
        (Some("rejected"), Some("invalid_event_type"))
    );
    let position = first["position"].as_i64().unwrap();

    // Auditors see everything: successes and refusals with their reason and context.
    env.platform_user("audit@keel.example.com", PASSWORD, "auditor").await;
    let (auditor, _) = Rest::new(keel.rest_addr).tokens("audit@keel.example.com", PASSWORD, None).await;
    let auditor = Caller::new(keel.rest_addr, &auditor);
    let (status, page) = auditor.get_json("/v1/audit/events?limit=1000", position).await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    let (_, own) = auditor.get_json(&format!("/v1/audit/events?tenant_id={tenant}&limit=1000"), position).await;
    assert!(own["items"].as_array().unwrap().iter().all(|i| i["record"]["tenant_id"] == tenant.as_str()));
    let has = |action: &str, outcome: &str, reason: Option<&str>| {
        items.iter().any(|i| {
            i["record"]["action"] == action
                && i["record"]["outcome"] == outcome
                && reason.is_none_or(|r| i["record"]["reason"] == r)
        })
    };
    assert!(has("plan.change", "success", None));
    assert!(has("plan.change", "failure", Some("invalid_plan")));
    assert!(has("tenant.reactivate", "failure", None));
    assert!(has("tenant.suspend", "failure", Some("unauthenticated")));
    assert!(has("tenant.suspend", "failure", Some("not_found")), "the cross-tenant attempt: {page}");
    assert!(has("document.delete", "success", None));
    let change = items.iter().find(|i| i["record"]["action"] == "plan.change" && i["record"]["outcome"] == "success");
    let change = &change.expect("the plan change")["record"]["metadata"]["changes"][0];
    assert_eq!(
        (change["event_type"].as_str(), change["payload"]["from"].as_str(), change["payload"]["to"].as_str()),
        (Some("tenant.plan_changed"), Some("pro"), Some("enterprise")),
        "previous values: {change}"
    );
    // Provisioning is filed in the new tenant's own chain, so an auditor filtering by
    // the tenant sees its creation (what it changed comes from the same commit).
    let own_items = own["items"].as_array().unwrap();
    let provision = own_items.iter().find(|i| i["record"]["action"] == "tenant.provision");
    let provision = provision.expect("the tenant's creation is in its own trail");
    assert!(
        provision["record"]["metadata"]["changes"].as_array().is_some_and(|c| !c.is_empty()),
        "what provisioning changed: {provision}"
    );
    assert_eq!(provision["record"]["outcome"], "success");
    assert_eq!(provision["record"]["actor_type"], "operator");
    assert!(provision["record"]["metadata"]["client_address"].as_str().is_some_and(|a| a == "127.0.0.1"));
    assert!(provision["record"]["metadata"]["correlation_id"].is_string());
    let text = page.to_string();
    assert!(!text.contains("keel_op_") && !text.contains("Bearer") && !text.contains(PASSWORD), "no secrets");
    let (_, failures) =
        auditor.get_json(&format!("/v1/audit/events?tenant_id={tenant}&outcome=failure&limit=1000"), position).await;
    assert!(failures["items"].as_array().unwrap().iter().all(|i| i["record"]["outcome"] == "failure"));

    // Sign-ins are recorded too: who, from where, and why one was refused (never the e-mail address).
    let (status, _) = Rest::new(keel.rest_addr).login("nobody@example.com", "wrong password", None).await;
    assert_eq!(status, 401);
    let logins = eventually(Duration::from_secs(20), || async {
        let (_, body) = auditor.get_json("/v1/audit/events?action=session.login&limit=1000", 0).await;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let refused = items
            .iter()
            .any(|i| i["record"]["reason"] == "invalid_credentials" && i["record"]["actor_type"] == "anonymous");
        let signed_in =
            items.iter().any(|i| i["record"]["outcome"] == "success" && i["record"]["actor_type"] == "auditor");
        refused && signed_in && !body.to_string().contains("nobody@example.com")
    })
    .await;
    assert!(logins, "sign-ins, refused and successful, are in the trail");

    // Tenant owners see their own tenant only.
    let owner = Caller::new(keel.rest_addr, &owner);
    let (status, mine) = owner.get_json("/v1/audit/events", position).await;
    assert_eq!(status, 200);
    assert!(mine["items"].as_array().unwrap().iter().all(|i| i["record"]["tenant_id"] == owned.as_str()), "{mine}");
    assert_eq!(owner.get_json(&format!("/v1/audit/events?tenant_id={tenant}"), position).await.0, 404);
    assert_eq!(owner.get_json("/v1/audit/checkpoints", position).await.0, 403);

    // Nobody changes a record: no API, and the runtime role cannot either.
    let pool = env.app_pool().await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('keel.scope', 'platform', true)").execute(&mut *tx).await.unwrap();
    assert!(sqlx::query("UPDATE rm_audit_trail.records SET actor_id = 'x'").execute(&mut *tx).await.is_err());
    drop(tx);

    // A checkpoint covers the chains; the export, the checkpoints and the keys verify offline.
    let signed = eventually(Duration::from_secs(20), || async {
        let (_, body) = auditor.get_json("/v1/audit/checkpoints", position).await;
        body.as_array().is_some_and(|c| c.iter().any(|c| c["heads"].to_string().contains(&tenant)))
    })
    .await;
    assert!(signed, "a checkpoint signs the tenant's chain");
    let dir = std::env::temp_dir().join(format!("keel-audit-{}", key()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, keys_body) = auditor.get_json("/v1/audit/keys", 0).await;
    let keys = write(&dir, "keys.json", &keys_body.to_string());
    let (_, checkpoints_body) = auditor.get_json("/v1/audit/checkpoints", position).await;
    let checkpoints = write(&dir, "checkpoints.json", &checkpoints_body.to_string());
    let (_, _, csv) = auditor.get("/v1/audit/export.csv", position).await;
    let export = write(&dir, "export.csv", &csv);
    let (ok, out, err) =
        keel_cli(&env, &["audit", "verify", "--keys", &keys, "--csv", &export, "--checkpoints", &checkpoints]);
    assert!(ok, "an untouched export verifies: {out} {err}");

    // Edited, deleted, reordered: each is caught and named.
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines.len() > 6, "{csv}");
    let victim = (1..lines.len()).find(|i| lines[*i].contains(",operator,")).expect("an operator's record");
    let victim_id = lines[victim].split(',').next().unwrap().to_string();
    let edited = csv.replacen(lines[victim], &lines[victim].replacen(",operator,", ",auditor,", 1), 1);
    let (ok, _, err) =
        keel_cli(&env, &["audit", "verify", "--keys", &keys, "--csv", &write(&dir, "edited.csv", &edited)]);
    assert!(!ok && err.contains(&victim_id) && err.contains("hash mismatch"), "edit named: {err}");
    let without = |skip: usize| -> String {
        lines.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, l)| format!("{l}\n")).collect()
    };
    let (ok, _, err) =
        keel_cli(&env, &["audit", "verify", "--keys", &keys, "--csv", &write(&dir, "deleted.csv", &without(1))]);
    assert!(!ok && err.contains("expected 1"), "deletion named: {err}");
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    let swapped: String = swapped.iter().map(|l| format!("{l}\n")).collect();
    let (ok, _, err) =
        keel_cli(&env, &["audit", "verify", "--keys", &keys, "--csv", &write(&dir, "swapped.csv", &swapped)]);
    assert!(!ok && err.contains("broken"), "reordering caught: {err}");

    // The Kafka log itself, and a log export whose record was edited.
    let (ok, out, err) = keel_cli(&env, &["audit", "verify", "--keys", &keys]);
    assert!(ok, "the log verifies: {out} {err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["records"].as_u64().unwrap() >= 8 && report["checkpoints"].as_u64().unwrap() >= 1, "{report}");
    let dump = dir.join("log.ndjson").display().to_string();
    let (ok, _, err) = keel_cli(&env, &["log", "export", "--out", &dump]);
    assert!(ok, "{err}");
    let log = std::fs::read_to_string(&dump).unwrap();
    let forged = log
        .lines()
        .map(|l| {
            if l.contains("\"plan.change\"") && l.contains("\"success\"") {
                l.replacen("\"actor_type\":\"operator\"", "\"actor_type\":\"user\"", 1)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(forged.trim(), log.trim());
    let (ok, _, err) =
        keel_cli(&env, &["audit", "verify", "--keys", &keys, "--file", &write(&dir, "forged.ndjson", &forged)]);
    assert!(!ok && err.contains("hash mismatch"), "an edited event is caught: {err}");
    keel.stop().await;
}

#[tokio::test]
async fn every_grpc_method_refused_is_in_the_trail() {
    use prost::Message;
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let set = prost_types::FileDescriptorSet::decode(keel_gateway::proto::DESCRIPTOR).expect("descriptor set");
    let methods: Vec<(String, String)> = set
        .file
        .iter()
        .filter(|f| f.package() == "keel.v1")
        .flat_map(|f| {
            f.service
                .iter()
                .flat_map(move |s| s.method.iter().map(move |m| (s.name().to_string(), m.name().to_string())))
        })
        .collect();
    assert!(methods.len() > 30, "{methods:?}");
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", keel.grpc_addr)).unwrap().connect().await.unwrap();
    for (service, method) in &methods {
        // An empty message and no credential: every method refuses.
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let path: tonic::codegen::http::uri::PathAndQuery = format!("/keel.v1.{service}/{method}").parse().unwrap();
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let answer = grpc.unary(tonic::Request::new(()), path, codec).await;
        assert!(answer.is_err(), "{service}/{method} answered without a credential");
    }
    let owner = env.owner_pool().await;
    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT payload->'record'->'metadata'->>'rpc' FROM events
         WHERE aggregate_type = 'audit' AND payload->'record'->>'outcome' = 'failure'",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT payload->'record'->>'action' FROM events WHERE aggregate_type = 'audit'")
            .fetch_all(&owner)
            .await
            .unwrap();
    for (_, method) in &methods {
        let action = keel_domain::audit::action_of(method);
        assert!(
            recorded.contains(method) || actions.contains(&action),
            "{method} ({action}) is not in the audit trail: {actions:?}"
        );
    }
    keel.stop().await;
}

/// A change and its audit record commit together: when the record cannot be written,
/// the command fails and changes nothing; once it can, the same command succeeds.
#[tokio::test]
async fn a_command_whose_audit_record_cannot_commit_changes_nothing() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let tenant = provision(&mut tenants, &operator, &domain("audtx")).await.tenant_id;
    let owner = env.owner_pool().await;
    // The tenant's chain head refuses to move (new rows and updates are checked).
    sqlx::query(&format!("ALTER TABLE audit_chain_heads ADD CONSTRAINT frozen CHECK (chain <> '{tenant}') NOT VALID"))
        .execute(&owner)
        .await
        .expect("freeze the chain");
    let suspended = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'tenant.suspended'",
        )
        .bind(&tenant)
        .fetch_one(&owner)
        .await
        .expect("count")
    };
    let request = SuspendTenantRequest { tenant_id: tenant.clone(), reason: "x".into(), idempotency_key: key() };
    let refused = tenants.suspend_tenant(authed(request.clone(), &operator)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(suspended().await, 0, "no change without its record");

    sqlx::query("ALTER TABLE audit_chain_heads DROP CONSTRAINT frozen").execute(&owner).await.expect("thaw");
    tenants.suspend_tenant(authed(request, &operator)).await.expect("the retry succeeds");
    assert_eq!(suspended().await, 1);
    let records: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = 'audit' AND aggregate_id = $1
         AND payload->'record'->>'action' = 'tenant.suspend' AND payload->'record'->>'outcome' = 'success'",
    )
    .bind(&tenant)
    .fetch_all(&owner)
    .await
    .expect("records");
    assert_eq!(records.len(), 1, "one record of the suspension: {records:?}");
    let changes = &records[0]["record"]["metadata"]["changes"];
    assert_eq!(changes[0]["event_type"], "tenant.suspended", "{changes}");
}

/// Concurrent writers of one chain (commands that change the tenant and refusals of it)
/// and of the platform chain: the log the relay publishes still holds every chain in
/// its order, so `keel audit verify` passes over it.
#[tokio::test]
async fn concurrent_writers_of_a_chain_publish_it_in_its_order() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let shared = provision(&mut tenants, &operator, &domain("audorder")).await.tenant_id;
    let mut writers = Vec::new();
    for w in 0..24 {
        let (mut client, operator, shared, name) =
            (tenants.clone(), operator.clone(), shared.clone(), domain("audord"));
        writers.push(tokio::spawn(async move {
            for i in 0..4 {
                // Suspensions and reactivations race on one tenant: some succeed, some are
                // refused (both are records on its chain); new tenants write other chains.
                if (w + i) % 2 == 0 {
                    let suspend =
                        SuspendTenantRequest { tenant_id: shared.clone(), reason: "x".into(), idempotency_key: key() };
                    let _ = client.suspend_tenant(authed(suspend, &operator)).await;
                } else {
                    let reactivate = ReactivateTenantRequest { tenant_id: shared.clone(), idempotency_key: key() };
                    let _ = client.reactivate_tenant(authed(reactivate, &operator)).await;
                }
            }
            provision(&mut client, &operator, &name).await.position
        }));
    }
    let mut position = 0;
    for writer in writers {
        position = position.max(writer.await.expect("writer"));
    }
    env.platform_user("order@keel.example.com", PASSWORD, "auditor").await;
    let (auditor, _) = Rest::new(keel.rest_addr).tokens("order@keel.example.com", PASSWORD, None).await;
    let auditor = Caller::new(keel.rest_addr, &auditor);
    let signed = eventually(Duration::from_secs(30), || async {
        let (_, body) = auditor.get_json("/v1/audit/checkpoints", position).await;
        body.as_array().is_some_and(|c| c.iter().any(|c| c["heads"].to_string().contains(&shared)))
    })
    .await;
    assert!(signed, "a checkpoint signs the shared chain");
    let dir = std::env::temp_dir().join(format!("keel-audit-order-{}", key()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, keys_body) = auditor.get_json("/v1/audit/keys", 0).await;
    let keys = write(&dir, "keys.json", &keys_body.to_string());
    let (ok, out, err) = keel_cli(&env, &["audit", "verify", "--keys", &keys]);
    assert!(ok, "the log holds every chain in its order: {out} {err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["records"].as_u64().unwrap() >= 24 * 4, "{report}");
}
