//! Managed-app commands: registration, enable/disable, and API keys (ADR 0010).
//!
//! An API key reads `keel_ak_<ulid of its key id>_<43 characters>`. Only its SHA-256
//! reaches the event log. The secret part is an HMAC, under a server key kept in
//! `auth_secrets` (wrapped under the KEK, ADR 0028), of the key id and a random nonce; the nonce is kept only in the
//! idempotency record (purged after its retention), so a retry of the same request
//! answers the same secret while the plaintext is stored nowhere.
//!
//! A client secret (ADR 0025) reads `keel_cs_<43 characters>` and is made the same way,
//! under its own server key, from its secret id and a nonce. Its SHA-256 is stored in
//! `oidc_client_secrets` before the event that names the secret id; events carry the id only.

use std::collections::BTreeSet;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use keel_domain::DomainError;
use keel_domain::app::{App, AppCommand, AppError, ClientSettings, ClientType, Scope};
use keel_domain::ids::{ApiKeyId, AppId};

use crate::bus::{self, CommandContext, CommandError, Framework};
use crate::idempotency::{Idempotency, fingerprint};
use crate::oidc_clients;
use crate::secret;

/// What every API key starts with (lets secret scanners recognise leaked keys).
pub const KEY_PREFIX: &str = "keel_ak_";
const ULID_LEN: usize = 26;
const SECRET_LEN: usize = 43;
/// How many characters of a key listings show.
const SHOWN_LEN: usize = KEY_PREFIX.len() + 8;
const DERIVATION_KEY_NAME: &str = "api_key_derivation";
/// What every client secret starts with (lets secret scanners recognise leaked secrets).
pub const CLIENT_SECRET_PREFIX: &str = "keel_cs_";
const CLIENT_SECRET_KEY_NAME: &str = "client_secret_derivation";

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registered {
    /// The new app's id.
    pub app_id: String,
    /// A confidential app's client secret: the only time it is shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Position of the last event written.
    pub position: i64,
}

/// What the idempotency record keeps of a registration: no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RegisteredRecord {
    app_id: String,
    /// `<secret id>.<nonce>` of a confidential app's secret.
    seed: Option<String>,
    position: i64,
}

/// A change of an app's name, environment or client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUpdate {
    /// Display name.
    pub name: String,
    /// Environment.
    pub environment: String,
    /// Redirect URIs (replacing the current list).
    pub redirect_uris: Vec<String>,
    /// Post-logout redirect URIs (replacing the current list).
    pub post_logout_redirect_uris: Vec<String>,
    /// The new client type; `None` keeps the current one.
    pub client_type: Option<ClientType>,
}

/// The outcome of an update or a secret rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretChange {
    /// The new client secret, if the command made one: the only time it is shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Position of the last event written (0 if nothing changed).
    pub position: i64,
}

/// What the idempotency record keeps of an update or a rotation: no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SecretChangeRecord {
    /// `<secret id>.<nonce>` of the secret the command made, if any.
    seed: Option<String>,
    position: i64,
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
    /// Whether it is a confidential OpenID Connect client (else public).
    pub confidential: bool,
    /// Its redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Its post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
}

/// The columns of [`AppRow`].
const APP_ROW: &str = "SELECT a.app_id, a.name, a.environment, a.disabled, a.registered_at,
        COALESCE(c.confidential, false) AS confidential, COALESCE(c.redirect_uris, '{}') AS redirect_uris,
        COALESCE(c.post_logout_redirect_uris, '{}') AS post_logout_redirect_uris
    FROM auth_apps a LEFT JOIN oidc_clients c USING (app_id)";

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
    client_secret_key: [u8; 32],
}

impl AppCommands {
    /// App commands on `pools`; loads (or creates) the key-derivation secrets, wrapped under `kek`.
    pub async fn new(
        pools: impl Into<crate::pools::Pools>,
        kek: &dyn crate::kek::KeyEncryptionKey,
    ) -> Result<Self, sqlx::Error> {
        let pools: crate::pools::Pools = pools.into();
        let crate::pools::Pools { durable: pool, relaxed, .. } = pools.clone();
        let derivation_key = secret::server_secret(&pool, kek, DERIVATION_KEY_NAME).await?;
        let client_secret_key = secret::server_secret(&pool, kek, CLIENT_SECRET_KEY_NAME).await?;
        Ok(Self {
            apps: bus::framework(&pools),
            idempotency: Idempotency::new(relaxed),
            derivation_key,
            client_secret_key,
            pool,
        })
    }

