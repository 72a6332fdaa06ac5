//! The OTLP encoding: the host's metrics as an `ExportMetricsServiceRequest` and telemetry
//! records as an `ExportLogsServiceRequest`, built from the official protobuf messages
//! (`opentelemetry-proto`, `prost`). Times are event times: a replay exports the times of
//! its events, not the time it ran.
//!
//! Resources: the runtime's own counters under `service.name = "swarmtel"`; each run's
//! request metrics under that plus `run_id` and `testplan`; logs per run, role and node, with
//! `role` and `node` as well. Sums and histograms are cumulative from the run's first event.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1 as proto;
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::Value;

use crate::pipeline::enrich::{Level, RunContext};
use crate::pipeline::metrics::{AttributeValue, Metric, MetricKind, PointValue, RunMetrics};
use crate::sinks::Record;

/// The `service.name` of everything this runtime exports.
pub const SERVICE_NAME: &str = "swarmtel";

/// Deepest nesting of a JSON field turned into an attribute value; deeper values are
/// written as JSON text.
const MAX_VALUE_DEPTH: usize = 8;

/// Unix seconds as nanoseconds (0 for times before the epoch or not finite).
pub fn unix_nanos(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1e9) as u64
    } else {
        0
    }
}

fn string_value(value: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    }
}

fn key_value(key: impl Into<String>, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    key_value(key, string_value(value))
}

