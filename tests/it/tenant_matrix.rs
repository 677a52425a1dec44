//! Suite 3 of issue 13: the cross-tenant matrix, generated from what Keel serves — every
//! REST operation of `/v1/openapi.json` with a tenant parameter, and every `keel.v1` gRPC
//! method whose request names a tenant (`tenant_id`) — so a new endpoint is covered by
//! default. Tenant A's owner, admin and user, and an app key, call each of them on tenant B
//! and on a tenant that does not exist: each call is denied (403/404, PERMISSION_DENIED or
//! NOT_FOUND), the two denials look the same (no hint that B exists), and each is audited.
//!
//! App keys belong to apps, not to tenants (ADR 0010: an app serves every tenant within its
//! scopes); the matrix's key has only `audit:write`, which reaches no tenant resource.

use std::time::Duration;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MethodDescriptor, Value};
use sqlx::PgPool;
use tonic::Code;

use keel_gateway::proto::{InviteUserRequest, ListUsersRequest, UserRequest};
use keel_tests::{TestEnv, eventually};

use crate::apps::app_with_key;
use crate::dynamic::{call, channel, encode, keel_methods};
use crate::support::{PASSWORD, Rest, authed, key, tenant_with_owner, user_client};

/// A caller of tenant A.
struct Caller {
    name: &'static str,
    token: String,
}

/// The ids a request names: tenant B's real ones, or well-formed ones nobody was given.
#[derive(Debug, Clone)]
struct Ids {
    tenant: String,
    user: String,
    session: String,
}

fn fresh(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase())
}

impl Ids {
    fn nonexistent() -> Self {
        Self { tenant: fresh("tnt_"), user: fresh("usr_"), session: fresh("ses_") }
    }
}

/// Audit records of refusals, on any chain (a refusal that names no tenant, such as
/// `IngestEvents` before its first event, is filed under the caller's tenant or the platform).
async fn refusals(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'audit.recorded' AND payload::text LIKE '%\"failure\"%'",
    )
    .fetch_one(pool)
    .await
    .expect("count refusals")
}

/// Waits (REST files refusals in the background) until there are more than `before` refusals.
/// The matrix calls one at a time, so a new refusal is the last call's.
async fn audited(pool: &PgPool, before: i64) -> bool {
    eventually(Duration::from_secs(5), || async { refusals(pool).await > before }).await
}

/// A valid value for a request field, by its name, naming `ids`: what gets a request past
/// input validation to the authorization that must refuse it.
fn valid(field: &FieldDescriptor, ids: &Ids) -> Option<Value> {
    let text = |s: &str| Some(Value::String(s.to_string()));
    match field.kind() {
        Kind::String => match field.name() {
            "tenant_id" => text(&ids.tenant),
            "user_id" => text(&ids.user),
            "session_id" => text(&ids.session),
            "idempotency_key" | "event_id" => text(&key()),
            "email" => text("matrix.invitee@example.com"),
            "role" => text("user"),
            "plan" => text("pro"),
            "key" => text("matrix-flag"),
            "industry" => text("fintech"),
            "region" => text("eu"),
            "environment" => text("production"),
            "cluster" => text("cluster-1"),
            "namespace" => text("matrix"),
            "routing_target" | "observed_target" => text("https://matrix.example.com"),
            "state" | "observed_state" => text("active"),
            "agent_id" => text("agent-1"),
            "event_type" => text("api.call"),
            "reason" => text("matrix"),
            _ => None,
        },
        Kind::Int64 => Some(Value::I64(1)),
        Kind::Uint32 => Some(Value::U32(if field.name() == "min_length" { 12 } else { 10 })),
        Kind::Bool => Some(Value::Bool(true)),
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Value" => {
                let mut value = DynamicMessage::new(m.clone());
                value.set_field_by_name("bool_value", Value::Bool(true));
                Some(Value::Message(value))
            }
            "google.protobuf.Timestamp" => {
                let mut at = DynamicMessage::new(m.clone());
                at.set_field_by_name("seconds", Value::I64(chrono::Utc::now().timestamp()));
                Some(Value::Message(at))
            }
            _ => None,
        },
        _ => None,
    }
}

