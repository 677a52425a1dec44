//! The billing ingestion benchmark (issue 5): durable ingestion throughput over REST
//! batches and gRPC streams, event-to-ledger latency at fixed offered rates, and an
//! exactly-once check of the ledger against every acknowledged event.
//!
//! Keel runs as the release binary (`keel serve`, relay and every projector on) on a
//! fresh database and topics of the `make test` services, with Postgres on durable
//! commits; this process is the load generator and shares the machine's two cores.
//! Run with `make bench`, or alone:
//! `cargo build --release -p keel-gateway --bin keel && cargo bench -p keel-tests --bench billing`.
//!
//! Every event id is used once, so an acknowledged event is one answered `accepted`,
//! or `duplicate` on a retry (an earlier attempt committed it). The ledger must hold
//! exactly those events, once each, and its daily totals their quantities.
//!
//! Knobs (environment): `KEEL_BENCH_SECONDS` (throughput phases, default 10),
//! `KEEL_BENCH_CLIENTS` (REST clients, default 8; a list such as `4,8,16` runs one
//! phase per value), `KEEL_BENCH_STREAMS` (gRPC streams, default 4),
//! `KEEL_BENCH_LATENCY_RATES` (events/s, default `10000,25000`),
//! `KEEL_BENCH_LATENCY_SECONDS` (default 5), `KEEL_BENCH_LATENCY_BATCH` (default 500),
//! `KEEL_BENCH_POOL` (Keel's Postgres connection budget, default 40), `KEEL_BENCH_BINARY`
//! (another `keel` build to measure, default `target/release/keel`), `KEEL_BENCH_KEEP=1`
//! (keep the database and topics; they are dropped after a passing run, as a run
//! writes a few GB).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use keel_gateway::proto::app_service_client::AppServiceClient;
use keel_gateway::proto::billing_service_client::BillingServiceClient;
use keel_gateway::proto::tenant_service_client::TenantServiceClient;
use keel_gateway::proto::{IssueApiKeyRequest, ProvisionTenantRequest, RegisterAppRequest, UsageEvent};
use keel_tests::TestEnv;
use keel_tests::bench::{Better, Keel, authed, figure, millis, ms, percentile};
use sqlx::PgPool;
use tonic::transport::Channel;

const TENANTS: usize = 100;
const EVENT_TYPES: [&str; 4] = ["api.call", "storage.gb_hour", "compute.ms", "email.sent"];
/// Events per REST batch in the throughput phase (the most a batch may hold).
const BATCH: u64 = 1000;
/// Events per gRPC stream before it is closed and its summary awaited.
const STREAM_EVENTS: u64 = 10_000;
/// How often the latency watcher polls the ledger, at most (it waits three times as
/// long as its last query took, so that it never takes more than a quarter of a core).
const POLL: Duration = Duration::from_millis(10);

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn list(name: &str, default: &str) -> Vec<u64> {
    let raw = std::env::var(name).unwrap_or_else(|_| default.into());
    raw.split(',').filter_map(|v| v.trim().parse().ok()).collect()
}

/// Who reports usage, for which tenants, and where.
struct Load {
    rest: String,
    grpc: String,
    app_id: String,
    key: String,
    tenants: Vec<String>,
    http: reqwest::Client,
}

impl Load {
    fn tenant(&self, seq: u64) -> &str {
        &self.tenants[(seq % TENANTS as u64) as usize]
    }
}

fn event_id(prefix: &str, seq: u64) -> String {
    format!("{prefix}-{seq:010}")
}

fn quantity(seq: u64) -> u64 {
    seq % 7 + 1
}

fn event_type(seq: u64) -> &'static str {
    EVENT_TYPES[((seq / TENANTS as u64) % EVENT_TYPES.len() as u64) as usize]
}

/// What a phase had acknowledged: events (accepted, or duplicates of an earlier
/// attempt's commit) and their summed quantity; and how many attempts were retried.
#[derive(Debug, Default, Clone, Copy)]
struct Acked {
    events: u64,
    quantity: u64,
    retries: u64,
    rejected: u64,
}

impl std::ops::AddAssign for Acked {
    fn add_assign(&mut self, other: Self) {
        self.events += other.events;
        self.quantity += other.quantity;
        self.retries += other.retries;
        self.rejected += other.rejected;
    }
}