/// A JSON value as an OTLP attribute value: objects as key-value lists, arrays as arrays,
/// integers as ints (larger ones as doubles), nested past [`MAX_VALUE_DEPTH`] as JSON text.
fn json_value(value: &Value, depth: usize) -> AnyValue {
    use any_value::Value as V;
    if depth >= MAX_VALUE_DEPTH && matches!(value, Value::Array(_) | Value::Object(_)) {
        return string_value(value.to_string());
    }
    let value = match value {
        Value::Null => return AnyValue { value: None },
        Value::Bool(flag) => V::BoolValue(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(int) => V::IntValue(int),
            None => V::DoubleValue(number.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(text) => V::StringValue(text.clone()),
        Value::Array(items) => V::ArrayValue(ArrayValue {
            values: items
                .iter()
                .map(|item| json_value(item, depth + 1))
                .collect(),
        }),
        Value::Object(map) => V::KvlistValue(KeyValueList {
            values: map
                .iter()
                .map(|(key, item)| key_value(key.clone(), json_value(item, depth + 1)))
                .collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    })
}

fn resource(attributes: Vec<KeyValue>) -> Option<Resource> {
    let mut all = vec![string_attribute("service.name", SERVICE_NAME)];
    all.extend(attributes);
    Some(Resource {
        attributes: all,
        ..Default::default()
    })
}

fn run_attributes(run: &RunContext) -> Vec<KeyValue> {
    vec![
        string_attribute("run_id", &run.run_id),
        string_attribute("testplan", &run.testplan),
    ]
}

/// One host metric as an OTLP metric, its points stamped `start` and `time` (nanoseconds).
fn metric(metric: &Metric, start: u64, time: u64) -> proto::Metric {
    use proto::metric::Data;
    let attributes = |point: &crate::pipeline::metrics::Point| -> Vec<KeyValue> {
        point
            .attributes
            .iter()
            .map(|(key, value)| match value {
                AttributeValue::Text(text) => string_attribute(key, text),
                AttributeValue::Int(number) => key_value(
                    key.as_ref(),
                    AnyValue {
                        value: Some(any_value::Value::IntValue(*number)),
                    },
                ),
                AttributeValue::Bool(flag) => key_value(
                    key.as_ref(),
                    AnyValue {
                        value: Some(any_value::Value::BoolValue(*flag)),
                    },
                ),
            })
            .collect()
    };
    let number = |point: &crate::pipeline::metrics::Point| {
        let value = match &point.value {
            PointValue::Counter(count) => {
                proto::number_data_point::Value::AsInt(i64::try_from(*count).unwrap_or(i64::MAX))
            }
            PointValue::Gauge(value) => proto::number_data_point::Value::AsDouble(*value),
            PointValue::IntGauge(value) => proto::number_data_point::Value::AsInt(*value),
            PointValue::Histogram(_) => return None,
        };
        Some(proto::NumberDataPoint {
            attributes: attributes(point),
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(value),
            ..Default::default()
        })
    };
    let cumulative = proto::AggregationTemporality::Cumulative as i32;
    let data = match metric.kind {
        MetricKind::Counter => Data::Sum(proto::Sum {
            data_points: metric.points.iter().filter_map(number).collect(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        MetricKind::Gauge => Data::Gauge(proto::Gauge {
            data_points: metric
                .points
                .iter()
                .filter_map(number)
                .map(|point| proto::NumberDataPoint {
                    // A gauge has no start.
                    start_time_unix_nano: 0,
                    ..point
                })
                .collect(),
        }),
        MetricKind::Histogram => Data::Histogram(proto::Histogram {
            data_points: metric
                .points
                .iter()
                .filter_map(|point| match &point.value {
                    PointValue::Histogram(histogram) => Some(proto::HistogramDataPoint {
                        attributes: attributes(point),
                        start_time_unix_nano: start,
                        time_unix_nano: time,
                        count: histogram.count,
                        sum: Some(histogram.sum),
                        bucket_counts: histogram.bucket_counts.clone(),
                        explicit_bounds: histogram.bounds.to_vec(),
                        ..Default::default()
                    }),
                    _ => None,
                })
                .collect(),
            aggregation_temporality: cumulative,
        }),
    };
    proto::Metric {
        name: metric.name.to_string(),
        description: metric.description.to_string(),
        unit: metric.unit.to_string(),
        data: Some(data),
        ..Default::default()
    }
}

/// The metrics export: the runtime's counters (cumulative since `started`, at `now`, both
/// Unix seconds of the host's clock) and each run's request metrics (at event times).
pub fn metrics_request(
    runtime: &[Metric],
    started: f64,
    now: f64,
    runs: &[RunMetrics],
) -> ExportMetricsServiceRequest {
    let mut resource_metrics = vec![proto::ResourceMetrics {
        resource: resource(Vec::new()),
        scope_metrics: vec![proto::ScopeMetrics {
            scope: scope("swarmtel"),
            metrics: runtime
                .iter()
                .map(|m| metric(m, unix_nanos(started), unix_nanos(now)))
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }];
    // One resource per run, one scope per entry of that run (request metrics, plugins').
    let mut resource_of: std::collections::HashMap<&RunContext, usize> = Default::default();
    for run in runs {
        let (start, time) = (unix_nanos(run.start_time), unix_nanos(run.time));
        let scope_metrics = proto::ScopeMetrics {
            scope: scope(run.scope),
            metrics: run.metrics.iter().map(|m| metric(m, start, time)).collect(),
            ..Default::default()
        };
        match resource_of.get(&run.run) {
            Some(&index) => resource_metrics[index].scope_metrics.push(scope_metrics),
            None => {
                resource_of.insert(&run.run, resource_metrics.len());
                resource_metrics.push(proto::ResourceMetrics {
                    resource: resource(run_attributes(&run.run)),
                    scope_metrics: vec![scope_metrics],
                    ..Default::default()
                });
            }
        }
    }
    ExportMetricsServiceRequest { resource_metrics }
}

/// One record as an OTLP log record: the message as its body, the telemetry's type, name
/// and plugin and the recorder's fields as attributes, the event time as its time.
pub fn log_record(record: &Record<'_>) -> LogRecord {
    let (severity, text) = match record.level {
        Level::Info => (SeverityNumber::Info, "INFO"),
        Level::Warning => (SeverityNumber::Warn, "WARN"),
        Level::Error => (SeverityNumber::Error, "ERROR"),
    };
    let item = record.item;
    let mut attributes = vec![
        string_attribute(
            "telemetry_type",
            crate::sinks::filter::TelemetryKind::of(item.telemetry_type).name(),
        ),
        string_attribute("telemetry_name", &item.name),
        string_attribute("plugin", record.origin.plugin),
    ];
    attributes.extend(
        item.fields
            .iter()
            .map(|(key, value)| key_value(key.clone(), json_value(value, 0))),
    );
    let time = unix_nanos(record.origin.time);
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        severity_number: severity as i32,
        severity_text: text.to_owned(),
        body: Some(string_value(item.message.clone())),
        attributes,
        event_name: item.name.clone(),
        ..Default::default()
    }
}

/// The resource of a record's logs: its run, role and node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogSource {
    run: RunContext,
    role: &'static str,
    node: String,
    plugin: String,
}

impl LogSource {
    /// Where a record came from.
    pub fn of(record: &Record<'_>) -> Self {
        Self {
            run: record.run.clone(),
            role: record.origin.role.as_str(),
            node: record.origin.node.to_owned(),
            plugin: record.origin.plugin.to_owned(),
        }
    }
}

/// The logs export of records grouped by where they came from, in the order given.
pub fn logs_request(groups: Vec<(LogSource, Vec<LogRecord>)>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: groups
            .into_iter()
            .map(|(source, log_records)| {
                let mut attributes = run_attributes(&source.run);
                attributes.push(string_attribute("role", source.role));
                attributes.push(string_attribute("node", &source.node));
                ResourceLogs {
                    resource: resource(attributes),
                    scope_logs: vec![ScopeLogs {
                        scope: scope(&format!("swarmtel.{}", source.plugin)),
                        log_records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect(),
    }
}
