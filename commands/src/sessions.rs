//! Sessions: password login, refresh-token rotation with reuse detection, and
//! revocation. Opening and revoking are events of the session aggregate; the
//! identity index (ADR 0009) holds each session's state, which refreshes check.
//!
//! A refresh token is `keel_rt_<session id>.<generation>.<mac>`, the MAC an
//! HMAC-SHA256 under a server key. Each refresh moves the session to the next
//! generation; presenting an earlier generation (a genuine but used token) revokes
//! the whole session.

use std::net::IpAddr;

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::PgPool;

use keel_domain::audit::AuditInput;
use keel_domain::directory::UserRole;
use keel_domain::envelope::{Actor, ActorType};
use keel_domain::ids::{SessionId, TenantId, UserId};
use keel_domain::login_guard::ThrottledSubject;
use keel_domain::session::{ParentSession, RevokeReason, Session, SessionCommand};
use keel_domain::validate;

use crate::authorization_codes::{self as codes, NewCode};
use crate::bus::{self, CommandContext, CommandError, Framework};
use crate::command_scope;
use crate::passwords::{PasswordError, Passwords};
use crate::secret;
use crate::throttle::{Throttle, ThrottlePolicy, account_key, address_key};

/// Prefix of refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "keel_rt_";
const REFRESH_KEY_NAME: &str = "refresh_token_mac";

/// Why a login failed. The first three are all a caller learns about credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Unknown tenant, unknown e-mail, no password set, or a wrong password.
    #[error("invalid e-mail or password")]
    InvalidCredentials,
    /// The password was right but the tenant is suspended or being deleted.
    #[error("the tenant is {0}; sign-in is disabled until it is reactivated")]
    TenantNotActive(&'static str),
    /// The password was right but the account is disabled.
    #[error("this account is disabled")]
    UserDisabled,
    /// Too many failures for this account or client address.
    #[error("too many failed attempts; retry later")]
    Throttled {
        /// Seconds until the lock ends.
        retry_after: u64,
    },
    /// A dependency failed; retry.
    #[error("the service is temporarily unavailable; retry")]
    Unavailable,
    /// Too many sign-ins at once (the hashing queue is full); retry shortly.
    #[error("too many sign-ins at once; retry in {retry_after} s")]
    Busy {
        /// Seconds to wait.
        retry_after: u32,
    },
}

/// Why a refresh failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// Malformed, forged, expired, revoked, or already used (which also ends the session).
    #[error("the refresh token is invalid or expired")]
    InvalidGrant,
    /// A dependency failed; retry.
    #[error("the service is temporarily unavailable; retry")]
    Unavailable,
}

/// An open session and the refresh token of its current generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGrant {
    /// The session.
    pub session_id: String,
    /// Its user.
    pub user_id: String,
    /// The user's tenant (`None` for platform users).
    pub tenant_id: Option<String>,
    /// The user's role when the session opened (a role change ends the session).
    pub role: UserRole,
    /// The refresh token to present next.
    pub refresh_token: String,
    /// When the session ends at the latest.
    pub expires_at: DateTime<Utc>,
}

/// A client's session opened by an authorization code exchange, and what the code
/// carried (for the ID token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeGrant {
    /// The client's session and its refresh token.
    pub grant: SessionGrant,
    /// The code's scope, nonce, browser session and user.
    pub redeemed: codes::Redeemed,
}

/// An open browser session (the `keel_session` cookie's).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BrowserSession {
    /// The session.
    pub session_id: String,
    /// Its user.
    pub user_id: String,
    /// The user's tenant (`None` for platform users).
    pub tenant_id: Option<String>,
    /// That tenant's domain.
    pub tenant_domain: Option<String>,
    /// The user's role.
    pub role: String,
    /// When the user signed in (`auth_time`).
    pub opened_at: DateTime<Utc>,
    /// When it ends at the latest.
    pub expires_at: DateTime<Utc>,
}

/// A session to open.
struct Opening<'a> {
    session_id: SessionId,
    user_id: &'a str,
    tenant_id: Option<String>,
    role: UserRole,
    expires_at: DateTime<Utc>,
    parent: Option<ParentSession>,
}

