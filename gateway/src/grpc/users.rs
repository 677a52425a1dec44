//! gRPC `keel.v1.UserService`: tenant user administration. Lists read the identity
//! index (ADR 0009), which is current with every committed command.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use keel_commands::bus::CommandContext;
use keel_commands::identity_queries;
use keel_commands::sessions::Sessions;
use keel_commands::users::{UserChanged, UserCommands};
use keel_domain::access::{Action, Principal, TenantRole};
use keel_domain::directory::{Acting, DirectoryCommand, PasswordPolicy, UserRole, UserStatus};
use keel_domain::ids::{SessionId, UserId};
use keel_domain::session::RevokeReason;

use super::fields::{rfc3339, tenant_id};
use super::status::{coded, invalid_argument, status};
use crate::auth::Authenticator;
use crate::proto::user_service_server::UserService;
use crate::proto::{
    ChangePasswordRequest, ChangeUserRoleRequest, Invitation, InviteUserRequest, ListInvitationsRequest,
    ListInvitationsResponse, ListUserSessionsResponse, ListUsersRequest, ListUsersResponse, RevokeSessionRequest,
    Session, SetPasswordPolicyRequest, User, UserCommandResponse, UserRequest,
};

/// Largest page.
const MAX_PAGE: u32 = 200;
/// Default page.
const DEFAULT_PAGE: u32 = 50;

/// The user administration API.
pub struct UserApi {
    users: Arc<UserCommands>,
    sessions: Arc<Sessions>,
    auth: Arc<Authenticator>,
    pool: PgPool,
}

impl UserApi {
    /// The API over `users` and `sessions`, authenticating with `auth`, listing from `pool`.
    pub fn new(users: Arc<UserCommands>, sessions: Arc<Sessions>, auth: Arc<Authenticator>, pool: PgPool) -> Self {
        Self { users, sessions, auth, pool }
    }
}

fn user_id(raw: &str) -> Result<UserId, Status> {
    raw.trim().parse().map_err(|_| invalid_argument("invalid_user_id", "user_id is not a user id (usr_…)"))
}

/// Who acts, for the directory's owner rules.
fn acting(principal: &Principal) -> Result<Acting, Status> {
    match principal {
        Principal::Operator { .. } => Ok(Acting::Platform),
        Principal::TenantUser { role: TenantRole::Owner, .. } => Ok(Acting::Owner),
        Principal::TenantUser { role: TenantRole::Admin, .. } => Ok(Acting::Admin),
        _ => Err(coded(tonic::Code::PermissionDenied, "permission_denied", "you may not do this")),
    }
}

fn respond(done: UserChanged) -> UserCommandResponse {
    UserCommandResponse { user_id: done.user_id, position: done.position }
}

fn page_size(raw: u32) -> i64 {
    i64::from(if raw == 0 { DEFAULT_PAGE } else { raw.min(MAX_PAGE) })
}

/// A page token is the last user id of the previous page.
fn page_after(raw: &str) -> Result<String, Status> {
    if raw.is_empty() {
        return Ok(String::new());
    }
    user_id(raw).map(|u| u.to_string()).map_err(|_| invalid_argument("invalid_page_token", "page_token is malformed"))
}

fn unavailable(err: sqlx::Error) -> Status {
    tracing::error!(error = %err, "user listing failed");
    coded(tonic::Code::Unavailable, "unavailable", "the service is temporarily unavailable; retry")
}

