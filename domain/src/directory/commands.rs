//! What can be asked of a directory.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::events::PendingToken;
use super::password_policy::PasswordPolicy;
use super::roles::{Acting, UserRole};
use crate::ids::UserId;

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
