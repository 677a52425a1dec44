//! Managed apps: Keel's machine clients, one aggregate per app with its API keys.
//! An app is registered by a platform operator; disabling it blocks all its keys at
//! once. A key's secret never reaches the domain: only its SHA-256 digest and a short
//! prefix (for listings) do. An app is also an OpenID Connect client (ADR 0025, `client`):
//! its client id is its app id; a confidential app's secret is named in events by id only.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{aggregate, events};
use crate::error::{DomainError, ErrorKind};
use crate::ids::{ApiKeyId, AppId};
use crate::validate;

mod client;
#[cfg(test)]
mod tests;

pub use client::{ClientSettings, ClientType, MAX_URI_LEN, MAX_URIS, is_acceptable_uri};

/// The aggregate type name of managed apps in the event store.
pub const AGGREGATE_TYPE: &str = "app";

/// Most keys an app may hold that are neither revoked nor expired.
pub const MAX_ACTIVE_KEYS: usize = 20;

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Scope {
    /// Read a tenant's flags and entitlements (OFREP, snapshots).
    #[serde(rename = "flags:read")]
    FlagsRead,
    /// Report billable usage.
    #[serde(rename = "billing:write")]
    BillingWrite,
    /// Read the billing ledger and exports.
    #[serde(rename = "billing:read")]
    BillingRead,
    /// Send the app's own audit events.
    #[serde(rename = "audit:write")]
    AuditWrite,
    /// Report fleet health (edge routers, agents).
    #[serde(rename = "fleet:write")]
    FleetWrite,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 5] =
        [Scope::FlagsRead, Scope::BillingWrite, Scope::BillingRead, Scope::AuditWrite, Scope::FleetWrite];

    /// The wire name, e.g. `flags:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::FlagsRead => "flags:read",
            Scope::BillingWrite => "billing:write",
            Scope::BillingRead => "billing:read",
            Scope::AuditWrite => "audit:write",
            Scope::FleetWrite => "fleet:write",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = AppError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s).ok_or(AppError::InvalidScope)
    }
}

