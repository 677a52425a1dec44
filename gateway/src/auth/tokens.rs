//! Access tokens (ADR 0009): short-lived JWTs signed with Ed25519 (EdDSA), keys
//! published as a JWKS with an OpenID discovery document, and revocation known to
//! every gateway within a second.
//!
//! Signing keys live in `auth_signing_keys`, the private halves wrapped under the KEK
//! (ADR 0028). `keel keys rotate` adds a key that is
//! published at once but signs only from `signing_from` on, and retires the older
//! keys once every token they signed has expired; meanwhile both verify.
//! Each gateway reloads the keys every few seconds and polls ended sessions every
//! 200 ms, so a revoked session's access tokens are refused (and introspect as
//! inactive) within a second everywhere, while a stateless verifier that only checks
//! signatures accepts them until they expire (`access_ttl`, minutes).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::watch;

use keel_commands::identity_queries;
use keel_commands::kek::{Kek, KeyEncryptionKey};
use keel_commands::sessions::SessionGrant;
use keel_commands::signing_keys::{self, NewSigningKey, SigningKeyRow};

/// How often ended sessions are polled.
const REVOCATION_POLL: Duration = Duration::from_millis(200);
/// How often signing keys are reloaded.
const KEY_RELOAD: Duration = Duration::from_secs(5);
/// Revocations are re-read with this overlap (transactions commit out of start order).
const REVOCATION_OVERLAP_SECONDS: f64 = 10.0;
/// Verified tokens remembered (then the cache starts over).
const VERIFIED_CACHE_LIMIT: usize = 100_000;

/// The claims of a Keel access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: Keel's public URL.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// The user's tenant; absent for platform users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// The user's role.
    pub role: String,
    /// The session.
    pub sid: String,
}

/// The claims of an ID token (ADR 0024).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    /// Issuer: Keel's public URL.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The client (app id).
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// When the user signed in.
    pub auth_time: i64,
    /// The authorization request's nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The browser session (the same for every client it signed in).
    pub sid: String,
    /// The user's tenant; absent for platform users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// The user's e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the e-mail was verified (an invitation or a reset reached it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// How the user authenticated (`pwd`).
    #[serde(default)]
    pub amr: Vec<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Malformed, badly signed, expired, or not for this issuer and audience.
    #[error("invalid token")]
    Invalid,
    /// Its session has ended (logout, revocation, role change, …).
    #[error("session has ended")]
    SessionEnded,
}

struct Keys {
    signing: Option<(String, EncodingKey)>,
    verifying: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
}

/// Issues and verifies access tokens.
pub struct TokenService {
    pool: PgPool,
    kek: Kek,
    issuer: String,
    audience: String,
    access_ttl: chrono::Duration,
    keys: RwLock<Keys>,
    revoked: RwLock<HashMap<String, DateTime<Utc>>>,
    verified: RwLock<HashMap<String, Arc<AccessClaims>>>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// A new Ed25519 key.
fn generate_key() -> NewSigningKey {
    let key = SigningKey::from_bytes(&keel_commands::secret::random_bytes());
    let der = key.to_pkcs8_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default();
    let public = key.verifying_key().to_bytes();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
    let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&Sha256::digest(public)[..12]);
    NewSigningKey { kid, private_pkcs8: der, public_x: x }
}

/// Adds a signing key. It is published at once and signs from `now + publish_ahead`;
/// the keys it replaces retire `retire_after` later (make it at least the access-token
/// lifetime). Returns the new key id.
pub async fn rotate_keys(
    pool: &PgPool,
    kek: &dyn KeyEncryptionKey,
    publish_ahead: Duration,
    retire_after: Duration,
) -> Result<String, sqlx::Error> {
    let key = generate_key();
    let kid = key.kid.clone();
    signing_keys::add(pool, kek, key, publish_ahead, retire_after).await?;
    Ok(kid)
}

/// Creates the first signing key if there is none.
pub async fn ensure_key(pool: &PgPool, kek: &dyn KeyEncryptionKey) -> Result<(), sqlx::Error> {
    signing_keys::ensure(pool, kek, generate_key).await
}

