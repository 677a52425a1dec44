//! Applying a batch of Kafka messages to a read model, exactly once in effect.
//!
//! In one transaction: lock the partitions' stored offsets (creating them), drop messages below
//! them (already applied), drop events at or below their tenant's high-water mark
//! (republished repeats), park poison events and everything after them for the
//! same tenant, apply the rest, then advance high-water marks and offsets.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::PgConnection;

use keel_domain::envelope::EventEnvelope;

use crate::read_model::ReadModel;

/// A consumed message, detached from the Kafka client.
#[derive(Debug, Clone)]
pub struct Message {
    /// Partition.
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Message key (tenant id or `platform`).
    pub key: Option<String>,
    /// The JSON envelope.
    pub payload: Vec<u8>,
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events that changed the read model.
    pub applied: usize,
    /// Messages skipped as already applied.
    pub skipped: usize,
    /// Messages parked as dead letters.
    pub parked: usize,
    /// Partition → next offset after this batch.
    pub next_offsets: BTreeMap<i32, i64>,
}

impl BatchOutcome {
    /// Adds what a later part of the same batch did.
    pub fn merge(&mut self, later: BatchOutcome) {
        self.applied += later.applied;
        self.skipped += later.skipped;
        self.parked += later.parked;
        for (partition, next) in later.next_offsets {
            let entry = self.next_offsets.entry(partition).or_insert(next);
            *entry = (*entry).max(next);
        }
    }
}

struct Parked<'a> {
    tenant_id: String,
    message: &'a Message,
    event_id: Option<String>,
    event_type: Option<String>,
    error: String,
}

/// Applies `messages` (in partition order) to `model` in `schema`, inside `tx`.
pub async fn apply_batch<R: ReadModel>(
    tx: &mut PgConnection,
    model: &R,
    schema: &str,
    topic: &str,
    messages: &[Message],
) -> Result<BatchOutcome, sqlx::Error> {
    let mut outcome = BatchOutcome::default();
    if messages.is_empty() {
        return Ok(outcome);
    }
    sqlx::query("SELECT set_config('keel.scope', 'platform', true)").execute(&mut *tx).await?;

    let partitions: Vec<i32> = messages.iter().map(|m| m.partition).collect::<HashSet<_>>().into_iter().collect();
    // Creates, locks and reads the partitions' offset rows in one statement: a second
    // group member working on the same partition (during a rebalance) waits here and
    // then sees this batch's offsets, so it skips what this batch applied.
    let stored: HashMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(&format!(
        "INSERT INTO {schema}._offsets AS o (topic, partition, next_offset)
         SELECT $1, p, 0 FROM UNNEST($2::int[]) AS p
         ON CONFLICT (topic, partition) DO UPDATE SET next_offset = o.next_offset
         RETURNING partition, next_offset"
    ))
    .bind(topic)
    .bind(&partitions)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();

    let fresh: Vec<&Message> =
        messages.iter().filter(|m| m.offset >= stored.get(&m.partition).copied().unwrap_or(0)).collect();
    outcome.skipped = messages.len() - fresh.len();
    for m in &fresh {
        let next = outcome.next_offsets.entry(m.partition).or_insert(0);
        *next = (*next).max(m.offset + 1);
    }
    if fresh.is_empty() {
        return Ok(outcome);
    }

    let decoded: Vec<(&Message, Result<EventEnvelope, String>)> = fresh
        .iter()
        .map(|m| {
            (*m, serde_json::from_slice::<EventEnvelope>(&m.payload).map_err(|e| format!("malformed envelope: {e}")))
        })
        .collect();
    let tenant_of = |m: &Message, e: &Result<EventEnvelope, String>| match e {
        Ok(env) => env.key().to_string(),
        Err(_) => m.key.clone().unwrap_or_else(|| "unknown".to_string()),
    };
    let tenants: Vec<String> =
        decoded.iter().map(|(m, e)| tenant_of(m, e)).collect::<HashSet<_>>().into_iter().collect();

    let mut marks: HashMap<String, (i64, i64)> = sqlx::query_as::<_, (String, i64, i64)>(&format!(
        "SELECT tenant_id, txid, position FROM {schema}._applied WHERE tenant_id = ANY($1)"
    ))
    .bind(&tenants)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(t, x, p)| (t, (x, p)))
    .collect();
    let mut blocked: HashSet<String> = sqlx::query_scalar::<_, String>(&format!(
        "SELECT DISTINCT tenant_id FROM {schema}._parked WHERE tenant_id = ANY($1)"
    ))
    .bind(&tenants)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();

    let mut changes = Vec::new();
    let mut parked = Vec::new();
    let mut advanced: HashMap<String, (i64, i64)> = HashMap::new();
    for (message, envelope) in &decoded {
        let tenant = tenant_of(message, envelope);
        let env = match envelope {
            Err(error) => {
                parked.push(Parked {
                    tenant_id: tenant.clone(),
                    message,
                    event_id: None,
                    event_type: None,
                    error: error.clone(),
                });
                blocked.insert(tenant);
                continue;
            }
            Ok(env) => env,
        };
        if marks.get(&tenant).is_some_and(|mark| env.order() <= *mark) {
            outcome.skipped += 1;
            continue;
        }
        let park = |error: String| Parked {
            tenant_id: tenant.clone(),
            message,
            event_id: Some(env.event_id.to_string()),
            event_type: Some(env.event_type.clone()),
            error,
        };
        if blocked.contains(&tenant) {
            parked.push(park("held behind an earlier parked event of this tenant".into()));
            continue;
        }
        match model.decode(env) {
            Err(error) => {
                parked.push(park(error));
                blocked.insert(tenant);
            }
            Ok(change) => {
                outcome.applied += usize::from(change.is_some());
                changes.extend(change);
                marks.insert(tenant.clone(), env.order());
                advanced.insert(tenant, env.order());
            }
        }
    }

    model.apply(&mut *tx, schema, changes).await?;

    if !advanced.is_empty() {
        let (ids, (txids, positions)): (Vec<String>, (Vec<i64>, Vec<i64>)) = advanced.into_iter().unzip();
        sqlx::query(&format!(
            "INSERT INTO {schema}._applied (tenant_id, txid, position)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])
             ON CONFLICT (tenant_id) DO UPDATE SET txid = EXCLUDED.txid, position = EXCLUDED.position"
        ))
        .bind(&ids)
        .bind(&txids)
        .bind(&positions)
        .execute(&mut *tx)
        .await?;
    }
    outcome.parked = parked.len();
    for p in parked {
        insert_parked(&mut *tx, model.name(), schema, topic, &p).await?;
    }
    store_offsets(tx, schema, topic, &outcome.next_offsets).await?;
    Ok(outcome)
}

