//! The API-key index (ADR 0010): managed apps and their keys, folded from app events
//! inside the transaction that appends them. Gateways authenticate keys from an
//! in-memory copy that they reload when `auth_key_state.version` moves.

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use sqlx::{PgConnection, PgPool};

use keel_domain::app::{self, AppEvent};

use crate::write_index::{WriteSideIndex, decode};

/// The API-key index: `auth_apps`, `auth_api_keys` and `auth_key_state`.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeyIndex;

impl WriteSideIndex for ApiKeyIndex {
    fn affects(&self, event: &SerializedEvent) -> bool {
        event.aggregate_type == app::AGGREGATE_TYPE && event.event_type != "app.access_denied"
    }

    async fn apply(&self, tx: &mut PgConnection, event: &SerializedEvent) -> Result<(), sqlx::Error> {
        if !self.affects(event) {
            return Ok(());
        }
        apply_app(tx, event.aggregate_id.as_str(), decode(event)?).await
    }
}

async fn apply_app(tx: &mut PgConnection, app_id: &str, decoded: AppEvent) -> Result<(), sqlx::Error> {
    let disabled = |flag: bool| {
        sqlx::query("UPDATE auth_apps SET disabled = $2, updated_at = now() WHERE app_id = $1").bind(app_id).bind(flag)
    };
    match decoded {
        AppEvent::Registered { name, environment, registered_at, .. } => {
            sqlx::query(
                "INSERT INTO auth_apps (app_id, name, environment, registered_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (app_id) DO NOTHING",
            )
            .bind(app_id)
            .bind(name)
            .bind(environment)
            .bind(registered_at)
            .execute(&mut *tx)
            .await?;
        }
        AppEvent::Updated { name, environment, .. } => {
            sqlx::query("UPDATE auth_apps SET name = $2, environment = $3, updated_at = now() WHERE app_id = $1")
                .bind(app_id)
                .bind(name)
                .bind(environment)
                .execute(&mut *tx)
                .await?;
        }
        AppEvent::Disabled {} => {
            disabled(true).execute(&mut *tx).await?;
        }
        AppEvent::Enabled {} => {
            disabled(false).execute(&mut *tx).await?;
        }
        AppEvent::KeyIssued { key_id, prefix, secret_hash, scopes, expires_at, issued_at } => {
            let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            sqlx::query(
                "INSERT INTO auth_api_keys (key_id, app_id, prefix, secret_hash, scopes, expires_at, issued_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key_id) DO NOTHING",
            )
            .bind(key_id.as_str())
            .bind(app_id)
            .bind(prefix)
            .bind(secret_hash)
            .bind(scopes)
            .bind(expires_at)
            .bind(issued_at)
            .execute(&mut *tx)
            .await?;
        }
        AppEvent::KeyRevoked { key_id, revoked_at } => {
            sqlx::query("UPDATE auth_api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL")
                .bind(key_id.as_str())
                .bind(revoked_at)
                .execute(&mut *tx)
                .await?;
        }
        AppEvent::AccessDenied { .. } | AppEvent::ClientSecretRotated { .. } => return Ok(()),
    }
    sqlx::query("UPDATE auth_key_state SET version = version + 1").execute(&mut *tx).await?;
    Ok(())
}

/// An API key as gateways hold it in memory.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct IndexedKey {
    /// The key id.
    pub key_id: String,
    /// Its app.
    pub app_id: String,
    /// The hex SHA-256 of its secret.
    pub secret_hash: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it expires, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Whether its app is disabled.
    pub app_disabled: bool,
}

/// The index's version; it moves with every change of an app or a key.
pub async fn version(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM auth_key_state").fetch_one(pool).await
}

/// Every key with its app's state. Read after [`version`], they are at least as new as it.
pub async fn keys(pool: &PgPool) -> Result<Vec<IndexedKey>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.key_id, k.app_id, k.secret_hash, k.scopes, k.expires_at, k.revoked_at IS NOT NULL AS revoked,
                a.disabled AS app_disabled
         FROM auth_api_keys k JOIN auth_apps a USING (app_id)",
    )
    .fetch_all(pool)
    .await
}
