//! Secrets and keys at rest (ADR 0028): every stored secret is wrapped under the
//! key-encryption key, so a `pg_dump` holds none in clear; the KEK and the signing key
//! rotate under load without a failed request; a key file others may read is refused;
//! and the PKCS#11 provider works against a real SoftHSM2 token.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use keel_commands::wrapped_secrets::WRAPPED_COLUMNS;
use keel_gateway::proto::RegisterAppRequest;
use keel_tests::{TestEnv, eventually};
use serde_json::{Value, json};

use crate::apps::{app_client, app_with_key};
use crate::support::{PASSWORD, Rest, authed, key};

const OPERATOR: &str = "keys@keel.example.com";

/// The `keel` binary beside the test binaries' directory.
fn keel_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("keel");
    assert!(bin.exists(), "{} is missing: run the tests with `make test` (it builds keel)", bin.display());
    bin
}

/// Runs `keel args…` as the migration role of `env` with `vars`; returns its JSON answer.
fn keel_json(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> Value {
    let mut command = std::process::Command::new(keel_bin());
    command
        .args(args)
        .env("KEEL_STATE_DIR", "/nonexistent")
        .env_remove("KEEL_DATABASE_URL")
        .env("KEEL_MIGRATION_DATABASE_URL", &env.owner_url)
        .env("KEEL_KEK", env.kek_setting());
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().expect("run keel");
    keel_tests::logs::keep("keel-cli", &output.stderr);
    assert!(output.status.success(), "keel {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_slice(&output.stdout).expect("JSON out");
    for secret in ["secret", "client_secret"] {
        if let Some(secret) = out[secret].as_str() {
            keel_tests::logs::secret(secret);
        }
    }
    out
}

/// Every stored secret of `env`'s database, unwrapped with its KEK: (label, plaintext).
/// Also asserts that every row names a KEK version.
async fn stored_secrets(env: &TestEnv) -> Vec<(String, Vec<u8>)> {
    let owner = env.owner_pool().await;
    let kek = env.kek();
    let mut secrets = Vec::new();
    for column in WRAPPED_COLUMNS {
        let rows: Vec<(String, Option<String>, Vec<u8>)> =
            sqlx::query_as(&format!("SELECT {}, kek_id, {} FROM {}", column.id, column.column, column.table))
                .fetch_all(&owner)
                .await
                .unwrap();
        for (id, kek_id, wrapped) in rows {
            let kek_id = kek_id.unwrap_or_else(|| panic!("{}.{id} is not wrapped", column.table));
            let plaintext = column.unwrap(kek.as_ref(), &id, Some(&kek_id), &wrapped).expect("unwrap");
            if column.table == "auth_signing_keys" {
                // The Ed25519 seed inside the PKCS#8 document: the OCTET STRING after `04 22 04 20`.
                let at = plaintext.windows(4).position(|w| w == [0x04, 0x22, 0x04, 0x20]).expect("an Ed25519 seed") + 4;
                secrets.push((format!("{}.{id} (seed)", column.table), plaintext[at..at + 32].to_vec()));
            }
            secrets.push((format!("{}.{id}", column.table), plaintext));
        }
    }
    owner.close().await;
    secrets
}

/// The newest `pg_dump` beside the Postgres server binaries, else the one on the PATH.
fn pg_dump_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin/pg_dump")).filter(|p| p.exists()).collect())
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.components().nth(4).and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok()).unwrap_or_default()
    });
    found.pop().unwrap_or_else(|| PathBuf::from("pg_dump"))
}

