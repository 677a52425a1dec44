//! The audit trail (ADR 0014): one record per command, successes and refusals alike,
//! plus the records managed apps send. Each tenant's records (and the platform's)
//! form a hash chain: a record's hash covers its canonical content, which includes
//! the previous record's hash. Keel signs checkpoints of the chain heads with Ed25519,
//! so an auditor can verify the history without trusting Keel.
//!
//! Records are stored as `audit.recorded` events: aggregate type `audit`, aggregate id
//! = the chain (tenant id or `platform`), sequence = the record's place in the chain.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::aggregate::events;

#[cfg(test)]
mod tests;

/// The aggregate type of audit records in the event store.
pub const AGGREGATE_TYPE: &str = "audit";
/// The aggregate type of signed checkpoints.
pub const CHECKPOINT_AGGREGATE: &str = "audit_checkpoint";
/// The chain of records that belong to no tenant.
pub const PLATFORM_CHAIN: &str = "platform";
/// The hash a chain starts from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Audit records are kept at least this many years (CON-DATA-002).
pub const RETENTION_YEARS: u32 = 7;

/// Whether the audited attempt succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It was done.
    Success,
    /// It was refused or failed; `reason` says why.
    Failure,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// The time format of records: RFC 3339, UTC, microseconds (what Postgres keeps), so
/// that a record read back from anywhere hashes the same.
pub fn canonical_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One audit record: everything its hash covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// The record's id (UUIDv7).
    pub id: Uuid,
    /// The chain it belongs to: its tenant's id, or `platform`.
    pub chain: String,
    /// Its place in the chain, from 1, without gaps.
    pub seq: i64,
    /// When the attempt happened ([`canonical_time`]).
    pub timestamp: String,
    /// The tenant concerned, if any.
    pub tenant_id: Option<String>,
    /// `user`, `operator`, `auditor`, `app`, `system` (or `anonymous` for a caller that
    /// proved no identity).
    pub actor_type: String,
    /// Who.
    pub actor_id: String,
    /// What was attempted, e.g. `tenant.create` or `user.role.change`.
    pub action: String,
    /// On what, e.g. `tenant/tnt_…` or `user/usr_…`.
    pub resource: String,
    /// `success` or `failure`.
    pub outcome: Outcome,
    /// Why it failed (a stable code), for failures.
    pub reason: Option<String>,
    /// `keel` for Keel's own records, `app:<app id>` for records an app sent.
    pub source: String,
    /// The app's own id of the record, for records an app sent (idempotency).
    pub source_event_id: Option<String>,
    /// Context: client address, user agent, correlation id, previous values where they
    /// matter. Never passwords, tokens or secrets.
    pub metadata: Map<String, Value>,
    /// The previous record's hash in the chain ([`GENESIS`] for the first).
    pub prev_hash: String,
}

impl AuditRecord {
    /// The record's hash: hex SHA-256 of its canonical JSON (keys sorted, no spaces).
    pub fn hash(&self) -> String {
        let mut canonical = Vec::with_capacity(640);
        self.write_canonical(&mut canonical);
        hex::encode(Sha256::digest(&canonical))
    }

    /// Writes the canonical JSON: the same bytes as `serde_json::to_value(self)` printed
    /// (keys in sorted order, no spaces), without building the value first.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        fn field<T: Serialize + ?Sized>(out: &mut Vec<u8>, first: bool, key: &str, value: &T) {
            if !first {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut *out, key);
            out.push(b':');
            let _ = serde_json::to_writer(&mut *out, value);
        }
        out.push(b'{');
        field(out, true, "action", &self.action);
        field(out, false, "actor_id", &self.actor_id);
        field(out, false, "actor_type", &self.actor_type);
        field(out, false, "chain", &self.chain);
        field(out, false, "id", &self.id);
        field(out, false, "metadata", &self.metadata);
        field(out, false, "outcome", &self.outcome);
        field(out, false, "prev_hash", &self.prev_hash);
        field(out, false, "reason", &self.reason);
        field(out, false, "resource", &self.resource);
        field(out, false, "seq", &self.seq);
        field(out, false, "source", &self.source);
        field(out, false, "source_event_id", &self.source_event_id);
        field(out, false, "tenant_id", &self.tenant_id);
        field(out, false, "timestamp", &self.timestamp);
        out.push(b'}');
    }
}

/// A stored audit record: the record and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    /// The hashed content.
    pub record: AuditRecord,
    /// `record.hash()` when it was written.
    pub hash: String,
}

