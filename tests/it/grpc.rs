//! The gRPC command API, end to end.

use std::time::Duration;

use keel_gateway::proto::{
    ChangePlanRequest, ReactivateTenantRequest, RequestTenantDeletionRequest, RestoreTenantRequest,
    SetTenantProfileRequest, SuspendTenantRequest,
};
use keel_tests::{TestEnv, wait_projected};
use tonic::Code;

use crate::support::{authed, domain, error_code, provision, provision_request, tenant_client, tenant_with_owner};

#[tokio::test]
async fn concurrent_provisioning_of_one_domain_gives_exactly_one_tenant() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let contested = domain("contested");
    let mut attempts = Vec::new();
    for _ in 0..8 {
        let mut client = tenant_client(keel.grpc_addr).await;
        let request = authed(provision_request(&contested), &token);
        attempts.push(tokio::spawn(async move { client.provision_tenant(request).await }));
    }
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.expect("task") {
            Ok(_) => won += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
                assert_eq!(error_code(&status), "domain_taken");
            }
        }
    }
    assert_eq!(won, 1, "exactly one provisioning succeeds");
    let owner = env.owner_pool().await;
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'tenant.provisioned'")
        .fetch_one(&owner)
        .await
        .expect("count");
    assert_eq!(tenants, 1, "and only one tenant exists in the event store");
    keel.stop().await;
}

#[tokio::test]
async fn a_suspended_tenant_cannot_be_suspended_again() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let tenant = provision(&mut client, &token, &domain("susp")).await;
    let suspend = || SuspendTenantRequest {
        tenant_id: tenant.tenant_id.clone(),
        reason: "unpaid".into(),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
    };
    let first = client.suspend_tenant(authed(suspend(), &token)).await.expect("suspend").into_inner();
    assert!(first.position > tenant.position);
    let again = client.suspend_tenant(authed(suspend(), &token)).await.expect_err("second suspend");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(error_code(&again), "tenant_not_active");
    keel.stop().await;
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_returns_the_first_result_and_no_second_effect() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let request = provision_request(&domain("idem"));
    let first = client.provision_tenant(authed(request.clone(), &token)).await.expect("first").into_inner();
    let retry = client.provision_tenant(authed(request.clone(), &token)).await.expect("retry").into_inner();
    assert_eq!(first, retry);

    // After the state moved on, a retry of an old command returns its first result and does nothing.
    let suspend = SuspendTenantRequest {
        tenant_id: first.tenant_id.clone(),
        reason: String::new(),
        idempotency_key: "s-1".into(),
    };
    let suspended = client.suspend_tenant(authed(suspend.clone(), &token)).await.expect("suspend").into_inner();
    let reactivate = ReactivateTenantRequest { tenant_id: first.tenant_id.clone(), idempotency_key: "r-1".into() };
    client.reactivate_tenant(authed(reactivate, &token)).await.expect("reactivate");
    let retried = client.suspend_tenant(authed(suspend, &token)).await.expect("retried suspend").into_inner();
    assert_eq!(retried, suspended);

    // The same key with another request is refused.
    let mut other = request.clone();
    other.name = "Someone else".into();
    let reused = client.provision_tenant(authed(other, &token)).await.expect_err("reused key");
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(error_code(&reused), "idempotency_key_reused");

    let owner = env.owner_pool().await;
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'tenant' AND aggregate_id = $1")
            .bind(&first.tenant_id)
            .fetch_one(&owner)
            .await
            .expect("count");
    assert_eq!(events, 3, "provisioned, suspended, reactivated: no retry made a second effect");
    keel.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_invalid_argument_and_changes_nothing() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let cases = [
        (
            "name",
            {
                let mut r = provision_request(&domain("bad"));
                r.name = " ".into();
                r
            },
            "invalid_name",
        ),
        (
            "domain",
            {
                let mut r = provision_request("x");
                r.domain = "not a domain".into();
                r
            },
            "invalid_domain",
        ),
        (
            "plan",
            {
                let mut r = provision_request(&domain("bad"));
                r.plan = "platinum".into();
                r
            },
            "invalid_plan",
        ),
        (
            "email",
            {
                let mut r = provision_request(&domain("bad"));
                r.owner_email = "nobody".into();
                r
            },
            "invalid_owner_email",
        ),
        (
            "industry",
            {
                let mut r = provision_request(&domain("bad"));
                r.industry = "fin tech".into();
                r
            },
            "invalid_industry",
        ),
        (
            "region",
            {
                let mut r = provision_request(&domain("bad"));
                r.region = "-eu".into();
                r
            },
            "invalid_region",
        ),
        (
            "key",
            {
                let mut r = provision_request(&domain("bad"));
                r.idempotency_key = String::new();
                r
            },
            "invalid_idempotency_key",
        ),
    ];
    for (what, request, code) in cases {
        let status = client.provision_tenant(authed(request, &token)).await.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(error_code(&status), code, "{what}");
        assert!(!status.message().to_lowercase().contains("sql"), "{what}: no internals in {:?}", status.message());
    }
    let bad_id = client
        .suspend_tenant(authed(
            SuspendTenantRequest { tenant_id: "nope".into(), reason: String::new(), idempotency_key: "k".into() },
            &token,
        ))
        .await
        .expect_err("bad id");
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    let unknown = client
        .reactivate_tenant(authed(
            ReactivateTenantRequest {
                tenant_id: "tnt_01jd0000000000000000000000".into(),
                idempotency_key: "k2".into(),
            },
            &token,
        ))
        .await
        .expect_err("unknown tenant");
    assert_eq!(unknown.code(), Code::NotFound);

    let owner = env.owner_pool().await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type <> 'audit'")
        .fetch_one(&owner)
        .await
        .expect("count");
    assert_eq!(events, 0, "no refused command changed anything");
    let refusals: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'audit' AND payload->'record'->>'outcome' = 'failure'",
    )
    .fetch_one(&owner)
    .await
    .expect("count");
    assert!(refusals >= 2, "every refusal is in the audit trail");
    keel.stop().await;
}

