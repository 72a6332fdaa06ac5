//! The built-in request metrics: Locust's own statistics, computed by the host over every
//! node of a run, with Locust's rules, so the numbers match what Locust's master prints.
//!
//! Per endpoint (request type and name) and for all of them (`Aggregated`), as Locust's
//! `StatsEntry`: requests, failures, the response-time sum, minimum and maximum, and the
//! response times rounded the way `locust.stats.bucket_response_time` rounds them (to about
//! two significant digits; Python's `round`, ties to even). Percentiles follow
//! `calculate_response_time_percentile`. Rounded times merge exactly, so the percentiles over
//! every worker are the master's.
//!
//! Exported as metrics named after Locust's `--otel` ones: `locust.client.duration` (a
//! histogram in seconds with `name`, `http.request.method`, `error.type` and
//! `http.response.status_code`), `locust.client.duration.percentile` (Locust's exact p50,
//! p95 and p99 as gauges) and `locust.users.count`; and as one `REQUEST_SUMMARY` record per
//! endpoint at the end of the run.
//!
//! Everything kept here is bounded by [`RequestMetricsConfig`]: endpoints, series, distinct
//! response times per endpoint, the length of names, error types and worker ids.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::enrich::RunContext;
use super::metrics::{
    AttributeValue, HistogramPoint, Metric, MetricKind, Point, PointValue, RunMetrics,
};
use crate::bindings::types as wit;
use crate::config::RoleName;
use crate::sources::ingest::RequestRecord;

/// The percentiles exported, as Locust's `PERCENTILES_TO_STATISTICS` plus the median.
pub const PERCENTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// Bucket bounds of `locust.client.duration`, in milliseconds: OpenTelemetry's default
/// explicit bounds, read as milliseconds. Each lies on Locust's rounding grid, so a bucket's
/// count is exact for Locust's rounded times and merges exactly.
pub const BOUNDS_MS: [u64; 15] = [
    0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000,
];

/// [`BOUNDS_MS`] in seconds, the unit of `locust.client.duration`.
pub const BOUNDS_SECONDS: [f64; 15] = [
    0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Longest endpoint name or request type kept as is; longer ones go to the overflow entry.
pub const MAX_NAME_BYTES: usize = 1024;

/// Longest error type (a Python class name) kept; longer ones read `_OTHER`.
pub const MAX_ERROR_TYPE_BYTES: usize = 128;

/// Most distinct rounded response times kept per endpoint. Locust's rounding leaves about
/// 280 below 10 s and one per second above; past this, a new time is counted at its nearest
/// kept neighbour and the endpoint is marked inexact.
pub const MAX_TIMES_PER_ENDPOINT: usize = 1024;

/// Most workers whose user counts are summed per run.
pub const MAX_WORKERS_PER_RUN: usize = 4096;

/// The attribute value of an error whose type is not known (OpenTelemetry's convention).
pub const UNKNOWN_ERROR_TYPE: &str = "_OTHER";

/// The name of the entry over every endpoint, as Locust calls it.
pub const AGGREGATED: &str = "Aggregated";

/// `[request_metrics]`: the built-in request metrics and their bounds.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestMetricsConfig {
    /// Whether the host aggregates requests at all.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Most endpoints kept, over every run, overflow entries included; requests of further
    /// endpoints are counted in their run's overflow entry (attribute
    /// `otel.metric.overflow`), or, once that cannot be made either, only as not aggregated.
    #[serde(default = "default_max_endpoints")]
    pub max_endpoints: usize,
    /// Most histogram series (endpoint × error type × status code), over every run; past it,
    /// requests are counted in their run's overflow series.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

fn default_enabled() -> bool {
    true
}

fn default_max_endpoints() -> usize {
    1000
}

fn default_max_series() -> usize {
    4096
}

impl Default for RequestMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            max_endpoints: default_max_endpoints(),
            max_series: default_max_series(),
        }
    }
}

impl RequestMetricsConfig {
    /// The largest `max_endpoints` and `max_series` accepted.
    pub const MAX_CAP: usize = 100_000;

    /// Checks the bounds; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, value) in [
            ("max_endpoints", self.max_endpoints),
            ("max_series", self.max_series),
        ] {
            if !(1..=Self::MAX_CAP).contains(&value) {
                return Err((
                    key,
                    format!("must be from 1 to {}, got {value}", Self::MAX_CAP),
                ));
            }
        }
        Ok(())
    }
}

/// Python's `round(value, -digits)` for a finite `value >= 0`: the multiple of `step`
/// (a power of ten, at least 1) nearest to `value`'s exact binary value, ties to even.
fn python_round(value: f64, step: f64) -> f64 {
    if step == 1.0 {
        return value.round_ties_even();
    }
    // `quotient * step` is exact for the values Locust sees (below 2^53 ms), and so is
    // `value - quotient * step` (the two are within a factor of two for value >= 2 * step).
    let mut quotient = (value / step).floor();
    let mut rest = value - quotient * step;
    if rest < 0.0 {
        quotient -= 1.0;
        rest += step;
    } else if rest >= step {
        quotient += 1.0;
        rest -= step;
    }
    let twice = 2.0 * rest;
    if twice > step || (twice == step && quotient % 2.0 != 0.0) {
        quotient += 1.0;
    }
    quotient * step
}

/// Locust's `bucket_response_time`: a response time in milliseconds rounded to about two
/// significant digits (147 → 150, 3432 → 3400, 58760 → 59000).
pub fn bucket_response_time(response_time_ms: f64) -> u64 {
    let step = if response_time_ms < 100.0 {
        1.0
    } else if response_time_ms < 1000.0 {
        10.0
    } else if response_time_ms < 10000.0 {
        100.0
    } else {
        1000.0
    };
    // Saturates past u64 (a response time of half a billion years).
    python_round(response_time_ms, step) as u64
}

/// Locust's `calculate_response_time_percentile`: the rounded response time within which
/// `percent` of `num_requests` requests finished; 0 when there are none.
pub fn response_time_percentile(
    response_times: &BTreeMap<u64, u64>,
    num_requests: u64,
    percent: f64,
) -> u64 {
    percentile_of_descending(
        response_times
            .iter()
            .rev()
            .map(|(&time, &count)| (time, count)),
        num_requests,
        percent,
    )
}

