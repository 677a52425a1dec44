//! Identifiers: prefixed ULIDs (`tnt_01J…`, `usr_01J…`, `ses_01J…`), see ADR 0004.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The id given was not of the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} id")]
pub struct MalformedId {
    /// Which kind of id was expected.
    pub kind: &'static str,
}

/// Defines a prefixed-ULID id type: its prefix, its kind (named in [`MalformedId`]),
/// and the description of its JSON Schema.
macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, prefix: $prefix:literal, kind: $kind:literal, schema: $description:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schemars(with = "String", description = $description)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("The prefix of every ", $kind, " id.")]
            pub const PREFIX: &'static str = $prefix;

            #[doc = concat!("A ", $kind, " id from a ULID.")]
            pub fn from_ulid(ulid: ulid::Ulid) -> Self {
                Self(format!("{}{}", Self::PREFIX, ulid.to_string().to_lowercase()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = MalformedId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let rest = s.strip_prefix(Self::PREFIX).ok_or(MalformedId { kind: $kind })?;
                let ulid = ulid::Ulid::from_string(rest).map_err(|_| MalformedId { kind: $kind })?;
                Ok(Self::from_ulid(ulid))
            }
        }

        impl TryFrom<String> for $name {
            type Error = MalformedId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A tenant id: `tnt_` followed by a lowercase ULID (time-sortable, 26 characters).
    TenantId,
    prefix: "tnt_",
    kind: "tenant",
    schema: "A tenant id, `tnt_` followed by a lowercase ULID"
);

prefixed_id!(
    /// A user id (tenant users and platform users alike): `usr_` followed by a lowercase ULID.
    UserId,
    prefix: "usr_",
    kind: "user",
    schema: "A user id, `usr_` followed by a lowercase ULID"
);

prefixed_id!(
    /// A session id: `ses_` followed by a lowercase ULID.
    SessionId,
    prefix: "ses_",
    kind: "session",
    schema: "A session id, `ses_` followed by a lowercase ULID"
);

prefixed_id!(
    /// A managed app's id: `app_` followed by a lowercase ULID.
    AppId,
    prefix: "app_",
    kind: "app",
    schema: "A managed app id, `app_` followed by a lowercase ULID"
);

prefixed_id!(
    /// An API key's id (its public part): `key_` followed by a lowercase ULID.
    ApiKeyId,
    prefix: "key_",
    kind: "API key",
    schema: "An API key id, `key_` followed by a lowercase ULID"
);

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

    #[test]
    fn user_and_session_ids_round_trip_with_their_own_prefix() {
        let ulid = ulid::Ulid::new();
        let user = UserId::from_ulid(ulid);
        let session = SessionId::from_ulid(ulid);
        assert!(user.as_str().starts_with("usr_") && session.as_str().starts_with("ses_"));
        assert_eq!(user.to_string().parse::<UserId>().unwrap(), user);
        assert_eq!(String::from(session.clone()).parse::<SessionId>().unwrap(), session);
        let json = serde_json::to_string(&user).unwrap();
        assert_eq!(serde_json::from_str::<UserId>(&json).unwrap(), user);
        assert_eq!(session.as_str().parse::<UserId>().unwrap_err(), MalformedId { kind: "user" });
        assert_eq!(user.as_str().parse::<SessionId>().unwrap_err(), MalformedId { kind: "session" });
        assert!(serde_json::from_str::<UserId>("\"usr_nope\"").is_err());
    }
}
