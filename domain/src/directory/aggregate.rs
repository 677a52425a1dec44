//! The directory's state, how it decides on a command and how an event changes it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::DirectoryCommand;
use super::errors::DirectoryError;
use super::events::{DirectoryEvent, PasswordChangeReason, PendingToken};
use super::password_policy::PasswordPolicy;
use super::roles::{Acting, UserRole, UserStatus};
use crate::aggregate::aggregate;
use crate::ids::UserId;

/// The aggregate type name of directories in the event store.
pub const AGGREGATE_TYPE: &str = "directory";

/// The aggregate id of the directory of platform users (operators and auditors).
pub const PLATFORM: &str = "platform";

/// How many days an invitation stays valid unless the tenant sets otherwise (1 to 90).
pub const DEFAULT_INVITATION_TTL_DAYS: u32 = 7;

/// The range of invitation lifetimes, in days, that a policy may set.
const INVITATION_TTL_DAYS: std::ops::RangeInclusive<u32> = 1..=90;

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

    /// The invited user whose pending invitation has digest `token_hash`, if it can still be
    /// accepted at `at` (unknown, used and superseded tokens are all `InvitationInvalid`).
    pub fn usable_invitation(&self, token_hash: &str, at: DateTime<Utc>) -> Result<&UserId, DirectoryError> {
        let (user_id, token) = self
            .users
            .iter()
            .filter(|(_, u)| u.status == UserStatus::Invited)
            .find_map(|(id, u)| u.invitation.as_ref().filter(|t| t.hash == token_hash).map(|t| (id, t)))
            .ok_or(DirectoryError::InvitationInvalid)?;
        if token.expires_at <= at { Err(DirectoryError::InvitationExpired) } else { Ok(user_id) }
    }

    /// The active user whose pending reset has digest `token_hash`, if it can still be used at `at`.
    pub fn usable_reset(&self, token_hash: &str, at: DateTime<Utc>) -> Result<&UserId, DirectoryError> {
        let (user_id, token) = self
            .users
            .iter()
            .filter(|(_, u)| u.status == UserStatus::Active)
            .find_map(|(id, u)| u.reset.as_ref().filter(|t| t.hash == token_hash).map(|t| (id, t)))
            .ok_or(DirectoryError::ResetInvalid)?;
        if token.expires_at <= at { Err(DirectoryError::ResetExpired) } else { Ok(user_id) }
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

    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
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
                let user_id = self.usable_invitation(&token_hash, at)?;
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
                let user_id = self.usable_reset(&token_hash, at)?;
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

impl Directory {
    /// The state after `event`.
    fn evolve(&mut self, event: DirectoryEvent) {
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

aggregate!(Directory { TYPE: AGGREGATE_TYPE, command: DirectoryCommand, event: DirectoryEvent, error: DirectoryError });
