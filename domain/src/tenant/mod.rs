//! The tenant aggregate: provisioning and lifecycle (suspend, reactivate,
//! change plan, set profile, deletion with a 30-day recoverable grace, then purge).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{aggregate, events};
use crate::error::{DomainError, ErrorKind};
use crate::ids::TenantId;
use crate::plan::Plan;
use crate::validate;

#[cfg(test)]
mod tests;

/// The aggregate type name of tenants in the event store.
pub const AGGREGATE_TYPE: &str = "tenant";

/// How long a tenant whose deletion was requested can still be restored.
pub const DELETION_GRACE_DAYS: i64 = 30;

/// A command on a tenant.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantCommand {
    /// Create the tenant (its domain must already be claimed for it).
    Provision(ProvisionTenant),
    /// Deny all access to the tenant until it is reactivated.
    Suspend {
        /// Why (free text, optional).
        reason: String,
    },
    /// Lift a suspension.
    Reactivate,
    /// Move the tenant to another plan.
    ChangePlan {
        /// The new plan.
        plan: Plan,
    },
    /// Set the tenant's profile (build it with [`TenantCommand::set_profile`]).
    SetProfile {
        /// The new industry slug (`None` clears it).
        industry: Option<String>,
        /// The new region slug (`None` clears it).
        region: Option<String>,
    },
    /// Start the recoverable deletion grace period.
    RequestDeletion {
        /// When the request was made.
        at: DateTime<Utc>,
    },
    /// Undo a deletion request within the grace period.
    Restore {
        /// When the restore was requested.
        at: DateTime<Utc>,
    },
    /// Remove the tenant for good once the grace period is over.
    Purge {
        /// When the purge runs.
        at: DateTime<Utc>,
    },
}

impl TenantCommand {
    /// A [`TenantCommand::SetProfile`] from raw values, validated and normalized.
    pub fn set_profile(industry: Option<&str>, region: Option<&str>) -> Result<Self, TenantError> {
        Ok(TenantCommand::SetProfile {
            industry: slug(industry, TenantError::InvalidIndustry)?,
            region: slug(region, TenantError::InvalidRegion)?,
        })
    }

    /// What identifies the request for idempotency: the command and its arguments,
    /// without the times at which it was (re)sent.
    pub fn fingerprint(&self) -> String {
        match self {
            TenantCommand::Provision(p) => format!(
                "provision|{}|{}|{}|{}|{}|{:?}|{:?}",
                p.tenant_id, p.name, p.domain, p.plan, p.owner_email, p.industry, p.region
            ),
            TenantCommand::Suspend { reason } => format!("suspend|{reason}"),
            TenantCommand::Reactivate => "reactivate".into(),
            TenantCommand::ChangePlan { plan } => format!("change_plan|{plan}"),
            TenantCommand::SetProfile { industry, region } => format!("set_profile|{industry:?}|{region:?}"),
            TenantCommand::RequestDeletion { .. } => "request_deletion".into(),
            TenantCommand::Restore { .. } => "restore".into(),
            TenantCommand::Purge { .. } => "purge".into(),
        }
    }
}

/// The fields of a provisioning request, validated by [`ProvisionTenant::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionTenant {
    /// The new tenant's id.
    pub tenant_id: TenantId,
    /// Display name.
    pub name: String,
    /// Unique domain, normalized.
    pub domain: String,
    /// Initial plan.
    pub plan: Plan,
    /// E-mail of the first owner, who gets invited.
    pub owner_email: String,
    /// Industry slug, if known.
    pub industry: Option<String>,
    /// Region slug, if known.
    pub region: Option<String>,
    /// When it was provisioned.
    pub at: DateTime<Utc>,
}