/// [`response_time_percentile`] over (rounded time, requests), slowest first.
fn percentile_of_descending(
    descending: impl Iterator<Item = (u64, u64)>,
    num_requests: u64,
    percent: f64,
) -> u64 {
    // Python's `int(num_requests * percent)`: a float product, truncated.
    let wanted = (num_requests as f64 * percent) as u64;
    let mut processed = 0u64;
    for (time, count) in descending {
        processed = processed.saturating_add(count);
        if num_requests.saturating_sub(processed) <= wanted {
            return time;
        }
    }
    0
}

/// A response time in milliseconds as whole nanoseconds (saturating).
fn nanoseconds(response_time_ms: f64) -> u64 {
    (response_time_ms * 1e6).round() as u64
}

/// Slots of the rounded times below 10 s: 0..99 ms by 1, 100..990 by 10, 1000..9900 by 100.
const GRID_SLOTS: usize = 280;

/// The slot of a rounded time below 10 s.
fn grid_slot(rounded: u64) -> usize {
    let rounded = rounded as usize;
    if rounded < 100 {
        rounded
    } else if rounded < 1000 {
        100 + (rounded - 100) / 10
    } else {
        190 + (rounded - 1000) / 100
    }
}

/// The rounded time of a slot.
fn grid_time(slot: usize) -> u64 {
    (if slot < 100 {
        slot
    } else if slot < 190 {
        100 + (slot - 100) * 10
    } else {
        1000 + (slot - 190) * 100
    }) as u64
}

/// Locust's `response_times` dict: rounded response time in ms → requests. Times below 10 s
/// (the 280 values Locust's rounding leaves there) are counted in an array, the rest in a
/// map of at most [`MAX_TIMES_PER_ENDPOINT`] keys.
#[derive(Debug, Clone, Default)]
struct ResponseTimes {
    /// Per grid slot; empty until the first time below 10 s.
    grid: Vec<u64>,
    /// Times of 10 s and more.
    above: BTreeMap<u64, u64>,
}

impl ResponseTimes {
    /// Counts one request at `rounded`; false when it was counted at a neighbour instead
    /// (the map is full).
    fn add(&mut self, rounded: u64) -> bool {
        if rounded < 10_000 {
            if self.grid.is_empty() {
                self.grid = vec![0; GRID_SLOTS];
            }
            self.grid[grid_slot(rounded)] += 1;
            return true;
        }
        if self.above.len() < MAX_TIMES_PER_ENDPOINT || self.above.contains_key(&rounded) {
            *self.above.entry(rounded).or_default() += 1;
            return true;
        }
        let above = self.above.range(rounded..).next().map(|(k, _)| *k);
        let below = self.above.range(..rounded).next_back().map(|(k, _)| *k);
        let key = match (below, above) {
            (Some(below), Some(above)) if rounded - below < above - rounded => below,
            (_, Some(above)) => above,
            (Some(below), None) => below,
            (None, None) => rounded,
        };
        *self.above.entry(key).or_default() += 1;
        false
    }

    /// (rounded time, requests), slowest first.
    fn descending(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let above = self.above.iter().rev().map(|(&time, &count)| (time, count));
        let grid = self
            .grid
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, count)| **count > 0)
            .map(|(slot, &count)| (grid_time(slot), count));
        above.chain(grid)
    }
}

/// Locust's `StatsEntry` for one endpoint, or for all of them.
#[derive(Debug, Clone, Default)]
struct EndpointStats {
    num_requests: u64,
    num_failures: u64,
    /// Sum of response times in nanoseconds: an integer, so the sum does not depend on the
    /// order in which workers' requests arrive.
    total_response_time_ns: u64,
    min_response_time: Option<f64>,
    max_response_time: f64,
    total_content_length: u64,
    /// Rounded response time in ms → requests.
    response_times: ResponseTimes,
    /// Requests whose rounded time was counted at a neighbour (past
    /// [`MAX_TIMES_PER_ENDPOINT`]).
    inexact: u64,
}

impl EndpointStats {
    fn log(&mut self, response_time_ms: f64, content_length: u64, rounded: u64, failed: bool) {
        self.num_requests += 1;
        self.num_failures += u64::from(failed);
        self.total_response_time_ns = self
            .total_response_time_ns
            .saturating_add(nanoseconds(response_time_ms));
        self.min_response_time = Some(
            self.min_response_time
                .map_or(response_time_ms, |min| min.min(response_time_ms)),
        );
        self.max_response_time = self.max_response_time.max(response_time_ms);
        self.total_content_length = self.total_content_length.saturating_add(content_length);
        if !self.response_times.add(rounded) {
            self.inexact += 1;
        }
    }

    fn percentile(&self, percent: f64) -> u64 {
        percentile_of_descending(self.response_times.descending(), self.num_requests, percent)
    }

    /// The `REQUEST_SUMMARY` fields of this entry, Locust's names and milliseconds.
    fn summary_fields(&self, request_type: &str, name: &str) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("request_type".into(), json!(request_type));
        fields.insert("name".into(), json!(name));
        fields.insert("num_requests".into(), json!(self.num_requests));
        fields.insert("num_failures".into(), json!(self.num_failures));
        fields.insert(
            "total_response_time".into(),
            json!(self.total_response_time_ns as f64 / 1e6),
        );
        let average = if self.num_requests == 0 {
            0.0
        } else {
            self.total_response_time_ns as f64 / 1e6 / self.num_requests as f64
        };
        fields.insert("avg_response_time".into(), json!(average));
        fields.insert(
            "min_response_time".into(),
            json!(self.min_response_time.unwrap_or(0.0)),
        );
        fields.insert("max_response_time".into(), json!(self.max_response_time));
        fields.insert(
            "total_content_length".into(),
            json!(self.total_content_length),
        );
        for percent in PERCENTILES {
            fields.insert(
                format!("response_time_percentile_{percent}"),
                json!(self.percentile(percent)),
            );
        }
        if self.inexact > 0 {
            fields.insert("inexact_requests".into(), json!(self.inexact));
        }
        fields
    }
}