/// A command on a managed app.
#[derive(Debug, Clone, PartialEq)]
pub enum AppCommand {
    /// Register the app.
    Register {
        /// The new app's id.
        app_id: AppId,
        /// Display name (validated here).
        name: String,
        /// Environment, e.g. `production` (validated here).
        environment: String,
        /// Its OpenID Connect client settings (validated here).
        client: ClientSettings,
        /// The id of its stored client secret; required for (and only kept on) a confidential app.
        client_secret_id: Option<Uuid>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Rename it, move it to another environment, or change its client settings (no
    /// event if nothing changes).
    Update {
        /// Display name.
        name: String,
        /// Environment.
        environment: String,
        /// Its redirect URIs (replacing the current list; validated here).
        redirect_uris: Vec<String>,
        /// Its post-logout redirect URIs (replacing the current list; validated here).
        post_logout_redirect_uris: Vec<String>,
        /// The new client type; `None` keeps the current one.
        client_type: Option<ClientType>,
        /// The id of a stored client secret, used only if this makes the app confidential.
        client_secret_id: Option<Uuid>,
    },
    /// Replace a confidential app's client secret: the previous one stops working.
    RotateClientSecret {
        /// The id of the new stored secret.
        secret_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Block the app and all its keys.
    Disable,
    /// Lift a disable.
    Enable,
    /// Issue an API key.
    IssueKey {
        /// The key's id.
        key_id: ApiKeyId,
        /// The first characters of the secret, shown in listings.
        prefix: String,
        /// SHA-256 (hex) of the secret.
        secret_hash: String,
        /// What the key may do (at least one).
        scopes: BTreeSet<Scope>,
        /// When it stops working, if ever.
        expires_at: Option<DateTime<Utc>>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Revoke an API key for good (a no-op if it is revoked already).
    RevokeKey {
        /// The key.
        key_id: ApiKeyId,
        /// When.
        at: DateTime<Utc>,
    },
    /// Record refused requests made with one of the app's keys (gateways coalesce them).
    RecordDenials {
        /// The key presented.
        key_id: ApiKeyId,
        /// Why they were refused (`key_revoked`, `key_expired`, `app_disabled`, `wrong_secret`, `missing_scope`).
        reason: String,
        /// How many requests.
        count: u64,
        /// The first of them.
        first_at: DateTime<Utc>,
        /// The last of them.
        last_at: DateTime<Utc>,
    },
}

impl AppCommand {
    /// What identifies the request for idempotency: the command and its arguments, without
    /// times and without the fresh secret.
    pub fn fingerprint(&self) -> String {
        match self {
            AppCommand::Register { name, environment, client, .. } => {
                format!("register|{name}|{environment}|{}", client_fingerprint(client))
            }
            AppCommand::Update { name, environment, redirect_uris, post_logout_redirect_uris, client_type, .. } => {
                format!(
                    "update|{name}|{environment}|{}|{}|{}",
                    redirect_uris.join(" "),
                    post_logout_redirect_uris.join(" "),
                    client_type.map(ClientType::as_str).unwrap_or_default()
                )
            }
            AppCommand::RotateClientSecret { .. } => "rotate_client_secret".into(),
            AppCommand::Disable => "disable".into(),
            AppCommand::Enable => "enable".into(),
            AppCommand::IssueKey { scopes, expires_at, .. } => {
                let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
                format!("issue_key|{}|{}", scopes.join(","), expires_at.map(|t| t.to_rfc3339()).unwrap_or_default())
            }
            AppCommand::RevokeKey { key_id, .. } => format!("revoke_key|{key_id}"),
            AppCommand::RecordDenials { key_id, reason, count, first_at, .. } => {
                format!("record_denials|{key_id}|{reason}|{count}|{}", first_at.to_rfc3339())
            }
        }
    }
}

/// The client settings as the idempotency fingerprint sees them.
fn client_fingerprint(client: &ClientSettings) -> String {
    format!(
        "{}|{}|{}",
        client.redirect_uris.join(" "),
        client.post_logout_redirect_uris.join(" "),
        client.client_type.as_str()
    )
}

events! {
    /// What happened to a managed app.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum AppEvent {
        /// The app was registered.
        "app.registered" => Registered {
            /// Its id.
            app_id: AppId,
            /// Display name.
            name: String,
            /// Environment.
            environment: String,
            /// Its OpenID Connect client settings (events before ADR 0025: a public client without URIs).
            #[serde(default)]
            client: ClientSettings,
            /// The id of a confidential app's stored client secret (never the secret or its hash).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            client_secret_id: Option<Uuid>,
            /// When.
            registered_at: DateTime<Utc>,
        },
        /// Its name, environment or client settings changed.
        "app.updated" => Updated {
            /// Display name.
            name: String,
            /// Environment.
            environment: String,
            /// The new client settings, if they changed.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            client: Option<ClientSettings>,
            /// The id of the stored client secret, when this made the app confidential.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            client_secret_id: Option<Uuid>,
        },
        /// A confidential app's client secret was replaced; the previous one no longer works.
        "app.client_secret_rotated" => ClientSecretRotated {
            /// The id of the new stored secret (never the secret or its hash).
            secret_id: Uuid,
            /// When.
            rotated_at: DateTime<Utc>,
        },
        /// The app and all its keys are blocked.
        "app.disabled" => Disabled {},
        /// The block was lifted.
        "app.enabled" => Enabled {},
        /// An API key was issued.
        "app.key_issued" => KeyIssued {
            /// The key's id.
            key_id: ApiKeyId,
            /// The first characters of the secret.
            prefix: String,
            /// SHA-256 (hex) of the secret.
            secret_hash: String,
            /// What it may do.
            scopes: BTreeSet<Scope>,
            /// When it stops working, if ever.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            expires_at: Option<DateTime<Utc>>,
            /// When.
            issued_at: DateTime<Utc>,
        },
        /// An API key was revoked.
        "app.key_revoked" => KeyRevoked {
            /// The key.
            key_id: ApiKeyId,
            /// When.
            revoked_at: DateTime<Utc>,
        },
        /// Requests made with one of the app's keys were refused (coalesced per key and reason).
        "app.access_denied" => AccessDenied {
            /// The key presented.
            key_id: ApiKeyId,
            /// Why: `key_revoked`, `key_expired`, `app_disabled`, `wrong_secret` or `missing_scope`.
            reason: String,
            /// How many requests.
            count: u64,
            /// The first of them.
            first_at: DateTime<Utc>,
            /// The last of them.
            last_at: DateTime<Utc>,
        },
    }
}

/// Why an app command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The name is empty, too long or has control characters.
    #[error("name must be 1 to 200 characters")]
    InvalidName,
    /// The environment is not a plain lowercase name.
    #[error("environment must be 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter")]
    InvalidEnvironment,
    /// A scope is not one Keel knows.
    #[error("scope must be one of flags:read, billing:write, billing:read, audit:write, fleet:write")]
    InvalidScope,
    /// A key needs at least one scope.
    #[error("a key needs at least one scope")]
    NoScopes,
    /// The expiry is not in the future.
    #[error("expires_at must be in the future")]
    InvalidExpiry,
    /// No such app.
    #[error("app not found")]
    NotFound,
    /// An app with this id exists already.
    #[error("app already exists")]
    AlreadyRegistered,
    /// The app is disabled.
    #[error("app is disabled")]
    Disabled,
    /// The app is not disabled.
    #[error("app is not disabled")]
    NotDisabled,
    /// No such key on this app.
    #[error("API key not found")]
    KeyNotFound,
    /// A key with this id exists already.
    #[error("API key already exists")]
    KeyExists,
    /// The app holds the most active keys it may.
    #[error("the app has 20 active keys; revoke one first")]
    TooManyKeys,
    /// A redirect URI is not acceptable, or there are too many.
    #[error(
        "redirect_uris: at most 20, each an absolute https:// URI (http:// only on localhost, 127.0.0.1 or [::1]) of at most 2000 characters, without user info, fragment or wildcard"
    )]
    InvalidRedirectUris,
    /// A post-logout redirect URI is not acceptable, or there are too many.
    #[error(
        "post_logout_redirect_uris: at most 20, each an absolute https:// URI (http:// only on localhost, 127.0.0.1 or [::1]) of at most 2000 characters, without user info, fragment or wildcard"
    )]
    InvalidPostLogoutRedirectUris,
    /// A confidential app was to be made without a stored secret (a caller's bug).
    #[error("a confidential app needs a client secret")]
    SecretRequired,
    /// Only confidential apps have a client secret.
    #[error("the app is a public client: it has no client secret")]
    PublicClient,
}

