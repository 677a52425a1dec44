//! Authentication: bearer credentials to principals. Users present access tokens
//! (JWTs, see `tokens`); the bootstrap operator token that `make up` creates on
//! first start works until the first operator account exists (`keel operator create`).
//! Managed apps present API keys (`keel_ak_…`, see `api_keys`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use keel_commands::operator_credentials;
use keel_domain::access::{Principal, TenantRole};
use keel_domain::directory::UserRole;

pub mod api_keys;
mod error;
pub mod refusals;
pub mod tokens;

pub use error::AuthError;

use api_keys::ApiKeys;
use tokens::{TokenError, TokenService};

/// How long a verified credential is trusted without asking the database again.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Prefix of operator tokens (so secret scanners can find leaked ones).
pub const OPERATOR_TOKEN_PREFIX: &str = "keel_op_";

/// Turns bearer credentials into principals.
#[derive(Debug)]
pub struct Authenticator {
    pool: PgPool,
    tokens: Arc<TokenService>,
    api_keys: Arc<ApiKeys>,
    audit: keel_commands::audit::AuditLog,
    refusals: Arc<refusals::AnonymousRefusals>,
    cache: RwLock<HashMap<String, (Principal, Instant)>>,
}

/// The token in an `authorization` header value, if it is a bearer credential.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    keel_commands::secret::digest(token)
}

/// A fresh random operator token (256 bits).
pub fn new_operator_token() -> String {
    keel_commands::secret::random_token(OPERATOR_TOKEN_PREFIX)
}

impl Authenticator {
    /// An authenticator for operator tokens in `pool` and access tokens of `tokens`.
    pub fn new(pool: PgPool, tokens: Arc<TokenService>) -> Self {
        Self {
            api_keys: Arc::new(ApiKeys::new(pool.clone())),
            audit: keel_commands::audit::AuditLog::new(pool.clone()),
            refusals: Arc::new(refusals::AnonymousRefusals::new(
                keel_commands::audit::AuditLog::new(pool.clone()),
                refusals::DEFAULT_WINDOW,
                refusals::DEFAULT_MAX_KEYS,
            )),
            pool,
            tokens,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The audit trail every authenticated (or refused) call is recorded in.
    pub fn audit(&self) -> &keel_commands::audit::AuditLog {
        &self.audit
    }

    /// Where refusals of unauthenticated requests go (coalesced, bounded, platform chain).
    pub fn refusals(&self) -> &Arc<refusals::AnonymousRefusals> {
        &self.refusals
    }

    /// The access tokens.
    pub fn tokens(&self) -> &Arc<TokenService> {
        &self.tokens
    }

    /// The managed apps' API keys.
    pub fn api_keys(&self) -> &Arc<ApiKeys> {
        &self.api_keys
    }

    /// The principal behind an `authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer(header).ok_or(AuthError::Missing)?;
        if token.starts_with(keel_commands::apps::KEY_PREFIX) {
            return self.api_keys.verify(token).await;
        }
        if !token.starts_with(OPERATOR_TOKEN_PREFIX) {
            return self.access_token(token).map(|(principal, _)| principal);
        }
        if token.len() > 200 {
            return Err(AuthError::Invalid);
        }
        let hash = hash_token(token);
        if let Some((principal, at)) = self.cache.read().ok().and_then(|c| c.get(&hash).cloned())
            && at.elapsed() < CACHE_TTL
        {
            return Ok(principal);
        }
        let id = operator_credentials::operator_id(&self.pool, &hash).await.map_err(|e| {
            tracing::error!(error = %e, "credential lookup failed");
            AuthError::Unavailable
        })?;
        let principal = Principal::Operator { id: id.ok_or(AuthError::Invalid)? };
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            cache.insert(hash, (principal.clone(), Instant::now()));
        }
        Ok(principal)
    }
}

impl Authenticator {
    /// The principal and session of an access token.
    pub fn access_token(&self, token: &str) -> Result<(Principal, String), AuthError> {
        let claims = self.tokens.verify(token).map_err(|e| match e {
            TokenError::Invalid => AuthError::Invalid,
            TokenError::SessionEnded => AuthError::SessionEnded,
        })?;
        let role: UserRole = claims.role.parse().map_err(|_| AuthError::Invalid)?;
        let id = claims.sub.clone();
        let principal = match (role, &claims.tid) {
            (UserRole::Operator, None) => Principal::Operator { id },
            (UserRole::Auditor, None) => Principal::Auditor { id },
            (UserRole::Owner | UserRole::Admin | UserRole::User, Some(tid)) => Principal::TenantUser {
                id,
                tenant_id: tid.parse().map_err(|_| AuthError::Invalid)?,
                role: match role {
                    UserRole::Owner => TenantRole::Owner,
                    UserRole::Admin => TenantRole::Admin,
                    _ => TenantRole::User,
                },
            },
            _ => return Err(AuthError::Invalid),
        };
        Ok((principal, claims.sid.clone()))
    }
}

/// The agent a health report comes from: an API key's app, else the id the caller gives.
pub fn agent_of(principal: &Principal, requested: &str) -> String {
    match principal {
        Principal::App { id, .. } => id.clone(),
        _ => requested.to_string(),
    }
}

/// Creates a platform operator or auditor with a password; returns the user id.
pub async fn create_platform_user(pool: &PgPool, email: &str, password: &str, role: &str) -> Result<String, String> {
    use keel_commands::bus::CommandContext;
    use keel_domain::envelope::Actor;
    let users = keel_commands::users::UserCommands::new(
        pool.clone(),
        keel_commands::passwords::Passwords::per_core(),
        None,
        "http://localhost",
    );
    let key = uuid::Uuid::now_v7().to_string();
    let ctx = CommandContext::new(Actor::system("keel-cli"), key.clone(), key);
    let created = users.create_platform_user(&ctx, email, password, role).await.map_err(|e| e.message)?;
    Ok(created.user_id)
}

/// Retires the bootstrap operator credential (once an operator account exists);
/// returns whether it was still active.
pub async fn retire_bootstrap_credential(pool: &PgPool) -> Result<bool, sqlx::Error> {
    operator_credentials::retire_bootstrap(pool).await
}

/// Creates the bootstrap operator credential if none exists; returns the token only
/// when it was created now (it is never stored in clear, so it cannot be shown again).
pub async fn create_bootstrap_credential(owner: &PgPool) -> Result<Option<String>, sqlx::Error> {
    let token = new_operator_token();
    let created = operator_credentials::create_bootstrap(owner, &hash_token(&token)).await?;
    Ok(created.then_some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_headers() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer   abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let (a, b) = (new_operator_token(), new_operator_token());
        assert_ne!(a, b);
        assert!(a.starts_with(OPERATOR_TOKEN_PREFIX));
        assert_eq!(hash_token(&a).len(), 64);
    }

    #[test]
    fn an_api_key_reports_as_its_app() {
        let app = Principal::App { id: "app_1".into(), key_id: "key_1".into(), scopes: Default::default() };
        assert_eq!(agent_of(&app, "spoofed"), "app_1");
        assert_eq!(agent_of(&Principal::Operator { id: "op".into() }, "edge-7"), "edge-7");
    }
}