events! {
    /// Audit events as stored in the log.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
    pub enum AuditEvent {
        /// A record was added to its chain.
        RECORDED = "audit.recorded" => Recorded(AuditEntry),
        /// Keel signed the heads of the chains that moved since the last checkpoint.
        CHECKPOINT_SIGNED = "audit.checkpoint_signed" => CheckpointSigned(Checkpoint),
    }
}

/// A chain's head at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChainHead {
    /// The chain.
    pub chain: String,
    /// Its last record's place.
    pub seq: i64,
    /// Its last record's hash.
    pub hash: String,
}

/// A signed statement of chain heads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Checkpoint {
    /// The checkpoint's number, from 1.
    pub number: i64,
    /// When it was signed ([`canonical_time`]).
    pub signed_at: String,
    /// The heads, by chain.
    pub heads: Vec<ChainHead>,
    /// The signing key's id (see `GET /v1/audit/keys`).
    pub key_id: String,
    /// Base64url Ed25519 signature of [`Checkpoint::signed_bytes`].
    pub signature: String,
}

impl Checkpoint {
    /// The bytes the signature covers: the canonical JSON of number, time, heads and key id.
    pub fn signed_bytes(number: i64, signed_at: &str, heads: &[ChainHead], key_id: &str) -> Vec<u8> {
        serde_json::json!({ "number": number, "signed_at": signed_at, "heads": heads, "key_id": key_id })
            .to_string()
            .into_bytes()
    }
}

/// Where a chain broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum Break {
    /// A record's stored hash is not the hash of its content (the record was edited).
    #[error("chain {chain}: record {seq} ({id}) hash mismatch: expected {expected}, found {found}")]
    HashMismatch {
        /// The chain.
        chain: String,
        /// The record's place.
        seq: i64,
        /// The record's id.
        id: Uuid,
        /// The hash of its content.
        expected: String,
        /// The hash it carries.
        found: String,
    },
    /// A record does not point at the record before it (a record was removed,
    /// reordered or inserted).
    #[error(
        "chain {chain}: record {seq} ({id}) does not follow its predecessor: expected prev_hash {expected}, found {found}"
    )]
    LinkMismatch {
        /// The chain.
        chain: String,
        /// The record's place.
        seq: i64,
        /// The record's id.
        id: Uuid,
        /// The previous record's hash.
        expected: String,
        /// The prev_hash it carries.
        found: String,
    },
    /// A record is not at the next place of its chain.
    #[error("chain {chain}: record {id} is at place {found}, expected {expected}")]
    SequenceGap {
        /// The chain.
        chain: String,
        /// The record's id.
        id: Uuid,
        /// The next place.
        expected: i64,
        /// Its place.
        found: i64,
    },
    /// A checkpoint's signature does not verify.
    #[error("checkpoint {number}: signature does not verify")]
    BadSignature {
        /// The checkpoint.
        number: i64,
    },
    /// A signed head does not match the chain as read.
    #[error("checkpoint {number}: chain {chain} at {seq}: expected {expected}, found {found}")]
    CheckpointMismatch {
        /// The checkpoint.
        number: i64,
        /// The chain.
        chain: String,
        /// The place the checkpoint signed.
        seq: i64,
        /// The signed hash.
        expected: String,
        /// The hash of the record read at that place (or `missing`).
        found: String,
    },
}

/// What the verifier keeps of one chain: its place, last hash, and every hash (32
/// bytes each) for checking checkpoints.
#[derive(Debug, Default)]
struct ChainState {
    seq: i64,
    last: String,
    hashes: Vec<[u8; 32]>,
}

/// Checks chains record by record, as they are read (each chain in order).
#[derive(Debug, Default)]
pub struct ChainVerifier {
    chains: BTreeMap<String, ChainState>,
    /// Records checked.
    pub records: u64,
    /// Records read again, identical to one already checked at their place (the relay
    /// publishes at least once: after a crash it may publish a record a second time).
    pub repeats: u64,
}

