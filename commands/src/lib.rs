//! Keel's write side: commands run on cqrs-es aggregates whose events postgres-es
//! stores (the system of record); idempotency keys; and the relay that publishes
//! committed events, in order, to Kafka.

pub mod apps;
pub mod audit;
pub mod billing;
pub mod bus;
pub mod flags;
pub mod idempotency;
pub mod identity_index;
pub mod kafka;
pub mod key_index;
pub mod mail;
pub mod migrate;
pub mod passwords;
pub mod relay;
pub mod routing;
pub mod secret;
pub mod sessions;
pub mod store;
pub mod tenants;
pub mod throttle;
pub mod users;
