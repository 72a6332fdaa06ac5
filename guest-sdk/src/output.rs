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
/// validates every item and point. Points of one series (name and attributes) reported more
/// than once in a call go out as one: counters add up, the last gauge wins, response times
/// merge, so reporting per request stays one point per series.
#[derive(Debug, Default)]
pub struct Output {
    items: Vec<wit::Telemetry>,
    points: Vec<wit::MetricPoint>,
    /// Index in `points` by series key (name and attributes).
    series: std::collections::HashMap<String, usize>,
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
        self.push_point(metric.point(attributes, wit::MetricValue::Counter(increment)));
    }

    /// Sets a gauge (a value at this moment) for the series of `attributes`; the last report
    /// wins, over every node, so add an attribute to keep nodes apart.
    pub fn set_gauge(
        &mut self,
        metric: &Metric,
        value: f64,
        attributes: &[(&str, AttributeValue)],
    ) {
        self.push_point(metric.point(attributes, wit::MetricValue::Gauge(value)));
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
        self.push_point(metric.point(attributes, wit::MetricValue::ResponseTimes(times.to_wit())));
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

    /// Adds a point, or merges it into this call's point of the same series and kind.
    fn push_point(&mut self, point: wit::MetricPoint) {
        use std::fmt::Write;
        let mut key = point.name.clone();
        for attribute in &point.attributes {
            let _ = write!(key, "\u{0}{}\u{0}{:?}", attribute.key, attribute.value);
        }
        let Some(&index) = self.series.get(&key) else {
            self.series.insert(key, self.points.len());
            self.points.push(point);
            return;
        };
        let known = &mut self.points[index].value;
        match (known, point.value) {
            (wit::MetricValue::Counter(total), wit::MetricValue::Counter(increment)) => {
                *total = total.saturating_add(increment);
            }
            (wit::MetricValue::Gauge(last), wit::MetricValue::Gauge(value)) => *last = value,
            (wit::MetricValue::ResponseTimes(merged), wit::MetricValue::ResponseTimes(times)) => {
                merged.sum_ms += times.sum_ms;
                for (ms, count) in times.buckets {
                    match merged
                        .buckets
                        .binary_search_by_key(&ms, |&(known, _)| known)
                    {
                        Ok(at) => merged.buckets[at].1 = merged.buckets[at].1.saturating_add(count),
                        Err(at) => merged.buckets.insert(at, (ms, count)),
                    }
                }
            }
            // Another kind under the same name: the host decides (it keeps the first kind).
            (_, value) => self.points.push(wit::MetricPoint { value, ..point }),
        }
    }

    pub(crate) fn take(&mut self) -> wit::RecorderOutput {
        wit::RecorderOutput {
            telemetry: std::mem::take(&mut self.items),
            metrics: {
                self.series.clear();
                std::mem::take(&mut self.points)
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_of_one_series_in_a_call_go_out_as_one() {
        let mut out = Output::default();
        let orders = Metric::new("orders").unit("{order}");
        let depth = Metric::new("queue.depth");
        let times = Metric::new("duration");
        for _ in 0..3 {
            out.add_counter(&orders, 2, &[("endpoint", "/a".into())]);
        }
        out.add_counter(&orders, 5, &[("endpoint", "/b".into())]);
        out.set_gauge(&depth, 1.0, &[]);
        out.set_gauge(&depth, 4.0, &[]);
        let mut first = ResponseTimes::new();
        first.observe(12.0);
        first.observe(145.0);
        let mut second = ResponseTimes::new();
        second.observe(12.4);
        second.observe(3.0);
        out.record_response_times(&times, &first, &[]);
        out.record_response_times(&times, &second, &[]);
        // Another kind under a known name is not merged: the host rejects it.
        out.set_gauge(&orders, 1.0, &[("endpoint", "/a".into())]);
        assert_eq!(out.metric_points(), 5);
        let output = out.take();
        let values: Vec<(&str, &wit::MetricValue)> = output
            .metrics
            .iter()
            .map(|point| (point.name.as_str(), &point.value))
            .collect();
        assert_eq!(
            values,
            [
                ("orders", &wit::MetricValue::Counter(6)),
                ("orders", &wit::MetricValue::Counter(5)),
                ("queue.depth", &wit::MetricValue::Gauge(4.0)),
                (
                    "duration",
                    &wit::MetricValue::ResponseTimes(wit::ResponseTimes {
                        buckets: vec![(3, 1), (12, 2), (140, 1)],
                        sum_ms: 172.4,
                    })
                ),
                ("orders", &wit::MetricValue::Gauge(1.0)),
            ]
        );
        assert_eq!(output.metrics[0].unit, "{order}");
        // The next call starts afresh.
        out.add_counter(&orders, 1, &[("endpoint", "/a".into())]);
        assert_eq!(out.take().metrics[0].value, wit::MetricValue::Counter(1));
    }
}
