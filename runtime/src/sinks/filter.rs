//! Output filters: which telemetry an output takes, by plugin, telemetry name and type.

use serde::Deserialize;

use super::Record;
use crate::bindings::types as wit;

/// `filter = { ... }` of one output. Every list that is given must contain the record's
/// value; an empty or absent list takes everything. The runtime's own records have the
/// plugin id `swarmtel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Plugin ids.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// Telemetry names (`telemetry_name` in the JSON line).
    #[serde(default)]
    pub names: Vec<String>,
    /// Telemetry types.
    #[serde(default)]
    pub types: Vec<TelemetryKind>,
}

/// A telemetry type, as a filter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TelemetryKind {
    /// Something that happened.
    Event,
    /// A measurement.
    Metric,
}

impl TelemetryKind {
    /// Its name in the config and in the JSON line's `telemetry_type`.
    pub fn name(self) -> &'static str {
        match self {
            TelemetryKind::Event => "event",
            TelemetryKind::Metric => "metric",
        }
    }

    /// The kind of a telemetry type.
    pub fn of(telemetry_type: wit::TelemetryType) -> Self {
        match telemetry_type {
            wit::TelemetryType::Event => TelemetryKind::Event,
            wit::TelemetryType::Metric => TelemetryKind::Metric,
        }
    }
}

impl FilterConfig {
    /// Whether the filter takes everything.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty() && self.names.is_empty() && self.types.is_empty()
    }

    /// Whether `record` passes.
    pub fn accepts(&self, record: &Record<'_>) -> bool {
        (self.plugins.is_empty() || self.plugins.iter().any(|p| p == record.origin.plugin))
            && (self.names.is_empty() || self.names.contains(&record.item.name))
            && (self.types.is_empty()
                || self
                    .types
                    .contains(&TelemetryKind::of(record.item.telemetry_type)))
    }
}
