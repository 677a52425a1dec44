//! The backbone benchmark: commands per second and latency, command-to-read-model
//! lag at a fixed load, the keel process's peak memory, and replay throughput.
//!
//! Run with `make bench`. Keel runs as its own process (the release binary) on a
//! fresh database and topic of the `make test` services, with Postgres switched to
//! durable commits (fsync and synchronous_commit on) for the run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_gateway::proto::tenant_service_client::TenantServiceClient;
use keel_gateway::proto::{ProvisionTenantRequest, ReactivateTenantRequest, SuspendTenantRequest};
use keel_tests::TestEnv;
use keel_tests::bench::{Better, Keel, authed, figure, millis, ms, percentile};
use tonic::transport::Channel;

const TENANTS: usize = 1000;
/// Concurrent clients (`KEEL_BENCH_CLIENTS`, default 64).
fn concurrency() -> usize {
    std::env::var("KEEL_BENCH_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}
/// Seconds of the throughput phase (`KEEL_BENCH_SECONDS`, default 10).
fn throughput_seconds() -> u64 {
    std::env::var("KEEL_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}
/// Commands per second of the lag phase (`KEEL_BENCH_LAG_RATE`, default 1,000).
fn lag_rate() -> u64 {
    std::env::var("KEEL_BENCH_LAG_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}
const LAG_SECONDS: u64 = 10;

/// Alternates suspend and reactivate on one tenant; returns the command's latency and position.
async fn toggle(
    client: &mut TenantServiceClient<Channel>,
    token: &str,
    tenant: &str,
    suspend: bool,
) -> (Duration, i64) {
    let started = Instant::now();
    let key = uuid::Uuid::new_v4().to_string();
    let position = if suspend {
        let request = SuspendTenantRequest { tenant_id: tenant.into(), reason: "bench".into(), idempotency_key: key };
        client.suspend_tenant(authed(request, token)).await.expect("suspend").into_inner().position
    } else {
        let request = ReactivateTenantRequest { tenant_id: tenant.into(), idempotency_key: key };
        client.reactivate_tenant(authed(request, token)).await.expect("reactivate").into_inner().position
    };
    (started.elapsed(), position)
}

#[tokio::main]
async fn main() {
    let env = TestEnv::with_partitions(12).await;
    let owner = env.owner_pool().await;
    keel_tests::bench::durable_commits(&owner).await;
    let token = env.operator_token().await;
    let pool_size = std::env::var("KEEL_BENCH_POOL").unwrap_or_else(|_| "16".into());
    let keel = Keel::start(&env, &pool_size).await;
    let grpc_port = keel.grpc_port;
    let channel =
        Channel::from_shared(format!("http://127.0.0.1:{grpc_port}")).expect("uri").connect().await.expect("connect");
    let token = Arc::new(token);
    let clients = concurrency();

    // Setup: 1,000 tenants.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let (mut client, token) = (TenantServiceClient::new(channel.clone()), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for t in (w..TENANTS).step_by(clients) {
                let request = ProvisionTenantRequest {
                    name: format!("Bench {t}"),
                    domain: format!("bench-{t}"),
                    plan: "pro".into(),
                    owner_email: format!("owner@bench-{t}.example.com"),
                    idempotency_key: format!("bench-{t}"),
                    industry: String::new(),
                    region: String::new(),
                };
                ids.push(
                    client.provision_tenant(authed(request, &token)).await.expect("provision").into_inner().tenant_id,
                );
            }
            ids
        }));
    }
    let mut shards: Vec<Vec<String>> = Vec::new();
    for task in tasks {
        shards.push(task.await.expect("setup"));
    }
    println!("setup: {TENANTS} tenants provisioned in {:.1} s", started.elapsed().as_secs_f64());

    // Throughput: 64 closed-loop clients, each toggling its own tenants.
    let deadline = Instant::now() + Duration::from_secs(throughput_seconds());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for shard in shards.clone() {
        let (mut client, token) = (TenantServiceClient::new(channel.clone()), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut suspended: HashMap<String, bool> = HashMap::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let tenant = &shard[i % shard.len()];
                let state = suspended.entry(tenant.clone()).or_insert(false);
                let (latency, _) = toggle(&mut client, &token, tenant, !*state).await;
                *state = !*state;
                latencies.push(latency);
                i += 1;
            }
            (latencies, suspended)
        }));
    }
    let mut latencies = Vec::new();
    let mut states: HashMap<String, bool> = HashMap::new();
    for task in tasks {
        let (l, s) = task.await.expect("load");
        latencies.extend(l);
        states.extend(s);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "commands: {} in {:.1} s = {:.0} commands/s across {TENANTS} tenants ({clients} concurrent clients); latency p50 {} p99 {}",
        latencies.len(),
        elapsed,
        latencies.len() as f64 / elapsed,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
    );
    figure("backbone.commands_per_s", latencies.len() as f64 / elapsed, "commands/s", Better::Higher);
    figure("backbone.latency_p99_ms", millis(percentile(&latencies, 0.99)), "ms", Better::Lower);

    // Lag: a fixed 1,000 commands/s; when does each show in the read model?
    let app = env.app_pool().await;
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut pending: Vec<(String, i64, Instant)> = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, i64, Instant)>();
    let all: Vec<String> = shards.concat();
    let rate = lag_rate();
    // Each tenant's commands run one after the other (a lock per tenant holds its state),
    // so a slow answer delays the next toggle of that tenant instead of making it wrong.
    let tenant_states: Arc<HashMap<String, Arc<tokio::sync::Mutex<bool>>>> = Arc::new(
        all.iter()
            .map(|t| (t.clone(), Arc::new(tokio::sync::Mutex::new(states.get(t).copied().unwrap_or(false)))))
            .collect(),
    );
    let lag_started = Instant::now();
    let sender = {
        let (channel, token) = (channel.clone(), token.clone());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let total = (rate * LAG_SECONDS) as usize;
            let mut inflight = Vec::new();
            for i in 0..total {
                interval.tick().await;
                let tenant = all[i % all.len()].clone();
                let state = tenant_states[&tenant].clone();
                let (mut client, token, tx) = (TenantServiceClient::new(channel.clone()), token.clone(), tx.clone());
                inflight.push(tokio::spawn(async move {
                    let mut suspended = state.lock().await;
                    let (_, position) = toggle(&mut client, &token, &tenant, !*suspended).await;
                    *suspended = !*suspended;
                    let _ = tx.send((tenant, position, Instant::now()));
                }));
            }
            // A command that failed fails the bench.
            for task in inflight {
                task.await.expect("a lag-phase command failed");
            }
        })
    };

    let mut lags = Vec::new();
    let mut lag_elapsed = Duration::ZERO;
    let mut sender_done = false;
    let mut sender = Some(sender);
    loop {
        while let Ok(item) = rx.try_recv() {
            pending.push(item);
        }
        if !pending.is_empty() {
            let min = pending.iter().map(|p| p.1).min().unwrap_or(0);
            let rows: Vec<(String, i64)> = {
                let mut tx = app.begin().await.expect("begin");
                sqlx::query("SELECT set_config('keel.scope', 'platform', true)")
                    .execute(&mut *tx)
                    .await
                    .expect("scope");
                let rows =
                    sqlx::query_as("SELECT tenant_id, version FROM rm_tenant_registry.tenants WHERE version >= $1")
                        .bind(min)
                        .fetch_all(&mut *tx)
                        .await
                        .expect("poll");
                tx.commit().await.expect("commit");
                rows
            };
            let now = Instant::now();
            seen.extend(rows);
            pending.retain(|(tenant, position, done)| {
                let visible = seen.get(tenant).is_some_and(|v| v >= position);
                if visible {
                    lags.push(now.duration_since(*done));
                }
                !visible
            });
        }
        if !sender_done && sender.as_ref().is_some_and(|s| s.is_finished()) {
            sender.take().expect("sender").await.expect("sender");
            sender_done = true;
            lag_elapsed = lag_started.elapsed();
        }
        if sender_done && pending.is_empty() && rx.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    lags.sort();
    println!(
        "read-model lag at {rate} commands/s offered for {LAG_SECONDS} s: {} commands delivered at {:.0} commands/s (measured by polling every 2 ms): p50 {} p99 {} max {}",
        lags.len(),
        lags.len() as f64 / lag_elapsed.as_secs_f64(),
        ms(percentile(&lags, 0.50)),
        ms(percentile(&lags, 0.99)),
        ms(lags.last().copied().unwrap_or_default()),
    );
    figure("backbone.lag_p99_ms", millis(percentile(&lags, 0.99)), "ms", Better::Lower);
    figure("backbone.lag_delivered_per_s", lags.len() as f64 / lag_elapsed.as_secs_f64(), "commands/s", Better::Higher);
    println!("keel process peak memory (VmHWM): {:.1} MiB", keel.peak_rss_mib());
    figure("backbone.peak_memory_mib", keel.peak_rss_mib(), "MiB", Better::Lower);
    drop(keel);

    // Replay: rebuild the registry from offset 0 (same code as `keel replay`).
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&owner).await.expect("count");
    let report = env.rebuild_registry().await;
    println!(
        "replay: {} events ({events} in the store) in {:.2} s = {:.0} events/s",
        report.messages,
        report.elapsed.as_secs_f64(),
        report.rate()
    );
    figure("backbone.replay_events_per_s", report.rate(), "events/s", Better::Higher);
}