impl ProvisionTenant {
    /// Validates and normalizes the raw request fields.
    pub fn new(
        tenant_id: TenantId,
        name: &str,
        domain: &str,
        plan: &str,
        owner_email: &str,
        at: DateTime<Utc>,
    ) -> Result<Self, TenantError> {
        Ok(Self {
            tenant_id,
            name: validate::display_name(name).ok_or(TenantError::InvalidName)?,
            domain: validate::domain(domain).ok_or(TenantError::InvalidDomain)?,
            plan: plan.parse().map_err(|_| TenantError::InvalidPlan)?,
            owner_email: validate::email(owner_email).ok_or(TenantError::InvalidOwnerEmail)?,
            industry: None,
            region: None,
            at,
        })
    }

    /// The same request with an industry and a region (raw values, validated and normalized).
    pub fn with_profile(self, industry: Option<&str>, region: Option<&str>) -> Result<Self, TenantError> {
        Ok(Self {
            industry: slug(industry, TenantError::InvalidIndustry)?,
            region: slug(region, TenantError::InvalidRegion)?,
            ..self
        })
    }
}

/// An optional profile value as a slug (see [`validate::slug`]), or `invalid`.
fn slug(raw: Option<&str>, invalid: TenantError) -> Result<Option<String>, TenantError> {
    raw.map(|raw| validate::slug(raw).ok_or(invalid)).transpose()
}

events! {
    /// What happened to a tenant.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum TenantEvent {
        /// The tenant was created, with its first owner to be invited.
        "tenant.provisioned" => Provisioned {
            /// The tenant's id.
            tenant_id: TenantId,
            /// Display name.
            name: String,
            /// Unique domain.
            domain: String,
            /// Initial plan.
            plan: Plan,
            /// E-mail of the first owner.
            owner_email: String,
            /// Industry slug, if given.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            industry: Option<String>,
            /// Region slug, if given.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            region: Option<String>,
            /// When.
            provisioned_at: DateTime<Utc>,
        },
        /// All access to the tenant is denied.
        "tenant.suspended" => Suspended {
            /// Why.
            reason: String,
        },
        /// The suspension was lifted.
        "tenant.reactivated" => Reactivated {},
        /// The tenant moved to another plan.
        "tenant.plan_changed" => PlanChanged {
            /// The previous plan.
            from: Plan,
            /// The new plan.
            to: Plan,
        },
        /// The tenant's profile changed; both values are the new ones (null clears).
        "tenant.profile_changed" => ProfileChanged {
            /// The industry slug, or null.
            industry: Option<String>,
            /// The region slug, or null.
            region: Option<String>,
        },
        /// Deletion was requested; the tenant can be restored until `purge_after`.
        "tenant.deletion_requested" => DeletionRequested {
            /// When.
            requested_at: DateTime<Utc>,
            /// When the grace period ends.
            purge_after: DateTime<Utc>,
        },
        /// The deletion request was withdrawn within the grace period.
        "tenant.restored" => Restored {
            /// The status the tenant returned to.
            status: TenantStatus,
        },
        /// The tenant was removed for good.
        "tenant.purged" => Purged {
            /// When.
            purged_at: DateTime<Utc>,
        },
    }
}

/// A tenant's lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Not provisioned (only an empty aggregate has this).
    #[default]
    Unprovisioned,
    /// In service.
    Active,
    /// All access denied.
    Suspended,
    /// Deletion requested; restorable until the grace period ends.
    PendingDeletion,
    /// Removed for good.
    Purged,
}

impl TenantStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Unprovisioned => "unprovisioned",
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::PendingDeletion => "pending_deletion",
            TenantStatus::Purged => "purged",
        }
    }
}

