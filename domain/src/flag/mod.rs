//! Feature-flag definitions: one aggregate per flag key, defined by platform operators
//! with a type, a default, and optional defaults per plan. A tenant's own values live
//! in `tenant_config`; its effective value is its own value, else its plan's default,
//! else the flag's default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aggregate::{aggregate, events};
use crate::error::{DomainError, ErrorKind};
use crate::plan::Plan;

#[cfg(test)]
mod tests;

/// The aggregate type name of flag definitions in the event store.
pub const AGGREGATE_TYPE: &str = "flag";

/// Longest flag key.
pub const MAX_KEY_LEN: usize = 128;
/// Largest serialized flag value, in bytes.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// What values a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlagType {
    /// `true` or `false`.
    Boolean,
    /// A string.
    String,
    /// A number.
    Number,
    /// A JSON object or array.
    Object,
}

impl FlagType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagType::Boolean => "boolean",
            FlagType::String => "string",
            FlagType::Number => "number",
            FlagType::Object => "object",
        }
    }

    /// Whether `value` is of this type (and not too large).
    pub fn accepts(self, value: &Value) -> bool {
        let typed = match self {
            FlagType::Boolean => value.is_boolean(),
            FlagType::String => value.is_string(),
            FlagType::Number => value.is_number(),
            FlagType::Object => value.is_object() || value.is_array(),
        };
        typed && value.to_string().len() <= MAX_VALUE_BYTES
    }
}

impl std::str::FromStr for FlagType {
    type Err = FlagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "boolean" | "bool" => Ok(FlagType::Boolean),
            "string" => Ok(FlagType::String),
            "number" | "float" | "integer" => Ok(FlagType::Number),
            "object" | "json" => Ok(FlagType::Object),
            _ => Err(FlagError::InvalidType),
        }
    }
}

/// Whether `key` is a valid flag key: 1 to 128 of `a-z 0-9 . _ -`, starting with a
/// letter or digit (URL-safe, as OFREP clients put it in paths unencoded).
pub fn valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_KEY_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
}

/// A command on a flag definition.
#[derive(Debug, Clone, PartialEq)]
pub enum FlagCommand {
    /// Define the flag, or change its defaults or description (its type is fixed once defined).
    Define {
        /// The flag key (the aggregate id).
        key: String,
        /// Its type.
        flag_type: FlagType,
        /// The value when neither the tenant nor its plan sets one.
        default_value: Value,
        /// Defaults per plan.
        plan_defaults: BTreeMap<Plan, Value>,
        /// What it is for.
        description: String,
    },
}

impl FlagCommand {
    /// What identifies the request for idempotency.
    pub fn fingerprint(&self) -> String {
        let FlagCommand::Define { key, flag_type, default_value, plan_defaults, description } = self;
        let plans = serde_json::to_string(plan_defaults).unwrap_or_default();
        format!("define|{key}|{}|{default_value}|{plans}|{description}", flag_type.as_str())
    }
}

events! {
    /// What happened to a flag definition.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum FlagEvent {
        /// The flag was defined, or its defaults or description changed (the whole definition).
        "flag.defined" => Defined {
            /// The flag key.
            key: String,
            /// Its type.
            flag_type: FlagType,
            /// The default value.
            default_value: Value,
            /// Defaults per plan.
            #[serde(default)]
            plan_defaults: BTreeMap<Plan, Value>,
            /// What it is for.
            #[serde(default)]
            description: String,
        },
    }
}

/// Why a flag command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// The key is not a valid flag key.
    #[error("key must be 1 to 128 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")]
    InvalidKey,
    /// The type is not one Keel knows.
    #[error("type must be boolean, string, number or object")]
    InvalidType,
    /// A value does not match the flag's type (or is larger than 16 KiB).
    #[error("value does not match the flag's type")]
    TypeMismatch,
    /// The description is too long or has control characters.
    #[error("description must be at most 1000 characters")]
    InvalidDescription,
    /// The flag exists with another type; a type never changes.
    #[error("the flag exists with another type; define a new key instead")]
    TypeChanged,
    /// No such flag.
    #[error("flag not found")]
    NotFound,
}

impl DomainError for FlagError {
    fn kind(&self) -> ErrorKind {
        match self {
            FlagError::InvalidKey
            | FlagError::InvalidType
            | FlagError::TypeMismatch
            | FlagError::InvalidDescription => ErrorKind::InvalidArgument,
            FlagError::TypeChanged => ErrorKind::FailedPrecondition,
            FlagError::NotFound => ErrorKind::NotFound,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            FlagError::InvalidKey => "invalid_flag_key",
            FlagError::InvalidType => "invalid_flag_type",
            FlagError::TypeMismatch => "type_mismatch",
            FlagError::InvalidDescription => "invalid_description",
            FlagError::TypeChanged => "flag_type_changed",
            FlagError::NotFound => "flag_not_found",
        }
    }
}

/// A flag definition's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// The key, once defined.
    pub key: Option<String>,
    /// Its type.
    pub flag_type: Option<FlagType>,
    /// Default value.
    pub default_value: Value,
    /// Defaults per plan.
    pub plan_defaults: BTreeMap<Plan, Value>,
    /// Description.
    pub description: String,
}

impl Flag {
    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
    fn decide(&self, command: FlagCommand) -> Result<Option<FlagEvent>, FlagError> {
        let FlagCommand::Define { key, flag_type, default_value, plan_defaults, description } = command;
        if !valid_key(&key) {
            return Err(FlagError::InvalidKey);
        }
        let description = description.trim().to_string();
        if description.chars().count() > 1000 || description.chars().any(char::is_control) {
            return Err(FlagError::InvalidDescription);
        }
        if !flag_type.accepts(&default_value) || !plan_defaults.values().all(|v| flag_type.accepts(v)) {
            return Err(FlagError::TypeMismatch);
        }
        if self.flag_type.is_some_and(|t| t != flag_type) {
            return Err(FlagError::TypeChanged);
        }
        if self.key.is_some()
            && self.default_value == default_value
            && self.plan_defaults == plan_defaults
            && self.description == description
        {
            return Ok(None);
        }
        Ok(Some(FlagEvent::Defined { key, flag_type, default_value, plan_defaults, description }))
    }

    /// The state after `event`.
    fn evolve(&mut self, event: FlagEvent) {
        let FlagEvent::Defined { key, flag_type, default_value, plan_defaults, description } = event;
        self.key = Some(key);
        self.flag_type = Some(flag_type);
        self.default_value = default_value;
        self.plan_defaults = plan_defaults;
        self.description = description;
    }
}

aggregate!(Flag { TYPE: AGGREGATE_TYPE, command: FlagCommand, event: FlagEvent, error: FlagError });
