//! The identity index (ADR 0009): tenants' login status, users, credentials references
//! and sessions, folded from tenant, directory and session events inside the
//! transaction that appends them. Logins, refreshes and revocation checks read it,
//! so a revocation is in force the moment its event commits.

use cqrs_es::persist::SerializedEvent;
use sqlx::PgConnection;

use keel_domain::directory::{self, DirectoryEvent, PLATFORM};
use keel_domain::session::{self, SessionEvent};
use keel_domain::tenant::{self, TenantEvent};

use crate::write_index::{WriteSideIndex, decode};

/// Why sessions end when they end because of something else than the session itself.
pub mod end_reason {
    /// The user's role changed.
    pub const ROLE_CHANGED: &str = "role_changed";
    /// The user was disabled.
    pub const USER_DISABLED: &str = "user_disabled";
    /// The user was deleted.
    pub const USER_DELETED: &str = "user_deleted";
    /// The password was changed or reset.
    pub const PASSWORD_CHANGED: &str = "password_changed";
    /// An administrator revoked all of the user's sessions.
    pub const SESSIONS_REVOKED: &str = "sessions_revoked";
    /// The tenant was suspended.
    pub const TENANT_SUSPENDED: &str = "tenant_suspended";
    /// The tenant's deletion was requested.
    pub const TENANT_DELETED: &str = "tenant_deleted";
    /// The browser session a client's session belongs to ended (ADR 0024).
    pub const PARENT_ENDED: &str = "parent_ended";
}

/// The identity index: `auth_tenants`, `auth_users`, `auth_credentials` and `auth_sessions`.
#[derive(Debug, Clone, Copy)]
pub struct IdentityIndex;

impl WriteSideIndex for IdentityIndex {
    fn affects(&self, event: &SerializedEvent) -> bool {
        match event.aggregate_type.as_str() {
            tenant::AGGREGATE_TYPE => {
                !matches!(event.event_type.as_str(), "tenant.plan_changed" | "tenant.profile_changed")
            }
            directory::AGGREGATE_TYPE => event.event_type != "directory.policy_set",
            session::AGGREGATE_TYPE => true,
            _ => false,
        }
    }

    async fn apply(&self, tx: &mut PgConnection, event: &SerializedEvent) -> Result<(), sqlx::Error> {
        match event.aggregate_type.as_str() {
            tenant::AGGREGATE_TYPE => apply_tenant(tx, &event.aggregate_id, decode(event)?).await,
            directory::AGGREGATE_TYPE => {
                let tenant_id = (event.aggregate_id != PLATFORM).then_some(event.aggregate_id.as_str());
                apply_directory(tx, tenant_id, decode(event)?).await
            }
            session::AGGREGATE_TYPE => apply_session(tx, decode(event)?).await,
            _ => Ok(()),
        }
    }
}

async fn apply_tenant(tx: &mut PgConnection, tenant_id: &str, event: TenantEvent) -> Result<(), sqlx::Error> {
    let status = |s: &'static str| {
        sqlx::query("UPDATE auth_tenants SET status = $2 WHERE tenant_id = $1").bind(tenant_id).bind(s)
    };
    match event {
        TenantEvent::Provisioned { domain, .. } => {
            sqlx::query(
                "INSERT INTO auth_tenants (tenant_id, domain, status) VALUES ($1, $2, 'active')
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(domain)
            .execute(&mut *tx)
            .await?;
        }
        TenantEvent::Suspended { .. } => {
            end_tenant_sessions(tx, tenant_id, "suspended", end_reason::TENANT_SUSPENDED).await?;
        }
        TenantEvent::DeletionRequested { .. } => {
            end_tenant_sessions(tx, tenant_id, "pending_deletion", end_reason::TENANT_DELETED).await?;
        }
        TenantEvent::Reactivated {} => {
            status("active").execute(&mut *tx).await?;
        }
        TenantEvent::Restored { status: restored } => {
            status(restored.as_str()).execute(&mut *tx).await?;
        }
        TenantEvent::Purged { .. } => {
            // Its domain may be taken by a new tenant; its users and credentials go.
            sqlx::query("DELETE FROM auth_tenants WHERE tenant_id = $1").bind(tenant_id).execute(&mut *tx).await?;
            sqlx::query(
                "DELETE FROM auth_credentials WHERE user_id IN (SELECT user_id FROM auth_users WHERE tenant_id = $1)",
            )
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM auth_users WHERE tenant_id = $1").bind(tenant_id).execute(&mut *tx).await?;
        }
        TenantEvent::PlanChanged { .. } | TenantEvent::ProfileChanged { .. } => {}
    }
    Ok(())
}