/// What introspection tells about a usable refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshInfo {
    /// The session.
    pub session_id: String,
    /// Its user.
    pub user_id: String,
    /// The user's tenant.
    pub tenant_id: Option<String>,
    /// The user's role.
    pub role: UserRole,
    /// When the session ends at the latest.
    pub expires_at: DateTime<Utc>,
}

/// Login and session commands.
pub struct Sessions {
    pool: PgPool,
    rotation: PgPool,
    sessions: Framework<Session>,
    passwords: Passwords,
    refresh_key: [u8; 32],
    ttl: Duration,
    throttle: Throttle,
}

/// What a login needs, in one statement: $1 both throttle subjects, $2 the account's,
/// $3 the tenant domain (NULL for platform users), $4 the e-mail.
const LOOKUP: &str = "
    WITH tenant AS (SELECT tenant_id, status FROM auth_tenants WHERE domain = $3)
    SELECT
        (SELECT EXTRACT(EPOCH FROM max(locked_until) - now())::float8 FROM login_throttle
          WHERE subject = ANY($1) AND locked_until > now()) AS locked_for,
        EXISTS (SELECT 1 FROM login_throttle WHERE subject = $2) AS account_failures,
        (SELECT tenant_id FROM tenant) AS tenant_id,
        (SELECT status FROM tenant) AS tenant_status,
        u.user_id, u.role, u.status, c.hash
    FROM (SELECT 1) AS one
    LEFT JOIN auth_users u
           ON COALESCE(u.tenant_id, '') = COALESCE((SELECT tenant_id FROM tenant), CASE WHEN $3::text IS NULL THEN '' END)
          AND u.email_key = lower($4)
    LEFT JOIN auth_credentials c ON c.credential_id = u.credential_id";

#[derive(sqlx::FromRow)]
struct Lookup {
    locked_for: Option<f64>,
    account_failures: bool,
    tenant_id: Option<String>,
    tenant_status: Option<String>,
    user_id: Option<String>,
    role: Option<String>,
    status: Option<String>,
    hash: Option<String>,
}

struct Account {
    user_id: String,
    role: String,
    status: String,
    hash: Option<String>,
}

impl Sessions {
    /// Sessions on `pools` lasting `ttl` at most; loads (or creates) the refresh-token key,
    /// wrapped under `kek`.
    pub async fn new(
        pools: impl Into<crate::pools::Pools>,
        kek: &dyn crate::kek::KeyEncryptionKey,
        passwords: Passwords,
        ttl: Duration,
        throttle: ThrottlePolicy,
    ) -> Result<Self, sqlx::Error> {
        let pools: crate::pools::Pools = pools.into();
        let crate::pools::Pools { durable: pool, relaxed, .. } = pools.clone();
        let refresh_key = secret::server_secret(&pool, kek, REFRESH_KEY_NAME).await?;
        Ok(Self {
            rotation: relaxed,
            sessions: bus::framework(&pools),
            passwords,
            refresh_key,
            ttl,
            throttle: Throttle::new(&pools, throttle),
            pool,
        })
    }

