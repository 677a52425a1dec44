//! Managed apps and API keys end to end: issuing (secret once, hash only), scopes,
//! revocation, disabling, expiry, audited refusals, and the `keel app` CLI.

use std::time::Duration;

use keel_gateway::proto::app_service_client::AppServiceClient;
use keel_gateway::proto::{
    AppRequest, IssueApiKeyRequest, ListApiKeysRequest, RegisterAppRequest, RevokeApiKeyRequest,
};
use keel_tests::{TestEnv, eventually};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{authed, domain, error_code, key, provision, tenant_client};

pub async fn app_client(addr: std::net::SocketAddr) -> AppServiceClient<Channel> {
    AppServiceClient::connect(format!("http://{addr}")).await.expect("connect gRPC")
}

/// Registers an app and issues it a key with `scopes`: (app id, key id, secret).
pub async fn app_with_key(addr: std::net::SocketAddr, operator: &str, scopes: &[&str]) -> (String, String, String) {
    let mut apps = app_client(addr).await;
    let request = RegisterAppRequest {
        name: "Billing bridge".into(),
        environment: "production".into(),
        idempotency_key: key(),
        ..Default::default()
    };
    let app = apps.register_app(authed(request, operator)).await.expect("register").into_inner();
    let (key_id, secret) = issue(&mut apps, operator, &app.app_id, scopes, "").await;
    (app.app_id, key_id, secret)
}

async fn issue(
    apps: &mut AppServiceClient<Channel>,
    operator: &str,
    app_id: &str,
    scopes: &[&str],
    expires_at: &str,
) -> (String, String) {
    let request = IssueApiKeyRequest {
        app_id: app_id.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        expires_at: expires_at.into(),
        idempotency_key: key(),
    };
    let issued = apps.issue_api_key(authed(request, operator)).await.expect("issue").into_inner();
    keel_tests::logs::secret(&issued.secret);
    (issued.key_id, issued.secret)
}

/// GET `path` with `secret` as a bearer key: (status, body).
async fn get(http: &reqwest::Client, base: &str, path: &str, secret: &str) -> (u16, serde_json::Value) {
    let response = http.get(format!("{base}{path}")).bearer_auth(secret).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn api_keys_work_until_revoked_disabled_or_expired_and_refusals_are_audited() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let tenant = provision(&mut tenant_client(keel.grpc_addr).await, &operator, &domain("keys")).await;
    let (app_id, key_id, secret) = app_with_key(keel.grpc_addr, &operator, &["flags:read"]).await;
    assert!(secret.starts_with("keel_ak_") && secret.len() > 60, "{secret}");
    let http = reqwest::Client::new();
    let base = format!("http://{}", keel.rest_addr);
    let path = format!("/v1/tenants/{}/flags", tenant.tenant_id);
    assert!(
        eventually(Duration::from_secs(10), || async { get(&http, &base, &path, &secret).await.0 == 200 }).await,
        "a flags:read key reads a tenant's flags"
    );

    // Listings show a prefix, never the secret; only a hash is stored.
    let mut apps = app_client(keel.grpc_addr).await;
    let keys = apps.list_api_keys(authed(ListApiKeysRequest { app_id: app_id.clone() }, &operator)).await.unwrap();
    let listed = &keys.get_ref().keys[0];
    assert_eq!(listed.key_id, key_id);
    assert!(secret.starts_with(&listed.prefix) && listed.prefix.len() < 20 && listed.active);
    let owner = env.owner_pool().await;
    let leaked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM command_idempotency WHERE response::text LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM auth_api_keys WHERE secret_hash = $1)",
    )
    .bind(&secret[secret.len() - 20..])
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "the secret is stored nowhere");

    // A key without the scope: 403 problem+json, audited.
    let (_, other_key, billing) = app_with_key(keel.grpc_addr, &operator, &["billing:write"]).await;
    let (status, body) = get(&http, &base, &path, &billing).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("missing_scope")), "{body}");
    // A wrong secret for a real key id: 401.
    let forged = format!("{}{}", &secret[..secret.len() - 4], "AAAA");
    assert_eq!(get(&http, &base, &path, &forged).await.0, 401);

    // Revoked: refused at once (within the index poll), with its reason.
    let revoke = RevokeApiKeyRequest { app_id: app_id.clone(), key_id: key_id.clone(), idempotency_key: key() };
    apps.revoke_api_key(authed(revoke, &operator)).await.expect("revoke");
    let (status, body) = get(&http, &base, &path, &secret).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("key_revoked")), "{body}");
    assert!(body["type"].is_string() && body["title"].is_string(), "problem+json: {body}");

    // Disabling the app blocks all its keys; enabling lifts it.
    let (_, second) = issue(&mut apps, &operator, &app_id, &["flags:read"], "").await;
    assert_eq!(get(&http, &base, &path, &second).await.0, 200);
    apps.disable_app(authed(AppRequest { app_id: app_id.clone(), idempotency_key: key() }, &operator)).await.unwrap();
    let (status, body) = get(&http, &base, &path, &second).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("app_disabled")), "{body}");
    let refused = apps
        .issue_api_key(authed(
            IssueApiKeyRequest {
                app_id: app_id.clone(),
                scopes: vec!["flags:read".into()],
                expires_at: String::new(),
                idempotency_key: key(),
            },
            &operator,
        ))
        .await
        .unwrap_err();
    assert_eq!((refused.code(), error_code(&refused).as_str()), (Code::FailedPrecondition, "app_disabled"));
    apps.enable_app(authed(AppRequest { app_id: app_id.clone(), idempotency_key: key() }, &operator)).await.unwrap();
    assert_eq!(get(&http, &base, &path, &second).await.0, 200);

    // Expiry.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (_, expiring) = issue(&mut apps, &operator, &app_id, &["flags:read"], &soon).await;
    assert_eq!(get(&http, &base, &path, &expiring).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, body) = get(&http, &base, &path, &expiring).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("key_expired")), "{body}");

    // Every refusal of a known key is an audited event, coalesced per key and reason.
    let audited = eventually(Duration::from_secs(10), || async {
        let reasons: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT payload->>'reason' FROM events WHERE event_type = 'app.access_denied'
               AND payload->>'key_id' = ANY($1)",
        )
        .bind(vec![key_id.clone(), other_key.clone()])
        .fetch_all(&owner)
        .await
        .unwrap();
        ["key_revoked", "missing_scope", "wrong_secret"].iter().all(|r| reasons.iter().any(|x| x == r))
    })
    .await;
    assert!(audited, "refusals are recorded as app.access_denied");
    keel.stop().await;
}

