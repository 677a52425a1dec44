//! Keel's own metrics (ADR 0020): request counts, errors and latencies per REST route
//! template and per gRPC method, recorded by a middleware and a tower layer; the relay's
//! and projectors' lag, dead letters, the hashing queue and the pools, read when
//! `/metrics` is scraped (`probes`); and a five-minute window per API (`window`) that
//! the system health API reads. Labels never carry a raw path, an id or an address.

pub mod probes;
pub mod window;

use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use probes::Probes;
use window::{Outcome, Windows};

/// The label of a REST request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The service and method labels of a gRPC call to a method Keel does not serve.
pub const UNKNOWN_RPC: &str = "unknown";
/// The least time between two reads of the probes: scrapes in between (from any number
/// of callers) answer the values read last, so `/metrics` cannot load the database.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// A REST route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// A REST route and the status answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatusLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// A gRPC method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    service: &'static str,
    method: &'static str,
}

/// A gRPC method and the status code answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCodeLabels {
    service: &'static str,
    method: &'static str,
    code: &'static str,
}

/// A topic.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

/// A read model.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadModelLabels {
    read_model: &'static str,
}

/// A connection pool.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets: 0.5 ms to about 16 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gauges read from the probes at scrape time.
#[derive(Default)]
struct ProbeGauges {
    relay_up: Gauge,
    relay_lag_events: Family<TopicLabels, Gauge>,
    relay_lag_seconds: Family<TopicLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    projector_running: Family<ReadModelLabels, Gauge>,
    projector_lag_events: Family<ReadModelLabels, Gauge>,
    projector_parked: Family<ReadModelLabels, Gauge>,
    hashing_queue_depth: Gauge,
    pool_size: Family<PoolLabels, Gauge>,
    pool_idle: Family<PoolLabels, Gauge>,
    pool_max: Family<PoolLabels, Gauge>,
}

/// The process's metrics and the probes they read.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RouteStatusLabels, Counter>,
    http_errors: Family<RouteLabels, Counter>,
    http_latency: LatencyFamily<RouteLabels>,
    grpc_requests: Family<RpcCodeLabels, Counter>,
    grpc_errors: Family<RpcLabels, Counter>,
    grpc_latency: LatencyFamily<RpcLabels>,
    gauges: ProbeGauges,
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    /// Each API's last five minutes (the system health API).
    pub windows: Windows,
    /// What the gauges and the system health API read.
    pub probes: Probes,
}

impl Metrics {
    /// The metrics of a process whose parts `probes` reads, every one registered.
    pub fn new(probes: Probes) -> Self {
        let mut registry = Registry::with_prefix("keel");
        let http_requests = Family::<RouteStatusLabels, Counter>::default();
        let http_errors = Family::<RouteLabels, Counter>::default();
        let http_latency: LatencyFamily<RouteLabels> = Family::new_with_constructor(latency_histogram);
        let grpc_requests = Family::<RpcCodeLabels, Counter>::default();
        let grpc_errors = Family::<RpcLabels, Counter>::default();
        let grpc_latency: LatencyFamily<RpcLabels> = Family::new_with_constructor(latency_histogram);
        let gauges = ProbeGauges::default();
        registry.register(
            "http_requests",
            "REST requests answered, by method, route template and status",
            http_requests.clone(),
        );
        registry.register("http_request_errors", "REST requests answered 5xx", http_errors.clone());
        registry.register(
            "http_request_duration_seconds",
            "REST request latency until the response head",
            http_latency.clone(),
        );
        registry.register("grpc_requests", "gRPC calls answered, by method and status code", grpc_requests.clone());
        registry.register(
            "grpc_request_errors",
            "gRPC calls failed on the server's side (unknown, internal, unavailable, deadline exceeded, data loss, unimplemented)",
            grpc_errors.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call latency until the response head",
            grpc_latency.clone(),
        );
        registry.register(
            "relay_up",
            "1 if this process's relay task runs (as leader or standby)",
            gauges.relay_up.clone(),
        );
        registry.register(
            "relay_lag_events",
            "Committed events the relay has not published (capped at 100000)",
            gauges.relay_lag_events.clone(),
        );
        registry.register(
            "relay_lag_seconds",
            "Age of the oldest committed event the relay has not published (0 when none waits)",
            gauges.relay_lag_seconds.clone(),
        );
        registry.register(
            "projector_running",
            "1 if this process runs the read model's projector",
            gauges.projector_running.clone(),
        );
        registry.register(
            "projector_lag_events",
            "Messages the relay published that the read model has not applied",
            gauges.projector_lag_events.clone(),
        );
        registry.register(
            "projector_parked_events",
            "Events the read model holds parked (dead letters)",
            gauges.projector_parked.clone(),
        );
        registry.register(
            "password_hash_queue_depth",
            "Password hashes and verifications waiting for a hashing thread",
            gauges.hashing_queue_depth.clone(),
        );
        registry.register("db_pool_connections", "Open connections of the pool", gauges.pool_size.clone());
        registry.register(
            "db_pool_idle_connections",
            "Open connections of the pool not in use",
            gauges.pool_idle.clone(),
        );
        registry.register("db_pool_max_connections", "The most connections the pool opens", gauges.pool_max.clone());
        Self {
            registry,
            http_requests,
            http_errors,
            http_latency,
            grpc_requests,
            grpc_errors,
            grpc_latency,
            gauges,
            last_refresh: tokio::sync::Mutex::new(None),
            windows: Windows::default(),
            probes,
        }
    }