/// `POST /v1/billing/events:batch` of the events `seqs`, retried (the same batch) until
/// answered 200. Returns, per event, whether it is acknowledged, and the retries.
async fn post_batch(load: &Load, prefix: &str, seqs: std::ops::Range<u64>) -> (Vec<bool>, u64) {
    let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut body = String::with_capacity((seqs.end - seqs.start) as usize * 200 + 16);
    body.push_str("{\"events\":[");
    for seq in seqs.clone() {
        if seq != seqs.start {
            body.push(',');
        }
        let _ = write!(
            body,
            r#"{{"event_id":"{}","tenant_id":"{}","event_type":"{}","quantity":{},"timestamp":"{timestamp}","properties":{{"region":"eu-west-1"}}}}"#,
            event_id(prefix, seq),
            load.tenant(seq),
            event_type(seq),
            quantity(seq),
        );
    }
    body.push_str("]}");
    let url = format!("{}/v1/billing/events:batch", load.rest);
    let mut retries = 0;
    loop {
        let sent = load
            .http
            .post(&url)
            .bearer_auth(&load.key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        let answer = match sent {
            Ok(response) if response.status() == 200 => response.bytes().await.ok(),
            Ok(response) => {
                eprintln!("batch answered {}: {}", response.status(), response.text().await.unwrap_or_default());
                None
            }
            Err(err) => {
                eprintln!("batch failed: {err}");
                None
            }
        };
        if let Some(answer) = answer.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) {
            let n = (seqs.end - seqs.start) as usize;
            if answer["accepted"].as_u64() == Some(n as u64) {
                return (vec![true; n], retries);
            }
            let results = answer["results"].as_array().expect("results");
            assert_eq!(results.len(), n, "one result per event");
            let acked =
                results.iter().map(|r| matches!(r["status"].as_str(), Some("accepted" | "duplicate"))).collect();
            return (acked, retries);
        }
        retries += 1;
        assert!(retries <= 10, "a batch failed 10 times");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tally(seqs: std::ops::Range<u64>, acked: &[bool]) -> Acked {
    let mut total = Acked::default();
    for (seq, ok) in seqs.zip(acked) {
        if *ok {
            total.events += 1;
            total.quantity += quantity(seq);
        } else {
            total.rejected += 1;
        }
    }
    total
}

/// `clients` closed loops of 1,000-event REST batches for `seconds`; prints and returns the rate.
async fn rest_phase(load: &Arc<Load>, prefix: &str, clients: usize, seconds: u64, keel: &Keel) -> Acked {
    let next = Arc::new(AtomicU64::new(0));
    let cpu = CpuSample::take(keel.pid());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (load, next, prefix) = (load.clone(), next.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut acked = Acked::default();
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                let t = Instant::now();
                let (flags, retries) = post_batch(&load, &prefix, first..first + BATCH).await;
                latencies.push(t.elapsed());
                acked += tally(first..first + BATCH, &flags);
                acked.retries += retries;
            }
            (acked, latencies)
        }));
    }
    let mut acked = Acked::default();
    let mut latencies = Vec::new();
    for task in tasks {
        let (a, l) = task.await.expect("client");
        acked += a;
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let usage = cpu.since(keel.pid());
    latencies.sort();
    println!(
        "REST batches of {BATCH}, {clients} clients: {} events acknowledged in {elapsed:.1} s = {:.0} events/s \
         ({} batches, p50 {} p99 {}; {} retries, {} rejected)",
        acked.events,
        acked.events as f64 / elapsed,
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        acked.retries,
        acked.rejected,
    );
    println!("  cpu: {usage}");
    figure("billing.rest_events_per_s", acked.events as f64 / elapsed, "events/s", Better::Higher);
    acked
}

fn usage_event(load: &Load, prefix: &str, seq: u64, timestamp: &prost_types::Timestamp) -> UsageEvent {
    let region = prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("eu-west-1".into())) };
    UsageEvent {
        event_id: event_id(prefix, seq),
        tenant_id: load.tenant(seq).to_string(),
        event_type: event_type(seq).into(),
        quantity: quantity(seq) as i64,
        timestamp: Some(*timestamp),
        properties: Some(prost_types::Struct { fields: [("region".to_string(), region)].into() }),
    }
}

