//! Access-token signing keys (`auth_signing_keys`, ADR 0009). The gateway generates
//! the Ed25519 keys and signs with them; this module owns the table: a key is
//! published at once, signs from `signing_from` on, and retires at `retires_at`.
//! Private keys are stored only wrapped under the KEK (ADR 0028); the JWKS reads the
//! public halves only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::kek::KeyEncryptionKey;
use crate::wrapped_secrets::{self, SecretsError};

/// Serialises key changes across gateways (a transaction-scoped advisory lock).
const LOCK_KEYS: &str = "SELECT pg_advisory_xact_lock(7242009)";

/// A newly generated key, to be stored.
#[derive(Debug, Clone)]
pub struct NewSigningKey {
    /// The key id.
    pub kid: String,
    /// The private key, PKCS#8 DER.
    pub private_pkcs8: Vec<u8>,
    /// The public key, base64url.
    pub public_x: String,
}

/// A stored key that is not retired: its public half.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SigningKeyRow {
    /// The key id.
    pub kid: String,
    /// The public key, base64url.
    pub public_x: String,
    /// Whether it signs already (`signing_from` has passed).
    pub signs: bool,
}

/// Stores `key` (wrapped under `kek`), signing from `now + publish_ahead`, and retires
/// the keys it replaces `retire_after` after that, in one transaction.
pub async fn add(
    pool: &PgPool,
    kek: &dyn KeyEncryptionKey,
    key: NewSigningKey,
    publish_ahead: Duration,
    retire_after: Duration,
) -> Result<(), sqlx::Error> {
    let wrapped = wrapped_secrets::SIGNING_KEYS.wrap(kek, &key.kid, &key.private_pkcs8)?;
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK_KEYS).execute(&mut *tx).await?;
    let signing_from: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO auth_signing_keys (kid, private_wrapped, kek_id, public_x, signing_from)
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING signing_from",
    )
    .bind(&key.kid)
    .bind(wrapped.bytes)
    .bind(wrapped.key_id)
    .bind(key.public_x)
    .bind(publish_ahead.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE auth_signing_keys SET retires_at = $2 + make_interval(secs => $3)
         WHERE kid <> $1 AND (retires_at IS NULL OR retires_at > $2 + make_interval(secs => $3))",
    )
    .bind(&key.kid)
    .bind(signing_from)
    .bind(retire_after.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Stores the key `generate` makes (wrapped under `kek`), signing at once, if there is no key yet.
pub async fn ensure(
    pool: &PgPool,
    kek: &dyn KeyEncryptionKey,
    generate: impl FnOnce() -> NewSigningKey,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(LOCK_KEYS).execute(&mut *tx).await?;
    let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_signing_keys)").fetch_one(&mut *tx).await?;
    if !any {
        let key = generate();
        let wrapped = wrapped_secrets::SIGNING_KEYS.wrap(kek, &key.kid, &key.private_pkcs8)?;
        sqlx::query(
            "INSERT INTO auth_signing_keys (kid, private_wrapped, kek_id, public_x, signing_from)
             VALUES ($1, $2, $3, $4, now())",
        )
        .bind(key.kid)
        .bind(wrapped.bytes)
        .bind(wrapped.key_id)
        .bind(key.public_x)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// The public halves of the keys that are not retired, the newest signing key first.
pub async fn active(pool: &PgPool) -> Result<Vec<SigningKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kid, public_x, signing_from <= now() AS signs FROM auth_signing_keys
         WHERE retires_at IS NULL OR retires_at > now() ORDER BY signing_from DESC, created_at DESC",
    )
    .fetch_all(pool)
    .await
}

/// The private key `kid` (PKCS#8 DER), unwrapped with `kek`.
pub async fn private_key(pool: &PgPool, kek: &dyn KeyEncryptionKey, kid: &str) -> Result<Vec<u8>, sqlx::Error> {
    let (kek_id, wrapped): (Option<String>, Vec<u8>) =
        sqlx::query_as("SELECT kek_id, private_wrapped FROM auth_signing_keys WHERE kid = $1")
            .bind(kid)
            .fetch_one(pool)
            .await?;
    let key: Result<Vec<u8>, SecretsError> =
        wrapped_secrets::SIGNING_KEYS.unwrap(kek, kid, kek_id.as_deref(), &wrapped);
    Ok(key?)
}
