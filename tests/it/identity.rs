//! Identity end to end: invitations, login, tokens, revocation, policies, brute-force
//! protection and tenant isolation, through the public REST and gRPC APIs.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use keel_gateway::proto::{
    ChangePasswordRequest, ChangeUserRoleRequest, InviteUserRequest, ListInvitationsRequest, ListUsersRequest,
    ProvisionTenantRequest, ReactivateTenantRequest, RevokeSessionRequest, SetPasswordPolicyRequest,
    SuspendTenantRequest, UserRequest,
};
use keel_tests::{TestEnv, eventually};
use serde_json::json;
use tonic::Code;

use crate::support::{
    PASSWORD, Rest, authed, domain, error_code, key, provision_request, tenant_client, tenant_with_owner, user_client,
};

fn user_request(tenant_id: &str, user_id: &str) -> UserRequest {
    UserRequest { tenant_id: tenant_id.into(), user_id: user_id.into(), idempotency_key: key() }
}

/// Invites `email` with `role` as `inviter`, accepts, logs in: (user id, access, refresh).
async fn member(
    env: &TestEnv,
    keel: &keel_gateway::server::Running,
    inviter: &str,
    tenant_id: &str,
    domain: &str,
    email: &str,
    role: &str,
) -> (String, String, String) {
    let mut users = user_client(keel.grpc_addr).await;
    let invited = users
        .invite_user(authed(
            InviteUserRequest {
                tenant_id: tenant_id.into(),
                email: email.into(),
                role: role.into(),
                idempotency_key: key(),
            },
            inviter,
        ))
        .await
        .expect("invite")
        .into_inner();
    let token = env.mailed_token(email, "keel_inv_").await;
    let rest = Rest::new(keel.rest_addr);
    let (status, body) =
        rest.post("/v1/auth/invitations/accept", json!({ "token": token, "password": PASSWORD })).await;
    assert_eq!(status, 200, "{body}");
    let (access, refresh) = rest.tokens(email, PASSWORD, Some(domain)).await;
    (invited.user_id, access, refresh)
}

