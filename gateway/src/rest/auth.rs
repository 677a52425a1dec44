//! REST `/v1/auth/*` and `/.well-known/*`: password login, refresh, logout,
//! introspection (RFC 7662), invitation acceptance, password reset, and what a
//! stock JWT library needs to verify Keel's access tokens (discovery and JWKS).

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use keel_commands::bus::CommandContext;
use keel_commands::sessions::{LoginError, SessionGrant};
use keel_commands::users::ResetError;
use keel_domain::envelope::Actor;
use keel_domain::session::RevokeReason;

use super::extract::CorrelationId;
use super::openapi::{ApiDoc, body, ok, problem};
use super::problem::Problem;
use super::routes::Routes;
use super::state::AppState;
use crate::auth::{AuthError, bearer};

/// The sign-in routes.
pub fn routes() -> Routes {
    Routes::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/introspect", post(introspect))
        .route("/v1/auth/invitations/accept", post(accept_invitation))
        .route("/v1/auth/password-reset", post(request_reset))
        .route("/v1/auth/password-reset/confirm", post(confirm_reset))
}

/// The sign-in part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<LoginRequest>()
        .schema::<LogoutRequest>()
        .schema::<IntrospectRequest>()
        .schema::<TokenAndPassword>()
        .schema::<ResetRequest>()
        .schema::<TokenResponse>()
        .schema::<Introspection>()
        .schema::<UserChangedResponse>();
    doc.operation("/.well-known/openid-configuration", "get", json!({ "summary": "OpenID discovery document (issuer, jwks_uri, endpoints)", "security": [], "responses": { "200": { "description": "OK" } } }));
    doc.operation("/.well-known/jwks.json", "get", json!({ "summary": "Access-token verification keys (Ed25519, EdDSA)", "security": [], "responses": { "200": { "description": "A JWK set" } } }));
    let posts = [
        (
            "/v1/auth/login",
            auth_post(
                "Password login; omit tenant for platform users",
                "LoginRequest",
                ("200", ok("TokenResponse")),
                &[
                    ("401", "invalid_credentials"),
                    ("403", "tenant_suspended or user_disabled"),
                    ("429", "too_many_attempts (Retry-After)"),
                    ("503", "overloaded: too many sign-ins at once (Retry-After)"),
                ],
            ),
        ),
        (
            "/v1/auth/logout",
            auth_post(
                "End the session of the bearer access token (or of a refresh token in the body)",
                "LogoutRequest",
                ("204", json!({ "description": "Done" })),
                &[("401", "Missing or invalid token")],
            ),
        ),
        (
            "/v1/auth/introspect",
            auth_post("RFC 7662 token introspection", "IntrospectRequest", ("200", ok("Introspection")), &[]),
        ),
        (
            "/v1/auth/invitations/accept",
            auth_post(
                "Accept an invitation: set the password, activate the user",
                "TokenAndPassword",
                ("200", ok("UserChangedResponse")),
                &[("422", "invitation_invalid or invitation_expired")],
            ),
        ),
        (
            "/v1/auth/password-reset",
            auth_post(
                "Ask for a password reset; 202 whether or not the account exists",
                "ResetRequest",
                (
                    "202",
                    json!({ "description": "Accepted (whether or not the account exists)", "content": { "application/json": { "schema": {
                    "type": "object", "required": ["status", "detail"],
                    "properties": { "status": { "const": "accepted" }, "detail": { "type": "string" } }
                } } } }),
                ),
                &[("429", "too_many_attempts: too many requests for the account or from the address (Retry-After)")],
            ),
        ),
        (
            "/v1/auth/password-reset/confirm",
            auth_post(
                "Set a new password with the mailed token",
                "TokenAndPassword",
                ("200", ok("UserChangedResponse")),
                &[("422", "reset_invalid or reset_expired")],
            ),
        ),
    ];
    for (path, operation) in posts {
        doc.operation(path, "post", operation);
    }
}

/// An unauthenticated `POST` taking `request` and answering `success` (status, response) or problems.
fn auth_post(summary: &str, request: &str, success: (&str, Value), problems: &[(&str, &str)]) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(success.0.into(), success.1);
    responses.insert("400".into(), problem("Malformed body"));
    for (status, description) in problems {
        responses.insert((*status).into(), problem(description));
    }
    json!({ "summary": summary, "security": [], "requestBody": body(request), "responses": responses })
}

