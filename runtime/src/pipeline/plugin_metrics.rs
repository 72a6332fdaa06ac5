//! Metric points from plugins (contract 0.2.0): each point checked, the series a plugin may
//! create capped, and points merged over calls, recorders and nodes into one series per run,
//! name and attributes; then handed to the metrics outputs beside the built-in request
//! metrics.
//!
//! A name is a family: the first plugin to report it owns it, and its first point fixes its
//! kind, unit and description. Counters add up increments, gauges keep the last value, and
//! response-time histograms merge Locust's rounded buckets into the bucket bounds of
//! `locust.client.duration`, so every node's points merge exactly.
//!
//! What a plugin can make the host keep is bounded: at most `max_metric_series` series per
//! plugin (over its life in this process, every run included), each a fixed-size value plus
//! at most [`MAX_ATTRIBUTES`] attributes of bounded size; a family is created only with its
//! first series, so there are never more families than series.
//!
//! A series is what Prometheus sees: attribute keys as Prometheus spells them and values as
//! text, so `{code: 200}` and `{code: "200"}` are one series (it keeps the first point's
//! types), and an empty text value is no attribute at all.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::enrich::RunContext;
use super::metrics::{
    AttributeValue, HistogramPoint, Metric, MetricKind, Point, PointValue, RunMetrics,
};
use super::request_metrics::{BOUNDS_MS, BOUNDS_SECONDS, bucket_response_time};
use crate::bindings::types as wit;
use crate::config::Limits;
use crate::sinks::prometheus::exposition::{prometheus_name, prometheus_unit};

/// Longest metric name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest unit, in bytes.
pub const MAX_UNIT_BYTES: usize = 32;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 512;
/// Most attributes on one point.
pub const MAX_ATTRIBUTES: usize = 16;
/// Longest attribute key, in bytes.
pub const MAX_KEY_BYTES: usize = 64;
/// Longest text attribute value, in bytes.
pub const MAX_TEXT_VALUE_BYTES: usize = 256;
/// Most buckets in one response-times point.
pub const MAX_BUCKETS: usize = 1024;

/// Attribute keys the outputs use themselves: run labels, and Prometheus's bucket and
/// quantile labels. Keys starting `__` are Prometheus's own too.
const RESERVED_KEYS: [&str; 4] = ["run_id", "testplan", "le", "quantile"];

/// The built-in metrics' names; no plugin may report under them.
const BUILT_IN_NAMES: [&str; 3] = [
    "locust.client.duration",
    "locust.client.duration.percentile",
    "locust.users.count",
];

/// What the built-in metrics export under, in Prometheus's spelling; no plugin family may
/// export a sample under one of these.
const BUILT_IN_SAMPLES: [&str; 6] = [
    "locust_client_duration_seconds",
    "locust_client_duration_seconds_bucket",
    "locust_client_duration_seconds_sum",
    "locust_client_duration_seconds_count",
    "locust_client_duration_percentile_seconds",
    "locust_users_count",
];

/// A rejected point: the reason it is counted under, and what was wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `metric_invalid`, `metric_name_taken`, `metric_kind_mismatch`, `metric_series_cap` or
    /// `metric_call_cap`.
    pub reason: &'static str,
    /// What was wrong, naming the metric.
    pub message: String,
}

impl Rejection {
    fn invalid(name: &str, message: impl std::fmt::Display) -> Self {
        Self {
            reason: "metric_invalid",
            message: format!("metric {}: {message}", shown_name(name)),
        }
    }
}

/// A name as it may appear in a message: escaped and cut.
fn shown_name(name: &str) -> String {
    let cut: String = name.chars().take(MAX_NAME_BYTES).collect();
    format!("{cut:?}")
}

/// One metric family: who owns it and what its points are.
struct Family {
    owner: usize,
    name: String,
    unit: String,
    description: String,
    kind: MetricKind,
}

/// A point's attributes with their types, sorted by key as Prometheus spells it.
type Attributes = Vec<(String, AttributeValue)>;

/// What tells series apart: each key as Prometheus spells it, with its value as text.
type SeriesKey = Vec<(String, String)>;

/// One series: the attributes of its first point, and its merged value.
struct Series {
    attributes: Attributes,
    value: SeriesValue,
}

/// A series' merged value.
#[derive(Debug, Clone, PartialEq)]
enum SeriesValue {
    Counter(u64),
    Gauge(f64),
    Histogram {
        count: u64,
        sum_ms: f64,
        buckets: [u64; BOUNDS_MS.len() + 1],
    },
}

/// Every plugin series of one run.
struct RunSeries {
    /// The time of the run's first point: the start of its sums, never moved once set.
    start_time: f64,
    time: f64,
    /// By family index, then series key.
    families: BTreeMap<usize, HashMap<SeriesKey, Series>>,
}

