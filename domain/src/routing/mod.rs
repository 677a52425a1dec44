//! Routing snapshots for edge routers: immutable, versioned artifacts mapping each
//! tenant's domain to its routing target. A single aggregate ([`AGGREGATE_ID`]) holds
//! the whole history, so versions are numbered 1, 2, 3… without gaps. Publishing makes
//! a new version from entries the service gathers; a rollback makes a new version too,
//! with the entries of an earlier one, so the log records who went back to what.
//!
//! Every version's entries are kept in the aggregate, and loading it replays them all.
//! That is fine for hundreds of tenants and dozens of versions; past that, keep only
//! checksums here and read old entries from the events (or snapshot the aggregate).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::aggregate::{aggregate, events};
use crate::deployment;
use crate::error::{DomainError, ErrorKind};
use crate::ids::TenantId;
use crate::validate;

#[cfg(test)]
mod tests;

/// The aggregate type name of routing snapshots in the event store.
pub const AGGREGATE_TYPE: &str = "routing";

/// The id of the one routing aggregate.
pub const AGGREGATE_ID: &str = "routing";

/// One route: a tenant's domain and where to send its traffic. The fields are declared
/// in alphabetical order, so that the compact JSON of a list of entries is canonical
/// (sorted keys, no whitespace) and its SHA-256 is the snapshot's [`checksum`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RoutingEntry {
    /// The tenant's domain.
    pub domain: String,
    /// Its routing target (`host[:port]` or a URL).
    pub target: String,
    /// The tenant.
    pub tenant_id: TenantId,
}

/// The hex SHA-256 of the canonical JSON of `entries` (as given; pass them sorted):
/// `[{"domain":…,"target":…,"tenant_id":…},…]`, sorted keys, no whitespace.
pub fn checksum(entries: &[RoutingEntry]) -> String {
    let json = serde_json::to_vec(entries).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

/// A command on the routing snapshots.
#[derive(Debug, Clone, PartialEq)]
pub enum RoutingCommand {
    /// Publish a new version with these entries (an empty list is allowed).
    Publish {
        /// The routes, in any order.
        entries: Vec<RoutingEntry>,
        /// When the entries were gathered.
        generated_at: DateTime<Utc>,
    },
    /// Make a new version with the entries of an earlier one.
    Rollback {
        /// The version whose entries to restore.
        to_version: u64,
        /// When.
        at: DateTime<Utc>,
    },
}

impl RoutingCommand {
    /// What identifies the request for idempotency: the command and its arguments,
    /// without the times at which it was (re)sent.
    pub fn fingerprint(&self) -> String {
        match self {
            RoutingCommand::Publish { entries, .. } => {
                let mut sorted = entries.clone();
                sorted.sort();
                format!("publish|{}", checksum(&sorted))
            }
            RoutingCommand::Rollback { to_version, .. } => format!("rollback|{to_version}"),
        }
    }
}

events! {
    /// What happened to the routing snapshots.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum RoutingEvent {
        /// A new version was published.
        "routing.snapshot_published" => SnapshotPublished {
            /// Its version (the previous one plus one).
            version: u64,
            /// The routes, sorted by domain.
            entries: Vec<RoutingEntry>,
            /// When the entries were gathered.
            generated_at: DateTime<Utc>,
            /// The hex SHA-256 of the entries' canonical JSON.
            checksum: String,
        },
        /// A new version was made with the entries of an earlier one.
        "routing.snapshot_rolled_back" => SnapshotRolledBack {
            /// The new version.
            version: u64,
            /// The version that was current.
            from_version: u64,
            /// The version whose entries were restored.
            to_version: u64,
            /// Those entries.
            entries: Vec<RoutingEntry>,
            /// Their checksum (that of `to_version`).
            checksum: String,
            /// When the rollback was made.
            generated_at: DateTime<Utc>,
        },
    }
}