    /// Password login: `(domain, email, password)`, where `domain` names the tenant and
    /// `None` signs in a platform user. `success_record` makes the audit record of a
    /// sign-in from the user, tenant and role; it commits in the session's transaction.
    pub async fn login(
        &self,
        correlation_id: &str,
        client: Option<IpAddr>,
        (domain, email, password): (Option<&str>, &str, &str),
        success_record: impl FnOnce(&str, Option<String>, UserRole) -> AuditInput + Send,
    ) -> Result<SessionGrant, LoginError> {
        let unavailable = |e: sqlx::Error| {
            tracing::error!(error = %e, "login lookup failed");
            LoginError::Unavailable
        };
        // The account however its tenant or e-mail is spelled; the address by its network.
        let subjects = [format!("account:{}", account_key(domain, email)), format!("address:{}", address_key(client))];
        // One round trip: the locks of both subjects, the tenant, the account and its hash.
        let domain = domain.map(|raw| validate::domain(raw).unwrap_or_default());
        let found: Lookup = sqlx::query_as(LOOKUP)
            .bind(&subjects[..])
            .bind(&subjects[0])
            .bind(domain.as_deref())
            .bind(validate::email(email).unwrap_or_default())
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        if let Some(seconds) = found.locked_for {
            return Err(LoginError::Throttled { retry_after: seconds.ceil().max(1.0) as u64 });
        }
        let tenant = match (&domain, found.tenant_id, found.tenant_status) {
            (None, _, _) => Some((String::new(), "active".to_string())),
            (Some(_), Some(id), Some(status)) => Some((id, status)),
            _ => None,
        };
        let account = found.user_id.zip(found.role).zip(found.status).map(|((user_id, role), status)| Account {
            user_id,
            role,
            status,
            hash: found.hash,
        });
        let hash = account.as_ref().and_then(|a| a.hash.as_deref());
        let matches = self.passwords.verify(password, hash).await.map_err(|err| match err {
            PasswordError::Busy { retry_after } => LoginError::Busy { retry_after },
            _ => LoginError::Unavailable,
        })?;
        let (Some(account), Some((tenant_id, tenant_status)), true) = (account, tenant, matches) else {
            let failed =
                [(subjects[0].as_str(), ThrottledSubject::Account), (subjects[1].as_str(), ThrottledSubject::Address)];
            self.throttle.record_failure(correlation_id, &failed).await.map_err(unavailable)?;
            return Err(LoginError::InvalidCredentials);
        };
        match tenant_status.as_str() {
            "active" => {}
            "suspended" => return Err(LoginError::TenantNotActive("suspended")),
            _ => return Err(LoginError::TenantNotActive("being deleted")),
        }
        if account.status != "active" {
            return Err(LoginError::UserDisabled);
        }
        if found.account_failures {
            self.throttle.clear(&subjects[0]).await.map_err(unavailable)?;
        }
        let role: UserRole = account.role.parse().map_err(|_| LoginError::Unavailable)?;
        let tenant_id = (!tenant_id.is_empty()).then_some(tenant_id);
        let session_id = SessionId::from_ulid(ulid::Ulid::new());
        let expires_at = Utc::now() + self.ttl;
        // The sign-in's audit record commits with the session's opening (ADR 0016): one
        // durable commit per sign-in, and no session without its record.
        let record = success_record(&account.user_id, tenant_id.clone(), role);
        let opening = Opening { session_id, user_id: &account.user_id, tenant_id, role, expires_at, parent: None };
        command_scope::audited(record, self.open(correlation_id, opening)).await.0
    }

    async fn open(&self, correlation_id: &str, opening: Opening<'_>) -> Result<SessionGrant, LoginError> {
        let Opening { session_id, user_id, tenant_id, role, expires_at, parent } = opening;
        let user: UserId = user_id.parse().map_err(|_| LoginError::Unavailable)?;
        let tenant: Option<TenantId> = tenant_id.as_deref().and_then(|t| t.parse().ok());
        let ctx = CommandContext::new(
            Actor { kind: ActorType::User, id: user_id.to_string() },
            correlation_id.to_string(),
            session_id.to_string(),
        );
        let cmd = SessionCommand::Open {
            session_id: session_id.clone(),
            user_id: user,
            tenant_id: tenant,
            role,
            expires_at,
            at: ctx.received_at,
            parent,
        };
        bus::execute(&self.sessions, session_id.as_str(), cmd, ctx.metadata(tenant_id.as_deref()))
            .await
            .map_err(|_| LoginError::Unavailable)?;
        Ok(SessionGrant {
            refresh_token: self.refresh_token(session_id.as_str(), 0),
            session_id: session_id.to_string(),
            user_id: user_id.to_string(),
            tenant_id,
            role,
            expires_at,
        })
    }