/// Plugins' metric series over every run.
#[derive(Default)]
pub struct PluginMetrics {
    families: Vec<Family>,
    /// Family index by metric name.
    by_name: HashMap<String, usize>,
    /// Family index by every sample name it exports in Prometheus's spelling.
    samples: HashMap<String, usize>,
    /// Series created, by plugin index.
    series_of: HashMap<usize, usize>,
    runs: BTreeMap<usize, RunSeries>,
    changed: bool,
    snapshot: Arc<Vec<RunMetrics>>,
}

impl PluginMetrics {
    /// Nothing recorded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the points one call of plugin `plugin` returned for run `run` at event time
    /// `time`; returns the rejected ones. Points past `limits.max_points_per_call` and new
    /// series past `limits.max_metric_series` are rejected.
    pub fn record(
        &mut self,
        plugin: usize,
        run: usize,
        time: f64,
        points: Vec<wit::MetricPoint>,
        limits: &Limits,
    ) -> Vec<Rejection> {
        let mut rejections = Vec::new();
        for (index, point) in points.into_iter().enumerate() {
            if index >= limits.max_points_per_call {
                rejections.push(Rejection {
                    reason: "metric_call_cap",
                    message: format!(
                        "metric {}: more than {} points in one call (max_points_per_call)",
                        shown_name(&point.name),
                        limits.max_points_per_call
                    ),
                });
                continue;
            }
            if let Err(rejection) = self.record_point(plugin, run, time, point, limits) {
                rejections.push(rejection);
            }
        }
        rejections
    }

    fn record_point(
        &mut self,
        plugin: usize,
        run: usize,
        time: f64,
        mut point: wit::MetricPoint,
        limits: &Limits,
    ) -> Result<(), Rejection> {
        check_point(&point)?;
        let kind = kind_of(&point.value);
        let known_family = self.known_family(plugin, &point, kind)?;
        let attributes = attributes(std::mem::take(&mut point.attributes));
        let key: SeriesKey = attributes
            .iter()
            .map(|(key, value)| (prometheus_name(key), value.as_text().into_owned()))
            .collect();
        let known_series = known_family.is_some_and(|family| {
            self.runs
                .get(&run)
                .and_then(|series| series.families.get(&family))
                .is_some_and(|series| series.contains_key(&key))
        });
        // The cap comes before anything is kept for a new series, its family included.
        let created = self.series_of.get(&plugin).copied().unwrap_or(0);
        if !known_series && created >= limits.max_metric_series {
            return Err(Rejection {
                reason: "metric_series_cap",
                message: format!(
                    "metric {}: a new series past the plugin's {} (max_metric_series)",
                    shown_name(&point.name),
                    limits.max_metric_series
                ),
            });
        }
        let family = match known_family {
            Some(family) => family,
            None => self.new_family(plugin, &point, kind)?,
        };
        if !known_series {
            self.series_of.insert(plugin, created + 1);
        }
        let run_series = self.runs.entry(run).or_insert_with(|| RunSeries {
            start_time: time,
            time,
            families: BTreeMap::new(),
        });
        let series = run_series
            .families
            .entry(family)
            .or_default()
            .entry(key)
            .or_insert_with(|| Series {
                attributes,
                value: match kind {
                    MetricKind::Counter => SeriesValue::Counter(0),
                    MetricKind::Gauge => SeriesValue::Gauge(0.0),
                    MetricKind::Histogram => SeriesValue::Histogram {
                        count: 0,
                        sum_ms: 0.0,
                        buckets: [0; BOUNDS_MS.len() + 1],
                    },
                },
            });
        merge(&mut series.value, point.value);
        run_series.time = run_series.time.max(time);
        self.changed = true;
        Ok(())
    }

    /// The family of `point`'s name if it has one; refused when another plugin owns the
    /// name or the kind differs.
    fn known_family(
        &self,
        plugin: usize,
        point: &wit::MetricPoint,
        kind: MetricKind,
    ) -> Result<Option<usize>, Rejection> {
        let Some(&index) = self.by_name.get(&point.name) else {
            return Ok(None);
        };
        let family = &self.families[index];
        if family.owner != plugin {
            return Err(Rejection {
                reason: "metric_name_taken",
                message: format!(
                    "metric {}: the name belongs to another plugin",
                    shown_name(&point.name)
                ),
            });
        }
        if family.kind != kind {
            return Err(Rejection {
                reason: "metric_kind_mismatch",
                message: format!(
                    "metric {}: a {} point for a {} metric",
                    shown_name(&point.name),
                    kind_name(kind),
                    kind_name(family.kind)
                ),
            });
        }
        Ok(Some(index))
    }