impl DomainError for AppError {
    fn kind(&self) -> ErrorKind {
        use AppError::*;
        match self {
            InvalidName
            | InvalidEnvironment
            | InvalidScope
            | NoScopes
            | InvalidExpiry
            | InvalidRedirectUris
            | InvalidPostLogoutRedirectUris
            | SecretRequired => ErrorKind::InvalidArgument,
            NotFound | KeyNotFound => ErrorKind::NotFound,
            AlreadyRegistered | KeyExists => ErrorKind::AlreadyExists,
            Disabled | NotDisabled | TooManyKeys | PublicClient => ErrorKind::FailedPrecondition,
        }
    }

    fn code(&self) -> &'static str {
        use AppError::*;
        match self {
            InvalidName => "invalid_name",
            InvalidEnvironment => "invalid_environment",
            InvalidScope => "invalid_scope",
            NoScopes => "no_scopes",
            InvalidExpiry => "invalid_expiry",
            NotFound => "app_not_found",
            AlreadyRegistered => "app_exists",
            Disabled => "app_disabled",
            NotDisabled => "app_not_disabled",
            KeyNotFound => "key_not_found",
            KeyExists => "key_exists",
            TooManyKeys => "too_many_keys",
            InvalidRedirectUris => "invalid_redirect_uris",
            InvalidPostLogoutRedirectUris => "invalid_post_logout_redirect_uris",
            SecretRequired => "client_secret_required",
            PublicClient => "public_client",
        }
    }
}

/// An API key as the app knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The first characters of the secret.
    pub prefix: String,
    /// SHA-256 (hex) of the secret.
    pub secret_hash: String,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl ApiKey {
    /// Whether the key works at `at` (not revoked, not expired). The app must be enabled too.
    pub fn is_active(&self, at: DateTime<Utc>) -> bool {
        !self.revoked && self.expires_at.is_none_or(|end| at < end)
    }
}

/// The managed app aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// Its id, once registered.
    pub id: Option<AppId>,
    /// Display name.
    pub name: String,
    /// Environment.
    pub environment: String,
    /// Whether it is disabled.
    pub disabled: bool,
    /// Its keys, revoked ones included.
    pub keys: BTreeMap<ApiKeyId, ApiKey>,
    /// Its OpenID Connect client settings.
    pub client: ClientSettings,
    /// The id of its current client secret (confidential apps only).
    pub client_secret_id: Option<Uuid>,
}

