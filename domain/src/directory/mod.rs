//! The user directory: one aggregate per tenant holding all its users (aggregate id =
//! the tenant id; platform operators and auditors live in the directory [`PLATFORM`]).
//! It is the consistency boundary for e-mail uniqueness, the last-owner guard, and
//! invitation and password-reset tokens. Tokens and passwords reach it already hashed.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DomainError, ErrorKind};
use crate::ids::UserId;
use crate::password_policy::PasswordPolicy;

#[cfg(test)]
mod tests;

/// The aggregate type name of directories in the event store.
pub const AGGREGATE_TYPE: &str = "directory";

/// The aggregate id of the directory of platform users (operators and auditors).
pub const PLATFORM: &str = "platform";

/// How many days an invitation stays valid unless the tenant sets otherwise (1 to 90).
pub const DEFAULT_INVITATION_TTL_DAYS: u32 = 7;

/// The range of invitation lifetimes, in days, that a policy may set.
const INVITATION_TTL_DAYS: std::ops::RangeInclusive<u32> = 1..=90;

/// A user's role: owner, admin or user in a tenant; operator or auditor on the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// Everything in the tenant, including plan and owners.
    Owner,
    /// User management and configuration, not the plan or the owners.
    Admin,
    /// The managed apps' features only.
    User,
    /// A platform operator: everything on every tenant.
    Operator,
    /// A platform auditor: reads everything, changes nothing.
    Auditor,
}

impl UserRole {
    /// Every role, tenant roles first.
    pub const ALL: [UserRole; 5] =
        [UserRole::Owner, UserRole::Admin, UserRole::User, UserRole::Operator, UserRole::Auditor];

    /// The role's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Owner => "owner",
            UserRole::Admin => "admin",
            UserRole::User => "user",
            UserRole::Operator => "operator",
            UserRole::Auditor => "auditor",
        }
    }

    /// Whether this is a platform role (operator or auditor) rather than a tenant role.
    pub fn is_platform(self) -> bool {
        matches!(self, UserRole::Operator | UserRole::Auditor)
    }
}

impl FromStr for UserRole {
    type Err = DirectoryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserRole::ALL.into_iter().find(|r| r.as_str().eq_ignore_ascii_case(s.trim())).ok_or(DirectoryError::InvalidRole)
    }
}

impl fmt::Display for UserRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a user stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Invited; the invitation has not been accepted yet.
    Invited,
    /// Can sign in.
    Active,
    /// Cannot sign in until enabled again.
    Disabled,
}

impl UserStatus {
    /// The status's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Invited => "invited",
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }
}

/// Who performs an administrative command: a platform operator (or the system), or a
/// tenant owner or admin. Admins may not touch owners nor make anyone an owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acting {
    /// A platform operator or the system itself.
    Platform,
    /// An owner of the tenant.
    Owner,
    /// An admin of the tenant.
    Admin,
}

/// Why a password changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PasswordChangeReason {
    /// The user changed it, knowing the old one.
    Changed,
    /// The user set it with a password-reset token.
    Reset,
}

/// A single-use token as stored: only its SHA-256 (hex) and its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PendingToken {
    /// The SHA-256 of the token, lowercase hex.
    pub hash: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
}

/// One user of a directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryUser {
    /// The e-mail address, as given (unique in the directory, case-insensitively).
    pub email: String,
    /// The role.
    pub role: UserRole,
    /// The status.
    pub status: UserStatus,
    /// The pending invitation, while the user is invited.
    pub invitation: Option<PendingToken>,
    /// The pending password reset, if one was requested.
    pub reset: Option<PendingToken>,
    /// The current password credential, once the user has one.
    pub credential_id: Option<Uuid>,
    /// The status to return to when enabled again.
    pub status_before_disable: Option<UserStatus>,
}