    /// A new family for `point`'s name (which has none), refused when the name would export
    /// a sample another family (or a built-in metric) exports.
    fn new_family(
        &mut self,
        plugin: usize,
        point: &wit::MetricPoint,
        kind: MetricKind,
    ) -> Result<usize, Rejection> {
        let unit = if kind == MetricKind::Histogram {
            "s"
        } else {
            &point.unit
        };
        let samples = sample_names(&point.name, unit, kind);
        if let Some(clash) = samples.iter().find(|sample| {
            BUILT_IN_SAMPLES.contains(&sample.as_str()) || self.samples.contains_key(*sample)
        }) {
            return Err(Rejection {
                reason: "metric_name_taken",
                message: format!(
                    "metric {}: exports `{clash}`, which another metric exports",
                    shown_name(&point.name)
                ),
            });
        }
        let index = self.families.len();
        self.families.push(Family {
            owner: plugin,
            name: point.name.clone(),
            unit: unit.to_owned(),
            description: point.description.clone(),
            kind,
        });
        self.by_name.insert(point.name.clone(), index);
        for sample in samples {
            self.samples.insert(sample, index);
        }
        Ok(index)
    }

    /// Every run's plugin metrics, rebuilt only when a point arrived since the last call.
    pub fn snapshot(&mut self, runs: &[RunContext]) -> Arc<Vec<RunMetrics>> {
        if self.changed {
            self.changed = false;
            let snapshot = self
                .runs
                .iter()
                .filter_map(|(&index, series)| {
                    Some(RunMetrics {
                        run: runs.get(index)?.clone(),
                        start_time: series.start_time,
                        time: series.time,
                        scope: "swarmtel.plugins",
                        metrics: series
                            .families
                            .iter()
                            .map(|(&family, points)| self.metric(family, points))
                            .collect(),
                    })
                })
                .collect();
            self.snapshot = Arc::new(snapshot);
        }
        self.snapshot.clone()
    }

    fn metric(&self, family: usize, series: &HashMap<SeriesKey, Series>) -> Metric {
        let family = &self.families[family];
        let mut points: Vec<(&SeriesKey, Point)> = series
            .iter()
            .map(|(key, series)| {
                let point = Point {
                    attributes: series
                        .attributes
                        .iter()
                        .map(|(key, value)| (Cow::Owned(key.clone()), value.clone()))
                        .collect(),
                    value: match &series.value {
                        SeriesValue::Counter(total) => PointValue::Counter(*total),
                        SeriesValue::Gauge(value) => PointValue::Gauge(*value),
                        SeriesValue::Histogram {
                            count,
                            sum_ms,
                            buckets,
                        } => PointValue::Histogram(HistogramPoint {
                            count: *count,
                            sum: sum_ms / 1000.0,
                            bounds: &BOUNDS_SECONDS,
                            bucket_counts: buckets.to_vec(),
                        }),
                    },
                };
                (key, point)
            })
            .collect();
        // A stable order for the outputs: by series key.
        points.sort_by(|a, b| a.0.cmp(b.0));
        let points = points.into_iter().map(|(_, point)| point).collect();
        Metric {
            name: Cow::Owned(family.name.clone()),
            unit: Cow::Owned(family.unit.clone()),
            description: Cow::Owned(family.description.clone()),
            kind: family.kind,
            points,
        }
    }
}

fn kind_of(value: &wit::MetricValue) -> MetricKind {
    match value {
        wit::MetricValue::Counter(_) => MetricKind::Counter,
        wit::MetricValue::Gauge(_) => MetricKind::Gauge,
        wit::MetricValue::ResponseTimes(_) => MetricKind::Histogram,
    }
}

fn kind_name(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "response-times",
    }
}

/// Every sample name a family exports in Prometheus: its name with the unit's suffix, and
/// the suffixes of its kind.
fn sample_names(name: &str, unit: &str, kind: MetricKind) -> Vec<String> {
    let mut family = prometheus_name(name);
    if let Some(unit) = prometheus_unit(unit) {
        family.push('_');
        family.push_str(&unit);
    }
    let suffixes: &[&str] = match kind {
        MetricKind::Counter => &["", "_total"],
        MetricKind::Gauge => &[""],
        MetricKind::Histogram => &["", "_bucket", "_sum", "_count"],
    };
    suffixes
        .iter()
        .map(|suffix| format!("{family}{suffix}"))
        .collect()
}

