//! `GET|POST /v1/auth/end-session`: RP-initiated logout (OpenID Connect RP-Initiated
//! Logout 1.0). Ends the browser session of the cookie (or, without one, the session
//! named by `id_token_hint`) and with it every client's tokens of that session, clears
//! the cookie, and sends the user to the client's registered post-logout URI (exact
//! match, with `state`) or to the login page.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use keel_commands::bus::{CommandContext, Failure};
use keel_domain::envelope::Actor;
use keel_domain::session::RevokeReason;

use super::{clear_session_cookie, cookie_session, error_page, error_page_doc, params, see_other, with_query};
use crate::rest::extract::CorrelationId;
use crate::rest::openapi::{ApiDoc, problem};
use crate::rest::problem::Problem;
use crate::rest::routes::Routes;
use crate::rest::state::AppState;

/// The end-session route.
pub fn routes() -> Routes {
    Routes::new().route("/v1/auth/end-session", get(end_session).post(end_session))
}

/// The end-session part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    let names = [
        ("id_token_hint", "An ID token Keel issued to the client (expired ones too)"),
        ("post_logout_redirect_uri", "Exactly one of the client's registered post-logout redirect URIs"),
        ("state", "Returned with the post-logout redirect"),
        ("client_id", "The client (else the ID token's audience)"),
    ];
    let responses = json!({
        "303": { "description": "Signed out (cookie cleared): to the post-logout redirect URI with `state`, or to `/login?signed_out=1`" },
        "400": error_page_doc("An invalid id_token_hint, an unknown client, or an unregistered post-logout redirect URI (HTML page, no redirect); also a malformed query"),
        "503": problem("Unavailable"),
    });
    let parameters: Vec<_> = names
        .iter()
        .map(|(name, description)| json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": "string", "maxLength": 2000 } }))
        .collect();
    let form = json!({ "type": "object", "properties": names.iter().map(|(name, _)| (name.to_string(), json!({ "type": "string", "maxLength": 2000 }))).collect::<serde_json::Map<_, _>>() });
    doc.operation(
        "/v1/auth/end-session",
        "get",
        json!({ "tags": ["auth"], "summary": "End the Keel session (RP-initiated logout)", "security": [], "parameters": parameters, "responses": responses }),
    );
    doc.operation(
        "/v1/auth/end-session",
        "post",
        json!({
            "tags": ["auth"], "summary": "End the Keel session (RP-initiated logout; the signed-in page's Sign out form)",
            "security": [],
            "requestBody": { "required": false, "content": { "application/x-www-form-urlencoded": { "schema": form } } },
            "responses": responses
        }),
    );
}

async fn end_session(
    State(state): State<AppState>,
    Extension(CorrelationId(correlation)): Extension<CorrelationId>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, Problem> {
    let raw = if method == Method::POST { body.to_vec() } else { query.unwrap_or_default().into_bytes() };
    let Some(params) = params(&raw) else { return Ok(error_page("The sign-out request is malformed.")) };
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let hint = match get("id_token_hint") {
        Some(token) => match state.auth.tokens().verify_id_token_hint(token) {
            Some(claims) => Some(claims),
            None => return Ok(error_page("The sign-out request is not valid.")),
        },
        None => None,
    };
    let client_id = get("client_id").or(hint.as_ref().map(|h| h.aud.as_str()));
    if let (Some(hint), Some(client_id)) = (&hint, get("client_id"))
        && hint.aud != client_id
    {
        return Ok(error_page("The sign-out request is not valid."));
    }
    let mut location = "/login?signed_out=1".to_string();
    if let Some(uri) = get("post_logout_redirect_uri") {
        let registered = match client_id {
            Some(id) => {
                state.oidc_clients.find(id).await?.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == uri))
            }
            None => false,
        };
        if !registered {
            return Ok(error_page("The application's return address is not registered."));
        }
        location = with_query(uri, &[("state", get("state"))]);
    }
    let session = cookie_session(&state, &headers).or(hint.map(|h| h.sid));
    if let Some(session_id) = session {
        let ctx = CommandContext::new(Actor::system("logout"), correlation, format!("logout:{session_id}"));
        match state.sessions.revoke(&ctx, &session_id, RevokeReason::Logout).await {
            Ok(_) => tracing::info!(session_id = %session_id, "signed out"),
            Err(err) if err.failure == Failure::NotFound => {}
            Err(err) => return Err(err.into()),
        }
    }
    let mut response = see_other(&location);
    response.headers_mut().append(header::SET_COOKIE, clear_session_cookie(&state));
    Ok(response)
}
