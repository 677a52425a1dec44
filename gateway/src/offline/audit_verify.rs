//! `keel audit verify`: recomputes every audit chain from the Kafka log, from a log
//! export (`keel log export`) or from a CSV export (`GET /v1/audit/export.csv`), checks
//! every checkpoint's signature with the published public keys and its heads against
//! the chains, and reports the first broken link. It needs no database and trusts
//! nothing Keel says about itself but the public keys the auditor holds.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use indicatif::ProgressBar;
use serde::Serialize;

use keel_domain::audit::{
    AGGREGATE_TYPE, AuditEntry, AuditEvent, AuditRecord, Break, CHECKPOINT_AGGREGATE, ChainVerifier, Checkpoint,
};

use super::event_log::{self, LogSource};
use crate::rest::csv_cell;

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Audit records checked.
    pub records: u64,
    /// Chains read.
    pub chains: usize,
    /// Checkpoints whose signature and heads were checked.
    pub checkpoints: u64,
    /// Checkpoints of a live log that name records published after the read began (the
    /// read stops at the high watermarks taken at its start); checked on the next run.
    pub checkpoints_after_read: u64,
    /// The first break, if any.
    pub broken: Option<Break>,
}

/// Why verification could not run (as opposed to finding a break).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log could not be read.
    #[error(transparent)]
    Log(#[from] event_log::LogError),
    /// A file could not be read.
    #[error("{0}")]
    Input(String),
}

/// The public keys an auditor trusts, by key id (from `GET /v1/audit/keys`).
pub fn keys_from_json(text: &str) -> Result<BTreeMap<String, VerifyingKey>, VerifyError> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| VerifyError::Input(format!("keys: {e}")))?;
    let mut keys = BTreeMap::new();
    for key in doc["keys"].as_array().into_iter().flatten() {
        let (Some(id), Some(public)) = (key["key_id"].as_str(), key["public_key"].as_str()) else { continue };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(public)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .ok_or_else(|| VerifyError::Input(format!("key {id} is not an Ed25519 public key")))?;
        keys.insert(id.to_string(), bytes);
    }
    Ok(keys)
}

/// Checks one checkpoint's signature.
fn check_signature(checkpoint: &Checkpoint, keys: &BTreeMap<String, VerifyingKey>) -> Result<(), Break> {
    let bad = || Break::BadSignature { number: checkpoint.number };
    let key = keys.get(&checkpoint.key_id).ok_or_else(bad)?;
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&checkpoint.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or_else(bad)?;
    let bytes =
        Checkpoint::signed_bytes(checkpoint.number, &checkpoint.signed_at, &checkpoint.heads, &checkpoint.key_id);
    key.verify(&bytes, &signature).map_err(|_| bad())
}

/// Checks every checkpoint against the chains read.
fn finish(
    verifier: ChainVerifier,
    checkpoints: &[Checkpoint],
    keys: &BTreeMap<String, VerifyingKey>,
    broken: Option<Break>,
) -> VerifyReport {
    let mut report = VerifyReport {
        records: verifier.records,
        chains: verifier.chains(),
        checkpoints: 0,
        checkpoints_after_read: 0,
        broken,
    };
    if report.broken.is_some() {
        return report;
    }
    for checkpoint in checkpoints {
        if let Err(b) = check_signature(checkpoint, keys).and_then(|_| verifier.check_heads(checkpoint)) {
            report.broken = Some(b);
            return report;
        }
        report.checkpoints += 1;
    }
    report
}

/// Verifies the audit chains and checkpoints of an event log (Kafka or a log export).
pub async fn verify_log(
    source: &LogSource,
    keys: &BTreeMap<String, VerifyingKey>,
    progress: &ProgressBar,
) -> Result<VerifyReport, VerifyError> {
    let mut verifier = ChainVerifier::default();
    let mut checkpoints = Vec::new();
    let summary = event_log::read(source, progress, |record| {
        let envelope = record.envelope;
        if envelope.aggregate_type != AGGREGATE_TYPE && envelope.aggregate_type != CHECKPOINT_AGGREGATE {
            return ControlFlow::Continue(());
        }
        let mut payload = envelope.payload;
        if let Some(map) = payload.as_object_mut() {
            map.entry("type").or_insert_with(|| envelope.event_type.clone().into());
        }
        match serde_json::from_value::<AuditEvent>(payload) {
            Ok(AuditEvent::Recorded(entry)) => match verifier.push(&entry) {
                Ok(()) => ControlFlow::Continue(()),
                Err(b) => ControlFlow::Break(b),
            },
            Ok(AuditEvent::CheckpointSigned(checkpoint)) => {
                checkpoints.push(checkpoint);
                ControlFlow::Continue(())
            }
            // A record whose content no longer reads as a record was edited.
            Err(_) => ControlFlow::Break(Break::HashMismatch {
                chain: envelope.aggregate_id.clone(),
                seq: envelope.sequence,
                id: envelope.event_id,
                expected: "a readable audit record".into(),
                found: "unreadable content".into(),
            }),
        }
    })
    .await?;
    // Kafka's partitions are read up to watermarks taken one after another: a checkpoint
    // may name records of another partition published after that partition's watermark.
    let live = matches!(source, LogSource::Kafka { .. });
    let beyond =
        |c: &Checkpoint| live && c.heads.iter().any(|h| verifier.last_seq(&h.chain).is_some_and(|read| h.seq > read));
    let after_read = checkpoints.iter().filter(|c| beyond(c)).count() as u64;
    checkpoints.retain(|c| !beyond(c));
    let mut report = finish(verifier, &checkpoints, keys, summary.stopped);
    report.checkpoints_after_read = after_read;
    Ok(report)
}

