//! API-key authentication for managed apps (ADR 0010). Every gateway holds the whole
//! key index in memory and reloads it when `auth_key_state.version` moves, which the
//! append that disables an app or revokes a key bumps in its own transaction; a
//! check costs one SHA-256 and a map lookup. Refusals of known keys are coalesced
//! per key and reason and recorded as `app.access_denied` events.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use keel_commands::apps::{AppCommands, key_id_of};
use keel_commands::bus::CommandContext;
use keel_commands::key_index::{self, IndexedKey};
use keel_domain::access::Principal;
use keel_domain::app::{AppCommand, Scope};
use keel_domain::envelope::Actor;
use keel_domain::ids::{ApiKeyId, AppId};

use super::error::AuthError;

/// How often the gateway asks whether the key index changed.
pub const POLL_EVERY: Duration = Duration::from_millis(200);
/// How often coalesced refusals are written.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// An unknown but well-formed key triggers a reload at most this often.
const MISS_RELOAD_GAP: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
struct KeyEntry {
    app_id: String,
    digest: [u8; 32],
    scopes: BTreeSet<Scope>,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
    app_disabled: bool,
}

#[derive(Debug, Default)]
struct KeyTable {
    version: Option<i64>,
    keys: HashMap<String, KeyEntry>,
}

#[derive(Debug)]
struct Pending {
    count: u64,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
}

/// The in-memory key index of one gateway.
#[derive(Debug)]
pub struct ApiKeys {
    pool: PgPool,
    table: RwLock<Arc<KeyTable>>,
    last_miss_reload: tokio::sync::Mutex<Option<Instant>>,
    denials: Mutex<HashMap<(String, String, &'static str), Pending>>,
}

impl ApiKeys {
    /// An empty index on `pool`; the first check or poll loads it.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            table: RwLock::new(Arc::new(KeyTable::default())),
            last_miss_reload: tokio::sync::Mutex::new(None),
            denials: Mutex::new(HashMap::new()),
        }
    }

    fn snapshot(&self) -> Arc<KeyTable> {
        self.table.read().map(|t| Arc::clone(&t)).unwrap_or_default()
    }

    /// The principal of an API key, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let key_id = key_id_of(token).ok_or(AuthError::Invalid)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut table = self.snapshot();
        if !table.keys.contains_key(key_id.as_str()) {
            self.reload_after_miss().await?;
            table = self.snapshot();
        }
        let Some(entry) = table.keys.get(key_id.as_str()) else {
            tracing::info!(key_id = %key_id, "unknown API key");
            return Err(AuthError::Invalid);
        };
        let refusal = if !bool::from(entry.digest.ct_eq(&digest)) {
            Some(("wrong_secret", AuthError::Invalid))
        } else if entry.revoked {
            Some(("key_revoked", AuthError::KeyRevoked))
        } else if entry.expires_at.is_some_and(|end| Utc::now() >= end) {
            Some(("key_expired", AuthError::KeyExpired))
        } else if entry.app_disabled {
            Some(("app_disabled", AuthError::AppDisabled))
        } else {
            None
        };
        if let Some((reason, error)) = refusal {
            self.note(&entry.app_id, key_id.as_str(), reason);
            return Err(error);
        }
        Ok(Principal::App { id: entry.app_id.clone(), key_id: key_id.to_string(), scopes: entry.scopes.clone() })
    }

    /// The principal of key `key_id` if it still works (for streams opened with a
    /// stream token rather than the key itself).
    pub fn active(&self, key_id: &str) -> Option<Principal> {
        let table = self.snapshot();
        let entry = table.keys.get(key_id)?;
        let usable = !entry.revoked && !entry.app_disabled && entry.expires_at.is_none_or(|end| Utc::now() < end);
        usable.then(|| Principal::App {
            id: entry.app_id.clone(),
            key_id: key_id.to_string(),
            scopes: entry.scopes.clone(),
        })
    }

    /// Records that `principal`, if an app, was refused an action its key's scopes lack.
    pub fn note_missing_scope(&self, principal: &Principal) {
        if let Principal::App { id, key_id, .. } = principal {
            self.note(id, key_id, "missing_scope");
        }
    }

    fn note(&self, app_id: &str, key_id: &str, reason: &'static str) {
        tracing::info!(app_id, key_id, reason, "API key refused");
        let now = Utc::now();
        if let Ok(mut denials) = self.denials.lock() {
            denials
                .entry((app_id.to_string(), key_id.to_string(), reason))
                .and_modify(|p| {
                    p.count += 1;
                    p.last_at = now;
                })
                .or_insert(Pending { count: 1, first_at: now, last_at: now });
        }
    }

    async fn reload_after_miss(&self) -> Result<(), AuthError> {
        let mut last = self.last_miss_reload.lock().await;
        if last.is_some_and(|at| at.elapsed() < MISS_RELOAD_GAP) {
            return Ok(());
        }
        *last = Some(Instant::now());
        self.refresh().await.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "API key index could not be loaded");
            AuthError::Unavailable
        })
    }

    /// Reloads the index if its version moved; returns whether it did.
    pub async fn refresh(&self) -> Result<bool, sqlx::Error> {
        let version = key_index::version(&self.pool).await?;
        if self.snapshot().version == Some(version) {
            return Ok(false);
        }
        // Rows read after the version are at least as new as it.
        let rows = key_index::keys(&self.pool).await?;
        let mut keys = HashMap::with_capacity(rows.len());
        for IndexedKey { key_id, app_id, secret_hash: hash, scopes, expires_at, revoked, app_disabled } in rows {
            let Some(digest) = hex::decode(&hash).ok().and_then(|d| <[u8; 32]>::try_from(d).ok()) else {
                tracing::error!(key_id, "API key with a malformed hash ignored");
                continue;
            };
            let scopes = scopes.iter().filter_map(|s| s.parse().ok()).collect();
            keys.insert(key_id, KeyEntry { app_id, digest, scopes, expires_at, revoked, app_disabled });
        }
        if let Ok(mut table) = self.table.write() {
            *table = Arc::new(KeyTable { version: Some(version), keys });
        }
        Ok(true)
    }

    /// Polls for index changes and writes coalesced refusals, until `shutdown` fires.
    pub async fn run(self: Arc<Self>, commands: Arc<AppCommands>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut last_flush = Instant::now();
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "API key index poll failed");
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                last_flush = Instant::now();
                self.flush(&commands).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = shutdown.changed() => {
                    self.flush(&commands).await;
                    return;
                }
            }
        }
    }

    /// Writes the refusals gathered since the last flush.
    pub async fn flush(&self, commands: &AppCommands) {
        let pending: Vec<_> = match self.denials.lock() {
            Ok(mut denials) => denials.drain().collect(),
            Err(_) => return,
        };
        for ((app_id, key_id, reason), p) in pending {
            let (Ok(app), Ok(key)) = (app_id.parse::<AppId>(), key_id.parse::<ApiKeyId>()) else { continue };
            let id = uuid::Uuid::now_v7().to_string();
            let ctx = CommandContext::new(Actor::system("api-key-auth"), id.clone(), id);
            let command = AppCommand::RecordDenials {
                key_id: key,
                reason: reason.to_string(),
                count: p.count,
                first_at: p.first_at,
                last_at: p.last_at,
            };
            if let Err(e) = commands.record_denials(&ctx, &app, command).await {
                tracing::warn!(app_id, code = %e.code, "refusals could not be recorded");
            }
        }
    }
}