    /// Registers an app with its OpenID Connect client settings. A confidential app's
    /// client secret is in the answer only (a retry with the same idempotency key
    /// answers it again).
    pub async fn register(
        &self,
        ctx: &CommandContext,
        name: &str,
        environment: &str,
        client: ClientSettings,
    ) -> Result<Registered, CommandError> {
        let confidential = client.client_type == ClientType::Confidential;
        let hash = fingerprint(&[
            "RegisterApp",
            name,
            environment,
            &client.redirect_uris.join(" "),
            &client.post_logout_redirect_uris.join(" "),
            client.client_type.as_str(),
        ]);
        let app_id = AppId::from_ulid(ulid::Ulid::new());
        let candidate = if confidential { format!("{app_id}.{}", new_seed()) } else { app_id.to_string() };
        let record = self
            .idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, &candidate, |id| async move {
                let (app_id, seed) = match id.split_once('.') {
                    Some((app_id, seed)) => (app_id, Some(seed)),
                    None => (id.as_str(), None),
                };
                let app_id: AppId = app_id.parse().map_err(|_| CommandError::domain(&AppError::NotFound))?;
                let secret_id = match seed {
                    Some(seed) => Some(self.store_secret(app_id.as_str(), seed).await?),
                    None => None,
                };
                let command = AppCommand::Register {
                    app_id: app_id.clone(),
                    name: name.to_string(),
                    environment: environment.to_string(),
                    client,
                    client_secret_id: secret_id,
                    at: ctx.received_at,
                };
                match bus::execute(&self.apps, app_id.as_str(), command, ctx.metadata(None)).await {
                    // Only a takeover of an interrupted first attempt meets its own app.
                    Err(err) if err.code == AppError::AlreadyRegistered.code() => {}
                    Err(err) => return Err(self.dropping(secret_id, err).await),
                    Ok(()) => {}
                }
                let position = self.position(ctx).await?;
                Ok(RegisteredRecord { app_id: app_id.to_string(), seed: seed.map(str::to_string), position })
            })
            .await?;
        Ok(Registered {
            client_secret: record.seed.as_deref().map(|seed| self.client_secret(seed)).transpose()?,
            app_id: record.app_id,
            position: record.position,
        })
    }

    /// Changes an app's name, environment and client settings. When this makes the app
    /// confidential, its first client secret is in the answer only.
    pub async fn update(
        &self,
        ctx: &CommandContext,
        app_id: &AppId,
        update: AppUpdate,
    ) -> Result<SecretChange, CommandError> {
        let command = |secret_id| AppCommand::Update {
            name: update.name.clone(),
            environment: update.environment.clone(),
            redirect_uris: update.redirect_uris.clone(),
            post_logout_redirect_uris: update.post_logout_redirect_uris.clone(),
            client_type: update.client_type,
            client_secret_id: secret_id,
        };
        let may_need_secret = update.client_type == Some(ClientType::Confidential);
        self.change_secret(ctx, app_id, "UpdateApp", may_need_secret, command).await
    }

    /// Replaces a confidential app's client secret; the previous one stops working at
    /// once. The new secret is in the answer only.
    pub async fn rotate_client_secret(
        &self,
        ctx: &CommandContext,
        app_id: &AppId,
    ) -> Result<SecretChange, CommandError> {
        let at = ctx.received_at;
        // The fingerprint ignores the secret id; the command itself always gets one.
        let command =
            |secret_id: Option<Uuid>| AppCommand::RotateClientSecret { secret_id: secret_id.unwrap_or_default(), at };
        self.change_secret(ctx, app_id, "RotateClientSecret", true, command).await
    }

    /// Runs the command `make` builds, given the id of a freshly stored secret when
    /// `with_secret` (none for the fingerprint); answers the secret if the app now uses it.
    async fn change_secret(
        &self,
        ctx: &CommandContext,
        app_id: &AppId,
        rpc: &str,
        with_secret: bool,
        make: impl Fn(Option<Uuid>) -> AppCommand,
    ) -> Result<SecretChange, CommandError> {
        let hash = fingerprint(&[rpc, app_id.as_str(), &make(None).fingerprint()]);
        let candidate = if with_secret { new_seed() } else { String::new() };
        let record = self
            .idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, &candidate, |seed| async move {
                let seed = (!seed.is_empty()).then_some(seed);
                let secret_id = match &seed {
                    Some(seed) => Some(self.store_secret(app_id.as_str(), seed).await?),
                    None => None,
                };
                if let Err(err) = bus::execute(&self.apps, app_id.as_str(), make(secret_id), ctx.metadata(None)).await {
                    return Err(self.dropping(secret_id, err).await);
                }
                let used = match secret_id {
                    Some(id) => self.keeps_secret(app_id, id).await?,
                    None => false,
                };
                let position = self.position(ctx).await?;
                Ok(SecretChangeRecord { seed: seed.filter(|_| used), position })
            })
            .await?;
        Ok(SecretChange {
            client_secret: record.seed.as_deref().map(|seed| self.client_secret(seed)).transpose()?,
            position: record.position,
        })
    }

    /// Whether `app_id` now uses the stored secret `secret_id`; if not, the secret is removed.
    async fn keeps_secret(&self, app_id: &AppId, secret_id: Uuid) -> Result<bool, CommandError> {
        let current = oidc_clients::current_secret_id(&self.pool, app_id.as_str())
            .await
            .map_err(|e| CommandError::unavailable(&e))?;
        if current == Some(secret_id) {
            return Ok(true);
        }
        oidc_clients::drop_unused_secret(&self.pool, secret_id).await.map_err(|e| CommandError::unavailable(&e))?;
        Ok(false)
    }

    /// Stores the hash of the secret `seed` makes for `app_id`; returns its id.
    async fn store_secret(&self, app_id: &str, seed: &str) -> Result<Uuid, CommandError> {
        let secret_id = seed_id(seed)?;
        let hash = secret::digest(&self.client_secret(seed)?);
        oidc_clients::store_secret(&self.pool, secret_id, app_id, &hash)
            .await
            .map_err(|e| CommandError::unavailable(&e))?;
        Ok(secret_id)
    }

    /// `err`, after removing the stored secret `secret_id` if no app uses it.
    async fn dropping(&self, secret_id: Option<Uuid>, err: CommandError) -> CommandError {
        if let Some(id) = secret_id
            && let Err(e) = oidc_clients::drop_unused_secret(&self.pool, id).await
        {
            tracing::warn!(error = %e, "unused client secret not removed");
        }
        err
    }

    /// The client secret for `seed` (`<secret id>.<nonce>`): `keel_cs_<HMAC, base64url>`.
    fn client_secret(&self, seed: &str) -> Result<String, CommandError> {
        seed_id(seed)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.client_secret_key).expect("HMAC takes any key length");
        mac.update(seed.as_bytes());
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{CLIENT_SECRET_PREFIX}{secret}"))
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
        sqlx::query_as(&format!("{APP_ROW} WHERE $1::text IS NULL OR a.app_id > $1 ORDER BY a.app_id LIMIT $2"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| CommandError::unavailable(&e))
    }

    /// One app, if registered.
    pub async fn app(&self, app_id: &AppId) -> Result<Option<AppRow>, CommandError> {
        sqlx::query_as(&format!("{APP_ROW} WHERE a.app_id = $1"))
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

/// A fresh `<secret id>.<nonce>`: what a client secret is derived from.
fn new_seed() -> String {
    let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret::random_bytes());
    format!("{}.{nonce}", Uuid::now_v7())
}

/// The secret id of a seed.
fn seed_id(seed: &str) -> Result<Uuid, CommandError> {
    seed.split_once('.')
        .and_then(|(id, _)| id.parse().ok())
        .ok_or_else(|| CommandError::domain(&AppError::SecretRequired))
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
