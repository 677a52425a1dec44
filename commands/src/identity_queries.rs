//! Reads of the identity index (ADR 0009) that serve the gateway: pages of a tenant's
//! users and invitations, a user's live sessions, and the ended sessions whose access
//! tokens every gateway refuses. The index is current with every committed command.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A user as listed to administrators.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ListedUser {
    /// The user id.
    pub user_id: String,
    /// The e-mail address.
    pub email: String,
    /// The role.
    pub role: String,
    /// `invited`, `active` or `disabled`.
    pub status: String,
    /// When the user was invited or created.
    pub created_at: DateTime<Utc>,
}

/// An open invitation as listed to administrators.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ListedInvitation {
    /// The invited user's id.
    pub user_id: String,
    /// The e-mail address.
    pub email: String,
    /// The role offered.
    pub role: String,
    /// When the invitation expires.
    pub expires_at: DateTime<Utc>,
    /// Whether it has expired.
    pub expired: bool,
}

/// A session that is neither revoked nor expired.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LiveSession {
    /// The session id.
    pub session_id: String,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// When it was last refreshed, if ever.
    pub refreshed_at: Option<DateTime<Utc>>,
}

/// Up to `limit` of `tenant_id`'s users after `after`, by user id, optionally only
/// those with `role` and `status`.
pub async fn users(
    pool: &PgPool,
    tenant_id: &str,
    after: &str,
    role: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<ListedUser>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, email, role, status, created_at FROM auth_users
         WHERE tenant_id = $1 AND user_id > $2 AND ($3::text IS NULL OR role = $3)
           AND ($4::text IS NULL OR status = $4)
         ORDER BY user_id LIMIT $5",
    )
    .bind(tenant_id)
    .bind(after)
    .bind(role)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Up to `limit` of `tenant_id`'s open invitations after user id `after`, by user id.
pub async fn invitations(
    pool: &PgPool,
    tenant_id: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<ListedInvitation>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, email, role, invitation_expires_at AS expires_at, invitation_expires_at <= now() AS expired
         FROM auth_users
         WHERE tenant_id = $1 AND status = 'invited' AND invitation_expires_at IS NOT NULL AND user_id > $2
         ORDER BY user_id LIMIT $3",
    )
    .bind(tenant_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Whether `user_id` is a user of `tenant_id`.
pub async fn user_exists(pool: &PgPool, user_id: &str, tenant_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM auth_users WHERE user_id = $1 AND tenant_id = $2)")
        .bind(user_id)
        .bind(tenant_id)
        .fetch_one(pool)
        .await
}

/// `user_id`'s live sessions in `tenant_id` (at most 1000), by session id.
pub async fn live_sessions(pool: &PgPool, user_id: &str, tenant_id: &str) -> Result<Vec<LiveSession>, sqlx::Error> {
    sqlx::query_as(
        "SELECT session_id, opened_at, expires_at, refreshed_at FROM auth_sessions
         WHERE user_id = $1 AND tenant_id = $2 AND revoked_at IS NULL AND expires_at > now()
         ORDER BY session_id LIMIT 1000",
    )
    .bind(user_id)
    .bind(tenant_id)
    .fetch_all(pool)
    .await
}

/// The user whose session `session_id` is, if it is a session of `tenant_id`.
pub async fn session_owner(pool: &PgPool, session_id: &str, tenant_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM auth_sessions WHERE session_id = $1 AND tenant_id = $2")
        .bind(session_id)
        .bind(tenant_id)
        .fetch_optional(pool)
        .await
}

/// Every revoked session that has not expired yet, with its expiry.
pub async fn revoked_sessions(pool: &PgPool) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT session_id, expires_at FROM auth_sessions WHERE revoked_at IS NOT NULL AND expires_at > now()",
    )
    .fetch_all(pool)
    .await
}

/// The sessions revoked at or after `since - overlap_seconds`, with their expiry.
pub async fn revoked_since(
    pool: &PgPool,
    since: DateTime<Utc>,
    overlap_seconds: f64,
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT session_id, expires_at FROM auth_sessions
         WHERE revoked_at >= $1 - make_interval(secs => $2)",
    )
    .bind(since)
    .bind(overlap_seconds)
    .fetch_all(pool)
    .await
}

/// The e-mail address of user `user_id` (for OpenID Connect userinfo, ADR 0024).
pub async fn user_email(pool: &PgPool, user_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT email FROM auth_users WHERE user_id = $1").bind(user_id).fetch_optional(pool).await
}
