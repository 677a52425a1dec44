//! Identifiers: prefixed ULIDs (`tnt_01J…`), see ADR 0004.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A tenant id: `tnt_` followed by a lowercase ULID (time-sortable, 26 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String", description = "A tenant id, `tnt_` followed by a lowercase ULID")]
pub struct TenantId(String);

/// The id given was not of the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} id")]
pub struct MalformedId {
    /// Which kind of id was expected.
    pub kind: &'static str,
}

impl TenantId {
    /// The prefix of every tenant id.
    pub const PREFIX: &'static str = "tnt_";

    /// A tenant id from a ULID.
    pub fn from_ulid(ulid: ulid::Ulid) -> Self {
        Self(format!("{}{}", Self::PREFIX, ulid.to_string().to_lowercase()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = MalformedId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix(Self::PREFIX).ok_or(MalformedId { kind: "tenant" })?;
        let ulid = ulid::Ulid::from_string(rest).map_err(|_| MalformedId { kind: "tenant" })?;
        Ok(Self::from_ulid(ulid))
    }
}

impl TryFrom<String> for TenantId {
    type Error = MalformedId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_normalizes_case() {
        let id = TenantId::from_ulid(ulid::Ulid::new());
        let upper = format!("tnt_{}", &id.as_str()[4..].to_uppercase());
        assert_eq!(upper.parse::<TenantId>().unwrap(), id);
        assert_eq!(id.as_str().len(), 30);
    }

    #[test]
    fn rejects_other_prefixes_and_garbage() {
        assert!("usr_01j0000000000000000000000".parse::<TenantId>().is_err());
        assert!("tnt_not-a-ulid".parse::<TenantId>().is_err());
        assert!("".parse::<TenantId>().is_err());
    }
}