#[tokio::test]
async fn an_access_token_verifies_with_a_stock_jwt_library_from_discovery_and_jwks_alone() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (tenant_id, _, _, access) = tenant_with_owner(&env, &keel, &operator, "jwt").await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", keel.rest_addr);
    let discovery: serde_json::Value =
        http.get(format!("{base}/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    let issuer = discovery["issuer"].as_str().expect("issuer");
    let jwks: JwkSet = http.get(discovery["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(&access).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("the kid is published");
    let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&["keel"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&access, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("verifies")
        .claims;
    assert_eq!(claims["tid"], tenant_id.as_str());
    assert_eq!(claims["role"], "owner");
    assert!(claims["sub"].as_str().unwrap().starts_with("usr_"));
    assert!(claims["sid"].as_str().unwrap().starts_with("ses_"));
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(lifetime > 0 && lifetime <= 300, "short-lived: {lifetime}s");
    // A tampered token does not verify.
    let mut forged = access.clone();
    forged.pop();
    forged.push(if access.ends_with('A') { 'B' } else { 'A' });
    assert!(
        jsonwebtoken::decode::<serde_json::Value>(&forged, &DecodingKey::from_jwk(jwk).unwrap(), &validation).is_err()
    );
    // The owner reads its own tenant, and nothing else.
    let own = http.get(format!("{base}/v1/control-plane/tenants/{tenant_id}")).bearer_auth(&access);
    let own = own.header("X-Keel-Min-Position", "1").send().await.unwrap();
    assert_eq!(own.status(), 200);
    let list = http.get(format!("{base}/v1/control-plane/tenants")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(list.status(), 403);
    keel.stop().await;
}

#[tokio::test]
async fn invitations_are_single_use_resend_replaces_them_and_expired_ones_fail() {
    let env = TestEnv::new().await;
    let keel = env.start_reading_every_aggregate().await;
    let operator = env.operator_token().await;
    let (tenant_id, _, _, owner) = tenant_with_owner(&env, &keel, &operator, "inv").await;
    let rest = Rest::new(keel.rest_addr);
    let mut users = user_client(keel.grpc_addr).await;
    let invite = |email: &str| InviteUserRequest {
        tenant_id: tenant_id.clone(),
        email: email.into(),
        role: "user".into(),
        idempotency_key: key(),
    };
    let first_invite = invite("ann@example.com");
    let ann = users.invite_user(authed(first_invite.clone(), &owner)).await.unwrap().into_inner();
    let retried = users.invite_user(authed(first_invite, &owner)).await.expect("retry").into_inner();
    assert_eq!(retried, ann, "a retry with the same key returns the first result");
    let again = users.invite_user(authed(invite("ANN@Example.com"), &owner)).await.expect_err("duplicate e-mail");
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(error_code(&again), "email_taken");
    let owner_role = InviteUserRequest { role: "owner".into(), ..invite("olga@example.com") };
    let refused = users.invite_user(authed(owner_role, &owner)).await.expect_err("owners are not invited");
    assert_eq!(refused.code(), Code::InvalidArgument);

    let first = env.mailed_token("ann@example.com", "keel_inv_").await;
    assert_eq!(env.mailed_tokens("ann@example.com", "keel_inv_").len(), 1, "and sends no second invitation");
    users.resend_invitation(authed(user_request(&tenant_id, &ann.user_id), &owner)).await.expect("resend");
    let tokens = env.mailed_tokens("ann@example.com", "keel_inv_");
    assert_eq!(tokens.len(), 2, "a fresh token was mailed");
    let second = tokens[1].clone();
    assert_ne!(first, second);

    let accept = |token: &str, password: &str| json!({ "token": token, "password": password });
    let (status, body) = rest.post("/v1/auth/invitations/accept", accept(&first, PASSWORD)).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invitation_invalid")), "the resent invitation replaced it");
    let (status, body) = rest.post("/v1/auth/invitations/accept", accept(&second, "short")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("weak_password")), "{body}");
    let (status, body) = rest.post("/v1/auth/invitations/accept", accept(&second, PASSWORD)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rest.post("/v1/auth/invitations/accept", accept(&second, PASSWORD)).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invitation_invalid")), "single use");
    rest.tokens("ann@example.com", PASSWORD, Some(&crate_domain(&env, &tenant_id).await)).await;

    // An invitation sent long ago: its expiry is in the past.
    let bob = users.invite_user(authed(invite("bob@example.com"), &owner)).await.unwrap().into_inner();
    let pending = users
        .list_invitations(authed(ListInvitationsRequest { tenant_id: tenant_id.clone(), ..Default::default() }, &owner))
        .await
        .unwrap()
        .into_inner();
    let listed = pending.invitations.iter().find(|i| i.user_id == bob.user_id).expect("bob's invitation is pending");
    assert!(!listed.expired);
    age_invitation(&env, &bob.user_id).await;
    let token = env.mailed_token("bob@example.com", "keel_inv_").await;
    let (status, body) = rest.post("/v1/auth/invitations/accept", accept(&token, PASSWORD)).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("invitation_expired")), "{body}");
    let (status, _) = rest.login("bob@example.com", PASSWORD, Some(&crate_domain(&env, &tenant_id).await)).await;
    assert_eq!(status, 401, "an expired invitation changed nothing");
    // Resending gives a fresh expiry.
    users.resend_invitation(authed(user_request(&tenant_id, &bob.user_id), &owner)).await.expect("resend");
    let token = env.mailed_tokens("bob@example.com", "keel_inv_").pop().unwrap();
    let (status, _) = rest.post("/v1/auth/invitations/accept", accept(&token, PASSWORD)).await;
    assert_eq!(status, 200);
    keel.stop().await;
}

/// The tenant's domain, from the identity index.
async fn crate_domain(env: &TestEnv, tenant_id: &str) -> String {
    let owner = env.owner_pool().await;
    let domain = sqlx::query_scalar("SELECT domain FROM auth_tenants WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&owner)
        .await
        .unwrap();
    owner.close().await;
    domain
}

/// Moves a user's invitation expiry into the past, as if it had been sent 30 days ago.
async fn age_invitation(env: &TestEnv, user_id: &str) {
    let owner = env.owner_pool().await;
    sqlx::query(
        "UPDATE events SET payload = jsonb_set(payload, '{invitation,expires_at}', '\"2020-01-01T00:00:00Z\"')
         WHERE aggregate_type = 'directory' AND payload->>'user_id' = $1
           AND event_type IN ('user.invited', 'user.invitation_resent')",
    )
    .bind(user_id)
    .execute(&owner)
    .await
    .unwrap();
    sqlx::query("UPDATE auth_users SET invitation_expires_at = '2020-01-01T00:00:00Z' WHERE user_id = $1")
        .bind(user_id)
        .execute(&owner)
        .await
        .unwrap();
    owner.close().await;
}

#[tokio::test]
async fn the_last_owner_stays_and_only_owners_touch_owners() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (tenant_id, domain, _, owner) = tenant_with_owner(&env, &keel, &operator, "owners").await;
    let mut users = user_client(keel.grpc_addr).await;
    let listed = users
        .list_users(authed(
            ListUsersRequest { tenant_id: tenant_id.clone(), role: "owner".into(), ..Default::default() },
            &owner,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.users.len(), 1);
    let owner_id = listed.users[0].user_id.clone();
    let role = |user: &str, role: &str| ChangeUserRoleRequest {
        tenant_id: tenant_id.clone(),
        user_id: user.into(),
        role: role.into(),
        idempotency_key: key(),
    };
    for status in [
        users.change_user_role(authed(role(&owner_id, "admin"), &owner)).await.expect_err("demote"),
        users.disable_user(authed(user_request(&tenant_id, &owner_id), &owner)).await.expect_err("disable"),
        users.delete_user(authed(user_request(&tenant_id, &owner_id), &owner)).await.expect_err("delete"),
        users.change_user_role(authed(role(&owner_id, "user"), &operator)).await.expect_err("operators too"),
    ] {
        assert_eq!((status.code(), error_code(&status)), (Code::FailedPrecondition, "last_owner".into()));
    }
    let (admin_id, admin, _) = member(&env, &keel, &owner, &tenant_id, &domain, "adam@example.com", "admin").await;
    let (user_id, _, _) = member(&env, &keel, &admin, &tenant_id, &domain, "uma@example.com", "user").await;
    for status in [
        users.change_user_role(authed(role(&owner_id, "user"), &admin)).await.expect_err("admin demotes owner"),
        users.change_user_role(authed(role(&user_id, "owner"), &admin)).await.expect_err("admin makes owner"),
        users
            .disable_user(authed(user_request(&tenant_id, &owner_id), &admin))
            .await
            .expect_err("admin disables owner"),
    ] {
        assert_eq!((status.code(), error_code(&status)), (Code::PermissionDenied, "owner_required".into()));
    }
    // Admins manage users; owners make owners; then the first owner may step down.
    users.change_user_role(authed(role(&user_id, "admin"), &admin)).await.expect("admin promotes a user to admin");
    users.change_user_role(authed(role(&admin_id, "owner"), &owner)).await.expect("owner makes an owner");
    users.change_user_role(authed(role(&owner_id, "user"), &operator)).await.expect("no longer the last owner");
    keel.stop().await;
}

/// Waits (bounded by the 1 s goal, plus scheduling slack) until `access` introspects inactive.
async fn inactive_within_a_second(rest: &Rest, access: &str) -> Duration {
    let started = Instant::now();
    let ended = eventually(Duration::from_millis(1500), || async { !rest.active(access).await }).await;
    assert!(ended, "still active after {:?}", started.elapsed());
    started.elapsed()
}

#[tokio::test]
async fn every_revocation_trigger_ends_sessions_at_once() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (tenant_id, domain, _, owner) = tenant_with_owner(&env, &keel, &operator, "revoke").await;
    let rest = Rest::new(keel.rest_addr);
    let mut users = user_client(keel.grpc_addr).await;
    let (user_id, _, _) = member(&env, &keel, &owner, &tenant_id, &domain, "rita@example.com", "user").await;
    let refresh_refused = |refresh: String| {
        let rest = rest.clone();
        async move {
            let (status, body) = rest.post("/v1/auth/token", json!({ "refresh_token": refresh })).await;
            assert_eq!((status, body["code"].as_str()), (401, Some("invalid_grant")), "{body}");
        }
    };
    let login = || rest.tokens("rita@example.com", PASSWORD, Some(&domain));

    // Logout.
    let (access, refresh) = login().await;
    assert!(rest.active(&access).await);
    let logout = rest.http.post(format!("{}/v1/auth/logout", rest.base)).bearer_auth(&access).send().await.unwrap();
    assert_eq!(logout.status(), 204);
    refresh_refused(refresh).await;
    inactive_within_a_second(&rest, &access).await;

    // Administrative revocation of one session, and of all of a user's sessions.
    let (access, refresh) = login().await;
    let sid = session_of(&rest, &access).await;
    let sessions = users.list_user_sessions(authed(user_request(&tenant_id, &user_id), &owner)).await.unwrap();
    assert!(sessions.into_inner().sessions.iter().any(|s| s.session_id == sid));
    let revoke = RevokeSessionRequest { tenant_id: tenant_id.clone(), session_id: sid, idempotency_key: key() };
    users.revoke_session(authed(revoke, &owner)).await.expect("revoke session");
    refresh_refused(refresh).await;
    inactive_within_a_second(&rest, &access).await;
    let (access, refresh) = login().await;
    users.revoke_user_sessions(authed(user_request(&tenant_id, &user_id), &owner)).await.expect("revoke all");
    refresh_refused(refresh).await;
    inactive_within_a_second(&rest, &access).await;

    // Role change.
    let (access, refresh) = login().await;
    let change = ChangeUserRoleRequest {
        tenant_id: tenant_id.clone(),
        user_id: user_id.clone(),
        role: "admin".into(),
        idempotency_key: key(),
    };
    users.change_user_role(authed(change, &owner)).await.expect("role change");
    refresh_refused(refresh).await;
    inactive_within_a_second(&rest, &access).await;

    // Own password change.
    let (access, refresh) = login().await;
    let change = ChangePasswordRequest {
        current_password: "wrong password entirely".into(),
        new_password: "an even better passphrase".into(),
        idempotency_key: key(),
    };
    let wrong = users.change_password(authed(change.clone(), &access)).await.expect_err("needs the current password");
    assert_eq!(wrong.code(), Code::PermissionDenied);
    let change = ChangePasswordRequest { current_password: PASSWORD.into(), ..change };
    users.change_password(authed(change, &access)).await.expect("change password");
    refresh_refused(refresh).await;
    inactive_within_a_second(&rest, &access).await;

    // Password reset.
    let (access, refresh) = rest.tokens("rita@example.com", "an even better passphrase", Some(&domain)).await;
    let (status, _) =
        rest.post("/v1/auth/password-reset", json!({ "email": "rita@example.com", "tenant": domain })).await;
    assert_eq!(status, 202);
    let token = env.mailed_token("rita@example.com", "keel_pwr_").await;
    assert!(rest.active(&access).await, "asking for a reset ends nothing");
    let (status, body) =
        rest.post("/v1/auth/password-reset/confirm", json!({ "token": token, "password": PASSWORD })).await;
    assert_eq!(status, 200, "{body}");
    refresh_refused(refresh).await;
    inactive_within_a_second(&rest, &access).await;
    let (status, _) =
        rest.post("/v1/auth/password-reset/confirm", json!({ "token": token, "password": PASSWORD })).await;
    assert_eq!(status, 422, "reset tokens are single use");

    // Disable, then delete.
    let (access, refresh) = login().await;
    users.disable_user(authed(user_request(&tenant_id, &user_id), &owner)).await.expect("disable");
    refresh_refused(refresh).await;
    inactive_within_a_second(&rest, &access).await;
    let (status, body) = rest.login("rita@example.com", PASSWORD, Some(&domain)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("user_disabled")));
    users.enable_user(authed(user_request(&tenant_id, &user_id), &owner)).await.expect("enable");
    let (access, refresh) = login().await;
    users.delete_user(authed(user_request(&tenant_id, &user_id), &owner)).await.expect("delete");
    refresh_refused(refresh).await;
    inactive_within_a_second(&rest, &access).await;
    let (status, _) = rest.login("rita@example.com", PASSWORD, Some(&domain)).await;
    assert_eq!(status, 401);

    // Tenant suspension ends every session of the tenant and blocks sign-in until reactivated.
    let (owner_access, owner_refresh) =
        rest.tokens(&format!("owner@{domain}.example.com"), PASSWORD, Some(&domain)).await;
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let suspend =
        SuspendTenantRequest { tenant_id: tenant_id.clone(), reason: "unpaid".into(), idempotency_key: key() };
    tenants.suspend_tenant(authed(suspend, &operator)).await.expect("suspend");
    refresh_refused(owner_refresh).await;
    inactive_within_a_second(&rest, &owner_access).await;
    let (status, body) = rest.login(&format!("owner@{domain}.example.com"), PASSWORD, Some(&domain)).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("tenant_suspended")), "{body}");
    let reactivate = ReactivateTenantRequest { tenant_id: tenant_id.clone(), idempotency_key: key() };
    tenants.reactivate_tenant(authed(reactivate, &operator)).await.expect("reactivate");
    rest.tokens(&format!("owner@{domain}.example.com"), PASSWORD, Some(&domain)).await;

    // None of the secrets of all this reached the event log.
    let owner = env.owner_pool().await;
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE (payload::text || metadata::text) ~ '(argon2|keel_inv_|keel_pwr_|keel_rt_|eyJ)'",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "no password hash or token in any event");
    keel.stop().await;
}