    /// Rotates a refresh token: returns the session with the next generation's token.
    /// A used token ends the session. `client` is the OpenID client presenting it: a
    /// client's session (ADR 0024) rotates only for that client, a sign-in's only without one.
    pub async fn refresh(
        &self,
        correlation_id: &str,
        token: &str,
        client: Option<&str>,
    ) -> Result<SessionGrant, RefreshError> {
        let (session_id, generation) = self.parse_refresh_token(token).ok_or(RefreshError::InvalidGrant)?;
        let unavailable = |e: sqlx::Error| {
            tracing::error!(error = %e, "refresh failed");
            RefreshError::Unavailable
        };
        let rotated: Option<(String, Option<String>, String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE auth_sessions SET refresh_generation = refresh_generation + 1, refreshed_at = now()
             WHERE session_id = $1 AND refresh_generation = $2 AND revoked_at IS NULL AND expires_at > now()
               AND client_id IS NOT DISTINCT FROM $3
             RETURNING user_id, tenant_id, role, expires_at",
        )
        .bind(&session_id)
        .bind(generation)
        .bind(client)
        .fetch_optional(&self.rotation)
        .await
        .map_err(unavailable)?;
        if let Some((user_id, tenant_id, role, expires_at)) = rotated {
            return Ok(SessionGrant {
                refresh_token: self.refresh_token(&session_id, generation + 1),
                role: role.parse().map_err(|_| RefreshError::Unavailable)?,
                session_id,
                user_id,
                tenant_id,
                expires_at,
            });
        }
        let state: Option<(i64, bool, String, Option<String>)> = sqlx::query_as(
            "SELECT refresh_generation, revoked_at IS NOT NULL, user_id, tenant_id FROM auth_sessions WHERE session_id = $1",
        )
        .bind(&session_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        if let Some((current, false, user_id, tenant_id)) = state
            && generation < current
        {
            tracing::warn!(session_id = %session_id, "refresh token reused; ending the session");
            let actor = Actor { kind: ActorType::User, id: user_id };
            let ctx = CommandContext::new(actor, correlation_id.to_string(), format!("reuse:{session_id}"));
            self.revoke_as(&ctx, &session_id, tenant_id.as_deref(), RevokeReason::RefreshTokenReuse)
                .await
                .map_err(|_| RefreshError::Unavailable)?;
        }
        Err(RefreshError::InvalidGrant)
    }

    /// Stores a new authorization code for the browser session in `new` (ADR 0024).
    pub async fn issue_code(&self, new: &NewCode<'_>) -> Result<String, sqlx::Error> {
        codes::issue(&self.pool, new).await
    }

    /// Exchanges an authorization code (ADR 0024): consumes it if it was issued to
    /// `client_id` for `redirect_uri` with the PKCE challenge of `verifier`, and opens the
    /// client's session under the browser session. A code presented again ends the
    /// session its first exchange opened.
    pub async fn exchange_code(
        &self,
        correlation_id: &str,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<CodeGrant, RefreshError> {
        let unavailable = |e: sqlx::Error| {
            tracing::error!(error = %e, "code exchange failed");
            RefreshError::Unavailable
        };
        let challenge = codes::s256(verifier).ok_or(RefreshError::InvalidGrant)?;
        let session_id = SessionId::from_ulid(ulid::Ulid::new());
        let redeemed = codes::redeem(&self.pool, code, client_id, redirect_uri, &challenge, session_id.as_str())
            .await
            .map_err(unavailable)?;
        let Some(redeemed) = redeemed else {
            if let Some(issued) = codes::mark_replayed(&self.pool, code).await.map_err(unavailable)? {
                tracing::warn!(session_id = %issued, "authorization code replayed; ending what it issued");
                self.end_replayed(correlation_id, &issued).await?;
            }
            return Err(RefreshError::InvalidGrant);
        };
        let parent: keel_domain::ids::SessionId = redeemed.session_id.parse().map_err(|_| RefreshError::Unavailable)?;
        let opening = Opening {
            session_id,
            user_id: &redeemed.user_id,
            tenant_id: redeemed.tenant_id.clone(),
            role: redeemed.role.parse().map_err(|_| RefreshError::Unavailable)?,
            expires_at: redeemed.expires_at,
            parent: Some(ParentSession { session_id: parent, client_id: client_id.to_string() }),
        };
        let grant = self.open(correlation_id, opening).await.map_err(|_| RefreshError::Unavailable)?;
        // A replay that came while the session was opening could not end it: end it now.
        if codes::was_replayed(&self.pool, code).await.map_err(unavailable)? {
            self.end_replayed(correlation_id, &grant.session_id).await?;
            return Err(RefreshError::InvalidGrant);
        }
        Ok(CodeGrant { grant, redeemed })
    }

    async fn end_replayed(&self, correlation_id: &str, session_id: &str) -> Result<(), RefreshError> {
        let ctx =
            CommandContext::new(Actor::system("code_replay"), correlation_id.to_string(), format!("code:{session_id}"));
        match self.revoke(&ctx, session_id, RevokeReason::AuthorizationCodeReuse).await {
            Ok(_) => Ok(()),
            Err(err) if err.failure == bus::Failure::NotFound => Ok(()),
            Err(_) => Err(RefreshError::Unavailable),
        }
    }

    /// The open browser session `session_id` (a sign-in's, not a client's), for the
    /// `keel_session` cookie (ADR 0024).
    pub async fn browser_session(&self, session_id: &str) -> Result<Option<BrowserSession>, sqlx::Error> {
        sqlx::query_as(
            "SELECT s.session_id, s.user_id, s.tenant_id, t.domain AS tenant_domain, s.role, s.opened_at, s.expires_at
             FROM auth_sessions s LEFT JOIN auth_tenants t ON t.tenant_id = s.tenant_id
             WHERE s.session_id = $1 AND s.parent_session_id IS NULL AND s.revoked_at IS NULL AND s.expires_at > now()",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Ends a session (logout or administrative revocation); idempotent.
    pub async fn revoke(
        &self,
        ctx: &CommandContext,
        session_id: &str,
        reason: RevokeReason,
    ) -> Result<i64, CommandError> {
        let tenant: Option<Option<String>> =
            sqlx::query_scalar("SELECT tenant_id FROM auth_sessions WHERE session_id = $1")
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| CommandError::unavailable(&e))?;
        let Some(tenant) = tenant else {
            return Err(CommandError::new(bus::Failure::NotFound, "session_not_found", "session not found"));
        };
        self.revoke_as(ctx, session_id, tenant.as_deref(), reason).await?;
        bus::position_of(&self.pool, ctx.command_id).await
    }

    async fn revoke_as(
        &self,
        ctx: &CommandContext,
        session_id: &str,
        tenant_id: Option<&str>,
        reason: RevokeReason,
    ) -> Result<(), CommandError> {
        let cmd = SessionCommand::Revoke { reason, at: ctx.received_at };
        bus::execute(&self.sessions, session_id, cmd, ctx.metadata(tenant_id)).await
    }

    /// The session behind a refresh token that can still be used (current generation,
    /// session open), for introspection.
    pub async fn inspect_refresh_token(&self, token: &str) -> Result<Option<RefreshInfo>, sqlx::Error> {
        let Some((session_id, generation)) = self.parse_refresh_token(token) else { return Ok(None) };
        let row: Option<(String, Option<String>, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT user_id, tenant_id, role, expires_at FROM auth_sessions
             WHERE session_id = $1 AND refresh_generation = $2 AND revoked_at IS NULL AND expires_at > now()",
        )
        .bind(&session_id)
        .bind(generation)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(user_id, tenant_id, role, expires_at)| {
            Some(RefreshInfo { session_id, user_id, tenant_id, role: role.parse().ok()?, expires_at })
        }))
    }

    /// The session id of a well-formed, genuine refresh token (any generation).
    pub fn session_of(&self, token: &str) -> Option<String> {
        self.parse_refresh_token(token).map(|(session, _)| session)
    }

    fn refresh_token(&self, session_id: &str, generation: i64) -> String {
        let body = format!("{session_id}.{generation}");
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.mac(&body).finalize().into_bytes());
        format!("{REFRESH_TOKEN_PREFIX}{body}.{mac}")
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.refresh_key).expect("HMAC takes any key length");
        mac.update(body.as_bytes());
        mac
    }

    fn parse_refresh_token(&self, token: &str) -> Option<(String, i64)> {
        let rest = token.strip_prefix(REFRESH_TOKEN_PREFIX).filter(|t| t.len() <= 200)?;
        let (body, mac) = rest.rsplit_once('.')?;
        let (session_id, generation) = body.split_once('.')?;
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(mac).ok()?;
        self.mac(body).verify_slice(&mac).ok()?;
        let generation: i64 = generation.parse().ok().filter(|g| *g >= 0)?;
        session_id.parse::<SessionId>().ok()?;
        Some((session_id.to_string(), generation))
    }
}
