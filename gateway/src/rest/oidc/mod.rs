//! Keel as an OpenID Provider (ADR 0024): one file per protocol operation, each with
//! its routes and its part of the OpenAPI document — the authorization endpoint
//! (`authorize`), the sign-in form's target (`session`), the token endpoint (`token`),
//! userinfo (`userinfo`) and RP-initiated logout (`end_session`) — and what they share:
//! the `keel_session` cookie, the signed `interaction` handed to the login page, the
//! authorization request, redirects back to clients, the plain HTML error page and
//! OAuth's own error bodies.

pub mod authorize;
pub mod end_session;
pub mod session;
pub mod token;
pub mod userinfo;

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use keel_commands::sessions::BrowserSession;

use super::state::AppState;

/// The browser session cookie.
pub const SESSION_COOKIE: &str = "keel_session";
/// How long an interaction (a validated authorization request waiting for sign-in) lasts.
const INTERACTION_TTL_SECONDS: i64 = 600;
/// Longest parameter value accepted (URIs, state, nonce, …).
const MAX_PARAM_LEN: usize = 2000;
/// Most parameters in one request.
const MAX_PARAMS: usize = 30;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC-SHA256 of `message` under a key derived from the gateways' shared secret for `purpose`.
fn mac(state: &AppState, purpose: &str, message: &[u8]) -> Hmac<Sha256> {
    let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(state.stream_key.as_ref()).expect("any key length");
    derive.update(purpose.as_bytes());
    let key = derive.finalize().into_bytes();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
    mac.update(message);
    mac
}

/// `body.mac`, signed for `purpose`.
fn sign(state: &AppState, purpose: &str, body: &str) -> String {
    format!("{body}.{}", b64(&mac(state, purpose, body.as_bytes()).finalize().into_bytes()))
}

/// The body of `signed` if its MAC for `purpose` is right.
fn verify<'a>(state: &AppState, purpose: &str, signed: &'a str) -> Option<&'a str> {
    let (body, tag) = signed.rsplit_once('.')?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(state, purpose, body.as_bytes()).verify_slice(&tag).ok()?;
    Some(body)
}