    /// Records a REST request: `method` and `route` (the matched template, or
    /// [`UNMATCHED_ROUTE`]), answered `status` after `latency`.
    pub fn record_rest(&self, method: &'static str, route: &str, status: u16, latency: Duration) {
        let labels = RouteLabels { method, route: route.to_string() };
        let outcome = match status {
            500.. => Outcome::Error,
            400..500 => Outcome::Rejected,
            _ => Outcome::Ok,
        };
        self.http_requests.get_or_create(&RouteStatusLabels { method, route: labels.route.clone(), status }).inc();
        if outcome == Outcome::Error {
            self.http_errors.get_or_create(&labels).inc();
        }
        self.http_latency.get_or_create(&labels).observe(latency.as_secs_f64());
        self.windows.record(&format!("rest {method} {route}"), outcome, latency);
    }

    /// Records a gRPC call of `service`/`method` (or [`UNKNOWN_RPC`]), answered `code`
    /// after `latency`.
    pub fn record_grpc(&self, service: &'static str, method: &'static str, code: tonic::Code, latency: Duration) {
        let labels = RpcLabels { service, method };
        let outcome = grpc_outcome(code);
        self.grpc_requests.get_or_create(&RpcCodeLabels { service, method, code: code_name(code) }).inc();
        if outcome == Outcome::Error {
            self.grpc_errors.get_or_create(&labels).inc();
        }
        self.grpc_latency.get_or_create(&labels).observe(latency.as_secs_f64());
        self.windows.record(&format!("grpc {service}/{method}"), outcome, latency);
    }

    /// The metrics in the Prometheus text format (version 0.0.4), the probes read at most
    /// once per [`REFRESH_EVERY`].
    pub async fn render(&self) -> String {
        // Held while encoding too: another scrape's refresh must not clear series half-way.
        let mut last = self.last_refresh.lock().await;
        if last.is_none_or(|at| at.elapsed() >= REFRESH_EVERY) {
            self.refresh().await;
            *last = Some(Instant::now());
        }
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(error = %err, "metrics not encoded");
        }
        text
    }

    /// Reads the probes into the gauges; a series whose probe fails is left out.
    async fn refresh(&self) {
        let (probes, gauges) = (&self.probes, &self.gauges);
        gauges.relay_up.set(i64::from(probes.relay_alive()));
        gauges.hashing_queue_depth.set(as_gauge(probes.hashing_queue_depth()));
        for pool in probes.pool_usage() {
            let labels = PoolLabels { pool: pool.name };
            gauges.pool_size.get_or_create(&labels).set(i64::from(pool.size));
            gauges.pool_idle.get_or_create(&labels).set(as_gauge(pool.idle));
            gauges.pool_max.get_or_create(&labels).set(i64::from(pool.max));
        }
        let topic = TopicLabels { topic: probes.topic.clone() };
        gauges.relay_lag_events.clear();
        gauges.relay_lag_seconds.clear();
        gauges.projector_lag_events.clear();
        gauges.projector_parked.clear();
        let lag = probes.relay_lag().await;
        if let Some(lag) = &lag {
            gauges.relay_lag_events.get_or_create(&topic).set(lag.events);
            gauges.relay_lag_seconds.get_or_create(&topic).set(lag.seconds);
        }
        for (name, status) in probes.projectors.iter() {
            let labels = ReadModelLabels { read_model: name };
            let running = status.running.load(std::sync::atomic::Ordering::Relaxed);
            gauges.projector_running.get_or_create(&labels).set(i64::from(running));
            let Some(lag) = &lag else { continue };
            if let Some(progress) = probes.projector(name, lag).await {
                gauges.projector_lag_events.get_or_create(&labels).set(progress.lag_events);
                gauges.projector_parked.get_or_create(&labels).set(progress.parked);
            }
        }
    }
}

fn as_gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Whether a gRPC status code is Keel's failure, the caller's, or none.
fn grpc_outcome(code: tonic::Code) -> Outcome {
    use tonic::Code::*;
    match code {
        Ok => Outcome::Ok,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss => Outcome::Error,
        _ => Outcome::Rejected,
    }
}

/// The canonical name of a gRPC status code, e.g. `INVALID_ARGUMENT`.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The HTTP method as a label: the standard ones by name, anything else `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}
