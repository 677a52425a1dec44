//! Sessions: one aggregate per signed-in session (aggregate id = the session id).
//! Opening and revoking are events so that revocation is audited and reaches every
//! gateway; a logout repeated is not an error.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{aggregate, events};
use crate::directory::UserRole;
use crate::error::{DomainError, ErrorKind};
use crate::ids::{SessionId, TenantId, UserId};

/// The aggregate type name of sessions in the event store.
pub const AGGREGATE_TYPE: &str = "session";

/// Why a session ended before it expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The user signed out.
    Logout,
    /// An administrator or the platform ended it (or a change to the user did).
    Administrative,
    /// A refresh token was presented twice, so it may have been stolen.
    RefreshTokenReuse,
    /// The authorization code the session was issued for was presented again (ADR 0024).
    AuthorizationCodeReuse,
}

impl RevokeReason {
    /// The reason's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::Administrative => "administrative",
            RevokeReason::RefreshTokenReuse => "refresh_token_reuse",
            RevokeReason::AuthorizationCodeReuse => "authorization_code_reuse",
        }
    }
}

/// The browser session a client's session belongs to (OpenID Connect code flow, ADR 0024).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ParentSession {
    /// The browser session (the `keel_session` cookie's).
    pub session_id: SessionId,
    /// The client (managed app id) the session was issued to.
    pub client_id: String,
}

/// A command on a session.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    /// Open the session after a successful sign-in.
    Open {
        /// The session's id.
        session_id: SessionId,
        /// Who signed in.
        user_id: UserId,
        /// The user's tenant; none for platform users.
        tenant_id: Option<TenantId>,
        /// The user's role when the session opened.
        role: UserRole,
        /// When the session ends at the latest.
        expires_at: DateTime<Utc>,
        /// When.
        at: DateTime<Utc>,
        /// For a session a client got through the authorization code flow: the browser
        /// session it belongs to (ending that ends this one) and the client.
        parent: Option<ParentSession>,
    },
    /// End the session. Revoking a revoked session changes nothing.
    Revoke {
        /// Why.
        reason: RevokeReason,
        /// When.
        at: DateTime<Utc>,
    },
}

impl SessionCommand {
    /// What identifies the request for idempotency: the command and its arguments,
    /// without times.
    pub fn fingerprint(&self) -> String {
        match self {
            SessionCommand::Open { session_id, user_id, tenant_id, role, .. } => {
                let tenant = tenant_id.as_ref().map(TenantId::as_str).unwrap_or("");
                format!("open|{session_id}|{user_id}|{tenant}|{role}")
            }
            SessionCommand::Revoke { reason, .. } => format!("revoke|{}", reason.as_str()),
        }
    }
}

events! {
    /// What happened to a session.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum SessionEvent {
        /// The session opened.
        "session.opened" => Opened {
            /// The session.
            session_id: SessionId,
            /// Who signed in.
            user_id: UserId,
            /// The user's tenant; absent for platform users.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            tenant_id: Option<TenantId>,
            /// The user's role when the session opened.
            role: UserRole,
            /// When.
            opened_at: DateTime<Utc>,
            /// When it ends at the latest.
            expires_at: DateTime<Utc>,
            /// The browser session and client of a session opened by a code exchange;
            /// absent for sign-ins.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            parent: Option<ParentSession>,
        },
        /// The session ended before it expired.
        "session.revoked" => Revoked {
            /// The session.
            session_id: SessionId,
            /// Why.
            reason: RevokeReason,
            /// When.
            revoked_at: DateTime<Utc>,
        },
    }
}

/// Why a session command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The session was opened already.
    #[error("session already exists")]
    AlreadyOpen,
    /// No such session.
    #[error("session not found")]
    NotFound,
    /// The session would expire at or before the time it opens.
    #[error("expires_at must be in the future")]
    InvalidExpiry,
}

impl DomainError for SessionError {
    fn kind(&self) -> ErrorKind {
        match self {
            SessionError::AlreadyOpen => ErrorKind::AlreadyExists,
            SessionError::NotFound => ErrorKind::NotFound,
            SessionError::InvalidExpiry => ErrorKind::InvalidArgument,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            SessionError::AlreadyOpen => "session_exists",
            SessionError::NotFound => "session_not_found",
            SessionError::InvalidExpiry => "invalid_expiry",
        }
    }
}

/// The session aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The session's id, once opened.
    pub id: Option<SessionId>,
    /// Who signed in.
    pub user_id: Option<UserId>,
    /// The user's tenant; none for platform users.
    pub tenant_id: Option<TenantId>,
    /// Whether the session was revoked.
    pub revoked: bool,
}

impl Session {
    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
    fn decide(&self, command: SessionCommand) -> Result<Option<SessionEvent>, SessionError> {
        match (command, &self.id) {
            (SessionCommand::Open { .. }, Some(_)) => Err(SessionError::AlreadyOpen),
            (SessionCommand::Open { expires_at, at, .. }, None) if expires_at <= at => Err(SessionError::InvalidExpiry),
            (SessionCommand::Open { session_id, user_id, tenant_id, role, expires_at, at, parent }, None) => {
                Ok(Some(SessionEvent::Opened {
                    session_id,
                    user_id,
                    tenant_id,
                    role,
                    opened_at: at,
                    expires_at,
                    parent,
                }))
            }
            (SessionCommand::Revoke { .. }, None) => Err(SessionError::NotFound),
            (SessionCommand::Revoke { .. }, Some(_)) if self.revoked => Ok(None),
            (SessionCommand::Revoke { reason, at }, Some(id)) => {
                Ok(Some(SessionEvent::Revoked { session_id: id.clone(), reason, revoked_at: at }))
            }
        }
    }