#[tokio::test]
async fn issuing_is_idempotent_without_storing_the_secret_and_only_operators_manage_apps() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let mut apps = app_client(keel.grpc_addr).await;
    let app = apps
        .register_app(authed(
            RegisterAppRequest {
                name: "Edge".into(),
                environment: "staging".into(),
                idempotency_key: key(),
                ..Default::default()
            },
            &operator,
        ))
        .await
        .unwrap()
        .into_inner();
    let request = IssueApiKeyRequest {
        app_id: app.app_id.clone(),
        scopes: vec!["fleet:write".into(), "flags:read".into()],
        expires_at: String::new(),
        idempotency_key: key(),
    };
    let first = apps.issue_api_key(authed(request.clone(), &operator)).await.unwrap().into_inner();
    let retry = apps.issue_api_key(authed(request, &operator)).await.unwrap().into_inner();
    assert_eq!(
        (first.key_id.clone(), first.secret.clone()),
        (retry.key_id, retry.secret),
        "a retry answers the same key"
    );
    assert_eq!(first.scopes, vec!["flags:read", "fleet:write"]);
    let listed =
        apps.list_api_keys(authed(ListApiKeysRequest { app_id: app.app_id.clone() }, &operator)).await.unwrap();
    assert_eq!(listed.get_ref().keys.len(), 1, "one key, not two");

    // Bad input changes nothing.
    let bad = IssueApiKeyRequest {
        app_id: app.app_id.clone(),
        scopes: vec!["flags:write".into()],
        expires_at: String::new(),
        idempotency_key: key(),
    };
    let err = apps.issue_api_key(authed(bad, &operator)).await.unwrap_err();
    assert_eq!((err.code(), error_code(&err).as_str()), (Code::InvalidArgument, "invalid_scope"));
    let past = IssueApiKeyRequest {
        app_id: app.app_id.clone(),
        scopes: vec!["flags:read".into()],
        expires_at: "2020-01-01T00:00:00Z".into(),
        idempotency_key: key(),
    };
    let err = apps.issue_api_key(authed(past, &operator)).await.unwrap_err();
    assert_eq!(error_code(&err), "invalid_expiry");

    // An app key cannot manage apps.
    let err = apps
        .register_app(authed(
            RegisterAppRequest {
                name: "Sneaky".into(),
                environment: "prod".into(),
                idempotency_key: key(),
                ..Default::default()
            },
            &first.secret,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    keel.stop().await;
}

#[tokio::test]
async fn the_cli_registers_apps_and_issues_keys_as_json() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    // The workspace's test build builds the `keel` binary beside the test binaries' directory.
    let exe = std::env::current_exe().expect("test binary");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("keel");
    assert!(bin.exists(), "{} is missing: run the tests with `make test` (cargo test --workspace)", bin.display());
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&bin)
            .args(args)
            .env("KEEL_MIGRATION_DATABASE_URL", &env.owner_url)
            .env("KEEL_KEK", env.kek_setting())
            .output()
            .expect("run keel");
        keel_tests::logs::keep("keel-cli", &output.stderr);
        assert!(output.status.success(), "keel {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON out")
    };
    let app = run(&["app", "register", "--name", "Router", "--environment", "production"]);
    let app_id = app["app_id"].as_str().expect("app_id").to_string();
    assert!(app_id.starts_with("app_"));
    let issued = run(&["app", "issue-key", "--app", &app_id, "--scope", "flags:read", "--scope", "fleet:write"]);
    let secret = issued["secret"].as_str().expect("secret");
    assert!(issued["key_id"].as_str().is_some_and(|k| k.starts_with("key_")) && secret.starts_with("keel_ak_"));
    // The key works against the running Keel at once.
    let operator = env.operator_token().await;
    let tenant = provision(&mut tenant_client(keel.grpc_addr).await, &operator, &domain("cli")).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", keel.rest_addr);
    let path = format!("/v1/tenants/{}/flags", tenant.tenant_id);
    assert!(eventually(Duration::from_secs(10), || async { get(&http, &base, &path, secret).await.0 == 200 }).await);
    keel.stop().await;
}