async fn session_of(rest: &Rest, access: &str) -> String {
    let (_, body) = rest.post("/v1/auth/introspect", json!({ "token": access })).await;
    body["sid"].as_str().expect("sid").to_string()
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_session() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (_, domain, email, _) = tenant_with_owner(&env, &keel, &operator, "rotate").await;
    let rest = Rest::new(keel.rest_addr);
    let (access, first) = rest.tokens(&email, PASSWORD, Some(&domain)).await;
    let (status, body) = rest.post("/v1/auth/introspect", json!({ "token": first })).await;
    assert_eq!(
        (status, body["token_type"].as_str(), body["active"].as_bool()),
        (200, Some("refresh_token"), Some(true))
    );
    let (status, grant) = rest.post("/v1/auth/token", json!({ "refresh_token": first })).await;
    assert_eq!(status, 200, "{grant}");
    let second = grant["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(grant["token_type"], "Bearer");
    assert!(rest.active(grant["access_token"].as_str().unwrap()).await);
    assert!(!rest.active(&first).await, "a used refresh token is not active");
    // Presenting the used one again: refused, and the whole session ends.
    let (status, _) = rest.post("/v1/auth/token", json!({ "refresh_token": first })).await;
    assert_eq!(status, 401);
    let (status, _) = rest.post("/v1/auth/token", json!({ "refresh_token": second })).await;
    assert_eq!(status, 401, "the session ended");
    inactive_within_a_second(&rest, &access).await;
    // Forged and malformed tokens are refused without ending anything.
    let (status, body) = rest.post("/v1/auth/token", json!({ "refresh_token": "keel_rt_ses_x.0.AAAA" })).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_grant")));
    let (status, body) = rest.post("/v1/auth/token", json!({ "nope": 1 })).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_body")));
    keel.stop().await;
}

#[tokio::test]
async fn password_policies_apply_whenever_a_password_is_set() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (tenant_id, domain, email, owner) = tenant_with_owner(&env, &keel, &operator, "policy").await;
    let rest = Rest::new(keel.rest_addr);
    let mut users = user_client(keel.grpc_addr).await;
    let policy = |min_length| SetPasswordPolicyRequest {
        tenant_id: tenant_id.clone(),
        min_length,
        require_lowercase: true,
        require_uppercase: true,
        require_digit: true,
        require_symbol: true,
        invitation_ttl_days: 3,
        idempotency_key: key(),
    };
    let bad = users.set_password_policy(authed(policy(4), &owner)).await.expect_err("too lax");
    assert_eq!((bad.code(), error_code(&bad)), (Code::InvalidArgument, "invalid_policy".into()));
    users.set_password_policy(authed(policy(14), &owner)).await.expect("set policy");
    let strong = "Tr0ub4dor&3-horse";
    let weak = ChangePasswordRequest {
        current_password: PASSWORD.into(),
        new_password: "alllowercaseletters".into(),
        idempotency_key: key(),
    };
    let refused = users.change_password(authed(weak, &owner)).await.expect_err("weak");
    assert_eq!((refused.code(), error_code(&refused)), (Code::InvalidArgument, "weak_password".into()));
    assert!(refused.message().contains("uppercase"), "{}", refused.message());
    // Invitations: the tenant's TTL and policy.
    users
        .invite_user(authed(
            InviteUserRequest {
                tenant_id: tenant_id.clone(),
                email: "pat@example.com".into(),
                role: "user".into(),
                idempotency_key: key(),
            },
            &owner,
        ))
        .await
        .unwrap();
    let pending = users
        .list_invitations(authed(ListInvitationsRequest { tenant_id: tenant_id.clone(), ..Default::default() }, &owner))
        .await
        .unwrap()
        .into_inner();
    let expires = chrono::DateTime::parse_from_rfc3339(&pending.invitations[0].expires_at).unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((2.9..=3.0).contains(&days), "invitation lives 3 days: {days}");
    let token = env.mailed_token("pat@example.com", "keel_inv_").await;
    let (status, _) = rest.post("/v1/auth/invitations/accept", json!({ "token": token, "password": PASSWORD })).await;
    assert_eq!(status, 400, "the default-policy password no longer passes");
    let (status, _) = rest.post("/v1/auth/invitations/accept", json!({ "token": token, "password": strong })).await;
    assert_eq!(status, 200);
    // Reset.
    rest.post("/v1/auth/password-reset", json!({ "email": email, "tenant": domain })).await;
    let token = env.mailed_token(&email, "keel_pwr_").await;
    let (status, _) =
        rest.post("/v1/auth/password-reset/confirm", json!({ "token": token, "password": "Short1!" })).await;
    assert_eq!(status, 400);
    let (status, _) = rest.post("/v1/auth/password-reset/confirm", json!({ "token": token, "password": strong })).await;
    assert_eq!(status, 200);
    rest.tokens(&email, strong, Some(&domain)).await;
    keel.stop().await;
}

