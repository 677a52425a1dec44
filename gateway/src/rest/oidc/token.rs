//! `POST /v1/auth/token`: the token endpoint. A JSON body is Keel's own refresh grant
//! (ADR 0009, problem documents). A form body is RFC 6749's token request (ADR 0024):
//! `authorization_code` (with the PKCE verifier) and `refresh_token`, clients
//! authenticated by `client_secret_basic` / `client_secret_post` when confidential and
//! by nothing but PKCE when public; its errors are OAuth's `{"error": …}` JSON, which
//! stock clients (openid-client) require.

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde::Serialize;
use serde_json::json;

use keel_commands::sessions::{RefreshError, SessionGrant};

use super::{oauth_error, params};
use crate::auth::tokens::IdClaims;
use crate::rest::auth::{RefreshRequest, grant, no_store, parse};
use crate::rest::extract::CorrelationId;
use crate::rest::openapi::{ApiDoc, problem};
use crate::rest::problem::Problem;
use crate::rest::routes::Routes;
use crate::rest::state::AppState;

/// The token endpoint's route.
pub fn routes() -> Routes {
    Routes::new().route("/v1/auth/token", post(token))
}

/// The token endpoint's part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<RefreshRequest>().schema::<OidcTokenResponse>().schema::<super::OAuthError>();
    let form = json!({
        "type": "object", "required": ["grant_type"],
        "properties": {
            "grant_type": { "enum": ["authorization_code", "refresh_token"] },
            "code": { "type": "string", "maxLength": 2000 },
            "redirect_uri": { "type": "string", "maxLength": 2000 },
            "code_verifier": { "type": "string", "minLength": 43, "maxLength": 128 },
            "refresh_token": { "type": "string", "maxLength": 2000 },
            "client_id": { "type": "string", "maxLength": 2000 },
            "client_secret": { "type": "string", "maxLength": 2000 }
        }
    });
    doc.operation(
        "/v1/auth/token",
        "post",
        json!({
            "tags": ["auth"],
            "summary": "Token endpoint: JSON = Keel's refresh grant; form = RFC 6749 (authorization_code with PKCE, refresh_token). Form errors are OAuth error JSON (RFC 6749 §5.2), not problem documents: stock OpenID clients require them",
            "security": [],
            "requestBody": { "required": true, "content": {
                "application/json": { "schema": { "$ref": "#/components/schemas/RefreshRequest" } },
                "application/x-www-form-urlencoded": { "schema": form }
            } },
            "responses": {
                "200": { "description": "A token grant (JSON: TokenResponse; form: OidcTokenResponse)", "content": { "application/json": { "schema": { "oneOf": [
                    { "$ref": "#/components/schemas/TokenResponse" },
                    { "$ref": "#/components/schemas/OidcTokenResponse" }
                ] } } } },
                "400": {
                    "description": "Malformed body (JSON: problem); form: invalid_request, invalid_grant (a replayed code also ends what it issued), unsupported_grant_type",
                    "content": {
                        "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } },
                        "application/json": { "schema": { "$ref": "#/components/schemas/OAuthError" } }
                    }
                },
                "401": {
                    "description": "JSON: invalid_grant (a reused token also ends the session); form: invalid_client",
                    "content": {
                        "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } },
                        "application/json": { "schema": { "$ref": "#/components/schemas/OAuthError" } }
                    }
                },
                "503": problem("Unavailable (Retry-After)"),
            }
        }),
    );
}

/// A token grant of the form-encoded token endpoint.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct OidcTokenResponse {
    /// The JWT access token (EdDSA).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The ID token (authorization_code grant only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The single-use refresh token.
    pub refresh_token: String,
    /// The granted scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

async fn token(
    State(state): State<AppState>,
    Extension(CorrelationId(correlation)): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let form = super::is_form(&headers);
    if form {
        return Ok(form_token(&state, &correlation, &headers, &body).await);
    }
    let req: RefreshRequest = parse(&body)?;
    match state.sessions.refresh(&correlation, &req.refresh_token, None).await {
        Ok(session) => grant(&state, &session),
        Err(err @ RefreshError::InvalidGrant) => {
            Err(Problem::new(StatusCode::UNAUTHORIZED, "invalid_grant", err.to_string()))
        }
        Err(err @ RefreshError::Unavailable) => Err(Problem::unavailable("unavailable", err.to_string(), 1)),
    }
}

fn invalid(error: &str, description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, error, description)
}

/// `invalid_client` (401; with a Basic challenge when the client tried Basic).
fn invalid_client(basic: bool) -> Response {
    let mut response = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    let challenge = if basic { "Basic realm=\"keel\"" } else { "Bearer" };
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

fn unavailable() -> Response {
    let mut response = oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "retry");
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
    response
}

