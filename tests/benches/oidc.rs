//! The OpenID Provider benchmark (issue 14): full authorization-code flows per second with a
//! live Keel session — `GET /v1/auth/authorize` (session cookie, PKCE S256) answering a
//! redirect with a code, then the token endpoint's `authorization_code` grant — with p50 / p99
//! latency, over HTTP only (no browser), against the release `keel` as its own process. The
//! password logins per second beside it come from the identity bench.
//!
//! Run with `make bench`. Everything, load generator included, shares the machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keel_gateway::proto::ProvisionTenantRequest;
use keel_gateway::proto::tenant_service_client::TenantServiceClient;
use keel_tests::TestEnv;
use keel_tests::bench::{Better, Keel, authed, figure, millis, ms, percentile};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "correct horse battery staple";
const DOMAIN: &str = "bench-oidc";
const EMAIL: &str = "owner@bench-oidc.example.com";
/// The app's registered redirect URI; nothing listens there (the bench reads the Location header).
const REDIRECT_URI: &str = "http://localhost:9/callback";

/// Seconds of the measured phase (`KEEL_BENCH_SECONDS`, default 10).
fn seconds() -> u64 {
    std::env::var("KEEL_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

/// The `keel` binary the bench runs (`KEEL_BENCH_BINARY`, else the release build).
fn keel_binary() -> std::path::PathBuf {
    std::env::var_os("KEEL_BENCH_BINARY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/keel"))
}

/// Registers the bench's public client with `keel app register --redirect-uri`; returns its id.
fn register_client(env: &TestEnv) -> String {
    let output = std::process::Command::new(keel_binary())
        .args(["app", "register", "--name", "Bench", "--environment", "production", "--redirect-uri", REDIRECT_URI])
        .env("KEEL_MIGRATION_DATABASE_URL", &env.owner_url)
        .env("KEEL_KEK", env.kek_setting())
        .output()
        .expect("run keel app register");
    assert!(output.status.success(), "keel app register: {}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    out["app_id"].as_str().expect("app_id").to_string()
}

/// Signs the owner in through `POST /v1/auth/session` (JSON); returns the `keel_session` cookie.
async fn session_cookie(http: &reqwest::Client, base: &str) -> String {
    let response = http
        .post(format!("{base}/v1/auth/session"))
        .json(&json!({ "workspace": DOMAIN, "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .expect("sign in");
    assert!(response.status().is_success(), "POST /v1/auth/session: {}", response.status());
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("keel_session="))
        .and_then(|v| v.split(';').next())
        .expect("a keel_session cookie")
        .to_string()
}

/// One full code flow with the session `cookie`: authorize → code → token exchange.
async fn code_flow(http: &reqwest::Client, base: &str, client_id: &str, cookie: &str) {
    let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = uuid::Uuid::new_v4().simple().to_string();
    let authorize = http
        .get(format!("{base}/v1/auth/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid email"),
            ("state", &state),
            ("nonce", &state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("authorize");
    assert!(authorize.status().is_redirection(), "authorize: {}", authorize.status());
    let location = authorize.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).expect("Location");
    let location = reqwest::Url::parse(location).expect("an absolute redirect");
    assert!(location.as_str().starts_with(REDIRECT_URI), "redirected to the client, not {location}");
    let code = location.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).expect("a code");
    let token = http
        .post(format!("{base}/v1/auth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", client_id),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .expect("token");
    assert!(token.status().is_success(), "token exchange: {}", token.status());
    let grant: Value = token.json().await.expect("JSON");
    assert!(grant["id_token"].is_string(), "the code grant answers an ID token");
}

#[tokio::main]
async fn main() {
    let env = TestEnv::with_partitions(4).await;
    let owner = env.owner_pool().await;
    keel_tests::bench::durable_commits(&owner).await;
    let operator = env.operator_token().await;
    let keel = Keel::start(&env, "16").await;
    let base = Arc::new(format!("http://127.0.0.1:{}", keel.rest_port));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let mut tenants =
        TenantServiceClient::connect(format!("http://127.0.0.1:{}", keel.grpc_port)).await.expect("connect");
    let request = ProvisionTenantRequest {
        name: "Bench".into(),
        domain: DOMAIN.into(),
        plan: "pro".into(),
        owner_email: EMAIL.into(),
        idempotency_key: DOMAIN.into(),
        industry: String::new(),
        region: String::new(),
    };
    tenants.provision_tenant(authed(request, &operator)).await.expect("provision");
    let invitation = env.mailed_token(EMAIL, "keel_inv_").await;
    let accepted = http
        .post(format!("{base}/v1/auth/invitations/accept"))
        .json(&json!({ "token": invitation, "password": PASSWORD }))
        .send()
        .await
        .expect("accept");
    assert!(accepted.status().is_success(), "accept: {}", accepted.status());
    let client_id = Arc::new(register_client(&env));

    // One live Keel session per client loop (one password check each, outside the measure).
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
    let clients = 8 * cores;
    let mut cookies = Vec::new();
    for _ in 0..clients {
        cookies.push(session_cookie(&http, &base).await);
    }

    let deadline = Instant::now() + Duration::from_secs(seconds());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for cookie in cookies {
        let (http, base, client_id) = (http.clone(), base.clone(), client_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                code_flow(&http, &base, &client_id, &cookie).await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client loop"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "code flows (authorize with a live session → token exchange, {clients} clients): {} in {:.1} s = {rate:.0}/s; latency p50 {} p99 {}",
        latencies.len(),
        elapsed.as_secs_f64(),
        ms(p50),
        ms(p99),
    );
    figure("oidc.code_flows_per_s", rate, "flows/s", Better::Higher);
    figure("oidc.code_flow_p50_ms", millis(p50), "ms", Better::Lower);
    figure("oidc.code_flow_p99_ms", millis(p99), "ms", Better::Lower);
    println!("keel process peak memory (VmHWM): {:.1} MiB", keel.peak_rss_mib());
    drop(keel);
    keel_tests::bench::drop_run(&env).await;
}