/// A validated authorization request (what `interaction` carries to the login page and back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    /// The client (app id).
    pub client_id: String,
    /// Its registered redirect URI.
    pub redirect_uri: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The client's `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The client's `nonce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The tenant domain the client named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Interaction {
    #[serde(flatten)]
    request: AuthRequest,
    exp: i64,
}

/// The signed, short-lived `interaction` for `request`.
pub fn interaction(state: &AppState, request: &AuthRequest) -> String {
    let exp = chrono::Utc::now().timestamp() + INTERACTION_TTL_SECONDS;
    let body = serde_json::to_vec(&Interaction { request: request.clone(), exp }).unwrap_or_default();
    sign(state, "keel oidc interaction", &b64(&body))
}

/// The authorization request in `interaction`, if it is genuine and unexpired.
pub fn open_interaction(state: &AppState, interaction: &str) -> Option<AuthRequest> {
    if interaction.len() > 8 * MAX_PARAM_LEN {
        return None;
    }
    let body = verify(state, "keel oidc interaction", interaction)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(body).ok()?;
    let found: Interaction = serde_json::from_slice(&json).ok()?;
    (found.exp > chrono::Utc::now().timestamp()).then_some(found.request)
}

/// The `keel_session` cookie's value for `session_id`.
fn cookie_value(state: &AppState, session_id: &str) -> String {
    sign(state, "keel session cookie", session_id)
}

/// The `Set-Cookie` header opening the browser session `session_id` until `expires_at`.
pub fn session_cookie(state: &AppState, session_id: &str, expires_at: chrono::DateTime<chrono::Utc>) -> HeaderValue {
    let max_age = (expires_at - chrono::Utc::now()).num_seconds().max(0);
    let value = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        cookie_value(state, session_id),
        secure(state)
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `Set-Cookie` header ending the browser session cookie.
pub fn clear_session_cookie(state: &AppState) -> HeaderValue {
    let value = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}", secure(state));
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn secure(state: &AppState) -> &'static str {
    if state.auth.tokens().issuer().starts_with("https://") { "; Secure" } else { "" }
}

/// The session id in the request's genuine `keel_session` cookie (it may have ended).
pub fn cookie_session(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    let value = cookies
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)?;
    if value.len() > 200 {
        return None;
    }
    verify(state, "keel session cookie", value).map(str::to_string)
}

/// The open browser session of the request's cookie.
pub async fn live_session(state: &AppState, headers: &HeaderMap) -> Result<Option<BrowserSession>, sqlx::Error> {
    match cookie_session(state, headers) {
        Some(id) => state.sessions.browser_session(&id).await,
        None => Ok(None),
    }
}

/// Whether the request's body is a form (`application/x-www-form-urlencoded`), not JSON.
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// Query or form parameters, each at most once (RFC 6749 §3.1), bounded in number and size.
/// `None` if malformed.
pub fn params(raw: &[u8]) -> Option<HashMap<String, String>> {
    let mut found = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(raw) {
        if found.len() >= MAX_PARAMS || value.len() > MAX_PARAM_LEN || name.len() > 64 {
            return None;
        }
        if found.insert(name.into_owned(), value.into_owned()).is_some() {
            return None;
        }
    }
    Some(found)
}

/// `uri` with `pairs` added to its query (absent values left out).
pub fn with_query(uri: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let Ok(mut url) = url::Url::parse(uri) else { return uri.to_string() };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
    }
    url.to_string()
}

/// The login page's path with `pairs` in its query (absent values left out).
pub fn login_page(pairs: &[(&str, Option<&str>)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() { "/login".to_string() } else { format!("/login?{query}") }
}

/// `303 See Other` to `location`, not cached.
pub fn see_other(location: &str) -> Response {
    redirect(StatusCode::SEE_OTHER, location)
}

/// `status` redirecting to `location`, not cached.
pub fn redirect(status: StatusCode, location: &str) -> Response {
    let mut response = status.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The plain HTML error page (400) for requests that must not redirect (unknown client,
/// unregistered redirect URI). `message` is fixed text, never the request's.
pub fn error_page(message: &'static str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in error</title></head>\n\
         <body><h1>Sign-in error</h1><p>{message}</p></body></html>\n"
    );
    let mut response = (StatusCode::BAD_REQUEST, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// An OAuth 2.0 error body (RFC 6749 §5.2: `application/json` with `error`), which stock
/// clients require at the token endpoint instead of a problem document.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct OAuthError {
    /// The OAuth error code (`invalid_request`, `invalid_client`, `invalid_grant`, …).
    pub error: String,
    /// What went wrong, for developers.
    pub error_description: String,
}

/// An OAuth error answer with `status`.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = OAuthError { error: error.into(), error_description: description.into() };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An OpenAPI response of the HTML error page.
pub fn error_page_doc(description: &str) -> serde_json::Value {
    serde_json::json!({ "description": description, "content": { "text/html": { "schema": { "type": "string" } } } })
}

/// The audit record of an authorization code issued to `client_id` for `session`
/// (no code, no e-mail).
pub async fn audit_code_issued(state: &AppState, correlation: &str, session: &BrowserSession, client_id: &str) {
    let metadata = serde_json::Map::from_iter([
        ("correlation_id".to_string(), correlation.into()),
        ("client_id".to_string(), client_id.into()),
        ("session_id".to_string(), session.session_id.clone().into()),
    ]);
    let role = session.role.parse().unwrap_or(keel_domain::directory::UserRole::User);
    let record = keel_domain::audit::AuditInput {
        timestamp: chrono::Utc::now(),
        resource: "session".into(),
        tenant_id: session.tenant_id.clone(),
        actor_type: super::auth::actor_type(role).into(),
        actor_id: session.user_id.clone(),
        action: "session.code.issue".into(),
        outcome: keel_domain::audit::Outcome::Success,
        reason: None,
        source: "keel".into(),
        source_event_id: None,
        metadata,
    };
    super::auth::audit_login(state, record).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_come_once_and_bounded() {
        assert_eq!(params(b"a=1&b=x%20y").unwrap()["b"], "x y");
        assert!(params(b"a=1&a=2").is_none(), "a repeated parameter is refused");
        assert!(params(format!("a={}", "x".repeat(MAX_PARAM_LEN + 1)).as_bytes()).is_none());
    }

    #[test]
    fn queries_are_added_to_the_redirect_uri() {
        let uri = with_query("https://app.example/cb?x=1", &[("code", Some("c d")), ("state", None)]);
        assert_eq!(uri, "https://app.example/cb?x=1&code=c+d");
    }
}
