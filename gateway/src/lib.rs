//! The `keel` binary's library: the gRPC command API, the REST query API, and the
//! wiring of relay, projectors and schedulers into one process.

pub mod api_keys;
pub mod audit_verify;
pub mod auth;
pub mod cli;
pub mod config;
pub mod errors;
pub mod event_log;
pub mod flag_cache;
pub mod grpc;
pub mod grpc_apps;
pub mod grpc_billing;
pub mod grpc_flags;
pub mod grpc_routing;
pub mod grpc_tenants;
pub mod grpc_users;
pub mod openapi;
pub mod ready;
pub mod rest;
pub mod rest_audit;
pub mod rest_auth;
pub mod rest_billing;
pub mod rest_flags;
pub mod rest_ofrep;
pub mod rest_routing;
pub mod rest_tenants;
pub mod server;
pub mod sweeper;
pub mod tenant_replay;
pub mod tokens;

/// Generated protobuf and gRPC code for `keel.v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("keel.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/keel_descriptor.bin"));
}
