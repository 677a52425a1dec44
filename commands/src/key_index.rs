//! The API-key index (ADR 0010): managed apps and their keys, folded from app events
//! inside the transaction that appends them. Gateways authenticate keys from an
//! in-memory copy that they reload when `auth_key_state.version` moves.

use cqrs_es::persist::SerializedEvent;
use sqlx::PgConnection;

use keel_domain::app::{self, AppEvent};

/// Whether `event` changes the index.
pub fn affects(event: &SerializedEvent) -> bool {
    event.aggregate_type == app::AGGREGATE_TYPE && event.event_type != "app.access_denied"
}

/// Applies one just-appended event to the index (a no-op for other aggregates).
pub async fn apply(tx: &mut PgConnection, event: &SerializedEvent) -> Result<(), sqlx::Error> {
    if !affects(event) {
        return Ok(());
    }
    let app_id = event.aggregate_id.as_str();
    let decoded: AppEvent = crate::identity_index::decode(event)?;
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
        AppEvent::Updated { name, environment } => {
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
        AppEvent::AccessDenied { .. } => return Ok(()),
    }
    sqlx::query("UPDATE auth_key_state SET version = version + 1").execute(&mut *tx).await?;
    Ok(())
}