impl ChainVerifier {
    /// Checks the next record of its chain; the first break is returned. A record
    /// identical to the one already checked at its place (same hash) is a repeat of the
    /// log's at-least-once delivery, and skipped.
    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), Break> {
        let record = &entry.record;
        let state = self.chains.entry(record.chain.clone()).or_insert_with(|| ChainState {
            seq: 0,
            last: GENESIS.to_string(),
            hashes: Vec::new(),
        });
        if record.seq >= 1 && record.seq <= state.seq {
            let mut raw = [0u8; 32];
            let checked = state.hashes.get(record.seq as usize - 1);
            if hex::decode_to_slice(&entry.hash, &mut raw).is_ok()
                && checked == Some(&raw)
                && record.hash() == entry.hash
            {
                self.repeats += 1;
                return Ok(());
            }
        }
        if record.seq != state.seq + 1 {
            return Err(Break::SequenceGap {
                chain: record.chain.clone(),
                id: record.id,
                expected: state.seq + 1,
                found: record.seq,
            });
        }
        if record.prev_hash != state.last {
            return Err(Break::LinkMismatch {
                chain: record.chain.clone(),
                seq: record.seq,
                id: record.id,
                expected: state.last.clone(),
                found: record.prev_hash.clone(),
            });
        }
        let expected = record.hash();
        if expected != entry.hash {
            return Err(Break::HashMismatch {
                chain: record.chain.clone(),
                seq: record.seq,
                id: record.id,
                expected,
                found: entry.hash.clone(),
            });
        }
        let mut raw = [0u8; 32];
        let _ = hex::decode_to_slice(&entry.hash, &mut raw);
        state.hashes.push(raw);
        state.seq = record.seq;
        state.last = entry.hash.clone();
        self.records += 1;
        Ok(())
    }

    /// Checks a checkpoint's heads against the records read (its signature is checked
    /// by the caller, who holds the public key). Chains not read at all (an export of
    /// other tenants) are skipped.
    pub fn check_heads(&self, checkpoint: &Checkpoint) -> Result<(), Break> {
        for head in &checkpoint.heads {
            let Some(state) = self.chains.get(&head.chain) else { continue };
            let found = usize::try_from(head.seq - 1)
                .ok()
                .and_then(|i| state.hashes.get(i))
                .map_or_else(|| "missing".to_string(), hex::encode);
            if found != head.hash {
                return Err(Break::CheckpointMismatch {
                    number: checkpoint.number,
                    chain: head.chain.clone(),
                    seq: head.seq,
                    expected: head.hash.clone(),
                    found,
                });
            }
        }
        Ok(())
    }

    /// The last place read of `chain`, if any of it was read.
    pub fn last_seq(&self, chain: &str) -> Option<i64> {
        self.chains.get(chain).map(|state| state.seq)
    }

    /// How many chains were read.
    pub fn chains(&self) -> usize {
        self.chains.len()
    }
}

/// The record of an attempt, before it gets its place in a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditInput {
    /// When.
    pub timestamp: DateTime<Utc>,
    /// The tenant concerned (its chain), if any.
    pub tenant_id: Option<String>,
    /// Actor type.
    pub actor_type: String,
    /// Actor id.
    pub actor_id: String,
    /// Action.
    pub action: String,
    /// Resource.
    pub resource: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Reason code (failures).
    pub reason: Option<String>,
    /// `keel` or `app:<id>`.
    pub source: String,
    /// The app's id of the record.
    pub source_event_id: Option<String>,
    /// Context.
    pub metadata: Map<String, Value>,
}

impl AuditInput {
    /// The chain this record goes to.
    pub fn chain(&self) -> &str {
        self.tenant_id.as_deref().unwrap_or(PLATFORM_CHAIN)
    }

    /// The record at place `seq` after `prev_hash`, and its hash.
    pub fn chained(self, id: Uuid, seq: i64, prev_hash: &str) -> AuditEntry {
        let record = AuditRecord {
            id,
            chain: self.chain().to_string(),
            seq,
            timestamp: canonical_time(self.timestamp),
            tenant_id: self.tenant_id,
            actor_type: self.actor_type,
            actor_id: self.actor_id,
            action: self.action,
            resource: self.resource,
            outcome: self.outcome,
            reason: self.reason,
            source: self.source,
            source_event_id: self.source_event_id,
            metadata: self.metadata,
            prev_hash: prev_hash.to_string(),
        };
        let hash = record.hash();
        AuditEntry { record, hash }
    }
}

/// The audit action of a gRPC method, e.g. `ProvisionTenant` → `tenant.provision`:
/// the words of the method, the object first.
pub fn action_of(rpc: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for c in rpc.chars() {
        if c.is_ascii_uppercase() || words.is_empty() {
            words.push(String::new());
        }
        if let Some(last) = words.last_mut() {
            last.push(c.to_ascii_lowercase());
        }
    }
    if words.len() < 2 {
        return words.concat();
    }
    let verb = words.remove(0);
    format!("{}.{verb}", words.join("."))
}
