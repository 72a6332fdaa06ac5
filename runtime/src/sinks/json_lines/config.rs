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
}

impl Default for JsonLinesConfig {
    fn default() -> Self {
        Self {
            path: stdout(),
            existing: Existing::default(),
            filter: FilterConfig::default(),
        }
    }
}

fn stdout() -> String {
    "-".to_owned()
}
