//! Managed apps as OpenID Connect clients (ADR 0025): the write-side index
//! `oidc_clients`, folded from app events in the transaction that appends them, the
//! hashed client secrets beside it (`oidc_client_secrets`), and the lookup the
//! OpenID Provider uses ([`OidcClients`]). A client id is an app id.

use cqrs_es::persist::SerializedEvent;
use sqlx::{PgConnection, PgPool};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use keel_domain::app::{self, AppEvent, ClientSettings, ClientType};

use crate::secret;
use crate::write_index::{WriteSideIndex, decode};

/// Longest client id looked up (app ids are far shorter); longer ones are unknown.
const MAX_CLIENT_ID_LEN: usize = 64;

/// Longest client secret checked (ours are 51 characters); longer ones are wrong.
const MAX_SECRET_LEN: usize = 256;

/// A managed app as the OpenID Provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OidcClient {
    /// Its client id: the app id.
    pub app_id: String,
    /// The app's display name.
    pub name: String,
    /// Whether the app may start flows (it is not disabled).
    pub enabled: bool,
    /// Whether it authenticates with a client secret (else PKCE alone).
    pub confidential: bool,
    /// Where the authorization endpoint may send users back (exact match).
    pub redirect_uris: Vec<String>,
    /// Where the end-session endpoint may send users after sign-out (exact match).
    pub post_logout_redirect_uris: Vec<String>,
}

/// Looks up OpenID Connect clients and checks their secrets.
#[derive(Debug, Clone)]
pub struct OidcClients {
    pool: PgPool,
}

impl OidcClients {
    /// The lookup on `pool` (the runtime role will do).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The client `client_id`, if it is a registered app (disabled ones included: see `enabled`).
    pub async fn find(&self, client_id: &str) -> Result<Option<OidcClient>, sqlx::Error> {
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN {
            return Ok(None);
        }
        sqlx::query_as(
            "SELECT a.app_id, a.name, NOT a.disabled AS enabled, COALESCE(c.confidential, false) AS confidential,
                    COALESCE(c.redirect_uris, '{}') AS redirect_uris,
                    COALESCE(c.post_logout_redirect_uris, '{}') AS post_logout_redirect_uris
             FROM auth_apps a LEFT JOIN oidc_clients c USING (app_id)
             WHERE a.app_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Whether `secret` is the current client secret of the confidential client
    /// `client_id` (hashes compared in constant time). False for unknown and public clients.
    pub async fn verify_secret(&self, client_id: &str, secret: &str) -> Result<bool, sqlx::Error> {
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN || secret.len() > MAX_SECRET_LEN {
            return Ok(false);
        }
        let stored: Option<String> = sqlx::query_scalar(
            "SELECT s.hash FROM oidc_clients c JOIN oidc_client_secrets s ON s.secret_id = c.secret_id
             WHERE c.app_id = $1 AND c.confidential",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        let presented = secret::digest(secret);
        Ok(stored.is_some_and(|stored| bool::from(stored.as_bytes().ct_eq(presented.as_bytes()))))
    }
}

/// Stores the hash of a new client secret of `app_id` under `secret_id` (before the
/// event that names it); storing the same id again changes nothing.
pub(crate) async fn store_secret(pool: &PgPool, secret_id: Uuid, app_id: &str, hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO oidc_client_secrets (secret_id, app_id, hash) VALUES ($1, $2, $3) ON CONFLICT (secret_id) DO NOTHING",
    )
    .bind(secret_id)
    .bind(app_id)
    .bind(hash)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes a stored secret that no app references (after a refused command).
pub(crate) async fn drop_unused_secret(pool: &PgPool, secret_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM oidc_client_secrets s WHERE s.secret_id = $1
         AND NOT EXISTS (SELECT 1 FROM oidc_clients c WHERE c.secret_id = $1)",
    )
    .bind(secret_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The current secret id of `app_id`, if it has one.
pub(crate) async fn current_secret_id(pool: &PgPool, app_id: &str) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar::<_, Option<Uuid>>("SELECT secret_id FROM oidc_clients WHERE app_id = $1")
        .bind(app_id)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
}

/// The OpenID Connect client index: `oidc_clients` (and the secrets it no longer uses).
#[derive(Debug, Clone, Copy)]
pub struct OidcClientIndex;

impl WriteSideIndex for OidcClientIndex {
    fn affects(&self, event: &SerializedEvent) -> bool {
        event.aggregate_type == app::AGGREGATE_TYPE
            && matches!(event.event_type.as_str(), "app.registered" | "app.updated" | "app.client_secret_rotated")
    }

    async fn apply(&self, tx: &mut PgConnection, event: &SerializedEvent) -> Result<(), sqlx::Error> {
        if !self.affects(event) {
            return Ok(());
        }
        let app_id = event.aggregate_id.as_str();
        match decode(event)? {
            AppEvent::Registered { client, client_secret_id, .. } => {
                upsert(tx, app_id, &client, client_secret_id).await?;
            }
            AppEvent::Updated { client: Some(client), client_secret_id, .. } => {
                upsert(tx, app_id, &client, client_secret_id).await?;
            }
            AppEvent::ClientSecretRotated { secret_id, .. } => {
                sqlx::query("UPDATE oidc_clients SET secret_id = $2, updated_at = now() WHERE app_id = $1")
                    .bind(app_id)
                    .bind(secret_id)
                    .execute(&mut *tx)
                    .await?;
            }
            _ => return Ok(()),
        }
        // The previous secret stops working with the event that replaces it.
        sqlx::query(
            "DELETE FROM oidc_client_secrets s WHERE s.app_id = $1
             AND s.secret_id IS DISTINCT FROM (SELECT c.secret_id FROM oidc_clients c WHERE c.app_id = $1)",
        )
        .bind(app_id)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// Writes the client settings of `app_id`. A public client keeps no secret; a
/// confidential one keeps its current secret unless `secret_id` names a new one.
async fn upsert(
    tx: &mut PgConnection,
    app_id: &str,
    client: &ClientSettings,
    secret_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    let confidential = client.client_type == ClientType::Confidential;
    sqlx::query(
        "INSERT INTO oidc_clients (app_id, confidential, redirect_uris, post_logout_redirect_uris, secret_id)
         VALUES ($1, $2, $3, $4, CASE WHEN $2 THEN $5 END)
         ON CONFLICT (app_id) DO UPDATE SET
             confidential = EXCLUDED.confidential,
             redirect_uris = EXCLUDED.redirect_uris,
             post_logout_redirect_uris = EXCLUDED.post_logout_redirect_uris,
             secret_id = CASE WHEN EXCLUDED.confidential THEN COALESCE($5, oidc_clients.secret_id) END,
             updated_at = now()",
    )
    .bind(app_id)
    .bind(confidential)
    .bind(&client.redirect_uris)
    .bind(&client.post_logout_redirect_uris)
    .bind(secret_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