/// The client credentials of `client_secret_basic` (RFC 6749 §2.3.1: form-encoded, then Basic).
fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let Some((scheme, encoded)) = value.trim().split_once(' ') else { return Some(None) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok();
    let pair = decoded.and_then(|bytes| String::from_utf8(bytes).ok()).and_then(|text| {
        let (id, secret) = text.split_once(':')?;
        let decode =
            |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
        Some((decode(id)?, decode(secret)?))
    });
    Some(pair)
}

async fn form_token(state: &AppState, correlation: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(params) = params(body) else { return invalid("invalid_request", "malformed or repeated parameters") };
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());
    // Who the client is: Basic, or client_id (+ client_secret) in the body; not both.
    let basic = basic_credentials(headers);
    let (client_id, secret, used_basic) = match (&basic, get("client_secret")) {
        (Some(None), _) => return invalid_client(true),
        (Some(Some(_)), Some(_)) => return invalid("invalid_request", "one client authentication method at a time"),
        (Some(Some((id, secret))), None) => {
            if get("client_id").is_some_and(|body_id| body_id != id) {
                return invalid("invalid_request", "client_id differs from the authenticated client");
            }
            (id.clone(), Some(secret.clone()), true)
        }
        (None, secret) => match get("client_id") {
            Some(id) => (id.to_string(), secret.map(str::to_string), false),
            None => return invalid_client(false),
        },
    };
    let client = match state.oidc_clients.find(&client_id).await {
        Ok(Some(client)) if client.enabled => client,
        Ok(_) => return invalid_client(used_basic),
        Err(err) => {
            tracing::error!(error = %err, "client lookup failed");
            return unavailable();
        }
    };
    let authenticated = match (client.confidential, secret) {
        (true, Some(secret)) => match state.oidc_clients.verify_secret(&client.app_id, &secret).await {
            Ok(ok) => ok,
            Err(err) => {
                tracing::error!(error = %err, "client secret check failed");
                return unavailable();
            }
        },
        (false, None) => true,
        _ => false,
    };
    if !authenticated {
        return invalid_client(used_basic);
    }
    match get("grant_type") {
        Some("authorization_code") => {
            let (Some(code), Some(redirect_uri), Some(verifier)) =
                (get("code"), get("redirect_uri"), get("code_verifier"))
            else {
                return invalid("invalid_request", "code, redirect_uri and code_verifier are required");
            };
            code_grant(state, correlation, &client.app_id, code, redirect_uri, verifier).await
        }
        Some("refresh_token") => {
            let Some(refresh_token) = get("refresh_token") else {
                return invalid("invalid_request", "refresh_token is required");
            };
            match state.sessions.refresh(correlation, refresh_token, Some(&client.app_id)).await {
                Ok(session) => answer(state, &session, None, None),
                Err(RefreshError::InvalidGrant) => invalid("invalid_grant", "the refresh token is invalid or expired"),
                Err(RefreshError::Unavailable) => unavailable(),
            }
        }
        Some(_) => invalid("unsupported_grant_type", "authorization_code and refresh_token are supported"),
        None => invalid("invalid_request", "grant_type is required"),
    }
}

async fn code_grant(
    state: &AppState,
    correlation: &str,
    client_id: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Response {
    let exchanged = state.sessions.exchange_code(correlation, code, client_id, redirect_uri, verifier).await;
    let done = match exchanged {
        Ok(done) => done,
        Err(RefreshError::InvalidGrant) => {
            tracing::info!(client_id = %client_id, "authorization code refused");
            return invalid("invalid_grant", "the code is invalid, expired, used, or not for this client and verifier");
        }
        Err(RefreshError::Unavailable) => return unavailable(),
    };
    let redeemed = &done.redeemed;
    let tokens = state.auth.tokens();
    let now = chrono::Utc::now();
    let exp = (now + tokens.access_ttl()).min(redeemed.expires_at);
    let claims = IdClaims {
        iss: tokens.issuer().to_string(),
        sub: redeemed.user_id.clone(),
        aud: client_id.to_string(),
        exp: exp.timestamp(),
        iat: now.timestamp(),
        auth_time: redeemed.opened_at.timestamp(),
        nonce: redeemed.nonce.clone(),
        sid: redeemed.session_id.clone(),
        tid: redeemed.tenant_id.clone(),
        email: Some(redeemed.email.clone()),
        email_verified: Some(true),
        amr: vec!["pwd".into()],
    };
    let Some(id_token) = tokens.issue_id_token(&claims) else {
        tracing::error!("no signing key for an ID token");
        return unavailable();
    };
    tracing::info!(session_id = %done.grant.session_id, client_id = %client_id, "authorization code exchanged");
    answer(state, &done.grant, Some(id_token), Some(redeemed.scope.clone()))
}

fn answer(state: &AppState, session: &SessionGrant, id_token: Option<String>, scope: Option<String>) -> Response {
    let Some((access_token, expires_in)) = state.auth.tokens().issue(session) else {
        tracing::error!("no signing key for an access token");
        return unavailable();
    };
    let body = OidcTokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in,
        id_token,
        refresh_token: session.refresh_token.clone(),
        scope,
    };
    no_store(Json(body).into_response())
}