#[tokio::test]
async fn login_and_reset_never_tell_whether_an_account_exists() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (_, domain, email, _) = tenant_with_owner(&env, &keel, &operator, "enum").await;
    let rest = Rest::new(keel.rest_addr);
    let mut timings = (Vec::new(), Vec::new());
    for i in 0..3 {
        let started = Instant::now();
        let (s1, wrong) = rest.login(&email, &format!("wrong password {i}"), Some(&domain)).await;
        timings.0.push(started.elapsed());
        let started = Instant::now();
        let (s2, unknown) = rest.login(&format!("nobody{i}@example.com"), "whatever it is", Some(&domain)).await;
        timings.1.push(started.elapsed());
        assert_eq!((s1, s2), (401, 401));
        assert_eq!(
            (wrong["code"].clone(), wrong["detail"].clone()),
            (unknown["code"].clone(), unknown["detail"].clone())
        );
    }
    let (s3, unknown_tenant) = rest.login(&email, "whatever it is", Some("no-such-tenant")).await;
    assert_eq!((s3, unknown_tenant["code"].as_str()), (401, Some("invalid_credentials")));
    timings.0.sort();
    timings.1.sort();
    let (wrong, unknown) = (timings.0[1].as_secs_f64(), timings.1[1].as_secs_f64());
    assert!(unknown > wrong * 0.5 && unknown < wrong * 2.0, "median wrong {wrong:.3}s vs unknown {unknown:.3}s");
    // Reset requests answer the same; only a real account gets mail.
    let (a, known) = rest.post("/v1/auth/password-reset", json!({ "email": email, "tenant": domain })).await;
    let (b, nobody) =
        rest.post("/v1/auth/password-reset", json!({ "email": "nobody@example.com", "tenant": domain })).await;
    assert_eq!((a, b), (202, 202));
    assert_eq!(known, nobody);
    env.mailed_token(&email, "keel_pwr_").await;
    assert!(env.mailed_tokens("nobody@example.com", "keel_pwr_").is_empty());
    keel.stop().await;
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_account_and_per_address() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (_, domain, email, owner_access) = tenant_with_owner(&env, &keel, &operator, "brute").await;
    let rest = Rest::new(keel.rest_addr);
    for i in 0..5 {
        let (status, _) = rest.login(&email, &format!("guess {i}"), Some(&domain)).await;
        assert_eq!(status, 401);
    }
    let response = rest
        .http
        .post(format!("{}/v1/auth/login", rest.base))
        .json(&json!({ "email": email, "password": PASSWORD, "tenant": domain }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429, "locked even with the right password");
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "too_many_attempts");
    assert_eq!(body["status"], 429);
    // Spraying many accounts from one address: 20 failures throttle the address.
    for i in 0..15 {
        let (status, _) = rest.login(&format!("spray{i}@example.com"), "guess", Some(&domain)).await;
        assert_eq!(status, 401, "attempt {i}");
    }
    let (status, _) = rest.login("another@example.com", "guess", Some(&domain)).await;
    assert_eq!(status, 429, "the address is throttled");
    let owner = env.owner_pool().await;
    let throttles: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'subject' FROM events WHERE event_type = 'login.throttled' ORDER BY position",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert_eq!(throttles, ["account", "address"], "lockouts are events");
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id LIKE '%@%' OR metadata::text LIKE '%127.0.0.1%'",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "neither e-mails nor addresses name throttle subjects");
    // Guessing the current password over gRPC is throttled too.
    let mut users = user_client(keel.grpc_addr).await;
    let guess = |i: usize| ChangePasswordRequest {
        current_password: format!("guess {i}"),
        new_password: "a brand new passphrase".into(),
        idempotency_key: key(),
    };
    for i in 0..5 {
        let refused = users.change_password(authed(guess(i), &owner_access)).await.expect_err("wrong password");
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    let throttled = users.change_password(authed(guess(5), &owner_access)).await.expect_err("throttled");
    assert_eq!((throttled.code(), error_code(&throttled)), (Code::ResourceExhausted, "too_many_attempts".into()));
    keel.stop().await;
}