/// Reads a record from a CSV export row (the columns of `rest::audit::CSV_HEADER`).
fn entry_from_row(row: &csv::StringRecord) -> Result<AuditEntry, String> {
    let get = |i: usize| csv_cell::unescape(row.get(i).unwrap_or_default()).to_string();
    let optional = |i: usize| Some(get(i)).filter(|s| !s.is_empty());
    let record = AuditRecord {
        id: get(0).parse().map_err(|_| "id is not a UUID")?,
        chain: get(1),
        seq: get(2).parse().map_err(|_| "seq is not a number")?,
        timestamp: get(3),
        tenant_id: optional(4),
        actor_type: get(5),
        actor_id: get(6),
        action: get(7),
        resource: get(8),
        outcome: serde_json::from_value(get(9).into()).map_err(|_| "outcome is not success or failure")?,
        reason: optional(10),
        source: get(11),
        source_event_id: optional(12),
        metadata: serde_json::from_str(&get(13)).map_err(|_| "metadata is not a JSON object")?,
        prev_hash: get(14),
    };
    Ok(AuditEntry { record, hash: get(15) })
}

/// Verifies a CSV export, and the checkpoints (`GET /v1/audit/checkpoints`) if given.
pub fn verify_csv(
    path: &Path,
    checkpoints: &[Checkpoint],
    keys: &BTreeMap<String, VerifyingKey>,
    progress: &ProgressBar,
) -> Result<VerifyReport, VerifyError> {
    let file = std::fs::File::open(path).map_err(|e| VerifyError::Input(format!("{}: {e}", path.display())))?;
    progress.set_length(file.metadata().map(|m| m.len()).unwrap_or(0));
    let mut reader = csv::Reader::from_reader(progress.wrap_read(std::io::BufReader::new(file)));
    let mut verifier = ChainVerifier::default();
    let mut broken = None;
    for (line, row) in reader.records().enumerate() {
        let row = row.map_err(|e| VerifyError::Input(format!("{}: row {}: {e}", path.display(), line + 2)))?;
        let entry = entry_from_row(&row).map_err(|e| VerifyError::Input(format!("row {}: {e}", line + 2)))?;
        if let Err(b) = verifier.push(&entry) {
            broken = Some(b);
            break;
        }
    }
    progress.finish();
    Ok(finish(verifier, checkpoints, keys, broken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_export_with_formula_like_cells_reads_back_unchanged() {
        let record = AuditRecord {
            id: uuid::Uuid::now_v7(),
            chain: "platform".into(),
            seq: 1,
            timestamp: "2026-01-01T00:00:00.000000Z".into(),
            tenant_id: None,
            actor_type: "app".into(),
            actor_id: "@app".into(),
            action: "=cmd|' /C calc'!A0".into(),
            resource: "-2+3".into(),
            outcome: keel_domain::audit::Outcome::Failure,
            reason: Some("'already quoted".into()),
            source: "+source".into(),
            source_event_id: Some("\tevt".into()),
            metadata: serde_json::Map::new(),
            prev_hash: "00".into(),
        };
        let mut writer = csv::Writer::from_writer(Vec::new());
        let row = crate::rest::audit::csv_row(&serde_json::to_value(&record).unwrap(), "ff");
        assert!(row[7].starts_with("'=") && row[6].starts_with("'@") && row[10].starts_with("''"), "{row:?}");
        writer.write_record(&row).unwrap();
        let bytes = writer.into_inner().unwrap();
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes.as_slice());
        let read = entry_from_row(&reader.records().next().unwrap().unwrap()).unwrap();
        assert_eq!(read.record, record);
        assert_eq!(read.hash, "ff");
    }
}
