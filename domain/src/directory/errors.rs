//! Why a directory command was refused.

use crate::error::{DomainError, ErrorKind};

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
