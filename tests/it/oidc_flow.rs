//! Keel as an OpenID Provider (ADR 0024), driven over HTTP the way a browser and a
//! relying party would (reqwest, redirects not followed, a small cookie jar): the code
//! flow with PKCE through the sign-in form, ID tokens verified against the JWKS,
//! userinfo, a second app signed in silently by the Keel session, and sign-out ending
//! both apps' tokens; and what must be refused.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use keel_gateway::proto::{AppRequest, RegisterAppRequest, SuspendTenantRequest, UserRequest};
use keel_tests::{TestEnv, eventually};
use sha2::{Digest, Sha256};

use crate::apps::app_client;
use crate::support::{PASSWORD, authed, key, tenant_client, tenant_with_owner, user_client};

/// A browser: no redirects followed, cookies kept by name.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

/// An answer: status, `Location`, body.
struct Answer {
    status: u16,
    location: String,
    body: String,
}

impl Browser {
    fn new(addr: std::net::SocketAddr) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let mut cookies = HashMap::new();
        // What the login page would have set (the CSRF layer compares it with the form's field).
        cookies.insert("keel_csrf".to_string(), "csrfCSRFcsrfCSRFcsrfCSRFcsrfCSRFcsrfCSRFcsr".to_string());
        Self { base: format!("http://{addr}"), http, cookies }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.header("cookie", self.cookie_header()).send().await.expect("request");
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.into(), value.into());
            }
        }
        let status = response.status().as_u16();
        let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        Answer { status, location, body: response.text().await.unwrap_or_default() }
    }

    async fn get(&mut self, path_and_query: &str) -> Answer {
        let request = self.http.get(format!("{}{path_and_query}", self.base));
        self.send(request).await
    }

    /// Submits the sign-in form.
    async fn sign_in(&mut self, workspace: &str, email: &str, password: &str, interaction: &str) -> Answer {
        keel_tests::logs::secret(email);
        let form = [
            ("workspace", workspace),
            ("email", email),
            ("password", password),
            ("interaction", interaction),
            ("csrf", "csrfCSRFcsrfCSRFcsrfCSRFcsrfCSRFcsrfCSRFcsr"),
        ];
        let request = self.http.post(format!("{}/v1/auth/session", self.base)).form(&form);
        self.send(request).await
    }
}