#[tokio::test]
async fn another_tenants_identity_data_is_never_reachable() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (a_id, a_domain, _, a_owner) = tenant_with_owner(&env, &keel, &operator, "tenant-a").await;
    let (b_id, b_domain, _, b_owner) = tenant_with_owner(&env, &keel, &operator, "tenant-b").await;
    let (b_user, _, _) = member(&env, &keel, &b_owner, &b_id, &b_domain, "bea@example.com", "user").await;
    let (_, a_plain, _) = member(&env, &keel, &a_owner, &a_id, &a_domain, "al@example.com", "user").await;
    let mut users = user_client(keel.grpc_addr).await;
    let b = |user: &str| user_request(&b_id, user);
    let a_with_b_user = || user_request(&a_id, &b_user);

    // Tenant A's owner against tenant B: every RPC answers NOT_FOUND.
    let invite = InviteUserRequest {
        tenant_id: b_id.clone(),
        email: "x@example.com".into(),
        role: "user".into(),
        idempotency_key: key(),
    };
    let role = ChangeUserRoleRequest {
        tenant_id: b_id.clone(),
        user_id: b_user.clone(),
        role: "admin".into(),
        idempotency_key: key(),
    };
    let policy = SetPasswordPolicyRequest {
        tenant_id: b_id.clone(),
        min_length: 12,
        idempotency_key: key(),
        ..Default::default()
    };
    let revoke = RevokeSessionRequest {
        tenant_id: b_id.clone(),
        session_id: "ses_01jd0000000000000000000000".into(),
        idempotency_key: key(),
    };
    let list = ListUsersRequest { tenant_id: b_id.clone(), ..Default::default() };
    let invitations = ListInvitationsRequest { tenant_id: b_id.clone(), ..Default::default() };
    let results = vec![
        ("InviteUser", users.invite_user(authed(invite, &a_owner)).await.map(drop)),
        ("ResendInvitation", users.resend_invitation(authed(b(&b_user), &a_owner)).await.map(drop)),
        ("ChangeUserRole", users.change_user_role(authed(role, &a_owner)).await.map(drop)),
        ("DisableUser", users.disable_user(authed(b(&b_user), &a_owner)).await.map(drop)),
        ("EnableUser", users.enable_user(authed(b(&b_user), &a_owner)).await.map(drop)),
        ("DeleteUser", users.delete_user(authed(b(&b_user), &a_owner)).await.map(drop)),
        ("RevokeUserSessions", users.revoke_user_sessions(authed(b(&b_user), &a_owner)).await.map(drop)),
        ("RevokeSession", users.revoke_session(authed(revoke, &a_owner)).await.map(drop)),
        ("SetPasswordPolicy", users.set_password_policy(authed(policy, &a_owner)).await.map(drop)),
        ("ListUsers", users.list_users(authed(list, &a_owner)).await.map(drop)),
        ("ListInvitations", users.list_invitations(authed(invitations, &a_owner)).await.map(drop)),
        ("ListUserSessions", users.list_user_sessions(authed(b(&b_user), &a_owner)).await.map(drop)),
        // B's user addressed through A's own tenant: not found either.
        ("DisableUser via own tenant", users.disable_user(authed(a_with_b_user(), &a_owner)).await.map(drop)),
        ("DeleteUser via own tenant", users.delete_user(authed(a_with_b_user(), &a_owner)).await.map(drop)),
        (
            "ListUserSessions via own tenant",
            users.list_user_sessions(authed(a_with_b_user(), &a_owner)).await.map(drop),
        ),
    ];
    for (rpc, result) in results {
        let status = result.expect_err(rpc);
        assert_eq!(status.code(), Code::NotFound, "{rpc}: {status:?}");
    }
    // A plain user of A administers nothing, not even in A.
    let own = [
        users
            .list_users(authed(ListUsersRequest { tenant_id: a_id.clone(), ..Default::default() }, &a_plain))
            .await
            .map(drop),
        users.disable_user(authed(user_request(&a_id, &b_user), &a_plain)).await.map(drop),
    ];
    for result in own {
        assert_eq!(result.expect_err("plain user").code(), Code::PermissionDenied);
    }
    // Tenant users cannot provision; B is still intact.
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let denied =
        tenants.provision_tenant(authed(provision_request(&domain("x")), &a_owner)).await.expect_err("provision");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let rest = Rest::new(keel.rest_addr);
    let other = rest
        .http
        .get(format!("{}/v1/control-plane/tenants/{b_id}", rest.base))
        .bearer_auth(&a_owner)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    rest.tokens("bea@example.com", PASSWORD, Some(&b_domain)).await;
    let (status, _) = rest.login("bea@example.com", PASSWORD, Some(&a_domain)).await;
    assert_eq!(status, 401, "B's user is unknown in A");
    keel.stop().await;
}