/// A plain-format `pg_dump` of the whole test database.
fn pg_dump(env: &TestEnv) -> Vec<u8> {
    let output = std::process::Command::new(pg_dump_bin())
        .args(["--no-owner", "--format=plain", "--dbname", &env.owner_url])
        .output()
        .expect("run pg_dump");
    assert!(output.status.success(), "pg_dump: {}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.len() > 10_000, "a dump of a whole database");
    output.stdout
}

/// `secret` as it could appear in a dump: raw, hex (both cases), base64 and base64url.
fn forms(secret: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    vec![
        ("raw", secret.to_vec()),
        ("hex", hex::encode(secret).into_bytes()),
        ("HEX", hex::encode_upper(secret).into_bytes()),
        ("base64", b64.trim_end_matches('=').as_bytes().to_vec()),
        ("base64url", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret).into_bytes()),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_not_in_dump(dump: &[u8], label: &str, secret: &[u8]) {
    assert!(secret.len() >= 16, "{label} is long enough to search for");
    for (form, bytes) in forms(secret) {
        assert!(!contains(dump, &bytes), "pg_dump holds {label} in clear ({form})");
    }
}

#[tokio::test]
async fn a_pg_dump_holds_no_stored_secret_in_clear() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    env.platform_user(OPERATOR, PASSWORD, "operator").await;
    let rest = Rest::new(keel.rest_addr);
    // Sign a token, refresh the session, create an API key and a confidential client.
    let (access, refresh) = rest.tokens(OPERATOR, PASSWORD, None).await;
    let (status, refreshed) = rest.post("/v1/auth/token", json!({ "refresh_token": refresh })).await;
    assert_eq!(status, 200, "{refreshed}");
    let new_refresh = refreshed["refresh_token"].as_str().expect("refresh").to_string();
    keel_tests::logs::secret(&new_refresh);
    let (_, _, api_key) = app_with_key(keel.grpc_addr, &operator, &["flags:read"]).await;
    let request = RegisterAppRequest {
        name: "Confidential".into(),
        environment: "production".into(),
        idempotency_key: key(),
        redirect_uris: vec!["https://rp.example.com/cb".into()],
        post_logout_redirect_uris: vec![],
        confidential: true,
    };
    let client = app_client(keel.grpc_addr).await.register_app(authed(request, &operator)).await.expect("register");
    let client_secret = client.into_inner().client_secret;
    keel_tests::logs::secret(&client_secret);
    assert!(client_secret.starts_with("keel_cs_"));
    // The sign-ins and registrations are audited: wait for a signed checkpoint.
    let owner = env.owner_pool().await;
    let signed = eventually(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_signing_keys").fetch_one(&owner).await.unwrap() > 0
    })
    .await;
    assert!(signed, "an audit checkpoint was signed");
    keel.stop().await;

    let secrets = stored_secrets(&env).await;
    let labels: Vec<&str> = secrets.iter().map(|(label, _)| label.as_str()).collect();
    for expected in [
        "auth_secrets.refresh_token_mac",
        "auth_secrets.api_key_derivation",
        "auth_secrets.client_secret_derivation",
        "auth_secrets.ofrep_stream_token",
    ] {
        assert!(labels.contains(&expected), "{expected} is stored: {labels:?}");
    }
    assert!(labels.iter().any(|l| l.starts_with("auth_signing_keys.")), "a signing key: {labels:?}");
    assert!(labels.iter().any(|l| l.starts_with("audit_signing_keys.")), "an audit key: {labels:?}");

    let dump = pg_dump(&env);
    // The search works: the wrapped form of a stored secret is in the dump (bytea as hex).
    let wrapped: Vec<u8> =
        sqlx::query_scalar("SELECT secret_wrapped FROM auth_secrets WHERE name = 'refresh_token_mac'")
            .fetch_one(&owner)
            .await
            .unwrap();
    assert!(contains(&dump, hex::encode(&wrapped).as_bytes()), "the dump holds the wrapped secret");
    for (label, secret) in &secrets {
        assert_not_in_dump(&dump, label, secret);
    }
    for (label, token) in [
        ("access token", &access),
        ("refresh token", &new_refresh),
        ("API key", &api_key),
        ("client secret", &client_secret),
    ] {
        assert!(!contains(&dump, token.as_bytes()), "pg_dump holds the {label}");
    }
    owner.close().await;
}

