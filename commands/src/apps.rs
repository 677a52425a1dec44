//! Managed-app commands: registration, enable/disable, and API keys (ADR 0010).
//!
//! An API key reads `keel_ak_<ulid of its key id>_<43 characters>`. Only its SHA-256
//! reaches the event log. The secret part is an HMAC, under a server key kept in
//! `auth_secrets`, of the key id and a random nonce; the nonce is kept only in the
//! idempotency record (purged after its retention), so a retry of the same request
//! answers the same secret while the plaintext is stored nowhere.

use std::collections::BTreeSet;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgPool;

use keel_domain::DomainError;
use keel_domain::app::{App, AppCommand, AppError, Scope};
use keel_domain::ids::{ApiKeyId, AppId};

use crate::bus::{self, CommandContext, CommandError, Framework};
use crate::idempotency::{Idempotency, fingerprint};
use crate::secret;

/// What every API key starts with (lets secret scanners recognise leaked keys).
pub const KEY_PREFIX: &str = "keel_ak_";
const ULID_LEN: usize = 26;
const SECRET_LEN: usize = 43;
/// How many characters of a key listings show.
const SHOWN_LEN: usize = KEY_PREFIX.len() + 8;
const DERIVATION_KEY_NAME: &str = "api_key_derivation";

/// The key id named inside a presented API key, if it is shaped like one.
pub fn key_id_of(token: &str) -> Option<ApiKeyId> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    if rest.len() != ULID_LEN + 1 + SECRET_LEN || rest.as_bytes()[ULID_LEN] != b'_' {
        return None;
    }
    let ulid = ulid::Ulid::from_string(&rest[..ULID_LEN]).ok()?;
    Some(ApiKeyId::from_ulid(ulid))
}

/// The outcome of registering an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The new app's id.
    pub app_id: String,
    /// Position of the last event written.
    pub position: i64,
}

/// A freshly issued key: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedKey {
    /// The key's id.
    pub key_id: String,
    /// The whole key, to send as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// What listings show of it.
    pub prefix: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Position of the last event written.
    pub position: i64,
}

/// What the idempotency record keeps of an issued key: no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IssuedRecord {
    key_id: String,
    nonce: String,
    prefix: String,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
    position: i64,
}

/// The outcome of any other app command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executed {
    /// Position of the last event written (0 if nothing changed).
    pub position: i64,
}

/// An app as listed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AppRow {
    /// Its id.
    pub app_id: String,
    /// Display name.
    pub name: String,
    /// Environment.
    pub environment: String,
    /// Whether it is disabled.
    pub disabled: bool,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
}

/// An API key as listed: a prefix, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeyRow {
    /// Its id.
    pub key_id: String,
    /// The first characters of the key.
    pub prefix: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Runs managed-app commands.
pub struct AppCommands {
    pool: PgPool,
    apps: Framework<App>,
    idempotency: Idempotency,
    derivation_key: [u8; 32],
}

impl AppCommands {
    /// App commands on `pools`; loads (or creates) the key-derivation secret.
    pub async fn new(pools: impl Into<crate::pools::Pools>) -> Result<Self, sqlx::Error> {
        let crate::pools::Pools { durable: pool, relaxed } = pools.into();
        let derivation_key = secret::server_secret(&pool, DERIVATION_KEY_NAME).await?;
        Ok(Self { apps: bus::framework(&pool), idempotency: Idempotency::new(relaxed), derivation_key, pool })
    }