/// A PKCE pair: (verifier, S256 challenge).
fn pkce() -> (String, String) {
    let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The query parameters of `uri`.
fn query_of(uri: &str) -> HashMap<String, String> {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn authorize_path(client_id: &str, redirect_uri: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid email")
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    for (name, value) in extra {
        query.append_pair(name, value);
    }
    format!("/v1/auth/authorize?{}", query.finish())
}

/// Registers a client app: (app id, client secret if confidential).
async fn register(
    addr: std::net::SocketAddr,
    operator: &str,
    name: &str,
    redirect: &str,
    post_logout: &str,
    confidential: bool,
) -> (String, String) {
    let mut apps = app_client(addr).await;
    let request = RegisterAppRequest {
        name: name.into(),
        environment: "production".into(),
        idempotency_key: key(),
        redirect_uris: vec![redirect.into()],
        post_logout_redirect_uris: vec![post_logout.into()],
        confidential,
    };
    let app = apps.register_app(authed(request, operator)).await.expect("register").into_inner();
    keel_tests::logs::secret(&app.client_secret);
    (app.app_id, app.client_secret)
}

/// POSTs a form to the token endpoint (with Basic client credentials when given).
async fn token(base: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().post(format!("{base}/v1/auth/token")).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.expect("token");
    let status = response.status().as_u16();
    let media = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    assert_eq!(media, "application/json", "OAuth's media type, also for errors");
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    for name in ["access_token", "refresh_token", "id_token"] {
        if let Some(secret) = body[name].as_str() {
            keel_tests::logs::secret(secret);
        }
    }
    (status, body)
}

/// Verifies an ID token with the discovery document and JWKS alone; returns its claims.
async fn verify_id_token(base: &str, id_token: &str, audience: &str) -> serde_json::Value {
    let http = reqwest::Client::new();
    let discovery: serde_json::Value =
        http.get(format!("{base}/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    let jwks: JwkSet = http.get(discovery["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(id_token).expect("header");
    let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("published key");
    let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    validation.set_audience(&[audience]);
    jsonwebtoken::decode::<serde_json::Value>(id_token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("the ID token verifies")
        .claims
}

#[tokio::test]
async fn oidc_code_flow_signs_two_apps_in_with_one_session_and_sign_out_ends_both() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (tenant_id, domain, email, _) = tenant_with_owner(&env, &keel, &operator, "oidc").await;
    let base = format!("http://{}", keel.rest_addr);
    let (a_redirect, a_bye) = ("https://a.example/callback", "https://a.example/bye");
    let (b_redirect, b_bye) = ("http://localhost:7777/cb", "http://localhost:7777/bye");
    let (app_a, _) = register(keel.grpc_addr, &operator, "App A", a_redirect, a_bye, false).await;
    let (app_b, secret_b) = register(keel.grpc_addr, &operator, "App B", b_redirect, b_bye, true).await;
    assert!(secret_b.starts_with("keel_cs_"));

    // Discovery names every endpoint.
    let discovery: serde_json::Value =
        reqwest::get(format!("{base}/.well-known/openid-configuration")).await.unwrap().json().await.unwrap();
    for endpoint in ["authorization_endpoint", "token_endpoint", "userinfo_endpoint", "end_session_endpoint"] {
        assert!(discovery[endpoint].as_str().is_some_and(|e| e.starts_with(&base)), "{endpoint}");
    }
    assert_eq!(discovery["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(discovery["grant_types_supported"], serde_json::json!(["authorization_code", "refresh_token"]));

    // App A: the authorization request goes to the login page, with the workspace the app named.
    let mut browser = Browser::new(keel.rest_addr);
    let (verifier, challenge) = pkce();
    let path =
        authorize_path(&app_a, a_redirect, &challenge, &[("state", "s-a"), ("nonce", "n-a"), ("tenant", &domain)]);
    let login = browser.get(&path).await;
    assert_eq!(login.status, 303, "{}", login.body);
    assert!(login.location.starts_with("/login?"), "{}", login.location);
    let login_query = query_of(&login.location);
    assert_eq!(login_query["workspace"], domain);
    let interaction = login_query["interaction"].clone();

    // A wrong password goes back to the page with a code, never the e-mail.
    let refused = browser.sign_in(&domain, &email, "wrong password!!", &interaction).await;
    assert_eq!(refused.status, 303);
    assert!(refused.location.starts_with("/login?error=invalid_credentials"), "{}", refused.location);
    assert!(!refused.location.contains("owner") && refused.location.contains("interaction="));
    assert!(!browser.cookies.contains_key("keel_session"));

    // The right one: the session cookie, and back to the app with a code and the state.
    let signed_in = browser.sign_in(&domain, &email, PASSWORD, &interaction).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert!(signed_in.location.starts_with(a_redirect), "{}", signed_in.location);
    assert!(browser.cookies.contains_key("keel_session"));
    let back = query_of(&signed_in.location);
    assert_eq!((back["state"].as_str(), back["iss"].as_str()), ("s-a", base.as_str()));
    let code = back["code"].clone();
    keel_tests::logs::secret(&code);

    // The code for tokens (a public client: PKCE alone).
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", a_redirect),
        ("code_verifier", verifier.as_str()),
        ("client_id", app_a.as_str()),
    ];
    let (status, tokens_a) = token(&base, &form, None).await;
    assert_eq!(status, 200, "{tokens_a}");
    assert_eq!(tokens_a["token_type"], "Bearer");
    assert_eq!(tokens_a["scope"], "openid email");
    let claims = verify_id_token(&base, tokens_a["id_token"].as_str().unwrap(), &app_a).await;
    assert_eq!(claims["nonce"], "n-a");
    assert_eq!(claims["tid"], tenant_id.as_str());
    assert_eq!(claims["email"], email.as_str());
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    assert!(claims["sub"].as_str().unwrap().starts_with("usr_"));
    let sid = claims["sid"].as_str().unwrap().to_string();
    let now = chrono::Utc::now().timestamp();
    assert!((now - 60..=now + 5).contains(&claims["auth_time"].as_i64().unwrap()));

    // Userinfo with the access token.
    let access_a = tokens_a["access_token"].as_str().unwrap();
    let info: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/v1/auth/userinfo"))
        .bearer_auth(access_a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((&info["sub"], &info["email"], &info["tid"]), (&claims["sub"], &claims["email"], &claims["tid"]));

    // App B (confidential) signs the same person in silently: no login page.
    let (verifier_b, challenge_b) = pkce();
    let silent =
        browser.get(&authorize_path(&app_b, b_redirect, &challenge_b, &[("state", "s-b"), ("prompt", "none")])).await;
    assert_eq!(silent.status, 302, "{}", silent.location);
    assert!(silent.location.starts_with(b_redirect), "{}", silent.location);
    let code_b = query_of(&silent.location)["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code_b.as_str()),
        ("redirect_uri", b_redirect),
        ("code_verifier", verifier_b.as_str()),
    ];
    let (status, refused) = token(&base, &form, Some((&app_b, "keel_cs_wrong"))).await;
    assert_eq!((status, refused["error"].as_str()), (401, Some("invalid_client")));
    let (status, tokens_b) = token(&base, &form, Some((&app_b, &secret_b))).await;
    assert_eq!(status, 200, "{tokens_b}");
    let claims_b = verify_id_token(&base, tokens_b["id_token"].as_str().unwrap(), &app_b).await;
    assert_eq!(claims_b["sid"], sid.as_str(), "one Keel session for both apps");

    // Refresh (RFC 6749 form) rotates, for the client that holds the token only.
    let refresh_a = tokens_a["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_a), ("client_id", app_b.as_str())];
    let (status, _) = token(&base, &form, None).await;
    assert_eq!(status, 401, "B is confidential and sent no secret");
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_a), ("client_id", app_a.as_str())];
    let (status, rotated_a) = token(&base, &form, None).await;
    assert_eq!(status, 200, "{rotated_a}");
    let refresh_a = rotated_a["refresh_token"].as_str().unwrap().to_string();

    // Sign-out from app A: back to its registered page with the state; the cookie is gone.
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("id_token_hint", tokens_a["id_token"].as_str().unwrap())
        .append_pair("post_logout_redirect_uri", a_bye)
        .append_pair("state", "bye-state");
    let out = browser.get(&format!("/v1/auth/end-session?{}", query.finish())).await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert_eq!(out.location, format!("{a_bye}?state=bye-state"));
    assert!(!browser.cookies.contains_key("keel_session"));

    // Both apps' tokens ended with the session.
    for (refresh, client, secret) in [
        (refresh_a.as_str(), app_a.as_str(), None),
        (tokens_b["refresh_token"].as_str().unwrap(), app_b.as_str(), Some(secret_b.as_str())),
    ] {
        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", client)];
        if let Some(secret) = secret {
            form.push(("client_secret", secret));
        }
        let (status, body) = token(&base, &form, None).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{client}");
    }
    let access_b = tokens_b["access_token"].as_str().unwrap().to_string();
    let ended = eventually(Duration::from_secs(2), || async {
        let response =
            reqwest::Client::new().get(format!("{base}/v1/auth/userinfo")).bearer_auth(&access_b).send().await.unwrap();
        response.status() == 401
    })
    .await;
    assert!(ended, "B's access token is refused once the session ended");

    // Signed out: a silent request now needs a sign-in.
    let again =
        browser.get(&authorize_path(&app_a, a_redirect, &challenge, &[("prompt", "none"), ("state", "x")])).await;
    assert_eq!(query_of(&again.location).get("error").map(String::as_str), Some("login_required"));

    // Every code issued is in the audit trail, with no code or e-mail in it.
    let http = reqwest::Client::new();
    let recorded = eventually(Duration::from_secs(20), || async {
        let page: serde_json::Value = http
            .get(format!("{base}/v1/audit/events?action=session.code.issue&tenant_id={tenant_id}&limit=100"))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        let text = page.to_string();
        page["items"].as_array().is_some_and(|items| items.len() == 2)
            && !text.contains(&code)
            && !text.contains(&email)
    })
    .await;
    assert!(recorded, "two code issuances audited");
    keel.stop().await;
}

#[tokio::test]
async fn oidc_refuses_what_the_protocol_forbids() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (_, domain, email, _) = tenant_with_owner(&env, &keel, &operator, "oidcno").await;
    let base = format!("http://{}", keel.rest_addr);
    let redirect = "https://app.example/cb";
    let (app, _) = register(keel.grpc_addr, &operator, "App", redirect, "https://app.example/bye", false).await;
    let (other, _) =
        register(keel.grpc_addr, &operator, "Other", "https://other.example/cb", "https://other.example/bye", false)
            .await;
    let mut browser = Browser::new(keel.rest_addr);
    let (verifier, challenge) = pkce();

    // An unknown client or an unregistered redirect URI: an HTML page, never a redirect.
    for path in [
        authorize_path(&app, "https://evil.example/cb", &challenge, &[]),
        authorize_path(&app, "https://app.example/cb/", &challenge, &[]),
        authorize_path("app_01jd0000000000000000000000", redirect, &challenge, &[]),
    ] {
        let answer = browser.get(&path).await;
        assert_eq!((answer.status, answer.location.as_str()), (400, ""), "{path}");
        assert!(answer.body.contains("<html"));
    }
    // No PKCE: back to the app with invalid_request (and the state).
    let no_pkce =
        format!("/v1/auth/authorize?response_type=code&client_id={app}&redirect_uri={redirect}&scope=openid&state=s1");
    let answer = browser.get(&no_pkce).await;
    let query = query_of(&answer.location);
    assert!(answer.location.starts_with(redirect));
    assert_eq!((query["error"].as_str(), query["state"].as_str()), ("invalid_request", "s1"));
    // prompt=none without a session.
    let answer = browser.get(&authorize_path(&app, redirect, &challenge, &[("prompt", "none")])).await;
    assert_eq!(query_of(&answer.location)["error"], "login_required");

    // Sign in once; then prompt=login still asks for the password.
    let login = browser.get(&authorize_path(&app, redirect, &challenge, &[("tenant", &domain)])).await;
    let interaction = query_of(&login.location)["interaction"].clone();
    // The app named a workspace: another one is refused.
    let mismatch = browser.sign_in("elsewhere", &email, PASSWORD, &interaction).await;
    assert!(mismatch.location.starts_with("/login?error=workspace_mismatch"), "{}", mismatch.location);
    let forged = browser.sign_in(&domain, &email, PASSWORD, &format!("{interaction}x")).await;
    assert!(forged.location.starts_with("/login?error=interaction_expired"), "{}", forged.location);
    let signed_in = browser.sign_in(&domain, &email, PASSWORD, &interaction).await;
    let code = query_of(&signed_in.location)["code"].clone();
    let forced = browser.get(&authorize_path(&app, redirect, &challenge, &[("prompt", "login")])).await;
    assert_eq!(forced.status, 303);
    assert!(forced.location.starts_with("/login?interaction="), "{}", forced.location);

    let exchange = |code: String, client: String, verifier: String| {
        let base = base.clone();
        async move {
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect),
                ("code_verifier", verifier.as_str()),
                ("client_id", client.as_str()),
            ];
            token(&base, &form, None).await
        }
    };
    // A wrong verifier, or another client, gets nothing (and does not use the code up).
    let (wrong_verifier, _) = pkce();
    let (status, body) = exchange(code.clone(), app.clone(), wrong_verifier).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let (status, body) = exchange(code.clone(), other.clone(), verifier.clone()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    // The right client and verifier: tokens. Replayed: refused, and what it issued ends.
    let (status, tokens) = exchange(code.clone(), app.clone(), verifier.clone()).await;
    assert_eq!(status, 200, "{tokens}");
    let (status, body) = exchange(code.clone(), app.clone(), verifier.clone()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ("client_id", app.as_str()),
    ];
    let (status, body) = token(&base, &form, None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "the replay ended the first grant");

    // An expired code.
    let silent = browser.get(&authorize_path(&app, redirect, &challenge, &[])).await;
    let code = query_of(&silent.location)["code"].clone();
    let owner = env.owner_pool().await;
    sqlx::query("UPDATE auth_codes SET expires_at = now() - interval '1 second'").execute(&owner).await.unwrap();
    let (status, body) = exchange(code, app.clone(), verifier.clone()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "expired");

    // A disabled app can start no flow and redeem no code.
    let silent = browser.get(&authorize_path(&app, redirect, &challenge, &[])).await;
    let code = query_of(&silent.location)["code"].clone();
    let mut apps = app_client(keel.grpc_addr).await;
    apps.disable_app(authed(AppRequest { app_id: app.clone(), idempotency_key: key() }, &operator)).await.unwrap();
    let answer = browser.get(&authorize_path(&app, redirect, &challenge, &[])).await;
    assert_eq!((answer.status, answer.location.as_str()), (400, ""));
    let (status, body) = exchange(code, app.clone(), verifier.clone()).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    keel.stop().await;
}

/// Signs in through app `app` (tenant `domain`) and exchanges the code: the token answer.
async fn code_flow(
    browser: &mut Browser,
    base: &str,
    app: &str,
    redirect: &str,
    domain: &str,
    email: &str,
) -> serde_json::Value {
    let (verifier, challenge) = pkce();
    let login =
        browser.get(&authorize_path(app, redirect, &challenge, &[("tenant", domain), ("prompt", "login")])).await;
    let interaction = query_of(&login.location)["interaction"].clone();
    let signed_in = browser.sign_in(domain, email, PASSWORD, &interaction).await;
    let code = query_of(&signed_in.location)["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", verifier.as_str()),
        ("client_id", app),
    ];
    let (status, tokens) = token(base, &form, None).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

#[tokio::test]
async fn oidc_client_tokens_end_with_every_trigger_that_ends_the_browser_session() {
    let env = TestEnv::new().await;
    let keel = env.start().await;
    let operator = env.operator_token().await;
    let (tenant_id, domain, email, owner) = tenant_with_owner(&env, &keel, &operator, "oidcrev").await;
    let base = format!("http://{}", keel.rest_addr);
    let redirect = "https://rev.example/cb";
    let (app, _) = register(keel.grpc_addr, &operator, "Rev", redirect, "https://rev.example/bye", false).await;
    let mut browser = Browser::new(keel.rest_addr);
    let refresh_fails = |tokens: serde_json::Value| {
        let (base, app) = (base.clone(), app.clone());
        async move {
            let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
            let form =
                [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", app.as_str())];
            let (status, body) = token(&base, &form, None).await;
            (status, body["error"].as_str().map(str::to_string)) == (400, Some("invalid_grant".to_string()))
        }
    };

    // An administrator ends all of the user's sessions: the app's tokens and the cookie end.
    let tokens = code_flow(&mut browser, &base, &app, redirect, &domain, &email).await;
    let user_id =
        verify_id_token(&base, tokens["id_token"].as_str().unwrap(), &app).await["sub"].as_str().unwrap().to_string();
    let request = UserRequest { tenant_id: tenant_id.clone(), user_id, idempotency_key: key() };
    user_client(keel.grpc_addr).await.revoke_user_sessions(authed(request, &owner)).await.expect("revoke all");
    assert!(refresh_fails(tokens).await, "the app's refresh token ended with the user's sessions");
    let (_, challenge) = pkce();
    let silent = browser.get(&authorize_path(&app, redirect, &challenge, &[("prompt", "none")])).await;
    assert_eq!(query_of(&silent.location)["error"], "login_required", "the cookie session ended too");

    // The tenant is suspended: the same.
    let tokens = code_flow(&mut browser, &base, &app, redirect, &domain, &email).await;
    let request = SuspendTenantRequest { tenant_id, reason: "x".into(), idempotency_key: key() };
    tenant_client(keel.grpc_addr).await.suspend_tenant(authed(request, &operator)).await.expect("suspend");
    assert!(refresh_fails(tokens).await, "the app's refresh token ended with the tenant's sessions");
    let silent = browser.get(&authorize_path(&app, redirect, &challenge, &[("prompt", "none")])).await;
    assert_eq!(query_of(&silent.location)["error"], "login_required");
    keel.stop().await;
}
