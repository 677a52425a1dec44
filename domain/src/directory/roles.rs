//! Who a user is (its role and status) and who acts on it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::errors::DirectoryError;

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
