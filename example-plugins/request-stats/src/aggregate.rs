//! Per-endpoint request statistics, computed the way Locust computes them.
//!
//! Pure Rust with no sandbox types, so the same code runs inside the wasm recorder and, in
//! swarmtel's benchmarks, natively in the host: the difference is the sandbox's cost.

use std::collections::BTreeMap;

/// Response times below this many milliseconds are counted in a dense array; slower ones in a
/// sorted map. Locust rounds to 100 ms between 1 s and 10 s, so the array has 280 slots.
const DENSE_LIMIT_MS: u64 = 10_000;
const DENSE_SLOTS: usize = 280;

/// Locust's rounding of a response time for its histogram, from the SDK (the same function
/// the SDK's `ResponseTimes` uses).
pub use swarmtel_guest::round_response_time;

fn slot_of(rounded_ms: u64) -> usize {
    (if rounded_ms < 100 {
        rounded_ms
    } else if rounded_ms < 1_000 {
        100 + (rounded_ms - 100) / 10
    } else {
        190 + (rounded_ms - 1_000) / 100
    }) as usize
}

fn ms_of_slot(slot: usize) -> u64 {
    let slot = slot as u64;
    if slot < 100 {
        slot
    } else if slot < 190 {
        100 + (slot - 100) * 10
    } else {
        1_000 + (slot - 190) * 100
    }
}

/// Locust's response-time histogram: rounded milliseconds to counts.
#[derive(Debug, Clone)]
pub struct Histogram {
    dense: Vec<u64>,
    slow: BTreeMap<u64, u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            dense: vec![0; DENSE_SLOTS],
            slow: BTreeMap::new(),
        }
    }
}

impl Histogram {
    /// Counts one response time.
    #[inline]
    pub fn record(&mut self, response_time_ms: f64) {
        let rounded = round_response_time(response_time_ms);
        if rounded < DENSE_LIMIT_MS {
            self.dense[slot_of(rounded)] += 1;
        } else {
            *self.slow.entry(rounded).or_insert(0) += 1;
        }
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.dense.iter_mut().zip(&other.dense) {
            *mine += theirs;
        }
        for (ms, count) in &other.slow {
            *self.slow.entry(*ms).or_insert(0) += count;
        }
    }

    /// (rounded milliseconds, count) pairs, fastest first, without empty buckets.
    pub fn buckets(&self) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        self.dense
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(slot, count)| (ms_of_slot(slot), *count))
            .chain(self.slow.iter().map(|(ms, count)| (*ms, *count)))
    }

    /// Locust's `calculate_response_time_percentile`: the rounded response time below which
    /// `percent` (0 to 1) of `total` requests fall.
    pub fn percentile(&self, total: u64, percent: f64) -> u64 {
        let wanted = (total as f64 * percent) as u64;
        let mut processed = 0;
        for (ms, count) in self.buckets().rev() {
            processed += count;
            if total.saturating_sub(processed) <= wanted {
                return ms;
            }
        }
        0
    }
}

/// Running statistics of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointStats {
    /// Locust's request type, such as `GET`.
    pub request_type: String,
    /// Locust's name, or `Aggregated` for the total.
    pub name: String,
    /// Requests seen.
    pub requests: u64,
    /// Failed requests seen.
    pub failures: u64,
    /// Sum of response times in milliseconds.
    pub total_response_time_ms: f64,
    /// Smallest response time (infinity before the first request).
    pub min_response_time_ms: f64,
    /// Largest response time.
    pub max_response_time_ms: f64,
    /// Sum of response lengths in bytes.
    pub total_bytes: u64,
    /// Rounded response-time histogram.
    pub histogram: Histogram,
}

impl EndpointStats {
    /// Empty statistics for an endpoint.
    pub fn new(request_type: &str, name: &str) -> Self {
        Self {
            request_type: request_type.to_owned(),
            name: name.to_owned(),
            requests: 0,
            failures: 0,
            total_response_time_ms: 0.0,
            min_response_time_ms: f64::INFINITY,
            max_response_time_ms: 0.0,
            total_bytes: 0,
            histogram: Histogram::default(),
        }
    }

