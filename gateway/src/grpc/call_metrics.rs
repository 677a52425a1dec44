//! The gRPC server's metrics layer: counts and times every call by service and method
//! (only the methods Keel serves are named; any other path counts as `unknown`, so a
//! caller cannot grow the label set), with its status code.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use prost::Message;

use crate::metrics::{Metrics, UNKNOWN_RPC};

/// `/package.Service/Method` → (`package.Service`, `Method`), for every method served:
/// `keel.v1`, gRPC health and reflection.
static METHODS: LazyLock<HashMap<String, (String, String)>> = LazyLock::new(|| {
    let sets = [
        crate::proto::DESCRIPTOR,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
        for file in set.file {
            let package = file.package();
            for service in &file.service {
                let service_name = format!("{package}.{}", service.name());
                for method in &service.method {
                    let path = format!("/{service_name}/{}", method.name());
                    methods.insert(path, (service_name.clone(), method.name().to_string()));
                }
            }
        }
    }
    methods
});

/// The service and method labels of a request path.
fn labels(path: &str) -> (&'static str, &'static str) {
    METHODS.get(path).map_or((UNKNOWN_RPC, UNKNOWN_RPC), |(service, method)| (service.as_str(), method.as_str()))
}

/// A layer that records each gRPC call in [`Metrics`].
#[derive(Clone)]
pub struct RecordCalls {
    metrics: Arc<Metrics>,
}

impl RecordCalls {
    /// The layer, recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RecordCalls {
    type Service = RecordCallsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordCallsService { inner, metrics: self.metrics.clone() }
    }
}

/// The service of [`RecordCalls`].
#[derive(Clone)]
pub struct RecordCallsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for RecordCallsService<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        // A CORS preflight is not a call.
        let preflight = request.method() == axum::http::Method::OPTIONS;
        let (service, method) = labels(request.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            if !preflight {
                let code = match &result {
                    Ok(response) => code_of(response),
                    Err(_) => tonic::Code::Unknown,
                };
                metrics.record_grpc(service, method, code, started.elapsed());
            }
            result
        })
    }
}

/// The call's status code: the `grpc-status` header of a trailers-only answer (how every
/// refusal is sent); a successful HTTP answer without it carries its status in the
/// trailers after the messages, counted as OK; any other HTTP answer as `UNKNOWN`.
fn code_of<R>(response: &axum::http::Response<R>) -> tonic::Code {
    match response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()) {
        Some(code) => tonic::Code::from_i32(code),
        None if response.status().is_success() => tonic::Code::Ok,
        None => tonic::Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_only_the_methods_keel_serves() {
        assert_eq!(labels("/keel.v1.TenantService/ProvisionTenant"), ("keel.v1.TenantService", "ProvisionTenant"));
        assert_eq!(labels("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check"));
        assert_eq!(labels("/keel.v1.TenantService/Nope"), (UNKNOWN_RPC, UNKNOWN_RPC));
        assert_eq!(labels("/tnt_01jd0000/owner@example.com"), (UNKNOWN_RPC, UNKNOWN_RPC));
    }

    #[test]
    fn reads_the_status_of_trailers_only_answers() {
        let answer = |status: u16, grpc: Option<&str>| {
            let mut response = axum::http::Response::builder().status(status);
            if let Some(code) = grpc {
                response = response.header("grpc-status", code);
            }
            response.body(()).expect("response")
        };
        assert_eq!(code_of(&answer(200, Some("3"))), tonic::Code::InvalidArgument);
        assert_eq!(code_of(&answer(200, None)), tonic::Code::Ok);
        assert_eq!(code_of(&answer(415, None)), tonic::Code::Unknown);
    }
}