fn request(method: &MethodDescriptor, ids: &Ids) -> Vec<u8> {
    let mut message = DynamicMessage::new(method.input());
    for field in method.input().fields() {
        if let Some(value) = valid(&field, ids) {
            message.set_field(&field, value);
        }
    }
    encode(&message)
}

/// What a refusal shows the caller: status, Keel's code and message.
fn shown(status: &tonic::Status) -> (Code, String, String) {
    (status.code(), crate::support::error_code(status), status.message().to_string())
}

/// A member of tenant `tenant` with `role`, invited by its owner: the access token.
async fn member(
    env: &TestEnv,
    keel: &keel_gateway::server::Running,
    owner: &str,
    tenant: &str,
    domain: &str,
    role: &str,
) -> String {
    let email = format!("{role}.{}@{domain}.example.com", &key()[..8]);
    keel_tests::logs::secret(&email);
    let mut users = user_client(keel.grpc_addr).await;
    let invite =
        InviteUserRequest { tenant_id: tenant.into(), email: email.clone(), role: role.into(), idempotency_key: key() };
    users.invite_user(authed(invite, owner)).await.expect("invite");
    let token = env.mailed_token(&email, "keel_inv_").await;
    let rest = Rest::new(keel.rest_addr);
    let (status, body) =
        rest.post("/v1/auth/invitations/accept", serde_json::json!({ "token": token, "password": PASSWORD })).await;
    assert_eq!(status, 200, "accept: {body}");
    rest.tokens(&email, PASSWORD, Some(domain)).await.0
}

/// The REST operations that take a tenant: (method, path template, tenant parameter, whether
/// it is in the path), from the OpenAPI document.
fn tenant_operations(doc: &serde_json::Value) -> Vec<(String, String, String, bool)> {
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let Some(parameters) = operation["parameters"].as_array() else { continue };
            for p in parameters {
                let name = p["name"].as_str().unwrap_or_default();
                let in_path = p["in"] == "path";
                let tenant_param = name == "tenant_id" || (in_path && name == "id" && path.contains("/tenants/{id}"));
                if tenant_param {
                    operations.push((method.to_uppercase(), path.clone(), name.to_string(), in_path));
                }
            }
        }
    }
    operations
}

/// A REST call's answer as the caller sees it, minus what differs per request.
async fn rest_call(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    url: &str,
    token: &str,
) -> (u16, serde_json::Value) {
    let method: reqwest::Method = method.parse().expect("method");
    let response = http.request(method, format!("{base}{url}")).bearer_auth(token).send().await.expect("REST call");
    let status = response.status().as_u16();
    let mut body: serde_json::Value = response.json().await.unwrap_or_default();
    if let Some(object) = body.as_object_mut() {
        object.remove("instance");
        object.remove("correlation_id");
    }
    (status, body)
}