/// A command on a directory.
#[derive(Debug, Clone, PartialEq)]
pub enum DirectoryCommand {
    /// Provisioning invites the tenant's first owner. A no-op (no events) if the same e-mail is
    /// already the invited or active owner (provisioning retries); `EmailTaken` or `UserExists`
    /// if it clashes otherwise; allowed only while the directory has no owner yet, else `OwnerExists`.
    InviteOwner {
        /// The new user's id.
        user_id: UserId,
        /// The owner's e-mail (already validated).
        email: String,
        /// The invitation token, hashed.
        invitation: PendingToken,
        /// When.
        at: DateTime<Utc>,
    },
    /// Owners and admins invite with role admin or user only (else `InvalidRole`).
    Invite {
        /// The new user's id.
        user_id: UserId,
        /// The e-mail (already validated).
        email: String,
        /// Admin or user.
        role: UserRole,
        /// The invitation token, hashed.
        invitation: PendingToken,
        /// When.
        at: DateTime<Utc>,
    },
    /// Create a platform user, active at once; operator or auditor only (else `InvalidRole`).
    CreatePlatformUser {
        /// The new user's id.
        user_id: UserId,
        /// The e-mail (already validated).
        email: String,
        /// Operator or auditor.
        role: UserRole,
        /// The password credential.
        credential_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Send a fresh invitation to an invited user; the previous token stops working.
    ResendInvitation {
        /// The invited user.
        user_id: UserId,
        /// The new invitation token, hashed.
        invitation: PendingToken,
        /// When.
        at: DateTime<Utc>,
    },
    /// Accept an invitation: the user becomes active with its first password.
    AcceptInvitation {
        /// The SHA-256 (hex) of the token presented.
        token_hash: String,
        /// The password credential.
        credential_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Give a tenant user another tenant role (owner, admin or user).
    ChangeRole {
        /// The user.
        user_id: UserId,
        /// The new role.
        role: UserRole,
        /// Who does it.
        acting: Acting,
    },
    /// Stop a user from signing in.
    Disable {
        /// The user.
        user_id: UserId,
        /// Who does it.
        acting: Acting,
    },
    /// Let a disabled user sign in again.
    Enable {
        /// The user.
        user_id: UserId,
        /// Who does it.
        acting: Acting,
    },
    /// Remove a user; its e-mail becomes free.
    Delete {
        /// The user.
        user_id: UserId,
        /// Who does it.
        acting: Acting,
        /// When.
        at: DateTime<Utc>,
    },
    /// An active user changed its password (the service checked the old one).
    ChangePassword {
        /// The user.
        user_id: UserId,
        /// The new password credential.
        credential_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// Issue a password-reset token to an active user, replacing any earlier one.
    RequestPasswordReset {
        /// The user.
        user_id: UserId,
        /// The reset token, hashed.
        reset: PendingToken,
        /// When.
        at: DateTime<Utc>,
    },
    /// Set a new password with a reset token.
    ResetPassword {
        /// The SHA-256 (hex) of the token presented.
        token_hash: String,
        /// The new password credential.
        credential_id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// End all of a user's sessions.
    RevokeSessions {
        /// The user.
        user_id: UserId,
    },
    /// Set the directory's password policy and invitation lifetime.
    SetPolicy {
        /// The password policy.
        password_policy: PasswordPolicy,
        /// How many days invitations stay valid (1 to 90).
        invitation_ttl_days: u32,
    },
}

impl DirectoryCommand {
    /// What identifies the request for idempotency: the command and its arguments, without
    /// times, token hashes, expiries or credential ids (fresh on every retry), nor the ids of
    /// users still to be created (the service chooses them per attempt).
    pub fn fingerprint(&self) -> String {
        use DirectoryCommand::*;
        match self {
            InviteOwner { email, .. } => format!("invite_owner|{}", email.to_lowercase()),
            Invite { email, role, .. } => format!("invite|{}|{role}", email.to_lowercase()),
            CreatePlatformUser { email, role, .. } => format!("create_platform_user|{}|{role}", email.to_lowercase()),
            ResendInvitation { user_id, .. } => format!("resend|{user_id}"),
            AcceptInvitation { .. } => "accept_invitation".into(),
            ChangeRole { user_id, role, .. } => format!("change_role|{user_id}|{role}"),
            Disable { user_id, .. } => format!("disable|{user_id}"),
            Enable { user_id, .. } => format!("enable|{user_id}"),
            Delete { user_id, .. } => format!("delete|{user_id}"),
            ChangePassword { user_id, .. } => format!("change_password|{user_id}"),
            RequestPasswordReset { user_id, .. } => format!("request_password_reset|{user_id}"),
            ResetPassword { .. } => "reset_password".into(),
            RevokeSessions { user_id } => format!("revoke_sessions|{user_id}"),
            SetPolicy { password_policy: p, invitation_ttl_days } => format!(
                "set_policy|{}|{}|{}|{}|{}|{invitation_ttl_days}",
                p.min_length, p.require_lowercase, p.require_uppercase, p.require_digit, p.require_symbol
            ),
        }
    }
}

/// What happened in a directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum DirectoryEvent {
    /// A tenant user was invited.
    #[serde(rename = "user.invited")]
    Invited {
        /// The user.
        user_id: UserId,
        /// The e-mail address.
        email: String,
        /// The role.
        role: UserRole,
        /// The invitation token, hashed.
        invitation: PendingToken,
        /// When.
        invited_at: DateTime<Utc>,
    },
    /// The invitation was sent again with a new token; the previous one stopped working.
    #[serde(rename = "user.invitation_resent")]
    InvitationResent {
        /// The user.
        user_id: UserId,
        /// The new invitation token, hashed.
        invitation: PendingToken,
    },
    /// The user accepted the invitation and is active.
    #[serde(rename = "user.invitation_accepted")]
    InvitationAccepted {
        /// The user.
        user_id: UserId,
        /// The password credential.
        credential_id: Uuid,
        /// When.
        accepted_at: DateTime<Utc>,
    },
    /// A platform user was created, active at once.
    #[serde(rename = "user.created")]
    Created {
        /// The user.
        user_id: UserId,
        /// The e-mail address.
        email: String,
        /// Operator or auditor.
        role: UserRole,
        /// The password credential.
        credential_id: Uuid,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// The user's role changed; its sessions end.
    #[serde(rename = "user.role_changed")]
    RoleChanged {
        /// The user.
        user_id: UserId,
        /// The previous role.
        from: UserRole,
        /// The new role.
        to: UserRole,
    },
    /// The user can no longer sign in; its sessions end.
    #[serde(rename = "user.disabled")]
    Disabled {
        /// The user.
        user_id: UserId,
    },
    /// The user was enabled again.
    #[serde(rename = "user.enabled")]
    Enabled {
        /// The user.
        user_id: UserId,
        /// The status it returned to (invited or active).
        status: UserStatus,
    },
    /// The user was removed; its sessions end and its e-mail is free again.
    #[serde(rename = "user.deleted")]
    Deleted {
        /// The user.
        user_id: UserId,
        /// When.
        deleted_at: DateTime<Utc>,
    },
    /// The user's password changed; its sessions end.
    #[serde(rename = "user.password_changed")]
    PasswordChanged {
        /// The user.
        user_id: UserId,
        /// The new password credential.
        credential_id: Uuid,
        /// Changed by the user or set with a reset token.
        reason: PasswordChangeReason,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// A password reset was requested; any earlier reset token stopped working.
    #[serde(rename = "user.password_reset_requested")]
    PasswordResetRequested {
        /// The user.
        user_id: UserId,
        /// The reset token, hashed.
        reset: PendingToken,
    },
    /// All of the user's sessions end.
    #[serde(rename = "user.sessions_revoked")]
    SessionsRevoked {
        /// The user.
        user_id: UserId,
    },
    /// The directory's password policy and invitation lifetime were set.
    #[serde(rename = "directory.policy_set")]
    PolicySet {
        /// The password policy.
        password_policy: PasswordPolicy,
        /// How many days invitations stay valid.
        invitation_ttl_days: u32,
    },
}

impl DirectoryEvent {
    /// The user the event is about (every event but `directory.policy_set`).
    pub fn user_id(&self) -> Option<&UserId> {
        use DirectoryEvent::*;
        match self {
            Invited { user_id, .. }
            | InvitationResent { user_id, .. }
            | InvitationAccepted { user_id, .. }
            | Created { user_id, .. }
            | RoleChanged { user_id, .. }
            | Disabled { user_id }
            | Enabled { user_id, .. }
            | Deleted { user_id, .. }
            | PasswordChanged { user_id, .. }
            | PasswordResetRequested { user_id, .. }
            | SessionsRevoked { user_id } => Some(user_id),
            PolicySet { .. } => None,
        }
    }

    /// The user whose sessions this event ends (role_changed, disabled, deleted, password_changed,
    /// sessions_revoked), if any.
    pub fn ends_sessions_of(&self) -> Option<&UserId> {
        use DirectoryEvent::*;
        match self {
            RoleChanged { user_id, .. }
            | Disabled { user_id }
            | Deleted { user_id, .. }
            | PasswordChanged { user_id, .. }
            | SessionsRevoked { user_id } => Some(user_id),
            Invited { .. }
            | InvitationResent { .. }
            | InvitationAccepted { .. }
            | Created { .. }
            | Enabled { .. }
            | PasswordResetRequested { .. }
            | PolicySet { .. } => None,
        }
    }
}

impl DomainEvent for DirectoryEvent {
    fn event_type(&self) -> String {
        use DirectoryEvent::*;
        match self {
            Invited { .. } => "user.invited",
            InvitationResent { .. } => "user.invitation_resent",
            InvitationAccepted { .. } => "user.invitation_accepted",
            Created { .. } => "user.created",
            RoleChanged { .. } => "user.role_changed",
            Disabled { .. } => "user.disabled",
            Enabled { .. } => "user.enabled",
            Deleted { .. } => "user.deleted",
            PasswordChanged { .. } => "user.password_changed",
            PasswordResetRequested { .. } => "user.password_reset_requested",
            SessionsRevoked { .. } => "user.sessions_revoked",
            PolicySet { .. } => "directory.policy_set",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a directory command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    /// Another user of the directory has this e-mail address (compared case-insensitively).
    #[error("a user with this e-mail address exists already")]
    EmailTaken,
    /// A user with this id exists already.
    #[error("user already exists")]
    UserExists,
    /// The tenant has an owner already; invite further owners as users and promote them.
    #[error("the tenant already has an owner")]
    OwnerExists,
    /// The token's expiry is not after the time of the command.
    #[error("expires_at must be in the future")]
    InvalidExpiry,
    /// The role is unknown or not allowed for this command.
    #[error("role is not allowed here")]
    InvalidRole,
    /// The password policy or the invitation lifetime is out of range.
    #[error("min_length must be 8 to 128 and invitation_ttl_days 1 to 90")]
    InvalidPolicy,
    /// The password does not meet the policy; the text names the first rule broken.
    #[error("password does not meet the policy: needs {0}")]
    WeakPassword(String),
    /// No such user.
    #[error("user not found")]
    UserNotFound,
    /// The user is not invited (it accepted already or is disabled).
    #[error("user is not invited")]
    NotInvited,
    /// The invitation token is unknown, used or superseded.
    #[error("invitation is invalid")]
    InvitationInvalid,
    /// The invitation token has expired.
    #[error("invitation has expired")]
    InvitationExpired,
    /// Only an owner (or the platform) may change an owner or make someone an owner.
    #[error("only an owner can do this")]
    OwnerRequired,
    /// The tenant would be left without an owner.
    #[error("the tenant must keep at least one owner")]
    LastOwner,
    /// The user is disabled already.
    #[error("user is disabled")]
    AlreadyDisabled,
    /// The user is not disabled.
    #[error("user is not disabled")]
    NotDisabled,
    /// The user is not active (invited or disabled).
    #[error("user is not active")]
    UserNotActive,
    /// The reset token is unknown, used or superseded.
    #[error("password reset is invalid")]
    ResetInvalid,
    /// The reset token has expired.
    #[error("password reset has expired")]
    ResetExpired,
}

impl DomainError for DirectoryError {
    fn kind(&self) -> ErrorKind {
        use DirectoryError::*;
        match self {
            EmailTaken | UserExists | OwnerExists => ErrorKind::AlreadyExists,
            InvalidExpiry | InvalidRole | InvalidPolicy | WeakPassword(_) => ErrorKind::InvalidArgument,
            UserNotFound => ErrorKind::NotFound,
            NotInvited | InvitationInvalid | InvitationExpired | LastOwner | AlreadyDisabled | NotDisabled
            | UserNotActive | ResetInvalid | ResetExpired => ErrorKind::FailedPrecondition,
            OwnerRequired => ErrorKind::PermissionDenied,
        }
    }

    fn code(&self) -> &'static str {
        use DirectoryError::*;
        match self {
            EmailTaken => "email_taken",
            UserExists => "user_exists",
            OwnerExists => "owner_exists",
            InvalidExpiry => "invalid_expiry",
            InvalidRole => "invalid_role",
            InvalidPolicy => "invalid_policy",
            WeakPassword(_) => "weak_password",
            UserNotFound => "user_not_found",
            NotInvited => "not_invited",
            InvitationInvalid => "invitation_invalid",
            InvitationExpired => "invitation_expired",
            OwnerRequired => "owner_required",
            LastOwner => "last_owner",
            AlreadyDisabled => "user_disabled",
            NotDisabled => "user_not_disabled",
            UserNotActive => "user_not_active",
            ResetInvalid => "reset_invalid",
            ResetExpired => "reset_expired",
        }
    }
}

/// The directory aggregate's state: the users of one tenant (or of the platform).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Directory {
    /// Every user, by id.
    #[serde(default)]
    users: BTreeMap<UserId, DirectoryUser>,
    /// The password policy.
    #[serde(default)]
    password_policy: PasswordPolicy,
    /// How many days invitations stay valid; 0 means not set ([`DEFAULT_INVITATION_TTL_DAYS`]).
    #[serde(default)]
    invitation_ttl_days: u32,
}

impl Directory {
    /// A user by id.
    pub fn user(&self, id: &UserId) -> Option<&DirectoryUser> {
        self.users.get(id)
    }

    /// The user with this e-mail address, compared case-insensitively over the whole address.
    pub fn find_by_email(&self, email: &str) -> Option<(&UserId, &DirectoryUser)> {
        let wanted = email.trim().to_lowercase();
        self.users.iter().find(|(_, u)| u.email.to_lowercase() == wanted)
    }

    /// Every user, ordered by id.
    pub fn users(&self) -> impl Iterator<Item = (&UserId, &DirectoryUser)> {
        self.users.iter()
    }

    /// The password policy (the default one until set).
    pub fn password_policy(&self) -> &PasswordPolicy {
        &self.password_policy
    }

    /// How many days invitations stay valid.
    pub fn invitation_ttl_days(&self) -> u32 {
        if self.invitation_ttl_days == 0 { DEFAULT_INVITATION_TTL_DAYS } else { self.invitation_ttl_days }
    }

    fn existing(&self, id: &UserId) -> Result<&DirectoryUser, DirectoryError> {
        self.users.get(id).ok_or(DirectoryError::UserNotFound)
    }

    /// Refuses a new user whose e-mail or id is taken.
    fn check_new(&self, user_id: &UserId, email: &str) -> Result<(), DirectoryError> {
        if self.find_by_email(email).is_some() {
            return Err(DirectoryError::EmailTaken);
        }
        if self.users.contains_key(user_id) {
            return Err(DirectoryError::UserExists);
        }
        Ok(())
    }

    /// Refuses to remove (demote, disable, delete) the last owner that is not disabled.
    fn check_not_last_owner(&self, user_id: &UserId, user: &DirectoryUser) -> Result<(), DirectoryError> {
        let counts = |u: &DirectoryUser| u.role == UserRole::Owner && u.status != UserStatus::Disabled;
        if counts(user) && !self.users.iter().any(|(id, u)| id != user_id && counts(u)) {
            return Err(DirectoryError::LastOwner);
        }
        Ok(())
    }

    fn decide(&self, command: DirectoryCommand) -> Result<Option<DirectoryEvent>, DirectoryError> {
        use DirectoryCommand as C;
        use DirectoryEvent as E;
        let event = match command {
            C::InviteOwner { user_id, email, invitation, at } => {
                check_expiry(&invitation, at)?;
                if let Some((_, u)) = self.find_by_email(&email)
                    && u.role == UserRole::Owner
                    && u.status != UserStatus::Disabled
                {
                    return Ok(None);
                }
                self.check_new(&user_id, &email)?;
                if self.users.values().any(|u| u.role == UserRole::Owner) {
                    return Err(DirectoryError::OwnerExists);
                }
                E::Invited { user_id, email, role: UserRole::Owner, invitation, invited_at: at }
            }
            C::Invite { user_id, email, role, invitation, at } => {
                if !matches!(role, UserRole::Admin | UserRole::User) {
                    return Err(DirectoryError::InvalidRole);
                }
                check_expiry(&invitation, at)?;
                self.check_new(&user_id, &email)?;
                E::Invited { user_id, email, role, invitation, invited_at: at }
            }
            C::CreatePlatformUser { user_id, email, role, credential_id, at } => {
                if !role.is_platform() {
                    return Err(DirectoryError::InvalidRole);
                }
                self.check_new(&user_id, &email)?;
                E::Created { user_id, email, role, credential_id, created_at: at }
            }
            C::ResendInvitation { user_id, invitation, at } => {
                check_expiry(&invitation, at)?;
                if self.existing(&user_id)?.status != UserStatus::Invited {
                    return Err(DirectoryError::NotInvited);
                }
                E::InvitationResent { user_id, invitation }
            }
            C::AcceptInvitation { token_hash, credential_id, at } => {
                let (user_id, token) = self
                    .users
                    .iter()
                    .filter(|(_, u)| u.status == UserStatus::Invited)
                    .find_map(|(id, u)| u.invitation.as_ref().filter(|t| t.hash == token_hash).map(|t| (id, t)))
                    .ok_or(DirectoryError::InvitationInvalid)?;
                if token.expires_at <= at {
                    return Err(DirectoryError::InvitationExpired);
                }
                E::InvitationAccepted { user_id: user_id.clone(), credential_id, accepted_at: at }
            }
            C::ChangeRole { user_id, role, acting } => {
                if role.is_platform() {
                    return Err(DirectoryError::InvalidRole);
                }
                let user = self.existing(&user_id)?;
                if user.role.is_platform() {
                    return Err(DirectoryError::InvalidRole);
                }
                if user.role == role {
                    return Ok(None);
                }
                if acting == Acting::Admin && (user.role == UserRole::Owner || role == UserRole::Owner) {
                    return Err(DirectoryError::OwnerRequired);
                }
                self.check_not_last_owner(&user_id, user)?;
                E::RoleChanged { from: user.role, to: role, user_id }
            }
            C::Disable { user_id, acting } => {
                let user = self.existing(&user_id)?;
                if user.status == UserStatus::Disabled {
                    return Err(DirectoryError::AlreadyDisabled);
                }
                check_acting(user, acting)?;
                self.check_not_last_owner(&user_id, user)?;
                E::Disabled { user_id }
            }
            C::Enable { user_id, acting } => {
                let user = self.existing(&user_id)?;
                if user.status != UserStatus::Disabled {
                    return Err(DirectoryError::NotDisabled);
                }
                check_acting(user, acting)?;
                E::Enabled { status: user.status_before_disable.unwrap_or(UserStatus::Active), user_id }
            }
            C::Delete { user_id, acting, at } => {
                let user = self.existing(&user_id)?;
                check_acting(user, acting)?;
                self.check_not_last_owner(&user_id, user)?;
                E::Deleted { user_id, deleted_at: at }
            }
            C::ChangePassword { user_id, credential_id, at } => {
                if self.existing(&user_id)?.status != UserStatus::Active {
                    return Err(DirectoryError::UserNotActive);
                }
                E::PasswordChanged { user_id, credential_id, reason: PasswordChangeReason::Changed, changed_at: at }
            }
            C::RequestPasswordReset { user_id, reset, at } => {
                check_expiry(&reset, at)?;
                if self.existing(&user_id)?.status != UserStatus::Active {
                    return Err(DirectoryError::UserNotActive);
                }
                E::PasswordResetRequested { user_id, reset }
            }
            C::ResetPassword { token_hash, credential_id, at } => {
                let (user_id, token) = self
                    .users
                    .iter()
                    .filter(|(_, u)| u.status == UserStatus::Active)
                    .find_map(|(id, u)| u.reset.as_ref().filter(|t| t.hash == token_hash).map(|t| (id, t)))
                    .ok_or(DirectoryError::ResetInvalid)?;
                if token.expires_at <= at {
                    return Err(DirectoryError::ResetExpired);
                }
                E::PasswordChanged {
                    user_id: user_id.clone(),
                    credential_id,
                    reason: PasswordChangeReason::Reset,
                    changed_at: at,
                }
            }
            C::RevokeSessions { user_id } => {
                self.existing(&user_id)?;
                E::SessionsRevoked { user_id }
            }
            C::SetPolicy { password_policy, invitation_ttl_days } => {
                password_policy.validate()?;
                if !INVITATION_TTL_DAYS.contains(&invitation_ttl_days) {
                    return Err(DirectoryError::InvalidPolicy);
                }
                E::PolicySet { password_policy, invitation_ttl_days }
            }
        };
        Ok(Some(event))
    }
}

/// Refuses a token that expires at or before the time of the command.
fn check_expiry(token: &PendingToken, at: DateTime<Utc>) -> Result<(), DirectoryError> {
    if token.expires_at > at { Ok(()) } else { Err(DirectoryError::InvalidExpiry) }
}

/// Refuses an admin acting on an owner.
fn check_acting(target: &DirectoryUser, acting: Acting) -> Result<(), DirectoryError> {
    if acting == Acting::Admin && target.role == UserRole::Owner { Err(DirectoryError::OwnerRequired) } else { Ok(()) }
}

impl Aggregate for Directory {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = DirectoryCommand;
    type Event = DirectoryEvent;
    type Error = DirectoryError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use DirectoryEvent as E;
        match event {
            E::Invited { user_id, email, role, invitation, .. } => {
                let user = DirectoryUser {
                    email,
                    role,
                    status: UserStatus::Invited,
                    invitation: Some(invitation),
                    reset: None,
                    credential_id: None,
                    status_before_disable: None,
                };
                self.users.insert(user_id, user);
            }
            E::Created { user_id, email, role, credential_id, .. } => {
                let user = DirectoryUser {
                    email,
                    role,
                    status: UserStatus::Active,
                    invitation: None,
                    reset: None,
                    credential_id: Some(credential_id),
                    status_before_disable: None,
                };
                self.users.insert(user_id, user);
            }
            E::Deleted { user_id, .. } => {
                self.users.remove(&user_id);
            }
            E::PolicySet { password_policy, invitation_ttl_days } => {
                self.password_policy = password_policy;
                self.invitation_ttl_days = invitation_ttl_days;
            }
            E::InvitationResent { user_id, invitation } => {
                if let Some(user) = self.users.get_mut(&user_id) {
                    user.invitation = Some(invitation);
                }
            }
            E::InvitationAccepted { user_id, credential_id, .. } => {
                if let Some(user) = self.users.get_mut(&user_id) {
                    user.status = UserStatus::Active;
                    user.invitation = None;
                    user.credential_id = Some(credential_id);
                }
            }
            E::RoleChanged { user_id, to, .. } => {
                if let Some(user) = self.users.get_mut(&user_id) {
                    user.role = to;
                }
            }
            E::Disabled { user_id } => {
                if let Some(user) = self.users.get_mut(&user_id) {
                    user.status_before_disable = Some(user.status);
                    user.status = UserStatus::Disabled;
                }
            }
            E::Enabled { user_id, status } => {
                if let Some(user) = self.users.get_mut(&user_id) {
                    user.status = status;
                    user.status_before_disable = None;
                }
            }
            E::PasswordChanged { user_id, credential_id, .. } => {
                if let Some(user) = self.users.get_mut(&user_id) {
                    user.credential_id = Some(credential_id);
                    user.reset = None;
                }
            }
            E::PasswordResetRequested { user_id, reset } => {
                if let Some(user) = self.users.get_mut(&user_id) {
                    user.reset = Some(reset);
                }
            }
            E::SessionsRevoked { .. } => {}
        }
    }
}
