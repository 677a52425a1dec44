//! Contextual authorization (ADR 0005): a decision depends on who asks, in which
//! tenant, on which resource and action, and on the tenant's plan.

use std::collections::BTreeSet;

use crate::app::Scope;
use crate::envelope::{Actor, ActorType};
use crate::ids::TenantId;
use crate::plan::Plan;

/// A role of a tenant user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantRole {
    /// Everything in the tenant, including plan and owners.
    Owner,
    /// User management and configuration, not the plan.
    Admin,
    /// The managed apps' features only.
    User,
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A platform operator (including the bootstrap operator credential).
    Operator {
        /// Operator id.
        id: String,
    },
    /// A platform auditor: reads everything, changes nothing.
    Auditor {
        /// Auditor id.
        id: String,
    },
    /// A user of one tenant.
    TenantUser {
        /// User id.
        id: String,
        /// The user's tenant.
        tenant_id: TenantId,
        /// The user's role there.
        role: TenantRole,
    },
    /// A managed app, by one of its API keys.
    App {
        /// App id.
        id: String,
        /// The key it presented.
        key_id: String,
        /// What that key may do.
        scopes: BTreeSet<Scope>,
    },
}

impl Principal {
    /// The actor recorded in events caused by this principal.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Operator { id } => Actor { kind: ActorType::Operator, id: id.clone() },
            Principal::Auditor { id } => Actor { kind: ActorType::Auditor, id: id.clone() },
            Principal::TenantUser { id, .. } => Actor { kind: ActorType::User, id: id.clone() },
            Principal::App { id, .. } => Actor { kind: ActorType::App, id: id.clone() },
        }
    }
}

/// What the caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create a tenant.
    ProvisionTenant,
    /// Suspend a tenant.
    SuspendTenant,
    /// Lift a suspension.
    ReactivateTenant,
    /// Change a tenant's plan.
    ChangePlan,
    /// Set a tenant's profile (industry and region); operators only.
    UpdateTenantProfile,
    /// Request a tenant's deletion.
    RequestTenantDeletion,
    /// Undo a deletion request.
    RestoreTenant,
    /// Read one tenant's registry entry.
    ReadTenant,
    /// List all tenants.
    ListTenants,
    /// Invite, change roles, disable, enable, delete users, end their sessions, set the password policy.
    ManageUsers,
    /// List users, invitations and sessions.
    ReadUsers,
    /// Register, update, disable and enable managed apps; issue and revoke their keys.
    ManageApps,
    /// List managed apps and their keys (prefixes only).
    ReadApps,
    /// Define flags and set tenants' flag values.
    ManageFlags,
    /// Read a tenant's flags (snapshot, OFREP).
    ReadFlags,
    /// Override a tenant's entitlements.
    ManageEntitlements,
    /// Read a tenant's entitlements.
    ReadEntitlements,
    /// Set deployment targets; publish and roll back routing snapshots.
    ManageRouting,
    /// Read routing snapshots.
    ReadRouting,
    /// Report what a fleet agent sees of a tenant's deployment.
    ReportHealth,
    /// Read the fleet's health and drift.
    ReadFleetHealth,
    /// Report billable usage.
    RecordUsage,
    /// Read a tenant's billing ledger: usage totals and the raw events (export).
    ReadBilling,
    /// Change which usage event types reach the cross-tenant rollups.
    ManageRollups,
    /// Read the cross-tenant rollups (internal operations: operators only).
    ReadRollups,
    /// Read and export the audit trail.
    ReadAudit,
    /// Send an app's own audit records.
    RecordAudit,
    /// Read the system's health: components, error rates and latencies (FR-SYS-005).
    ReadSystemHealth,
}

/// The context of the request: the target tenant (if any) and its plan (if known).
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    /// The tenant the action is about.
    pub tenant: Option<&'a TenantId>,
    /// That tenant's plan.
    pub plan: Option<Plan>,
}

/// Why access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The caller may not do this.
    #[error("not permitted")]
    NotPermitted,
    /// The target is in another tenant: answer as if it did not exist.
    #[error("not found")]
    Hidden,
}