    /// Registers an app.
    pub async fn register(
        &self,
        ctx: &CommandContext,
        name: &str,
        environment: &str,
    ) -> Result<Registered, CommandError> {
        let hash = fingerprint(&["RegisterApp", name, environment]);
        let candidate = AppId::from_ulid(ulid::Ulid::new());
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, candidate.as_str(), |id| async move {
                let app_id: AppId = id.parse().map_err(|_| CommandError::domain(&AppError::NotFound))?;
                let command = AppCommand::Register {
                    app_id: app_id.clone(),
                    name: name.to_string(),
                    environment: environment.to_string(),
                    at: ctx.received_at,
                };
                match bus::execute(&self.apps, app_id.as_str(), command, ctx.metadata(None)).await {
                    // Only a takeover of an interrupted first attempt meets its own app.
                    Err(err) if err.code == AppError::AlreadyRegistered.code() => {}
                    other => other?,
                }
                Ok(Registered { app_id: app_id.to_string(), position: self.position(ctx).await? })
            })
            .await
    }

    /// Runs update, disable, enable or revoke-key on an existing app.
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        app_id: &AppId,
        command: AppCommand,
    ) -> Result<Executed, CommandError> {
        let hash = fingerprint(&["AppCommand", app_id.as_str(), &command.fingerprint()]);
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, app_id.as_str(), |_| async move {
                bus::execute(&self.apps, app_id.as_str(), command, ctx.metadata(None)).await?;
                Ok(Executed { position: self.position(ctx).await? })
            })
            .await
    }

    /// Records refused requests (no idempotency record: the gateway sends each batch once).
    pub async fn record_denials(
        &self,
        ctx: &CommandContext,
        app_id: &AppId,
        command: AppCommand,
    ) -> Result<(), CommandError> {
        bus::execute(&self.apps, app_id.as_str(), command, ctx.metadata(None)).await
    }

    /// Issues an API key with `scopes` (wire names) and an optional expiry. The answer
    /// is the only place the secret ever appears; a retry with the same idempotency
    /// key answers the same secret.
    pub async fn issue_key(
        &self,
        ctx: &CommandContext,
        app_id: &AppId,
        scopes: &[String],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<IssuedKey, CommandError> {
        let scopes = scopes
            .iter()
            .map(|s| s.parse::<Scope>())
            .collect::<Result<BTreeSet<Scope>, _>>()
            .map_err(|e| CommandError::domain(&e))?;
        let wire: Vec<String> = scopes.iter().map(|s| s.as_str().to_string()).collect();
        let expiry = expires_at.map(|t| t.to_rfc3339()).unwrap_or_default();
        let hash = fingerprint(&["IssueApiKey", app_id.as_str(), &wire.join(","), &expiry]);
        let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret::random_bytes());
        let candidate = format!("{}.{nonce}", ApiKeyId::from_ulid(ulid::Ulid::new()));
        let record = self
            .idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, &candidate, |id| async move {
                let (key_id, nonce) = id.split_once('.').ok_or_else(|| CommandError::domain(&AppError::KeyNotFound))?;
                let key_id: ApiKeyId = key_id.parse().map_err(|_| CommandError::domain(&AppError::KeyNotFound))?;
                let token = self.token(&key_id, nonce);
                let prefix = token[..SHOWN_LEN].to_string();
                let command = AppCommand::IssueKey {
                    key_id: key_id.clone(),
                    prefix: prefix.clone(),
                    secret_hash: secret::digest(&token),
                    scopes,
                    expires_at,
                    at: ctx.received_at,
                };
                match bus::execute(&self.apps, app_id.as_str(), command, ctx.metadata(None)).await {
                    Err(err) if err.code == AppError::KeyExists.code() => {}
                    other => other?,
                }
                Ok(IssuedRecord {
                    key_id: key_id.to_string(),
                    nonce: nonce.to_string(),
                    prefix,
                    scopes: wire,
                    expires_at,
                    position: self.position(ctx).await?,
                })
            })
            .await?;
        let key_id: ApiKeyId = record.key_id.parse().map_err(|_| CommandError::domain(&AppError::KeyNotFound))?;
        Ok(IssuedKey {
            secret: self.token(&key_id, &record.nonce),
            key_id: record.key_id,
            prefix: record.prefix,
            scopes: record.scopes,
            expires_at: record.expires_at,
            position: record.position,
        })
    }

    /// The apps, oldest first, after `after` (an app id), at most `limit`.
    pub async fn list_apps(&self, after: Option<&str>, limit: i64) -> Result<Vec<AppRow>, CommandError> {
        sqlx::query_as(
            "SELECT app_id, name, environment, disabled, registered_at FROM auth_apps
             WHERE $1::text IS NULL OR app_id > $1 ORDER BY app_id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| CommandError::unavailable(&e))
    }

    /// One app, if registered.
    pub async fn app(&self, app_id: &AppId) -> Result<Option<AppRow>, CommandError> {
        sqlx::query_as("SELECT app_id, name, environment, disabled, registered_at FROM auth_apps WHERE app_id = $1")
            .bind(app_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| CommandError::unavailable(&e))
    }

    /// An app's keys, revoked and expired ones included, oldest first.
    pub async fn list_keys(&self, app_id: &AppId) -> Result<Vec<KeyRow>, CommandError> {
        sqlx::query_as(
            "SELECT key_id, prefix, scopes, expires_at, issued_at, revoked_at FROM auth_api_keys
             WHERE app_id = $1 ORDER BY issued_at, key_id",
        )
        .bind(app_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| CommandError::unavailable(&e))
    }

    async fn position(&self, ctx: &CommandContext) -> Result<i64, CommandError> {
        bus::position_of(&self.pool, ctx.command_id).await
    }

    /// The key for `key_id` and `nonce`: `keel_ak_<ulid>_<HMAC, base64url>`.
    fn token(&self, key_id: &ApiKeyId, nonce: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.derivation_key).expect("HMAC takes any key length");
        mac.update(key_id.as_str().as_bytes());
        mac.update(b".");
        mac.update(nonce.as_bytes());
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let ulid = &key_id.as_str()[ApiKeyId::PREFIX.len()..];
        format!("{KEY_PREFIX}{ulid}_{secret}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_read_back_from_well_formed_keys_only() {
        let id = ApiKeyId::from_ulid(ulid::Ulid::new());
        let ulid = &id.as_str()[ApiKeyId::PREFIX.len()..];
        let token = format!("{KEY_PREFIX}{ulid}_{}", "a".repeat(SECRET_LEN));
        assert_eq!(key_id_of(&token), Some(id));
        assert_eq!(key_id_of(&token[..token.len() - 1]), None);
        assert_eq!(key_id_of(&token.replacen("keel_ak_", "keel_xx_", 1)), None);
        assert_eq!(key_id_of(&format!("{KEY_PREFIX}{}_{}", "!".repeat(ULID_LEN), "a".repeat(SECRET_LEN))), None);
    }
}
