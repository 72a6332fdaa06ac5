//! `type = "json_lines"`: its settings.

use serde::Deserialize;

use super::writer::Existing;
use crate::sinks::filter::FilterConfig;

/// A JSON-lines output: locust-telemetry's log line, one a line, for Loki/Promtail.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonLinesConfig {
    /// A file path (relative to the config's folder), or `-` for stdout (the default).
    #[serde(default = "stdout")]
    pub path: String,
    /// What to do when the file exists already (a restarted runtime, a second run):
    /// `append` (the default), `new` (write `NAME.1.EXT`, ...) or `truncate`.
    #[serde(default)]
    pub existing: Existing,
    /// Which telemetry this output takes; all of it by default.
    #[serde(default)]
    pub filter: FilterConfig,
    /// The line's shape: swarmtel's own (the default) or `locust-telemetry`'s, for its
    /// dashboards and Promtail rules.
    #[serde(default)]
    pub envelope: Envelope,
}

/// The shape of a JSON line (see [`crate::pipeline::enrich`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Envelope {
    /// swarmtel's line: `telemetry_type` `metric`, `source` the role (`master`), the run id of
    /// the connection, and the `plugin` that wrote it.
    #[default]
    Swarmtel,
    /// locust-telemetry 2.1.2's line: `telemetry_type` `metrics`, `source` the runner class
    /// (`MasterRunner`, `WorkerRunner`, `LocalRunner`), a run id per test start (the test id
    /// the bridge sends with `test_start`; the run's id before it), no `plugin` key.
    LocustTelemetry,
}

impl Default for JsonLinesConfig {
    fn default() -> Self {
        Self {
            path: stdout(),
            existing: Existing::default(),
            filter: FilterConfig::default(),
            envelope: Envelope::default(),
        }
    }
}

fn stdout() -> String {
    "-".to_owned()
}
