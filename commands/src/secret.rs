//! Random bearer secrets and their stored form (SHA-256, hex).

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A fresh random token: `prefix` and 256 random bits, base64url. The prefix lets
/// secret scanners recognise leaked tokens.
pub fn random_token(prefix: &str) -> String {
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes()))
}

/// 256 random bits.
pub fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// The stored form of a token: SHA-256, hex.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The 256-bit server secret `name` from `auth_secrets`, created on first use (every
/// gateway then shares it).
pub async fn server_secret(pool: &sqlx::PgPool, name: &str) -> Result<[u8; 32], sqlx::Error> {
    sqlx::query("INSERT INTO auth_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(random_bytes().to_vec())
        .execute(pool)
        .await?;
    let key: Vec<u8> =
        sqlx::query_scalar("SELECT secret FROM auth_secrets WHERE name = $1").bind(name).fetch_one(pool).await?;
    key.try_into().map_err(|_| sqlx::Error::Protocol(format!("server secret {name} is not 32 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_digested() {
        let (a, b) = (random_token("keel_x_"), random_token("keel_x_"));
        assert_ne!(a, b);
        assert!(a.starts_with("keel_x_") && a.len() == 7 + 43);
        assert_eq!(digest(&a).len(), 64);
        assert_eq!(digest(&a), digest(&a));
    }
}
