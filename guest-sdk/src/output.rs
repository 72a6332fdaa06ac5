//! Telemetry and metric points a recorder hands back: locust-telemetry's `log_telemetry`, and
//! counters, gauges and response-time histograms.

use crate::__private::bindings::swarmtel::telemetry::types as wit;
use crate::TelemetryType;
use crate::metrics::{AttributeValue, Metric, ResponseTimes};

/// The type and name of a piece of telemetry, like locust-telemetry's `TelemetryData`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryData {
    telemetry_type: TelemetryType,
    name: String,
}

impl TelemetryData {
    /// Telemetry of type `event`: something happened.
    pub fn event(name: &str) -> Self {
        Self {
            telemetry_type: TelemetryType::Event,
            name: name.to_owned(),
        }
    }

    /// Telemetry of type `metric`: a measurement.
    pub fn metric(name: &str) -> Self {
        Self {
            telemetry_type: TelemetryType::Metric,
            name: name.to_owned(),
        }
    }
}

/// One logged item, as the host receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryItem {
    /// Event or metric.
    pub telemetry_type: TelemetryType,
    /// The telemetry name.
    pub name: String,
    /// The message.
    pub message: String,
    /// The fields as JSON object text; empty when there are none.
    pub fields: String,
}

/// Where a recorder logs telemetry and reports metric points during one call; the host
/// validates every item and point.
#[derive(Debug, Default)]
pub struct Output {
    items: Vec<wit::Telemetry>,
    points: Vec<wit::MetricPoint>,
}

impl Output {
    /// Logs telemetry without fields.
    pub fn log_telemetry(&mut self, telemetry: TelemetryData, message: impl Into<String>) {
        self.push(telemetry, message.into(), String::new());
    }

    /// Logs telemetry with fields: anything that serializes to a JSON object, such as
    /// `serde_json::json!({"endpoint": "/items", "count": 3})`. A value that does not
    /// serialize is reported through [`crate::log`] and the item is dropped.
    pub fn log_telemetry_with(
        &mut self,
        telemetry: TelemetryData,
        message: impl Into<String>,
        fields: impl serde::Serialize,
    ) {
        match serde_json::to_string(&fields) {
            Ok(fields) => self.push(telemetry, message.into(), fields),
            Err(error) => crate::log(
                crate::LogLevel::Error,
                &format!(
                    "telemetry {} dropped: fields do not serialize: {error}",
                    telemetry.name
                ),
            ),
        }
    }

    /// Logs telemetry whose fields are already JSON object text.
    pub fn log_telemetry_raw(
        &mut self,
        telemetry: TelemetryData,
        message: impl Into<String>,
        fields_json: String,
    ) {
        self.push(telemetry, message.into(), fields_json);
    }

    /// Adds `increment` to a counter (a monotonic sum), for the series of `attributes`, such
    /// as `&[("endpoint", name.into())]`. The host adds up the increments of every call and
    /// node.
    pub fn add_counter(
        &mut self,
        metric: &Metric,
        increment: u64,
        attributes: &[(&str, AttributeValue)],
    ) {
        self.points
            .push(metric.point(attributes, wit::MetricValue::Counter(increment)));
    }

    /// Sets a gauge (a value at this moment) for the series of `attributes`; the last report
    /// wins, over every node, so add an attribute to keep nodes apart.
    pub fn set_gauge(
        &mut self,
        metric: &Metric,
        value: f64,
        attributes: &[(&str, AttributeValue)],
    ) {
        self.points
            .push(metric.point(attributes, wit::MetricValue::Gauge(value)));
    }

    /// Reports response times observed since the last report of this series; the host merges
    /// them into a histogram in seconds with the bounds of `locust.client.duration`. Call
    /// [`ResponseTimes::clear`] after reporting, or the next report counts them again.
    pub fn record_response_times(
        &mut self,
        metric: &Metric,
        times: &ResponseTimes,
        attributes: &[(&str, AttributeValue)],
    ) {
        self.points
            .push(metric.point(attributes, wit::MetricValue::ResponseTimes(times.to_wit())));
    }

    /// How many metric points were reported in this call so far.
    pub fn metric_points(&self) -> usize {
        self.points.len()
    }

    /// How many items were logged in this call so far.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing was logged in this call so far.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn push(&mut self, telemetry: TelemetryData, message: String, fields: String) {
        self.items.push(wit::Telemetry {
            telemetry_type: telemetry.telemetry_type,
            name: telemetry.name,
            message,
            fields,
        });
    }

    pub(crate) fn take(&mut self) -> wit::RecorderOutput {
        wit::RecorderOutput {
            telemetry: std::mem::take(&mut self.items),
            metrics: std::mem::take(&mut self.points),
        }
    }
}

impl From<wit::Telemetry> for TelemetryItem {
    fn from(item: wit::Telemetry) -> Self {
        Self {
            telemetry_type: item.telemetry_type,
            name: item.name,
            message: item.message,
            fields: item.fields,
        }
    }
}
