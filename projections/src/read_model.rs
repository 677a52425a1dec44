//! What a read model supplies to the projector runtime.

use std::future::Future;

use sqlx::{Executor as _, PgConnection, PgPool};

use keel_domain::envelope::EventEnvelope;

/// A read model built from `keel.events`.
pub trait ReadModel: Send + Sync + 'static {
    /// What one relevant event changes, decoded.
    type Change: Send + Sync;

    /// The read model's name, e.g. `tenant_registry`; its schema is `rm_<name>`.
    fn name(&self) -> &'static str;

    /// The model's DDL; `{schema}` and `{runtime_role}` are filled in.
    fn ddl(&self) -> &'static str;

    /// Decodes an event: `Ok(None)` if the model ignores it, `Err` (the reason) if it
    /// should apply it but cannot — the event is then parked as a dead letter.
    fn decode(&self, event: &EventEnvelope) -> Result<Option<Self::Change>, String>;

    /// Applies decoded changes, in order, inside the runtime's transaction.
    /// An error here is taken as transient: the batch is rolled back and retried.
    fn apply(
        &self,
        tx: &mut PgConnection,
        schema: &str,
        changes: Vec<Self::Change>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// An event's payload as the aggregate's event enum (whose serde tag is `type`; the
/// envelope carries it as `event_type`).
pub fn decode_payload<E: serde::de::DeserializeOwned>(event: &EventEnvelope) -> Result<E, String> {
    let mut payload = event.payload.clone();
    if let Some(map) = payload.as_object_mut() {
        map.entry("type").or_insert_with(|| event.event_type.clone().into());
    }
    serde_json::from_value(payload).map_err(|e| format!("cannot read {}: {e}", event.event_type))
}

/// The live schema of read model `name`.
pub fn live_schema(name: &str) -> String {
    format!("rm_{name}")
}

/// The DDL creating the schema, the runtime's tables and the model's tables.
pub fn schema_ddl<R: ReadModel>(model: &R, schema: &str, runtime_role: &str) -> String {
    let fill = |sql: &str| sql.replace("{schema}", schema).replace("{runtime_role}", runtime_role);
    format!("{}\n{}", fill(include_str!("../sql/runtime.sql")), fill(model.ddl()))
}

/// Creates the model's live schema if it does not exist yet (run as the migration role).
pub async fn ensure_schema<R: ReadModel>(owner: &PgPool, model: &R, runtime_role: &str) -> Result<bool, sqlx::Error> {
    let schema = live_schema(model.name());
    let mut tx = owner.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7242001)").execute(&mut *tx).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(&schema)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        // `Executor::execute`, not `RawSql::execute`: rustc cannot prove the latter's future
        // `Send` behind the registry's boxed futures ("Executor is not general enough").
        (&mut *tx).execute(sqlx::raw_sql(&schema_ddl(model, &schema, runtime_role))).await?;
    }
    tx.commit().await?;
    Ok(!exists)
}

/// The advisory lock key that keeps live batches and a replay's swap apart.
pub fn swap_lock_key(name: &str) -> i64 {
    // FNV-1a: stable across builds and processes.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// For a paged read in index order under row-level security: the policies hide the
/// index's selectivity from the planner, which would then sort the whole table for
/// every page (quadratic in the rows of an export). This makes it walk the index.
/// Local to the transaction.
pub async fn prefer_index_order(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)").execute(tx).await?;
    Ok(())
}