/// Why a tenant command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// The name is empty, too long or has control characters.
    #[error("name must be 1 to 200 characters")]
    InvalidName,
    /// The domain is not a valid lowercase DNS name.
    #[error("domain must be a DNS name such as `acme` or `acme.example.com`")]
    InvalidDomain,
    /// The plan is not in the catalog.
    #[error("plan must be one of free, pro, enterprise")]
    InvalidPlan,
    /// The owner's e-mail address is malformed.
    #[error("owner_email must be an e-mail address")]
    InvalidOwnerEmail,
    /// The industry is not a slug.
    #[error("industry must be a lowercase slug such as `fintech` (up to 64 of a-z, 0-9 and -, not starting with -)")]
    InvalidIndustry,
    /// The region is not a slug.
    #[error(
        "region must be a lowercase slug such as `ap-northeast-1` (up to 64 of a-z, 0-9 and -, not starting with -)"
    )]
    InvalidRegion,
    /// No such tenant.
    #[error("tenant not found")]
    NotFound,
    /// A tenant with this id exists already.
    #[error("tenant already exists")]
    AlreadyProvisioned,
    /// Only an active tenant can be suspended.
    #[error("tenant is not active")]
    NotActive,
    /// Only a suspended tenant can be reactivated.
    #[error("tenant is not suspended")]
    NotSuspended,
    /// The tenant is on that plan already.
    #[error("tenant is already on that plan")]
    SamePlan,
    /// The tenant has that industry and region already.
    #[error("tenant already has that industry and region")]
    SameProfile,
    /// The tenant's deletion is pending; restore it first.
    #[error("tenant deletion is pending")]
    DeletionPending,
    /// Only a tenant whose deletion is pending can be restored or purged.
    #[error("tenant deletion is not pending")]
    NotPendingDeletion,
    /// The grace period is over; the tenant can no longer be restored.
    #[error("the deletion grace period has ended")]
    GraceEnded,
    /// The grace period is still running; the tenant cannot be purged yet.
    #[error("the deletion grace period has not ended")]
    GraceNotEnded,
    /// The tenant was purged.
    #[error("tenant was deleted")]
    Purged,
}

impl DomainError for TenantError {
    fn kind(&self) -> ErrorKind {
        use TenantError::*;
        match self {
            InvalidName | InvalidDomain | InvalidPlan | InvalidOwnerEmail | InvalidIndustry | InvalidRegion => {
                ErrorKind::InvalidArgument
            }
            NotFound => ErrorKind::NotFound,
            AlreadyProvisioned => ErrorKind::AlreadyExists,
            NotActive | NotSuspended | SamePlan | SameProfile | DeletionPending | NotPendingDeletion | GraceEnded
            | GraceNotEnded => ErrorKind::FailedPrecondition,
            Purged => ErrorKind::Gone,
        }
    }

    fn code(&self) -> &'static str {
        use TenantError::*;
        match self {
            InvalidName => "invalid_name",
            InvalidDomain => "invalid_domain",
            InvalidPlan => "invalid_plan",
            InvalidOwnerEmail => "invalid_owner_email",
            InvalidIndustry => "invalid_industry",
            InvalidRegion => "invalid_region",
            NotFound => "tenant_not_found",
            AlreadyProvisioned => "tenant_exists",
            NotActive => "tenant_not_active",
            NotSuspended => "tenant_not_suspended",
            SamePlan => "same_plan",
            SameProfile => "same_profile",
            DeletionPending => "deletion_pending",
            NotPendingDeletion => "deletion_not_pending",
            GraceEnded => "grace_period_ended",
            GraceNotEnded => "grace_period_running",
            Purged => "tenant_purged",
        }
    }
}

/// The tenant aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// The tenant's id, once provisioned.
    pub id: Option<TenantId>,
    /// Current status.
    pub status: TenantStatus,
    /// Current plan.
    pub plan: Option<Plan>,
    /// Current industry slug.
    #[serde(default)]
    pub industry: Option<String>,
    /// Current region slug.
    #[serde(default)]
    pub region: Option<String>,
    /// The domain, kept so a purge can release it.
    pub domain: String,
    /// The status to return to on restore.
    pub status_before_deletion: Option<TenantStatus>,
    /// End of the deletion grace period.
    pub purge_after: Option<DateTime<Utc>>,
}