#[tokio::test]
async fn tenant_a_is_denied_every_tenant_b_operation_alike_whether_or_not_b_exists_and_audited() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let owner_pool = env.owner_pool().await;
    let (tenant_a, domain_a, _, owner_a) = tenant_with_owner(&env, &keel, &operator, "matrix-a").await;
    let (tenant_b, _, _, _owner_b) = tenant_with_owner(&env, &keel, &operator, "matrix-b").await;
    let callers = vec![
        Caller { name: "owner", token: owner_a.clone() },
        Caller { name: "admin", token: member(&env, &keel, &owner_a, &tenant_a, &domain_a, "admin").await },
        Caller { name: "user", token: member(&env, &keel, &owner_a, &tenant_a, &domain_a, "user").await },
        Caller { name: "app key", token: app_with_key(keel.grpc_addr, &operator, &["audit:write"]).await.2 },
    ];

    // Tenant B's real resources: its owner and the owner's session.
    let mut users = user_client(keel.grpc_addr).await;
    let list = ListUsersRequest { tenant_id: tenant_b.clone(), ..Default::default() };
    let b_owner =
        users.list_users(authed(list, &operator)).await.expect("B's users").into_inner().users[0].user_id.clone();
    let sessions =
        UserRequest { tenant_id: tenant_b.clone(), user_id: b_owner.clone(), idempotency_key: String::new() };
    let b_session =
        users.list_user_sessions(authed(sessions, &operator)).await.expect("sessions").into_inner().sessions[0]
            .session_id
            .clone();
    let b = Ids { tenant: tenant_b.clone(), user: b_owner, session: b_session };

    let mut cells = 0;
    let mut failures = Vec::new();

    // gRPC: every keel.v1 method whose request names a tenant.
    let channel = channel(keel.grpc_addr).await;
    let methods: Vec<MethodDescriptor> =
        keel_methods().into_iter().filter(|m| m.input().get_field_by_name("tenant_id").is_some()).collect();
    assert!(methods.len() >= 20, "only {} gRPC methods name a tenant", methods.len());
    for method in &methods {
        for caller in &callers {
            cells += 1;
            let nobody = Ids::nonexistent();
            let mut answers = Vec::new();
            for ids in [&b, &nobody] {
                let before = refusals(&owner_pool).await;
                let answer = call(&channel, method, vec![request(method, ids)], Some(&caller.token)).await;
                let audited = audited(&owner_pool, before).await;
                answers.push((answer.map(|_| ()).map_err(|s| shown(&s)), audited));
            }
            let cell = format!("{} as A's {}", method.full_name(), caller.name);
            match (&answers[0], &answers[1]) {
                ((Err(on_b), b_audited), (Err(on_nobody), nobody_audited)) => {
                    if !matches!(on_b.0, Code::PermissionDenied | Code::NotFound) {
                        failures.push(format!("{cell}: refused with {on_b:?}, not PERMISSION_DENIED/NOT_FOUND"));
                    }
                    if on_b != on_nobody {
                        failures.push(format!("{cell}: B answers {on_b:?}, a missing tenant {on_nobody:?}"));
                    }
                    if !b_audited || !nobody_audited {
                        failures.push(format!("{cell}: refusal not audited (B {b_audited}, missing {nobody_audited})"));
                    }
                }
                _ => failures.push(format!("{cell}: not refused: {answers:?}")),
            }
        }
    }
    let grpc_cells = cells;

    // REST: every documented operation with a tenant parameter.
    let http = reqwest::Client::new();
    let base = format!("http://{}", keel.rest_addr);
    let doc: serde_json::Value =
        http.get(format!("{base}/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let operations = tenant_operations(&doc);
    assert!(operations.len() >= 5, "only {} REST operations take a tenant: {operations:?}", operations.len());
    for (method, path, name, in_path) in &operations {
        for caller in &callers {
            cells += 1;
            let mut answers = Vec::new();
            for tenant in [tenant_b.clone(), fresh("tnt_")] {
                let url = if *in_path {
                    path.replace(&format!("{{{name}}}"), &tenant)
                } else {
                    format!("{path}?{name}={tenant}")
                };
                let before = refusals(&owner_pool).await;
                let answer = rest_call(&http, &base, method, &url, &caller.token).await;
                answers.push((answer, audited(&owner_pool, before).await));
            }
            let cell = format!("{method} {path} as A's {}", caller.name);
            let ((on_b, b_audited), (on_nobody, nobody_audited)) = (&answers[0], &answers[1]);
            if !matches!(on_b.0, 403 | 404) {
                failures.push(format!("{cell}: answered {on_b:?}, not 403/404"));
            }
            if on_b != on_nobody {
                failures.push(format!("{cell}: B answers {on_b:?}, a missing tenant {on_nobody:?}"));
            }
            if !b_audited || !nobody_audited {
                failures.push(format!("{cell}: refusal not audited (B {b_audited}, missing {nobody_audited})"));
            }
        }
    }
    println!(
        "{cells} matrix cells: {grpc_cells} gRPC ({} methods), {} REST ({} operations), 4 callers",
        methods.len(),
        cells - grpc_cells,
        operations.len()
    );
    assert!(failures.is_empty(), "{} of {cells} cells failed:\n{}", failures.len(), failures.join("\n"));
    keel.stop().await;
}