/// One `REQUEST_SUMMARY` record: (run, message, fields).
fn summary_record(
    run: usize,
    label: &str,
    stats: &EndpointStats,
    fields: Map<String, Value>,
) -> (usize, String, Value) {
    let message = format!(
        "{label}: {} requests, {} failures",
        stats.num_requests, stats.num_failures
    );
    (run, message, Value::Object(fields))
}

/// A fast hash for this module's small integer keys: indices and ids the host assigned, not
/// text from a peer, so no peer can aim keys at one bucket.
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }
    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }
    fn write_u16(&mut self, value: u16) {
        self.add(u64::from(value));
    }
    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }
    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }
    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }
}

/// A map keyed by host-assigned indices.
type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// One endpoint of a run.
#[derive(Debug)]
struct Entry {
    request_type: String,
    name: String,
    /// The run's overflow entry (endpoints past `max_endpoints`).
    overflow: bool,
    stats: EndpointStats,
}

/// One histogram series: an entry, an error type and a status code.
#[derive(Debug)]
struct Series {
    entry: usize,
    /// Index into [`RequestMetrics::error_types`]; `None` for a success.
    error_type: Option<u32>,
    status_code: u16,
    /// The run's overflow series (series past `max_series`).
    overflow: bool,
    count: u64,
    sum_ns: u64,
    buckets: [u64; BOUNDS_MS.len() + 1],
}

/// Everything aggregated for one run.
#[derive(Debug, Default)]
struct RunStats {
    /// Event time of the first event taken (or of the latest reset): the start of the
    /// cumulative sums. Set once, so it never moves back after an export.
    start_time: Option<f64>,
    /// Event time of the latest event.
    latest_time: f64,
    entries: Vec<Entry>,
    overflow_entry: Option<usize>,
    /// `Aggregated`: every request of the run, whatever entry it went to.
    total: EndpointStats,
    series: Vec<Series>,
    series_index: IdMap<(usize, Option<u32>, u16), usize>,
    overflow_series: Option<usize>,
    /// Latest `worker_report` user count per worker, summed for `locust.users.count`.
    worker_users: HashMap<String, u32>,
    /// The latest `spawning_complete` of a master or standalone node.
    spawned_users: Option<u32>,
}

impl RunStats {
    /// Takes an event's time for the run's start and latest time.
    fn saw(&mut self, time: f64) {
        if self.start_time.is_none() {
            self.start_time = Some(time);
            self.latest_time = time;
        }
        self.latest_time = self.latest_time.max(time);
    }

    fn users(&self) -> Option<u64> {
        if self.worker_users.is_empty() {
            self.spawned_users.map(u64::from)
        } else {
            Some(
                self.worker_users
                    .values()
                    .map(|&users| u64::from(users))
                    .sum(),
            )
        }
    }

    /// The run's overflow entry, made if it has none yet.
    fn overflow_entry(&mut self) -> usize {
        if let Some(index) = self.overflow_entry {
            return index;
        }
        self.entries.push(Entry {
            request_type: String::new(),
            name: String::new(),
            overflow: true,
            stats: EndpointStats::default(),
        });
        self.overflow_entry = Some(self.entries.len() - 1);
        self.entries.len() - 1
    }

    /// The run's overflow series, made if it has none yet.
    fn overflow_series(&mut self) -> usize {
        if let Some(index) = self.overflow_series {
            return index;
        }
        let entry = self.overflow_entry();
        self.series.push(Series {
            entry,
            error_type: None,
            status_code: 0,
            overflow: true,
            count: 0,
            sum_ns: 0,
            buckets: [0; BOUNDS_MS.len() + 1],
        });
        self.overflow_series = Some(self.series.len() - 1);
        self.series.len() - 1
    }
}

/// Most runs aggregated at once; requests of further runs are only counted (see
/// [`RequestMetrics::not_aggregated`]). Each run keeps at most its named entries (within
/// `max_endpoints` over all runs), one overflow entry, `Aggregated` and one overflow series.
pub const MAX_RUNS: usize = 256;

/// The aggregator: every run's request statistics, and their metrics.
#[derive(Debug)]
pub struct RequestMetrics {
    config: RequestMetricsConfig,
    /// By the run's index in the pipeline, in that order.
    runs: BTreeMap<usize, RunStats>,
    /// (run, interned endpoint) → entry index in the run.
    entries: IdMap<(usize, u32), usize>,
    endpoints_kept: usize,
    series_kept: usize,
    /// Error types seen, interned (at most `max_series` of them: each has a series).
    error_types: Vec<String>,
    error_type_ids: HashMap<String, u32>,
    /// Requests of runs past [`MAX_RUNS`]: counted, not aggregated.
    not_aggregated: u64,
    /// Something changed since the last [`RequestMetrics::snapshot`].
    changed: bool,
    snapshot: Arc<Vec<RunMetrics>>,
}

impl RequestMetrics {
    /// An empty aggregator with these bounds.
    pub fn new(config: RequestMetricsConfig) -> Self {
        Self {
            config,
            runs: BTreeMap::new(),
            entries: IdMap::default(),
            endpoints_kept: 0,
            series_kept: 0,
            error_types: Vec::new(),
            error_type_ids: HashMap::new(),
            not_aggregated: 0,
            changed: false,
            snapshot: Arc::new(Vec::new()),
        }
    }

    /// Requests of runs past [`MAX_RUNS`], counted but not aggregated.
    pub fn not_aggregated(&self) -> u64 {
        self.not_aggregated
    }

    /// The run's statistics, made if new and there is room for another run.
    fn run(&mut self, run: usize) -> Option<&mut RunStats> {
        if !self.runs.contains_key(&run) && self.runs.len() >= MAX_RUNS {
            return None;
        }
        Some(self.runs.entry(run).or_default())
    }

