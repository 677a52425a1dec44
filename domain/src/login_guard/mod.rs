//! Login guards record brute-force throttles as events. The aggregate id is a subject
//! key chosen by the service (`account:<sha256 hex>` or `address:<sha256 hex>`), never
//! an e-mail address or an IP address in clear.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{aggregate, events};
use crate::error::{DomainError, ErrorKind};

/// The aggregate type name of login guards in the event store.
pub const AGGREGATE_TYPE: &str = "login_guard";

/// What kind of subject was throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThrottledSubject {
    /// One account (e-mail address), whatever the client address.
    Account,
    /// One client address, whatever the account.
    Address,
}

/// A command on a login guard.
#[derive(Debug, Clone, PartialEq)]
pub enum LoginGuardCommand {
    /// Refuse sign-ins of the subject until `until`, after `failures` failed attempts.
    Throttle {
        /// What kind of subject.
        subject: ThrottledSubject,
        /// How many failed attempts led to it.
        failures: u32,
        /// When sign-ins are allowed again.
        until: DateTime<Utc>,
        /// When.
        at: DateTime<Utc>,
    },
}

events! {
    /// What happened to a login guard.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum LoginGuardEvent {
        /// Sign-ins of the subject are refused until `until`.
        "login.throttled" => Throttled {
            /// What kind of subject.
            subject: ThrottledSubject,
            /// How many failed attempts led to it.
            failures: u32,
            /// When sign-ins are allowed again.
            until: DateTime<Utc>,
            /// When.
            throttled_at: DateTime<Utc>,
        },
    }
}

/// Why a login guard command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginGuardError {
    /// The throttle would end at or before the time it starts.
    #[error("until must be in the future")]
    InvalidUntil,
}

impl DomainError for LoginGuardError {
    fn kind(&self) -> ErrorKind {
        match self {
            LoginGuardError::InvalidUntil => ErrorKind::InvalidArgument,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            LoginGuardError::InvalidUntil => "invalid_until",
        }
    }
}

/// The login guard aggregate's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoginGuard {
    /// How many times the subject was throttled.
    pub throttles: u32,
    /// The end of the latest throttle.
    pub locked_until: Option<DateTime<Utc>>,
}

impl LoginGuard {
    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
    fn decide(&self, command: LoginGuardCommand) -> Result<LoginGuardEvent, LoginGuardError> {
        match command {
            LoginGuardCommand::Throttle { until, at, .. } if until <= at => Err(LoginGuardError::InvalidUntil),
            LoginGuardCommand::Throttle { subject, failures, until, at } => {
                Ok(LoginGuardEvent::Throttled { subject, failures, until, throttled_at: at })
            }
        }
    }

    /// The state after `event`.
    fn evolve(&mut self, event: LoginGuardEvent) {
        match event {
            LoginGuardEvent::Throttled { until, .. } => {
                self.throttles = self.throttles.saturating_add(1);
                self.locked_until = Some(until);
            }
        }
    }
}

aggregate!(LoginGuard {
    TYPE: AGGREGATE_TYPE,
    command: LoginGuardCommand,
    event: LoginGuardEvent,
    error: LoginGuardError
});

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use cqrs_es::Aggregate;
    use cqrs_es::test::TestFramework;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn throttle(until: DateTime<Utc>) -> LoginGuardCommand {
        LoginGuardCommand::Throttle { subject: ThrottledSubject::Account, failures: 5, until, at: t0() }
    }

    #[test]
    fn throttles_a_subject() {
        let until = t0() + Duration::minutes(15);
        let event =
            LoginGuardEvent::Throttled { subject: ThrottledSubject::Account, failures: 5, until, throttled_at: t0() };
        TestFramework::<LoginGuard>::with(())
            .given_no_previous_events()
            .when(throttle(until))
            .then_expect_events(vec![event.clone()]);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!((json["type"].as_str(), json["subject"].as_str()), (Some("login.throttled"), Some("account")));
        let mut guard = LoginGuard::default();
        guard.apply(event.clone());
        guard.apply(event);
        assert_eq!(guard, LoginGuard { throttles: 2, locked_until: Some(until) });
    }

    #[test]
    fn a_throttle_must_end_in_the_future() {
        TestFramework::<LoginGuard>::with(())
            .given_no_previous_events()
            .when(throttle(t0()))
            .then_expect_error(LoginGuardError::InvalidUntil);
        assert_eq!(LoginGuardError::InvalidUntil.code(), "invalid_until");
        assert_eq!(LoginGuardError::InvalidUntil.kind(), ErrorKind::InvalidArgument);
    }
}
