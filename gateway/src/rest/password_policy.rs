//! REST `POST /v1/auth/password-policy`: the password policy that applies to a mailed
//! invitation or reset token, while the token can be used — what the invitation and reset
//! pages show above their form (ADR 0026). The token is the credential: an unknown, used
//! or expired token answers as accepting it would (422), and nothing else is revealed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::json;

use keel_domain::directory::PasswordPolicy;

use super::openapi::{ApiDoc, body, ok, problem};
use super::problem::Problem;
use super::routes::Routes;
use super::state::AppState;

/// The longest token looked up (mailed tokens are far shorter).
const MAX_TOKEN_BYTES: usize = 512;

/// The route.
pub fn routes() -> Routes {
    Routes::new().route("/v1/auth/password-policy", post(password_policy))
}

/// Its part of the OpenAPI document.
pub fn openapi(doc: &mut ApiDoc) {
    doc.schema::<TokenRequest>().schema::<TokenPolicy>();
    doc.operation(
        "/v1/auth/password-policy",
        "post",
        json!({
            "summary": "The password policy for a mailed invitation (keel_inv_…) or reset (keel_pwr_…) token, while it can be used",
            "security": [],
            "requestBody": body("TokenRequest"),
            "responses": {
                "200": ok("TokenPolicy"),
                "400": problem("invalid_body"),
                "422": problem("invitation_invalid, invitation_expired, reset_invalid or reset_expired"),
                "503": problem("unavailable (Retry-After)")
            }
        }),
    );
}

/// `POST /v1/auth/password-policy`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TokenRequest {
    /// The token from the e-mail.
    pub token: String,
}

/// The policy a new password must meet.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TokenPolicy {
    /// The tenant's (or the platform's) password policy.
    pub password_policy: PasswordPolicy,
}

async fn password_policy(State(state): State<AppState>, body: Bytes) -> Result<Json<TokenPolicy>, Problem> {
    let req: TokenRequest = serde_json::from_slice(&body)
        .map_err(|_| Problem::bad_request("invalid_body", "the body is not the expected JSON"))?;
    if req.token.len() > MAX_TOKEN_BYTES {
        return Err(Problem::bad_request("invalid_body", "the token is too long"));
    }
    let password_policy = state.users.token_password_policy(req.token.trim()).await?;
    Ok(Json(TokenPolicy { password_policy }))
}
