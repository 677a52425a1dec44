//! The flag delivery benchmark, against the release `keel` as its own process: OFREP
//! bulk evaluations per second (5 flags), 304 answers per second (If-None-Match), each
//! with p50 / p99; then 1,000 open SSE streams: the memory they hold, and how long a
//! flag change takes to reach each of them (p50 / p99).
//!
//! The load generator is a plain HTTP/1.1 keep-alive client (one request in flight per
//! connection, no pipelining) sharing the machine's two cores with Keel. Run with
//! `make bench`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_gateway::proto::app_service_client::AppServiceClient;
use keel_gateway::proto::flag_service_client::FlagServiceClient;
use keel_gateway::proto::tenant_service_client::TenantServiceClient;
use keel_gateway::proto::{
    DefineFlagRequest, IssueApiKeyRequest, ProvisionTenantRequest, RegisterAppRequest, SetTenantFlagRequest,
};
use keel_tests::bench::{Better, Keel, authed, figure, millis, ms, percentile};
use keel_tests::{TestEnv, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn seconds() -> u64 {
    std::env::var("KEEL_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

fn string(s: &str) -> Option<prost_types::Value> {
    Some(prost_types::Value { kind: Some(prost_types::value::Kind::StringValue(s.into())) })
}

/// One keep-alive connection: sends `request`, reads one response; returns the status.
struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Conn {
    async fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self { stream, buffer: Vec::with_capacity(8192) }
    }

    async fn exchange(&mut self, request: &[u8]) -> u16 {
        self.stream.write_all(request).await.expect("write");
        self.buffer.clear();
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).to_ascii_lowercase();
                let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).expect("status");
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while self.buffer.len() < end + 4 + length {
                    self.read().await;
                }
                return status;
            }
            self.read().await;
        }
    }

    async fn read(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed");
        self.buffer.extend_from_slice(&chunk[..n]);
    }
}

