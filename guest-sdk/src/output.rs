//! Telemetry a recorder hands back: locust-telemetry's `log_telemetry`.

use crate::__private::bindings::swarmtel::telemetry::types as wit;
use crate::TelemetryType;

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

/// Where a recorder logs telemetry during one call; the host validates every item.
#[derive(Debug, Default)]
pub struct Output {
    items: Vec<wit::Telemetry>,
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

    pub(crate) fn take(&mut self) -> Vec<wit::Telemetry> {
        std::mem::take(&mut self.items)
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