    /// The state after `event`.
    fn evolve(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Opened { session_id, user_id, tenant_id, .. } => {
                self.id = Some(session_id);
                self.user_id = Some(user_id);
                self.tenant_id = tenant_id;
            }
            SessionEvent::Revoked { .. } => self.revoked = true,
        }
    }
}

aggregate!(Session { TYPE: AGGREGATE_TYPE, command: SessionCommand, event: SessionEvent, error: SessionError });

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<Session>;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn sid() -> SessionId {
        "ses_01jd0000000000000000000001".parse().unwrap()
    }

    fn uid() -> UserId {
        "usr_01jd0000000000000000000001".parse().unwrap()
    }

    fn tid() -> TenantId {
        "tnt_01jd0000000000000000000001".parse().unwrap()
    }

    fn open(tenant_id: Option<TenantId>, expires_at: DateTime<Utc>) -> SessionCommand {
        SessionCommand::Open {
            session_id: sid(),
            user_id: uid(),
            tenant_id,
            role: UserRole::Admin,
            expires_at,
            at: t0(),
            parent: None,
        }
    }

    fn opened(tenant_id: Option<TenantId>) -> SessionEvent {
        SessionEvent::Opened {
            session_id: sid(),
            user_id: uid(),
            tenant_id,
            role: UserRole::Admin,
            opened_at: t0(),
            expires_at: t0() + Duration::hours(8),
            parent: None,
        }
    }

    fn revoked(reason: RevokeReason) -> SessionEvent {
        SessionEvent::Revoked { session_id: sid(), reason, revoked_at: t0() + Duration::hours(1) }
    }

    #[test]
    fn opens_a_session() {
        Given::with(())
            .given_no_previous_events()
            .when(open(Some(tid()), t0() + Duration::hours(8)))
            .then_expect_events(vec![opened(Some(tid()))]);
    }

    #[test]
    fn a_client_session_names_its_browser_session() {
        let parent = ParentSession {
            session_id: "ses_01jd0000000000000000000002".parse().unwrap(),
            client_id: "app_01jd0000000000000000000001".into(),
        };
        let SessionCommand::Open { session_id, user_id, tenant_id, role, expires_at, at, .. } =
            open(Some(tid()), t0() + Duration::hours(8))
        else {
            unreachable!()
        };
        let child =
            SessionCommand::Open { session_id, user_id, tenant_id, role, expires_at, at, parent: Some(parent.clone()) };
        let SessionEvent::Opened { session_id, user_id, tenant_id, role, opened_at, expires_at, .. } =
            opened(Some(tid()))
        else {
            unreachable!()
        };
        let event =
            SessionEvent::Opened { session_id, user_id, tenant_id, role, opened_at, expires_at, parent: Some(parent) };
        Given::with(()).given_no_previous_events().when(child).then_expect_events(vec![event.clone()]);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["parent"]["session_id"], "ses_01jd0000000000000000000002");
        assert!(serde_json::to_value(opened(None)).unwrap().get("parent").is_none(), "sign-ins carry no parent");
    }

    #[test]
    fn a_session_opens_once() {
        Given::with(())
            .given(vec![opened(Some(tid()))])
            .when(open(Some(tid()), t0() + Duration::hours(8)))
            .then_expect_error(SessionError::AlreadyOpen);
    }

    #[test]
    fn a_session_must_expire_after_it_opens() {
        Given::with(())
            .given_no_previous_events()
            .when(open(None, t0()))
            .then_expect_error(SessionError::InvalidExpiry);
    }

    #[test]
    fn revokes_an_open_session() {
        Given::with(())
            .given(vec![opened(None)])
            .when(SessionCommand::Revoke { reason: RevokeReason::Logout, at: t0() + Duration::hours(1) })
            .then_expect_events(vec![revoked(RevokeReason::Logout)]);
    }

    #[test]
    fn revoking_twice_changes_nothing() {
        Given::with(())
            .given(vec![opened(None), revoked(RevokeReason::RefreshTokenReuse)])
            .when(SessionCommand::Revoke { reason: RevokeReason::Logout, at: t0() + Duration::hours(2) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn revoking_an_unknown_session_is_not_found() {
        Given::with(())
            .given_no_previous_events()
            .when(SessionCommand::Revoke { reason: RevokeReason::Administrative, at: t0() })
            .then_expect_error(SessionError::NotFound);
    }

    #[test]
    fn platform_sessions_carry_no_tenant() {
        let json = serde_json::to_value(opened(None)).unwrap();
        assert_eq!(json["type"], "session.opened");
        assert!(json.get("tenant_id").is_none());
        assert_eq!(serde_json::from_value::<SessionEvent>(json).unwrap(), opened(None));
        let json = serde_json::to_value(opened(Some(tid()))).unwrap();
        assert_eq!(json["tenant_id"], tid().as_str());
        let json = serde_json::to_value(revoked(RevokeReason::RefreshTokenReuse)).unwrap();
        assert_eq!(
            (json["type"].as_str(), json["reason"].as_str()),
            (Some("session.revoked"), Some("refresh_token_reuse"))
        );
        assert_eq!(RevokeReason::RefreshTokenReuse.as_str(), "refresh_token_reuse");
    }

    #[test]
    fn errors_have_stable_codes() {
        assert_eq!(SessionError::AlreadyOpen.code(), "session_exists");
        assert_eq!(SessionError::NotFound.kind(), ErrorKind::NotFound);
        assert_eq!(SessionError::InvalidExpiry.kind(), ErrorKind::InvalidArgument);
    }
}
