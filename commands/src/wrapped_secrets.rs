//! Every secret Keel stores, wrapped under the key-encryption key (ADR 0028): the
//! token-signing private keys, the server secrets (refresh MAC key, API-key and
//! client-secret derivation keys, stream-token key) and the audit checkpoint keys.
//! Each is stored as nonce, ciphertext and tag beside `kek_id`, the KEK version that
//! wrapped it, and is bound by associated data to its purpose and row.
//!
//! Here: wrapping plaintext rows an older deployment left (at start-up), re-wrapping
//! under a new KEK version (rotation, without downtime: readers unwrap by the stored
//! `kek_id`, so both versions work meanwhile) and destroying a retired version once no
//! row names it. A new kind of secret adds its column to [`WRAPPED_COLUMNS`].

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::kek::{KekError, KeyEncryptionKey, Wrapped};

/// Serialises rotations across processes (a transaction-scoped advisory lock).
const ROTATION_LOCK: i64 = 7_242_028;

/// A table column that holds wrapped secrets.
#[derive(Debug, Clone, Copy)]
pub struct WrappedColumn {
    /// The table.
    pub table: &'static str,
    /// Its key column (text).
    pub id: &'static str,
    /// The wrapped value (bytea).
    pub column: &'static str,
    /// The purpose named in the associated data.
    pub purpose: &'static str,
}

/// Token-signing private keys (PKCS#8).
pub const SIGNING_KEYS: WrappedColumn =
    WrappedColumn { table: "auth_signing_keys", id: "kid", column: "private_wrapped", purpose: "signing_key" };
/// Server secrets by name.
pub const SERVER_SECRETS: WrappedColumn =
    WrappedColumn { table: "auth_secrets", id: "name", column: "secret_wrapped", purpose: "server_secret" };
/// Audit checkpoint signing keys (Ed25519 seeds).
pub const AUDIT_SIGNING_KEYS: WrappedColumn =
    WrappedColumn { table: "audit_signing_keys", id: "key_id", column: "secret_wrapped", purpose: "audit_signing_key" };

/// Every column of wrapped secrets.
pub const WRAPPED_COLUMNS: &[WrappedColumn] = &[SIGNING_KEYS, SERVER_SECRETS, AUDIT_SIGNING_KEYS];

/// Why a wrapped secret could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The database refused.
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
    /// The KEK refused.
    #[error(transparent)]
    Kek(#[from] KekError),
    /// A row still holds plaintext (start-up wraps such rows first).
    #[error("{0} holds a secret that is not wrapped yet: restart keel serve to wrap it")]
    NotWrapped(String),
}

impl From<SecretsError> for sqlx::Error {
    /// For callers whose errors are the database's: the stored value could not be decoded.
    fn from(err: SecretsError) -> Self {
        match err {
            SecretsError::Database(e) => e,
            other => sqlx::Error::Decode(Box::new(other)),
        }
    }
}

impl WrappedColumn {
    /// The associated data of row `id`: `<purpose>:<id>`.
    pub fn aad(&self, id: &str) -> Vec<u8> {
        format!("{}:{id}", self.purpose).into_bytes()
    }

    /// Wraps `plaintext` for row `id`.
    pub fn wrap(&self, kek: &dyn KeyEncryptionKey, id: &str, plaintext: &[u8]) -> Result<Wrapped, SecretsError> {
        Ok(kek.wrap(plaintext, &self.aad(id))?)
    }

    /// Unwraps the stored value of row `id`; refuses a row without a KEK version (plaintext).
    pub fn unwrap(
        &self,
        kek: &dyn KeyEncryptionKey,
        id: &str,
        kek_id: Option<&str>,
        bytes: &[u8],
    ) -> Result<Vec<u8>, SecretsError> {
        let kek_id = kek_id.ok_or_else(|| SecretsError::NotWrapped(format!("{}.{}", self.table, self.id)))?;
        Ok(kek.unwrap(kek_id, bytes, &self.aad(id))?)
    }
}

/// What a re-wrap did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rewrapped {
    /// Rows now under the current version (plaintext ones included).
    pub rewrapped: u64,
    /// Rows that could not be unwrapped (named in the log by table and id).
    pub failed: u64,
}