/// Checks one point against the contract's rules.
fn check_point(point: &wit::MetricPoint) -> Result<(), Rejection> {
    let name = &point.name;
    let invalid = |message: String| Err(Rejection::invalid(name, message));
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return invalid(format!("the name must be 1 to {MAX_NAME_BYTES} bytes"));
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase())
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    {
        return invalid(
            "the name must be lower-case letters, digits, `_` and `.`, starting with a letter"
                .into(),
        );
    }
    if name.starts_with("swarmtel") {
        return invalid("names starting `swarmtel` are the runtime's own".into());
    }
    if BUILT_IN_NAMES.contains(&name.as_str()) {
        return invalid("the name is a built-in metric's".into());
    }
    if point.unit.len() > MAX_UNIT_BYTES || !point.unit.chars().all(|c| c.is_ascii_graphic()) {
        return invalid(format!(
            "the unit must be at most {MAX_UNIT_BYTES} printable ASCII characters"
        ));
    }
    if point.description.len() > MAX_DESCRIPTION_BYTES
        || point
            .description
            .chars()
            .any(|c| c.is_control() || c == '\\' || c == '"')
    {
        return invalid(format!(
            "the description must be at most {MAX_DESCRIPTION_BYTES} bytes, without control characters, `\\` or `\"`"
        ));
    }
    if point.attributes.len() > MAX_ATTRIBUTES {
        return invalid(format!(
            "{} attributes, more than {MAX_ATTRIBUTES}",
            point.attributes.len()
        ));
    }
    let mut keys: Vec<String> = Vec::with_capacity(point.attributes.len());
    for attribute in &point.attributes {
        let key = &attribute.key;
        let mut chars = key.chars();
        if key.is_empty()
            || key.len() > MAX_KEY_BYTES
            || !chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return invalid(format!(
                "attribute key {} must be 1 to {MAX_KEY_BYTES} letters, digits, `_` and `.`, not starting with a digit",
                shown_name(key)
            ));
        }
        let spelled = prometheus_name(key);
        if RESERVED_KEYS.contains(&spelled.as_str()) || spelled.starts_with("__") {
            return invalid(format!("attribute key `{key}` is the outputs' own"));
        }
        if keys.contains(&spelled) {
            return invalid(format!(
                "attribute key `{key}` repeats another (`.` and `_` are the same in Prometheus)"
            ));
        }
        keys.push(spelled);
        if let wit::AttributeValue::Text(text) = &attribute.value
            && (text.len() > MAX_TEXT_VALUE_BYTES || text.chars().any(char::is_control))
        {
            return invalid(format!(
                "attribute `{key}`: a text value must be at most {MAX_TEXT_VALUE_BYTES} bytes, without control characters"
            ));
        }
    }
    match &point.value {
        wit::MetricValue::Counter(_) => {}
        wit::MetricValue::Gauge(value) => {
            if !value.is_finite() {
                return invalid(format!("a gauge must be finite, got {value}"));
            }
        }
        wit::MetricValue::ResponseTimes(times) => {
            if times.buckets.len() > MAX_BUCKETS {
                return invalid(format!(
                    "{} buckets, more than {MAX_BUCKETS}",
                    times.buckets.len()
                ));
            }
            if !times.sum_ms.is_finite() || times.sum_ms < 0.0 {
                return invalid(format!(
                    "the sum must be finite milliseconds >= 0, got {}",
                    times.sum_ms
                ));
            }
        }
    }
    Ok(())
}

/// A checked point's attributes in the host's types, without empty text values (Prometheus
/// reads an empty label as none), sorted by key as Prometheus spells it.
fn attributes(attributes: Vec<wit::Attribute>) -> Attributes {
    let mut attributes: Attributes = attributes
        .into_iter()
        .filter_map(|attribute| {
            let value = match attribute.value {
                wit::AttributeValue::Text(text) if text.is_empty() => return None,
                wit::AttributeValue::Text(text) => AttributeValue::Text(Cow::Owned(text)),
                wit::AttributeValue::Integer(number) => AttributeValue::Int(number),
                wit::AttributeValue::Boolean(flag) => AttributeValue::Bool(flag),
            };
            Some((attribute.key, value))
        })
        .collect();
    attributes.sort_by_cached_key(|(key, _)| prometheus_name(key));
    attributes
}

