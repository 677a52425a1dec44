//! Keel's read side. Projectors are Kafka consumer groups on `keel.events`; each
//! keeps one read model in its own Postgres schema and advances its partition
//! offsets in the same transaction as the model, so a crash or a redelivery never
//! loses or doubles an effect. One module per read model; [`registry`] lists them.

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
pub mod registry;
pub mod replay;
pub mod routing;
pub mod tenant_registry;

pub use read_model::ReadModel;
pub use registry::ensure_schemas;