    /// The entry index of an endpoint in a run, made if new: a named entry while
    /// `max_endpoints` allows, else the run's overflow entry.
    fn entry_for(&mut self, run: usize, endpoint: u32, request: &RequestRecord<'_>) -> usize {
        if let Some(&index) = self.entries.get(&(run, endpoint)) {
            return index;
        }
        // An endpoint that would read as the `Aggregated` row goes to the overflow entry.
        let fits = request.name.len() <= MAX_NAME_BYTES
            && request.request_type.len() <= MAX_NAME_BYTES
            && !(request.request_type.is_empty() && request.name == AGGREGATED)
            && self.endpoints_kept < self.config.max_endpoints;
        let stats = self.runs.get_mut(&run).expect("made by the caller");
        if !fits {
            return stats.overflow_entry();
        }
        self.endpoints_kept += 1;
        stats.entries.push(Entry {
            request_type: request.request_type.to_string(),
            name: request.name.to_string(),
            overflow: false,
            stats: EndpointStats::default(),
        });
        let index = stats.entries.len() - 1;
        self.entries.insert((run, endpoint), index);
        index
    }

    fn error_type_id(&mut self, error_type: &str) -> u32 {
        let error_type = if error_type.is_empty()
            || error_type.len() > MAX_ERROR_TYPE_BYTES
            // Every series has one error type; more types than series cannot all be shown.
            || (self.error_types.len() >= self.config.max_series
                && !self.error_type_ids.contains_key(error_type))
        {
            UNKNOWN_ERROR_TYPE
        } else {
            error_type
        };
        if let Some(&id) = self.error_type_ids.get(error_type) {
            return id;
        }
        let id = self.error_types.len() as u32;
        self.error_types.push(error_type.to_owned());
        self.error_type_ids.insert(error_type.to_owned(), id);
        id
    }

    /// The series of a request: its own while `max_series` allows, else the run's overflow
    /// series (the overflow entry's requests always go there).
    fn series_for(
        &mut self,
        run: usize,
        entry: usize,
        error_type: Option<u32>,
        status_code: u16,
    ) -> usize {
        let key = (entry, error_type, status_code);
        let room = self.series_kept < self.config.max_series;
        let stats = self.runs.get_mut(&run).expect("made by the caller");
        if let Some(&index) = stats.series_index.get(&key) {
            return index;
        }
        if !room || stats.entries[entry].overflow {
            return stats.overflow_series();
        }
        self.series_kept += 1;
        stats.series.push(Series {
            entry,
            error_type,
            status_code,
            overflow: false,
            count: 0,
            sum_ns: 0,
            buckets: [0; BOUNDS_MS.len() + 1],
        });
        let index = stats.series.len() - 1;
        stats.series_index.insert(key, index);
        index
    }

    /// Whether requests are aggregated at all (`[request_metrics] enabled`).
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Counts one request of `run` to the interned `endpoint`, fired at `time`.
    pub fn record_request(
        &mut self,
        run: usize,
        endpoint: u32,
        request: &RequestRecord<'_>,
        time: f64,
    ) {
        if !self.config.enabled {
            return;
        }
        let Some(stats) = self.run(run) else {
            self.not_aggregated += 1;
            return;
        };
        stats.saw(time);
        // Locust counts a failure when `exception` is truthy: an exception object (whose
        // class the bridge sends) or a non-empty text.
        let failed = request.exception_type.is_some()
            || request
                .exception
                .as_deref()
                .is_some_and(|text| !text.is_empty());
        let response_time = request.response_time_ms;
        let rounded = bucket_response_time(response_time);
        stats
            .total
            .log(response_time, request.response_length, rounded, failed);
        let entry = self.entry_for(run, endpoint, request);
        let error_type = if failed {
            Some(self.error_type_id(request.exception_type.as_deref().unwrap_or("")))
        } else {
            None
        };
        let series = self.series_for(run, entry, error_type, request.status_code);
        let stats = self.runs.get_mut(&run).expect("made above");
        stats.entries[entry]
            .stats
            .log(response_time, request.response_length, rounded, failed);
        let series = &mut stats.series[series];
        series.count += 1;
        series.sum_ns = series.sum_ns.saturating_add(nanoseconds(response_time));
        // By the exact time, as an OpenTelemetry histogram (and Locust's --otel) records it.
        let bucket = BOUNDS_MS.partition_point(|&bound| (bound as f64) < response_time);
        series.buckets[bucket] += 1;
        self.changed = true;
    }

    /// Takes what other events say about users and resets: `spawning_complete` of a master
    /// or standalone node, `worker_report` on the master, `reset_stats` of a master or
    /// standalone node (Locust's `--reset-stats` clears the master's statistics).
    pub fn record_event(&mut self, run: usize, role: RoleName, event: &wit::Event, time: f64) {
        if !self.config.enabled {
            return;
        }
        let Some(stats) = self.run(run) else {
            return;
        };
        stats.saw(time);
        let leads = matches!(role, RoleName::Master | RoleName::Standalone);
        match event {
            wit::Event::SpawningComplete(users) if leads => {
                stats.spawned_users = Some(*users);
            }
            wit::Event::WorkerReport(report) if role == RoleName::Master => {
                if let Some(users) = stats.worker_users.get_mut(&report.client_id) {
                    *users = report.user_count;
                } else if stats.worker_users.len() < MAX_WORKERS_PER_RUN
                    && report.client_id.len() <= MAX_NAME_BYTES
                {
                    stats
                        .worker_users
                        .insert(report.client_id.clone(), report.user_count);
                }
            }
            wit::Event::ResetStats if leads => {
                for entry in &mut stats.entries {
                    entry.stats = EndpointStats::default();
                }
                stats.total = EndpointStats::default();
                for series in &mut stats.series {
                    series.count = 0;
                    series.sum_ns = 0;
                    series.buckets = [0; BOUNDS_MS.len() + 1];
                }
                // Cumulative sums start again: from the reset.
                stats.start_time = Some(time);
            }
            _ => return,
        }
        self.changed = true;
    }

    /// Every run's metrics now; rebuilt only when something changed since the last call.
    pub fn snapshot(&mut self, runs: &[RunContext]) -> Arc<Vec<RunMetrics>> {
        if self.changed {
            self.changed = false;
            let metrics = self
                .runs
                .iter()
                .filter(|(_, stats)| stats.total.num_requests > 0 || stats.users().is_some())
                .filter_map(|(&index, stats)| {
                    Some(RunMetrics {
                        run: runs.get(index)?.clone(),
                        start_time: stats.start_time.unwrap_or(stats.latest_time),
                        time: stats.latest_time,
                        scope: "swarmtel.requests",
                        metrics: self.run_metrics(stats),
                    })
                })
                .collect();
            self.snapshot = Arc::new(metrics);
        }
        self.snapshot.clone()
    }

