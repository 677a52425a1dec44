//! `POST /v1/auth/session`: the login page's form target, and the same as a JSON API.
//! A password sign-in exactly as `POST /v1/auth/login` (its code: throttles, hashing
//! queue, enumeration-safe refusals, audit records) that opens the browser session
//! (`keel_session` cookie) and, with an `interaction`, finishes the client's
//! authorization request with a code. Form refusals go back to the login page with an
//! error code, never with the e-mail or the password.

use std::net::SocketAddr;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::json;

use keel_commands::bus::CommandContext;
use keel_commands::sessions::BrowserSession;
use keel_domain::envelope::Actor;
use keel_domain::session::RevokeReason;

use super::authorize::code_location;
use super::{AuthRequest, cookie_session, login_page, open_interaction, see_other, session_cookie};
use crate::rest::auth::sign_in;
use crate::rest::extract::CorrelationId;
use crate::rest::openapi::{ApiDoc, ok, problem};
use crate::rest::problem::Problem;
use crate::rest::routes::Routes;
use crate::rest::state::AppState;

/// The sign-in form target's route.
pub fn routes() -> Routes {
    Routes::new().route("/v1/auth/session", post(session))
}

/// The sign-in form target's part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<SessionRequest>().schema::<SessionResponse>();
    let schema = json!({ "$ref": "#/components/schemas/SessionRequest" });
    doc.operation(
        "/v1/auth/session",
        "post",
        json!({
            "tags": ["auth"],
            "summary": "Sign in and open the Keel browser session (cookie `keel_session`); with an `interaction`, finish the app's authorization request",
            "security": [],
            "requestBody": { "required": true, "content": {
                "application/json": { "schema": schema },
                "application/x-www-form-urlencoded": { "schema": schema }
            } },
            "responses": {
                "200": ok("SessionResponse"),
                "303": { "description": "Form: to the app's redirect URI with a code, or to `/`; refused: to `/login?error=<code>[&retry_after=<s>][&interaction=…][&workspace=…][&lang=…]` (codes: invalid_credentials, too_many_attempts, tenant_suspended, user_disabled, overloaded, unavailable, interaction_expired, workspace_mismatch, invalid_request)" },
                "400": problem("Malformed body, interaction_expired or workspace_mismatch (JSON)"),
                "401": problem("invalid_credentials (JSON)"),
                "403": problem("tenant_suspended or user_disabled (JSON)"),
                "429": problem("too_many_attempts (JSON; Retry-After)"),
                "503": problem("overloaded or unavailable (JSON; Retry-After)"),
            }
        }),
    );
}

/// `POST /v1/auth/session` (form or JSON).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct SessionRequest {
    /// The tenant's domain; empty for platform operators and auditors.
    #[serde(default)]
    pub workspace: Option<String>,
    /// The account's e-mail.
    #[serde(default)]
    pub email: String,
    /// The password.
    #[serde(default)]
    pub password: String,
    /// The app's authorization request, as the authorization endpoint handed it to the login page.
    #[serde(default)]
    pub interaction: Option<String>,
    /// The login page's CSRF token (form only; checked before this handler).
    #[serde(default)]
    pub csrf: Option<String>,
    /// The login page's language (`en` or `ja`), kept on a refusal.
    #[serde(default)]
    pub lang: Option<String>,
}

/// A successful JSON sign-in.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SessionResponse {
    /// Where the browser goes next: the app's redirect URI with a code, or Keel's start page.
    pub redirect_to: String,
}

/// A refusal: the problem a JSON caller gets; its code is the one the login page shows.
struct Refused {
    problem: Problem,
}

