//! The Prometheus encoding: the runtime's own counters and the built-in request metrics as
//! OpenMetrics text, through `prometheus-client`'s encoder (names, units, `_total` suffixes,
//! label escaping, `# EOF`). Metric names and attribute keys are OpenTelemetry's with dots
//! as underscores, the way an OpenTelemetry Collector's Prometheus exporter writes them
//! (`locust.client.duration` in `s` is `locust_client_duration_seconds`); each series of a
//! run carries its `run_id` and `testplan`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use prometheus_client::encoding::NoLabelSet;
use prometheus_client::registry::Unit;

use crate::pipeline::metrics::{PointValue, RunMetrics};
use crate::pipeline::{SourceCounters, Summary};

/// What a scrape shows: the latest counters the pipeline published.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The runtime's own counters.
    pub counters: Summary,
    /// Recorder instances alive now.
    pub live_instances: u64,
    /// The built-in request metrics of every run.
    pub metrics: Arc<Vec<RunMetrics>>,
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

/// Writes one counter family with one series per label set.
fn counter_family<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, MetricType::Counter, series)
}

/// Writes one gauge family with one series per label set.
fn gauge_family<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, MetricType::Gauge, series)
}

/// Writes one family of counters or gauges.
fn family<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let metric = family.encode_family(&labels)?;
        match kind {
            MetricType::Gauge => {
                ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)?
            }
            _ => ConstCounter::new(value).encode(metric)?,
        }
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counters = &self.0.counters;
        for (name, help, value) in [
            (
                "swarmtel_lines",
                "Lines read from every source (good, bad and blank).",
                counters.lines,
            ),
            ("swarmtel_events", "Events decoded.", counters.events),
            (
                "swarmtel_bad_lines",
                "Lines skipped as malformed.",
                counters.bad_lines,
            ),
            ("swarmtel_nodes_started", "Nodes started.", counters.nodes),
            (
                "swarmtel_nodes_retired_idle",
                "Nodes whose recorders were freed after node_idle_seconds without an event.",
                counters.nodes_retired_idle,
            ),
            (
                "swarmtel_events_refused_instance_cap",
                "Events refused at the max_live_instances cap.",
                counters.events_refused_instance_cap,
            ),
        ] {
            counter_family(&mut encoder, name, help, [(Vec::new(), value)])?;
        }
        gauge_family(
            &mut encoder,
            "swarmtel_live_instances",
            "Recorder instances alive now.",
            [(Vec::new(), self.0.live_instances)],
        )?;

        let plugins = &counters.plugins;
        let per_plugin = |value: fn(&crate::pipeline::PluginCounters) -> u64| {
            plugins
                .iter()
                .map(move |(id, c)| (vec![("plugin", id.as_str())], value(c)))
        };
        counter_family(
            &mut encoder,
            "swarmtel_plugin_events_in",
            "Stream events delivered to the plugin's recorders.",
            per_plugin(|c| c.events_in),
        )?;
        counter_family(
            &mut encoder,
            "swarmtel_plugin_events_lost",
            "Events lost to the plugin's recorders (a faulted batch, a disabled recorder).",
            per_plugin(|c| c.events_lost),
        )?;
        counter_family(
            &mut encoder,
            "swarmtel_plugin_telemetry_out",
            "Telemetry items that passed validation.",
            per_plugin(|c| c.telemetry_out),
        )?;
        counter_family(
            &mut encoder,
            "swarmtel_plugin_restarts",
            "Recorder instances restarted after a fault.",
            per_plugin(|c| c.restarts),
        )?;
        counter_family(
            &mut encoder,
            "swarmtel_plugin_disabled",
            "Recorder instances disabled.",
            per_plugin(|c| c.disabled),
        )?;
        counter_family(
            &mut encoder,
            "swarmtel_plugin_stdio_dropped_bytes",
            "Bytes of guest stdout/stderr dropped past stdio_bytes.",
            per_plugin(|c| c.stdio_dropped_bytes),
        )?;
        counter_family(
            &mut encoder,
            "swarmtel_plugin_rejected",
            "Telemetry items rejected, by reason.",
            plugins.iter().flat_map(|(id, c)| {
                c.rejected.iter().map(move |(reason, n)| {
                    (vec![("plugin", id.as_str()), ("reason", *reason)], *n)
                })
            }),
        )?;
        counter_family(
            &mut encoder,
            "swarmtel_plugin_faults",
            "Recorder faults, by kind.",
            plugins.iter().flat_map(|(id, c)| {
                c.faults
                    .iter()
                    .map(move |(kind, n)| (vec![("plugin", id.as_str()), ("kind", *kind)], *n))
            }),
        )?;
        if let Some(source) = &counters.source {
            encode_source(&mut encoder, source)?;
        }
        counter_family(
            &mut encoder,
            "swarmtel_output_records",
            "Records each output took, by its place in the config (outputs[i]).",
            counters
                .outputs
                .iter()
                .map(|output| (vec![("output", output.key.as_str())], output.records)),
        )?;
        encode_run_metrics(&mut encoder, &self.0.metrics)
    }
}

