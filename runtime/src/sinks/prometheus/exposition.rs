//! The Prometheus encoding: the runtime's own counters and the built-in request metrics as
//! OpenMetrics text, through `prometheus-client`'s encoder (names, units, `_total` suffixes,
//! label escaping, `# EOF`). Metric names and attribute keys are OpenTelemetry's with dots
//! as underscores, the way an OpenTelemetry Collector's Prometheus exporter writes them
//! (`locust.client.duration` in `s` is `locust_client_duration_seconds`); each series of a
//! run carries its `run_id` and `testplan`.

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::pipeline::metrics::{Metric, MetricKind, PointValue, RunMetrics};

/// What a scrape shows: the latest metrics the pipeline published.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The runtime's own counters, as metrics.
    pub runtime: Vec<Metric>,
    /// The built-in request metrics of every run.
    pub runs: Arc<Vec<RunMetrics>>,
}

/// Encodes a snapshot as an OpenMetrics text exposition.
pub fn encode(snapshot: &Arc<Snapshot>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[derive(Debug)]
struct SnapshotCollector(Arc<Snapshot>);

/// Metrics that share labels: the runtime's (none) or one run's (`run_id`, `testplan`).
struct Group<'a> {
    labels: Vec<(&'static str, &'a str)>,
    metrics: &'a [Metric],
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut groups = vec![Group {
            labels: Vec::new(),
            metrics: &self.0.runtime,
        }];
        groups.extend(self.0.runs.iter().map(|run| Group {
            labels: vec![
                ("run_id", run.run.run_id.as_str()),
                ("testplan", run.run.testplan.as_str()),
            ],
            metrics: &run.metrics,
        }));
        encode_groups(&mut encoder, &groups)
    }
}

/// An OpenTelemetry name or attribute key as a Prometheus name: every character outside
/// `[a-zA-Z0-9_]` becomes `_`.
pub(crate) fn prometheus_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A UCUM unit as the suffix of a Prometheus name, the way the OpenTelemetry Collector's
/// Prometheus exporter spells it (`ms` → `milliseconds`, `By/s` → `bytes_per_second`);
/// `None` for no unit, a dimensionless `1` or an annotation such as `{request}`.
pub(crate) fn prometheus_unit(unit: &str) -> Option<String> {
    fn one(unit: &str) -> String {
        let word = match unit {
            "d" => "days",
            "h" => "hours",
            "min" => "minutes",
            "s" => "seconds",
            "ms" => "milliseconds",
            "us" => "microseconds",
            "ns" => "nanoseconds",
            "By" => "bytes",
            "KiBy" => "kibibytes",
            "MiBy" => "mebibytes",
            "GiBy" => "gibibytes",
            "KBy" => "kilobytes",
            "MBy" => "megabytes",
            "GBy" => "gigabytes",
            "m" => "meters",
            "Hz" => "hertz",
            "%" => "percent",
            other => return prometheus_name(other),
        };
        word.to_owned()
    }
    fn per(unit: &str) -> String {
        let word = match unit {
            "s" => "second",
            "min" => "minute",
            "h" => "hour",
            "d" => "day",
            other => return one(other),
        };
        word.to_owned()
    }
    // Annotations in braces carry no unit.
    let mut plain = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let plain = plain.trim();
    if plain.is_empty() || plain == "1" {
        return None;
    }
    Some(match plain.split_once('/') {
        Some((over, under)) if !over.is_empty() && over != "1" => {
            format!("{}_per_{}", one(over), per(under))
        }
        Some((_, under)) => format!("per_{}", per(under)),
        None => one(plain),
    })
}