/// `streams` concurrent gRPC `IngestEvents` streams of 10,000 events each, closed and
/// reopened for `seconds`; an event is acknowledged by the summary of its stream.
async fn grpc_phase(load: &Arc<Load>, prefix: &str, streams: usize, seconds: u64, keel: &Keel) -> Acked {
    let next = Arc::new(AtomicU64::new(0));
    let cpu = CpuSample::take(keel.pid());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (load, next, prefix) = (load.clone(), next.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let channel = Channel::from_shared(load.grpc.clone()).expect("uri").connect().await.expect("connect");
            let mut client = BillingServiceClient::new(channel);
            let mut acked = Acked::default();
            let mut durations = Vec::new();
            while Instant::now() < deadline {
                let first = next.fetch_add(STREAM_EVENTS, Ordering::Relaxed);
                let now = Utc::now();
                let timestamp = prost_types::Timestamp { seconds: now.timestamp(), nanos: 0 };
                let events: Vec<UsageEvent> =
                    (first..first + STREAM_EVENTS).map(|seq| usage_event(&load, &prefix, seq, &timestamp)).collect();
                let t = Instant::now();
                let mut attempts = 0;
                let summary = loop {
                    let request = authed(futures::stream::iter(events.clone()), &load.key);
                    match client.ingest_events(request).await {
                        Ok(summary) => break summary.into_inner(),
                        Err(status) => {
                            // Sent again: what the broken stream committed comes back as duplicates.
                            eprintln!("stream failed: {status}");
                            attempts += 1;
                            assert!(attempts <= 10, "a stream failed 10 times");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                durations.push(t.elapsed());
                let mut flags = vec![true; STREAM_EVENTS as usize];
                for outcome in summary.not_accepted.iter().filter(|o| o.status != "duplicate") {
                    flags[outcome.index as usize] = false;
                }
                assert_eq!(
                    (summary.accepted + summary.duplicates + summary.rejected) as u64,
                    STREAM_EVENTS,
                    "one outcome per event"
                );
                acked += tally(first..first + STREAM_EVENTS, &flags);
                acked.retries += attempts;
            }
            (acked, durations)
        }));
    }
    let mut acked = Acked::default();
    let mut durations = Vec::new();
    for task in tasks {
        let (a, d) = task.await.expect("stream");
        acked += a;
        durations.extend(d);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let usage = cpu.since(keel.pid());
    durations.sort();
    println!(
        "gRPC IngestEvents, {streams} streams of {STREAM_EVENTS} events: {} events acknowledged in {elapsed:.1} s = {:.0} events/s \
         ({} streams, each open p50 {} p99 {}; {} retries, {} rejected)",
        acked.events,
        acked.events as f64 / elapsed,
        durations.len(),
        ms(percentile(&durations, 0.50)),
        ms(percentile(&durations, 0.99)),
        acked.retries,
        acked.rejected,
    );
    println!("  cpu: {usage}");
    figure("billing.grpc_events_per_s", acked.events as f64 / elapsed, "events/s", Better::Higher);
    acked
}

/// Events in the ledger's daily totals (a table of a few hundred rows, cheap to poll).
async fn ledger_events(owner: &PgPool) -> u64 {
    let total: Option<i64> = sqlx::query_scalar("SELECT sum(events)::bigint FROM rm_billing_ledger.usage_daily")
        .fetch_one(owner)
        .await
        .expect("totals");
    total.unwrap_or(0) as u64
}

/// Waits until the ledger's totals count `expected` events; prints how long it took.
async fn drain(owner: &PgPool, expected: u64, after: &str) {
    let started = Instant::now();
    let mut last = (ledger_events(owner).await, Instant::now());
    let behind = expected.saturating_sub(last.0);
    loop {
        let now = ledger_events(owner).await;
        if now >= expected {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
        if last.1.elapsed() > Duration::from_secs(30) {
            println!("  ledger stuck at {now} of {expected} events for 30 s");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "  ledger caught up {:.1} s after {after} ({behind} events behind when it ended)",
        started.elapsed().as_secs_f64()
    );
}

/// An acknowledged event the watcher is looking for: when its batch was sent and acknowledged.
type Sent = (Instant, Instant);

/// An open loop of REST batches of `batch` events at `rate` events/s for `seconds`,
/// and a watcher measuring each event's time to the ledger.
///
/// Method: after each batch is acknowledged, its accepted events (with the batch's
/// send and acknowledgement instants) go to the watcher. Every 10 ms (or three times
/// its last query's duration, if that is longer) the watcher asks
/// Postgres (as the owner, on its own connection) which of the events it waits for are
/// in `rm_billing_ledger.usage_events`: per tenant, the primary-key range between the
/// tenant's smallest and largest pending event id (event ids grow with time). An event
/// first seen by the query started at instant T became visible at or before T, after
/// the previous query started: its latency is taken as T − send (an upper bound, at
/// most one poll interval plus one query too high), and T − acknowledgement.
async fn latency_phase(
    load: &Arc<Load>,
    owner: &PgPool,
    prefix: &str,
    rate: u64,
    seconds: u64,
    batch: u64,
    keel: &Keel,
) -> Acked {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<(usize, String)>, Sent)>();
    let cpu = CpuSample::take(keel.pid());
    let phase_started = Instant::now();
    let sender = {
        let (load, prefix) = (load.clone(), prefix.to_string());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate as f64));
            let batches = rate * seconds / batch;
            let mut inflight = Vec::new();
            for b in 0..batches {
                interval.tick().await;
                let (load, prefix, tx) = (load.clone(), prefix.clone(), tx.clone());
                inflight.push(tokio::spawn(async move {
                    let seqs = b * batch..(b + 1) * batch;
                    let sent = Instant::now();
                    let (flags, retries) = post_batch(&load, &prefix, seqs.clone()).await;
                    let acked_at = Instant::now();
                    let events = seqs
                        .clone()
                        .zip(&flags)
                        .filter(|(_, ok)| **ok)
                        .map(|(seq, _)| ((seq % TENANTS as u64) as usize, event_id(&prefix, seq)))
                        .collect();
                    let _ = tx.send((events, (sent, acked_at)));
                    let mut acked = tally(seqs, &flags);
                    acked.retries = retries;
                    (acked, acked_at - sent)
                }));
            }
            let mut acked = Acked::default();
            let mut latencies = Vec::new();
            for task in inflight {
                let (a, l) = task.await.expect("batch");
                acked += a;
                latencies.push(l);
            }
            (acked, latencies)
        })
    };

    let mut pending: Vec<BTreeMap<String, Sent>> = vec![BTreeMap::new(); TENANTS];
    let index: HashMap<&str, usize> = load.tenants.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut from_send = Vec::new();
    // The median latency of the events sent in each second of the phase: flat if the
    // pipeline keeps up, growing if a backlog builds.
    let mut by_second: Vec<Vec<Duration>> = vec![Vec::new(); seconds as usize + 1];
    let mut from_ack = Vec::new();
    let mut polls = 0u64;
    let mut pause = POLL;
    let watch_started = Instant::now();
    let mut rows_read = 0u64;
    let mut sender = Some(sender);
    let mut outcome = None;
    let mut last_progress = Instant::now();
    loop {
        while let Ok((events, sent)) = rx.try_recv() {
            for (tenant, id) in events {
                pending[tenant].insert(id, sent);
            }
        }
        let waiting: Vec<usize> = (0..TENANTS).filter(|&t| !pending[t].is_empty()).collect();
        if !waiting.is_empty() {
            let tenants: Vec<&str> = waiting.iter().map(|&t| load.tenants[t].as_str()).collect();
            let lows: Vec<&str> =
                waiting.iter().map(|&t| pending[t].first_key_value().expect("pending").0.as_str()).collect();
            let highs: Vec<&str> =
                waiting.iter().map(|&t| pending[t].last_key_value().expect("pending").0.as_str()).collect();
            let asked = Instant::now();
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT u.tenant_id, u.event_id
                 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS m(t, lo, hi)
                 CROSS JOIN LATERAL (
                     SELECT e.tenant_id, e.event_id FROM rm_billing_ledger.usage_events e
                     WHERE e.tenant_id = m.t AND e.app_id = $4 AND e.event_id BETWEEN m.lo AND m.hi
                 ) u",
            )
            .bind(&tenants)
            .bind(&lows)
            .bind(&highs)
            .bind(&load.app_id)
            .fetch_all(owner)
            .await
            .expect("poll the ledger");
            polls += 1;
            pause = POLL.max(asked.elapsed() * 3);
            rows_read += rows.len() as u64;
            for (tenant, id) in rows {
                let Some(&t) = index.get(tenant.as_str()) else { continue };
                if let Some((sent, acked)) = pending[t].remove(&id) {
                    from_send.push(asked.saturating_duration_since(sent));
                    let second =
                        (sent.saturating_duration_since(phase_started).as_secs() as usize).min(seconds as usize);
                    by_second[second].push(asked.saturating_duration_since(sent));
                    from_ack.push(asked.saturating_duration_since(acked));
                    last_progress = Instant::now();
                }
            }
        }
        if sender.as_ref().is_some_and(|s| s.is_finished()) {
            outcome = Some(sender.take().expect("sender").await.expect("sender"));
        }
        let left: usize = pending.iter().map(BTreeMap::len).sum();
        if outcome.is_some() && rx.is_empty() && left == 0 {
            break;
        }
        if outcome.is_some() && last_progress.elapsed() > Duration::from_secs(60) {
            println!("  {left} acknowledged events not in the ledger after 60 s");
            break;
        }
        tokio::time::sleep(pause).await;
    }
    let usage = cpu.since(keel.pid());
    let (acked, mut requests) = outcome.expect("sender done");
    requests.sort();
    from_send.sort();
    from_ack.sort();
    println!(
        "event-to-ledger at {rate} events/s offered for {seconds} s (REST batches of {batch}; {} events acknowledged, \
         requests p50 {} p99 {}; {} retries):",
        acked.events,
        ms(percentile(&requests, 0.50)),
        ms(percentile(&requests, 0.99)),
        acked.retries,
    );
    println!(
        "  from send: p50 {} p99 {} max {}; from acknowledgement: p50 {} p99 {} max {} \
         ({} events seen; {polls} polls, one per {:.0} ms on average, read {rows_read} rows)",
        ms(percentile(&from_send, 0.50)),
        ms(percentile(&from_send, 0.99)),
        ms(from_send.last().copied().unwrap_or_default()),
        ms(percentile(&from_ack, 0.50)),
        ms(percentile(&from_ack, 0.99)),
        ms(from_ack.last().copied().unwrap_or_default()),
        from_send.len(),
        watch_started.elapsed().as_secs_f64() * 1000.0 / polls.max(1) as f64,
    );
    let trend: Vec<String> = by_second
        .iter_mut()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.sort();
            format!("{:.2}", percentile(l, 0.50).as_secs_f64())
        })
        .collect();
    println!("  p50 from send by second of sending (s): {}", trend.join(", "));
    println!("  cpu: {usage}");
    if rate == 10_000 {
        figure("billing.ledger_p99_at_10k_ms", millis(percentile(&from_send, 0.99)), "ms", Better::Lower);
    }
    acked
}

