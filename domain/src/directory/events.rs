//! What happens in a directory, and the values its events carry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::password_policy::PasswordPolicy;
use super::roles::{UserRole, UserStatus};
use crate::aggregate::events;
use crate::ids::UserId;

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

events! {
    /// What happened in a directory.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum DirectoryEvent {
        /// A tenant user was invited.
        "user.invited" => Invited {
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
        "user.invitation_resent" => InvitationResent {
            /// The user.
            user_id: UserId,
            /// The new invitation token, hashed.
            invitation: PendingToken,
        },
        /// The user accepted the invitation and is active.
        "user.invitation_accepted" => InvitationAccepted {
            /// The user.
            user_id: UserId,
            /// The password credential.
            credential_id: Uuid,
            /// When.
            accepted_at: DateTime<Utc>,
        },
        /// A platform user was created, active at once.
        "user.created" => Created {
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
        "user.role_changed" => RoleChanged {
            /// The user.
            user_id: UserId,
            /// The previous role.
            from: UserRole,
            /// The new role.
            to: UserRole,
        },
        /// The user can no longer sign in; its sessions end.
        "user.disabled" => Disabled {
            /// The user.
            user_id: UserId,
        },
        /// The user was enabled again.
        "user.enabled" => Enabled {
            /// The user.
            user_id: UserId,
            /// The status it returned to (invited or active).
            status: UserStatus,
        },
        /// The user was removed; its sessions end and its e-mail is free again.
        "user.deleted" => Deleted {
            /// The user.
            user_id: UserId,
            /// When.
            deleted_at: DateTime<Utc>,
        },
        /// The user's password changed; its sessions end.
        "user.password_changed" => PasswordChanged {
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
        "user.password_reset_requested" => PasswordResetRequested {
            /// The user.
            user_id: UserId,
            /// The reset token, hashed.
            reset: PendingToken,
        },
        /// All of the user's sessions end.
        "user.sessions_revoked" => SessionsRevoked {
            /// The user.
            user_id: UserId,
        },
        /// The directory's password policy and invitation lifetime were set.
        "directory.policy_set" => PolicySet {
            /// The password policy.
            password_policy: PasswordPolicy,
            /// How many days invitations stay valid.
            invitation_ttl_days: u32,
        },
    }
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
