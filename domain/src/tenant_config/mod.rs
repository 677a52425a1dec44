//! A tenant's own configuration: its flag values and its entitlement overrides. One
//! aggregate per tenant (the aggregate id is the tenant id, so its events share the
//! tenant's Kafka key and order). The service checks that the tenant exists and
//! passes the flag's type; the catalog (`crate::catalog`) checks entitlements.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aggregate::{aggregate, events};
use crate::catalog::catalog;
use crate::error::{DomainError, ErrorKind};
use crate::flag::FlagType;

#[cfg(test)]
mod tests;

/// The aggregate type name of tenant configurations in the event store.
pub const AGGREGATE_TYPE: &str = "tenant_config";

/// A command on a tenant's configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantConfigCommand {
    /// Give the tenant its own value of a flag.
    SetFlag {
        /// The flag key.
        key: String,
        /// The flag's type (from its definition).
        flag_type: FlagType,
        /// The value.
        value: Value,
    },
    /// Drop the tenant's own value (its plan's default or the flag's default applies again).
    ClearFlag {
        /// The flag key.
        key: String,
    },
    /// Override one entitlement of the tenant's plan.
    OverrideEntitlement {
        /// A capability or quota key of the catalog.
        key: String,
        /// `true`/`false` for a capability; a non-negative integer or `null` (unlimited) for a quota.
        value: Value,
    },
    /// Drop an override (the plan's grant applies again).
    ClearEntitlementOverride {
        /// The entitlement key.
        key: String,
    },
}

impl TenantConfigCommand {
    /// What identifies the request for idempotency.
    pub fn fingerprint(&self) -> String {
        match self {
            TenantConfigCommand::SetFlag { key, value, .. } => format!("set_flag|{key}|{value}"),
            TenantConfigCommand::ClearFlag { key } => format!("clear_flag|{key}"),
            TenantConfigCommand::OverrideEntitlement { key, value } => format!("override|{key}|{value}"),
            TenantConfigCommand::ClearEntitlementOverride { key } => format!("clear_override|{key}"),
        }
    }
}

events! {
    /// What happened to a tenant's configuration.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum TenantConfigEvent {
        /// The tenant got its own value of a flag.
        "tenant_config.flag_set" => FlagSet {
            /// The flag key.
            key: String,
            /// The value.
            value: Value,
        },
        /// The tenant's own value of a flag was dropped.
        "tenant_config.flag_cleared" => FlagCleared {
            /// The flag key.
            key: String,
        },
        /// An entitlement of the tenant's plan was overridden.
        "tenant_config.entitlement_overridden" => EntitlementOverridden {
            /// The entitlement key.
            key: String,
            /// The value.
            value: Value,
        },
        /// An entitlement override was dropped.
        "tenant_config.entitlement_override_cleared" => EntitlementOverrideCleared {
            /// The entitlement key.
            key: String,
        },
    }
}

/// Why a tenant configuration command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantConfigError {
    /// The value does not match the flag's type.
    #[error("value does not match the flag's type")]
    TypeMismatch,
    /// The entitlement key is not in the plan catalog.
    #[error("unknown entitlement (see the plan catalog)")]
    UnknownEntitlement,
    /// The value does not fit the entitlement.
    #[error("a capability takes true or false; a quota takes a non-negative integer or null (unlimited)")]
    InvalidEntitlementValue,
}

impl DomainError for TenantConfigError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }

    fn code(&self) -> &'static str {
        match self {
            TenantConfigError::TypeMismatch => "type_mismatch",
            TenantConfigError::UnknownEntitlement => "unknown_entitlement",
            TenantConfigError::InvalidEntitlementValue => "invalid_entitlement_value",
        }
    }
}

/// A tenant's configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantConfig {
    /// Its own flag values.
    pub flags: BTreeMap<String, Value>,
    /// Its entitlement overrides.
    pub overrides: BTreeMap<String, Value>,
}

impl TenantConfig {
    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
    fn decide(&self, command: TenantConfigCommand) -> Result<Option<TenantConfigEvent>, TenantConfigError> {
        Ok(match command {
            TenantConfigCommand::SetFlag { key, flag_type, value } => {
                if !flag_type.accepts(&value) {
                    return Err(TenantConfigError::TypeMismatch);
                }
                (self.flags.get(&key) != Some(&value)).then_some(TenantConfigEvent::FlagSet { key, value })
            }
            TenantConfigCommand::ClearFlag { key } => {
                self.flags.contains_key(&key).then_some(TenantConfigEvent::FlagCleared { key })
            }
            TenantConfigCommand::OverrideEntitlement { key, value } => {
                let catalog = catalog();
                if catalog.kind(&key).is_none() {
                    return Err(TenantConfigError::UnknownEntitlement);
                }
                if !catalog.accepts(&key, &value) {
                    return Err(TenantConfigError::InvalidEntitlementValue);
                }
                (self.overrides.get(&key) != Some(&value))
                    .then_some(TenantConfigEvent::EntitlementOverridden { key, value })
            }
            TenantConfigCommand::ClearEntitlementOverride { key } => {
                self.overrides.contains_key(&key).then_some(TenantConfigEvent::EntitlementOverrideCleared { key })
            }
        })
    }

    /// The state after `event`.
    fn evolve(&mut self, event: TenantConfigEvent) {
        match event {
            TenantConfigEvent::FlagSet { key, value } => {
                self.flags.insert(key, value);
            }
            TenantConfigEvent::FlagCleared { key } => {
                self.flags.remove(&key);
            }
            TenantConfigEvent::EntitlementOverridden { key, value } => {
                self.overrides.insert(key, value);
            }
            TenantConfigEvent::EntitlementOverrideCleared { key } => {
                self.overrides.remove(&key);
            }
        }
    }
}

aggregate!(TenantConfig {
    TYPE: AGGREGATE_TYPE,
    command: TenantConfigCommand,
    event: TenantConfigEvent,
    error: TenantConfigError
});
