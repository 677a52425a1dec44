//! `keel replay --tenant T --until TIME` and `keel log export`, end to end: a tenant's
//! state rebuilt from the log (Kafka, or an export read offline) equals what the read
//! models showed at that moment, and not what they show now.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use keel_gateway::offline::event_log::LogSource;
use keel_gateway::offline::tenant_replay::{ReplayedTenant, replay_tenant};
use keel_gateway::proto::flag_service_client::FlagServiceClient;
use keel_gateway::proto::{
    ChangePlanRequest, ChangeUserRoleRequest, DefineFlagRequest, InviteUserRequest, ListUsersRequest,
    SetEntitlementOverrideRequest, SetTenantFlagRequest,
};
use keel_tests::TestEnv;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::support::{authed, domain, key, provision, pv, tenant_client, user_client};

/// The `keel` binary the workspace's build put beside the test binaries' directory.
fn keel_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("keel");
    assert!(bin.exists(), "{} is missing: run the tests with `make test` (cargo test --workspace)", bin.display());
    bin
}

/// Runs `keel args…` without blocking the runtime (the in-process Keel shares it), with
/// no database settings (no `db.env` either: `make test` exports `KEEL_STATE_DIR`) and, unless
/// given, no reachable broker; returns (success, stdout, stderr).
async fn run_keel(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(keel_bin())
        .args(args)
        .env_remove("KEEL_MIGRATION_DATABASE_URL")
        .env_remove("KEEL_DATABASE_URL")
        .env("KEEL_STATE_DIR", "/nonexistent")
        .env("KEEL_KAFKA_BROKERS", "127.0.0.1:9")
        .output()
        .await
        .expect("run keel");
    keel_tests::logs::keep("keel-cli", &output.stderr);
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// What the read models (and ListUsers) show of a tenant at `position`.
#[derive(Debug)]
struct Shown {
    registry: Value,
    flags: Value,
    entitlements: Value,
    users: Vec<(String, String, String, String)>,
}

struct Api {
    http: reqwest::Client,
    base: String,
    operator: String,
    users: keel_gateway::proto::user_service_client::UserServiceClient<Channel>,
}

impl Api {
    async fn get(&self, path: &str, position: i64) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.operator)
            .header("X-Keel-Min-Position", position.to_string())
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.expect("JSON")
    }

    async fn shown(&mut self, tenant: &str, position: i64) -> Shown {
        let registry = self.get(&format!("/v1/control-plane/tenants/{tenant}"), position).await;
        let flags = self.get(&format!("/v1/tenants/{tenant}/flags"), position).await;
        let entitlements = self.get(&format!("/v1/control-plane/tenants/{tenant}/entitlements"), position).await;
        let request = ListUsersRequest { tenant_id: tenant.into(), page_size: 200, ..Default::default() };
        let listed = self.users.list_users(authed(request, &self.operator)).await.expect("ListUsers").into_inner();
        assert!(listed.next_page_token.is_empty());
        let mut users: Vec<_> = listed.users.into_iter().map(|u| (u.user_id, u.email, u.role, u.status)).collect();
        users.sort();
        Shown { registry, flags, entitlements, users }
    }
}

/// The replayed document as JSON (what `keel replay --tenant` prints).
fn document(state: &ReplayedTenant) -> Value {
    serde_json::to_value(state).expect("serialize")
}

/// Asserts that `replayed` (the JSON document) shows exactly `shown`.
fn assert_matches(replayed: &Value, shown: &Shown, what: &str) {
    assert_eq!(replayed["registry"], shown.registry, "{what}: registry");
    assert_eq!(replayed["flags"], shown.flags, "{what}: flag snapshot");
    assert_eq!(replayed["entitlements"], shown.entitlements["entitlements"], "{what}: entitlements");
    assert_eq!(replayed["flags"]["version"], shown.entitlements["version"], "{what}: entitlements version");
    let users: Vec<(String, String, String, String)> = replayed["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            let field = |name: &str| u[name].as_str().expect(name).to_string();
            (field("user_id"), field("email"), field("role"), field("status"))
        })
        .collect();
    assert_eq!(users, shown.users, "{what}: users, by id");
    assert!(replayed.get("parked").is_none(), "{what}: nothing parked: {replayed}");
}

