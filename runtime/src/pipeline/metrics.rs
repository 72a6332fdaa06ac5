//! The host's own metric types: what the built-in request metrics, the runtime's own
//! counters and plugins' metric points become before a metrics output encodes them. OpenTelemetry's data model (a metric has a name, a unit and points;
//! a point has attributes and a value), reduced to what is produced here. Names and
//! attribute keys are OpenTelemetry's (`locust.client.duration`, `http.request.method`); each
//! output spells them its own way (Prometheus: `locust_client_duration_seconds`,
//! `http_request_method`).

use std::borrow::Cow;

use crate::pipeline::enrich::RunContext;

/// One metric: a name, its unit and description, and its points.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// OpenTelemetry-style dotted name, such as `locust.client.duration`.
    pub name: Cow<'static, str>,
    /// UCUM unit, such as `s`; empty for a plain count.
    pub unit: Cow<'static, str>,
    /// One line on what it measures.
    pub description: Cow<'static, str>,
    /// Counter, gauge or histogram; every point's value is of this kind.
    pub kind: MetricKind,
    /// One point per attribute set.
    pub points: Vec<Point>,
}

/// The value of one metric for one set of attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Attribute key and value pairs, in a stable order.
    pub attributes: Vec<(Cow<'static, str>, AttributeValue)>,
    /// The value.
    pub value: PointValue,
}

/// An attribute's value: text, or a whole number (such as an HTTP status code).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttributeValue {
    /// Text.
    Text(Cow<'static, str>),
    /// A whole number.
    Int(i64),
    /// True or false.
    Bool(bool),
}

impl AttributeValue {
    /// The value as text, as a Prometheus label has it.
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            AttributeValue::Text(text) => Cow::Borrowed(text),
            AttributeValue::Int(number) => Cow::Owned(number.to_string()),
            AttributeValue::Bool(flag) => Cow::Borrowed(if *flag { "true" } else { "false" }),
        }
    }
}

impl From<Cow<'static, str>> for AttributeValue {
    fn from(text: Cow<'static, str>) -> Self {
        AttributeValue::Text(text)
    }
}

impl From<String> for AttributeValue {
    fn from(text: String) -> Self {
        AttributeValue::Text(Cow::Owned(text))
    }
}

impl From<&'static str> for AttributeValue {
    fn from(text: &'static str) -> Self {
        AttributeValue::Text(Cow::Borrowed(text))
    }
}

/// What kind of metric it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonic sum since the start ([`PointValue::Counter`]).
    Counter,
    /// A value at this moment ([`PointValue::Gauge`] or [`PointValue::IntGauge`]).
    Gauge,
    /// A cumulative histogram ([`PointValue::Histogram`]).
    Histogram,
}

/// A point's value.
#[derive(Debug, Clone, PartialEq)]
pub enum PointValue {
    /// A count since the start of the run.
    Counter(u64),
    /// A value at this moment (users running, a percentile).
    Gauge(f64),
    /// A whole value at this moment (instances alive, bytes queued).
    IntGauge(i64),
    /// A cumulative histogram since the start of the run.
    Histogram(HistogramPoint),
}

/// A cumulative explicit-bucket histogram, as OpenTelemetry and Prometheus both take it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramPoint {
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Upper bounds of the buckets, ascending; a last bucket to +Inf follows.
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative): `bounds.len() + 1` entries, the last one
    /// for values above every bound.
    pub bucket_counts: Vec<u64>,
}

/// The metrics of one run, with the run they belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMetrics {
    /// The run's id and test plan (labels in Prometheus, resource attributes in OTLP).
    pub run: RunContext,
    /// Event time of the run's first event, Unix seconds: the start of its cumulative sums.
    pub start_time: f64,
    /// Event time of its latest event: the time of its points.
    pub time: f64,
    /// The OTLP instrumentation scope its metrics go out under: `swarmtel.requests` for the
    /// built-in request metrics, `swarmtel.plugins` for plugins' metric points (each with its
    /// own start time).
    pub scope: &'static str,
    /// Its metrics.
    pub metrics: Vec<Metric>,
}

/// Points with their attributes, for the common cases.
impl Point {
    /// A point without attributes.
    pub fn bare(value: PointValue) -> Self {
        Self {
            attributes: Vec::new(),
            value,
        }
    }

    /// A point with one attribute.
    pub fn with(key: &'static str, value: impl Into<AttributeValue>, point: PointValue) -> Self {
        Self {
            attributes: vec![(Cow::Borrowed(key), value.into())],
            value: point,
        }
    }
}
