//! Per-API request statistics over the last five minutes, in one-minute buckets, so the
//! system health API (FR-SYS-005) answers error rates and latency percentiles from
//! Keel's own counters, with no monitoring stack.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

/// Minutes the statistics cover.
pub const WINDOW_MINUTES: u64 = 5;

/// Latency bucket upper bounds in microseconds: steps of ×1.25 from 100 µs to about a
/// minute, so a percentile read from them is within about 12 % of the true value.
static BOUNDS_MICROS: LazyLock<Vec<u64>> = LazyLock::new(|| {
    let mut bounds = vec![100_u64];
    while bounds.last().is_some_and(|b| *b < 60_000_000) {
        let last = bounds.last().copied().unwrap_or(100);
        bounds.push(last + last / 4);
    }
    bounds
});

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Refused as the caller's fault (REST 4xx; gRPC invalid argument, not found, …).
    Rejected,
    /// Failed on Keel's side (REST 5xx; gRPC internal, unavailable, …).
    Error,
}

/// One API's requests in one minute.
#[derive(Debug, Clone)]
struct Minute {
    /// Minutes since the windows started.
    index: u64,
    requests: u64,
    rejected: u64,
    errors: u64,
    /// Requests per latency bucket (one more than [`BOUNDS_MICROS`]: the overflow).
    latency: Vec<u64>,
}

impl Minute {
    fn new(index: u64) -> Self {
        Self { index, requests: 0, rejected: 0, errors: 0, latency: vec![0; BOUNDS_MICROS.len() + 1] }
    }
}

/// One API's last minutes, oldest first.
type Window = Mutex<VecDeque<Minute>>;

/// What one API did over the window.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ApiStats {
    /// The API: `rest GET /v1/…` (the route template) or `grpc keel.v1.Service/Method`.
    pub api: String,
    /// Requests answered.
    pub requests: u64,
    /// Requests that failed on Keel's side.
    pub errors: u64,
    /// Requests refused as the caller's fault.
    pub rejected: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// `rejected / requests`.
    pub rejection_rate: f64,
    /// Median latency in milliseconds (estimated from buckets ×1.25 apart).
    pub p50_ms: f64,
    /// 99th-percentile latency in milliseconds (estimated likewise).
    pub p99_ms: f64,
}

/// Every API's window.
#[derive(Debug)]
pub struct Windows {
    started: Instant,
    apis: RwLock<HashMap<String, Arc<Window>>>,
}

impl Default for Windows {
    fn default() -> Self {
        Self { started: Instant::now(), apis: RwLock::default() }
    }
}

impl Windows {
    /// Records one request of `api`.
    pub fn record(&self, api: &str, outcome: Outcome, latency: Duration) {
        self.record_at(self.minute(), api, outcome, latency);
    }

    /// Each API's statistics over the last [`WINDOW_MINUTES`], by API name.
    pub fn stats(&self) -> Vec<ApiStats> {
        self.stats_at(self.minute())
    }

    fn minute(&self) -> u64 {
        self.started.elapsed().as_secs() / 60
    }