#[tokio::test]
async fn operators_and_auditors_sign_in_and_replace_the_bootstrap_credential() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let bootstrap = env.operator_token().await;
    env.platform_user("ops@keel.example.com", PASSWORD, "operator").await;
    env.platform_user("audit@keel.example.com", PASSWORD, "auditor").await;
    let owner = env.owner_pool().await;
    assert!(keel_gateway::auth::retire_bootstrap_credential(&owner).await.unwrap());
    let rest = Rest::new(keel.rest_addr);
    let (operator, _) = rest.tokens("ops@keel.example.com", PASSWORD, None).await;
    let (auditor, _) = rest.tokens("audit@keel.example.com", PASSWORD, None).await;
    let (status, _) = rest.login("ops@keel.example.com", PASSWORD, Some("some-tenant")).await;
    assert_eq!(status, 401, "platform users have no tenant");
    let mut tenants = tenant_client(keel.grpc_addr).await;
    let created = tenants
        .provision_tenant(authed(provision_request(&domain("ops")), &operator))
        .await
        .expect("operator provisions");
    let denied = tenants
        .provision_tenant(authed(ProvisionTenantRequest { ..provision_request(&domain("aud")) }, &auditor))
        .await
        .expect_err("auditors change nothing");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut users = user_client(keel.grpc_addr).await;
    let list = ListUsersRequest { tenant_id: created.into_inner().tenant_id, ..Default::default() };
    let listed = users.list_users(authed(list, &auditor)).await.expect("auditors read").into_inner();
    assert_eq!(listed.users.len(), 1, "the invited owner");
    assert_eq!(listed.users[0].status, "invited");
    // The retired bootstrap credential stops working (its cache lasts 5 s).
    let retired = eventually(Duration::from_secs(8), || {
        let mut tenants = tenants.clone();
        let bootstrap = bootstrap.clone();
        async move {
            let result = tenants.provision_tenant(authed(provision_request(&domain("boot")), &bootstrap)).await;
            matches!(result, Err(status) if status.code() == Code::Unauthenticated)
        }
    })
    .await;
    assert!(retired, "the bootstrap credential was retired");
    keel.stop().await;
}