/// Adds a checked point of the series' kind to its value.
fn merge(value: &mut SeriesValue, point: wit::MetricValue) {
    match (value, point) {
        (SeriesValue::Counter(total), wit::MetricValue::Counter(increment)) => {
            *total = total.saturating_add(increment);
        }
        (SeriesValue::Gauge(last), wit::MetricValue::Gauge(value)) => *last = value,
        (
            SeriesValue::Histogram {
                count,
                sum_ms,
                buckets,
            },
            wit::MetricValue::ResponseTimes(times),
        ) => {
            for (ms, n) in times.buckets {
                // Rounded again: Locust's rounding leaves a rounded time as it is, and a
                // plugin that skipped it still merges on Locust's grid.
                let rounded = bucket_response_time(f64::from(ms));
                let bucket = BOUNDS_MS.partition_point(|&bound| bound < rounded);
                // The total saturates, and no bucket takes more than it: the cumulative
                // buckets an output adds up never pass the count.
                let n = n.min(u64::MAX - *count);
                buckets[bucket] += n;
                *count += n;
            }
            // Finite each, the sum of many may not be: it stops at the largest float.
            *sum_ms = (*sum_ms + times.sum_ms).min(f64::MAX);
        }
        // The family's kind was checked against the point's before.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunContext {
        RunContext {
            run_id: "r".into(),
            testplan: "t".into(),
        }
    }

    fn point(name: &str, value: wit::MetricValue, attributes: &[(&str, &str)]) -> wit::MetricPoint {
        wit::MetricPoint {
            name: name.into(),
            unit: String::new(),
            description: "d".into(),
            attributes: attributes
                .iter()
                .map(|(key, value)| wit::Attribute {
                    key: (*key).into(),
                    value: wit::AttributeValue::Text((*value).into()),
                })
                .collect(),
            value,
        }
    }

    fn counter(name: &str, increment: u64, attributes: &[(&str, &str)]) -> wit::MetricPoint {
        point(name, wit::MetricValue::Counter(increment), attributes)
    }

    fn reasons(rejections: &[Rejection]) -> Vec<&'static str> {
        rejections
            .iter()
            .map(|rejection| rejection.reason)
            .collect()
    }

    /// The points of `name` in run 0's snapshot, as (attributes as text, value).
    fn values(metrics: &mut PluginMetrics, name: &str) -> Vec<(String, PointValue)> {
        let snapshot = metrics.snapshot(&[run()]);
        snapshot[0]
            .metrics
            .iter()
            .filter(|metric| metric.name == name)
            .flat_map(|metric| metric.points.iter())
            .map(|point| {
                let attributes: Vec<String> = point
                    .attributes
                    .iter()
                    .map(|(key, value)| format!("{key}={}", value.as_text()))
                    .collect();
                (attributes.join(","), point.value.clone())
            })
            .collect()
    }

    #[test]
    fn counters_add_up_over_calls_and_nodes_per_attribute_set() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        for (time, increment) in [(1.0, 2), (2.0, 3)] {
            let rejected = metrics.record(
                0,
                0,
                time,
                vec![
                    counter("orders", increment, &[("endpoint", "/a")]),
                    counter("orders", 1, &[("endpoint", "/b")]),
                ],
                &limits,
            );
            assert!(rejected.is_empty(), "{rejected:?}");
        }
        assert_eq!(
            values(&mut metrics, "orders"),
            [
                ("endpoint=/a".into(), PointValue::Counter(5)),
                ("endpoint=/b".into(), PointValue::Counter(2)),
            ]
        );
        let snapshot = metrics.snapshot(&[run()]);
        assert_eq!((snapshot[0].start_time, snapshot[0].time), (1.0, 2.0));
        // Unchanged since: the same snapshot, not rebuilt.
        assert!(Arc::ptr_eq(&snapshot, &metrics.snapshot(&[run()])));
    }

    #[test]
    fn attribute_order_does_not_make_another_series() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        metrics.record(
            0,
            0,
            1.0,
            vec![counter("c", 1, &[("a", "1"), ("b", "2")])],
            &limits,
        );
        metrics.record(
            0,
            0,
            1.0,
            vec![counter("c", 1, &[("b", "2"), ("a", "1")])],
            &limits,
        );
        assert_eq!(
            values(&mut metrics, "c"),
            [("a=1,b=2".into(), PointValue::Counter(2))]
        );
    }

    #[test]
    fn gauges_keep_the_last_value() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        for value in [3.0, 7.5, 2.0] {
            metrics.record(
                0,
                0,
                1.0,
                vec![point("depth", wit::MetricValue::Gauge(value), &[])],
                &limits,
            );
        }
        assert_eq!(
            values(&mut metrics, "depth"),
            [(String::new(), PointValue::Gauge(2.0))]
        );
    }

    #[test]
    fn response_times_merge_into_the_duration_buckets_by_locusts_rounding() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        let times = |buckets: Vec<(u32, u64)>, sum_ms| {
            point(
                "checkout.duration",
                wit::MetricValue::ResponseTimes(wit::ResponseTimes { buckets, sum_ms }),
                &[],
            )
        };
        // 5 ms is within the 5 ms bound; 6 ms is above it; 147 ms is rounded to 150 first
        // (a plugin that skipped the rounding) and counted in (100, 250]; 20 s is past 10 s.
        metrics.record(0, 0, 1.0, vec![times(vec![(5, 2), (6, 1)], 16.0)], &limits);
        metrics.record(
            0,
            0,
            2.0,
            vec![times(vec![(147, 1), (20_000, 4)], 80_147.0)],
            &limits,
        );
        let [(_, PointValue::Histogram(histogram))] =
            &values(&mut metrics, "checkout.duration")[..]
        else {
            panic!("one histogram");
        };
        assert_eq!(histogram.count, 8);
        assert!((histogram.sum - 80.163).abs() < 1e-9, "{}", histogram.sum);
        assert_eq!(histogram.bounds, &BOUNDS_SECONDS);
        assert_eq!(
            histogram.bucket_counts,
            [0, 2, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4]
        );
        let snapshot = metrics.snapshot(&[run()]);
        assert_eq!(snapshot[0].metrics[0].unit, "s");
    }

    #[test]
    fn every_rule_rejects_its_point_and_keeps_the_rest() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        let long = "x".repeat(MAX_TEXT_VALUE_BYTES + 1);
        let with_unit = |unit: &str| wit::MetricPoint {
            unit: unit.into(),
            ..counter("u", 1, &[])
        };
        let with_description = |description: &str| wit::MetricPoint {
            description: description.into(),
            ..counter("d", 1, &[])
        };
        let seventeen: Vec<(String, String)> = (0..=MAX_ATTRIBUTES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let seventeen: Vec<(&str, &str)> = seventeen
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let bad = vec![
            counter("", 1, &[]),
            counter(&"a".repeat(MAX_NAME_BYTES + 1), 1, &[]),
            counter("Upper", 1, &[]),
            counter("1digit", 1, &[]),
            counter("has-dash", 1, &[]),
            counter("swarmtel.events", 1, &[]),
            counter("swarmtel", 1, &[]),
            counter("swarmtelx", 1, &[]),
            counter("locust.client.duration", 1, &[]),
            point("locust.users.count", wit::MetricValue::Gauge(1.0), &[]),
            point(
                "locust.client.duration.percentile",
                wit::MetricValue::Gauge(1.0),
                &[],
            ),
            with_unit("m s"),
            with_unit(&"u".repeat(MAX_UNIT_BYTES + 1)),
            with_description("two\nlines"),
            with_description("back\\slash"),
            with_description("a \"quote\""),
            with_description(&"d".repeat(MAX_DESCRIPTION_BYTES + 1)),
            counter("c", 1, &seventeen),
            counter("c", 1, &[("", "v")]),
            counter("c", 1, &[("9key", "v")]),
            counter("c", 1, &[("k-y", "v")]),
            counter("c", 1, &[(&"k".repeat(MAX_KEY_BYTES + 1), "v")]),
            counter("c", 1, &[("run_id", "forged")]),
            counter("c", 1, &[("testplan", "forged")]),
            counter("c", 1, &[("le", "1")]),
            counter("c", 1, &[("quantile", "1")]),
            counter("c", 1, &[("__name__", "x")]),
            counter("c", 1, &[("_.x", "x")]),
            counter("c", 1, &[("a.b", "1"), ("a_b", "2")]),
            counter("c", 1, &[("v", &long)]),
            counter("c", 1, &[("v", "tab\there")]),
            point("g", wit::MetricValue::Gauge(f64::NAN), &[]),
            point("g", wit::MetricValue::Gauge(f64::INFINITY), &[]),
            point(
                "h",
                wit::MetricValue::ResponseTimes(wit::ResponseTimes {
                    buckets: (0..=MAX_BUCKETS as u32).map(|ms| (ms, 1)).collect(),
                    sum_ms: 1.0,
                }),
                &[],
            ),
            point(
                "h",
                wit::MetricValue::ResponseTimes(wit::ResponseTimes {
                    buckets: Vec::new(),
                    sum_ms: -1.0,
                }),
                &[],
            ),
        ];
        let count = bad.len();
        let mut points = bad;
        points.push(counter(
            "fine",
            1,
            &[("v", &"x".repeat(MAX_TEXT_VALUE_BYTES))],
        ));
        let rejections = metrics.record(0, 0, 1.0, points, &limits);
        assert_eq!(
            reasons(&rejections),
            vec!["metric_invalid"; count],
            "{rejections:#?}"
        );
        // Each message names the metric and stays short.
        for rejection in &rejections {
            assert!(
                rejection.message.starts_with("metric \""),
                "{}",
                rejection.message
            );
            assert!(rejection.message.len() < 400, "{}", rejection.message);
        }
        let snapshot = metrics.snapshot(&[run()]);
        let names: Vec<&str> = snapshot[0]
            .metrics
            .iter()
            .map(|m| m.name.as_ref())
            .collect();
        assert_eq!(names, ["fine"]);
    }

    #[test]
    fn a_name_keeps_its_owner_and_its_kind() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        assert!(
            metrics
                .record(0, 0, 1.0, vec![counter("jobs", 1, &[])], &limits)
                .is_empty()
        );
        let rejected = metrics.record(
            0,
            0,
            1.0,
            vec![point("jobs", wit::MetricValue::Gauge(1.0), &[])],
            &limits,
        );
        assert_eq!(reasons(&rejected), ["metric_kind_mismatch"]);
        assert!(
            rejected[0]
                .message
                .contains("a gauge point for a counter metric")
        );
        // Another plugin: the name is taken, whatever the kind.
        let rejected = metrics.record(1, 0, 1.0, vec![counter("jobs", 5, &[])], &limits);
        assert_eq!(reasons(&rejected), ["metric_name_taken"]);
        assert_eq!(
            values(&mut metrics, "jobs"),
            [(String::new(), PointValue::Counter(1))]
        );
    }

    #[test]
    fn no_two_families_export_one_prometheus_sample() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        let with_unit = |name: &str, unit: &str| wit::MetricPoint {
            unit: unit.into(),
            ..counter(name, 1, &[])
        };
        let gauge = |name: &str| point(name, wit::MetricValue::Gauge(1.0), &[]);
        let histogram = |name: &str| {
            point(
                name,
                wit::MetricValue::ResponseTimes(wit::ResponseTimes {
                    buckets: vec![(1, 1)],
                    sum_ms: 1.0,
                }),
                &[],
            )
        };
        assert!(
            metrics
                .record(
                    0,
                    0,
                    1.0,
                    vec![with_unit("sent", "By"), histogram("wait")],
                    &limits
                )
                .is_empty()
        );
        let clashes = vec![
            // `sent` in bytes is `sent_bytes`, `sent_bytes_total`.
            with_unit("sent.bytes", ""),
            gauge("sent_bytes_total"),
            // `wait` is `wait_seconds`, `_bucket`, `_sum`, `_count`.
            gauge("wait.seconds.count"),
            with_unit("wait.seconds", ""),
            // The built-in metrics' Prometheus names, under other names.
            gauge("locust.client.duration.percentile.seconds"),
            gauge("locust_users.count"),
        ];
        let rejected = metrics.record(1, 0, 1.0, clashes, &limits);
        assert_eq!(
            reasons(&rejected),
            vec!["metric_name_taken"; 6],
            "{rejected:#?}"
        );
        assert!(
            rejected
                .iter()
                .all(|r| r.message.contains("which another metric exports")),
            "{rejected:#?}"
        );
    }

    #[test]
    fn the_series_cap_counts_every_run_of_a_plugin_and_only_new_series() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits {
            max_metric_series: 3,
            ..Limits::default()
        };
        let points = |values: &[&str]| -> Vec<wit::MetricPoint> {
            values
                .iter()
                .map(|v| counter("s", 1, &[("v", v)]))
                .collect()
        };
        assert!(
            metrics
                .record(0, 0, 1.0, points(&["a", "b"]), &limits)
                .is_empty()
        );
        // Run 1 takes the third series; then the cap is reached for every run.
        let rejected = metrics.record(0, 1, 1.0, points(&["a", "b"]), &limits);
        assert_eq!(reasons(&rejected), ["metric_series_cap"]);
        assert!(
            rejected[0].message.contains("max_metric_series"),
            "{rejected:?}"
        );
        // Known series still count; another plugin has a cap of its own.
        assert!(
            metrics
                .record(0, 0, 2.0, points(&["a", "b"]), &limits)
                .is_empty()
        );
        assert!(
            metrics
                .record(1, 0, 2.0, vec![counter("other", 1, &[])], &limits)
                .is_empty()
        );
        assert_eq!(
            values(&mut metrics, "s"),
            [
                ("v=a".into(), PointValue::Counter(2)),
                ("v=b".into(), PointValue::Counter(2)),
            ]
        );
    }

    #[test]
    fn points_past_the_call_cap_are_rejected() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits {
            max_points_per_call: 10,
            ..Limits::default()
        };
        let rejected = metrics.record(0, 0, 1.0, vec![counter("c", 1, &[]); 25], &limits);
        assert_eq!(reasons(&rejected), vec!["metric_call_cap"; 15]);
        assert_eq!(
            values(&mut metrics, "c"),
            [(String::new(), PointValue::Counter(10))]
        );
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        metrics.record(
            0,
            0,
            1.0,
            vec![counter("c", u64::MAX, &[]), counter("c", 5, &[])],
            &limits,
        );
        assert_eq!(
            values(&mut metrics, "c"),
            [(String::new(), PointValue::Counter(u64::MAX))]
        );
        let huge = || {
            point(
                "h",
                wit::MetricValue::ResponseTimes(wit::ResponseTimes {
                    buckets: vec![(1, u64::MAX)],
                    sum_ms: f64::MAX,
                }),
                &[],
            )
        };
        metrics.record(0, 0, 1.0, vec![huge(), huge()], &limits);
        let [(_, PointValue::Histogram(histogram))] = &values(&mut metrics, "h")[..] else {
            panic!("one histogram");
        };
        assert_eq!(histogram.count, u64::MAX);
        assert!(histogram.sum.is_finite());
    }

    #[test]
    fn past_the_series_cap_no_family_is_made_for_a_new_name() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits {
            max_metric_series: 1,
            ..Limits::default()
        };
        assert!(
            metrics
                .record(0, 0, 1.0, vec![counter("kept", 1, &[])], &limits)
                .is_empty()
        );
        let names: Vec<wit::MetricPoint> = (0..500)
            .map(|i| counter(&format!("name{i}"), 1, &[]))
            .collect();
        let rejected = metrics.record(0, 0, 1.0, names, &limits);
        assert_eq!(reasons(&rejected), vec!["metric_series_cap"; 500]);
        assert_eq!(metrics.families.len(), 1, "no family without a series");
        // So another plugin may still use those names.
        assert!(
            metrics
                .record(1, 0, 1.0, vec![counter("name7", 1, &[])], &limits)
                .is_empty()
        );
        let snapshot = metrics.snapshot(&[run()]);
        assert!(
            snapshot[0]
                .metrics
                .iter()
                .all(|metric| !metric.points.is_empty())
        );
    }

    #[test]
    fn a_series_is_what_prometheus_sees() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        let with = |attributes: Vec<(&str, wit::AttributeValue)>| wit::MetricPoint {
            attributes: attributes
                .into_iter()
                .map(|(key, value)| wit::Attribute {
                    key: key.into(),
                    value,
                })
                .collect(),
            ..counter("hits", 1, &[])
        };
        let text = |value: &str| wit::AttributeValue::Text(value.into());
        let points = vec![
            with(vec![("code", wit::AttributeValue::Integer(200))]),
            with(vec![("code", text("200"))]),
            with(vec![("ok", wit::AttributeValue::Boolean(true))]),
            with(vec![("ok", text("true"))]),
            with(vec![("a.b", text("x"))]),
            with(vec![("a_b", text("x"))]),
            with(vec![("empty", text(""))]),
            with(vec![]),
        ];
        assert!(metrics.record(0, 0, 1.0, points, &limits).is_empty());
        // Each pair is one series, with the first point's types and keys; an empty value is
        // no attribute.
        assert_eq!(
            values(&mut metrics, "hits"),
            [
                (String::new(), PointValue::Counter(2)),
                ("a.b=x".into(), PointValue::Counter(2)),
                ("code=200".into(), PointValue::Counter(2)),
                ("ok=true".into(), PointValue::Counter(2)),
            ]
        );
        let snapshot = metrics.snapshot(&[run()]);
        let typed: Vec<&AttributeValue> = snapshot[0].metrics[0]
            .points
            .iter()
            .flat_map(|point| point.attributes.iter().map(|(_, value)| value))
            .collect();
        assert!(typed.contains(&&AttributeValue::Int(200)), "{typed:?}");
        assert!(typed.contains(&&AttributeValue::Bool(true)), "{typed:?}");
        assert_eq!(metrics.series_of[&0], 4);
    }

    #[test]
    fn a_histogram_count_saturates_and_its_buckets_never_pass_it() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        let times = |buckets: Vec<(u32, u64)>| {
            point(
                "h",
                wit::MetricValue::ResponseTimes(wit::ResponseTimes {
                    buckets,
                    sum_ms: 1.0,
                }),
                &[],
            )
        };
        metrics.record(
            0,
            0,
            1.0,
            vec![times(vec![(1, u64::MAX), (20_000, 1)])],
            &limits,
        );
        metrics.record(0, 0, 1.0, vec![times(vec![(3, 5)])], &limits);
        let [(_, PointValue::Histogram(histogram))] = &values(&mut metrics, "h")[..] else {
            panic!("one histogram");
        };
        assert_eq!(histogram.count, u64::MAX);
        let cumulative = histogram
            .bucket_counts
            .iter()
            .try_fold(0u64, |total, &n| total.checked_add(n));
        assert_eq!(cumulative, Some(u64::MAX), "{:?}", histogram.bucket_counts);
    }

    #[test]
    fn a_runs_start_is_its_first_point_and_never_moves() {
        let mut metrics = PluginMetrics::new();
        let limits = Limits::default();
        metrics.record(0, 0, 10.0, vec![counter("c", 1, &[])], &limits);
        metrics.record(0, 0, 5.0, vec![counter("c", 1, &[])], &limits);
        metrics.record(0, 0, 12.0, vec![counter("c", 1, &[])], &limits);
        let snapshot = metrics.snapshot(&[run()]);
        assert_eq!((snapshot[0].start_time, snapshot[0].time), (10.0, 12.0));
        assert_eq!(snapshot[0].scope, "swarmtel.plugins");
    }

    #[test]
    fn units_follow_the_collectors_prometheus_names() {
        let names = |name: &str, unit: &str| sample_names(name, unit, MetricKind::Gauge);
        assert_eq!(names("rx", "By"), ["rx_bytes"]);
        assert_eq!(names("rate", "By/s"), ["rate_bytes_per_second"]);
        assert_eq!(names("load", "1"), ["load"]);
        assert_eq!(names("queue", "{message}"), ["queue"]);
        assert_eq!(names("lag", "ms"), ["lag_milliseconds"]);
        assert_eq!(names("hits", "{hit}/s"), ["hits_per_second"]);
    }
}
