//! The audit trail's write path (ADR 0014): records get their place in their chain
//! and their hash under a lock on the chain's head, and are appended as
//! `audit.recorded` events in the same transaction, durably.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sha2::Digest;
use sqlx::PgPool;
use uuid::Uuid;

use keel_domain::audit::{self, AuditEvent, AuditInput, GENESIS};
use keel_domain::envelope::keys;

/// Appends audit records.
#[derive(Debug, Clone)]
pub struct AuditLog {
    pool: PgPool,
}

/// An app's record with its own id (for idempotency).
#[derive(Debug, Clone)]
pub struct AppRecord {
    /// The app's id of the record.
    pub event_id: String,
    /// The record.
    pub input: AuditInput,
}

impl AuditLog {
    /// The audit log on `pool` (commits wait for the WAL flush).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Appends `inputs` (in order within each chain); returns the highest log position.
    pub async fn append(&self, inputs: Vec<AuditInput>) -> Result<i64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        lock_chains(&mut tx, &inputs).await?;
        let position = append_in(&mut tx, inputs).await?;
        tx.commit().await?;
        Ok(position)
    }

    /// Appends the records app `app_id` sent, each once by its id: returns, per record,
    /// whether it is new (a retry of a recorded id is `false`), and the highest position.
    pub async fn append_from_app(
        &self,
        app_id: &str,
        records: Vec<AppRecord>,
    ) -> Result<(Vec<bool>, i64), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        lock_chains(&mut tx, records.iter().map(|r| &r.input)).await?;
        let ids: Vec<Uuid> = records.iter().map(|_| Uuid::now_v7()).collect();
        let fresh: BTreeSet<String> = sqlx::query_scalar(
            "INSERT INTO audit_app_events (app_id, event_id, record_id)
             SELECT $1, e, r FROM UNNEST($2::text[], $3::uuid[]) AS u(e, r)
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(app_id)
        .bind(records.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>())
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut seen = BTreeSet::new();
        let new: Vec<bool> = records.iter().map(|r| fresh.contains(&r.event_id) && seen.insert(&r.event_id)).collect();
        let inputs: Vec<AuditInput> =
            records.iter().zip(&new).filter(|(_, new)| **new).map(|(r, _)| r.input.clone()).collect();
        let position = append_in(&mut tx, inputs).await?;
        tx.commit().await?;
        Ok((new, position))
    }
}

/// One checkpoint signer at a time (advisory lock key).
const CHECKPOINT_LOCK: i64 = 7_242_014;

/// A checkpoint signing key's id and public half (base64url), as published.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct PublicKey {
    /// The key id checkpoints name.
    pub key_id: String,
    /// The raw 32-byte Ed25519 public key, base64url without padding.
    pub public_key: String,
}

/// The published checkpoint keys, oldest first.
pub async fn public_keys(pool: &PgPool) -> Result<Vec<PublicKey>, sqlx::Error> {
    sqlx::query_as("SELECT key_id, public_key FROM audit_signing_keys ORDER BY created_at, key_id")
        .fetch_all(pool)
        .await
}

/// The signing key, created on first use; stored only wrapped under `kek` (ADR 0028).
async fn signing_key(
    tx: &mut sqlx::PgConnection,
    kek: &dyn crate::kek::KeyEncryptionKey,
) -> Result<(String, ed25519_dalek::SigningKey), sqlx::Error> {
    use base64::Engine;
    let column = crate::wrapped_secrets::AUDIT_SIGNING_KEYS;
    let existing: Option<(String, Option<String>, Vec<u8>)> = sqlx::query_as(
        "SELECT key_id, kek_id, secret_wrapped FROM audit_signing_keys ORDER BY created_at, key_id LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((key_id, kek_id, wrapped)) = existing {
        let secret = column.unwrap(kek, &key_id, kek_id.as_deref(), &wrapped)?;
        let bytes = <[u8; 32]>::try_from(secret.as_slice())
            .map_err(|_| sqlx::Error::Protocol(format!("audit signing key {key_id} is not 32 bytes")))?;
        return Ok((key_id, ed25519_dalek::SigningKey::from_bytes(&bytes)));
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&crate::secret::random_bytes());
    let public = key.verifying_key().to_bytes();
    let key_id = format!("audit-{}", &hex::encode(sha2::Sha256::digest(public))[..16]);
    let wrapped = column.wrap(kek, &key_id, &key.to_bytes())?;
    sqlx::query("INSERT INTO audit_signing_keys (key_id, secret_wrapped, kek_id, public_key) VALUES ($1, $2, $3, $4)")
        .bind(&key_id)
        .bind(wrapped.bytes)
        .bind(wrapped.key_id)
        .bind(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public))
        .execute(&mut *tx)
        .await?;
    Ok((key_id, key))
}