/// `POST /v1/auth/login`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account's e-mail.
    pub email: String,
    /// The password.
    pub password: String,
    /// The tenant's domain; omitted for platform operators and auditors.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// `POST /v1/auth/token`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RefreshRequest {
    /// The refresh token of the last grant (single use).
    pub refresh_token: String,
}

/// `POST /v1/auth/logout` without a bearer access token.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct LogoutRequest {
    /// A refresh token of the session to end.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// `POST /v1/auth/introspect`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct IntrospectRequest {
    /// An access token or a refresh token.
    pub token: String,
}

/// `POST /v1/auth/invitations/accept` and `/v1/auth/password-reset/confirm`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TokenAndPassword {
    /// The token from the e-mail.
    pub token: String,
    /// The new password (the tenant's policy applies).
    pub password: String,
}

/// `POST /v1/auth/password-reset`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ResetRequest {
    /// The account's e-mail.
    pub email: String,
    /// The tenant's domain; omitted for platform users.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A token grant.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TokenResponse {
    /// The JWT access token (EdDSA).
    pub access_token: String,
    /// The single-use refresh token.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

/// An RFC 7662 introspection answer.
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Introspection {
    /// Whether the token is valid and its session open.
    pub active: bool,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// The user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The tenant id (absent for platform users).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// The role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Expiry (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The outcome of accepting an invitation or resetting a password.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UserChangedResponse {
    /// The user.
    pub user_id: String,
    /// Position of the event written.
    pub position: i64,
}

pub(crate) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|_| Problem::bad_request("invalid_body", "the body is not the expected JSON"))
}

pub(crate) fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn grant(state: &AppState, grant: &SessionGrant) -> Result<Response, Problem> {
    let (access_token, expires_in) =
        state.auth.tokens().issue(grant).ok_or_else(|| Problem::internal(&"no signing key"))?;
    let body =
        TokenResponse { access_token, refresh_token: grant.refresh_token.clone(), token_type: "Bearer", expires_in };
    Ok(no_store(Json(body).into_response()))
}

async fn discovery(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.auth.tokens().discovery())
}

async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.auth.tokens().jwks()).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("max-age=60"));
    response
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(CorrelationId(correlation)): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let req: LoginRequest = parse(&body)?;
    let session =
        sign_in(&state, &correlation, peer, &headers, req.tenant.as_deref(), &req.email, &req.password).await?;
    grant(&state, &session)
}

/// A password sign-in, shared by `POST /v1/auth/login` and `POST /v1/auth/session`:
/// limits, throttles, the hashing queue, enumeration-safe refusals (as problems with the
/// codes `invalid_credentials`, `too_many_attempts`, `tenant_suspended`, `user_disabled`,
/// `overloaded`, `unavailable`) and the audit record of the attempt.
pub(crate) async fn sign_in(
    state: &AppState,
    correlation: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
    tenant: Option<&str>,
    email: &str,
    password: &str,
) -> Result<SessionGrant, Problem> {
    if email.len() > 254 || password.chars().count() > keel_domain::directory::MAX_PASSWORD_CHARS {
        return Err(login_problem(LoginError::InvalidCredentials));
    }
    let client = client_address(peer.ip(), headers, &state.settings.trusted_proxies);
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let success_record = |user_id: &str, tenant_id: Option<String>, role| {
        login_record(correlation, client, agent, tenant_id, (actor_type(role), user_id), None)
    };
    let result = state.sessions.login(correlation, Some(client), (tenant, email, password), success_record).await;
    match result {
        Ok(session) => {
            tracing::info!(session_id = %session.session_id, user_id = %session.user_id, "signed in");
            Ok(session)
        }
        Err(err) => {
            tracing::info!(reason = ?std::mem::discriminant(&err), "sign-in refused");
            let problem = login_problem(err);
            // Who tried is not known (and a refusal never tells whether the account exists).
            let record = login_record(correlation, client, agent, None, ("anonymous", ""), Some(&problem.code));
            // Anyone can repeat a refused sign-in: coalesced and bounded, on the platform chain.
            state.auth.refusals().record(record).await;
            Err(problem)
        }
    }
}

