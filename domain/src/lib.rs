//! Keel's pure domain: aggregates, their commands, events and errors, and the
//! authorization rules. Nothing here does I/O or needs an async runtime; the
//! `commands` crate runs these aggregates on cqrs-es and postgres-es.
//!
//! Each aggregate module declares its events with `events!` and becomes a cqrs-es
//! aggregate with `aggregate!` (both in `aggregate.rs`), so it holds only its own rules.

pub mod access;
mod aggregate;
pub mod app;
pub mod audit;
pub mod catalog;
pub mod deployment;
pub mod directory;
pub mod envelope;
pub mod error;
pub mod flag;
pub mod ids;
pub mod kafka_settings;
pub mod limits;
pub mod login_guard;
pub mod plan;
pub mod rollup_allowlist;
pub mod routing;
pub mod schemas;
pub mod session;
pub mod tenant;
pub mod tenant_config;
pub mod tenant_domain;
pub mod usage;
pub mod validate;

pub use error::{DomainError, ErrorKind};