    fn run_metrics(&self, stats: &RunStats) -> Vec<Metric> {
        let endpoint_attributes = |entry: &Entry| -> Vec<(Cow<'static, str>, AttributeValue)> {
            if entry.overflow {
                vec![("otel.metric.overflow".into(), AttributeValue::from("true"))]
            } else if entry.request_type.is_empty() {
                vec![("name".into(), AttributeValue::from(entry.name.clone()))]
            } else {
                vec![
                    ("name".into(), AttributeValue::from(entry.name.clone())),
                    (
                        "http.request.method".into(),
                        AttributeValue::from(entry.request_type.clone()),
                    ),
                ]
            }
        };
        let duration = stats
            .series
            .iter()
            .map(|series| {
                let mut attributes = if series.overflow {
                    vec![("otel.metric.overflow".into(), AttributeValue::from("true"))]
                } else {
                    endpoint_attributes(&stats.entries[series.entry])
                };
                if !series.overflow {
                    if let Some(error_type) = series.error_type {
                        attributes.push((
                            "error.type".into(),
                            AttributeValue::from(self.error_types[error_type as usize].clone()),
                        ));
                    }
                    if series.status_code != 0 {
                        attributes.push((
                            "http.response.status_code".into(),
                            AttributeValue::Int(i64::from(series.status_code)),
                        ));
                    }
                }
                Point {
                    attributes,
                    value: PointValue::Histogram(HistogramPoint {
                        count: series.count,
                        sum: series.sum_ns as f64 / 1e9,
                        bounds: &BOUNDS_SECONDS,
                        bucket_counts: series.buckets.to_vec(),
                    }),
                }
            })
            .collect();
        let mut percentiles = Vec::new();
        let rows = stats
            .entries
            .iter()
            .map(|entry| (endpoint_attributes(entry), &entry.stats))
            .chain(std::iter::once((
                vec![("name".into(), AttributeValue::from(AGGREGATED))],
                &stats.total,
            )));
        for (attributes, entry_stats) in rows {
            if entry_stats.num_requests == 0 {
                continue;
            }
            for percent in PERCENTILES {
                let mut attributes = attributes.clone();
                attributes.push(("quantile".into(), AttributeValue::from(percent.to_string())));
                percentiles.push(Point {
                    attributes,
                    value: PointValue::Gauge(entry_stats.percentile(percent) as f64 / 1000.0),
                });
            }
        }
        let mut metrics = vec![
            Metric {
                name: "locust.client.duration".into(),
                unit: "s".into(),
                kind: MetricKind::Histogram,
                description: "Time to last byte for requests, per endpoint, error type and status.".into(),
                points: duration,
            },
            Metric {
                name: "locust.client.duration.percentile".into(),
                unit: "s".into(),
                kind: MetricKind::Gauge,
                description: "Locust's response-time percentiles over every worker, per endpoint and Aggregated.".into(),
                points: percentiles,
            },
        ];
        if let Some(users) = stats.users() {
            metrics.push(Metric {
                name: "locust.users.count".into(),
                unit: "".into(),
                kind: MetricKind::Gauge,
                description: "Number of currently running Locust users.".into(),
                points: vec![Point {
                    attributes: Vec::new(),
                    value: PointValue::Gauge(users as f64),
                }],
            });
        }
        metrics
    }