async fn apply_directory(
    tx: &mut PgConnection,
    tenant_id: Option<&str>,
    event: DirectoryEvent,
) -> Result<(), sqlx::Error> {
    let ends = event.ends_sessions_of().cloned();
    match &event {
        DirectoryEvent::Invited { user_id, email, role, invitation, invited_at } => {
            sqlx::query(
                "INSERT INTO auth_users (user_id, tenant_id, email, email_key, role, status, invitation_hash,
                                         invitation_expires_at, created_at, updated_at)
                 VALUES ($1, $2, $3, lower($3), $4, 'invited', $5, $6, $7, $7)",
            )
            .bind(user_id.as_str())
            .bind(tenant_id)
            .bind(email)
            .bind(role.as_str())
            .bind(&invitation.hash)
            .bind(invitation.expires_at)
            .bind(invited_at)
            .execute(&mut *tx)
            .await?;
        }
        DirectoryEvent::Created { user_id, email, role, credential_id, created_at } => {
            sqlx::query(
                "INSERT INTO auth_users (user_id, tenant_id, email, email_key, role, status, credential_id,
                                         created_at, updated_at)
                 VALUES ($1, $2, $3, lower($3), $4, 'active', $5, $6, $6)",
            )
            .bind(user_id.as_str())
            .bind(tenant_id)
            .bind(email)
            .bind(role.as_str())
            .bind(credential_id)
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
        }
        DirectoryEvent::InvitationResent { user_id, invitation } => {
            sqlx::query(
                "UPDATE auth_users SET invitation_hash = $2, invitation_expires_at = $3, updated_at = now()
                 WHERE user_id = $1",
            )
            .bind(user_id.as_str())
            .bind(&invitation.hash)
            .bind(invitation.expires_at)
            .execute(&mut *tx)
            .await?;
        }
        DirectoryEvent::InvitationAccepted { user_id, credential_id, .. } => {
            sqlx::query(
                "UPDATE auth_users SET status = 'active', credential_id = $2, invitation_hash = NULL,
                                       invitation_expires_at = NULL, updated_at = now()
                 WHERE user_id = $1",
            )
            .bind(user_id.as_str())
            .bind(credential_id)
            .execute(&mut *tx)
            .await?;
        }
        DirectoryEvent::RoleChanged { user_id, to, .. } => {
            sqlx::query("UPDATE auth_users SET role = $2, updated_at = now() WHERE user_id = $1")
                .bind(user_id.as_str())
                .bind(to.as_str())
                .execute(&mut *tx)
                .await?;
        }
        DirectoryEvent::Disabled { user_id } => {
            sqlx::query("UPDATE auth_users SET status = 'disabled', updated_at = now() WHERE user_id = $1")
                .bind(user_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        DirectoryEvent::Enabled { user_id, status } => {
            sqlx::query("UPDATE auth_users SET status = $2, updated_at = now() WHERE user_id = $1")
                .bind(user_id.as_str())
                .bind(status.as_str())
                .execute(&mut *tx)
                .await?;
        }
        DirectoryEvent::Deleted { user_id, .. } => {
            sqlx::query("DELETE FROM auth_users WHERE user_id = $1").bind(user_id.as_str()).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM auth_credentials WHERE user_id = $1")
                .bind(user_id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        DirectoryEvent::PasswordChanged { user_id, credential_id, .. } => {
            sqlx::query(
                "UPDATE auth_users SET credential_id = $2, reset_hash = NULL, reset_expires_at = NULL,
                                       updated_at = now()
                 WHERE user_id = $1",
            )
            .bind(user_id.as_str())
            .bind(credential_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM auth_credentials WHERE user_id = $1 AND credential_id <> $2")
                .bind(user_id.as_str())
                .bind(credential_id)
                .execute(&mut *tx)
                .await?;
        }
        DirectoryEvent::PasswordResetRequested { user_id, reset } => {
            sqlx::query(
                "UPDATE auth_users SET reset_hash = $2, reset_expires_at = $3, updated_at = now() WHERE user_id = $1",
            )
            .bind(user_id.as_str())
            .bind(&reset.hash)
            .bind(reset.expires_at)
            .execute(&mut *tx)
            .await?;
        }
        DirectoryEvent::SessionsRevoked { .. } | DirectoryEvent::PolicySet { .. } => {}
    }
    if let Some(user_id) = ends {
        let reason = match event {
            DirectoryEvent::RoleChanged { .. } => end_reason::ROLE_CHANGED,
            DirectoryEvent::Disabled { .. } => end_reason::USER_DISABLED,
            DirectoryEvent::Deleted { .. } => end_reason::USER_DELETED,
            DirectoryEvent::PasswordChanged { .. } => end_reason::PASSWORD_CHANGED,
            _ => end_reason::SESSIONS_REVOKED,
        };
        sqlx::query(
            "UPDATE auth_sessions SET revoked_at = now(), revoke_reason = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id.as_str())
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        end_late_children(tx, "user_id", user_id.as_str()).await?;
    }
    Ok(())
}

async fn apply_session(tx: &mut PgConnection, event: SessionEvent) -> Result<(), sqlx::Error> {
    match event {
        SessionEvent::Opened { session_id, user_id, tenant_id, role, opened_at, expires_at, parent } => {
            // A client's session is born ended if its browser session has ended. The parent's
            // row is locked so that a revocation of the parent running concurrently either
            // commits first (seen here) or waits and then ends this child too.
            let parent_ended = match &parent {
                Some(p) => sqlx::query_scalar::<_, bool>(
                    "SELECT revoked_at IS NOT NULL OR expires_at <= now() FROM auth_sessions
                     WHERE session_id = $1 FOR SHARE",
                )
                .bind(p.session_id.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(true),
                None => false,
            };
            sqlx::query(
                "INSERT INTO auth_sessions (session_id, user_id, tenant_id, role, opened_at, expires_at,
                                            parent_session_id, client_id, revoked_at, revoke_reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                         CASE WHEN $9 THEN now() END, CASE WHEN $9 THEN $10 END)",
            )
            .bind(session_id.as_str())
            .bind(user_id.as_str())
            .bind(tenant_id.as_ref().map(|t| t.as_str()))
            .bind(role.as_str())
            .bind(opened_at)
            .bind(expires_at)
            .bind(parent.as_ref().map(|p| p.session_id.as_str()))
            .bind(parent.as_ref().map(|p| p.client_id.as_str()))
            .bind(parent_ended)
            .bind(end_reason::PARENT_ENDED)
            .execute(&mut *tx)
            .await?;
        }
        SessionEvent::Revoked { session_id, reason, .. } => {
            sqlx::query(
                "UPDATE auth_sessions SET revoked_at = now(), revoke_reason = $2
                 WHERE session_id = $1 AND revoked_at IS NULL",
            )
            .bind(session_id.as_str())
            .bind(reason.as_str())
            .execute(&mut *tx)
            .await?;
            // A separate statement (a fresh snapshot): it also sees a child whose opening
            // waited for the parent's row lock taken just above.
            sqlx::query(
                "UPDATE auth_sessions SET revoked_at = now(), revoke_reason = $2
                 WHERE parent_session_id = $1 AND revoked_at IS NULL",
            )
            .bind(session_id.as_str())
            .bind(end_reason::PARENT_ENDED)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

/// Sets the tenant's status and ends its sessions, in one statement.
async fn end_tenant_sessions(
    tx: &mut PgConnection,
    tenant_id: &str,
    status: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH tenant AS (UPDATE auth_tenants SET status = $3 WHERE tenant_id = $1)
         UPDATE auth_sessions SET revoked_at = now(), revoke_reason = $2 WHERE tenant_id = $1 AND revoked_at IS NULL",
    )
    .bind(tenant_id)
    .bind(reason)
    .bind(status)
    .execute(&mut *tx)
    .await?;
    end_late_children(tx, "tenant_id", tenant_id).await
}

/// Ends the clients' sessions (ADR 0024) of the user or tenant that a statement before it
/// could not see: one whose opening waited for its browser session's row lock committed
/// after that statement's snapshot. A fresh statement sees it.
async fn end_late_children(tx: &mut PgConnection, column: &'static str, id: &str) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE auth_sessions SET revoked_at = now(), revoke_reason = $2
         WHERE {column} = $1 AND parent_session_id IS NOT NULL AND revoked_at IS NULL"
    );
    sqlx::query(&sql).bind(id).bind(end_reason::PARENT_ENDED).execute(&mut *tx).await?;
    Ok(())
}