impl Tenant {
    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
    fn decide(&self, command: TenantCommand) -> Result<TenantEvent, TenantError> {
        use TenantStatus::*;
        match (self.status, command) {
            (Unprovisioned, TenantCommand::Provision(p)) => Ok(TenantEvent::Provisioned {
                tenant_id: p.tenant_id,
                name: p.name,
                domain: p.domain,
                plan: p.plan,
                owner_email: p.owner_email,
                industry: p.industry,
                region: p.region,
                provisioned_at: p.at,
            }),
            (Unprovisioned, _) => Err(TenantError::NotFound),
            (_, TenantCommand::Provision(_)) => Err(TenantError::AlreadyProvisioned),
            (Purged, _) => Err(TenantError::Purged),
            (Active, TenantCommand::Suspend { reason }) => {
                Ok(TenantEvent::Suspended { reason: reason.trim().to_string() })
            }
            (Suspended, TenantCommand::Reactivate) => Ok(TenantEvent::Reactivated {}),
            (PendingDeletion, TenantCommand::Restore { at }) => match self.purge_after {
                Some(end) if at < end => {
                    Ok(TenantEvent::Restored { status: self.status_before_deletion.unwrap_or(Active) })
                }
                _ => Err(TenantError::GraceEnded),
            },
            (PendingDeletion, TenantCommand::Purge { at }) => match self.purge_after {
                Some(end) if at >= end => Ok(TenantEvent::Purged { purged_at: at }),
                _ => Err(TenantError::GraceNotEnded),
            },
            (PendingDeletion, _) => Err(TenantError::DeletionPending),
            (_, TenantCommand::Suspend { .. }) => Err(TenantError::NotActive),
            (_, TenantCommand::Reactivate) => Err(TenantError::NotSuspended),
            (_, TenantCommand::Restore { .. } | TenantCommand::Purge { .. }) => Err(TenantError::NotPendingDeletion),
            (_, TenantCommand::ChangePlan { plan }) if self.plan == Some(plan) => Err(TenantError::SamePlan),
            (_, TenantCommand::ChangePlan { plan }) => {
                Ok(TenantEvent::PlanChanged { from: self.plan.unwrap_or(Plan::Free), to: plan })
            }
            (_, TenantCommand::SetProfile { industry, region })
                if self.industry == industry && self.region == region =>
            {
                Err(TenantError::SameProfile)
            }
            (_, TenantCommand::SetProfile { industry, region }) => Ok(TenantEvent::ProfileChanged { industry, region }),
            (_, TenantCommand::RequestDeletion { at }) => Ok(TenantEvent::DeletionRequested {
                requested_at: at,
                purge_after: at + Duration::days(DELETION_GRACE_DAYS),
            }),
        }
    }

    /// The state after `event`.
    fn evolve(&mut self, event: TenantEvent) {
        match event {
            TenantEvent::Provisioned { tenant_id, plan, domain, industry, region, .. } => {
                self.id = Some(tenant_id);
                self.plan = Some(plan);
                self.domain = domain;
                self.industry = industry;
                self.region = region;
                self.status = TenantStatus::Active;
            }
            TenantEvent::Suspended { .. } => self.status = TenantStatus::Suspended,
            TenantEvent::Reactivated {} => self.status = TenantStatus::Active,
            TenantEvent::PlanChanged { to, .. } => self.plan = Some(to),
            TenantEvent::ProfileChanged { industry, region } => {
                self.industry = industry;
                self.region = region;
            }
            TenantEvent::DeletionRequested { purge_after, .. } => {
                self.status_before_deletion = Some(self.status);
                self.purge_after = Some(purge_after);
                self.status = TenantStatus::PendingDeletion;
            }
            TenantEvent::Restored { status } => {
                self.status = status;
                self.status_before_deletion = None;
                self.purge_after = None;
            }
            TenantEvent::Purged { .. } => self.status = TenantStatus::Purged,
        }
    }
}

aggregate!(Tenant { TYPE: AGGREGATE_TYPE, command: TenantCommand, event: TenantEvent, error: TenantError });