/// Signs a checkpoint of every chain head that moved since the last checkpoint and
/// appends it as an `audit.checkpoint_signed` event. Returns its number, or `None` if
/// no chain moved (or another process is signing).
pub async fn sign_checkpoint(
    pool: &PgPool,
    kek: &dyn crate::kek::KeyEncryptionKey,
) -> Result<Option<i64>, sqlx::Error> {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let mut tx = pool.begin().await?;
    let leader: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)").bind(CHECKPOINT_LOCK).fetch_one(&mut *tx).await?;
    if !leader {
        return Ok(None);
    }
    let heads: Vec<audit::ChainHead> = sqlx::query_as::<_, (String, i64, String)>(
        "SELECT h.chain, h.seq, h.hash FROM audit_chain_heads h LEFT JOIN audit_checkpointed c USING (chain)
         WHERE h.seq > COALESCE(c.seq, 0) ORDER BY h.chain",
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(chain, seq, hash)| audit::ChainHead { chain, seq, hash })
    .collect();
    if heads.is_empty() {
        return Ok(None);
    }
    let (key_id, key) = signing_key(&mut tx, kek).await?;
    let number: i64 = sqlx::query_scalar(
        "SELECT COALESCE(max(sequence), 0) + 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = 'global'",
    )
    .bind(audit::CHECKPOINT_AGGREGATE)
    .fetch_one(&mut *tx)
    .await?;
    let now = chrono::Utc::now();
    let signed_at = audit::canonical_time(now);
    let signature = key.sign(&audit::Checkpoint::signed_bytes(number, &signed_at, &heads, &key_id));
    let checkpoint = audit::Checkpoint {
        number,
        signed_at: signed_at.clone(),
        heads: heads.clone(),
        key_id,
        signature: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature.to_bytes()),
    };
    let id = Uuid::now_v7().to_string();
    let metadata = serde_json::json!({
        keys::EVENT_ID: id, keys::ACTOR_TYPE: "system", keys::ACTOR_ID: "audit-checkpointer",
        keys::CORRELATION_ID: id, keys::CAUSATION_ID: id, keys::COMMAND_ID: id, keys::OCCURRED_AT: signed_at,
    });
    let payload =
        serde_json::to_value(AuditEvent::CheckpointSigned(checkpoint)).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ($1, 'global', $2, $3, '1', $4, $5)",
    )
    .bind(audit::CHECKPOINT_AGGREGATE)
    .bind(number)
    .bind(audit::CHECKPOINT_SIGNED)
    .bind(payload)
    .bind(metadata)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO audit_checkpointed (chain, seq) SELECT * FROM UNNEST($1::text[], $2::bigint[])
         ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq",
    )
    .bind(heads.iter().map(|h| h.chain.clone()).collect::<Vec<_>>())
    .bind(heads.iter().map(|h| h.seq).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(number))
}

/// The advisory-lock namespace of the audit chains (two-key form: apart from the
/// one-key locks of the relay and the checkpoint signer).
const CHAIN_LOCK_NAMESPACE: i32 = 7_242_015;