#[tokio::test]
async fn plaintext_secrets_of_an_older_deployment_are_wrapped_at_start_up() {
    let env = TestEnv::new().await;
    let owner = env.owner_pool().await;
    let plaintext = keel_commands::secret::random_bytes();
    sqlx::query("INSERT INTO auth_secrets (name, secret_wrapped) VALUES ('refresh_token_mac', $1)")
        .bind(plaintext.to_vec())
        .execute(&owner)
        .await
        .unwrap();
    let keel = env.start().await;
    env.platform_user(OPERATOR, PASSWORD, "operator").await;
    let rest = Rest::new(keel.rest_addr);
    let (_, refresh) = rest.tokens(OPERATOR, PASSWORD, None).await;
    let (status, body) = rest.post("/v1/auth/token", json!({ "refresh_token": refresh })).await;
    assert_eq!(status, 200, "the wrapped key still signs refresh tokens: {body}");
    keel.stop().await;
    let (kek_id, wrapped): (Option<String>, Vec<u8>) =
        sqlx::query_as("SELECT kek_id, secret_wrapped FROM auth_secrets WHERE name = 'refresh_token_mac'")
            .fetch_one(&owner)
            .await
            .unwrap();
    let kek = env.kek();
    assert_eq!(kek_id.as_deref(), Some(kek.current().unwrap().as_str()), "wrapped under the current KEK");
    assert_ne!(wrapped, plaintext.to_vec());
    let column = keel_commands::wrapped_secrets::SERVER_SECRETS;
    assert_eq!(column.unwrap(kek.as_ref(), "refresh_token_mac", kek_id.as_deref(), &wrapped).unwrap(), plaintext);
    assert_not_in_dump(&pg_dump(&env), "the migrated refresh key", &plaintext);
    owner.close().await;
}

