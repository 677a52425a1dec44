//! Keel's write side: commands run on cqrs-es aggregates whose events postgres-es
//! stores (the system of record); idempotency keys; and the relay that publishes
//! committed events, in order, to Kafka.

pub mod aggregate_cache;
pub mod apps;
pub mod audit;
pub mod authorization_codes;
pub mod billing;
pub mod bus;
pub mod command_scope;
pub mod flags;
pub mod group_commit;
pub mod idempotency;
pub mod identity_index;
pub mod identity_queries;
pub mod kafka;
pub mod kek;
pub mod key_index;
pub mod limits;
pub mod mail;
pub mod migrate;
pub mod oidc_clients;
pub mod operator_credentials;
pub mod passwords;
pub mod pools;
pub mod relay;
pub mod relay_lag;
pub mod relay_status;
pub mod rollup_allowlist_index;
pub mod routing;
pub mod secret;
pub mod sessions;
pub mod signing_keys;
pub mod store;
pub mod tenants;
pub mod throttle;
pub mod users;
pub mod wrapped_secrets;
pub mod write_index;