impl App {
    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
    fn decide(&self, command: AppCommand) -> Result<Option<AppEvent>, AppError> {
        let registered = self.id.is_some();
        let event = match command {
            AppCommand::Register { .. } if registered => return Err(AppError::AlreadyRegistered),
            AppCommand::Register { app_id, name, environment, client, client_secret_id, at } => {
                let (name, environment) = valid(&name, &environment)?;
                let client = ClientSettings::validated(
                    client.redirect_uris,
                    client.post_logout_redirect_uris,
                    client.client_type,
                )?;
                let client_secret_id = secret_for(client.client_type, client_secret_id)?;
                AppEvent::Registered { app_id, name, environment, client, client_secret_id, registered_at: at }
            }
            _ if !registered => return Err(AppError::NotFound),
            AppCommand::Update {
                name,
                environment,
                redirect_uris,
                post_logout_redirect_uris,
                client_type,
                client_secret_id,
            } => {
                let (name, environment) = valid(&name, &environment)?;
                let client_type = client_type.unwrap_or(self.client.client_type);
                let client = ClientSettings::validated(redirect_uris, post_logout_redirect_uris, client_type)?;
                let becomes_confidential =
                    client_type == ClientType::Confidential && self.client.client_type != ClientType::Confidential;
                let client_secret_id =
                    if becomes_confidential { secret_for(client_type, client_secret_id)? } else { None };
                let client = (client != self.client).then_some(client);
                if name == self.name && environment == self.environment && client.is_none() {
                    return Ok(None);
                }
                AppEvent::Updated { name, environment, client, client_secret_id }
            }
            AppCommand::RotateClientSecret { .. } if self.client.client_type != ClientType::Confidential => {
                return Err(AppError::PublicClient);
            }
            AppCommand::RotateClientSecret { secret_id, .. } if self.client_secret_id == Some(secret_id) => {
                return Ok(None);
            }
            AppCommand::RotateClientSecret { secret_id, at } => {
                AppEvent::ClientSecretRotated { secret_id, rotated_at: at }
            }
            AppCommand::Disable if self.disabled => return Err(AppError::Disabled),
            AppCommand::Disable => AppEvent::Disabled {},
            AppCommand::Enable if !self.disabled => return Err(AppError::NotDisabled),
            AppCommand::Enable => AppEvent::Enabled {},
            AppCommand::IssueKey { key_id, prefix, secret_hash, scopes, expires_at, at } => {
                if scopes.is_empty() {
                    return Err(AppError::NoScopes);
                }
                if expires_at.is_some_and(|end| end <= at) {
                    return Err(AppError::InvalidExpiry);
                }
                if self.disabled {
                    return Err(AppError::Disabled);
                }
                if self.keys.contains_key(&key_id) {
                    return Err(AppError::KeyExists);
                }
                if self.keys.values().filter(|k| k.is_active(at)).count() >= MAX_ACTIVE_KEYS {
                    return Err(AppError::TooManyKeys);
                }
                AppEvent::KeyIssued { key_id, prefix, secret_hash, scopes, expires_at, issued_at: at }
            }
            AppCommand::RevokeKey { key_id, at } => match self.keys.get(&key_id) {
                None => return Err(AppError::KeyNotFound),
                Some(key) if key.revoked => return Ok(None),
                Some(_) => AppEvent::KeyRevoked { key_id, revoked_at: at },
            },
            AppCommand::RecordDenials { key_id, reason, count, first_at, last_at } => {
                if !self.keys.contains_key(&key_id) {
                    return Err(AppError::KeyNotFound);
                }
                if count == 0 {
                    return Ok(None);
                }
                AppEvent::AccessDenied { key_id, reason, count, first_at, last_at }
            }
        };
        Ok(Some(event))
    }
}

/// The secret id a client of `client_type` keeps: required for a confidential one, none for a public one.
fn secret_for(client_type: ClientType, secret_id: Option<Uuid>) -> Result<Option<Uuid>, AppError> {
    match client_type {
        ClientType::Confidential => secret_id.map(Some).ok_or(AppError::SecretRequired),
        ClientType::Public => Ok(None),
    }
}

fn valid(name: &str, environment: &str) -> Result<(String, String), AppError> {
    Ok((
        validate::display_name(name).ok_or(AppError::InvalidName)?,
        validate::environment(environment).ok_or(AppError::InvalidEnvironment)?,
    ))
}

impl App {
    /// The state after `event`.
    fn evolve(&mut self, event: AppEvent) {
        match event {
            AppEvent::Registered { app_id, name, environment, client, client_secret_id, .. } => {
                self.id = Some(app_id);
                self.name = name;
                self.environment = environment;
                self.client = client;
                self.client_secret_id = client_secret_id;
            }
            AppEvent::Updated { name, environment, client, client_secret_id } => {
                self.name = name;
                self.environment = environment;
                if let Some(client) = client {
                    if client.client_type == ClientType::Public {
                        self.client_secret_id = None;
                    }
                    self.client = client;
                }
                if client_secret_id.is_some() {
                    self.client_secret_id = client_secret_id;
                }
            }
            AppEvent::ClientSecretRotated { secret_id, .. } => self.client_secret_id = Some(secret_id),
            AppEvent::Disabled {} => self.disabled = true,
            AppEvent::Enabled {} => self.disabled = false,
            AppEvent::KeyIssued { key_id, prefix, secret_hash, scopes, expires_at, .. } => {
                self.keys.insert(key_id, ApiKey { prefix, secret_hash, scopes, expires_at, revoked: false });
            }
            AppEvent::KeyRevoked { key_id, .. } => {
                if let Some(key) = self.keys.get_mut(&key_id) {
                    key.revoked = true;
                }
            }
            AppEvent::AccessDenied { .. } => {}
        }
    }
}

aggregate!(App { TYPE: AGGREGATE_TYPE, command: AppCommand, event: AppEvent, error: AppError });
