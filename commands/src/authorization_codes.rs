//! Authorization codes of the OpenID Connect code flow (ADR 0024), in `auth_codes`.
//!
//! A code is 256 random bits (`keel_ac_…`), stored as its SHA-256 digest, valid for
//! [`CODE_TTL_SECONDS`], and bound to a client, a redirect URI, a PKCE challenge (S256)
//! and the browser session that approved it. Redeeming it is one `UPDATE … RETURNING`
//! that matches all of them, so a code is consumed at most once, and only by the client
//! and verifier it was issued for. A code presented again is marked; the session the
//! first exchange opened is then ended (by [`crate::sessions::Sessions`]).

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::secret;

/// Prefix of authorization codes.
pub const CODE_PREFIX: &str = "keel_ac_";
/// How long a code can be redeemed.
pub const CODE_TTL_SECONDS: i64 = 60;
/// How long a used or expired code is kept, to recognise it if it comes back.
const KEEP_SECONDS: i64 = 600;

/// A code to issue.
#[derive(Debug, Clone)]
pub struct NewCode<'a> {
    /// The client (app id).
    pub client_id: &'a str,
    /// The redirect URI of the authorization request.
    pub redirect_uri: &'a str,
    /// The PKCE S256 challenge.
    pub code_challenge: &'a str,
    /// The granted scopes, space-separated.
    pub scope: &'a str,
    /// The request's `nonce`.
    pub nonce: Option<&'a str>,
    /// The browser session that approved it.
    pub session_id: &'a str,
}

/// What a redeemed code grants.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Redeemed {
    /// The granted scopes, space-separated.
    pub scope: String,
    /// The request's `nonce`.
    pub nonce: Option<String>,
    /// The browser session.
    pub session_id: String,
    /// Its user.
    pub user_id: String,
    /// The user's tenant.
    pub tenant_id: Option<String>,
    /// The user's role.
    pub role: String,
    /// When the browser session opened (the user authenticated): `auth_time`.
    pub opened_at: DateTime<Utc>,
    /// When the browser session ends at the latest.
    pub expires_at: DateTime<Utc>,
    /// The user's e-mail.
    pub email: String,
}

/// The S256 PKCE challenge of `verifier` (RFC 7636: 43–128 unreserved characters).
pub fn s256(verifier: &str) -> Option<String> {
    let valid = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    valid.then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())))
}

/// Whether `challenge` has the shape of an S256 challenge (43 base64url characters).
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Stores a new code and returns it (the only time it exists in clear).
pub async fn issue(pool: &PgPool, new: &NewCode<'_>) -> Result<String, sqlx::Error> {
    let code = secret::random_token(CODE_PREFIX);
    sqlx::query(
        "WITH gone AS (
             DELETE FROM auth_codes WHERE code_hash IN (
                 SELECT code_hash FROM auth_codes WHERE expires_at < now() - make_interval(secs => $8) LIMIT 20))
         INSERT INTO auth_codes (code_hash, client_id, redirect_uri, code_challenge, scope, nonce, session_id, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $9))",
    )
    .bind(secret::digest(&code))
    .bind(new.client_id)
    .bind(new.redirect_uri)
    .bind(new.code_challenge)
    .bind(new.scope)
    .bind(new.nonce)
    .bind(new.session_id)
    .bind(KEEP_SECONDS as f64)
    .bind(CODE_TTL_SECONDS as f64)
    .execute(pool)
    .await?;
    Ok(code)
}

/// Consumes `code` if it is unused, unexpired, issued to `client_id` for `redirect_uri`
/// with the challenge `challenge`, and its browser session is open; records
/// `issued_session_id` as the session the exchange opens.
pub async fn redeem(
    pool: &PgPool,
    code: &str,
    client_id: &str,
    redirect_uri: &str,
    challenge: &str,
    issued_session_id: &str,
) -> Result<Option<Redeemed>, sqlx::Error> {
    if !code.starts_with(CODE_PREFIX) || code.len() > 100 {
        return Ok(None);
    }
    sqlx::query_as(
        "UPDATE auth_codes c SET consumed_at = now(), issued_session_id = $5
         FROM auth_sessions s JOIN auth_users u ON u.user_id = s.user_id
         WHERE c.code_hash = $1 AND c.client_id = $2 AND c.redirect_uri = $3 AND c.code_challenge = $4
           AND c.consumed_at IS NULL AND c.expires_at > now()
           AND s.session_id = c.session_id AND s.revoked_at IS NULL AND s.expires_at > now()
         RETURNING c.scope, c.nonce, s.session_id, s.user_id, s.tenant_id, s.role, s.opened_at, s.expires_at,
                   u.email",
    )
    .bind(secret::digest(code))
    .bind(client_id)
    .bind(redirect_uri)
    .bind(challenge)
    .bind(issued_session_id)
    .fetch_optional(pool)
    .await
}

/// Marks `code` as presented again if it was redeemed before; returns the session its
/// redemption opened (to be ended).
pub async fn mark_replayed(pool: &PgPool, code: &str) -> Result<Option<String>, sqlx::Error> {
    if !code.starts_with(CODE_PREFIX) || code.len() > 100 {
        return Ok(None);
    }
    let issued: Option<Option<String>> = sqlx::query_scalar(
        "UPDATE auth_codes SET replayed_at = now() WHERE code_hash = $1 AND consumed_at IS NOT NULL
         RETURNING issued_session_id",
    )
    .bind(secret::digest(code))
    .fetch_optional(pool)
    .await?;
    Ok(issued.flatten())
}

/// Whether `code` was presented again (checked after its exchange opened the session).
pub async fn was_replayed(pool: &PgPool, code: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT replayed_at IS NOT NULL FROM auth_codes WHERE code_hash = $1")
        .bind(secret::digest(code))
        .fetch_optional(pool)
        .await
        .map(|r| r.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_follows_rfc_7636() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(s256(verifier).as_deref(), Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(is_s256_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert_eq!(s256("short"), None, "a verifier has 43 characters at least");
        assert_eq!(s256(&format!("{verifier}+")), None, "only unreserved characters");
        assert!(!is_s256_challenge("plain-text-challenge"));
    }
}