#[tokio::test]
async fn signing_keys_rotate_with_an_overlap_in_which_both_verify() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    env.platform_user("ops@keel.example.com", PASSWORD, "operator").await;
    let rest = Rest::new(keel.rest_addr);
    let (old, _) = rest.tokens("ops@keel.example.com", PASSWORD, None).await;
    let owner = env.owner_pool().await;
    let kid =
        keel_gateway::auth::tokens::rotate_keys(&owner, keel.kek.as_ref(), Duration::ZERO, Duration::from_secs(600))
            .await
            .unwrap();
    keel.tokens.reload_keys().await.unwrap();
    let jwks: JwkSet =
        rest.http.get(format!("{}/.well-known/jwks.json", rest.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks.keys.len(), 2, "old and new key are both published");
    let (new, _) = rest.tokens("ops@keel.example.com", PASSWORD, None).await;
    assert_eq!(jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(), Some(kid.as_str()), "the new key signs");
    assert_ne!(jsonwebtoken::decode_header(&old).unwrap().kid, jsonwebtoken::decode_header(&new).unwrap().kid);
    assert!(rest.active(&old).await, "tokens of the old key still verify");
    assert!(rest.active(&new).await);
    // Once the old key retires it leaves the JWKS and its tokens stop verifying.
    sqlx::query("UPDATE auth_signing_keys SET retires_at = now() WHERE kid <> $1")
        .bind(&kid)
        .execute(&owner)
        .await
        .unwrap();
    keel.tokens.reload_keys().await.unwrap();
    assert!(!rest.active(&old).await, "a retired key verifies nothing");
    assert!(rest.active(&new).await);
    keel.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_address_is_throttled_on_its_own() {
    let env = TestEnv::new().await;
    let mut settings = env.settings();
    settings.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let keel = env.start_with(settings, keel_gateway::server::Workers::ALL).await;
    let operator = env.operator_token().await;
    let (_, domain, _, _) = tenant_with_owner(&env, &keel, &operator, "proxied").await;
    let rest = Rest::new(keel.rest_addr);
    let attempt = |client: &'static str, i: usize| {
        let (rest, domain) = (rest.clone(), domain.clone());
        async move {
            let body = json!({ "email": format!("spray{i}@example.com"), "password": "guess", "tenant": domain });
            let request = rest.http.post(format!("{}/v1/auth/login", rest.base)).json(&body);
            request.header("x-forwarded-for", client).send().await.unwrap().status().as_u16()
        }
    };
    for i in 0..20 {
        assert_eq!(attempt("203.0.113.7", i).await, 401);
    }
    assert_eq!(attempt("203.0.113.7", 99).await, 429, "that client is throttled");
    assert_eq!(attempt("203.0.113.8", 99).await, 401, "another client behind the same proxy is not");
    keel.stop().await;
}