async fn replay(source: &LogSource, tenant: &str, until: DateTime<Utc>) -> Value {
    document(&replay_tenant(source, tenant, until, &ProgressBar::hidden()).await.expect("replay"))
}

fn export_path(dir: &Path) -> PathBuf {
    dir.join("events.ndjson")
}

#[tokio::test]
async fn a_tenant_replayed_until_a_moment_shows_what_the_read_models_showed_then() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let mut flags = FlagServiceClient::connect(format!("http://{}", keel.grpc_addr)).await.expect("connect gRPC");
    let mut api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", keel.rest_addr),
        operator: operator.clone(),
        users: user_client(keel.grpc_addr).await,
    };

    // A history: provision (pro), go enterprise, invite a user and make it an admin,
    // define flags and set one for the tenant, override an entitlement.
    let tenant = provision(&mut tenants, &operator, &domain("replay")).await.tenant_id;
    let plan = |plan: &str| ChangePlanRequest { tenant_id: tenant.clone(), plan: plan.into(), idempotency_key: key() };
    tenants.change_plan(authed(plan("enterprise"), &operator)).await.expect("plan");
    let invite = InviteUserRequest {
        tenant_id: tenant.clone(),
        email: "ann@example.com".into(),
        role: "user".into(),
        idempotency_key: key(),
    };
    let ann = api.users.invite_user(authed(invite, &operator)).await.expect("invite").into_inner().user_id;
    let role = |role: &str| ChangeUserRoleRequest {
        tenant_id: tenant.clone(),
        user_id: ann.clone(),
        role: role.into(),
        idempotency_key: key(),
    };
    api.users.change_user_role(authed(role("admin"), &operator)).await.expect("role");
    for (flag, kind, default, plans) in [
        ("replay-beta", "boolean", json!(false), json!({ "enterprise": true })),
        ("replay-theme", "string", json!("light"), json!({})),
        ("replay-limit", "number", json!(10), json!({ "free": 1 })),
    ] {
        let plan_defaults = plans.as_object().cloned().unwrap_or_default().into_iter().map(|(p, v)| (p, pv(v)));
        let request = DefineFlagRequest {
            key: flag.into(),
            r#type: kind.into(),
            default_value: Some(pv(default)),
            plan_defaults: plan_defaults.collect(),
            description: format!("{flag} for replays"),
            idempotency_key: key(),
        };
        flags.define_flag(authed(request, &operator)).await.expect("define flag");
    }
    let set_flag = |value: &str| SetTenantFlagRequest {
        tenant_id: tenant.clone(),
        key: "replay-theme".into(),
        value: Some(pv(json!(value))),
        idempotency_key: key(),
    };
    flags.set_tenant_flag(authed(set_flag("dark"), &operator)).await.expect("set flag");
    let over = SetEntitlementOverrideRequest {
        tenant_id: tenant.clone(),
        key: "seats".into(),
        value: Some(pv(json!(500))),
        idempotency_key: key(),
    };
    let then = flags.set_entitlement_override(authed(over, &operator)).await.expect("override").into_inner().position;

    // What the read models show once they have it all; the moment T comes after.
    let before = api.shown(&tenant, then).await;
    assert_eq!(
        (before.registry["plan"].as_str(), before.flags["flags"]["replay-theme"]["value"].as_str()),
        (Some("enterprise"), Some("dark"))
    );
    assert_eq!(before.users.iter().find(|u| u.0 == ann).map(|u| u.2.as_str()), Some("admin"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let moment = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;

    // More history after T: another plan, another flag value, another role.
    tenants.change_plan(authed(plan("free"), &operator)).await.expect("plan");
    flags.set_tenant_flag(authed(set_flag("blue"), &operator)).await.expect("set flag");
    let now = api.users.change_user_role(authed(role("user"), &operator)).await.expect("role").into_inner().position;
    let after = api.shown(&tenant, now).await;
    assert_eq!(after.registry["plan"], "free");

    // From Kafka, in-process.
    let kafka = LogSource::Kafka { brokers: env.brokers.clone(), topic: env.topic.clone() };
    let replayed = replay(&kafka, &tenant, moment).await;
    assert_matches(&replayed, &before, "Kafka at T");
    assert_eq!(replayed["position"], json!(then), "the last event applied is the last command before T");
    assert_eq!(replayed["registry"]["version"], before.registry["version"]);
    assert_eq!(replayed["until"], json!(moment));
    assert_ne!(replayed["registry"], after.registry, "the plan changed after T");
    assert_ne!(replayed["flags"], after.flags, "the flag changed after T");
    assert_ne!(replayed["users"], replay(&kafka, &tenant, Utc::now()).await["users"], "the role changed after T");

    // `keel log export` writes the dump; replays read it offline, in-process and with the binary.
    let dir = std::env::temp_dir().join(format!("keel-replay-{}", uuid::Uuid::new_v4().simple()));
    let dump = export_path(&dir);
    let dump_arg = dump.to_str().expect("UTF-8 path");
    let (ok, out, err) =
        run_keel(&["log", "export", "--out", dump_arg, "--kafka-brokers", &env.brokers, "--events-topic", &env.topic])
            .await;
    assert!(ok, "keel log export: {err}");
    assert!(out.starts_with("exported "), "{out}");
    let file = LogSource::File(dump.clone());
    assert_eq!(replay(&file, &tenant, moment).await, replayed, "the export replays as Kafka does");
    assert_matches(&replay(&file, &tenant, Utc::now()).await, &after, "the export, now");

    let until = moment.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let (ok, out, err) = run_keel(&["replay", "--tenant", &tenant, "--until", &until, "--file", dump_arg]).await;
    assert!(ok, "keel replay --tenant: {err}");
    let printed: Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(printed, replayed, "the binary prints the same document");
    assert!(out.contains("\n  \"tenant_id\""), "pretty-printed: {out}");

    std::fs::remove_dir_all(&dir).expect("clean up");
    keel.stop().await;
}

#[tokio::test]
async fn replay_takes_either_a_read_model_or_a_tenant() {
    let (ok, _, err) = run_keel(&["replay"]).await;
    assert!(!ok && err.contains("give a read model to rebuild"), "{err}");
    let tenant = "tnt_01jd0000000000000000000000";
    let (ok, _, err) = run_keel(&["replay", "tenant_registry", "--tenant", tenant]).await;
    assert!(!ok && err.contains("not both"), "{err}");
    let (ok, _, err) = run_keel(&["replay", "--tenant", "acme", "--file", "/nonexistent"]).await;
    assert!(!ok && err.contains("--tenant: malformed tenant id"), "{err}");
    let (ok, _, err) =
        run_keel(&["replay", "--tenant", tenant, "--until", "yesterday", "--file", "/nonexistent"]).await;
    assert!(!ok && err.contains("--until must be an RFC 3339 time"), "{err}");
    let (ok, _, err) = run_keel(&["replay", "tenant_registry"]).await;
    assert!(
        !ok && err.contains("KEEL_MIGRATION_DATABASE_URL"),
        "rebuilding a read model still needs the database: {err}"
    );

    // An export with a line that is not an envelope is refused, naming the line.
    let dir = std::env::temp_dir().join(format!("keel-replay-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let dump = export_path(&dir);
    std::fs::write(&dump, "{\"not\": \"an envelope\"}\n").expect("write");
    let (ok, _, err) = run_keel(&["replay", "--tenant", tenant, "--file", dump.to_str().expect("UTF-8")]).await;
    assert!(!ok && err.contains("line 1: not an event envelope"), "{err}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}
