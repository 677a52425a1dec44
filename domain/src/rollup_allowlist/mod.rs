//! The rollup allowlist: the usage event types that may reach the cross-tenant
//! rollups (internal operations only). One platform-wide aggregate, changed by
//! operators. Ingestion stamps each usage event with whether its type was on the list
//! when it arrived, so the rollups follow the log's order and a rebuild gives the
//! same totals.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

use crate::aggregate::{aggregate, events};
use crate::error::{DomainError, ErrorKind};
use crate::usage::valid_event_type;

/// The aggregate type.
pub const AGGREGATE_TYPE: &str = "rollup_allowlist";
/// The id of the one allowlist.
pub const ALLOWLIST_ID: &str = "global";

/// A change to the allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollupAllowlistCommand {
    /// Let usage of this type reach the rollups. Adding a listed type changes nothing.
    Allow {
        /// The usage event type.
        event_type: String,
    },
    /// Stop it. Removing an unlisted type changes nothing.
    Disallow {
        /// The usage event type.
        event_type: String,
    },
}

events! {
    /// What happened to the allowlist.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum RollupAllowlistEvent {
        /// Usage of this type now reaches the rollups.
        "rollup_allowlist.allowed" => Allowed {
            /// The usage event type.
            event_type: String,
        },
        /// Usage of this type no longer reaches the rollups.
        "rollup_allowlist.disallowed" => Disallowed {
            /// The usage event type.
            event_type: String,
        },
    }
}

/// Why an allowlist change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollupAllowlistError {
    /// The event type is not a usage event type.
    #[error("event_type must be 1 to 100 of A-Z a-z 0-9 . _ : - starting with a letter or digit")]
    InvalidEventType,
}

impl DomainError for RollupAllowlistError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }

    fn code(&self) -> &'static str {
        "invalid_event_type"
    }
}

/// The allowlist.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RollupAllowlist {
    /// The listed event types.
    pub event_types: BTreeSet<String>,
}

impl RollupAllowlist {
    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
    fn decide(&self, command: RollupAllowlistCommand) -> Result<Option<RollupAllowlistEvent>, RollupAllowlistError> {
        let (event_type, allow) = match command {
            RollupAllowlistCommand::Allow { event_type } => (event_type, true),
            RollupAllowlistCommand::Disallow { event_type } => (event_type, false),
        };
        if !valid_event_type(&event_type) {
            return Err(RollupAllowlistError::InvalidEventType);
        }
        Ok(match (allow, self.event_types.contains(&event_type)) {
            (true, false) => Some(RollupAllowlistEvent::Allowed { event_type }),
            (false, true) => Some(RollupAllowlistEvent::Disallowed { event_type }),
            _ => None,
        })
    }

    /// The state after `event`.
    fn evolve(&mut self, event: RollupAllowlistEvent) {
        match event {
            RollupAllowlistEvent::Allowed { event_type } => {
                self.event_types.insert(event_type);
            }
            RollupAllowlistEvent::Disallowed { event_type } => {
                self.event_types.remove(&event_type);
            }
        }
    }
}

aggregate!(RollupAllowlist {
    TYPE: AGGREGATE_TYPE,
    command: RollupAllowlistCommand,
    event: RollupAllowlistEvent,
    error: RollupAllowlistError
});

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn allowed(t: &str) -> RollupAllowlistEvent {
        RollupAllowlistEvent::Allowed { event_type: t.into() }
    }

    #[test]
    fn allows_a_type() {
        TestFramework::<RollupAllowlist>::with(())
            .given_no_previous_events()
            .when(RollupAllowlistCommand::Allow { event_type: "api.call".into() })
            .then_expect_events(vec![allowed("api.call")]);
    }

    #[test]
    fn allowing_twice_changes_nothing() {
        TestFramework::<RollupAllowlist>::with(())
            .given(vec![allowed("api.call")])
            .when(RollupAllowlistCommand::Allow { event_type: "api.call".into() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn disallows_a_listed_type_only() {
        TestFramework::<RollupAllowlist>::with(())
            .given(vec![allowed("api.call")])
            .when(RollupAllowlistCommand::Disallow { event_type: "api.call".into() })
            .then_expect_events(vec![RollupAllowlistEvent::Disallowed { event_type: "api.call".into() }]);
        TestFramework::<RollupAllowlist>::with(())
            .given_no_previous_events()
            .when(RollupAllowlistCommand::Disallow { event_type: "api.call".into() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn refuses_a_malformed_type() {
        TestFramework::<RollupAllowlist>::with(())
            .given_no_previous_events()
            .when(RollupAllowlistCommand::Allow { event_type: "no spaces".into() })
            .then_expect_error(RollupAllowlistError::InvalidEventType);
    }
}
