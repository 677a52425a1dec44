//! Integration and end-to-end tests: real Postgres, real Kafka-protocol broker,
//! Keel's public gRPC and REST APIs. Run with `make test`.

mod apps;
mod audit;
mod billing;
mod broker;
mod broker_outage;
mod browser;
mod dead_letters;
mod dynamic;
mod event_store;
mod faults;
mod flags;
mod grpc;
mod grpc_fuzz;
mod identity;
mod interfaces;
mod keys_at_rest;
mod limits;
mod metrics;
mod oidc_clients;
mod oidc_flow;
mod pages;
mod projector;
mod projector_rejoin;
mod relay_limits;
mod replay;
mod rest;
mod rest_fuzz;
mod routing;
mod schemas;
mod sign_in_limits;
mod support;
mod tenant_matrix;