/// CPU time (user + system, in clock ticks) of the processes on the machine, grouped:
/// Keel (and its threads by name), Postgres, the broker, this load generator, the rest.
struct CpuSample {
    at: Instant,
    processes: HashMap<u32, (String, u64)>,
    keel_threads: HashMap<u32, (String, u64)>,
    machine_idle: u64,
}

/// `comm` and user + system ticks of a `/proc/.../stat` file.
fn stat(path: &str) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks))
}

fn pids(dir: &str) -> Vec<u32> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

impl CpuSample {
    fn take(keel: u32) -> Self {
        let processes =
            pids("/proc").into_iter().filter_map(|p| Some((p, stat(&format!("/proc/{p}/stat"))?))).collect();
        let keel_threads = pids(&format!("/proc/{keel}/task"))
            .into_iter()
            .filter_map(|t| Some((t, stat(&format!("/proc/{keel}/task/{t}/stat"))?)))
            .collect();
        let machine_idle = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_string();
                let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
                Some(f.get(3)? + f.get(4)?)
            })
            .unwrap_or(0);
        Self { at: Instant::now(), processes, keel_threads, machine_idle }
    }

    /// Shares of one core (100% = one core) since this sample, as one line.
    fn since(&self, keel: u32) -> String {
        // Clock ticks are 1/100 s on Linux (USER_HZ).
        let now = Self::take(keel);
        let seconds = now.at.duration_since(self.at).as_secs_f64();
        let pct = |ticks: u64| ticks as f64 / seconds;
        let delta = |before: &HashMap<u32, (String, u64)>, id: &u32, ticks: u64| {
            ticks.saturating_sub(before.get(id).map_or(0, |b| b.1))
        };
        let me = std::process::id();
        let mut groups: BTreeMap<&str, u64> = BTreeMap::new();
        let mut others: BTreeMap<&str, u64> = BTreeMap::new();
        for (pid, (comm, ticks)) in &now.processes {
            let group = match comm.as_str() {
                _ if *pid == keel => "keel",
                _ if *pid == me => "load generator",
                "tansu" => "broker",
                c if c.starts_with("postgres") => "postgres",
                _ => "other",
            };
            let used = delta(&self.processes, pid, *ticks);
            *groups.entry(group).or_default() += used;
            if group == "other" {
                *others.entry(comm.as_str()).or_default() += used;
            }
        }
        let mut others: Vec<(&str, u64)> = others.into_iter().filter(|(_, t)| *t > 0).collect();
        others.sort_by_key(|o| std::cmp::Reverse(o.1));
        let others: Vec<String> = others.iter().take(3).map(|(name, t)| format!("{name} {:.0}%", pct(*t))).collect();
        let mut threads: BTreeMap<String, u64> = BTreeMap::new();
        for (tid, (comm, ticks)) in &now.keel_threads {
            // rdkafka names threads `rdk:broker<n>`, `rdk:main`; tokio `tokio-runtime-w`.
            let name = comm.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
            *threads.entry(name).or_default() += delta(&self.keel_threads, tid, *ticks);
        }
        let mut threads: Vec<(String, u64)> = threads.into_iter().filter(|(_, t)| *t > 0).collect();
        threads.sort_by_key(|t| std::cmp::Reverse(t.1));
        let threads: Vec<String> = threads.iter().take(4).map(|(name, t)| format!("{name} {:.0}%", pct(*t))).collect();
        let idle = pct(now.machine_idle.saturating_sub(self.machine_idle));
        let group = |g: &str| pct(groups.get(g).copied().unwrap_or(0));
        format!(
            "keel {:.0}% ({}), postgres {:.0}%, broker {:.0}%, load generator {:.0}%, other {:.0}% ({}), idle {idle:.0}% (of 200%)",
            group("keel"),
            threads.join(", "),
            group("postgres"),
            group("broker"),
            group("load generator"),
            group("other"),
            others.join(", "),
        )
    }
}