/// Records the KEK's current version as in use (from now, if it is new); returns its id.
pub async fn record_current(pool: &PgPool, kek: &dyn KeyEncryptionKey) -> Result<String, SecretsError> {
    let current = kek.current()?;
    sqlx::query("INSERT INTO kek_versions (key_id) VALUES ($1) ON CONFLICT (key_id) DO NOTHING")
        .bind(&current)
        .execute(pool)
        .await?;
    Ok(current)
}

/// Wraps every plaintext row and re-wraps every row under another version, under the
/// current one, row by row (each in its own short transaction).
pub async fn rewrap_all(pool: &PgPool, kek: &dyn KeyEncryptionKey) -> Result<Rewrapped, SecretsError> {
    let current = kek.current()?;
    let mut report = Rewrapped::default();
    for column in WRAPPED_COLUMNS {
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT {id} FROM {table} WHERE kek_id IS DISTINCT FROM $1",
            id = column.id,
            table = column.table
        ))
        .bind(&current)
        .fetch_all(pool)
        .await?;
        for id in ids {
            match rewrap_row(pool, kek, column, &id).await {
                Ok(true) => report.rewrapped += 1,
                Ok(false) => {}
                Err(SecretsError::Database(e)) => return Err(e.into()),
                Err(err) => {
                    tracing::error!(table = column.table, id = %id, error = %err, "a stored secret could not be re-wrapped");
                    report.failed += 1;
                }
            }
        }
    }
    Ok(report)
}

