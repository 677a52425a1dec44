//! Managed apps as OpenID Connect clients (ADR 0025), end to end through gRPC and the
//! `keel app` CLI: redirect URIs, public and confidential clients, the client secret
//! (shown once, stored as a hash only, rotatable), and the lookup the OpenID Provider uses.

use keel_commands::oidc_clients::{OidcClient, OidcClients};
use keel_gateway::proto::{AppRequest, ListAppsRequest, RegisterAppRequest, UpdateAppRequest};
use keel_tests::TestEnv;
use sqlx::PgPool;
use tonic::Code;

use crate::apps::app_client;
use crate::support::{authed, error_code, key};

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// How often `secret` (or its last 20 characters) appears in events, idempotency records
/// or the secrets table (as plain text).
async fn stored_copies(owner: &PgPool, secret: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%'
                                              OR metadata::text LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM command_idempotency WHERE response::text LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM oidc_client_secrets WHERE hash LIKE '%' || $1 || '%')",
    )
    .bind(&secret[secret.len() - 20..])
    .fetch_one(owner)
    .await
    .expect("search for the secret")
}

/// How many app events there are (a refused command writes none).
async fn app_events(owner: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'app'").fetch_one(owner).await.unwrap()
}

#[tokio::test]
async fn apps_register_as_public_or_confidential_clients_and_the_lookup_sees_them() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let owner = env.owner_pool().await;
    // The provider reads as the runtime role, as the gateway does.
    let clients = OidcClients::new(env.app_pool().await);
    let mut apps = app_client(keel.grpc_addr).await;

    // A public client: no secret.
    let public = RegisterAppRequest {
        name: "Storefront".into(),
        environment: "production".into(),
        idempotency_key: key(),
        redirect_uris: strings(&["https://shop.example.com/callback", "http://localhost:3000/callback"]),
        post_logout_redirect_uris: strings(&["https://shop.example.com/"]),
        confidential: false,
    };
    let public = apps.register_app(authed(public, &operator)).await.expect("register public").into_inner();
    assert!(public.app_id.starts_with("app_") && public.client_secret.is_empty());
    let found = clients.find(&public.app_id).await.unwrap().expect("the public client");
    assert_eq!(
        found,
        OidcClient {
            app_id: public.app_id.clone(),
            name: "Storefront".into(),
            enabled: true,
            confidential: false,
            redirect_uris: strings(&["https://shop.example.com/callback", "http://localhost:3000/callback"]),
            post_logout_redirect_uris: strings(&["https://shop.example.com/"]),
        }
    );
    assert!(!clients.verify_secret(&public.app_id, "keel_cs_anything").await.unwrap(), "a public client has no secret");
    assert_eq!(clients.find("app_01jd0000000000000000000000").await.unwrap(), None);
    assert_eq!(clients.find(&"x".repeat(5_000)).await.unwrap(), None);

    // A confidential client: its secret once, a retry answers the same one, only a hash is kept.
    let request = RegisterAppRequest {
        name: "Billing portal".into(),
        environment: "production".into(),
        idempotency_key: key(),
        redirect_uris: strings(&["https://billing.example.com/oidc/callback"]),
        post_logout_redirect_uris: vec![],
        confidential: true,
    };
    let confidential = apps.register_app(authed(request.clone(), &operator)).await.expect("register").into_inner();
    let secret = confidential.client_secret.clone();
    keel_tests::logs::secret(&secret);
    assert!(secret.starts_with("keel_cs_") && secret.len() == 8 + 43, "{secret}");
    let retry = apps.register_app(authed(request, &operator)).await.expect("retry").into_inner();
    assert_eq!((retry.app_id, retry.client_secret), (confidential.app_id.clone(), secret.clone()));
    let app_id = confidential.app_id.clone();
    let found = clients.find(&app_id).await.unwrap().expect("the confidential client");
    assert!(found.confidential && found.enabled);
    assert_eq!(found.redirect_uris, strings(&["https://billing.example.com/oidc/callback"]));
    assert!(clients.verify_secret(&app_id, &secret).await.unwrap(), "the secret verifies");
    let last = if secret.ends_with('A') { 'B' } else { 'A' };
    let altered = format!("{}{last}", &secret[..secret.len() - 1]);
    assert!(!clients.verify_secret(&app_id, &altered).await.unwrap(), "one character changed");
    assert!(!clients.verify_secret(&public.app_id, &secret).await.unwrap(), "another client's secret");
    assert!(!clients.verify_secret(&app_id, "").await.unwrap());

    // The listing shows the client type and URIs, never the secret.
    let listed = apps.list_apps(authed(ListAppsRequest::default(), &operator)).await.unwrap().into_inner();
    let info = listed.apps.iter().find(|a| a.app_id == app_id).expect("listed");
    assert_eq!(info.client_type, "confidential");
    assert_eq!(info.redirect_uris, strings(&["https://billing.example.com/oidc/callback"]));
    let info = listed.apps.iter().find(|a| a.app_id == public.app_id).expect("listed");
    assert_eq!((info.client_type.as_str(), info.post_logout_redirect_uris.len()), ("public", 1));
    assert!(!format!("{listed:?}").contains(&secret[8..]));

    // Rotation: the new secret works, the old one stops at once.
    let rotate = AppRequest { app_id: app_id.clone(), idempotency_key: key() };
    let rotated = apps.rotate_client_secret(authed(rotate.clone(), &operator)).await.expect("rotate").into_inner();
    let new_secret = rotated.client_secret.clone();
    keel_tests::logs::secret(&new_secret);
    assert!(new_secret.starts_with("keel_cs_") && new_secret != secret);
    let again = apps.rotate_client_secret(authed(rotate, &operator)).await.expect("retry rotate").into_inner();
    assert_eq!(again.client_secret, new_secret, "a retry answers the same secret");
    assert!(clients.verify_secret(&app_id, &new_secret).await.unwrap());
    assert!(!clients.verify_secret(&app_id, &secret).await.unwrap(), "the previous secret stops working");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM oidc_client_secrets WHERE app_id = $1")
        .bind(&app_id)
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(kept, 1, "only the current secret's hash is kept");
    let err = apps
        .rotate_client_secret(authed(AppRequest { app_id: public.app_id.clone(), idempotency_key: key() }, &operator))
        .await
        .unwrap_err();
    assert_eq!((err.code(), error_code(&err).as_str()), (Code::FailedPrecondition, "public_client"));

    // Neither secret is stored anywhere in plain text: not in events, not in idempotency records.
    assert_eq!(stored_copies(&owner, &secret).await, 0);
    assert_eq!(stored_copies(&owner, &new_secret).await, 0);
    let hashed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'app' AND payload::text LIKE '%' || $1 || '%'",
    )
    .bind(keel_commands::secret::digest(&new_secret))
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(hashed, 0, "events carry the secret id, not the hash");

    // A disabled app is found but not enabled.
    apps.disable_app(authed(AppRequest { app_id: app_id.clone(), idempotency_key: key() }, &operator))
        .await
        .expect("disable");
    assert!(!clients.find(&app_id).await.unwrap().expect("still found").enabled);
    apps.enable_app(authed(AppRequest { app_id: app_id.clone(), idempotency_key: key() }, &operator))
        .await
        .expect("enable");
    assert!(clients.find(&app_id).await.unwrap().expect("found").enabled);

    // UpdateApp replaces the lists and keeps the type unless told; going public drops the secret.
    let update = |uris: &[&str], confidential: Option<bool>| UpdateAppRequest {
        app_id: app_id.clone(),
        name: "Billing portal".into(),
        environment: "production".into(),
        idempotency_key: key(),
        redirect_uris: strings(uris),
        post_logout_redirect_uris: strings(&["https://billing.example.com/bye"]),
        confidential,
    };
    let done = apps.update_app(authed(update(&["https://billing.example.com/cb2"], None), &operator)).await.unwrap();
    assert!(done.get_ref().position > 0 && done.get_ref().client_secret.is_empty());
    let found = clients.find(&app_id).await.unwrap().unwrap();
    assert!(found.confidential);
    assert_eq!(found.redirect_uris, strings(&["https://billing.example.com/cb2"]));
    assert_eq!(found.post_logout_redirect_uris, strings(&["https://billing.example.com/bye"]));
    assert!(clients.verify_secret(&app_id, &new_secret).await.unwrap(), "the secret survives an update");
    apps.update_app(authed(update(&["https://billing.example.com/cb2"], Some(false)), &operator)).await.unwrap();
    assert!(!clients.find(&app_id).await.unwrap().unwrap().confidential);
    assert!(!clients.verify_secret(&app_id, &new_secret).await.unwrap(), "a public client has no secret");
    let back = apps
        .update_app(authed(update(&["https://billing.example.com/cb2"], Some(true)), &operator))
        .await
        .unwrap()
        .into_inner();
    keel_tests::logs::secret(&back.client_secret);
    assert!(back.client_secret.starts_with("keel_cs_"), "becoming confidential answers the first secret");
    assert!(clients.verify_secret(&app_id, &back.client_secret).await.unwrap());
    keel.stop().await;
}