/// Locks the chains of `inputs` for the rest of `tx`, in chain order; call it before the
/// transaction's first write. An advisory lock needs no transaction id, so a chain's
/// writers get their ids in the order they hold its lock: the relay, which publishes in
/// transaction-id order, then publishes each chain in its order (a row lock taken after
/// a first write would not: a writer could get its id, then wait behind a later one).
pub(crate) async fn lock_chains<'a>(
    tx: &mut sqlx::PgConnection,
    inputs: impl IntoIterator<Item = &'a AuditInput>,
) -> Result<(), sqlx::Error> {
    let chains: Vec<&str> = inputs.into_iter().map(AuditInput::chain).collect::<BTreeSet<_>>().into_iter().collect();
    if chains.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock($1, hashtext(c))) FROM (SELECT c FROM UNNEST($2::text[]) AS c ORDER BY c) s",
    )
    .bind(CHAIN_LOCK_NAMESPACE)
    .bind(&chains)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Chains and appends `inputs` inside `tx` (whose chains [`lock_chains`] locked); returns
/// the highest position (0 if none).
pub(crate) async fn append_in(tx: &mut sqlx::PgConnection, inputs: Vec<AuditInput>) -> Result<i64, sqlx::Error> {
    if inputs.is_empty() {
        return Ok(0);
    }
    let chains: Vec<String> =
        inputs.iter().map(|i| i.chain().to_string()).collect::<BTreeSet<_>>().into_iter().collect();
    // One statement creates missing heads and locks every head, in chain order, so two
    // writers never wait on each other in a cycle (an upsert that changes nothing still
    // takes the row's lock and returns the head as it is).
    let mut heads: BTreeMap<String, (i64, String)> = sqlx::query_as::<_, (String, i64, String)>(
        "INSERT INTO audit_chain_heads (chain, seq, hash) SELECT c, 0, $2 FROM UNNEST($1::text[]) AS c ORDER BY c
         ON CONFLICT (chain) DO UPDATE SET chain = EXCLUDED.chain RETURNING chain, seq, hash",
    )
    .bind(&chains)
    .bind(GENESIS)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(chain, seq, hash)| (chain, (seq, hash)))
    .collect();

    let mut rows: Vec<(String, i64, Value, Value)> = Vec::with_capacity(inputs.len());
    for input in inputs {
        let chain = input.chain().to_string();
        let head = heads.entry(chain.clone()).or_insert_with(|| (0, GENESIS.to_string()));
        let id = Uuid::now_v7();
        let metadata = serde_json::json!({
            keys::EVENT_ID: id.to_string(),
            keys::TENANT_ID: input.tenant_id,
            keys::ACTOR_TYPE: envelope_actor_type(&input.actor_type),
            keys::ACTOR_ID: input.actor_id,
            keys::CORRELATION_ID: input.metadata.get("correlation_id").and_then(Value::as_str).unwrap_or_default(),
            keys::CAUSATION_ID: id.to_string(),
            keys::COMMAND_ID: id.to_string(),
            keys::OCCURRED_AT: audit::canonical_time(input.timestamp),
        });
        let entry = input.chained(id, head.0 + 1, &head.1);
        *head = (entry.record.seq, entry.hash.clone());
        let payload =
            serde_json::to_value(AuditEvent::Recorded(entry)).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        crate::limits::check_event(&payload, &metadata).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        rows.push((chain, head.0, payload, metadata));
    }
    let (names, (seqs, hashes)): (Vec<String>, (Vec<i64>, Vec<String>)) = heads.into_iter().unzip();
    // The records and the heads they move, in one statement.
    sqlx::query_scalar(
        "WITH appended AS (
           INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
           SELECT $1, c, s, $2, '1', p, m FROM UNNEST($3::text[], $4::bigint[], $5::jsonb[], $6::jsonb[]) AS u(c, s, p, m)
           RETURNING position),
         moved AS (
           UPDATE audit_chain_heads h SET seq = u.s, hash = u.h
           FROM UNNEST($7::text[], $8::bigint[], $9::text[]) AS u(c, s, h) WHERE h.chain = u.c)
         SELECT COALESCE(max(position), 0) FROM appended",
    )
    .bind(audit::AGGREGATE_TYPE)
    .bind(audit::RECORDED)
    .bind(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>())
    .bind(&names)
    .bind(&seqs)
    .bind(&hashes)
    .fetch_one(&mut *tx)
    .await
}

/// The envelope's actor type for a record's (the envelope has no `anonymous`).
fn envelope_actor_type(actor_type: &str) -> &str {
    match actor_type {
        "user" | "operator" | "auditor" | "app" => actor_type,
        _ => "system",
    }
}