/// The audit actor type of a user with `role`.
pub(crate) fn actor_type(role: keel_domain::directory::UserRole) -> &'static str {
    match role {
        keel_domain::directory::UserRole::Operator => "operator",
        keel_domain::directory::UserRole::Auditor => "auditor",
        _ => "user",
    }
}

/// The audit record of a sign-in attempt (no e-mail address, no password).
pub(crate) fn login_record(
    correlation: &str,
    client: IpAddr,
    agent: &str,
    tenant_id: Option<String>,
    (actor_type, actor_id): (&str, &str),
    refused: Option<&str>,
) -> keel_domain::audit::AuditInput {
    let metadata = serde_json::Map::from_iter([
        ("correlation_id".to_string(), correlation.into()),
        ("client_address".to_string(), client.to_string().into()),
        ("user_agent".to_string(), agent.chars().take(256).collect::<String>().into()),
    ]);
    keel_domain::audit::AuditInput {
        timestamp: chrono::Utc::now(),
        resource: "session".into(),
        tenant_id,
        actor_type: actor_type.into(),
        actor_id: actor_id.into(),
        action: "session.login".into(),
        outcome: if refused.is_some() {
            keel_domain::audit::Outcome::Failure
        } else {
            keel_domain::audit::Outcome::Success
        },
        reason: refused.map(str::to_string),
        source: "keel".into(),
        source_event_id: None,
        metadata,
    }
}

