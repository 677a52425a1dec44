//! Random bearer secrets and their stored form (SHA-256, hex).

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::kek::KeyEncryptionKey;
use crate::wrapped_secrets;

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
/// gateway then shares it). It is stored only wrapped under `kek` (ADR 0028).
pub async fn server_secret(
    pool: &sqlx::PgPool,
    kek: &dyn KeyEncryptionKey,
    name: &str,
) -> Result<[u8; 32], sqlx::Error> {
    let column = wrapped_secrets::SERVER_SECRETS;
    let fresh = column.wrap(kek, name, &random_bytes())?;
    sqlx::query(
        "INSERT INTO auth_secrets (name, secret_wrapped, kek_id) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(fresh.bytes)
    .bind(fresh.key_id)
    .execute(pool)
    .await?;
    let (kek_id, wrapped): (Option<String>, Vec<u8>) =
        sqlx::query_as("SELECT kek_id, secret_wrapped FROM auth_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await?;
    let key = column.unwrap(kek, name, kek_id.as_deref(), &wrapped)?;
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
