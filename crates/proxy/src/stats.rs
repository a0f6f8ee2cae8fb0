//! Per-route request counters, updated on the request path with relaxed atomic adds only (no
//! lock, no allocation). The control plane owns the `Arc<RouteStats>` of each route across
//! table rebuilds, labels them (domain, environment) and renders them for `/metrics`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;

/// Upper bounds of the latency histogram buckets, in seconds (Prometheus `le`); a last bucket,
/// `+Inf`, is implied.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
pub struct RouteStats {
    /// Responses by status class: 1xx (an upgrade), 2xx, 3xx, 4xx, 5xx.
    by_class: [AtomicU64; 5],
    /// Non-cumulative counts per bucket of `LATENCY_BUCKETS`, plus one for `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
}

/// A consistent-enough copy of a route's counters (each counter is read once).
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    /// `[1xx, 2xx, 3xx, 4xx, 5xx]`
    pub by_class: [u64; 5],
    /// Cumulative counts for each bound of `LATENCY_BUCKETS`, then `+Inf` (= the total count).
    pub cumulative_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    pub latency_sum_seconds: f64,
}

impl RouteStats {
    /// Count one response: its status and the time from the request's arrival to the response
    /// head being ready.
    pub(crate) fn record(&self, status: StatusCode, elapsed: Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let mut cumulative_buckets = [0; LATENCY_BUCKETS.len() + 1];
        let mut running = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            running += b.load(Ordering::Relaxed);
            cumulative_buckets[i] = running;
        }
        StatsSnapshot {
            by_class: std::array::from_fn(|i| self.by_class[i].load(Ordering::Relaxed)),
            cumulative_buckets,
            latency_sum_seconds: self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_classes_and_cumulative_buckets() {
        let s = RouteStats::default();
        s.record(StatusCode::OK, Duration::from_micros(500));
        s.record(StatusCode::NOT_FOUND, Duration::from_millis(30));
        s.record(StatusCode::SWITCHING_PROTOCOLS, Duration::from_secs(60));
        let snap = s.snapshot();
        assert_eq!(snap.by_class, [1, 1, 0, 1, 0]);
        assert_eq!(snap.cumulative_buckets[0], 1); // <= 1 ms
        assert_eq!(snap.cumulative_buckets[5], 2); // <= 50 ms
        assert_eq!(snap.cumulative_buckets[12], 2); // <= 10 s
        assert_eq!(snap.cumulative_buckets[13], 3); // +Inf
        assert!((snap.latency_sum_seconds - 60.0305).abs() < 1e-6);
    }
}