/// Re-wraps one row under the current version; false if it already was.
async fn rewrap_row(
    pool: &PgPool,
    kek: &dyn KeyEncryptionKey,
    column: &WrappedColumn,
    id: &str,
) -> Result<bool, SecretsError> {
    let (table, id_column, value) = (column.table, column.id, column.column);
    let mut tx = pool.begin().await?;
    let row: Option<(Option<String>, Vec<u8>)> =
        sqlx::query_as(&format!("SELECT kek_id, {value} FROM {table} WHERE {id_column} = $1 FOR UPDATE"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((kek_id, bytes)) = row else { return Ok(false) };
    let current = kek.current()?;
    if kek_id.as_deref() == Some(current.as_str()) {
        return Ok(false);
    }
    let plaintext = match kek_id.as_deref() {
        None => bytes,
        Some(old) => kek.unwrap(old, &bytes, &column.aad(id))?,
    };
    let wrapped = column.wrap(kek, id, &plaintext)?;
    sqlx::query(&format!("UPDATE {table} SET {value} = $2, kek_id = $3 WHERE {id_column} = $1"))
        .bind(id)
        .bind(wrapped.bytes)
        .bind(wrapped.key_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Destroys every retired version Keel recorded that no row names any more; returns their ids.
pub async fn destroy_unused(pool: &PgPool, kek: &dyn KeyEncryptionKey) -> Result<Vec<String>, SecretsError> {
    let current = kek.current()?;
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT key_id FROM kek_versions WHERE destroyed_at IS NULL AND key_id <> $1")
            .bind(&current)
            .fetch_all(pool)
            .await?;
    let held = kek.versions()?;
    let mut destroyed = Vec::new();
    for version in recorded {
        if !held.contains(&version) {
            mark_destroyed(pool, &version).await?;
            continue;
        }
        if named_anywhere(pool, &version).await? {
            continue;
        }
        kek.destroy(&version)?;
        mark_destroyed(pool, &version).await?;
        tracing::info!(kek_id = %version, "retired key-encryption key version destroyed");
        destroyed.push(version);
    }
    Ok(destroyed)
}

async fn named_anywhere(pool: &PgPool, version: &str) -> Result<bool, sqlx::Error> {
    for column in WRAPPED_COLUMNS {
        let named: bool =
            sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {} WHERE kek_id = $1)", column.table))
                .bind(version)
                .fetch_one(pool)
                .await?;
        if named {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn mark_destroyed(pool: &PgPool, version: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE kek_versions SET destroyed_at = now() WHERE key_id = $1 AND destroyed_at IS NULL")
        .bind(version)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Start-up: records the current version and wraps (or re-wraps) every row not under it,
/// so that plaintext rows of an older deployment are overwritten before anything reads them.
pub async fn prepare(pool: &PgPool, kek: &dyn KeyEncryptionKey) -> Result<Rewrapped, SecretsError> {
    record_current(pool, kek).await?;
    let report = rewrap_all(pool, kek).await?;
    if report.rewrapped > 0 || report.failed > 0 {
        tracing::info!(
            rewrapped = report.rewrapped,
            failed = report.failed,
            "stored secrets wrapped under the current KEK"
        );
    }
    Ok(report)
}

/// What a KEK rotation did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rotation {
    /// The version that was current.
    pub previous: String,
    /// The new current version.
    pub current: String,
    /// The re-wrap.
    pub rewrapped: Rewrapped,
    /// Retired versions destroyed.
    pub destroyed: Vec<String>,
}

/// Rotates the KEK: a new version becomes current, every stored secret is re-wrapped
/// under it, and retired versions no row names are destroyed. One rotation at a time.
pub async fn rotate(pool: &PgPool, kek: &dyn KeyEncryptionKey) -> Result<Rotation, SecretsError> {
    let mut lock = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(ROTATION_LOCK).execute(&mut *lock).await?;
    let rotation = rotate_locked(pool, kek).await;
    lock.commit().await?;
    rotation
}

async fn rotate_locked(pool: &PgPool, kek: &dyn KeyEncryptionKey) -> Result<Rotation, SecretsError> {
    let previous = record_current(pool, kek).await?;
    let current = kek.rotate()?;
    record_current(pool, kek).await?;
    let rewrapped = rewrap_all(pool, kek).await?;
    let destroyed = destroy_unused(pool, kek).await?;
    tracing::info!(%previous, %current, rewrapped = rewrapped.rewrapped, "key-encryption key rotated");
    Ok(Rotation { previous, current, rewrapped, destroyed })
}

/// The scheduled check: rotates when the current version has been current for
/// `max_age`; otherwise finishes any interrupted re-wrap and destruction. Skips
/// (`Ok(None)`) while another process rotates.
pub async fn check(
    pool: &PgPool,
    kek: &dyn KeyEncryptionKey,
    max_age: chrono::Duration,
) -> Result<Option<Rotation>, SecretsError> {
    let mut lock = pool.begin().await?;
    let leader: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(ROTATION_LOCK).fetch_one(&mut *lock).await?;
    if !leader {
        return Ok(None);
    }
    let current = record_current(pool, kek).await?;
    let since: DateTime<Utc> = sqlx::query_scalar("SELECT current_from FROM kek_versions WHERE key_id = $1")
        .bind(&current)
        .fetch_one(pool)
        .await?;
    let outcome = if Utc::now() - since >= max_age {
        rotate_locked(pool, kek).await.map(Some)
    } else {
        rewrap_all(pool, kek).await?;
        destroy_unused(pool, kek).await.map(|_| None)
    };
    lock.commit().await?;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associated_data_names_purpose_and_row() {
        assert_eq!(SIGNING_KEYS.aad("k1"), b"signing_key:k1");
        assert_eq!(SERVER_SECRETS.aad("refresh"), b"server_secret:refresh");
        assert_ne!(AUDIT_SIGNING_KEYS.aad("a"), SIGNING_KEYS.aad("a"));
    }

    #[test]
    fn a_value_unwraps_only_in_its_own_row_and_a_plaintext_row_is_refused() {
        let dir = std::env::temp_dir().join(format!("keel-wrapped-unit-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        crate::kek::LocalKeyFile::create(dir.join("kek")).unwrap();
        let kek = crate::kek::LocalKeyFile::open(dir.join("kek")).unwrap();
        let wrapped = SERVER_SECRETS.wrap(&kek, "refresh", b"0123456789abcdef").unwrap();
        let id = Some(wrapped.key_id.as_str());
        assert_eq!(SERVER_SECRETS.unwrap(&kek, "refresh", id, &wrapped.bytes).unwrap(), b"0123456789abcdef");
        assert!(matches!(SERVER_SECRETS.unwrap(&kek, "other", id, &wrapped.bytes), Err(SecretsError::Kek(_))));
        assert!(matches!(SIGNING_KEYS.unwrap(&kek, "refresh", id, &wrapped.bytes), Err(SecretsError::Kek(_))));
        let plaintext = SERVER_SECRETS.unwrap(&kek, "refresh", None, b"0123456789abcdef");
        assert!(matches!(plaintext, Err(SecretsError::NotWrapped(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