#[tokio::test]
async fn bad_redirect_uris_are_refused_and_change_nothing() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let owner = env.owner_pool().await;
    let clients = OidcClients::new(env.app_pool().await);
    let mut apps = app_client(keel.grpc_addr).await;
    let register = |redirect: &[&str], logout: &[&str]| RegisterAppRequest {
        name: "Careless".into(),
        environment: "production".into(),
        idempotency_key: key(),
        redirect_uris: strings(redirect),
        post_logout_redirect_uris: strings(logout),
        confidential: true,
    };
    let many: Vec<String> = (0..21).map(|n| format!("https://app.example.com/cb/{n}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let long = format!("https://app.example.com/{}", "a".repeat(2_000));
    let before = app_events(&owner).await;
    let secrets_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM oidc_client_secrets").fetch_one(&owner).await.unwrap();
    for (redirect, logout, code) in [
        (vec!["http://app.example.com/cb"], vec![], "invalid_redirect_uris"),
        (vec!["https://app.example.com/cb#frag"], vec![], "invalid_redirect_uris"),
        (vec!["https://user:pw@app.example.com/cb"], vec![], "invalid_redirect_uris"),
        (vec!["app.example.com/cb"], vec![], "invalid_redirect_uris"),
        (vec!["https://*.example.com/cb"], vec![], "invalid_redirect_uris"),
        (vec![long.as_str()], vec![], "invalid_redirect_uris"),
        (many.clone(), vec![], "invalid_redirect_uris"),
        (vec!["https://app.example.com/cb"], vec!["javascript:alert(1)"], "invalid_post_logout_redirect_uris"),
        (vec!["https://app.example.com/cb"], many.clone(), "invalid_post_logout_redirect_uris"),
    ] {
        let err = apps.register_app(authed(register(&redirect, &logout), &operator)).await.unwrap_err();
        assert_eq!((err.code(), error_code(&err).as_str()), (Code::InvalidArgument, code), "{redirect:?} {logout:?}");
        assert!(err.message().contains("https://"), "the message says what is accepted: {}", err.message());
    }
    assert_eq!(app_events(&owner).await, before, "no app registered");
    let secrets_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM oidc_client_secrets").fetch_one(&owner).await.unwrap();
    assert_eq!(secrets_after, secrets_before, "no secret left behind");

    // An update with a bad URI changes nothing either.
    let app = apps
        .register_app(authed(register(&["https://app.example.com/cb"], &[]), &operator))
        .await
        .expect("register")
        .into_inner();
    let before = app_events(&owner).await;
    let bad = UpdateAppRequest {
        app_id: app.app_id.clone(),
        name: "Careless".into(),
        environment: "production".into(),
        idempotency_key: key(),
        redirect_uris: strings(&["https://app.example.com/cb", "https://app.example.com/other#x"]),
        post_logout_redirect_uris: vec![],
        confidential: None,
    };
    let err = apps.update_app(authed(bad, &operator)).await.unwrap_err();
    assert_eq!((err.code(), error_code(&err).as_str()), (Code::InvalidArgument, "invalid_redirect_uris"));
    assert_eq!(app_events(&owner).await, before);
    let found = clients.find(&app.app_id).await.unwrap().unwrap();
    assert_eq!(found.redirect_uris, strings(&["https://app.example.com/cb"]));

    // Only operators manage clients: an unknown app is NOT_FOUND, a bad id INVALID_ARGUMENT.
    let err = apps
        .rotate_client_secret(authed(
            AppRequest { app_id: "app_01jd0000000000000000000000".into(), idempotency_key: key() },
            &operator,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = apps
        .rotate_client_secret(authed(AppRequest { app_id: "nope".into(), idempotency_key: key() }, &operator))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = apps
        .rotate_client_secret(tonic::Request::new(AppRequest { app_id: app.app_id.clone(), idempotency_key: key() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    keel.stop().await;
}

#[tokio::test]
async fn the_cli_registers_clients_and_rotates_their_secrets() {
    // The CLI works on the database directly: no running Keel needed.
    let env = TestEnv::new().await;
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
        (output.status.success(), String::from_utf8_lossy(&output.stdout).to_string())
    };
    let json = |(ok, out): (bool, String)| {
        assert!(ok, "keel failed: {out}");
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON out")
    };
    let clients = OidcClients::new(env.app_pool().await);

    let public = json(run(&[
        "app",
        "register",
        "--name",
        "Docs",
        "--environment",
        "production",
        "--redirect-uri",
        "https://docs.example.com/cb",
        "--redirect-uri",
        "http://127.0.0.1:8080/cb",
        "--post-logout-redirect-uri",
        "https://docs.example.com/",
    ]));
    let public_id = public["app_id"].as_str().expect("app_id");
    assert!(public.get("client_secret").is_none(), "{public}");
    let found = clients.find(public_id).await.unwrap().expect("found");
    assert_eq!(found.redirect_uris, strings(&["https://docs.example.com/cb", "http://127.0.0.1:8080/cb"]));
    assert!(!found.confidential);

    let confidential = json(run(&[
        "app",
        "register",
        "--name",
        "Admin",
        "--environment",
        "production",
        "--redirect-uri",
        "https://admin.example.com/cb",
        "--confidential",
    ]));
    let app_id = confidential["app_id"].as_str().expect("app_id");
    let secret = confidential["client_secret"].as_str().expect("client_secret");
    keel_tests::logs::secret(secret);
    assert!(clients.verify_secret(app_id, secret).await.unwrap());
    let rotated = json(run(&["app", "rotate-client-secret", app_id]));
    let new_secret = rotated["client_secret"].as_str().expect("client_secret");
    keel_tests::logs::secret(new_secret);
    assert!(clients.verify_secret(app_id, new_secret).await.unwrap());
    assert!(!clients.verify_secret(app_id, secret).await.unwrap());

    let (ok, _) = run(&[
        "app",
        "register",
        "--name",
        "Bad",
        "--environment",
        "production",
        "--redirect-uri",
        "http://bad.example.com/cb",
    ]);
    assert!(!ok, "a bad redirect URI is refused");
    let (ok, _) = run(&["app", "rotate-client-secret", public_id]);
    assert!(!ok, "a public client has no secret to rotate");
}