/// Sets up 100 tenants and one app with a `billing:write` key.
async fn setup(keel: &Keel, operator: &str) -> Load {
    let grpc = format!("http://127.0.0.1:{}", keel.grpc_port);
    let channel = Channel::from_shared(grpc.clone()).expect("uri").connect().await.expect("connect");
    let mut tasks = Vec::new();
    let workers = 8;
    for w in 0..workers {
        let (mut client, operator) = (TenantServiceClient::new(channel.clone()), operator.to_string());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for t in (w..TENANTS).step_by(workers) {
                let request = ProvisionTenantRequest {
                    name: format!("Billing {t}"),
                    domain: format!("billing-{t}"),
                    plan: "pro".into(),
                    owner_email: format!("owner@billing-{t}.example.com"),
                    idempotency_key: format!("billing-{t}"),
                    industry: String::new(),
                    region: String::new(),
                };
                let id = client.provision_tenant(authed(request, &operator)).await.expect("provision").into_inner();
                ids.push((t, id.tenant_id));
            }
            ids
        }));
    }
    let mut tenants = vec![String::new(); TENANTS];
    for task in tasks {
        for (t, id) in task.await.expect("provision") {
            tenants[t] = id;
        }
    }
    let mut apps = AppServiceClient::new(channel);
    let request = RegisterAppRequest {
        name: "Billing bridge".into(),
        environment: "bench".into(),
        idempotency_key: "app".into(),
        ..Default::default()
    };
    let app = apps.register_app(authed(request, operator)).await.expect("register").into_inner();
    let request = IssueApiKeyRequest {
        app_id: app.app_id.clone(),
        scopes: vec!["billing:write".into()],
        expires_at: String::new(),
        idempotency_key: "key".into(),
    };
    let key = apps.issue_api_key(authed(request, operator)).await.expect("issue").into_inner().secret;
    Load {
        rest: format!("http://127.0.0.1:{}", keel.rest_port),
        grpc,
        app_id: app.app_id,
        key,
        tenants,
        http: reqwest::Client::new(),
    }
}