/// One family per metric name (over every group, in order of first appearance), one series
/// per group and point, labelled with the group's labels and the point's attributes. A
/// metric without points still gets its `# HELP` and `# TYPE` lines.
fn encode_groups(
    encoder: &mut DescriptorEncoder<'_>,
    groups: &[Group<'_>],
) -> Result<(), std::fmt::Error> {
    // Families in order of first appearance, each with its (group, metric) pairs: one pass.
    let mut index: std::collections::HashMap<&str, usize> = Default::default();
    let mut families: Vec<Vec<(&Group<'_>, &Metric)>> = Vec::new();
    for group in groups {
        for metric in group.metrics {
            let at = *index.entry(&metric.name).or_insert_with(|| {
                families.push(Vec::new());
                families.len() - 1
            });
            families[at].push((group, metric));
        }
    }
    for members in families {
        let name: &str = &members[0].1.name;
        let same_name = || members.iter().copied();
        let first = members[0].1;
        let kind = match first.kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        let unit = match first.unit.as_ref() {
            "s" => Some(Unit::Seconds),
            other => prometheus_unit(other).map(Unit::Other),
        };
        let family_name = prometheus_name(name);
        let mut family =
            encoder.encode_descriptor(&family_name, &first.description, unit.as_ref(), kind)?;
        for (group, metric) in same_name() {
            for point in &metric.points {
                let mut labels: Vec<(String, Cow<'_, str>)> = group
                    .labels
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), Cow::Borrowed(*value)))
                    .collect();
                labels.extend(
                    point
                        .attributes
                        .iter()
                        .map(|(key, value)| (prometheus_name(key), value.as_text())),
                );
                let mut series = family.encode_family(&labels)?;
                match &point.value {
                    PointValue::Counter(value) => ConstCounter::new(*value).encode(series)?,
                    PointValue::Gauge(value) => ConstGauge::new(*value).encode(series)?,
                    PointValue::IntGauge(value) => ConstGauge::new(*value).encode(series)?,
                    PointValue::Histogram(histogram) => {
                        let buckets: Vec<(f64, u64)> = histogram
                            .bounds
                            .iter()
                            .copied()
                            .chain(std::iter::once(f64::INFINITY))
                            .zip(histogram.bucket_counts.iter().copied())
                            .collect();
                        series.encode_histogram::<NoLabelSet>(
                            histogram.sum,
                            histogram.count,
                            &buckets,
                            None,
                        )?
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{PluginCounters, SourceCounters, Summary};

    #[test]
    fn counters_are_openmetrics_with_plugin_and_reason_labels() {
        let mut stats = PluginCounters {
            events_in: 7,
            telemetry_out: 3,
            ..PluginCounters::default()
        };
        stats.rejected.insert("schema", 2);
        stats.faults.insert("trap", 1);
        let counters = Summary {
            lines: 10,
            events: 9,
            plugins: vec![("request-stats".into(), stats)],
            outputs: vec![crate::pipeline::counters::OutputRecords {
                key: "outputs[\"1\"]".into(),
                name: "out.ndjson".into(),
                records: 3,
                dropped: 1,
            }],
            source: Some(SourceCounters {
                connections: crate::pipeline::counters::ConnectionTotals {
                    accepted: [1, 2, 0],
                    dropped_here: 5,
                    ..Default::default()
                },
                open: [0, 1, 0],
                queued_bytes: 2048,
                queue_capacity_bytes: 64 << 20,
            }),
            ..Summary::default()
        };
        let snapshot = Snapshot {
            runtime: counters.metrics(4),
            ..Snapshot::default()
        };
        let text = encode(&Arc::new(snapshot)).unwrap();
        for line in [
            "# TYPE swarmtel_events counter",
            "swarmtel_events_total 9",
            "swarmtel_lines_total 10",
            "swarmtel_live_instances 4",
            "swarmtel_plugin_events_in_total{plugin=\"request-stats\"} 7",
            "swarmtel_plugin_rejected_total{plugin=\"request-stats\",reason=\"schema\"} 2",
            "swarmtel_plugin_faults_total{plugin=\"request-stats\",kind=\"trap\"} 1",
            "swarmtel_serve_connections_total{role=\"worker\"} 2",
            "swarmtel_serve_open_connections{role=\"worker\"} 1",
            "swarmtel_serve_events_dropped_total{where=\"here\"} 5",
            "swarmtel_serve_queue_bytes 2048",
            "swarmtel_serve_queue_capacity_bytes 67108864",
            // Label values are escaped.
            "swarmtel_output_records_total{output=\"outputs[\\\"1\\\"]\"} 3",
            "swarmtel_output_dropped_total{output=\"outputs[\\\"1\\\"]\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn request_metrics_are_histograms_and_gauges_with_the_runs_labels() {
        use crate::pipeline::enrich::RunContext;
        use crate::pipeline::request_metrics::{RequestMetrics, RequestMetricsConfig};
        use crate::sources::ingest::RequestRecord;
        use std::borrow::Cow;

        let mut metrics = RequestMetrics::new(RequestMetricsConfig::default());
        for (ms, error) in [(4.0, None), (140.0, None), (30.0, Some("ConnectionError"))] {
            let request = RequestRecord {
                request_type: Cow::Borrowed("GET"),
                name: Cow::Borrowed("/items/[id]"),
                response_time_ms: ms,
                response_length: 1,
                start_time: 1.0,
                status_code: if error.is_some() { 0 } else { 200 },
                exception: error.map(Cow::Borrowed),
                exception_type: error.map(Cow::Borrowed),
                url: None,
                context: None,
            };
            metrics.record_request(0, 0, &request, 1.0);
        }
        let runs = [RunContext {
            run_id: "r-1".into(),
            testplan: "checkout".into(),
        }];
        let snapshot = Snapshot {
            runs: metrics.snapshot(&runs),
            ..Snapshot::default()
        };
        let text = encode(&Arc::new(snapshot)).unwrap();
        // prometheus-client writes `le` first; label order does not matter to Prometheus.
        let run = "run_id=\"r-1\",testplan=\"checkout\"";
        let ok = format!(
            "{run},name=\"/items/[id]\",http_request_method=\"GET\",http_response_status_code=\"200\""
        );
        let failed = format!(
            "{run},name=\"/items/[id]\",http_request_method=\"GET\",error_type=\"ConnectionError\""
        );
        for line in [
            "# TYPE locust_client_duration_seconds histogram".to_owned(),
            "# UNIT locust_client_duration_seconds seconds".to_owned(),
            format!("locust_client_duration_seconds_count{{{ok}}} 2"),
            format!("locust_client_duration_seconds_sum{{{ok}}} 0.144"),
            format!("locust_client_duration_seconds_bucket{{le=\"0.005\",{ok}}} 1"),
            format!("locust_client_duration_seconds_bucket{{le=\"0.1\",{ok}}} 1"),
            format!("locust_client_duration_seconds_bucket{{le=\"0.25\",{ok}}} 2"),
            format!("locust_client_duration_seconds_bucket{{le=\"+Inf\",{ok}}} 2"),
            format!("locust_client_duration_seconds_count{{{failed}}} 1"),
            "# TYPE locust_client_duration_percentile_seconds gauge".to_owned(),
            format!(
                "locust_client_duration_percentile_seconds{{{run},name=\"/items/[id]\",http_request_method=\"GET\",quantile=\"0.5\"}} 0.03"
            ),
            format!(
                "locust_client_duration_percentile_seconds{{{run},name=\"Aggregated\",quantile=\"0.99\"}} 0.14"
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }
}
