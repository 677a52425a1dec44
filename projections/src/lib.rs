//! Keel's read side. Projectors are Kafka consumer groups on `keel.events`; each
//! keeps one read model in its own Postgres schema and advances its partition
//! offsets in the same transaction as the model, so a crash or a redelivery never
//! loses or doubles an effect. One module per read model.

pub mod audit_trail;
pub mod batch;
pub mod billing_ledger;
pub mod billing_rollups;
pub mod dead_letters;
pub mod flag_snapshots;
pub mod kafka;
pub mod progress;
pub mod projector;
pub mod read_model;
pub mod replay;
pub mod routing;
pub mod tenant_registry;

pub use read_model::ReadModel;

/// Every read model's name, in the order `keel migrate` creates them.
pub const READ_MODELS: &[&str] = &[
    tenant_registry::NAME,
    flag_snapshots::NAME,
    routing::NAME,
    billing_ledger::NAME,
    billing_rollups::NAME,
    audit_trail::NAME,
];

/// Creates each read model's live schema that does not exist yet (as the migration
/// role); returns the names of those created.
pub async fn ensure_schemas(owner: &sqlx::PgPool, runtime_role: &str) -> Result<Vec<&'static str>, sqlx::Error> {
    use read_model::ensure_schema;
    let mut created = Vec::new();
    let made = [
        ensure_schema(owner, &tenant_registry::TenantRegistry, runtime_role).await?,
        ensure_schema(owner, &flag_snapshots::FlagSnapshots, runtime_role).await?,
        ensure_schema(owner, &routing::RoutingModel, runtime_role).await?,
        ensure_schema(owner, &billing_ledger::BillingLedger, runtime_role).await?,
        ensure_schema(owner, &billing_rollups::BillingRollups, runtime_role).await?,
        ensure_schema(owner, &audit_trail::AuditTrail, runtime_role).await?,
    ];
    for (name, made) in READ_MODELS.iter().zip(made) {
        if made {
            created.push(*name);
        }
    }
    Ok(created)
}