impl UserApi {
    async fn administer(
        &self,
        rpc: &'static str,
        request: Request<UserRequest>,
        command: impl FnOnce(UserId, Acting, DateTime<Utc>) -> DirectoryCommand,
    ) -> Result<Response<UserCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let user = user_id(&req.user_id)?;
        super::run(&self.auth, rpc, &metadata, Action::ManageUsers, Some(&tenant), &req.idempotency_key, {
            let tenant = tenant.clone();
            |ctx: CommandContext, principal| async move {
                let cmd = command(user, acting(&principal)?, ctx.received_at);
                self.users.administer(&ctx, &tenant, cmd).await.map(respond).map_err(|e| status(&e))
            }
        })
        .await
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn invite_user(&self, request: Request<InviteUserRequest>) -> Result<Response<UserCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        super::run(&self.auth, "InviteUser", &metadata, Action::ManageUsers, Some(&tenant), &req.idempotency_key, {
            let tenant = tenant.clone();
            |ctx, principal| async move {
                acting(&principal)?;
                self.users.invite(&ctx, &tenant, &req.email, &req.role).await.map(respond).map_err(|e| status(&e))
            }
        })
        .await
    }

    async fn resend_invitation(&self, request: Request<UserRequest>) -> Result<Response<UserCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let user = user_id(&req.user_id)?;
        let key = req.idempotency_key;
        super::run(&self.auth, "ResendInvitation", &metadata, Action::ManageUsers, Some(&tenant), &key, {
            let tenant = tenant.clone();
            |ctx, principal| async move {
                acting(&principal)?;
                self.users.resend_invitation(&ctx, &tenant, &user).await.map(respond).map_err(|e| status(&e))
            }
        })
        .await
    }

    async fn change_user_role(
        &self,
        request: Request<ChangeUserRoleRequest>,
    ) -> Result<Response<UserCommandResponse>, Status> {
        let (metadata, extensions, req) = request.into_parts();
        let role: UserRole =
            req.role.parse().map_err(|_| invalid_argument("invalid_role", "role must be owner, admin or user"))?;
        let inner =
            UserRequest { tenant_id: req.tenant_id, user_id: req.user_id, idempotency_key: req.idempotency_key };
        let request = Request::from_parts(metadata, extensions, inner);
        self.administer("ChangeUserRole", request, |user_id, acting, _| DirectoryCommand::ChangeRole {
            user_id,
            role,
            acting,
        })
        .await
    }

    async fn disable_user(&self, request: Request<UserRequest>) -> Result<Response<UserCommandResponse>, Status> {
        self.administer("DisableUser", request, |user_id, acting, _| DirectoryCommand::Disable { user_id, acting })
            .await
    }

    async fn enable_user(&self, request: Request<UserRequest>) -> Result<Response<UserCommandResponse>, Status> {
        self.administer("EnableUser", request, |user_id, acting, _| DirectoryCommand::Enable { user_id, acting }).await
    }

    async fn delete_user(&self, request: Request<UserRequest>) -> Result<Response<UserCommandResponse>, Status> {
        self.administer("DeleteUser", request, |user_id, acting, at| DirectoryCommand::Delete { user_id, acting, at })
            .await
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<UserRequest>,
    ) -> Result<Response<UserCommandResponse>, Status> {
        self.administer("RevokeUserSessions", request, |user_id, _, _| DirectoryCommand::RevokeSessions { user_id })
            .await
    }

    async fn revoke_session(
        &self,
        request: Request<RevokeSessionRequest>,
    ) -> Result<Response<UserCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let session: SessionId = req
            .session_id
            .trim()
            .parse()
            .map_err(|_| invalid_argument("invalid_session_id", "session_id is not a session id (ses_…)"))?;
        let key = req.idempotency_key;
        super::run(&self.auth, "RevokeSession", &metadata, Action::ManageUsers, Some(&tenant), &key, {
            let tenant = tenant.clone();
            |ctx, _| async move {
                let owner = identity_queries::session_owner(&self.pool, session.as_str(), tenant.as_str())
                    .await
                    .map_err(unavailable)?;
                let owner =
                    owner.ok_or_else(|| coded(tonic::Code::NotFound, "session_not_found", "session not found"))?;
                let position = self
                    .sessions
                    .revoke(&ctx, session.as_str(), RevokeReason::Administrative)
                    .await
                    .map_err(|e| status(&e))?;
                Ok(UserCommandResponse { user_id: owner, position })
            }
        })
        .await
    }

    async fn set_password_policy(
        &self,
        request: Request<SetPasswordPolicyRequest>,
    ) -> Result<Response<UserCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let policy = PasswordPolicy {
            min_length: req.min_length,
            require_lowercase: req.require_lowercase,
            require_uppercase: req.require_uppercase,
            require_digit: req.require_digit,
            require_symbol: req.require_symbol,
        };
        let ttl = if req.invitation_ttl_days == 0 {
            keel_domain::directory::DEFAULT_INVITATION_TTL_DAYS
        } else {
            req.invitation_ttl_days
        };
        let key = req.idempotency_key;
        super::run(&self.auth, "SetPasswordPolicy", &metadata, Action::ManageUsers, Some(&tenant), &key, {
            let tenant = tenant.clone();
            |ctx, principal| async move {
                acting(&principal)?;
                let cmd = DirectoryCommand::SetPolicy { password_policy: policy, invitation_ttl_days: ttl };
                self.users.administer(&ctx, &tenant, cmd).await.map(respond).map_err(|e| status(&e))
            }
        })
        .await
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<UserCommandResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        // Any signed-in user may change their own password: a read with no target passes for all.
        let key = req.idempotency_key;
        super::run(
            &self.auth,
            "ChangePassword",
            &metadata,
            Action::ReadTenant,
            None,
            &key,
            |ctx, principal| async move {
                let (Principal::TenantUser { id, .. } | Principal::Operator { id } | Principal::Auditor { id }) =
                    principal
                else {
                    return Err(coded(
                        tonic::Code::PermissionDenied,
                        "permission_denied",
                        "this credential has no password",
                    ));
                };
                let user: UserId = id.parse().map_err(|_| {
                    coded(tonic::Code::PermissionDenied, "permission_denied", "this credential has no password")
                })?;
                self.users
                    .change_password(&ctx, &user, &req.current_password, &req.new_password)
                    .await
                    .map(respond)
                    .map_err(|e| status(&e))
            },
        )
        .await
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let role = match req.role.trim() {
            "" => None,
            raw => Some(
                raw.parse::<UserRole>()
                    .ok()
                    .filter(|r| !r.is_platform())
                    .ok_or_else(|| invalid_argument("invalid_role", "role must be owner, admin or user"))?,
            ),
        };
        let status_filter = match req.status.trim() {
            "" => None,
            raw => Some(
                [UserStatus::Invited, UserStatus::Active, UserStatus::Disabled]
                    .into_iter()
                    .find(|s| s.as_str() == raw)
                    .ok_or_else(|| invalid_argument("invalid_status", "status must be invited, active or disabled"))?,
            ),
        };
        let after = page_after(&req.page_token)?;
        let limit = page_size(req.page_size);
        super::run(&self.auth, "ListUsers", &metadata, Action::ReadUsers, Some(&tenant), "", {
            let tenant = tenant.clone();
            |_, _| async move {
                let rows = identity_queries::users(
                    &self.pool,
                    tenant.as_str(),
                    &after,
                    role.map(|r| r.as_str()),
                    status_filter.map(|s| s.as_str()),
                    limit + 1,
                )
                .await
                .map_err(unavailable)?;
                let (rows, next) = split_page(rows, limit, |r| r.user_id.clone());
                let users = rows
                    .into_iter()
                    .map(|u| User {
                        user_id: u.user_id,
                        email: u.email,
                        role: u.role,
                        status: u.status,
                        created_at: rfc3339(u.created_at),
                    })
                    .collect();
                Ok(ListUsersResponse { users, next_page_token: next })
            }
        })
        .await
    }

    async fn list_invitations(
        &self,
        request: Request<ListInvitationsRequest>,
    ) -> Result<Response<ListInvitationsResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let after = page_after(&req.page_token)?;
        let limit = page_size(req.page_size);
        super::run(&self.auth, "ListInvitations", &metadata, Action::ReadUsers, Some(&tenant), "", {
            let tenant = tenant.clone();
            |_, _| async move {
                let rows = identity_queries::invitations(&self.pool, tenant.as_str(), &after, limit + 1)
                    .await
                    .map_err(unavailable)?;
                let (rows, next) = split_page(rows, limit, |r| r.user_id.clone());
                let invitations = rows
                    .into_iter()
                    .map(|i| Invitation {
                        user_id: i.user_id,
                        email: i.email,
                        role: i.role,
                        expires_at: rfc3339(i.expires_at),
                        expired: i.expired,
                    })
                    .collect();
                Ok(ListInvitationsResponse { invitations, next_page_token: next })
            }
        })
        .await
    }

    async fn list_user_sessions(
        &self,
        request: Request<UserRequest>,
    ) -> Result<Response<ListUserSessionsResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let tenant = tenant_id(&req.tenant_id)?;
        let user = user_id(&req.user_id)?;
        super::run(&self.auth, "ListUserSessions", &metadata, Action::ReadUsers, Some(&tenant), "", {
            let tenant = tenant.clone();
            |_, _| async move {
                let exists = identity_queries::user_exists(&self.pool, user.as_str(), tenant.as_str())
                    .await
                    .map_err(unavailable)?;
                if !exists {
                    return Err(coded(tonic::Code::NotFound, "user_not_found", "user not found"));
                }
                let rows = identity_queries::live_sessions(&self.pool, user.as_str(), tenant.as_str())
                    .await
                    .map_err(unavailable)?;
                let sessions = rows
                    .into_iter()
                    .map(|s| Session {
                        session_id: s.session_id,
                        opened_at: rfc3339(s.opened_at),
                        expires_at: rfc3339(s.expires_at),
                        last_refreshed_at: s.refreshed_at.map(rfc3339).unwrap_or_default(),
                    })
                    .collect();
                Ok(ListUserSessionsResponse { sessions })
            }
        })
        .await
    }
}

/// The first `limit` rows, and the next page token if there were more.
fn split_page<R>(mut rows: Vec<R>, limit: i64, key: impl Fn(&R) -> String) -> (Vec<R>, String) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more { rows.last().map(key).unwrap_or_default() } else { String::new() };
    (rows, next)
}