fn bulk_request(key: &str, tenant: &str, etag: Option<&str>) -> Vec<u8> {
    let body = format!("{{\"context\":{{\"targetingKey\":\"{tenant}\"}}}}");
    let conditional = etag.map(|e| format!("If-None-Match: {e}\r\n")).unwrap_or_default();
    format!(
        "POST /ofrep/v1/evaluate/flags HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{conditional}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `connections` closed loops of `request` for the phase; prints and returns the rate.
async fn phase(name: &str, port: u16, connections: usize, request: Vec<u8>, expect: u16) -> f64 {
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs(seconds());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(port).await;
            let mut latencies = Vec::with_capacity(1 << 16);
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = conn.exchange(&request).await;
                latencies.push(t.elapsed());
                assert_eq!(status, expect);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client"));
    }
    let elapsed = started.elapsed();
    all.sort();
    let rate = all.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{name}: {} in {:.1} s = {rate:.0}/s over {connections} connections; latency p50 {} p99 {}",
        all.len(),
        elapsed.as_secs_f64(),
        ms(percentile(&all, 0.50)),
        ms(percentile(&all, 0.99)),
    );
    rate
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let env = TestEnv::new().await;
    let operator = env.operator_token().await;
    let keel = Keel::start(&env, "16").await;
    let grpc = format!("http://127.0.0.1:{}", keel.grpc_port);
    let mut tenants = TenantServiceClient::connect(grpc.clone()).await.expect("connect");
    let request = ProvisionTenantRequest {
        name: "Bench".into(),
        domain: "bench-flags".into(),
        plan: "pro".into(),
        owner_email: "owner@bench-flags.example.com".into(),
        idempotency_key: "bench-flags".into(),
        industry: String::new(),
        region: String::new(),
    };
    let tenant = tenants.provision_tenant(authed(request, &operator)).await.expect("provision").into_inner().tenant_id;
    let mut flags = FlagServiceClient::connect(grpc.clone()).await.expect("connect");
    for i in 0..5 {
        let request = DefineFlagRequest {
            key: format!("flag-{i}"),
            r#type: "string".into(),
            default_value: string("off"),
            plan_defaults: Default::default(),
            description: String::new(),
            idempotency_key: format!("define-{i}"),
        };
        flags.define_flag(authed(request, &operator)).await.expect("define");
    }
    let mut apps = AppServiceClient::connect(grpc).await.expect("connect");
    let app = apps
        .register_app(authed(
            RegisterAppRequest {
                name: "Bench".into(),
                environment: "bench".into(),
                idempotency_key: "app".into(),
                ..Default::default()
            },
            &operator,
        ))
        .await
        .expect("register")
        .into_inner();
    let key = apps
        .issue_api_key(authed(
            IssueApiKeyRequest {
                app_id: app.app_id,
                scopes: vec!["flags:read".into()],
                expires_at: String::new(),
                idempotency_key: "key".into(),
            },
            &operator,
        ))
        .await
        .expect("issue")
        .into_inner()
        .secret;
    let port = keel.rest_port;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/ofrep/v1/evaluate/flags");
    let body = serde_json::json!({ "context": { "targetingKey": tenant } });
    let ready = eventually(Duration::from_secs(30), || async {
        let Ok(response) = http.post(&url).bearer_auth(&key).json(&body).send().await else { return false };
        let json: serde_json::Value = response.json().await.unwrap_or_default();
        json["flags"].as_array().is_some_and(|f| f.len() == 5)
    })
    .await;
    assert!(ready, "five flags served");
    let response = http.post(&url).bearer_auth(&key).json(&body).send().await.expect("bulk");
    let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).expect("ETag").to_string();

    println!("flag delivery, {} s per phase, keel and the load generator on this machine", seconds());
    let connections = 64;
    let rate =
        phase("bulk evaluations (5 flags, 200)", port, connections, bulk_request(&key, &tenant, None), 200).await;
    figure("flags.ofrep_bulk_per_s", rate, "evaluations/s", Better::Higher);
    let rate = phase(
        "bulk evaluations with If-None-Match (304)",
        port,
        connections,
        bulk_request(&key, &tenant, Some(&etag)),
        304,
    )
    .await;
    figure("flags.ofrep_304_per_s", rate, "answers/s", Better::Higher);

    // 1,000 SSE streams: memory held, and a change's time to reach each of them.
    let streams = 1_000;
    let before = rss_mib(keel.pid());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut readers = Vec::new();
    for _ in 0..streams {
        let mut conn = Conn::open(port).await;
        let request = format!(
            "GET /ofrep/v1/events?tenant={tenant} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
        );
        conn.stream.write_all(request.as_bytes()).await.expect("open stream");
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            loop {
                let Ok(n) = conn.stream.read(&mut chunk).await else { return };
                if n == 0 {
                    return;
                }
                if chunk[..n].windows(17).any(|w| w == b"refetchEvaluation") {
                    let _ = tx.send(Instant::now());
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_mib(keel.pid());
    println!(
        "{streams} open SSE streams: keel's resident memory {before:.1} MiB -> {after:.1} MiB = {:.1} MiB per 1,000 streams",
        (after - before) * 1000.0 / streams as f64
    );
    figure("flags.sse_memory_mib_per_1000", (after - before) * 1000.0 / streams as f64, "MiB", Better::Lower);
    let mut latencies = Vec::new();
    for i in 0..30 {
        let sent = Instant::now();
        let request = SetTenantFlagRequest {
            tenant_id: tenant.clone(),
            key: "flag-0".into(),
            value: string(&format!("v{i}")),
            idempotency_key: format!("change-{i}"),
        };
        flags.set_tenant_flag(authed(request, &operator)).await.expect("set");
        for _ in 0..streams {
            let at = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("delivered").expect("event");
            latencies.push(at.saturating_duration_since(sent));
        }
    }
    latencies.sort();
    println!(
        "flag change to each of {streams} SSE clients ({} deliveries): p50 {} p99 {} max {}",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().expect("deliveries")),
    );
    figure("flags.sse_fanout_p99_ms", millis(percentile(&latencies, 0.99)), "ms", Better::Lower);
    println!("keel peak resident memory: {:.1} MiB", keel.peak_rss_mib());
    for reader in readers {
        reader.abort();
    }
}
