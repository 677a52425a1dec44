//! User commands: invitations, administration, passwords and platform users, on the
//! per-tenant directory aggregate. Secrets never enter events: invitation and reset
//! tokens appear as SHA-256 digests, passwords as the id of an argon2id credential row.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::EventStore;
use cqrs_es::persist::PersistedEventStore;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use keel_domain::directory::{
    Acting, Directory, DirectoryCommand, DirectoryError, PLATFORM, PasswordPolicy, PendingToken, UserRole, UserStatus,
};
use keel_domain::envelope::{Actor, ActorType};
use keel_domain::ids::{TenantId, UserId};
use keel_domain::login_guard::ThrottledSubject;
use keel_domain::validate;

use crate::bus::{self, CommandContext, CommandError, Failure, Framework};
use crate::idempotency::{Idempotency, fingerprint};
use crate::mail::{Mail, Mailer};
use crate::passwords::{PasswordError, Passwords};
use crate::secret;
use crate::store::KeelEventRepository;
use crate::throttle::{Throttle, ThrottlePolicy, account_key, address_key};

/// Prefix of invitation tokens.
pub const INVITATION_TOKEN_PREFIX: &str = "keel_inv_";
/// Prefix of password-reset tokens.
pub const RESET_TOKEN_PREFIX: &str = "keel_pwr_";
/// How long a password-reset token is valid.
pub const RESET_TTL_MINUTES: i64 = 60;
/// A reset requested again sooner than this after the last one (still pending) writes
/// nothing and mails nothing: the log grows by at most one reset per account per period.
pub const RESET_RESEND_AFTER_MINUTES: i64 = 15;

/// Why a password-reset request was refused (an unknown account is not a refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResetError {
    /// Too many requests for this account or from this address.
    #[error("too many password-reset requests; retry in {retry_after} s")]
    Throttled {
        /// Seconds until the lock ends.
        retry_after: u64,
    },
    /// The command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// The outcome of a user command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserChanged {
    /// The user concerned.
    pub user_id: String,
    /// Position of the last event written (0 if none).
    pub position: i64,
}

/// Runs user commands.
pub struct UserCommands {
    pool: PgPool,
    directories: Framework<Directory>,
    loader: PersistedEventStore<KeelEventRepository, Directory>,
    idempotency: Idempotency,
    passwords: Passwords,
    mailer: Option<Mailer>,
    public_url: String,
    throttle: Throttle,
    reset_throttle: Throttle,
}

/// A user asking for a password reset, and whether one was issued recently.
#[derive(Debug, Clone, sqlx::FromRow)]
struct PendingReset {
    user_id: String,
    tenant_id: Option<String>,
    status: String,
    recent: bool,
}

/// A user of the identity index, as the services need it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct IndexedUser {
    user_id: String,
    tenant_id: Option<String>,
}

impl UserCommands {
    /// User commands on `pools`; links in e-mails start with `public_url`. Without a
    /// mailer (command-line tools) nothing is mailed.
    pub fn new(
        pools: impl Into<crate::pools::Pools>,
        passwords: Passwords,
        mailer: Option<Mailer>,
        public_url: &str,
    ) -> Self {
        let pools: crate::pools::Pools = pools.into();
        let crate::pools::Pools { durable: pool, relaxed, .. } = pools.clone();
        Self {
            directories: bus::framework(&pools),
            loader: PersistedEventStore::new_event_store(KeelEventRepository::new(pools.group_commit.clone())),
            idempotency: Idempotency::new(relaxed),
            passwords,
            mailer,
            public_url: public_url.trim_end_matches('/').to_string(),
            throttle: Throttle::new(&pools, ThrottlePolicy::default()),
            reset_throttle: Throttle::new(&pools, ThrottlePolicy::resets()),
            pool,
        }
    }

    /// The password hasher (shared with sessions).
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// A directory's current state, from its events.
    pub async fn load(&self, directory_id: &str) -> Result<Directory, CommandError> {
        let mut context = self.loader.load_aggregate(directory_id).await.map_err(|e| CommandError::unavailable(&e))?;
        Ok(cqrs_es::AggregateContext::aggregate(&mut context).clone())
    }