async fn session(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(CorrelationId(correlation)): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let form = super::is_form(&headers);
    let parsed: Option<SessionRequest> =
        if form { serde_urlencoded::from_bytes(&body).ok() } else { serde_json::from_slice(&body).ok() };
    let Some(req) = parsed else {
        if form {
            return Ok(see_other(&login_page(&[("error", Some("invalid_request"))])));
        }
        return Err(Problem::bad_request("invalid_body", "the body is not the expected JSON"));
    };
    let lang = req.lang.as_deref().filter(|l| matches!(*l, "en" | "ja"));
    let workspace = req.workspace.as_deref().map(str::trim).filter(|w| !w.is_empty() && w.len() <= 253);
    let interaction = req.interaction.as_deref().filter(|i| !i.is_empty());
    let outcome = sign_in_with(&state, &correlation, peer, &headers, &req, workspace, interaction).await;
    match outcome {
        Ok((location, cookie)) => {
            let mut response = if form {
                see_other(&location)
            } else {
                let mut response = Json(SessionResponse { redirect_to: location }).into_response();
                response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            };
            response.headers_mut().append(header::SET_COOKIE, cookie);
            Ok(response)
        }
        Err(Refused { problem }) if form => {
            let retry = problem.retry_after.map(|s| s.to_string());
            // An expired interaction is not handed back: the app must start again.
            let interaction = interaction.filter(|_| problem.code != "interaction_expired");
            let pairs = [
                ("error", Some(problem.code.as_str())),
                ("retry_after", retry.as_deref()),
                ("interaction", interaction),
                ("workspace", workspace),
                ("lang", lang),
            ];
            Ok(see_other(&login_page(&pairs)))
        }
        Err(Refused { problem }) => Err(problem),
    }
}

/// Signs in; returns where to go next and the session cookie.
async fn sign_in_with(
    state: &AppState,
    correlation: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
    req: &SessionRequest,
    workspace: Option<&str>,
    interaction: Option<&str>,
) -> Result<(String, HeaderValue), Refused> {
    let refused = |code: &str, detail: &str| Refused { problem: Problem::bad_request(code, detail) };
    let request: Option<AuthRequest> = match interaction {
        Some(raw) => {
            let request = open_interaction(state, raw).ok_or_else(|| {
                refused("interaction_expired", "the sign-in request expired; start again from the app")
            })?;
            Some(request)
        }
        None => None,
    };
    if let Some(tenant) = request.as_ref().and_then(|r| r.tenant.as_deref())
        && keel_domain::validate::domain(workspace.unwrap_or_default()).as_deref() != Some(tenant)
    {
        return Err(refused("workspace_mismatch", "the app asked for another workspace"));
    }
    if req.email.trim().is_empty() || req.password.is_empty() {
        return Err(refused("invalid_request", "e-mail and password are required"));
    }
    let grant = sign_in(state, correlation, peer, headers, workspace, &req.email, &req.password)
        .await
        .map_err(|problem| Refused { problem })?;
    // A sign-in replaces the browser session the cookie held: that one ends (and its apps' tokens).
    if let Some(earlier) = cookie_session(state, headers).filter(|id| *id != grant.session_id) {
        let ctx = CommandContext::new(Actor::system("logout"), correlation.to_string(), format!("logout:{earlier}"));
        if let Err(err) = state.sessions.revoke(&ctx, &earlier, RevokeReason::Logout).await {
            tracing::info!(code = %err.code, "the replaced browser session was not ended");
        }
    }
    let cookie = session_cookie(state, &grant.session_id, grant.expires_at);
    let Some(request) = request else { return Ok(("/".to_string(), cookie)) };
    // The app may have been disabled, or its redirect URI removed, since the request.
    let allowed = match state.oidc_clients.find(&request.client_id).await {
        Ok(Some(client)) => client.enabled && client.redirect_uris.contains(&request.redirect_uri),
        Ok(None) => false,
        Err(err) => return Err(Refused { problem: err.into() }),
    };
    if !allowed {
        return Err(refused("interaction_expired", "the app can no longer be signed in to"));
    }
    let session = BrowserSession {
        session_id: grant.session_id.clone(),
        user_id: grant.user_id.clone(),
        tenant_id: grant.tenant_id.clone(),
        tenant_domain: workspace.and_then(keel_domain::validate::domain),
        role: grant.role.as_str().to_string(),
        opened_at: chrono::Utc::now(),
        expires_at: grant.expires_at,
    };
    let location =
        code_location(state, correlation, &session, &request).await.map_err(|problem| Refused { problem })?;
    Ok((location, cookie))
}
