//! `GET|POST /v1/auth/userinfo` (OpenID Connect Core §5.3): who the bearer access
//! token's user is. A token of an ended session is refused like any other credential.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use crate::auth::{AuthError, bearer};
use crate::rest::auth::no_store;
use crate::rest::openapi::{ApiDoc, ok, problem};
use crate::rest::problem::Problem;
use crate::rest::routes::Routes;
use crate::rest::state::AppState;

/// The userinfo route.
pub fn routes() -> Routes {
    Routes::new().route("/v1/auth/userinfo", get(userinfo).post(userinfo))
}

/// The userinfo part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<UserInfo>();
    for method in ["get", "post"] {
        doc.operation(
            "/v1/auth/userinfo",
            method,
            json!({
                "tags": ["auth"],
                "summary": "OpenID Connect userinfo: the bearer access token's user",
                "responses": {
                    "200": ok("UserInfo"),
                    "401": problem("Missing, invalid or ended access token (WWW-Authenticate: Bearer error=\"invalid_token\")"),
                    "503": problem("Unavailable"),
                }
            }),
        );
    }
}

/// The claims userinfo answers.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct UserInfo {
    /// The user id.
    pub sub: String,
    /// The e-mail address.
    pub email: String,
    /// Whether the address was verified (an invitation or a reset reached it).
    pub email_verified: bool,
    /// The user's tenant (absent for platform users).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
}

fn invalid_token(err: AuthError) -> Response {
    let mut response = Problem::from(err).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
    response
}

async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    let Some(token) = bearer(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())) else {
        return Err(AuthError::Missing.into());
    };
    let claims = match state.auth.tokens().verify(token) {
        Ok(claims) => claims,
        Err(crate::auth::tokens::TokenError::SessionEnded) => return Ok(invalid_token(AuthError::SessionEnded)),
        Err(crate::auth::tokens::TokenError::Invalid) => return Ok(invalid_token(AuthError::Invalid)),
    };
    let Some(email) = keel_commands::identity_queries::user_email(&state.pool, &claims.sub).await? else {
        return Ok(invalid_token(AuthError::Invalid));
    };
    let info = UserInfo { sub: claims.sub.clone(), email, email_verified: true, tid: claims.tid.clone() };
    Ok(no_store(Json(info).into_response()))
}