/// An OpenTelemetry name or attribute key as a Prometheus name: every character outside
/// `[a-zA-Z0-9_]` becomes `_`.
fn prometheus_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The request metrics of every run: one family per metric name, one series per run and
/// point, labelled with the run's id and test plan and the point's attributes.
fn encode_run_metrics(
    encoder: &mut DescriptorEncoder<'_>,
    runs: &[RunMetrics],
) -> Result<(), std::fmt::Error> {
    let mut names: Vec<&str> = Vec::new();
    for metric in runs.iter().flat_map(|run| &run.metrics) {
        if !names.contains(&metric.name) {
            names.push(metric.name);
        }
    }
    for name in names {
        let same_name = || {
            runs.iter().flat_map(move |run| {
                run.metrics
                    .iter()
                    .filter(move |metric| metric.name == name)
                    .map(move |metric| (run, metric))
            })
        };
        let Some((_, first)) = same_name().next() else {
            continue;
        };
        let kind = match first.points.first().map(|point| &point.value) {
            Some(PointValue::Histogram(_)) => MetricType::Histogram,
            _ => MetricType::Gauge,
        };
        let unit = match first.unit {
            "s" => Some(Unit::Seconds),
            "" => None,
            other => Some(Unit::Other(prometheus_name(other))),
        };
        let family_name = prometheus_name(name);
        let mut family =
            encoder.encode_descriptor(&family_name, first.description, unit.as_ref(), kind)?;
        for (run, metric) in same_name() {
            for point in &metric.points {
                let mut labels: Vec<(String, &str)> = vec![
                    ("run_id".into(), run.run.run_id.as_str()),
                    ("testplan".into(), run.run.testplan.as_str()),
                ];
                labels.extend(
                    point
                        .attributes
                        .iter()
                        .map(|(key, value)| (prometheus_name(key), value.as_ref())),
                );
                let series = family.encode_family(&labels)?;
                match &point.value {
                    PointValue::Gauge(value) => ConstGauge::new(*value).encode(series)?,
                    PointValue::Histogram(histogram) => {
                        let buckets: Vec<(f64, u64)> = histogram
                            .bounds
                            .iter()
                            .copied()
                            .chain(std::iter::once(f64::INFINITY))
                            .zip(histogram.bucket_counts.iter().copied())
                            .collect();
                        let mut series = series;
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

/// The roles, in the order of per-role arrays.
const ROLES: [&str; 3] = ["master", "worker", "standalone"];

/// A live source's counters: `swarmtel serve`'s connections, losses and queue.
fn encode_source(
    encoder: &mut DescriptorEncoder<'_>,
    source: &SourceCounters,
) -> Result<(), std::fmt::Error> {
    let by_role = |values: [u64; 3]| {
        ROLES
            .iter()
            .zip(values)
            .map(|(role, value)| (vec![("role", *role)], value))
    };
    let connections = &source.connections;
    counter_family(
        encoder,
        "swarmtel_serve_connections",
        "Connections accepted, by role.",
        by_role(connections.accepted),
    )?;
    gauge_family(
        encoder,
        "swarmtel_serve_open_connections",
        "Connections open now, by role.",
        by_role(source.open),
    )?;
    counter_family(
        encoder,
        "swarmtel_serve_bad_frames",
        "Frames that did not parse or named another node: skipped.",
        [(Vec::new(), connections.bad_frames)],
    )?;
    counter_family(
        encoder,
        "swarmtel_serve_overlong_lines",
        "Lines past the 1 MiB limit: skipped.",
        [(Vec::new(), connections.overlong)],
    )?;
    counter_family(
        encoder,
        "swarmtel_serve_duplicates_skipped",
        "Lines a client sent again after a reconnect that were already processed.",
        [(Vec::new(), connections.duplicates_skipped)],
    )?;
    counter_family(
        encoder,
        "swarmtel_serve_events_dropped",
        "Events lost before the pipeline: by the bridges, here under --overload drop, or in transit.",
        [
            (vec![("where", "bridges")], connections.dropped_by_clients),
            (vec![("where", "here")], connections.dropped_here),
            (vec![("where", "in_transit")], connections.lost_in_transit),
        ],
    )?;
    gauge_family(
        encoder,
        "swarmtel_serve_queue_bytes",
        "Bytes of read lines waiting for the pipeline.",
        [(Vec::new(), source.queued_bytes)],
    )?;
    gauge_family(
        encoder,
        "swarmtel_serve_queue_capacity_bytes",
        "The queue's byte budget (--queue-mib).",
        [(Vec::new(), source.queue_capacity_bytes)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::PluginCounters;

    #[test]
    fn counters_are_openmetrics_with_plugin_and_reason_labels() {
        let mut stats = PluginCounters {
            events_in: 7,
            telemetry_out: 3,
            ..PluginCounters::default()
        };
        stats.rejected.insert("schema", 2);
        stats.faults.insert("trap", 1);
        let snapshot = Snapshot {
            counters: Summary {
                lines: 10,
                events: 9,
                plugins: vec![("request-stats".into(), stats)],
                outputs: vec![crate::pipeline::counters::OutputRecords {
                    key: "outputs[\"1\"]".into(),
                    name: "out.ndjson".into(),
                    records: 3,
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
            },
            live_instances: 4,
            metrics: Arc::default(),
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
            metrics.record_request(0, 0, &request);
        }
        let runs = [RunContext {
            run_id: "r-1".into(),
            testplan: "checkout".into(),
        }];
        let snapshot = Snapshot {
            metrics: metrics.snapshot(&runs),
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