/// Why a routing command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    /// An entry's domain is not a DNS name or its target not `host[:port]` or a URL.
    #[error("every routing entry needs a DNS domain and a host[:port] or URL target")]
    InvalidEntry,
    /// Two entries have the same domain.
    #[error("two routing entries have the same domain")]
    DuplicateDomain,
    /// No such version.
    #[error("routing snapshot version not found")]
    VersionNotFound,
    /// The version to roll back to is the current one.
    #[error("that routing snapshot version is the current one")]
    VersionCurrent,
}

impl DomainError for RoutingError {
    fn kind(&self) -> ErrorKind {
        match self {
            RoutingError::InvalidEntry | RoutingError::DuplicateDomain => ErrorKind::InvalidArgument,
            RoutingError::VersionNotFound => ErrorKind::NotFound,
            RoutingError::VersionCurrent => ErrorKind::FailedPrecondition,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            RoutingError::InvalidEntry => "invalid_routing_entry",
            RoutingError::DuplicateDomain => "duplicate_routing_domain",
            RoutingError::VersionNotFound => "routing_version_not_found",
            RoutingError::VersionCurrent => "routing_version_current",
        }
    }
}

/// One version's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingVersion {
    /// The routes, sorted by domain.
    pub entries: Vec<RoutingEntry>,
    /// Their checksum.
    pub checksum: String,
}

/// The routing snapshots' state: every version (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    /// Version → content.
    pub versions: BTreeMap<u64, RoutingVersion>,
}

impl Routing {
    /// The current (newest) version, 0 before the first publish.
    pub fn current(&self) -> u64 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }

    /// The event `command` makes happen (none if it changes nothing), or why it is refused.
    fn decide(&self, command: RoutingCommand) -> Result<RoutingEvent, RoutingError> {
        let current = self.current();
        match command {
            RoutingCommand::Publish { entries, generated_at } => {
                let entries = normalize(entries)?;
                Ok(RoutingEvent::SnapshotPublished {
                    version: current + 1,
                    checksum: checksum(&entries),
                    entries,
                    generated_at,
                })
            }
            RoutingCommand::Rollback { to_version, at } => {
                let earlier = self.versions.get(&to_version).ok_or(RoutingError::VersionNotFound)?;
                if to_version == current {
                    return Err(RoutingError::VersionCurrent);
                }
                Ok(RoutingEvent::SnapshotRolledBack {
                    version: current + 1,
                    from_version: current,
                    to_version,
                    entries: earlier.entries.clone(),
                    checksum: earlier.checksum.clone(),
                    generated_at: at,
                })
            }
        }
    }
}

/// Validates and normalizes entries, and sorts them by domain.
fn normalize(entries: Vec<RoutingEntry>) -> Result<Vec<RoutingEntry>, RoutingError> {
    let mut entries = entries
        .into_iter()
        .map(|e| {
            Ok(RoutingEntry {
                domain: validate::domain(&e.domain).ok_or(RoutingError::InvalidEntry)?,
                target: deployment::routing_target(&e.target).ok_or(RoutingError::InvalidEntry)?,
                tenant_id: e.tenant_id,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    let mut domains = BTreeSet::new();
    if !entries.iter().all(|e| domains.insert(e.domain.as_str())) {
        return Err(RoutingError::DuplicateDomain);
    }
    Ok(entries)
}

impl Routing {
    /// The state after `event`.
    fn evolve(&mut self, event: RoutingEvent) {
        let (version, entries, checksum) = match event {
            RoutingEvent::SnapshotPublished { version, entries, checksum, .. }
            | RoutingEvent::SnapshotRolledBack { version, entries, checksum, .. } => (version, entries, checksum),
        };
        self.versions.insert(version, RoutingVersion { entries, checksum });
    }
}

aggregate!(Routing { TYPE: AGGREGATE_TYPE, command: RoutingCommand, event: RoutingEvent, error: RoutingError });
