//! `GET /v1/auth/authorize`: the authorization endpoint (OpenID Connect Core §3.1.2,
//! code flow only, PKCE S256 required, RFC 7636). An unknown or disabled client, or a
//! redirect URI not registered exactly, gets the HTML error page and never a redirect.
//! Other errors go back to the client. A live browser session that satisfies the
//! request gets a code at once; otherwise the user goes to the login page with the
//! signed request (`interaction`).

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use keel_commands::authorization_codes::{NewCode, is_s256_challenge};
use keel_commands::sessions::BrowserSession;

use super::{
    AuthRequest, error_page, error_page_doc, interaction, live_session, login_page, params, redirect, see_other,
    with_query,
};
use crate::rest::extract::CorrelationId;
use crate::rest::openapi::{ApiDoc, problem};
use crate::rest::problem::Problem;
use crate::rest::routes::Routes;
use crate::rest::state::AppState;

/// Scopes a client may ask for.
const SCOPES: [&str; 4] = ["openid", "email", "profile", "offline_access"];

/// The authorization endpoint's route.
pub fn routes() -> Routes {
    Routes::new().route("/v1/auth/authorize", get(authorize))
}

/// The authorization endpoint's part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    let param = |name: &str, required: bool, description: &str| json!({ "name": name, "in": "query", "required": required, "description": description, "schema": { "type": "string", "maxLength": 2000 } });
    doc.operation(
        "/v1/auth/authorize",
        "get",
        json!({
            "tags": ["auth"],
            "summary": "OpenID Connect authorization endpoint (code flow, PKCE S256 required)",
            "security": [],
            "parameters": [
                param("response_type", true, "`code`"),
                param("client_id", true, "The app id"),
                param("redirect_uri", true, "Exactly one of the app's registered redirect URIs"),
                param("scope", true, "Must contain `openid`; `email`, `profile`, `offline_access` allowed"),
                param("code_challenge", true, "PKCE S256 challenge"),
                param("code_challenge_method", true, "`S256`"),
                param("state", false, "Returned to the client"),
                param("nonce", false, "Copied into the ID token"),
                param("prompt", false, "`none` or `login`"),
                param("max_age", false, "Seconds since the last sign-in beyond which the user signs in again"),
                param("tenant", false, "The tenant's domain (the app names the workspace)"),
                param("ui_locales", false, "`ja` or `en` for the login page"),
                param("login_hint", false, "Ignored"),
            ],
            "responses": {
                "302": { "description": "To the redirect URI with `code`, `state` and `iss`, or with `error` (`invalid_request`, `unsupported_response_type`, `invalid_scope`, `login_required`, `server_error`), `error_description`, `state` and `iss`" },
                "303": { "description": "To the login page (`/login?interaction=…`)" },
                "400": error_page_doc("Unknown or disabled client, or an unregistered redirect URI (HTML page, no redirect); also a malformed query"),
                "503": problem("Unavailable"),
            }
        }),
    );
}

/// Why a request goes back to the client with an error.
struct Refusal {
    error: &'static str,
    description: &'static str,
}

fn refuse(error: &'static str, description: &'static str) -> Refusal {
    Refusal { error, description }
}

async fn authorize(
    State(state): State<AppState>,
    Extension(CorrelationId(correlation)): Extension<CorrelationId>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let Some(params) = params(query.unwrap_or_default().as_bytes()) else {
        return Ok(error_page("The sign-in request is malformed."));
    };
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let Some(client) = get("client_id") else { return Ok(error_page("The sign-in request names no application.")) };
    let client = match state.oidc_clients.find(client).await? {
        Some(client) if client.enabled => client,
        _ => return Ok(error_page("This application is unknown or disabled.")),
    };
    let redirect_uri = match get("redirect_uri") {
        Some(uri) if client.redirect_uris.iter().any(|registered| registered == uri) => uri.to_string(),
        _ => return Ok(error_page("The application's return address is not registered.")),
    };
    let client_state = get("state").map(str::to_string);
    let back = |error: &str, description: &str| {
        let location = with_query(
            &redirect_uri,
            &[
                ("error", Some(error)),
                ("error_description", Some(description)),
                ("state", client_state.as_deref()),
                ("iss", Some(state.auth.tokens().issuer())),
            ],
        );
        redirect(StatusCode::FOUND, &location)
    };
    let request = match validate(&params, &client.app_id, &redirect_uri) {
        Ok(request) => request,
        Err(refusal) => return Ok(back(refusal.error, refusal.description)),
    };
    let prompt = get("prompt");
    let max_age: Option<i64> = match get("max_age").map(str::parse::<i64>) {
        None => None,
        Some(Ok(seconds)) if seconds >= 0 => Some(seconds),
        Some(_) => return Ok(back("invalid_request", "max_age must be a non-negative integer")),
    };
    let session = live_session(&state, &headers).await?;
    let satisfying = session.filter(|s| prompt != Some("login") && satisfies(s, &request, max_age));
    if let Some(session) = satisfying {
        return code_redirect(&state, &correlation, &session, &request).await;
    }
    if prompt == Some("none") {
        return Ok(back("login_required", "the user must sign in"));
    }
    let lang = get("ui_locales").and_then(|locales| {
        locales.split(' ').find_map(|l| ["ja", "en"].into_iter().find(|known| l.split('-').next() == Some(known)))
    });
    let interaction = interaction(&state, &request);
    let pairs = [("interaction", Some(interaction.as_str())), ("workspace", request.tenant.as_deref()), ("lang", lang)];
    Ok(see_other(&login_page(&pairs)))
}