pub(crate) async fn audit_login(state: &AppState, record: keel_domain::audit::AuditInput) {
    if let Err(err) = state.auth.audit().append(vec![record]).await {
        tracing::error!(error = %err, "audit record of a sign-in not written");
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
    let hops: Vec<IpAddr> = forwarded.iter().flat_map(|v| v.split(',')).filter_map(|h| h.trim().parse().ok()).collect();
    hops.into_iter().rev().find(|hop| !trusted.contains(hop)).unwrap_or(peer)
}

fn login_problem(err: LoginError) -> Problem {
    match err {
        LoginError::InvalidCredentials => {
            Problem::new(StatusCode::UNAUTHORIZED, "invalid_credentials", err.to_string())
        }
        LoginError::TenantNotActive(_) => Problem::new(StatusCode::FORBIDDEN, "tenant_suspended", err.to_string()),
        LoginError::UserDisabled => Problem::new(StatusCode::FORBIDDEN, "user_disabled", err.to_string()),
        LoginError::Throttled { retry_after } => Problem {
            retry_after: Some(retry_after.min(u64::from(u32::MAX)) as u32),
            ..Problem::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", err.to_string())
        },
        LoginError::Unavailable => Problem::unavailable("unavailable", err.to_string(), 1),
        LoginError::Busy { retry_after } => Problem::unavailable("overloaded", err.to_string(), retry_after),
    }
}

async fn logout(
    State(state): State<AppState>,
    Extension(CorrelationId(correlation)): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let access = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let session_id = match access {
        Some(token) => match state.auth.access_token(token) {
            Ok((_, session)) => session,
            // Logging out of an ended session is done already.
            Err(AuthError::SessionEnded) => return Ok(StatusCode::NO_CONTENT),
            Err(err) => return Err(err.into()),
        },
        None => {
            let req: LogoutRequest = if body.is_empty() { LogoutRequest::default() } else { parse(&body)? };
            let token = req.refresh_token.ok_or(AuthError::Missing)?;
            state.sessions.session_of(&token).ok_or(AuthError::Invalid)?
        }
    };
    let ctx = CommandContext::new(Actor::system("logout"), correlation, format!("logout:{session_id}"));
    state.sessions.revoke(&ctx, &session_id, RevokeReason::Logout).await?;
    tracing::info!(session_id = %session_id, "signed out");
    Ok(StatusCode::NO_CONTENT)
}

async fn introspect(State(state): State<AppState>, body: Bytes) -> Result<Response, Problem> {
    let req: IntrospectRequest = parse(&body)?;
    let answer = if let Ok(claims) = state.auth.tokens().verify(&req.token) {
        Introspection {
            active: true,
            token_type: Some("access_token"),
            sub: Some(claims.sub.clone()),
            tid: claims.tid.clone(),
            role: Some(claims.role.clone()),
            sid: Some(claims.sid.clone()),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            iss: Some(claims.iss.clone()),
            aud: Some(claims.aud.clone()),
        }
    } else if let Some(info) = state.sessions.inspect_refresh_token(&req.token).await? {
        Introspection {
            active: true,
            token_type: Some("refresh_token"),
            sub: Some(info.user_id),
            tid: info.tenant_id,
            role: Some(info.role.as_str().to_string()),
            sid: Some(info.session_id),
            exp: Some(info.expires_at.timestamp()),
            iss: Some(state.auth.tokens().issuer().to_string()),
            ..Introspection::default()
        }
    } else {
        Introspection::default()
    };
    Ok(no_store(Json(answer).into_response()))
}

async fn accept_invitation(
    State(state): State<AppState>,
    Extension(CorrelationId(correlation)): Extension<CorrelationId>,
    body: Bytes,
) -> Result<Json<UserChangedResponse>, Problem> {
    let req: TokenAndPassword = parse(&body)?;
    let ctx = CommandContext::new(Actor::system("invitation"), correlation, uuid::Uuid::now_v7().to_string());
    let done = state.users.accept_invitation(&ctx, req.token.trim(), &req.password).await?;
    Ok(Json(UserChangedResponse { user_id: done.user_id, position: done.position }))
}

async fn request_reset(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(CorrelationId(correlation)): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let req: ResetRequest = parse(&body)?;
    if req.email.len() > 254 || req.tenant.as_ref().is_some_and(|t| t.len() > 253) {
        return Err(Problem::bad_request("invalid_body", "the e-mail or tenant is too long"));
    }
    let client = client_address(peer.ip(), &headers, &state.settings.trusted_proxies);
    let ctx = CommandContext::new(Actor::system("password_reset"), correlation, uuid::Uuid::now_v7().to_string());
    // The same answer whether or not the account exists.
    match state.users.request_password_reset(&ctx, Some(client), req.tenant.as_deref(), &req.email).await {
        Ok(()) => {}
        Err(ResetError::Command(err)) => return Err(err.into()),
        Err(err @ ResetError::Throttled { retry_after }) => {
            return Err(Problem {
                retry_after: Some(retry_after.min(u64::from(u32::MAX)) as u32),
                ..Problem::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", err.to_string())
            });
        }
    }
    let body = serde_json::json!({ "status": "accepted", "detail": "if the account exists, a reset link was sent" });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn confirm_reset(
    State(state): State<AppState>,
    Extension(CorrelationId(correlation)): Extension<CorrelationId>,
    body: Bytes,
) -> Result<Json<UserChangedResponse>, Problem> {
    let req: TokenAndPassword = parse(&body)?;
    let ctx = CommandContext::new(Actor::system("password_reset"), correlation, uuid::Uuid::now_v7().to_string());
    let done = state.users.reset_password(&ctx, req.token.trim(), &req.password).await?;
    Ok(Json(UserChangedResponse { user_id: done.user_id, position: done.position }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let (proxy, client, spoofed): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "203.0.113.7".parse().unwrap(), "198.51.100.1".parse().unwrap());
        let xff = headers(&["198.51.100.1, 203.0.113.7"]);
        assert_eq!(client_address(client, &xff, &[]), client, "an untrusted peer is the client");
        assert_eq!(client_address(proxy, &xff, &[proxy]), client, "the right-most untrusted hop");
        assert_ne!(client_address(proxy, &xff, &[proxy]), spoofed, "what the client wrote itself is ignored");
        assert_eq!(client_address(proxy, &headers(&[]), &[proxy]), proxy, "no header: the proxy itself");
        let chain = headers(&["203.0.113.7", "10.0.0.2"]);
        let two: [IpAddr; 2] = [proxy, "10.0.0.2".parse().unwrap()];
        assert_eq!(client_address(proxy, &chain, &two), client, "a chain of trusted proxies is skipped");
    }
}
