//! The gRPC server: the command services, gRPC health, reflection (v1 and v1alpha,
//! listing `keel.v1` and `grpc.health.v1`), gRPC-Web and CORS, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::StartError;
use super::services::Services;
use super::tasks::Tasks;
use crate::config::Settings;
use crate::grpc::apps::AppApi;
use crate::grpc::billing::BillingApi;
use crate::grpc::call_metrics::RecordCalls;
use crate::grpc::flags::FlagApi;
use crate::grpc::layers::{AuditRefusals, stamp_peer};
use crate::grpc::routing::RoutingApi;
use crate::grpc::tenants::TenantApi;
use crate::grpc::users::UserApi;
use crate::metrics::Metrics;
use crate::proto::app_service_server::AppServiceServer;
use crate::proto::billing_service_server::BillingServiceServer;
use crate::proto::flag_service_server::FlagServiceServer;
use crate::proto::routing_service_server::RoutingServiceServer;
use crate::proto::tenant_service_server::TenantServiceServer;
use crate::proto::user_service_server::UserServiceServer;

/// Binds the gRPC address and serves the API there (in a task); returns the bound address.
pub async fn serve(
    settings: &Settings,
    pool: &PgPool,
    services: &Services,
    metrics: &Arc<Metrics>,
    tasks: &mut Tasks,
) -> Result<SocketAddr, StartError> {
    let listener = TcpListener::bind(settings.grpc_addr).await?;
    let addr = listener.local_addr()?;
    // Small request/response messages: never wait for Nagle.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<TenantServiceServer<TenantApi>>().await;
    health.set_serving::<UserServiceServer<UserApi>>().await;
    health.set_serving::<AppServiceServer<AppApi>>().await;
    health.set_serving::<FlagServiceServer<FlagApi>>().await;
    health.set_serving::<RoutingServiceServer<RoutingApi>>().await;
    health.set_serving::<BillingServiceServer<BillingApi>>().await;
    let reflection = |builder: tonic_reflection::server::Builder<'static>| {
        builder
            .register_encoded_file_descriptor_set(crate::proto::DESCRIPTOR)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let auth = &services.auth;
    let tenant_api = TenantApi::new(services.tenants.clone(), auth.clone());
    let app_api = AppApi::new(services.apps.clone(), auth.clone());
    let flag_api = FlagApi::new(services.flags.clone(), auth.clone());
    let routing_api = RoutingApi::new(services.routing.clone(), auth.clone());
    let billing_api = BillingApi::new(services.billing.clone(), auth.clone());
    let user_api = UserApi::new(services.users.clone(), services.sessions.clone(), auth.clone(), pool.clone());
    let refusals = AuditRefusals::new(auth.clone());
    // A request carries at most what one broker message may (ADR 0017).
    let max = settings.limits()?.grpc_message_bytes();
    let record_calls = RecordCalls::new(metrics.clone());
    let mut stop = tasks.stop.clone();
    tasks.spawn(async move {
        let serve = tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(record_calls)
            .layer(tower::util::MapRequestLayer::new(stamp_peer))
            .layer(refusals)
            .layer(cors())
            .layer(tonic_web::GrpcWebLayer::new())
            .add_service(TenantServiceServer::new(tenant_api).max_decoding_message_size(max))
            .add_service(UserServiceServer::new(user_api).max_decoding_message_size(max))
            .add_service(AppServiceServer::new(app_api).max_decoding_message_size(max))
            .add_service(FlagServiceServer::new(flag_api).max_decoding_message_size(max))
            .add_service(RoutingServiceServer::new(routing_api).max_decoding_message_size(max))
            .add_service(BillingServiceServer::new(billing_api).max_decoding_message_size(max))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        if let Err(err) = serve.await {
            tracing::error!(error = %err, "gRPC server failed");
        }
    });
    Ok(addr)
}

/// CORS for gRPC-Web from browsers: any origin, and the headers answers carry.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([axum::http::Method::POST, axum::http::Method::OPTIONS])
        .allow_headers(tower_http::cors::Any)
        .expose_headers(
            ["grpc-status", "grpc-message", "grpc-status-details-bin", "x-correlation-id", "x-keel-error-code"]
                .map(axum::http::HeaderName::from_static),
        )
}