/// The authorization request in `params` for the (known) client and redirect URI.
fn validate(
    params: &std::collections::HashMap<String, String>,
    client_id: &str,
    redirect_uri: &str,
) -> Result<AuthRequest, Refusal> {
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    if get("request").is_some() || get("request_uri").is_some() {
        return Err(refuse("request_not_supported", "request objects are not supported"));
    }
    match get("response_type") {
        Some("code") => {}
        None => return Err(refuse("invalid_request", "response_type is required")),
        Some(_) => return Err(refuse("unsupported_response_type", "only response_type=code is supported")),
    }
    let scope = get("scope").unwrap_or_default();
    let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    if !scopes.contains(&"openid") {
        return Err(refuse("invalid_scope", "scope must contain openid"));
    }
    if scopes.iter().any(|s| !SCOPES.contains(s)) {
        return Err(refuse("invalid_scope", "only openid, email, profile and offline_access are supported"));
    }
    let challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (Some(challenge), Some("S256")) if is_s256_challenge(challenge) => challenge,
        (None, _) | (_, None) => return Err(refuse("invalid_request", "PKCE is required: code_challenge with S256")),
        _ => return Err(refuse("invalid_request", "code_challenge must be an S256 challenge")),
    };
    if !matches!(get("prompt"), None | Some("none") | Some("login")) {
        return Err(refuse("invalid_request", "prompt must be none or login"));
    }
    let tenant = match get("tenant") {
        None => None,
        Some(raw) => {
            Some(keel_domain::validate::domain(raw).ok_or(refuse("invalid_request", "tenant is not a domain"))?)
        }
    };
    let bounded = |name: &str| get(name).filter(|v| v.len() <= 512).map(str::to_string);
    if bounded("state").is_none() != get("state").is_none() || bounded("nonce").is_none() != get("nonce").is_none() {
        return Err(refuse("invalid_request", "state and nonce are 512 characters at most"));
    }
    let mut granted: Vec<&str> = SCOPES.iter().copied().filter(|s| scopes.contains(s)).collect();
    granted.dedup();
    Ok(AuthRequest {
        client_id: client_id.to_string(),
        redirect_uri: redirect_uri.to_string(),
        scope: granted.join(" "),
        state: bounded("state"),
        nonce: bounded("nonce"),
        code_challenge: challenge.to_string(),
        tenant,
    })
}

/// Whether the browser session satisfies the request: the tenant it names, and `max_age`.
fn satisfies(session: &BrowserSession, request: &AuthRequest, max_age: Option<i64>) -> bool {
    let tenant_ok = request.tenant.is_none() || request.tenant == session.tenant_domain;
    let fresh = max_age.is_none_or(|age| (chrono::Utc::now() - session.opened_at).num_seconds() <= age);
    tenant_ok && fresh
}

/// Issues a code for `session` and sends the user back to the client with it.
pub async fn code_redirect(
    state: &AppState,
    correlation: &str,
    session: &BrowserSession,
    request: &AuthRequest,
) -> Result<Response, Problem> {
    let location = code_location(state, correlation, session, request).await?;
    Ok(redirect(StatusCode::FOUND, &location))
}

/// The client's redirect URI with a new code for `session`, `state` and `iss`.
pub async fn code_location(
    state: &AppState,
    correlation: &str,
    session: &BrowserSession,
    request: &AuthRequest,
) -> Result<String, Problem> {
    let new = NewCode {
        client_id: &request.client_id,
        redirect_uri: &request.redirect_uri,
        code_challenge: &request.code_challenge,
        scope: &request.scope,
        nonce: request.nonce.as_deref(),
        session_id: &session.session_id,
    };
    let code = state.sessions.issue_code(&new).await?;
    super::audit_code_issued(state, correlation, session, &request.client_id).await;
    Ok(with_query(
        &request.redirect_uri,
        &[("code", Some(&code)), ("state", request.state.as_deref()), ("iss", Some(state.auth.tokens().issuer()))],
    ))
}
