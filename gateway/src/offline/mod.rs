//! The auditors' tools that need no database: reading an exported (or live) event
//! log, verifying the audit chains and checkpoints, and replaying one tenant.

pub mod audit_verify;
pub mod event_log;
pub mod tenant_replay;