/// The ledger against what was acknowledged; prints the comparison; true if exact.
async fn exactly_once(owner: &PgPool, load: &Load, acked: Acked) -> bool {
    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (app_id, event_id)) FROM rm_billing_ledger.usage_events WHERE app_id = $1",
    )
    .bind(&load.app_id)
    .fetch_one(owner)
    .await
    .expect("count the ledger");
    let (quantity, events): (String, String) = sqlx::query_as(
        "SELECT coalesce(sum(quantity), 0)::text, coalesce(sum(events), 0)::text FROM rm_billing_ledger.usage_daily",
    )
    .fetch_one(owner)
    .await
    .expect("sum the totals");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
        .bind(keel_domain::usage::AGGREGATE_TYPE)
        .fetch_one(owner)
        .await
        .expect("count the store");
    let (rows, distinct, stored) = (rows as u64, distinct as u64, stored as u64);
    let quantity: u64 = quantity.parse().expect("quantity");
    let events: u64 = events.parse().expect("events");
    let lost = acked.events.saturating_sub(distinct);
    let doubled = (rows - distinct) + distinct.saturating_sub(acked.events);
    println!(
        "exactly once: {} events acknowledged (quantity {}); event store {stored} usage events; ledger {rows} rows, \
         {distinct} distinct (app_id, event_id); daily totals {events} events, quantity {quantity}",
        acked.events, acked.quantity,
    );
    let totals_ok = events == acked.events && quantity == acked.quantity;
    println!(
        "lost: {lost}, doubled: {doubled}; event store {}; totals {}",
        if stored == acked.events { "matches" } else { "DIFFERS" },
        if totals_ok { "match" } else { "DIFFER" },
    );
    lost == 0 && doubled == 0 && totals_ok && stored == acked.events
}