#[tokio::test]
async fn kek_and_signing_key_rotation_under_load_fail_no_request() {
    let env = TestEnv::new().await;
    // One issuer for both processes below (by default it names the ephemeral port).
    let mut settings = env.settings();
    settings.public_url = Some("http://keel.test".into());
    let keel = env.start_with(settings.clone(), keel_gateway::server::Workers::ALL).await;
    env.platform_user(OPERATOR, PASSWORD, "operator").await;
    let rest = Rest::new(keel.rest_addr);
    let (before, refresh) = rest.tokens(OPERATOR, PASSWORD, None).await;
    let old_kid = jsonwebtoken::decode_header(&before).unwrap().kid.expect("kid");
    // The sign-ins are audited: let the checkpoint key exist before the rotation.
    let owner = env.owner_pool().await;
    let signed = eventually(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_signing_keys").fetch_one(&owner).await.unwrap() > 0
    })
    .await;
    assert!(signed, "an audit checkpoint was signed");

    // Load until the rotation is done: introspection of a token (the signing keys), and
    // chains of refreshes (the refresh MAC key, and a new access token signed each time).
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (rest, stop, ok, failed) = (rest.clone(), stop.clone(), ok.clone(), failed.clone());
        let token = before.clone();
        let mut chain = if worker % 2 == 1 { Some(rest.tokens(OPERATOR, PASSWORD, None).await.1) } else { None };
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let good = match chain.take() {
                    None => {
                        let (status, body) = rest.post("/v1/auth/introspect", json!({ "token": token })).await;
                        status == 200 && body["active"] == true
                    }
                    Some(refresh) => {
                        let (status, body) = rest.post("/v1/auth/token", json!({ "refresh_token": refresh })).await;
                        let next = body["refresh_token"].as_str().map(str::to_string);
                        next.iter().for_each(|t| keel_tests::logs::secret(t));
                        let good = status == 200 && next.is_some();
                        chain = next;
                        good
                    }
                };
                if good {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if worker % 2 == 1 && chain.is_none() {
                        return;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = tokio::task::spawn_blocking({
        let env = env.clone();
        move || keel_json(&env, &[], &["keys", "rotate", "--publish-ahead", "0", "--retire-after", "600"])
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    keel.tokens.reload_keys().await.unwrap();
    let (after, _) = rest.tokens(OPERATOR, PASSWORD, None).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "no request failed during the rotation ({ok} succeeded)");
    assert!(ok > 20, "the load ran: {ok} requests");

    // The KEK: a new version, every secret re-wrapped under it, the old one destroyed.
    let (previous, current) =
        (rotated["kek"]["previous"].as_str().unwrap(), rotated["kek"]["current"].as_str().unwrap());
    assert_ne!(previous, current);
    assert!(rotated["kek"]["rewrapped"]["rewrapped"].as_u64().unwrap() >= 5, "{rotated}");
    assert_eq!(rotated["kek"]["rewrapped"]["failed"], 0);
    assert_eq!(rotated["kek"]["destroyed"], json!([previous]));
    assert!(!Path::new(&format!("{}.{previous}", env.kek_file.display())).exists(), "retired key file deleted");
    assert_eq!(env.kek().current().unwrap(), current);
    for column in WRAPPED_COLUMNS {
        let others: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {} WHERE kek_id IS DISTINCT FROM $1", column.table))
                .bind(current)
                .fetch_one(&owner)
                .await
                .unwrap();
        assert_eq!(others, 0, "every row of {} is under the new KEK", column.table);
    }
    // The signing key: tokens of both keys verify.
    let new_kid = rotated["signing_key"]["kid"].as_str().unwrap();
    assert_ne!(new_kid, old_kid);
    assert_eq!(jsonwebtoken::decode_header(&after).unwrap().kid.as_deref(), Some(new_kid), "the new key signs");
    assert!(rest.active(&before).await, "a token signed before the rotation verifies");
    assert!(rest.active(&after).await, "a token signed after the rotation verifies");
    keel.stop().await;

    // A fresh process unwraps everything under the new version alone.
    let keel = env.start_with(settings, keel_gateway::server::Workers::ALL).await;
    let rest = Rest::new(keel.rest_addr);
    assert!(rest.active(&before).await, "the token signed before verifies in a fresh process");
    assert!(rest.active(&after).await, "the token signed after verifies in a fresh process");
    let (status, body) = rest.post("/v1/auth/token", json!({ "refresh_token": refresh })).await;
    assert_eq!(status, 200, "a refresh token issued before the rotation still refreshes: {body}");
    keel.stop().await;
    owner.close().await;
}

#[tokio::test]
async fn a_kek_file_others_may_read_is_refused_with_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new().await;
    std::fs::set_permissions(&env.kek_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = keel_gateway::server::start(env.settings(), keel_gateway::server::Workers::ALL)
        .await
        .err()
        .expect("a KEK file of mode 644 is refused");
    let message = err.to_string();
    assert!(message.contains("mode 644") && message.contains("must be 600"), "{message}");
    assert!(message.contains(&env.kek_file.display().to_string()), "names the file: {message}");
    // Without any KEK, Keel does not start either.
    let mut settings = env.settings();
    settings.kek = Default::default();
    let err = keel_gateway::server::start(settings, keel_gateway::server::Workers::ALL).await.err().expect("refused");
    assert!(err.to_string().contains("KEEL_KEK"), "{err}");
}

/// A SoftHSM2 token `keel` (user PIN 1234) in a fresh directory: (its config file, KEEL_KEK).
fn softhsm_token(dir: &Path) -> (PathBuf, String) {
    let module = std::env::var("KEEL_TEST_SOFTHSM_MODULE")
        .expect("KEEL_TEST_SOFTHSM_MODULE is not set: run the tests with `make test`, which installs softhsm2");
    assert!(Path::new(&module).exists(), "{module} is missing");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    let config = dir.join("softhsm2.conf");
    std::fs::write(
        &config,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    let init = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "keel", "--so-pin", "5678", "--pin", "1234"])
        .env("SOFTHSM2_CONF", &config)
        .output()
        .expect("run softhsm2-util");
    assert!(init.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&init.stderr));
    (config, format!("pkcs11:module={module};token=keel;label=keel-kek"))
}