impl TokenService {
    /// A token service for `issuer` (Keel's public URL) and `audience`; creates the first
    /// key if needed (wrapped under `kek`) and loads keys and ended sessions.
    pub async fn new(
        pool: PgPool,
        kek: Kek,
        issuer: &str,
        audience: &str,
        access_ttl: chrono::Duration,
    ) -> Result<Self, sqlx::Error> {
        ensure_key(&pool, kek.as_ref()).await?;
        let service = Self {
            pool,
            kek,
            issuer: issuer.trim_end_matches('/').to_string(),
            audience: audience.to_string(),
            access_ttl,
            keys: RwLock::new(Keys { signing: None, verifying: HashMap::new(), jwks: serde_json::json!({"keys": []}) }),
            revoked: RwLock::new(HashMap::new()),
            verified: RwLock::new(HashMap::new()),
        };
        service.reload_keys().await?;
        let all = identity_queries::revoked_sessions(&service.pool).await?;
        service.revoked.write().map_err(|_| poisoned())?.extend(all);
        Ok(service)
    }

    /// The issuer (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Access-token lifetime.
    pub fn access_ttl(&self) -> chrono::Duration {
        self.access_ttl
    }

    /// Keeps keys and revocations current until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut since: Option<DateTime<Utc>> = None;
        let mut last_keys = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(REVOCATION_POLL) => {}
            }
            match self.poll_revocations(since).await {
                Ok(now) => since = Some(now),
                Err(err) => tracing::warn!(error = %err, "revocation poll failed"),
            }
            if last_keys.elapsed() >= KEY_RELOAD {
                last_keys = tokio::time::Instant::now();
                if let Err(err) = self.reload_keys().await {
                    tracing::warn!(error = %err, "signing key reload failed");
                }
            }
        }
    }

    async fn poll_revocations(&self, since: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, sqlx::Error> {
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&self.pool).await?;
        let since = since.unwrap_or(now);
        let ended = identity_queries::revoked_since(&self.pool, since, REVOCATION_OVERLAP_SECONDS).await?;
        let mut revoked = self.revoked.write().map_err(|_| poisoned())?;
        revoked.extend(ended);
        revoked.retain(|_, expires| *expires > now - chrono::Duration::minutes(1));
        Ok(now)
    }

    /// Reloads the signing keys: the public halves, and the private half of the signing
    /// key when it changed (unwrapped with the KEK).
    pub async fn reload_keys(&self) -> Result<(), sqlx::Error> {
        let rows = signing_keys::active(&self.pool).await?;
        let loaded = self.keys.read().map_err(|_| poisoned())?.signing.clone();
        let mut keys = Keys { signing: None, verifying: HashMap::new(), jwks: serde_json::Value::Null };
        let mut published = Vec::new();
        for SigningKeyRow { kid, public_x: x, signs } in rows {
            if signs && keys.signing.is_none() {
                keys.signing = match &loaded {
                    Some((loaded_kid, key)) if *loaded_kid == kid => Some((kid.clone(), key.clone())),
                    _ => {
                        let der = signing_keys::private_key(&self.pool, self.kek.as_ref(), &kid).await?;
                        Some((kid.clone(), EncodingKey::from_ed_der(&der)))
                    }
                };
            }
            if let Ok(decoding) = DecodingKey::from_ed_components(&x) {
                keys.verifying.insert(kid.clone(), decoding);
            }
            published.push(serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"
            }));
        }
        keys.jwks = serde_json::json!({ "keys": published });
        let retired = {
            let mut current = self.keys.write().map_err(|_| poisoned())?;
            let retired = current.verifying.keys().any(|kid| !keys.verifying.contains_key(kid));
            *current = keys;
            retired
        };
        // A retired key's tokens must stop verifying: forget what was verified with it.
        if retired {
            self.verified.write().map_err(|_| poisoned())?.clear();
        }
        Ok(())
    }

    /// The JSON Web Key Set.
    pub fn jwks(&self) -> serde_json::Value {
        self.keys.read().map(|k| k.jwks.clone()).unwrap_or_default()
    }

    /// The OpenID Connect discovery document (ADR 0024).
    pub fn discovery(&self) -> serde_json::Value {
        let base = &self.issuer;
        serde_json::json!({
            "issuer": base,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "authorization_endpoint": format!("{base}/v1/auth/authorize"),
            "token_endpoint": format!("{base}/v1/auth/token"),
            "userinfo_endpoint": format!("{base}/v1/auth/userinfo"),
            "end_session_endpoint": format!("{base}/v1/auth/end-session"),
            "introspection_endpoint": format!("{base}/v1/auth/introspect"),
            "revocation_endpoint": format!("{base}/v1/auth/logout"),
            "scopes_supported": ["openid", "email", "profile", "offline_access"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "prompt_values_supported": ["none", "login"],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "tid", "email",
                "email_verified", "amr", "role"
            ],
            "authorization_response_iss_parameter_supported": true,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
        })
    }

    /// Signs an ID token (OpenID Connect Core §2) with the access tokens' key.
    pub fn issue_id_token(&self, claims: &IdClaims) -> Option<String> {
        let keys = self.keys.read().ok()?;
        let (kid, key) = keys.signing.as_ref()?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, key).ok()
    }

    /// The claims of an ID token Keel signed (for `id_token_hint`): signature by a
    /// published key and issuer; its expiry does not matter.
    pub fn verify_id_token_hint(&self, token: &str) -> Option<IdClaims> {
        if token.len() > 4096 {
            return None;
        }
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        let keys = self.keys.read().ok()?;
        let key = keys.verifying.get(&kid)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["iss", "sub", "aud"]);
        jsonwebtoken::decode::<IdClaims>(token, key, &validation).map(|d| d.claims).ok()
    }

    /// Signs an access token for `grant`; returns it with its lifetime in seconds.
    pub fn issue(&self, grant: &SessionGrant) -> Option<(String, i64)> {
        let now = Utc::now();
        let exp = (now + self.access_ttl).min(grant.expires_at);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: grant.user_id.clone(),
            aud: self.audience.clone(),
            exp: exp.timestamp(),
            iat: now.timestamp(),
            tid: grant.tenant_id.clone(),
            role: grant.role.as_str().to_string(),
            sid: grant.session_id.clone(),
        };
        let keys = self.keys.read().ok()?;
        let (kid, key) = keys.signing.as_ref()?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        header.typ = Some("at+jwt".into());
        let token = jsonwebtoken::encode(&header, &claims, key).ok()?;
        Some((token, (exp - now).num_seconds().max(0)))
    }

    /// Verifies an access token: signature by a published key, issuer, audience, expiry,
    /// and that its session has not ended.
    pub fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, TokenError> {
        let cached = self.verified.read().ok().and_then(|c| c.get(token).cloned());
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature(token)?);
                if let Ok(mut cache) = self.verified.write() {
                    if cache.len() >= VERIFIED_CACHE_LIMIT {
                        cache.clear();
                    }
                    cache.insert(token.to_string(), claims.clone());
                }
                claims
            }
        };
        if claims.exp <= Utc::now().timestamp() {
            return Err(TokenError::Invalid);
        }
        if self.is_ended(&claims.sid) {
            return Err(TokenError::SessionEnded);
        }
        Ok(claims)
    }

    /// Whether the session is known to have ended.
    pub fn is_ended(&self, session_id: &str) -> bool {
        self.revoked.read().map(|r| r.contains_key(session_id)).unwrap_or(true)
    }

    fn verify_signature(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > 4096 {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let keys = self.keys.read().map_err(|_| TokenError::Invalid)?;
        let key = keys.verifying.get(&kid).ok_or(TokenError::Invalid)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<AccessClaims>(token, key, &validation).map(|d| d.claims).map_err(|_| TokenError::Invalid)
    }
}

fn poisoned() -> sqlx::Error {
    sqlx::Error::Protocol("lock poisoned".into())
}
