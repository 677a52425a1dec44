//! Authentication: bearer credentials to principals. Until identity lands, the only
//! credential is the bootstrap operator token that `make up` creates on first start.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use keel_domain::access::Principal;

/// How long a verified credential is trusted without asking the database again.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Prefix of operator tokens (so secret scanners can find leaked ones).
pub const OPERATOR_TOKEN_PREFIX: &str = "keel_op_";

/// Why a caller is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization: Bearer …` was sent.
    #[error("missing bearer credential")]
    Missing,
    /// The credential is unknown, malformed or revoked.
    #[error("invalid credential")]
    Invalid,
    /// The credential store could not be asked.
    #[error("authentication is temporarily unavailable")]
    Unavailable,
}

/// Turns bearer credentials into principals.
#[derive(Debug)]
pub struct Authenticator {
    pool: PgPool,
    cache: RwLock<HashMap<String, (Principal, Instant)>>,
}

/// The token in an `authorization` header value, if it is a bearer credential.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random operator token (256 bits).
pub fn new_operator_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{OPERATOR_TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Authenticator {
    /// An authenticator backed by `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, cache: RwLock::new(HashMap::new()) }
    }

    /// The principal behind an `authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer(header).ok_or(AuthError::Missing)?;
        if !token.starts_with(OPERATOR_TOKEN_PREFIX) || token.len() > 200 {
            return Err(AuthError::Invalid);
        }
        let hash = hash_token(token);
        if let Some((principal, at)) = self.cache.read().ok().and_then(|c| c.get(&hash).cloned())
            && at.elapsed() < CACHE_TTL
        {
            return Ok(principal);
        }
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM operator_credentials WHERE token_hash = $1 AND revoked_at IS NULL")
                .bind(&hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "credential lookup failed");
                    AuthError::Unavailable
                })?;
        let principal = Principal::Operator { id: id.ok_or(AuthError::Invalid)? };
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            cache.insert(hash, (principal.clone(), Instant::now()));
        }
        Ok(principal)
    }
}

/// Creates the bootstrap operator credential if none exists; returns the token only
/// when it was created now (it is never stored in clear, so it cannot be shown again).
pub async fn create_bootstrap_credential(owner: &PgPool) -> Result<Option<String>, sqlx::Error> {
    let token = new_operator_token();
    let inserted = sqlx::query(
        "INSERT INTO operator_credentials (id, kind, token_hash) VALUES ('op_bootstrap', 'bootstrap', $1)
         ON CONFLICT DO NOTHING",
    )
    .bind(hash_token(&token))
    .execute(owner)
    .await?
    .rows_affected();
    Ok((inserted == 1).then_some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_headers() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer   abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let (a, b) = (new_operator_token(), new_operator_token());
        assert_ne!(a, b);
        assert!(a.starts_with(OPERATOR_TOKEN_PREFIX));
        assert_eq!(hash_token(&a).len(), 64);
    }
}