#[tokio::test]
async fn every_command_needs_a_valid_credential() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let missing =
        client.provision_tenant(tonic::Request::new(provision_request(&domain("anon")))).await.expect_err("anonymous");
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(missing.metadata().get("x-correlation-id").is_some(), "refusals name their correlation id too");
    let forged = client
        .provision_tenant(authed(provision_request(&domain("forged")), "keel_op_forged"))
        .await
        .expect_err("forged");
    assert_eq!(forged.code(), Code::Unauthenticated);
    keel.stop().await;
}

#[tokio::test]
async fn the_lifecycle_runs_end_to_end_and_every_step_is_readable_at_its_position() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let http = reqwest::Client::new();
    let tenant = provision(&mut client, &token, &domain("life")).await;
    let read = |position: i64| {
        let request = http
            .get(format!("http://{}/v1/control-plane/tenants/{}", keel.rest_addr, tenant.tenant_id))
            .bearer_auth(&token)
            .header("X-Keel-Min-Position", position.to_string());
        async move { request.send().await.expect("GET").json::<serde_json::Value>().await.expect("json") }
    };
    assert_eq!(read(tenant.position).await["status"], "active");

    let key = || uuid::Uuid::new_v4().to_string();
    let id = tenant.tenant_id.clone();
    let p = client
        .change_plan(authed(
            ChangePlanRequest { tenant_id: id.clone(), plan: "enterprise".into(), idempotency_key: key() },
            &token,
        ))
        .await
        .expect("plan")
        .into_inner()
        .position;
    assert_eq!(read(p).await["plan"], "enterprise");
    let p = client
        .request_tenant_deletion(authed(
            RequestTenantDeletionRequest { tenant_id: id.clone(), idempotency_key: key() },
            &token,
        ))
        .await
        .expect("delete")
        .into_inner()
        .position;
    let pending = read(p).await;
    assert_eq!(pending["status"], "pending_deletion");
    assert!(pending["purge_after"].is_string());
    let refused = client
        .suspend_tenant(authed(
            SuspendTenantRequest { tenant_id: id.clone(), reason: String::new(), idempotency_key: key() },
            &token,
        ))
        .await
        .expect_err("no suspension while deletion is pending");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let p = client
        .restore_tenant(authed(RestoreTenantRequest { tenant_id: id.clone(), idempotency_key: key() }, &token))
        .await
        .expect("restore")
        .into_inner()
        .position;
    assert_eq!(read(p).await["status"], "active");
    let again = client
        .restore_tenant(authed(RestoreTenantRequest { tenant_id: id.clone(), idempotency_key: key() }, &token))
        .await
        .expect_err("nothing to restore");
    assert_eq!(again.code(), Code::FailedPrecondition);
    wait_projected(&keel.pool, "tenant_registry", &env.topic, p, Duration::from_secs(5)).await;
    keel.stop().await;
}

