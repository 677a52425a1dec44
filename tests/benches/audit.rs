//! The audit benchmark (issue 6): how fast `keel audit verify` checks a trail, and the
//! memory Keel holds while it streams a large CSV export.
//!
//! 1. Verify, in this process and without a database: builds a log export (NDJSON of
//!    `EventEnvelope`s, what `keel log export` writes) of `KEEL_BENCH_AUDIT_EVENTS`
//!    (default 1,000,000) `audit.recorded` events over `KEEL_BENCH_AUDIT_CHAINS` (default
//!    1,000) tenant chains, interleaved as in the log, chained with `AuditInput::chained`,
//!    with an Ed25519-signed `audit.checkpoint_signed` event after every quarter; times
//!    `audit_verify::verify_log` on it. Then writes the same records as a CSV export (chain
//!    order, `rest_audit::csv_row`) and times `audit_verify::verify_csv` on it with the
//!    same checkpoints. The files go to a fresh directory under `KEEL_BENCH_DIR` (default:
//!    the temp dir), each removed once verified (1.2 GB at most at the default size).
//! 2. Export: bulk-inserts rows (a realistic record JSON each) straight into the audit
//!    trail read model of a fresh database, runs the release `keel serve` as its own
//!    process, and streams `GET /v1/audit/export.csv` (bootstrap operator credential) into
//!    a byte counter, once per size of `KEEL_BENCH_AUDIT_EXPORT_ROWS` (default
//!    `100000,1000000`, growing the same table). Prints Keel's resident memory before and
//!    its peak during each export (`VmHWM`, reset through `/proc/<pid>/clear_refs` before
//!    the export, and the highest `VmRSS` sampled every 10 ms). The database and topic are
//!    dropped at the end (`KEEL_BENCH_KEEP=1` keeps them).
//!
//! `KEEL_BENCH_AUDIT_EVENTS=0` skips the first part, `KEEL_BENCH_AUDIT_EXPORT_ROWS=` (empty)
//! the second.
//!
//! Run with `make bench`, or alone:
//! `cargo build --release -p keel-gateway --bin keel && cargo bench -p keel-tests --bench audit`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use indicatif::ProgressBar;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey};
use keel_domain::audit::{
    self, AuditEntry, AuditEvent, AuditInput, ChainHead, Checkpoint, GENESIS, Outcome, action_of,
};
use keel_domain::envelope::{Actor, ActorType, EventEnvelope};
use keel_gateway::offline::audit_verify::{self, VerifyReport};
use keel_gateway::offline::event_log::LogSource;
use keel_gateway::rest::audit::{CSV_HEADER, csv_row};
use keel_tests::TestEnv;
use keel_tests::bench::{Better, Keel, figure};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `1234567.8` → `1,234,568`.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`) in MiB.
fn status_mib(pid: &str, line: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(line)).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0)
        / 1024.0
}

/// CPU time (user + system) this process has used, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which ends with the last ')'): utime, stime are 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Resets the process's `VmHWM` to its current resident size; whether it could.
fn reset_peak(pid: &str) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// splitmix64: the bench's deterministic "randomness".
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A ULID's 128 bits: `millis` in the top 48, 80 bits from `seed`.
fn ulid(millis: u64, seed: u64) -> u128 {
    (u128::from(millis) << 80) | u128::from(mix(seed))
}

/// A prefixed ULID (`tnt_01j…`) of `value`, as Keel's ids are written.
fn ulid_text(prefix: &str, value: u128) -> String {
    const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut text = String::with_capacity(prefix.len() + 26);
    text.push_str(prefix);
    for i in (0..26).rev() {
        text.push(CROCKFORD[((value >> (i * 5)) & 31) as usize] as char);
    }
    text
}

/// A UUIDv7 at `millis` with random bits from `seed`.
fn uuid_v7(millis: u64, seed: u64) -> Uuid {
    let (a, b) = (mix(seed), mix(seed ^ 0x5555));
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&a.to_le_bytes());
    random[8..].copy_from_slice(&b.to_le_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

const RPCS: [&str; 10] = [
    "SuspendTenant",
    "ReactivateTenant",
    "ChangePlan",
    "InviteUser",
    "ChangeUserRole",
    "SetTenantFlag",
    "IssueApiKey",
    "RevokeApiKey",
    "RegisterApp",
    "DefineFlag",
];
const REASONS: [&str; 5] = ["permission_denied", "not_found", "invalid_plan", "failed_precondition", "unauthenticated"];
const USER_AGENTS: [&str; 4] = [
    "grpc-go/1.64.0",
    "tonic/0.14.2",
    "keel-cli/0.1.0 tonic/0.14.2",
    "keel-console/2.3.1 grpc-web-javascript/0.1 (Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0)",
];
const APP_ACTIONS: [&str; 3] = ["document.delete", "document.share", "export.download"];

/// The synthetic trail: record `seq` of chain `c` is a pure function of (c, seq) and
/// the previous hash, so the log (interleaved) and the CSV (chain order) hold the same
/// records.
struct Trail {
    /// The chains (tenant ids), sorted as the export orders them.
    chains: Vec<String>,
    per_chain: i64,
    base: DateTime<Utc>,
    actions: Vec<String>,
}

impl Trail {
    fn new(events: u64, chains: u64) -> Self {
        let mut names: Vec<String> =
            (0..chains).map(|c| ulid_text("tnt_", ulid(1_761_000_000_000 + c * 977, c))).collect();
        names.sort();
        let base = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().expect("time");
        Self {
            chains: names,
            per_chain: (events / chains) as i64,
            base,
            actions: RPCS.iter().map(|r| action_of(r)).collect(),
        }
    }

    fn records(&self) -> u64 {
        self.per_chain as u64 * self.chains.len() as u64
    }

    /// Record `seq` of chain `c`: its id and input.
    fn input(&self, c: usize, seq: i64) -> (Uuid, AuditInput) {
        let i = (seq as u64 - 1) * self.chains.len() as u64 + c as u64;
        let r = mix(i);
        let micros = i * 37_000 + r % 37_000;
        let timestamp = self.base + chrono::Duration::microseconds(micros as i64);
        let id = uuid_v7(self.base.timestamp_millis() as u64 + micros / 1000, r);
        let tenant = self.chains[c].clone();
        let client = format!("10.{}.{}.{}", (r >> 8) & 255, (r >> 16) & 255, (r >> 24) & 255);
        let mut metadata = Map::new();
        let kind = r % 100;
        let input = if kind < 5 {
            // A managed app's own record.
            let app = ulid_text("app_", ulid(1_762_000_000_000, c as u64));
            metadata.insert("client_address".into(), client.into());
            metadata.insert("document_title".into(), format!("Quarterly report {}", r % 1000).into());
            AuditInput {
                timestamp,
                tenant_id: Some(tenant),
                actor_type: "user".into(),
                actor_id: format!("alice-{}", r % 50),
                action: APP_ACTIONS[(r >> 32) as usize % APP_ACTIONS.len()].into(),
                resource: format!("document/{}", r % 100_000),
                outcome: Outcome::Success,
                reason: None,
                source: format!("app:{app}"),
                source_event_id: Some(format!("evt-{i}")),
                metadata,
            }
        } else {
            let rpc = (r >> 32) as usize % RPCS.len();
            let correlation = Uuid::from_u128((u128::from(mix(r)) << 64) | u128::from(mix(r ^ 1)));
            metadata.insert("correlation_id".into(), correlation.to_string().into());
            metadata.insert("rpc".into(), RPCS[rpc].into());
            metadata.insert("client_address".into(), client.into());
            metadata.insert("user_agent".into(), USER_AGENTS[(r >> 40) as usize % USER_AGENTS.len()].into());
            let failure = kind < 10;
            let (actor_type, actor_id) = match kind {
                5 => ("anonymous", String::new()),
                10..20 => ("operator", ulid_text("usr_", ulid(1_760_000_000_000, r % 7))),
                _ => ("user", ulid_text("usr_", ulid(1_762_500_000_000, c as u64 * 100 + r % 20))),
            };
            AuditInput {
                timestamp,
                resource: format!("tenant/{tenant}"),
                tenant_id: Some(tenant),
                actor_type: actor_type.into(),
                actor_id,
                action: self.actions[rpc].clone(),
                outcome: if failure { Outcome::Failure } else { Outcome::Success },
                reason: failure.then(|| REASONS[(r >> 48) as usize % REASONS.len()].to_string()),
                source: "keel".into(),
                source_event_id: None,
                metadata,
            }
        };
        (id, input)
    }
}

/// The signing key (a fixed seed: the bench needs no secret) and its published form.
struct Signer {
    key: EncodingKey,
    key_id: String,
    keys_json: String,
}

impl Signer {
    fn new() -> Self {
        let seed = Sha256::digest(b"keel audit benchmark checkpoint key");
        // PKCS#8 v1 of an Ed25519 seed: a fixed 16-byte header, then the 32 bytes.
        let mut der = hex::decode("302e020100300506032b657004220420").expect("header");
        der.extend_from_slice(&seed);
        let key = EncodingKey::from_ed_der(&der);
        let jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).expect("Ed25519 key");
        let AlgorithmParameters::OctetKeyPair(pair) = jwk.algorithm else { panic!("an Ed25519 key") };
        let key_id = format!("audit-{}", &hex::encode(Sha256::digest(pair.x.as_bytes()))[..16]);
        let keys_json =
            serde_json::json!({ "algorithm": "Ed25519", "keys": [{ "key_id": key_id, "public_key": pair.x }] })
                .to_string();
        Self { key, key_id, keys_json }
    }

    /// Signs `heads` as `commands::audit::sign_checkpoint` does.
    fn checkpoint(&self, number: i64, signed_at: &str, heads: Vec<ChainHead>) -> Checkpoint {
        let bytes = Checkpoint::signed_bytes(number, signed_at, &heads, &self.key_id);
        let signature = jsonwebtoken::crypto::sign(&bytes, &self.key, Algorithm::EdDSA).expect("sign");
        Checkpoint { number, signed_at: signed_at.to_string(), heads, key_id: self.key_id.clone(), signature }
    }
}

/// The envelope actor of a record's actor type (the envelope has no `anonymous`).
fn envelope_actor(actor_type: &str, id: &str) -> Actor {
    let kind = match actor_type {
        "user" => ActorType::User,
        "operator" => ActorType::Operator,
        "auditor" => ActorType::Auditor,
        "app" => ActorType::App,
        _ => ActorType::System,
    };
    Actor { kind, id: id.to_string() }
}

/// What `commands::audit` appends and the relay publishes for a record.
fn record_envelope(entry: AuditEntry, position: i64) -> EventEnvelope {
    let record = &entry.record;
    let correlation = record.metadata.get("correlation_id").and_then(Value::as_str).unwrap_or_default().to_string();
    EventEnvelope {
        event_id: record.id,
        tenant_id: record.tenant_id.clone(),
        position,
        txid: 10_000 + position,
        aggregate_type: audit::AGGREGATE_TYPE.into(),
        aggregate_id: record.chain.clone(),
        sequence: record.seq,
        event_type: audit::RECORDED.into(),
        schema_version: "1".into(),
        occurred_at: record.timestamp.parse().expect("canonical time"),
        actor: envelope_actor(&record.actor_type, &record.actor_id),
        correlation_id: correlation,
        causation_id: record.id.to_string(),
        payload: serde_json::to_value(AuditEvent::Recorded(entry)).expect("payload"),
    }
}

fn checkpoint_envelope(checkpoint: Checkpoint, position: i64) -> EventEnvelope {
    let occurred_at: DateTime<Utc> = checkpoint.signed_at.parse().expect("canonical time");
    let id = uuid_v7(occurred_at.timestamp_millis() as u64, position as u64);
    EventEnvelope {
        event_id: id,
        tenant_id: None,
        position,
        txid: 10_000 + position,
        aggregate_type: audit::CHECKPOINT_AGGREGATE.into(),
        aggregate_id: "global".into(),
        sequence: checkpoint.number,
        event_type: audit::CHECKPOINT_SIGNED.into(),
        schema_version: "1".into(),
        occurred_at,
        actor: Actor::system("audit-checkpointer"),
        correlation_id: id.to_string(),
        causation_id: id.to_string(),
        payload: serde_json::to_value(AuditEvent::CheckpointSigned(checkpoint)).expect("payload"),
    }
}

/// Writes the log export; returns the checkpoints it holds.
fn write_log(trail: &Trail, signer: &Signer, path: &Path) -> Vec<Checkpoint> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create log export"));
    let chains = trail.chains.len();
    let mut heads: Vec<(i64, String)> = vec![(0, GENESIS.to_string()); chains];
    let quarter = (trail.records() / 4).max(1);
    let mut checkpoints = Vec::new();
    let (mut position, mut written) = (0i64, 0u64);
    for seq in 1..=trail.per_chain {
        for c in 0..chains {
            let (id, input) = trail.input(c, seq);
            let entry = input.chained(id, seq, &heads[c].1);
            heads[c] = (seq, entry.hash.clone());
            let last_time = entry.record.timestamp.clone();
            position += 1;
            serde_json::to_writer(&mut out, &record_envelope(entry, position)).expect("write");
            out.write_all(b"\n").expect("write");
            written += 1;
            if written % quarter == 0 {
                let signed_heads: Vec<ChainHead> = trail
                    .chains
                    .iter()
                    .zip(&heads)
                    .filter(|(_, (seq, _))| *seq > 0)
                    .map(|(chain, (seq, hash))| ChainHead { chain: chain.clone(), seq: *seq, hash: hash.clone() })
                    .collect();
                let signed_at: DateTime<Utc> = last_time.parse().expect("time");
                let signed_at = audit::canonical_time(signed_at + chrono::Duration::seconds(1));
                let checkpoint = signer.checkpoint(checkpoints.len() as i64 + 1, &signed_at, signed_heads);
                position += 1;
                serde_json::to_writer(&mut out, &checkpoint_envelope(checkpoint.clone(), position)).expect("write");
                out.write_all(b"\n").expect("write");
                checkpoints.push(checkpoint);
            }
        }
    }
    out.into_inner().expect("flush").sync_all().expect("sync");
    checkpoints
}

/// One CSV field, quoted when it must be (as the `csv` crate writes it).
fn csv_field(out: &mut Vec<u8>, field: &str) {
    if field.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.push(b'"');
        out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(field.as_bytes());
    }
}

fn csv_line(out: &mut Vec<u8>, fields: &[impl AsRef<str>]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_field(out, field.as_ref());
    }
    out.push(b'\n');
}

/// Writes the same records as `GET /v1/audit/export.csv` would: chain by chain.
fn write_csv(trail: &Trail, path: &Path) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create CSV export"));
    let mut line = Vec::with_capacity(4096);
    csv_line(&mut line, &CSV_HEADER);
    out.write_all(&line).expect("write");
    for c in 0..trail.chains.len() {
        let mut prev = GENESIS.to_string();
        for seq in 1..=trail.per_chain {
            let (id, input) = trail.input(c, seq);
            let entry = input.chained(id, seq, &prev);
            let record = serde_json::to_value(&entry.record).expect("record");
            line.clear();
            csv_line(&mut line, &csv_row(&record, &entry.hash));
            out.write_all(&line).expect("write");
            prev = entry.hash;
        }
    }
    out.into_inner().expect("flush").sync_all().expect("sync");
}

/// A directory of the bench's files, removed (with them) when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn verdict(report: &VerifyReport) -> String {
    match &report.broken {
        None => "no break".into(),
        Some(b) => format!("BROKEN: {b}"),
    }
}

async fn verify_benchmark(events: u64, chains: u64) {
    let root = std::env::var("KEEL_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let scratch = Scratch(root.join(format!("keel-audit-bench-{}", Uuid::now_v7().simple())));
    std::fs::create_dir_all(&scratch.0).expect("bench directory");
    let trail = Trail::new(events, chains);
    let signer = Signer::new();
    let keys = audit_verify::keys_from_json(&signer.keys_json).expect("keys");
    let me = std::process::id().to_string();

    let log = scratch.0.join("log.ndjson");
    let started = Instant::now();
    let checkpoints = write_log(&trail, &signer, &log);
    let lines = trail.records() + checkpoints.len() as u64;
    let size = file_size(&log);
    println!(
        "log export written: {} audit.recorded over {} chains + {} audit.checkpoint_signed = {} lines, {:.1} MiB \
         ({:.0} bytes/line), in {:.1} s",
        trail.records(),
        trail.chains.len(),
        checkpoints.len(),
        lines,
        mib(size),
        size as f64 / lines as f64,
        started.elapsed().as_secs_f64()
    );
    let reset = reset_peak(&me);
    let rss = status_mib(&me, "VmRSS:");
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let report = audit_verify::verify_log(&LogSource::File(log.clone()), &keys, &ProgressBar::hidden())
        .await
        .expect("verify the log export");
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let peak = status_mib(&me, "VmHWM:");
    println!(
        "audit verify (log export): {lines} events ({} records, {} chains, {} checkpoints) in {elapsed:.2} s \
         (CPU {cpu:.2} s) = {} events/s ({} per CPU second), {}; {:.1} MiB/s; this process's resident memory \
         {rss:.1} MiB before, peak {peak:.1} MiB{}",
        report.records,
        report.chains,
        report.checkpoints,
        thousands(lines as f64 / elapsed),
        thousands(lines as f64 / cpu),
        verdict(&report),
        mib(size) / elapsed,
        if reset { "" } else { " (peak since start: clear_refs refused)" },
    );
    assert!(report.broken.is_none() && report.records == trail.records(), "the generated log verifies");
    figure("audit.verify_log_events_per_s", lines as f64 / elapsed, "events/s", Better::Higher);
    assert_eq!(report.checkpoints, checkpoints.len() as u64, "every checkpoint checked");
    std::fs::remove_file(&log).expect("remove the log export");

    let csv = scratch.0.join("export.csv");
    let started = Instant::now();
    write_csv(&trail, &csv);
    let size = file_size(&csv);
    println!(
        "CSV export written: {} rows, {:.1} MiB ({:.0} bytes/row), in {:.1} s",
        trail.records(),
        mib(size),
        size as f64 / trail.records() as f64,
        started.elapsed().as_secs_f64()
    );
    let reset = reset_peak(&me);
    let rss = status_mib(&me, "VmRSS:");
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let report =
        audit_verify::verify_csv(&csv, &checkpoints, &keys, &ProgressBar::hidden()).expect("verify the CSV export");
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let peak = status_mib(&me, "VmHWM:");
    println!(
        "audit verify (CSV export): {} rows ({} chains, {} checkpoints) in {elapsed:.2} s (CPU {cpu:.2} s) = \
         {} rows/s ({} per CPU second), {}; {:.1} MiB/s; this process's resident memory {rss:.1} MiB before, \
         peak {peak:.1} MiB{}",
        report.records,
        report.chains,
        report.checkpoints,
        thousands(report.records as f64 / elapsed),
        thousands(report.records as f64 / cpu),
        verdict(&report),
        mib(size) / elapsed,
        if reset { "" } else { " (peak since start: clear_refs refused)" },
    );
    assert!(report.broken.is_none() && report.records == trail.records(), "the generated CSV verifies");
    figure("audit.verify_csv_rows_per_s", report.records as f64 / elapsed, "rows/s", Better::Higher);
    std::fs::remove_file(&csv).expect("remove the CSV export");
}

/// Adds rows `from..to` (0-based) to the audit trail read model: chain `i % chains`,
/// place `i / chains + 1`, a record JSON like Keel's (~550 bytes) and a 64-hex hash.
async fn insert_rows(owner: &sqlx::PgPool, from: i64, to: i64, chains: i64) {
    const BATCH: i64 = 50_000;
    let started = Instant::now();
    let mut at = from;
    while at < to {
        let end = (at + BATCH).min(to);
        sqlx::query(
            "INSERT INTO rm_audit_trail.records (chain, seq, id, occurred_at, tenant_id, actor_type, actor_id, action,
                                                 resource, outcome, reason, record, hash, position)
             SELECT chain, seq, id, at, chain, actor_type, actor, action, 'tenant/' || chain, outcome, reason,
                    jsonb_build_object(
                        'id', id, 'chain', chain, 'seq', seq,
                        'timestamp', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        'tenant_id', chain, 'actor_type', actor_type, 'actor_id', actor, 'action', action,
                        'resource', 'tenant/' || chain, 'outcome', outcome, 'reason', reason,
                        'source', 'keel', 'source_event_id', NULL,
                        'metadata', jsonb_build_object(
                            'correlation_id', gen_random_uuid()::text, 'rpc', rpc,
                            'client_address', '10.' || i % 251 || '.' || i % 241 || '.' || i % 239,
                            'user_agent', 'keel-cli/0.1.0 tonic/0.14.2'),
                        'prev_hash', md5(i || 'p') || md5(i || 'q')),
                    md5(i || 'h') || md5(i || 'k'), i + 1
             FROM (SELECT i, 'tnt_01jd' || lpad(to_hex(i % $3), 22, '0') AS chain, i / $3 + 1 AS seq,
                          gen_random_uuid() AS id,
                          timestamptz '2026-11-01 00:00:00+00' + i * interval '37 milliseconds' AS at,
                          CASE WHEN i % 10 = 1 THEN 'operator' ELSE 'user' END AS actor_type,
                          'usr_01jd' || lpad(to_hex(i * 7919 % 100003), 22, '0') AS actor,
                          (ARRAY['tenant.suspend', 'tenant.reactivate', 'plan.change', 'user.invite',
                                 'user.role.change', 'tenant.flag.set'])[1 + i % 6] AS action,
                          (ARRAY['SuspendTenant', 'ReactivateTenant', 'ChangePlan', 'InviteUser',
                                 'ChangeUserRole', 'SetTenantFlag'])[1 + i % 6] AS rpc,
                          CASE WHEN i % 20 = 0 THEN 'failure' ELSE 'success' END AS outcome,
                          CASE WHEN i % 20 = 0 THEN 'permission_denied' END AS reason
                   FROM generate_series($1::bigint, $2::bigint) AS i) AS g",
        )
        .bind(at)
        .bind(end - 1)
        .bind(chains)
        .execute(owner)
        .await
        .expect("insert audit rows");
        at = end;
    }
    sqlx::raw_sql("VACUUM ANALYZE rm_audit_trail.records").execute(owner).await.expect("vacuum analyze");
    let sample: Vec<Value> = sqlx::query_scalar("SELECT record FROM rm_audit_trail.records LIMIT 1000")
        .fetch_all(owner)
        .await
        .expect("sample");
    let record_bytes = sample.iter().map(|r| r.to_string().len()).sum::<usize>() as f64 / sample.len().max(1) as f64;
    let table: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('rm_audit_trail.records')")
        .fetch_one(owner)
        .await
        .expect("size");
    println!(
        "read model: {} rows inserted in {:.1} s ({to} in rm_audit_trail.records, {:.0} MiB with indexes; \
         record JSON {record_bytes:.0} bytes on average, compact); VACUUM ANALYZE done",
        to - from,
        started.elapsed().as_secs_f64(),
        mib(table as u64),
    );
}

/// Streams the CSV export into a byte counter and prints rate and Keel's memory.
async fn export(keel: &Keel, token: &str, rows: i64) {
    let pid = keel.pid().to_string();
    let hwm_since_start = status_mib(&pid, "VmHWM:");
    let before = status_mib(&pid, "VmRSS:");
    let reset = reset_peak(&pid);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, pid) = (sampling.clone(), pid.clone());
        std::thread::spawn(move || {
            let mut highest = 0.0f64;
            while sampling.load(Ordering::Relaxed) {
                highest = highest.max(status_mib(&pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(10));
            }
            highest
        })
    };
    let url = format!("http://127.0.0.1:{}/v1/audit/export.csv", keel.rest_port);
    let started = Instant::now();
    let mut response = reqwest::Client::new().get(&url).bearer_auth(token).send().await.expect("export");
    assert_eq!(response.status(), 200, "export answered");
    let first = started.elapsed();
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await.expect("export body") {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let sampled = sampler.join().expect("sampler");
    let peak = status_mib(&pid, "VmHWM:");
    let exported = lines.saturating_sub(1);
    println!(
        "audit export (GET /v1/audit/export.csv, {rows} rows in the read model): {exported} rows, {:.1} MiB in \
         {elapsed:.2} s = {} rows/s, first byte after {:.0} ms; keel resident memory {before:.1} MiB before \
         (peak since start {hwm_since_start:.1} MiB), peak during the export {peak:.1} MiB{} (highest VmRSS sampled \
         every 10 ms: {sampled:.1} MiB)",
        mib(bytes),
        thousands(exported as f64 / elapsed),
        first.as_secs_f64() * 1000.0,
        if reset { " (VmHWM reset before it)" } else { " (VmHWM since start: clear_refs refused)" },
    );
    assert_eq!(exported, rows as u64, "every row exported");
    // The last (largest) export's figures are the ones the closing table shows.
    figure("audit.export_rows_per_s", exported as f64 / elapsed, "rows/s", Better::Higher);
    figure("audit.export_peak_mib", peak, "MiB", Better::Lower);
}

async fn export_benchmark(sizes: &[i64], chains: i64) {
    let env = TestEnv::new().await;
    let owner = env.owner_pool().await;
    let operator = env.operator_token().await;
    let keel = Keel::start(&env, "16").await;
    let mut inserted = 0;
    for &rows in sizes {
        if rows > inserted {
            insert_rows(&owner, inserted, rows, chains).await;
            inserted = rows;
        }
        export(&keel, &operator, rows).await;
    }
    drop(keel);
    owner.close().await;
    if std::env::var("KEEL_BENCH_KEEP").is_err() {
        keel_tests::bench::drop_run(&env).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The bulk inserts are slow statements on purpose: keep sqlx's warnings about them out.
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,keel=info,sqlx::query=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    let events: u64 = var("KEEL_BENCH_AUDIT_EVENTS", 1_000_000);
    let chains: u64 = var("KEEL_BENCH_AUDIT_CHAINS", 1_000).max(1);
    let mut sizes: Vec<i64> = std::env::var("KEEL_BENCH_AUDIT_EXPORT_ROWS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    sizes.sort();
    println!("audit benchmark: verify {events} events over {chains} chains; export {sizes:?} rows");
    if events > 0 {
        verify_benchmark(events, chains).await;
    }
    if !sizes.is_empty() {
        export_benchmark(&sizes, chains as i64).await;
    }
}
