//! The config of the output side: `[[outputs]]` entries, each a `type` with that sink's own
//! settings (in the sink's `config` module) and an optional filter, and `[dead_letter]`.

use serde::Deserialize;

use super::filter::FilterConfig;
use super::json_lines::{Existing, JsonLinesConfig};
use super::otlp::OtlpConfig;
use super::prometheus::PrometheusConfig;

/// The output types, as `type` names them.
pub const OUTPUT_TYPES: [&str; 3] = ["json_lines", "prometheus", "otlp"];

/// One `[[outputs]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputConfig {
    /// `type = "json_lines"`: JSON lines to a file or stdout.
    JsonLines(JsonLinesConfig),
    /// `type = "prometheus"`: a scrape endpoint with the runtime's own counters.
    Prometheus(PrometheusConfig),
    /// `type = "otlp"`: metrics and logs to an OTLP/HTTP receiver.
    Otlp(OtlpConfig),
}

/// The filter of an output that has none: it takes everything it can show.
static NO_FILTER: FilterConfig = FilterConfig {
    plugins: Vec::new(),
    names: Vec::new(),
    types: Vec::new(),
};

impl OutputConfig {
    /// Reads one `[[outputs]]` entry: its `type`, then that type's settings. An error is the
    /// key it concerns (below the entry, such as `type` or `listen`; empty for the entry as a
    /// whole) and what is wrong.
    pub fn from_table(mut table: toml::Table) -> Result<Self, (String, String)> {
        let kind = match table.remove("type") {
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err((
                    "type".into(),
                    format!("must be a string, one of {OUTPUT_TYPES:?}, not {other}"),
                ));
            }
            None => {
                return Err((
                    "type".into(),
                    format!("missing: each output needs a type, one of {OUTPUT_TYPES:?}"),
                ));
            }
        };
        let settings = toml::Value::Table(table);
        // toml names the key below the entry on a line `in `KEY`` of its message.
        let bad = |error: toml::de::Error| {
            let text = error.to_string();
            let key = text
                .lines()
                .find_map(|line| line.trim().strip_prefix("in `")?.strip_suffix('`'))
                .unwrap_or_default()
                .to_owned();
            (key, error.message().trim().to_owned())
        };
        match kind.as_str() {
            "json_lines" => Ok(OutputConfig::JsonLines(
                JsonLinesConfig::deserialize(settings).map_err(bad)?,
            )),
            "prometheus" => {
                let config = PrometheusConfig::deserialize(settings).map_err(bad)?;
                config
                    .check()
                    .map_err(|(key, message)| (key.to_owned(), message))?;
                Ok(OutputConfig::Prometheus(config))
            }
            "otlp" => {
                let config = OtlpConfig::deserialize(settings).map_err(bad)?;
                config
                    .check()
                    .map_err(|(key, message)| (key.to_owned(), message))?;
                Ok(OutputConfig::Otlp(config))
            }
            other => Err((
                "type".into(),
                format!("unknown output type `{other}`; the types are {OUTPUT_TYPES:?}"),
            )),
        }
    }

    /// The `type` key's value.
    pub fn type_name(&self) -> &'static str {
        match self {
            OutputConfig::JsonLines(_) => "json_lines",
            OutputConfig::Prometheus(_) => "prometheus",
            OutputConfig::Otlp(_) => "otlp",
        }
    }

    /// Which telemetry the output takes.
    pub fn filter(&self) -> &FilterConfig {
        match self {
            OutputConfig::JsonLines(config) => &config.filter,
            OutputConfig::Prometheus(_) => &NO_FILTER,
            OutputConfig::Otlp(config) => &config.filter,
        }
    }
}

/// `[dead_letter]`: where rejected telemetry goes, with the reason, as JSON lines.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// A file path, or `-` for stderr (the default).
    #[serde(default = "stderr")]
    pub path: String,
    /// What to do when the file exists already, as for a JSON-lines output.
    #[serde(default)]
    pub existing: Existing,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            path: stderr(),
            existing: Existing::default(),
        }
    }
}

fn stderr() -> String {
    "-".to_owned()
}

/// `[output]`: the single JSON-lines output (and dead letter) of configs written before
/// `[[outputs]]`; still accepted, as one `json_lines` output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyOutputConfig {
    /// JSON lines of telemetry: a file path, or `-` for stdout.
    #[serde(default = "stdout")]
    pub path: String,
    /// Rejected telemetry: a file path, or `-` for stderr.
    pub dead_letter: Option<String>,
    /// What to do when an output file exists already.
    #[serde(default)]
    pub existing: Existing,
}

fn stdout() -> String {
    "-".to_owned()
}