/// Decides whether `principal` may perform `action` on `target`.
pub fn authorize(principal: &Principal, action: Action, target: Target<'_>) -> Result<(), Denied> {
    use Action::*;
    match principal {
        Principal::Operator { .. } => Ok(()),
        Principal::Auditor { .. } => match action {
            ReadTenant | ListTenants | ReadUsers | ReadApps | ReadFlags | ReadEntitlements | ReadRouting
            | ReadFleetHealth | ReadBilling | ReadAudit | ReadSystemHealth => Ok(()),
            _ => Err(Denied::NotPermitted),
        },
        Principal::TenantUser { tenant_id, role, .. } => {
            let own = target.tenant == Some(tenant_id);
            match (action, role) {
                (_, _) if target.tenant.is_some() && !own => Err(Denied::Hidden),
                (ReadTenant | ReadFlags | ReadEntitlements, _) => Ok(()),
                (ChangePlan, TenantRole::Owner) => Ok(()),
                (ReadBilling | ReadAudit, TenantRole::Owner) if own => Ok(()),
                (ManageUsers | ReadUsers, TenantRole::Owner | TenantRole::Admin) if own => Ok(()),
                _ => Err(Denied::NotPermitted),
            }
        }
        Principal::App { scopes, .. } => {
            let needed = match action {
                ReadFlags | ReadEntitlements => Scope::FlagsRead,
                ReportHealth | ReadRouting => Scope::FleetWrite,
                RecordUsage => Scope::BillingWrite,
                ReadBilling => Scope::BillingRead,
                RecordAudit => Scope::AuditWrite,
                _ => return Err(Denied::NotPermitted),
            };
            if scopes.contains(&needed) { Ok(()) } else { Err(Denied::NotPermitted) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u8) -> TenantId {
        format!("tnt_01jd00000000000000000000{n:02}").parse().unwrap()
    }

    fn user(role: TenantRole) -> Principal {
        Principal::TenantUser { id: "usr_1".into(), tenant_id: tenant(1), role }
    }

    #[test]
    fn operators_may_do_everything() {
        let op = Principal::Operator { id: "op".into() };
        assert_eq!(authorize(&op, Action::ProvisionTenant, Target::default()), Ok(()));
        assert_eq!(authorize(&op, Action::SuspendTenant, Target { tenant: Some(&tenant(3)), plan: None }), Ok(()));
    }

    #[test]
    fn auditors_only_read() {
        let auditor = Principal::Auditor { id: "a".into() };
        assert_eq!(authorize(&auditor, Action::ListTenants, Target::default()), Ok(()));
        assert_eq!(authorize(&auditor, Action::SuspendTenant, Target::default()), Err(Denied::NotPermitted));
    }

    #[test]
    fn only_owners_change_the_plan_of_their_own_tenant() {
        let own = Target { tenant: Some(&tenant(1)), plan: Some(Plan::Pro) };
        assert_eq!(authorize(&user(TenantRole::Owner), Action::ChangePlan, own), Ok(()));
        assert_eq!(authorize(&user(TenantRole::Admin), Action::ChangePlan, own), Err(Denied::NotPermitted));
        assert_eq!(authorize(&user(TenantRole::User), Action::ChangePlan, own), Err(Denied::NotPermitted));
    }

    #[test]
    fn only_operators_update_a_tenant_profile() {
        let own = Target { tenant: Some(&tenant(1)), plan: Some(Plan::Pro) };
        let op = Principal::Operator { id: "op".into() };
        assert_eq!(authorize(&op, Action::UpdateTenantProfile, own), Ok(()));
        for role in [TenantRole::Owner, TenantRole::Admin, TenantRole::User] {
            assert_eq!(authorize(&user(role), Action::UpdateTenantProfile, own), Err(Denied::NotPermitted));
        }
        let other = Target { tenant: Some(&tenant(2)), plan: None };
        assert_eq!(authorize(&user(TenantRole::Owner), Action::UpdateTenantProfile, other), Err(Denied::Hidden));
        let auditor = Principal::Auditor { id: "a".into() };
        assert_eq!(authorize(&auditor, Action::UpdateTenantProfile, own), Err(Denied::NotPermitted));
        let app =
            Principal::App { id: "app_1".into(), key_id: "key_1".into(), scopes: Scope::ALL.into_iter().collect() };
        assert_eq!(authorize(&app, Action::UpdateTenantProfile, own), Err(Denied::NotPermitted));
    }

    #[test]
    fn only_operators_and_auditors_read_the_system_health() {
        let operator = Principal::Operator { id: "op".into() };
        let auditor = Principal::Auditor { id: "a".into() };
        for principal in [operator, auditor] {
            assert_eq!(authorize(&principal, Action::ReadSystemHealth, Target::default()), Ok(()));
        }
        for role in [TenantRole::Owner, TenantRole::Admin, TenantRole::User] {
            assert_eq!(authorize(&user(role), Action::ReadSystemHealth, Target::default()), Err(Denied::NotPermitted));
        }
        let app =
            Principal::App { id: "app_1".into(), key_id: "key_1".into(), scopes: Scope::ALL.into_iter().collect() };
        assert_eq!(authorize(&app, Action::ReadSystemHealth, Target::default()), Err(Denied::NotPermitted));
    }

    #[test]
    fn another_tenant_is_hidden_not_forbidden() {
        let other = Target { tenant: Some(&tenant(2)), plan: None };
        for action in [Action::ReadTenant, Action::ChangePlan, Action::SuspendTenant] {
            assert_eq!(authorize(&user(TenantRole::Owner), action, other), Err(Denied::Hidden));
        }
    }

    #[test]
    fn owners_and_admins_manage_their_own_users_only() {
        let own = Target { tenant: Some(&tenant(1)), plan: None };
        let other = Target { tenant: Some(&tenant(2)), plan: None };
        for role in [TenantRole::Owner, TenantRole::Admin] {
            assert_eq!(authorize(&user(role), Action::ManageUsers, own), Ok(()));
            assert_eq!(authorize(&user(role), Action::ReadUsers, own), Ok(()));
            assert_eq!(authorize(&user(role), Action::ManageUsers, other), Err(Denied::Hidden));
            assert_eq!(authorize(&user(role), Action::ManageUsers, Target::default()), Err(Denied::NotPermitted));
        }
        assert_eq!(authorize(&user(TenantRole::User), Action::ReadUsers, own), Err(Denied::NotPermitted));
        let auditor = Principal::Auditor { id: "a".into() };
        assert_eq!(authorize(&auditor, Action::ReadUsers, own), Ok(()));
        assert_eq!(authorize(&auditor, Action::ManageUsers, own), Err(Denied::NotPermitted));
    }

    #[test]
    fn apps_do_what_their_key_scopes_allow() {
        let app = |scopes: &[Scope]| Principal::App {
            id: "app_1".into(),
            key_id: "key_1".into(),
            scopes: scopes.iter().copied().collect(),
        };
        let any = Target { tenant: Some(&tenant(7)), plan: None };
        assert_eq!(authorize(&app(&[Scope::FlagsRead]), Action::ReadFlags, any), Ok(()));
        assert_eq!(authorize(&app(&[Scope::FlagsRead]), Action::ReadEntitlements, any), Ok(()));
        assert_eq!(authorize(&app(&[Scope::BillingWrite]), Action::ReadFlags, any), Err(Denied::NotPermitted));
        assert_eq!(authorize(&app(&[Scope::FleetWrite]), Action::ReportHealth, any), Ok(()));
        assert_eq!(authorize(&app(&[Scope::FlagsRead]), Action::ReportHealth, any), Err(Denied::NotPermitted));
        for action in [Action::ManageFlags, Action::ManageApps, Action::ReadTenant, Action::ProvisionTenant] {
            assert_eq!(authorize(&app(&Scope::ALL), action, any), Err(Denied::NotPermitted));
        }
    }

    #[test]
    fn tenant_users_read_their_own_flags_and_entitlements_only() {
        let own = Target { tenant: Some(&tenant(1)), plan: None };
        let other = Target { tenant: Some(&tenant(2)), plan: None };
        assert_eq!(authorize(&user(TenantRole::User), Action::ReadFlags, own), Ok(()));
        assert_eq!(authorize(&user(TenantRole::User), Action::ReadEntitlements, own), Ok(()));
        assert_eq!(authorize(&user(TenantRole::Owner), Action::ReadFlags, other), Err(Denied::Hidden));
        assert_eq!(authorize(&user(TenantRole::Owner), Action::ManageFlags, own), Err(Denied::NotPermitted));
    }

    #[test]
    fn billing_is_read_by_its_scope_operators_auditors_and_the_own_owner_only() {
        let own = Target { tenant: Some(&tenant(1)), plan: None };
        let other = Target { tenant: Some(&tenant(2)), plan: None };
        let app = |scope: Scope| Principal::App { id: "app_1".into(), key_id: "key_1".into(), scopes: [scope].into() };
        assert_eq!(authorize(&app(Scope::BillingWrite), Action::RecordUsage, own), Ok(()));
        assert_eq!(authorize(&app(Scope::BillingRead), Action::RecordUsage, own), Err(Denied::NotPermitted));
        assert_eq!(authorize(&app(Scope::BillingRead), Action::ReadBilling, other), Ok(()));
        assert_eq!(authorize(&app(Scope::BillingWrite), Action::ReadBilling, own), Err(Denied::NotPermitted));
        assert_eq!(authorize(&user(TenantRole::Owner), Action::ReadBilling, own), Ok(()));
        assert_eq!(authorize(&user(TenantRole::Owner), Action::ReadBilling, other), Err(Denied::Hidden));
        assert_eq!(authorize(&user(TenantRole::Admin), Action::ReadBilling, own), Err(Denied::NotPermitted));
        let auditor = Principal::Auditor { id: "a".into() };
        assert_eq!(authorize(&auditor, Action::ReadBilling, other), Ok(()));
    }

    #[test]
    fn auditors_operators_and_the_own_owner_read_the_audit_trail_and_apps_write_to_it() {
        let own = Target { tenant: Some(&tenant(1)), plan: None };
        let other = Target { tenant: Some(&tenant(2)), plan: None };
        let auditor = Principal::Auditor { id: "a".into() };
        assert_eq!(authorize(&auditor, Action::ReadAudit, other), Ok(()));
        assert_eq!(authorize(&user(TenantRole::Owner), Action::ReadAudit, own), Ok(()));
        assert_eq!(authorize(&user(TenantRole::Owner), Action::ReadAudit, other), Err(Denied::Hidden));
        assert_eq!(authorize(&user(TenantRole::Admin), Action::ReadAudit, own), Err(Denied::NotPermitted));
        let app = |scope: Scope| Principal::App { id: "app_1".into(), key_id: "key_1".into(), scopes: [scope].into() };
        assert_eq!(authorize(&app(Scope::AuditWrite), Action::RecordAudit, own), Ok(()));
        assert_eq!(authorize(&app(Scope::AuditWrite), Action::ReadAudit, own), Err(Denied::NotPermitted));
        assert_eq!(authorize(&app(Scope::BillingWrite), Action::RecordAudit, own), Err(Denied::NotPermitted));
    }

    #[test]
    fn only_operators_read_and_manage_the_rollups() {
        let op = Principal::Operator { id: "op".into() };
        let auditor = Principal::Auditor { id: "a".into() };
        let app = Principal::App { id: "app_1".into(), key_id: "key_1".into(), scopes: Scope::ALL.into() };
        for action in [Action::ReadRollups, Action::ManageRollups] {
            assert_eq!(authorize(&op, action, Target::default()), Ok(()));
            assert_eq!(authorize(&auditor, action, Target::default()), Err(Denied::NotPermitted));
            assert_eq!(authorize(&app, action, Target::default()), Err(Denied::NotPermitted));
            assert_eq!(authorize(&user(TenantRole::Owner), action, Target::default()), Err(Denied::NotPermitted));
        }
    }

    #[test]
    fn tenant_users_cannot_provision_or_list() {
        assert_eq!(
            authorize(&user(TenantRole::Owner), Action::ProvisionTenant, Target::default()),
            Err(Denied::NotPermitted)
        );
        assert_eq!(
            authorize(&user(TenantRole::Owner), Action::ListTenants, Target::default()),
            Err(Denied::NotPermitted)
        );
    }
}