    /// The `REQUEST_SUMMARY` records of every run: one per endpoint and one `Aggregated`,
    /// as (run index, message, fields).
    pub fn summaries(&self) -> Vec<(usize, String, Value)> {
        let mut records = Vec::new();
        for (&run, stats) in &self.runs {
            if stats.total.num_requests == 0 {
                continue;
            }
            for (index, entry) in stats.entries.iter().enumerate() {
                let (request_type, name) = if entry.overflow {
                    ("", "otel.metric.overflow")
                } else {
                    (entry.request_type.as_str(), entry.name.as_str())
                };
                let mut fields = entry.stats.summary_fields(request_type, name);
                let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
                for series in stats
                    .series
                    .iter()
                    .filter(|series| !series.overflow && series.entry == index)
                {
                    if let Some(error_type) = series.error_type {
                        *errors
                            .entry(self.error_types[error_type as usize].as_str())
                            .or_default() += series.count;
                    }
                }
                if !errors.is_empty() {
                    fields.insert("errors".into(), json!(errors));
                }
                records.push(summary_record(
                    run,
                    &format!("{request_type} {name}"),
                    &entry.stats,
                    fields,
                ));
            }
            let fields = stats.total.summary_fields("", AGGREGATED);
            records.push(summary_record(run, AGGREGATED, &stats.total, fields));
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// Inputs and what Locust 2.47's `locust.stats.bucket_response_time` returns for them
    /// (printed by that function; ties round to even, as Python's `round` does).
    const LOCUST_ROUNDING: [(f64, u64); 31] = [
        (0.0, 0),
        (0.4999999999999999, 0),
        (0.5, 0),
        (1.5, 2),
        (2.5, 2),
        (99.49999999999999, 99),
        (99.5, 100),
        (100.0, 100),
        (104.99999999999999, 100),
        (105.0, 100),
        (115.0, 120),
        (125.0, 120),
        (145.00000000000003, 150),
        (994.9999999999999, 990),
        (995.0, 1000),
        (999.9, 1000),
        (1050.0, 1000),
        (1150.0, 1200),
        (1250.0, 1200),
        (9949.0, 9900),
        (9950.0, 10000),
        (9999.0, 10000),
        (10500.0, 10000),
        (11500.0, 12000),
        (12500.0, 12000),
        (58760.0, 59000),
        (3432.0, 3400),
        (147.0, 150),
        (0.30000000000000004, 0),
        (1234.5678, 1200),
        (1000000500.0, 1000000000),
    ];

    #[test]
    fn rounding_is_locusts_ties_to_even_included() {
        for (input, locust) in LOCUST_ROUNDING {
            assert_eq!(bucket_response_time(input), locust, "{input}");
        }
    }

    #[test]
    fn percentiles_are_locusts() {
        // (response times, requests, Locust's p50, p95, p99), printed by Locust 2.47's
        // `calculate_response_time_percentile`.
        type Case = (&'static [(u64, u64)], u64, [u64; 3]);
        let cases: [Case; 6] = [
            (&[(10, 5), (20, 3), (100, 2)], 10, [20, 100, 100]),
            (&[(1, 1)], 1, [1, 1, 1]),
            (&[(5, 99), (1000, 1)], 100, [5, 5, 1000]),
            (&[(5, 98), (1000, 2)], 100, [5, 5, 1000]),
            (&[], 0, [0, 0, 0]),
            (&[(7, 3), (8, 4), (9, 3)], 10, [8, 9, 9]),
        ];
        for (times, requests, expected) in cases {
            let times: BTreeMap<u64, u64> = times.iter().copied().collect();
            let got = PERCENTILES.map(|p| response_time_percentile(&times, requests, p));
            assert_eq!(got, expected, "{times:?}");
        }
    }

    fn request<'a>(
        method: &'a str,
        name: &'a str,
        ms: f64,
        error: Option<&'a str>,
        status: u16,
    ) -> RequestRecord<'a> {
        RequestRecord {
            request_type: Cow::Borrowed(method),
            name: Cow::Borrowed(name),
            response_time_ms: ms,
            response_length: 100,
            start_time: 1.0,
            status_code: status,
            exception: error.map(|_| Cow::Borrowed("boom")),
            exception_type: error.map(Cow::Borrowed),
            url: None,
            context: None,
        }
    }

    fn runs() -> Vec<RunContext> {
        vec![RunContext {
            run_id: "r1".into(),
            testplan: "plan".into(),
        }]
    }

    fn metric<'a>(snapshot: &'a [RunMetrics], name: &str) -> &'a Metric {
        snapshot[0]
            .metrics
            .iter()
            .find(|metric| metric.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    fn attribute<'a>(point: &'a Point, key: &str) -> Option<&'a str> {
        point
            .attributes
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| match v {
                AttributeValue::Text(text) => Some(text.as_ref()),
                AttributeValue::Int(_) | AttributeValue::Bool(_) => None,
            })
    }

    #[test]
    fn endpoints_errors_and_statuses_become_series_and_percentiles() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
        for ms in [4.0, 6.0, 120.0, 147.0] {
            metrics.record_request(0, 0, &request("GET", "/a", ms, None, 200), 1.0);
        }
        metrics.record_request(
            0,
            0,
            &request("GET", "/a", 30.0, Some("HTTPError"), 500),
            1.0,
        );
        metrics.record_request(0, 1, &request("POST", "/b", 2500.0, None, 201), 1.0);
        let snapshot = metrics.snapshot(&runs());
        let duration = metric(&snapshot, "locust.client.duration");
        assert_eq!(duration.points.len(), 3);
        let ok = &duration.points[0];
        assert_eq!(attribute(ok, "name"), Some("/a"));
        assert_eq!(attribute(ok, "http.request.method"), Some("GET"));
        assert_eq!(attribute(ok, "error.type"), None);
        assert!(
            ok.attributes
                .contains(&("http.response.status_code".into(), AttributeValue::Int(200))),
            "{:?}",
            ok.attributes
        );
        let PointValue::Histogram(histogram) = &ok.value else {
            panic!("a histogram")
        };
        assert_eq!(histogram.count, 4);
        assert!((histogram.sum - 0.277).abs() < 1e-12);
        // 4 → le 5 ms, 6 → le 10 ms, 120 and 147 (150 rounded) → le 250 ms.
        let mut expected = vec![0u64; BOUNDS_SECONDS.len() + 1];
        expected[1] = 1;
        expected[2] = 1;
        expected[7] = 2;
        assert_eq!(histogram.bucket_counts, expected);
        let failed = &duration.points[1];
        assert_eq!(attribute(failed, "error.type"), Some("HTTPError"));
        assert!(
            failed
                .attributes
                .contains(&("http.response.status_code".into(), AttributeValue::Int(500)))
        );

        let percentiles = metric(&snapshot, "locust.client.duration.percentile");
        let value = |name: &str, quantile: &str| {
            percentiles
                .points
                .iter()
                .find(|p| {
                    attribute(p, "name") == Some(name) && attribute(p, "quantile") == Some(quantile)
                })
                .map(|p| p.value.clone())
        };
        // /a: 4, 6, 30, 120, 150 → median 30 ms; p95 and p99 150 ms.
        assert_eq!(value("/a", "0.5"), Some(PointValue::Gauge(0.03)));
        assert_eq!(value("/a", "0.95"), Some(PointValue::Gauge(0.15)));
        assert_eq!(value("/b", "0.99"), Some(PointValue::Gauge(2.5)));
        // Aggregated: 4, 6, 30, 120, 150, 2500.
        assert_eq!(value(AGGREGATED, "0.5"), Some(PointValue::Gauge(0.12)));
        assert_eq!(value(AGGREGATED, "0.99"), Some(PointValue::Gauge(2.5)));

        let summaries = metrics.summaries();
        assert_eq!(summaries.len(), 3);
        let a = &summaries[0].2;
        assert_eq!(a["num_requests"], 5);
        assert_eq!(a["num_failures"], 1);
        assert_eq!(a["response_time_percentile_0.5"], 30);
        assert_eq!(a["errors"], json!({"HTTPError": 1}));
        assert_eq!(summaries[2].2["name"], AGGREGATED);
        assert_eq!(summaries[2].2["num_requests"], 6);
    }

    #[test]
    fn workers_merge_to_the_percentiles_of_one_stream() {
        // The same requests split over two runs' worth of nodes merge exactly: rounded
        // times add up.
        let times: Vec<f64> = (0..997).map(|i| (i * 37 % 1013) as f64 * 3.3).collect();
        let mut one = RequestMetrics::new(RequestMetricsConfig::default());
        let mut merged = BTreeMap::new();
        for &ms in &times {
            one.record_request(0, 0, &request("GET", "/x", ms, None, 200), 1.0);
            *merged.entry(bucket_response_time(ms)).or_insert(0u64) += 1;
        }
        let snapshot = one.snapshot(&runs());
        let percentiles = metric(&snapshot, "locust.client.duration.percentile");
        for (point, percent) in percentiles.points.iter().zip(PERCENTILES) {
            let expected = response_time_percentile(&merged, times.len() as u64, percent);
            assert_eq!(point.value, PointValue::Gauge(expected as f64 / 1000.0));
        }
    }

    #[test]
    fn endpoints_past_the_cap_are_counted_in_the_overflow_entry() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig {
            max_endpoints: 3,
            ..RequestMetricsConfig::default()
        });
        for endpoint in 0..10u32 {
            let name = format!("/e{endpoint}");
            metrics.record_request(0, endpoint, &request("GET", &name, 1.0, None, 200), 1.0);
        }
        let summaries = metrics.summaries();
        let names: Vec<&str> = summaries
            .iter()
            .map(|(_, _, fields)| fields["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["/e0", "/e1", "/e2", "otel.metric.overflow", AGGREGATED]
        );
        assert_eq!(summaries[3].2["num_requests"], 7);
        assert_eq!(summaries[4].2["num_requests"], 10);
        // Another run still counts everything: in its overflow entry and its Aggregated.
        metrics.record_request(1, 0, &request("GET", "/e0", 1.0, None, 200), 1.0);
        let second: Vec<_> = metrics
            .summaries()
            .into_iter()
            .filter(|(run, _, _)| *run == 1)
            .map(|(_, _, fields)| (fields["name"].clone(), fields["num_requests"].clone()))
            .collect();
        assert_eq!(
            second,
            [
                (json!("otel.metric.overflow"), json!(1)),
                (json!(AGGREGATED), json!(1))
            ]
        );
        // A name past MAX_NAME_BYTES goes to the overflow entry even below the cap.
        let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        metrics.record_request(0, 0, &request("GET", &long, 1.0, None, 200), 1.0);
        assert_eq!(metrics.summaries()[0].2["name"], "otel.metric.overflow");
    }

    #[test]
    fn runs_past_the_cap_are_counted_not_aggregated() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
        for run in 0..=MAX_RUNS {
            metrics.record_request(run, 0, &request("GET", "/a", 1.0, None, 200), 1.0);
        }
        assert_eq!(metrics.runs.len(), MAX_RUNS);
        assert_eq!(metrics.not_aggregated(), 1);
        // A run already kept goes on being aggregated.
        metrics.record_request(0, 0, &request("GET", "/a", 1.0, None, 200), 1.0);
        assert_eq!(metrics.not_aggregated(), 1);
    }

    #[test]
    fn every_series_has_its_own_attributes_even_past_the_caps() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig {
            max_endpoints: 1,
            max_series: 1,
            ..RequestMetricsConfig::default()
        });
        metrics.record_request(0, 0, &request("GET", "/a", 1.0, None, 200), 1.0);
        metrics.record_request(0, 1, &request("GET", "/b", 1.0, None, 0), 1.0);
        metrics.record_request(0, 0, &request("GET", "/a", 1.0, Some("E"), 500), 1.0);
        metrics.record_request(0, 2, &request("GET", "/c", 1.0, Some("F"), 0), 1.0);
        let snapshot = metrics.snapshot(&runs());
        for metric in &snapshot[0].metrics {
            let mut seen = std::collections::HashSet::new();
            for point in &metric.points {
                assert!(
                    seen.insert(point.attributes.clone()),
                    "{} has {:?} twice",
                    metric.name,
                    point.attributes
                );
            }
        }
        let duration = metric(&snapshot, "locust.client.duration");
        let counts: Vec<u64> = duration
            .points
            .iter()
            .map(|p| match &p.value {
                PointValue::Histogram(h) => h.count,
                _ => 0,
            })
            .collect();
        assert_eq!(counts, [1, 3], "/a 200, then the overflow series");
    }

    #[test]
    fn series_past_the_cap_go_to_the_overflow_series_and_error_types_are_bounded() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig {
            max_series: 2,
            ..RequestMetricsConfig::default()
        });
        for status in [200, 201, 202, 203] {
            metrics.record_request(0, 0, &request("GET", "/a", 1.0, None, status), 1.0);
        }
        let too_long = "E".repeat(MAX_ERROR_TYPE_BYTES + 1);
        metrics.record_request(0, 0, &request("GET", "/a", 1.0, Some(&too_long), 500), 1.0);
        let snapshot = metrics.snapshot(&runs());
        let duration = metric(&snapshot, "locust.client.duration");
        // Two series, then one overflow series with the other three requests.
        assert_eq!(duration.points.len(), 3);
        let overflow = &duration.points[2];
        assert_eq!(attribute(overflow, "otel.metric.overflow"), Some("true"));
        let PointValue::Histogram(histogram) = &overflow.value else {
            panic!("a histogram")
        };
        assert_eq!(histogram.count, 3);
        assert_eq!(metrics.error_types, [UNKNOWN_ERROR_TYPE]);
    }

    #[test]
    fn distinct_times_per_endpoint_are_capped_and_marked_inexact() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
        let extra = 10;
        for second in 0..(MAX_TIMES_PER_ENDPOINT + extra) {
            // One distinct rounded time per second above 10 s.
            let ms = 10_000.0 + 1000.0 * second as f64;
            metrics.record_request(0, 0, &request("GET", "/slow", ms, None, 200), 1.0);
        }
        let summary = &metrics.summaries()[0].2;
        assert_eq!(summary["inexact_requests"], extra);
        assert_eq!(
            metrics.runs[&0].entries[0].stats.response_times.above.len(),
            MAX_TIMES_PER_ENDPOINT
        );
    }

    #[test]
    fn users_come_from_worker_reports_and_reset_stats_clears() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
        let report = |client: &str, users| {
            wit::Event::WorkerReport(wit::WorkerReport {
                client_id: client.into(),
                user_count: users,
            })
        };
        metrics.record_event(0, RoleName::Master, &wit::Event::SpawningComplete(9), 1.0);
        metrics.record_event(0, RoleName::Master, &report("w1", 3), 1.0);
        metrics.record_event(0, RoleName::Master, &report("w2", 4), 1.0);
        metrics.record_event(0, RoleName::Master, &report("w1", 5), 1.0);
        // A worker's own spawning_complete is its share, not the run's.
        metrics.record_event(0, RoleName::Worker, &wit::Event::SpawningComplete(1), 1.0);
        let snapshot = metrics.snapshot(&runs());
        assert_eq!(
            metric(&snapshot, "locust.users.count").points[0].value,
            PointValue::Gauge(9.0)
        );
        metrics.record_request(0, 0, &request("GET", "/a", 1.0, None, 200), 1.0);
        metrics.record_event(0, RoleName::Worker, &wit::Event::ResetStats, 1.0);
        assert_eq!(metrics.summaries()[0].2["num_requests"], 1);
        metrics.record_event(0, RoleName::Master, &wit::Event::ResetStats, 1.0);
        assert!(metrics.summaries().is_empty());
    }

    #[test]
    fn worker_user_counts_are_bounded() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
        for worker in 0..MAX_WORKERS_PER_RUN + 5 {
            let report = wit::Event::WorkerReport(wit::WorkerReport {
                client_id: format!("w{worker}"),
                user_count: 1,
            });
            metrics.record_event(0, RoleName::Master, &report, 1.0);
        }
        let long = wit::Event::WorkerReport(wit::WorkerReport {
            client_id: "w".repeat(MAX_NAME_BYTES + 1),
            user_count: 1,
        });
        let mut other = RequestMetrics::new(RequestMetricsConfig::default());
        other.record_event(0, RoleName::Master, &long, 1.0);
        assert_eq!(metrics.runs[&0].worker_users.len(), MAX_WORKERS_PER_RUN);
        assert_eq!(metrics.runs[&0].users(), Some(MAX_WORKERS_PER_RUN as u64));
        assert_eq!(other.runs[&0].users(), None);
    }

    #[test]
    fn error_types_past_the_series_cap_read_other() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig {
            max_series: 2,
            ..RequestMetricsConfig::default()
        });
        for error in ["A", "B", "C", "A"] {
            metrics.record_request(0, 0, &request("GET", "/a", 1.0, Some(error), 500), 1.0);
        }
        assert_eq!(metrics.error_types, ["A", "B", UNKNOWN_ERROR_TYPE]);
    }

    #[test]
    fn the_start_time_is_the_first_event_and_moves_only_at_a_reset() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
        metrics.record_request(0, 0, &request("GET", "/a", 1.0, None, 200), 100.0);
        // A worker's older event, arriving late, does not move the start back.
        metrics.record_request(0, 0, &request("GET", "/a", 1.0, None, 200), 90.0);
        let snapshot = metrics.snapshot(&runs());
        assert_eq!((snapshot[0].start_time, snapshot[0].time), (100.0, 100.0));
        metrics.record_event(0, RoleName::Master, &wit::Event::ResetStats, 120.0);
        metrics.record_request(0, 0, &request("GET", "/a", 1.0, None, 200), 121.0);
        let snapshot = metrics.snapshot(&runs());
        assert_eq!((snapshot[0].start_time, snapshot[0].time), (120.0, 121.0));
    }

    #[test]
    fn failures_are_what_locust_counts_and_buckets_take_the_exact_time() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
        let mut empty_text = request("GET", "/a", 5.4, None, 200);
        empty_text.exception = Some(Cow::Borrowed(""));
        metrics.record_request(0, 0, &empty_text, 1.0);
        let mut no_text = request("GET", "/a", 5.4, None, 500);
        no_text.exception_type = Some(Cow::Borrowed("Exception"));
        metrics.record_request(0, 0, &no_text, 1.0);
        let summary = &metrics.summaries()[0].2;
        assert_eq!(summary["num_failures"], 1, "{summary}");
        assert_eq!(summary["errors"], json!({"Exception": 1}));
        let snapshot = metrics.snapshot(&runs());
        let PointValue::Histogram(histogram) =
            &metric(&snapshot, "locust.client.duration").points[0].value
        else {
            panic!("a histogram")
        };
        // 5.4 ms rounds to 5 for the percentiles, but is above the 5 ms bound.
        assert_eq!(histogram.bucket_counts[1..3], [0, 1]);
    }

    #[test]
    fn the_grid_of_times_below_10_s_gives_the_percentiles_of_a_plain_map() {
        for slot in 0..GRID_SLOTS {
            assert_eq!(grid_slot(grid_time(slot)), slot);
        }
        let mut times = ResponseTimes::default();
        let mut map = BTreeMap::new();
        let mut requests = 0;
        // Every rounded value below 10 s and some above, in a scrambled order.
        for i in 0..30_000u64 {
            let ms = ((i * 7919) % 25_000) as f64 * 0.9 + (i % 7) as f64 * 0.013;
            let rounded = bucket_response_time(ms);
            assert!(times.add(rounded));
            *map.entry(rounded).or_insert(0u64) += 1;
            requests += 1;
        }
        for percent in [0.0, 0.01, 0.5, 0.66, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                percentile_of_descending(times.descending(), requests, percent),
                response_time_percentile(&map, requests, percent),
                "{percent}"
            );
        }
        let listed: Vec<(u64, u64)> = times.descending().collect();
        let expected: Vec<(u64, u64)> = map.iter().rev().map(|(&k, &v)| (k, v)).collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn an_endpoint_named_like_the_aggregated_row_is_not_that_row() {
        let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
        metrics.record_request(0, 0, &request("", AGGREGATED, 1.0, None, 200), 1.0);
        metrics.record_request(0, 1, &request("GET", AGGREGATED, 1.0, None, 200), 1.0);
        let snapshot = metrics.snapshot(&runs());
        let percentiles = metric(&snapshot, "locust.client.duration.percentile");
        let mut seen = std::collections::HashSet::new();
        for point in &percentiles.points {
            assert!(
                seen.insert(point.attributes.clone()),
                "{:?}",
                point.attributes
            );
        }
        let names: Vec<String> = metrics
            .summaries()
            .iter()
            .map(|(_, _, fields)| format!("{} {}", fields["request_type"], fields["name"]))
            .collect();
        assert_eq!(
            names,
            [
                "\"\" \"otel.metric.overflow\"",
                "\"GET\" \"Aggregated\"",
                "\"\" \"Aggregated\""
            ]
        );
    }
}