/// Parks `message` as a dead letter because the read model's `apply` refuses it for
/// good (`error`), and moves the partition's offset past it; later events of its
/// tenant are then held behind it, as behind a poison event. A message below the
/// stored offset (applied already) is left alone.
pub async fn park_refused<R: ReadModel>(
    tx: &mut PgConnection,
    model: &R,
    schema: &str,
    topic: &str,
    message: &Message,
    error: String,
) -> Result<BatchOutcome, sqlx::Error> {
    sqlx::query("SELECT set_config('keel.scope', 'platform', true)").execute(&mut *tx).await?;
    let stored: Option<i64> =
        sqlx::query_scalar(&format!("SELECT next_offset FROM {schema}._offsets WHERE topic = $1 AND partition = $2"))
            .bind(topic)
            .bind(message.partition)
            .fetch_optional(&mut *tx)
            .await?;
    let mut outcome = BatchOutcome::default();
    if stored.is_some_and(|next| message.offset < next) {
        outcome.skipped = 1;
        return Ok(outcome);
    }
    let envelope = serde_json::from_slice::<EventEnvelope>(&message.payload).ok();
    let parked = Parked {
        tenant_id: envelope
            .as_ref()
            .map(|env| env.key().to_string())
            .or_else(|| message.key.clone())
            .unwrap_or_else(|| "unknown".to_string()),
        message,
        event_id: envelope.as_ref().map(|env| env.event_id.to_string()),
        event_type: envelope.as_ref().map(|env| env.event_type.clone()),
        error,
    };
    insert_parked(&mut *tx, model.name(), schema, topic, &parked).await?;
    outcome.parked = 1;
    outcome.next_offsets.insert(message.partition, message.offset + 1);
    store_offsets(tx, schema, topic, &outcome.next_offsets).await?;
    Ok(outcome)
}

/// Records one dead letter, loudly.
async fn insert_parked(
    tx: &mut PgConnection,
    read_model: &str,
    schema: &str,
    topic: &str,
    p: &Parked<'_>,
) -> Result<(), sqlx::Error> {
    tracing::warn!(read_model, tenant_id = %p.tenant_id, offset = p.message.offset, error = %p.error, "event parked");
    sqlx::query(&format!(
        "INSERT INTO {schema}._parked (tenant_id, topic, partition, kafka_offset, event_id, event_type, message, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(&p.tenant_id)
    .bind(topic)
    .bind(p.message.partition)
    .bind(p.message.offset)
    .bind(&p.event_id)
    .bind(&p.event_type)
    .bind(&p.message.payload)
    .bind(&p.error)
    .execute(tx)
    .await?;
    Ok(())
}

/// Advances the stored next offsets (never backwards).
pub async fn store_offsets(
    tx: &mut PgConnection,
    schema: &str,
    topic: &str,
    next: &BTreeMap<i32, i64>,
) -> Result<(), sqlx::Error> {
    if next.is_empty() {
        return Ok(());
    }
    let (partitions, offsets): (Vec<i32>, Vec<i64>) = next.iter().map(|(p, o)| (*p, *o)).unzip();
    sqlx::query(&format!(
        "INSERT INTO {schema}._offsets (topic, partition, next_offset)
         SELECT $1, * FROM UNNEST($2::int[], $3::bigint[])
         ON CONFLICT (topic, partition) DO UPDATE
             SET next_offset = GREATEST({schema}._offsets.next_offset, EXCLUDED.next_offset)"
    ))
    .bind(topic)
    .bind(&partitions)
    .bind(&offsets)
    .execute(tx)
    .await?;
    Ok(())
}