#[tokio::test]
async fn the_pkcs11_kek_in_softhsm2_keeps_keels_secrets_and_rotates() {
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(format!("keel-it-softhsm-{}", uuid::Uuid::new_v4().simple()));
    let (config, kek) = softhsm_token(&dir);
    let config = config.display().to_string();
    let vars = [("SOFTHSM2_CONF", config.as_str()), ("KEEL_KEK", kek.as_str()), ("KEEL_KEK_PIN", "1234")];
    let cli = |args: &[&str]| keel_json(&env, &vars, args);

    // Wrap and unwrap inside the token; other associated data is refused.
    let checked = cli(&["keys", "check"]);
    let first = checked["current"].as_str().expect("current").to_string();
    assert!(first.starts_with("hsm-"), "{checked}");
    assert_eq!(checked["round_trip"], true);
    assert_eq!(checked["other_associated_data_refused"], true);

    // Keel's secret storage on the HSM: the app commands' derivation keys.
    let app = cli(&["app", "register", "--name", "Router", "--environment", "production"]);
    let app_id = app["app_id"].as_str().expect("app_id").to_string();
    let issued = cli(&["app", "issue-key", "--app", &app_id, "--scope", "flags:read"]);
    assert!(issued["secret"].as_str().is_some_and(|s| s.starts_with("keel_ak_")));
    let owner = env.owner_pool().await;
    let under = |version: String| {
        let owner = owner.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM auth_secrets WHERE kek_id = $1")
                .bind(version)
                .fetch_one(&owner)
                .await
                .unwrap()
        }
    };
    assert_eq!(under(first.clone()).await, 2, "both derivation keys wrapped in the HSM");

    // Rotation: a new key object, the secrets re-wrapped, the old object destroyed.
    let rotated = cli(&["keys", "rotate", "--only", "kek"]);
    let current = rotated["kek"]["current"].as_str().expect("current").to_string();
    assert_eq!(rotated["kek"]["previous"], first.as_str());
    assert_ne!(current, first);
    assert_eq!(rotated["kek"]["rewrapped"], json!({ "rewrapped": 2, "failed": 0 }));
    assert_eq!(rotated["kek"]["destroyed"], json!([first]));
    assert_eq!((under(first.clone()).await, under(current.clone()).await), (0, 2));
    let checked = cli(&["keys", "check"]);
    assert_eq!(checked["versions"], json!([current]), "the retired key object is gone from the token");
    // A fresh process unwraps under the new version.
    let issued = cli(&["app", "issue-key", "--app", &app_id, "--scope", "flags:read"]);
    assert!(issued["secret"].as_str().is_some_and(|s| s.starts_with("keel_ak_")));

    // A wrong PIN is refused.
    let output = std::process::Command::new(keel_bin())
        .args(["keys", "check"])
        .env("KEEL_STATE_DIR", "/nonexistent")
        .env("KEEL_MIGRATION_DATABASE_URL", &env.owner_url)
        .env("SOFTHSM2_CONF", &config)
        .env("KEEL_KEK", &kek)
        .env("KEEL_KEK_PIN", "9999")
        .output()
        .unwrap();
    assert!(!output.status.success(), "a wrong PIN is refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("PKCS#11"));
    owner.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_yearly_check_rotates_a_kek_version_a_year_old_and_leaves_a_younger_one() {
    use keel_commands::wrapped_secrets::check;
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let kek = keel.kek.clone();
    keel.stop().await;
    let owner = env.owner_pool().await;
    let year = chrono::Duration::days(365);
    let first = kek.current().unwrap();
    assert_eq!(check(&owner, kek.as_ref(), year).await.unwrap(), None, "a young version stays");
    assert_eq!(kek.current().unwrap(), first);
    sqlx::query("UPDATE kek_versions SET current_from = now() - interval '366 days' WHERE key_id = $1")
        .bind(&first)
        .execute(&owner)
        .await
        .unwrap();
    let rotation = check(&owner, kek.as_ref(), year).await.unwrap().expect("a year-old version rotates");
    assert_eq!(rotation.previous, first);
    assert_eq!(rotation.destroyed, vec![first.clone()], "the old version is destroyed once nothing names it");
    assert!(rotation.rewrapped.rewrapped >= 4 && rotation.rewrapped.failed == 0, "{rotation:?}");
    let destroyed: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT destroyed_at FROM kek_versions WHERE key_id = $1")
            .bind(&first)
            .fetch_one(&owner)
            .await
            .unwrap();
    assert!(destroyed.is_some(), "the destruction is recorded");
    // Keel starts and serves on the new version.
    let keel = env.start().await;
    env.platform_user(OPERATOR, PASSWORD, "operator").await;
    let (access, _) = Rest::new(keel.rest_addr).tokens(OPERATOR, PASSWORD, None).await;
    assert!(Rest::new(keel.rest_addr).active(&access).await);
    keel.stop().await;
    owner.close().await;
}