    /// Counts one request.
    #[inline]
    pub fn record(&mut self, response_time_ms: f64, response_length: u64) {
        self.requests += 1;
        self.total_response_time_ms += response_time_ms;
        // Comparisons, not `f64::min`/`max`: in WebAssembly those are calls to libm's `fmin`
        // and `fmax` (16% of this recorder's time per batch); the host only sends finite times.
        if response_time_ms < self.min_response_time_ms {
            self.min_response_time_ms = response_time_ms;
        }
        if response_time_ms > self.max_response_time_ms {
            self.max_response_time_ms = response_time_ms;
        }
        self.total_bytes += response_length;
        self.histogram.record(response_time_ms);
    }

    /// Adds another endpoint's statistics to these.
    pub fn merge(&mut self, other: &EndpointStats) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.total_response_time_ms += other.total_response_time_ms;
        self.min_response_time_ms = self.min_response_time_ms.min(other.min_response_time_ms);
        self.max_response_time_ms = self.max_response_time_ms.max(other.max_response_time_ms);
        self.total_bytes += other.total_bytes;
        self.histogram.merge(&other.histogram);
    }

    /// The telemetry fields for these statistics, as the `request_stats` schema describes.
    pub fn fields(&self, is_final: bool) -> serde_json::Value {
        let average = if self.requests == 0 {
            0.0
        } else {
            self.total_response_time_ms / self.requests as f64
        };
        let min = if self.requests == 0 {
            0.0
        } else {
            self.min_response_time_ms
        };
        serde_json::json!({
            "request_type": self.request_type,
            "endpoint": self.name,
            "requests": self.requests,
            "failures": self.failures,
            "avg_response_time_ms": round3(average),
            "min_response_time_ms": round3(min),
            "max_response_time_ms": round3(self.max_response_time_ms),
            "p50_ms": self.histogram.percentile(self.requests, 0.50),
            "p90_ms": self.histogram.percentile(self.requests, 0.90),
            "p95_ms": self.histogram.percentile(self.requests, 0.95),
            "p99_ms": self.histogram.percentile(self.requests, 0.99),
            "total_bytes": self.total_bytes,
            "final": is_final,
        })
    }
}

/// Milliseconds to three decimals: enough for a dashboard, stable in snapshots.
fn round3(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}

/// Statistics of every endpoint, indexed by a dense endpoint number.
#[derive(Debug, Clone, Default)]
pub struct RequestStats {
    endpoints: Vec<EndpointStats>,
}

impl RequestStats {
    /// Makes sure endpoint number `index` exists, named as given.
    pub fn ensure_endpoint(&mut self, index: usize, request_type: &str, name: &str) {
        while self.endpoints.len() <= index {
            let next = self.endpoints.len();
            let (request_type, name) = if next == index {
                (request_type, name)
            } else {
                ("", "")
            };
            self.endpoints.push(EndpointStats::new(request_type, name));
        }
    }

    /// Zeroes every count, keeping the endpoints and their numbers (Locust `reset_stats`).
    pub fn reset(&mut self) {
        for endpoint in &mut self.endpoints {
            *endpoint = EndpointStats::new(&endpoint.request_type, &endpoint.name);
        }
    }

    /// How many endpoint numbers are known.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Counts one request of endpoint `index` (which must exist).
    #[inline]
    pub fn record(&mut self, index: usize, response_time_ms: f64, response_length: u64) {
        self.endpoints[index].record(response_time_ms, response_length);
    }

    /// Counts one failure of endpoint `index` (which must exist).
    #[inline]
    pub fn record_failure(&mut self, index: usize) {
        self.endpoints[index].failures += 1;
    }

    /// The `Aggregated` row over every endpoint.
    pub fn total(&self) -> EndpointStats {
        let mut total = EndpointStats::new("", "Aggregated");
        for endpoint in &self.endpoints {
            total.merge(endpoint);
        }
        total
    }