    /// Invites the first owner of a freshly provisioned tenant (no-op if already invited).
    pub async fn invite_owner(
        &self,
        ctx: &CommandContext,
        tenant_id: &TenantId,
        email: &str,
    ) -> Result<(), CommandError> {
        let token = secret::random_token(INVITATION_TOKEN_PREFIX);
        let before = self.load(tenant_id.as_str()).await?;
        let invitation = pending(&token, ctx.received_at + Duration::days(before.invitation_ttl_days().into()));
        let cmd = DirectoryCommand::InviteOwner {
            user_id: UserId::from_ulid(ulid::Ulid::new()),
            email: email.to_string(),
            invitation,
            at: ctx.received_at,
        };
        let already = before.find_by_email(email).is_some();
        bus::execute(&self.directories, tenant_id.as_str(), cmd, ctx.metadata(Some(tenant_id.as_str()))).await?;
        if !already {
            self.send_invitation(email, UserRole::Owner, &token).await;
        }
        Ok(())
    }

    /// Invites `email` into the tenant with `role` (admin or user) and mails the token.
    pub async fn invite(
        &self,
        ctx: &CommandContext,
        tenant_id: &TenantId,
        email: &str,
        role: &str,
    ) -> Result<UserChanged, CommandError> {
        let email = validate::email(email).ok_or_else(|| {
            CommandError::new(Failure::InvalidArgument, "invalid_email", "email must be an e-mail address")
        })?;
        let role: UserRole = role.parse().map_err(|e: DirectoryError| CommandError::domain(&e))?;
        self.require_active_tenant(tenant_id).await?;
        let hash = fingerprint(&["InviteUser", tenant_id.as_str(), &email.to_lowercase(), role.as_str()]);
        let candidate = UserId::from_ulid(ulid::Ulid::new());
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, candidate.as_str(), |id| {
                let email = email.clone();
                async move {
                    let user_id: UserId = id.parse().map_err(|_| internal())?;
                    let token = secret::random_token(INVITATION_TOKEN_PREFIX);
                    let invitation = self.invitation(tenant_id.as_str(), &token, ctx.received_at).await?;
                    let cmd = DirectoryCommand::Invite {
                        user_id: user_id.clone(),
                        email: email.clone(),
                        role,
                        invitation,
                        at: ctx.received_at,
                    };
                    self.execute(ctx, tenant_id.as_str(), cmd).await?;
                    self.send_invitation(&email, role, &token).await;
                    self.changed(ctx, user_id.as_str()).await
                }
            })
            .await
    }

    /// Replaces a pending invitation's token with a fresh one (fresh expiry) and mails it.
    pub async fn resend_invitation(
        &self,
        ctx: &CommandContext,
        tenant_id: &TenantId,
        user_id: &UserId,
    ) -> Result<UserChanged, CommandError> {
        self.require_active_tenant(tenant_id).await?;
        let hash = fingerprint(&["ResendInvitation", tenant_id.as_str(), user_id.as_str()]);
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, user_id.as_str(), |_| async move {
                let directory = self.load(tenant_id.as_str()).await?;
                let user =
                    directory.user(user_id).ok_or_else(|| CommandError::domain(&DirectoryError::UserNotFound))?;
                let (email, role) = (user.email.clone(), user.role);
                let token = secret::random_token(INVITATION_TOKEN_PREFIX);
                let invitation =
                    pending(&token, ctx.received_at + Duration::days(directory.invitation_ttl_days().into()));
                let cmd =
                    DirectoryCommand::ResendInvitation { user_id: user_id.clone(), invitation, at: ctx.received_at };
                self.execute(ctx, tenant_id.as_str(), cmd).await?;
                self.send_invitation(&email, role, &token).await;
                self.changed(ctx, user_id.as_str()).await
            })
            .await
    }

    /// Accepts an invitation: checks the password against the tenant's policy, stores its
    /// hash, activates the user. Unknown, used and superseded tokens all fail the same way.
    pub async fn accept_invitation(
        &self,
        ctx: &CommandContext,
        token: &str,
        password: &str,
    ) -> Result<UserChanged, CommandError> {
        let lookup = "SELECT user_id, tenant_id FROM auth_users WHERE invitation_hash = $1 AND status = 'invited'";
        self.set_password_by_token(
            ctx,
            lookup,
            token,
            password,
            DirectoryError::InvitationInvalid,
            |token_hash, credential_id, at| DirectoryCommand::AcceptInvitation { token_hash, credential_id, at },
        )
        .await
    }

    /// Sets a password with a mailed token: finds its user with `lookup` (by token digest),
    /// checks the tenant's policy, stores the hash, then runs the directory command.
    async fn set_password_by_token(
        &self,
        ctx: &CommandContext,
        lookup: &str,
        token: &str,
        password: &str,
        unknown: DirectoryError,
        command: impl FnOnce(String, Uuid, DateTime<Utc>) -> DirectoryCommand,
    ) -> Result<UserChanged, CommandError> {
        let token_hash = secret::digest(token);
        let user: Option<IndexedUser> = sqlx::query_as(lookup)
            .bind(&token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| CommandError::unavailable(&e))?;
        let user = user.ok_or_else(|| CommandError::domain(&unknown))?;
        let directory_id = user.tenant_id.clone().unwrap_or_else(|| PLATFORM.to_string());
        let directory = self.load(&directory_id).await?;
        directory.password_policy().check(password).map_err(|e| CommandError::domain(&e))?;
        let credential_id = self.store_credential(&user.user_id, password).await?;
        let ctx = as_user(ctx, &user.user_id);
        self.execute(&ctx, &directory_id, command(token_hash, credential_id, ctx.received_at)).await?;
        self.changed(&ctx, &user.user_id).await
    }

    /// The password policy that applies to a mailed token (invitation `keel_inv_…` or reset
    /// `keel_pwr_…`) while it can be used; otherwise why not, as using it would say.
    pub async fn token_password_policy(&self, token: &str) -> Result<PasswordPolicy, CommandError> {
        let reset = token.starts_with(RESET_TOKEN_PREFIX);
        let lookup = if reset {
            "SELECT user_id, tenant_id FROM auth_users WHERE reset_hash = $1"
        } else {
            "SELECT user_id, tenant_id FROM auth_users WHERE invitation_hash = $1 AND status = 'invited'"
        };
        let token_hash = secret::digest(token);
        let user: Option<IndexedUser> = sqlx::query_as(lookup)
            .bind(&token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| CommandError::unavailable(&e))?;
        let unknown = if reset { DirectoryError::ResetInvalid } else { DirectoryError::InvitationInvalid };
        let user = user.ok_or_else(|| CommandError::domain(&unknown))?;
        let directory = self.load(user.tenant_id.as_deref().unwrap_or(PLATFORM)).await?;
        let usable = if reset {
            directory.usable_reset(&token_hash, Utc::now())
        } else {
            directory.usable_invitation(&token_hash, Utc::now())
        };
        usable.map_err(|e| CommandError::domain(&e))?;
        Ok(directory.password_policy().clone())
    }

    /// Runs an administrative command on a user of `tenant_id`.
    pub async fn administer(
        &self,
        ctx: &CommandContext,
        tenant_id: &TenantId,
        command: DirectoryCommand,
    ) -> Result<UserChanged, CommandError> {
        let user_id = match &command {
            DirectoryCommand::ChangeRole { user_id, .. }
            | DirectoryCommand::Disable { user_id, .. }
            | DirectoryCommand::Enable { user_id, .. }
            | DirectoryCommand::Delete { user_id, .. }
            | DirectoryCommand::RevokeSessions { user_id } => user_id.to_string(),
            DirectoryCommand::SetPolicy { .. } => String::new(),
            _ => return Err(internal()),
        };
        let hash = fingerprint(&["AdministerUser", tenant_id.as_str(), &command.fingerprint()]);
        self.idempotency
            .run(&ctx.actor.to_string(), &ctx.idempotency_key, &hash, &user_id.clone(), |_| async move {
                self.execute(ctx, tenant_id.as_str(), command).await?;
                self.changed(ctx, &user_id).await
            })
            .await
    }

    /// Changes the caller's own password; needs the current one. Ends all their sessions.
    pub async fn change_password(
        &self,
        ctx: &CommandContext,
        user_id: &UserId,
        current: &str,
        new: &str,
    ) -> Result<UserChanged, CommandError> {
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT u.tenant_id, c.hash FROM auth_users u
             LEFT JOIN auth_credentials c ON c.credential_id = u.credential_id WHERE u.user_id = $1",
        )
        .bind(user_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| CommandError::unavailable(&e))?;
        let (tenant_id, hash) = row.ok_or_else(|| CommandError::domain(&DirectoryError::UserNotFound))?;
        // Guessing the current password is throttled like sign-in.
        let subject = format!("password_change:{}", secret::digest(user_id.as_str()));
        let unavailable = |e: sqlx::Error| CommandError::unavailable(&e);
        if let Some(seconds) = self.throttle.locked_for(std::slice::from_ref(&subject)).await.map_err(unavailable)? {
            let message = format!("too many wrong passwords; retry in {seconds} s");
            return Err(CommandError::new(Failure::ResourceExhausted, "too_many_attempts", message));
        }
        let matches = self.passwords.verify(current, hash.as_deref()).await.map_err(|e| hashing_failed(&e))?;
        if !matches {
            let failed = [(subject.as_str(), ThrottledSubject::Account)];
            self.throttle.record_failure(&ctx.correlation_id, &failed).await.map_err(unavailable)?;
            return Err(CommandError::new(
                Failure::PermissionDenied,
                "invalid_credentials",
                "the current password is wrong",
            ));
        }
        self.throttle.clear(&subject).await.map_err(unavailable)?;
        let directory_id = tenant_id.unwrap_or_else(|| PLATFORM.to_string());
        let directory = self.load(&directory_id).await?;
        directory.password_policy().check(new).map_err(|e| CommandError::domain(&e))?;
        let credential_id = self.store_credential(user_id.as_str(), new).await?;
        let cmd = DirectoryCommand::ChangePassword { user_id: user_id.clone(), credential_id, at: ctx.received_at };
        self.execute(ctx, &directory_id, cmd).await?;
        self.changed(ctx, user_id.as_str()).await
    }

    /// Starts a password reset: if `email` is an active user of the tenant with `domain`
    /// (the platform if `None`), mails a single-use token. Answers the same either way.
    /// Requests are throttled per account (however spelled) and per client network, and a
    /// request while a recent reset is pending writes and mails nothing.
    pub async fn request_password_reset(
        &self,
        ctx: &CommandContext,
        client: Option<IpAddr>,
        domain: Option<&str>,
        email: &str,
    ) -> Result<(), ResetError> {
        let unavailable = |e: sqlx::Error| ResetError::Command(CommandError::unavailable(&e));
        let subjects =
            [format!("reset_account:{}", account_key(domain, email)), format!("reset_address:{}", address_key(client))];
        if let Some(retry_after) = self.reset_throttle.locked_for(&subjects).await.map_err(unavailable)? {
            return Err(ResetError::Throttled { retry_after });
        }
        let counted =
            [(subjects[0].as_str(), ThrottledSubject::Account), (subjects[1].as_str(), ThrottledSubject::Address)];
        self.reset_throttle.record_attempt(&counted).await.map_err(unavailable)?;
        let (Some(email), Some(tenant)) = (validate::email(email), self.tenant_key(domain).await?) else {
            return Ok(());
        };
        let user: Option<PendingReset> = sqlx::query_as(
            "SELECT user_id, tenant_id, status,
                    COALESCE(reset_expires_at > now() + make_interval(mins => $3), false) AS recent
             FROM auth_users WHERE COALESCE(tenant_id, '') = $1 AND email_key = lower($2)",
        )
        .bind(&tenant)
        .bind(&email)
        .bind((RESET_TTL_MINUTES - RESET_RESEND_AFTER_MINUTES) as i32)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some(user) = user.filter(|u| u.status == UserStatus::Active.as_str()) else {
            return Ok(());
        };
        if user.recent {
            return Ok(());
        }
        let user_id: UserId = user.user_id.parse().map_err(|_| internal())?;
        let token = secret::random_token(RESET_TOKEN_PREFIX);
        let reset = pending(&token, ctx.received_at + Duration::minutes(RESET_TTL_MINUTES));
        let ctx = as_user(ctx, user_id.as_str());
        let directory_id = user.tenant_id.unwrap_or_else(|| PLATFORM.to_string());
        let cmd = DirectoryCommand::RequestPasswordReset { user_id, reset, at: ctx.received_at };
        match self.execute(&ctx, &directory_id, cmd).await {
            Ok(()) => {}
            Err(err) if err.failure == Failure::FailedPrecondition => return Ok(()),
            Err(err) => return Err(err.into()),
        }
        let body = format!(
            "Someone asked to reset your Keel password. If it was you, set a new one at\n{}/reset-password?token={token}\n(valid for {RESET_TTL_MINUTES} minutes). The token on its own:\n{token}\n\nIf it was not you, ignore this message.\n",
            self.public_url
        );
        self.deliver(Mail { to: email, subject: "Reset your Keel password".into(), body }).await;
        Ok(())
    }

    /// Completes a password reset with the mailed token. Ends all the user's sessions.
    pub async fn reset_password(
        &self,
        ctx: &CommandContext,
        token: &str,
        password: &str,
    ) -> Result<UserChanged, CommandError> {
        let lookup = "SELECT user_id, tenant_id FROM auth_users WHERE reset_hash = $1";
        self.set_password_by_token(
            ctx,
            lookup,
            token,
            password,
            DirectoryError::ResetInvalid,
            |token_hash, credential_id, at| DirectoryCommand::ResetPassword { token_hash, credential_id, at },
        )
        .await
    }

    /// Creates a platform operator or auditor with a password (the platform's policy applies).
    pub async fn create_platform_user(
        &self,
        ctx: &CommandContext,
        email: &str,
        password: &str,
        role: &str,
    ) -> Result<UserChanged, CommandError> {
        let email = validate::email(email).ok_or_else(|| {
            CommandError::new(Failure::InvalidArgument, "invalid_email", "email must be an e-mail address")
        })?;
        let role: UserRole = role.parse().map_err(|e: DirectoryError| CommandError::domain(&e))?;
        if !role.is_platform() {
            return Err(CommandError::domain(&DirectoryError::InvalidRole));
        }
        let directory = self.load(PLATFORM).await?;
        if directory.find_by_email(&email).is_some() {
            return Err(CommandError::domain(&DirectoryError::EmailTaken));
        }
        directory.password_policy().check(password).map_err(|e| CommandError::domain(&e))?;
        let user_id = UserId::from_ulid(ulid::Ulid::new());
        let credential_id = self.store_credential(user_id.as_str(), password).await?;
        let cmd = DirectoryCommand::CreatePlatformUser {
            user_id: user_id.clone(),
            email,
            role,
            credential_id,
            at: ctx.received_at,
        };
        self.execute(ctx, PLATFORM, cmd).await?;
        self.changed(ctx, user_id.as_str()).await
    }

    async fn execute(
        &self,
        ctx: &CommandContext,
        directory_id: &str,
        cmd: DirectoryCommand,
    ) -> Result<(), CommandError> {
        let tenant = (directory_id != PLATFORM).then_some(directory_id);
        bus::execute(&self.directories, directory_id, cmd, ctx.metadata(tenant)).await
    }

    async fn changed(&self, ctx: &CommandContext, user_id: &str) -> Result<UserChanged, CommandError> {
        Ok(UserChanged { user_id: user_id.to_string(), position: bus::position_of(&self.pool, ctx.command_id).await? })
    }

    async fn invitation(
        &self,
        directory_id: &str,
        token: &str,
        at: DateTime<Utc>,
    ) -> Result<PendingToken, CommandError> {
        let ttl = self.load(directory_id).await?.invitation_ttl_days();
        Ok(pending(token, at + Duration::days(ttl.into())))
    }

    async fn store_credential(&self, user_id: &str, password: &str) -> Result<Uuid, CommandError> {
        let hash = self.passwords.hash(password).await.map_err(|e| hashing_failed(&e))?;
        let credential_id = Uuid::now_v7();
        sqlx::query("INSERT INTO auth_credentials (credential_id, user_id, hash) VALUES ($1, $2, $3)")
            .bind(credential_id)
            .bind(user_id)
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(|e| CommandError::unavailable(&e))?;
        Ok(credential_id)
    }

    async fn require_active_tenant(&self, tenant_id: &TenantId) -> Result<(), CommandError> {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM auth_tenants WHERE tenant_id = $1")
            .bind(tenant_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| CommandError::unavailable(&e))?;
        match status.as_deref() {
            Some("active") => Ok(()),
            Some(_) => Err(CommandError::new(Failure::FailedPrecondition, "tenant_not_active", "tenant is not active")),
            None => Err(CommandError::new(Failure::NotFound, "tenant_not_found", "tenant not found")),
        }
    }

    /// `''` for the platform, the tenant id for a known domain, `None` for an unknown one.
    async fn tenant_key(&self, domain: Option<&str>) -> Result<Option<String>, CommandError> {
        let Some(domain) = domain else { return Ok(Some(String::new())) };
        let Some(domain) = validate::domain(domain) else { return Ok(None) };
        sqlx::query_scalar("SELECT tenant_id FROM auth_tenants WHERE domain = $1")
            .bind(domain)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| CommandError::unavailable(&e))
    }

    async fn send_invitation(&self, email: &str, role: UserRole, token: &str) {
        let body = format!(
            "You are invited to Keel as {}. Choose your password at\n{}/invitation?token={token}\nThe invitation token on its own:\n{token}\n",
            role.as_str(),
            self.public_url
        );
        self.deliver(Mail { to: email.to_string(), subject: "Your Keel invitation".into(), body }).await;
    }

    /// Sends, logging (without the address) instead of failing: the change is committed
    /// already, and the invitation can be resent or the reset requested again.
    async fn deliver(&self, mail: Mail) {
        let Some(mailer) = &self.mailer else {
            tracing::warn!("no mailer configured; e-mail not sent");
            return;
        };
        if let Err(err) = mailer.send(mail).await {
            tracing::warn!(error = %err, "e-mail not sent");
        }
    }
}

fn pending(token: &str, expires_at: DateTime<Utc>) -> PendingToken {
    PendingToken { hash: secret::digest(token), expires_at }
}

fn as_user(ctx: &CommandContext, user_id: &str) -> CommandContext {
    CommandContext { actor: Actor { kind: ActorType::User, id: user_id.to_string() }, ..ctx.clone() }
}

fn internal() -> CommandError {
    CommandError::new(Failure::Internal, "internal", "internal error")
}

fn hashing_failed(err: &PasswordError) -> CommandError {
    if let PasswordError::Busy { .. } = err {
        return CommandError::new(Failure::Unavailable, "overloaded", err.to_string());
    }
    tracing::error!(error = %err, "password hashing failed");
    internal()
}

/// The `Acting` of a tenant role (tenant users other than owners and admins never administer).
pub fn acting_for(role: UserRole) -> Option<Acting> {
    match role {
        UserRole::Owner => Some(Acting::Owner),
        UserRole::Admin => Some(Acting::Admin),
        UserRole::Operator => Some(Acting::Platform),
        UserRole::User | UserRole::Auditor => None,
    }
}