#[tokio::test]
async fn a_tenant_profile_is_set_at_provisioning_changed_by_operators_and_readable_at_its_position() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let http = reqwest::Client::new();
    let mut request = provision_request(&domain("profile"));
    request.industry = "FinTech".into();
    request.region = "ap-northeast-1".into();
    let tenant = client.provision_tenant(authed(request, &token)).await.expect("provision").into_inner();
    let id = tenant.tenant_id.clone();
    let read = |position: i64| {
        let request = http
            .get(format!("http://{}/v1/control-plane/tenants/{id}", keel.rest_addr))
            .bearer_auth(&token)
            .header("X-Keel-Min-Position", position.to_string());
        async move { request.send().await.expect("GET").json::<serde_json::Value>().await.expect("json") }
    };
    let row = read(tenant.position).await;
    assert_eq!((&row["industry"], &row["region"]), (&"fintech".into(), &"ap-northeast-1".into()), "{row}");

    let set = |industry: &str, region: &str| SetTenantProfileRequest {
        tenant_id: tenant.tenant_id.clone(),
        industry: industry.into(),
        region: region.into(),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
    };
    let changed = client.set_tenant_profile(authed(set("healthcare", ""), &token)).await.expect("set").into_inner();
    assert!(changed.position > tenant.position);
    let row = read(changed.position).await;
    assert_eq!((&row["industry"], &row["region"]), (&"healthcare".into(), &serde_json::Value::Null), "{row}");
    assert_eq!(row["version"], changed.position);

    let same = client.set_tenant_profile(authed(set("healthcare", ""), &token)).await.expect_err("no-op");
    assert_eq!((same.code(), error_code(&same)), (Code::FailedPrecondition, "same_profile".into()));
    for (request, code) in
        [(set("health care", "eu-west-1"), "invalid_industry"), (set("retail", "EU_WEST"), "invalid_region")]
    {
        let bad = client.set_tenant_profile(authed(request, &token)).await.expect_err(code);
        assert_eq!((bad.code(), error_code(&bad)), (Code::InvalidArgument, code.into()));
    }

    // A tenant user (even the owner) may not set the profile, of its own tenant or another.
    let (own_tenant, _, _, owner_access) = tenant_with_owner(&env, &keel, &token, "profile-owner").await;
    let own = SetTenantProfileRequest { tenant_id: own_tenant, ..set("retail", "us-east-1") };
    let denied = client.set_tenant_profile(authed(own, &owner_access)).await.expect_err("owner");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let hidden = client.set_tenant_profile(authed(set("retail", "us-east-1"), &owner_access)).await.expect_err("other");
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");

    let owner = env.owner_pool().await;
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'tenant' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&tenant.tenant_id)
    .fetch_all(&owner)
    .await
    .expect("events");
    assert_eq!(events, ["tenant.provisioned", "tenant.profile_changed"], "refusals wrote nothing");
    let row = read(changed.position).await;
    assert_eq!((&row["industry"], &row["region"]), (&"healthcare".into(), &serde_json::Value::Null), "{row}");
    keel.stop().await;
}

#[tokio::test]
async fn a_retry_whose_idempotency_record_was_lost_finds_its_own_tenant() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let token = env.operator_token().await;
    let mut client = tenant_client(keel.grpc_addr).await;
    let request = provision_request(&domain("lost"));
    let first = client.provision_tenant(authed(request.clone(), &token)).await.expect("first").into_inner();
    // As after a crash that lost the (asynchronously committed) idempotency record.
    let owner = env.owner_pool().await;
    sqlx::query("DELETE FROM command_idempotency").execute(&owner).await.expect("forget");
    let retry = client.provision_tenant(authed(request.clone(), &token)).await.expect("retry").into_inner();
    assert_eq!(retry.tenant_id, first.tenant_id, "the retry recognises the tenant its first attempt created");
    // Someone else's request for the same domain is still refused.
    let mut other = request;
    other.idempotency_key = "another-request".into();
    let taken = client.provision_tenant(authed(other, &token)).await.expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'tenant.provisioned'")
        .fetch_one(&owner)
        .await
        .expect("count");
    assert_eq!(tenants, 1);
    keel.stop().await;
}