    /// One (message, fields) pair per endpoint that saw requests, ordered by request type
    /// and name, then the `Aggregated` row.
    pub fn report(&self, is_final: bool) -> Vec<(String, serde_json::Value)> {
        let mut seen: Vec<&EndpointStats> =
            self.endpoints.iter().filter(|e| e.requests > 0).collect();
        seen.sort_by(|a, b| (&a.request_type, &a.name).cmp(&(&b.request_type, &b.name)));
        let total = self.total();
        seen.into_iter()
            .chain(std::iter::once(&total))
            .map(|stats| {
                let message = format!(
                    "{} {}: {} requests, {} failures",
                    stats.request_type, stats.name, stats.requests, stats.failures
                );
                (message.trim_start().to_owned(), stats.fields(is_final))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_like_locust() {
        assert_eq!(round_response_time(12.4), 12);
        // Python's round(), as Locust calls it: halves go to the even neighbour.
        assert_eq!(round_response_time(12.5), 12);
        assert_eq!(round_response_time(13.5), 14);
        assert_eq!(round_response_time(145.0), 140);
        assert_eq!(round_response_time(155.0), 160);
        assert_eq!(round_response_time(1_050.0), 1_000);
        assert_eq!(round_response_time(12_500.0), 12_000);
        assert_eq!(round_response_time(147.0), 150);
        assert_eq!(round_response_time(3_449.0), 3_400);
        assert_eq!(round_response_time(12_600.0), 13_000);
    }

    #[test]
    fn slots_round_trip_every_rounded_value() {
        for ms in (0..100)
            .chain((100..1_000).step_by(10))
            .chain((1_000..10_000).step_by(100))
        {
            assert_eq!(ms_of_slot(slot_of(ms)), ms, "{ms}");
            assert!(slot_of(ms) < DENSE_SLOTS);
        }
    }

    #[test]
    fn percentiles_follow_locust() {
        // Locust walks from the slowest bucket down until at most total*percent requests
        // remain: for 1..=10 ms that is 6 at 50% and 10 at 90% (values checked against
        // locust.stats.calculate_response_time_percentile).
        let mut histogram = Histogram::default();
        for ms in 1..=10 {
            histogram.record(ms as f64);
        }
        assert_eq!(histogram.percentile(10, 0.5), 6);
        assert_eq!(histogram.percentile(10, 0.9), 10);
        assert_eq!(histogram.percentile(10, 1.0), 10);
        assert_eq!(Histogram::default().percentile(0, 0.5), 0);
    }

    #[test]
    fn slow_requests_use_the_sorted_map() {
        let mut histogram = Histogram::default();
        histogram.record(25_000.0);
        histogram.record(5.0);
        assert_eq!(
            histogram.buckets().collect::<Vec<_>>(),
            vec![(5, 1), (25_000, 1)]
        );
        assert_eq!(histogram.percentile(2, 0.99), 25_000);
    }

    #[test]
    fn report_orders_endpoints_and_adds_the_total() {
        let mut stats = RequestStats::default();
        stats.ensure_endpoint(0, "GET", "/b");
        stats.ensure_endpoint(1, "GET", "/a");
        stats.record(0, 10.0, 100);
        stats.record(1, 20.0, 50);
        stats.record(1, 30.0, 50);
        stats.record_failure(1);
        let report = stats.report(false);
        let names: Vec<_> = report.iter().map(|(_, f)| f["endpoint"].clone()).collect();
        assert_eq!(names, ["/a", "/b", "Aggregated"]);
        assert_eq!(report[0].1["requests"], 2);
        assert_eq!(report[0].1["failures"], 1);
        assert_eq!(report[2].1["requests"], 3);
        assert_eq!(report[2].1["total_bytes"], 200);
        assert_eq!(report[2].1["avg_response_time_ms"], 20.0);
        assert_eq!(report[0].0, "GET /a: 2 requests, 1 failures");
    }
}