    fn record_at(&self, minute: u64, api: &str, outcome: Outcome, latency: Duration) {
        let window = self.apis.read().ok().and_then(|apis| apis.get(api).cloned());
        let window = match window {
            Some(window) => window,
            None => match self.apis.write() {
                Ok(mut apis) => apis.entry(api.to_string()).or_default().clone(),
                Err(_) => return,
            },
        };
        let Ok(mut minutes) = window.lock() else { return };
        if minutes.back().is_none_or(|last| last.index != minute) {
            minutes.push_back(Minute::new(minute));
        }
        while minutes.front().is_some_and(|first| first.index + WINDOW_MINUTES <= minute) {
            minutes.pop_front();
        }
        let Some(current) = minutes.back_mut() else { return };
        current.requests += 1;
        match outcome {
            Outcome::Ok => {}
            Outcome::Rejected => current.rejected += 1,
            Outcome::Error => current.errors += 1,
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_MICROS.partition_point(|bound| *bound < micros);
        current.latency[bucket] += 1;
    }

    fn stats_at(&self, minute: u64) -> Vec<ApiStats> {
        let Ok(apis) = self.apis.read() else { return Vec::new() };
        let mut stats: Vec<ApiStats> = apis
            .iter()
            .filter_map(|(api, window)| {
                let minutes = window.lock().ok()?;
                let recent = minutes.iter().filter(|m| m.index + WINDOW_MINUTES > minute && m.index <= minute);
                let mut total = Minute::new(minute);
                for m in recent {
                    total.requests += m.requests;
                    total.rejected += m.rejected;
                    total.errors += m.errors;
                    total.latency.iter_mut().zip(&m.latency).for_each(|(sum, n)| *sum += n);
                }
                (total.requests > 0).then(|| summarize(api, &total))
            })
            .collect();
        stats.sort_by(|a, b| a.api.cmp(&b.api));
        stats
    }
}

fn summarize(api: &str, total: &Minute) -> ApiStats {
    let requests = total.requests as f64;
    ApiStats {
        api: api.to_string(),
        requests: total.requests,
        errors: total.errors,
        rejected: total.rejected,
        error_rate: total.errors as f64 / requests,
        rejection_rate: total.rejected as f64 / requests,
        p50_ms: quantile(&total.latency, 0.50),
        p99_ms: quantile(&total.latency, 0.99),
    }
}

/// The `q` quantile of the bucketed latencies, in milliseconds, interpolated within its bucket.
fn quantile(buckets: &[u64], q: f64) -> f64 {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return 0.0;
    }
    let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
    let mut below = 0;
    for (i, n) in buckets.iter().enumerate() {
        if below + n >= rank {
            let low = if i == 0 { 0 } else { BOUNDS_MICROS[i - 1] };
            let high = BOUNDS_MICROS.get(i).copied().unwrap_or(low + low / 4);
            let micros = low as f64 + (high - low) as f64 * (rank - below) as f64 / *n as f64;
            return micros / 1000.0;
        }
        below += n;
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_errors_and_rejections_per_api() {
        let windows = Windows::default();
        for _ in 0..7 {
            windows.record_at(0, "rest GET /a", Outcome::Ok, ms(1));
        }
        windows.record_at(0, "rest GET /a", Outcome::Rejected, ms(1));
        windows.record_at(1, "rest GET /a", Outcome::Error, ms(1));
        windows.record_at(1, "rest GET /a", Outcome::Error, ms(1));
        windows.record_at(1, "grpc keel.v1.S/M", Outcome::Ok, ms(1));
        let stats = windows.stats_at(1);
        assert_eq!(stats.iter().map(|s| s.api.as_str()).collect::<Vec<_>>(), ["grpc keel.v1.S/M", "rest GET /a"]);
        let a = &stats[1];
        assert_eq!((a.requests, a.errors, a.rejected), (10, 2, 1));
        assert!((a.error_rate - 0.2).abs() < 1e-9 && (a.rejection_rate - 0.1).abs() < 1e-9);
        assert_eq!(stats[0].error_rate, 0.0);
    }

    #[test]
    fn forgets_minutes_older_than_the_window() {
        let windows = Windows::default();
        windows.record_at(0, "a", Outcome::Error, ms(1));
        windows.record_at(3, "a", Outcome::Ok, ms(1));
        assert_eq!(windows.stats_at(4)[0].requests, 2);
        assert_eq!(windows.stats_at(5)[0].requests, 1, "minute 0 left the window");
        assert!(windows.stats_at(8).is_empty(), "nothing in the last five minutes");
        windows.record_at(9, "a", Outcome::Ok, ms(1));
        assert_eq!(windows.stats_at(9)[0].requests, 1);
    }

    #[test]
    fn percentiles_are_within_a_bucket_of_the_truth() {
        let windows = Windows::default();
        for n in 1..=100 {
            windows.record_at(0, "a", Outcome::Ok, ms(n));
        }
        let stats = &windows.stats_at(0)[0];
        assert!((stats.p50_ms - 50.0).abs() <= 50.0 * 0.25, "p50 {}", stats.p50_ms);
        assert!((stats.p99_ms - 99.0).abs() <= 99.0 * 0.25, "p99 {}", stats.p99_ms);
        assert!(stats.p50_ms < stats.p99_ms);
    }

    #[test]
    fn the_slowest_requests_land_in_the_overflow_bucket() {
        let windows = Windows::default();
        windows.record_at(0, "a", Outcome::Ok, Duration::from_secs(600));
        let last = *BOUNDS_MICROS.last().expect("bounds") as f64 / 1000.0;
        assert!(windows.stats_at(0)[0].p99_ms >= last);
    }
}
