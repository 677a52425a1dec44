//! The `keel` binary's library, by role: the gRPC command API (`grpc`), the REST query
//! API (`rest`), authentication (`auth`), the wiring of relay, projectors and
//! schedulers into one process (`server`), its settings (`config`) and resource
//! limits (`limits`), and the auditors' tools that need no database (`offline`).

pub mod auth;
pub mod cli;
pub mod config;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod offline;
pub mod pages;
pub mod rest;
pub mod server;

/// Generated protobuf and gRPC code for `keel.v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("keel.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/keel_descriptor.bin"));
}