#[tokio::main]
async fn main() {
    let seconds: u64 = var("KEEL_BENCH_SECONDS", 10);
    let clients = list("KEEL_BENCH_CLIENTS", "8");
    let streams: usize = var("KEEL_BENCH_STREAMS", 4);
    let rates = list("KEEL_BENCH_LATENCY_RATES", "10000,25000");
    let latency_seconds: u64 = var("KEEL_BENCH_LATENCY_SECONDS", 5);
    let latency_batch: u64 = var("KEEL_BENCH_LATENCY_BATCH", 500).clamp(1, BATCH);
    let pool_size: u32 = var("KEEL_BENCH_POOL", 40);

    let env = TestEnv::new().await;
    let owner = env.owner_pool().await;
    keel_tests::bench::durable_commits(&owner).await;
    let operator = env.operator_token().await;
    let keel = Keel::start(&env, &pool_size.to_string()).await;
    let started = Instant::now();
    let load = Arc::new(setup(&keel, &operator).await);
    println!(
        "billing ingestion: {TENANTS} tenants, one app; keel pool {pool_size}; setup {:.1} s; \
         keel and the load generator on this machine",
        started.elapsed().as_secs_f64()
    );

    let mut total = Acked::default();
    let (flags, _) = post_batch(&load, "warm", 0..BATCH).await;
    total += tally(0..BATCH, &flags);
    drain(&owner, total.events, "the warm-up batch").await;

    for (i, &n) in clients.iter().enumerate() {
        total += rest_phase(&load, &format!("rest{i}"), n as usize, seconds, &keel).await;
        drain(&owner, total.events, "the REST phase").await;
    }
    total += grpc_phase(&load, "grpc", streams, seconds, &keel).await;
    drain(&owner, total.events, "the gRPC phase").await;
    for (i, &rate) in rates.iter().enumerate() {
        total += latency_phase(&load, &owner, &format!("lat{i}"), rate, latency_seconds, latency_batch, &keel).await;
    }
    drain(&owner, total.events, "the last phase").await;
    println!(
        "keel resident memory: {:.1} MiB now, peak (VmHWM) {:.1} MiB",
        keel.memory_mib("VmRSS:"),
        keel.memory_mib("VmHWM:")
    );
    let exact = exactly_once(&owner, &load, total).await;
    let size: i64 =
        sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&owner).await.expect("size");
    println!("the run's database: {:.0} MiB", size as f64 / (1024.0 * 1024.0));
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    drop(keel);
    owner.close().await;
    if !exact {
        let db = env.owner_url.rsplit_once('/').map_or("", |(_, db)| db);
        println!("kept the database {db} and the topic {} for a look", env.topic);
        std::process::exit(1);
    }
    if std::env::var("KEEL_BENCH_KEEP").is_err() {
        keel_tests::bench::drop_run(&env).await;
    }
}
