//! Nobody can out-guess or flood sign-in (issue 13): the account lock counts the
//! account however it is spelled, a full hashing queue answers 503 with Retry-After,
//! password-reset requests are throttled and bounded, and anonymous refusals are
//! coalesced on the platform chain, never filed under a tenant they name.

use std::time::Duration;

use keel_gateway::auth::refusals::{AnonymousRefusals, CLAIMED_TENANT_KEY};
use keel_gateway::proto::{ChangePasswordRequest, SuspendTenantRequest};
use keel_gateway::server::Workers;
use keel_tests::TestEnv;
use serde_json::{Value, json};
use sqlx::PgPool;
use tonic::Code;

use crate::support::{PASSWORD, Rest, error_code, key, tenant_client, tenant_with_owner, user_client};

/// A Keel that believes `X-Forwarded-For` from the test (so each attempt can come from
/// its own client address), with `capacity` places in the hashing queue.
async fn start_proxied(env: &TestEnv, capacity: Option<usize>) -> keel_gateway::server::Running {
    let mut settings = env.settings();
    settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    settings.hash_queue_capacity = capacity;
    env.start_with(settings, Workers::ALL).await
}

/// POSTs `body` to `path` as client `client`: (status, Retry-After, content type, body).
async fn post_from(rest: &Rest, client: &str, path: &str, body: Value) -> (u16, Option<u64>, String, Value) {
    let response = rest
        .http
        .post(format!("{}{path}", rest.base))
        .header("x-forwarded-for", client)
        .json(&body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let retry = header("retry-after").and_then(|v| v.parse().ok());
    let content_type = header("content-type").unwrap_or_default();
    (status, retry, content_type, response.json().await.unwrap_or_default())
}

fn login(email: &str, password: &str, tenant: &str) -> Value {
    json!({ "email": email, "password": password, "tenant": tenant })
}

#[tokio::test]
async fn the_account_lock_counts_the_account_however_its_tenant_or_email_is_spelled() {
    let env = TestEnv::new().await;
    let keel = start_proxied(&env, None).await;
    let operator = env.operator_token().await;
    let (_, domain, email, _) = tenant_with_owner(&env, &keel, &operator, "spelled").await;
    let rest = Rest::new(keel.rest_addr);
    // Every attempt from its own address: only the account lock can answer 429.
    for i in 0..5 {
        let (status, ..) =
            post_from(&rest, &format!("203.0.113.{i}"), "/v1/auth/login", login(&email, "guess", &domain)).await;
        assert_eq!(status, 401, "attempt {i}");
    }
    let spellings = [
        (domain.to_uppercase(), email.clone()),
        (format!("{domain}."), email.clone()),
        (format!(" {} ", domain.to_uppercase()), email.to_uppercase()),
        (domain.clone(), format!(" {email} ")),
    ];
    for (i, (tenant, email)) in spellings.iter().enumerate() {
        let client = format!("198.51.100.{i}");
        let (status, retry, _, body) = post_from(&rest, &client, "/v1/auth/login", login(email, "guess", tenant)).await;
        assert_eq!((status, body["code"].as_str()), (429, Some("too_many_attempts")), "{tenant:?} {email:?}: {body}");
        assert!(retry.is_some_and(|r| (1..=30).contains(&r)), "{retry:?}");
    }
    // Locked even with the right password, from a fresh address; the address itself is not.
    let (status, ..) =
        post_from(&rest, "192.0.2.1", "/v1/auth/login", login(&email, PASSWORD, &domain.to_uppercase())).await;
    assert_eq!(status, 429, "the account is locked");
    let (status, ..) =
        post_from(&rest, "192.0.2.1", "/v1/auth/login", login("someone@example.com", "guess", &domain)).await;
    assert_eq!(status, 401, "the address is not throttled: the 429s came from the account lock");
    keel.stop().await;
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_with_retry_after() {
    let env = TestEnv::new().await;
    let keel = start_proxied(&env, Some(1)).await;
    let operator = env.operator_token().await;
    let (_, domain, _, owner_access) = tenant_with_owner(&env, &keel, &operator, "busy").await;
    let rest = Rest::new(keel.rest_addr);
    // Keep the single place busy: one hash after another.
    let passwords = keel.users.passwords().clone();
    let saturate = tokio::spawn(async move {
        loop {
            if passwords.hash("a password being hashed").await.is_err() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let mut refused = None;
    for i in 0..10 {
        let body = login(&format!("nobody{i}@example.com"), "guess", &domain);
        let answer = post_from(&rest, &format!("203.0.113.{i}"), "/v1/auth/login", body).await;
        if answer.0 == 503 {
            refused = Some(answer);
            break;
        }
    }
    let (_, retry, content_type, body) = refused.expect("a login refused while the queue is full");
    assert!(retry.is_some_and(|r| r >= 1), "Retry-After: {retry:?}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!((body["code"].as_str(), body["status"].as_u64()), (Some("overloaded"), Some(503)), "{body}");
    assert_eq!(keel.users.passwords().queue().capacity, 1);
    assert!(keel.users.passwords().queue().refused >= 1);
    // gRPC: UNAVAILABLE, with when to retry in the metadata.
    let mut users = user_client(keel.grpc_addr).await;
    let mut unavailable = None;
    for i in 0..4 {
        let request = ChangePasswordRequest {
            current_password: format!("guess {i}"),
            new_password: "a brand new passphrase".into(),
            idempotency_key: key(),
        };
        let status = users.change_password(crate::support::authed(request, &owner_access)).await.expect_err("refused");
        if status.code() == Code::Unavailable {
            unavailable = Some(status);
            break;
        }
    }
    let status = unavailable.expect("a password change refused while the queue is full");
    assert_eq!(error_code(&status), "overloaded");
    let retry = status.metadata().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|r| r >= 1), "{retry:?}");
    saturate.abort();
    keel.stop().await;
}

async fn count(pool: &PgPool, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql).bind(bind).fetch_one(pool).await.expect("count")
}

const RESETS: &str =
    "SELECT count(*) FROM events WHERE event_type = 'user.password_reset_requested' AND aggregate_id = $1";

#[tokio::test]
async fn password_reset_requests_are_throttled_and_write_at_most_one_reset_per_account() {
    let env = TestEnv::new().await;
    let keel = start_proxied(&env, None).await;
    let operator = env.operator_token().await;
    let (tenant_id, domain, email, _) = tenant_with_owner(&env, &keel, &operator, "resets").await;
    let rest = Rest::new(keel.rest_addr);
    let owner = env.owner_pool().await;
    let reset = |tenant: String, email: String| json!({ "email": email, "tenant": tenant });
    let (status, ..) =
        post_from(&rest, "203.0.113.1", "/v1/auth/password-reset", reset(domain.clone(), email.clone())).await;
    assert_eq!(status, 202);
    env.mailed_token(&email, "keel_pwr_").await;
    assert_eq!(count(&owner, RESETS, &tenant_id).await, 1);
    // Again, spelled otherwise, from other addresses: accepted, but nothing new is written or mailed.
    for (i, tenant) in [domain.to_uppercase(), format!("{domain}.")].into_iter().enumerate() {
        let (status, ..) =
            post_from(&rest, &format!("198.51.100.{i}"), "/v1/auth/password-reset", reset(tenant, email.clone())).await;
        assert_eq!(status, 202);
    }
    assert_eq!(count(&owner, RESETS, &tenant_id).await, 1, "a pending reset is not requested again");
    assert_eq!(env.mailed_tokens(&email, "keel_pwr_").len(), 1, "nor mailed again");
    // The fourth request for the account within the window is throttled, from any address.
    let (status, retry, content_type, body) =
        post_from(&rest, "192.0.2.9", "/v1/auth/password-reset", reset(domain.to_uppercase(), email.to_uppercase()))
            .await;
    assert_eq!((status, body["code"].as_str()), (429, Some("too_many_attempts")), "{body}");
    assert!(retry.is_some_and(|r| r >= 1), "{retry:?}");
    assert_eq!(content_type, "application/problem+json");
    // One address asking for many accounts is throttled after 10.
    for i in 0..10 {
        let (status, ..) = post_from(
            &rest,
            "192.0.2.77",
            "/v1/auth/password-reset",
            reset(domain.clone(), format!("n{i}@example.com")),
        )
        .await;
        assert_eq!(status, 202, "request {i}");
    }
    let (status, ..) =
        post_from(&rest, "192.0.2.77", "/v1/auth/password-reset", reset(domain.clone(), "n99@example.com".into()))
            .await;
    assert_eq!(status, 429, "the address is throttled");
    // Its IPv6 neighbours in the same /64 are the same client.
    for i in 0..10 {
        let (status, ..) = post_from(
            &rest,
            &format!("2001:db8:7:7::{i:x}"),
            "/v1/auth/password-reset",
            reset(domain.clone(), format!("v6-{i}@example.com")),
        )
        .await;
        assert_eq!(status, 202, "request {i}");
    }
    let (status, ..) = post_from(
        &rest,
        "2001:db8:7:7:abcd::1",
        "/v1/auth/password-reset",
        reset(domain.clone(), "v6@example.com".into()),
    )
    .await;
    assert_eq!(status, 429, "the /64 is throttled");
    assert_eq!(count(&owner, RESETS, &tenant_id).await, 1, "still one reset event");
    keel.stop().await;
}

/// The audit records of `chain` after place `after`, as JSON records.
async fn records(pool: &PgPool, chain: &str, after: i64) -> Vec<Value> {
    let payloads: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = 'audit' AND aggregate_id = $1 AND sequence > $2
         ORDER BY sequence",
    )
    .bind(chain)
    .bind(after)
    .fetch_all(pool)
    .await
    .expect("audit records");
    payloads.into_iter().filter_map(|p| find_record(&p).cloned()).collect()
}

/// The object in `value` that is an audit record (has `actor_type`).
fn find_record(value: &Value) -> Option<&Value> {
    match value {
        Value::Object(map) if map.contains_key("actor_type") => Some(value),
        Value::Object(map) => map.values().find_map(find_record),
        _ => None,
    }
}

async fn head(pool: &PgPool, chain: &str) -> i64 {
    count(
        pool,
        "SELECT COALESCE(max(sequence), 0) FROM events WHERE aggregate_type = 'audit' AND aggregate_id = $1",
        chain,
    )
    .await
}

#[tokio::test]
async fn anonymous_refusals_are_coalesced_on_the_platform_chain_never_under_a_named_tenant() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (tenant_id, domain, email, _) = tenant_with_owner(&env, &keel, &operator, "flood").await;
    let owner = env.owner_pool().await;
    let (tenant_before, platform_before) = (head(&owner, &tenant_id).await, head(&owner, "platform").await);
    // 40 refused sign-ins naming the tenant (wrong password, then locked: two reasons).
    let rest = Rest::new(keel.rest_addr);
    for i in 0..40 {
        let (status, _) = rest.login(&email, &format!("guess {i}"), Some(&domain)).await;
        assert!(status == 401 || status == 429, "{status}");
    }
    // 40 anonymous gRPC calls refused before any service ran (malformed tenant id).
    let mut tenants = tenant_client(keel.grpc_addr).await;
    for _ in 0..40 {
        let request =
            SuspendTenantRequest { tenant_id: "not a tenant".into(), reason: String::new(), idempotency_key: key() };
        let refused = tenants.suspend_tenant(request).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument);
    }
    let platform = records(&owner, "platform", platform_before).await;
    // Three distinct refusals: a record each, and a summary each if the minute ended meanwhile.
    assert!(platform.len() <= 6, "80 refusals, 3 distinct: at most 6 records, {} written", platform.len());
    assert!(platform.iter().all(|r| r["actor_type"] == "anonymous" && r["tenant_id"].is_null()), "{platform:?}");
    // Anonymous calls naming the tenant reach the service: filed on the platform chain,
    // with the tenant only as unverified context.
    let platform_now = head(&owner, "platform").await;
    for _ in 0..3 {
        let request =
            SuspendTenantRequest { tenant_id: tenant_id.clone(), reason: String::new(), idempotency_key: key() };
        let refused = tenants.suspend_tenant(request).await.expect_err("refused");
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    let claimed = records(&owner, "platform", platform_now).await;
    assert!(!claimed.is_empty(), "the refusals are recorded");
    assert!(claimed.iter().all(|r| r["metadata"][CLAIMED_TENANT_KEY] == tenant_id.as_str()), "{claimed:?}");
    assert_eq!(head(&owner, &tenant_id).await, tenant_before, "the named tenant's chain is unchanged");
    keel.stop().await;
}

#[tokio::test]
async fn identical_refusals_become_one_summary_and_a_flood_of_keys_is_only_counted() {
    let env = TestEnv::new().await;
    let pool = env.app_pool().await;
    let owner = env.owner_pool().await;
    let refusals = AnonymousRefusals::new(keel_commands::audit::AuditLog::new(pool.clone()), Duration::from_secs(2), 2);
    let refusal = |address: &str, reason: &str| keel_domain::audit::AuditInput {
        timestamp: chrono::Utc::now(),
        tenant_id: Some("tnt_named_by_the_caller".into()),
        actor_type: "anonymous".into(),
        actor_id: String::new(),
        action: "session.login".into(),
        resource: "session".into(),
        outcome: keel_domain::audit::Outcome::Failure,
        reason: Some(reason.into()),
        source: "keel".into(),
        source_event_id: None,
        metadata: serde_json::Map::from_iter([("client_address".to_string(), Value::from(address))]),
    };
    for _ in 0..20 {
        refusals.record(refusal("203.0.113.1", "invalid_credentials")).await;
    }
    // The same /64 is the same client; a third key in the window is only counted.
    refusals.record(refusal("2001:db8::1", "invalid_credentials")).await;
    refusals.record(refusal("2001:db8::2", "invalid_credentials")).await;
    refusals.record(refusal("203.0.113.2", "invalid_credentials")).await;
    assert_eq!(records(&owner, "platform", 0).await.len(), 2, "the first of each key, at once");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    refusals.flush().await;
    let written = records(&owner, "platform", 0).await;
    assert_eq!(written.len(), 5, "two firsts, two summaries, one count of the rest: {written:?}");
    let summaries: Vec<u64> = written.iter().filter_map(|r| r["metadata"]["repeated"].as_u64()).collect();
    assert_eq!(summaries.iter().sum::<u64>(), 20, "19 + 1 repeats: {summaries:?}");
    let dropped = written.iter().filter_map(|r| r["metadata"]["dropped"].as_u64()).sum::<u64>();
    assert_eq!(dropped, 1);
    assert!(written.iter().all(|r| r["chain"] == "platform" && r["tenant_id"].is_null()));
    assert!(written.iter().take(2).all(|r| r["metadata"][CLAIMED_TENANT_KEY] == "tnt_named_by_the_caller"));
    assert_eq!(head(&owner, "tnt_named_by_the_caller").await, 0);
    // A quiet window writes nothing.
    refusals.flush().await;
    assert_eq!(records(&owner, "platform", 0).await.len(), 5);
}
