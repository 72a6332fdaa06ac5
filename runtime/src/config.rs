//! The config file: run context, output, and the plugin list with options and limits.
//!
//! Reads TOML, rejects unknown keys, resolves relative paths against the config's folder.
//! Option values are checked against each plugin's declared options later, in
//! [`crate::plugin`], because only the loaded plugin knows them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::pipeline::request_metrics::RequestMetricsConfig;

use crate::sinks::config::{DeadLetterConfig, LegacyOutputConfig, OutputConfig};
use crate::sinks::json_lines::{Existing, JsonLinesConfig};

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the config's shape (unknown key, wrong type).
    #[error("config {path}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A value parses but makes no sense.
    #[error("config {path}: {key}: {message}")]
    Value {
        /// The config file.
        path: PathBuf,
        /// The dotted key, such as `plugins[1].limits.memory_mib`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The run's context, stamped on every telemetry line.
    pub run: RunConfig,
    /// `[output]` of configs written before `[[outputs]]`; read into `outputs` and
    /// `dead_letter`.
    #[serde(default, rename = "output")]
    legacy_output: Option<LegacyOutputConfig>,
    /// `[[outputs]]` as written: read entry by entry, so an error names its entry.
    #[serde(default, rename = "outputs")]
    listed_outputs: Option<Vec<toml::Table>>,
    /// `[dead_letter]` as written.
    #[serde(default, rename = "dead_letter")]
    listed_dead_letter: Option<DeadLetterConfig>,
    /// Where telemetry goes: the `[[outputs]]` entries, `[output]`, or JSON lines on stdout
    /// when the config names none.
    #[serde(skip)]
    pub outputs: Vec<OutputConfig>,
    /// Where rejected telemetry goes: stderr unless the config says otherwise.
    #[serde(skip)]
    pub dead_letter: DeadLetterConfig,
    /// The plugins to load, in order.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// The compile cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// `[request_metrics]`: the host's own Locust request statistics and their bounds.
    #[serde(default)]
    pub request_metrics: RequestMetricsConfig,
    /// The config file's folder; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The config file itself, for error messages.
    #[serde(skip)]
    pub source_path: PathBuf,
}

/// `[run]`: the run's context.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The test plan's name (locust-telemetry's `--testplan`), on every telemetry line.
    pub testplan: String,
    /// The run id on every telemetry line; generated when absent.
    pub run_id: Option<String>,
    /// Most request events in one recorder call. Larger batches cross the sandbox cheaper.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Most recorder instances alive at once, over every plugin and node. A node whose
    /// recorders would pass it is refused (its events are counted and reported), so peers
    /// that invent node names or run ids cannot grow the runtime without bound.
    #[serde(default = "default_max_live_instances")]
    pub max_live_instances: usize,
    /// A node that sent no event for this many seconds (of the host's clock) has its
    /// recorders finished and freed, as if it had quit; a later event starts new ones.
    /// 0 turns this off.
    #[serde(default = "default_node_idle_seconds")]
    pub node_idle_seconds: u64,
}

fn default_batch_size() -> usize {
    1024
}

fn default_max_live_instances() -> usize {
    4096
}

fn default_node_idle_seconds() -> u64 {
    600
}

/// `path` without `.` components and with `..` applied where it can be, so two spellings of
/// one file compare equal (symbolic links are not followed; `Outputs` also compares the files
/// it opened).
fn normalized(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut parts: Vec<Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match parts.last() {
                Some(Component::Normal(_)) => {
                    parts.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir) => {}
                _ => parts.push(component),
            },
            other => parts.push(other),
        }
    }
    parts.iter().collect()
}

/// The key of an `[[outputs]]` entry's setting.
fn listed_key(index: usize, key: &str) -> String {
    format!("outputs[{index}].{key}")
}

/// The key of an `[output]` setting (there is one output).
fn legacy_key(_index: usize, key: &str) -> String {
    format!("output.{key}")
}

/// Where an output writes, for telling two outputs on one destination apart.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Stdout,
    Stderr,
    File(PathBuf),
    Listen(std::net::SocketAddr),
}

/// `[cache]`: precompiled components, so a plugin is compiled once per version and engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether to use the cache.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The cache folder; `$SWARMTEL_CACHE_DIR`, else `$XDG_CACHE_HOME/swarmtel`, else
    /// `~/.cache/swarmtel` when absent.
    pub dir: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// A role as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    /// The master of a distributed run.
    Master,
    /// A worker of a distributed run.
    Worker,
    /// A plain `locust` run.
    Standalone,
}

impl RoleName {
    /// Every role.
    pub const ALL: [RoleName; 3] = [RoleName::Master, RoleName::Worker, RoleName::Standalone];

    /// The role's name as in the config and the event stream.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleName::Master => "master",
            RoleName::Worker => "worker",
            RoleName::Standalone => "standalone",
        }
    }

    /// Parses `master`, `worker` or `standalone`.
    pub fn parse(text: &str) -> Option<RoleName> {
        match text {
            "master" => Some(RoleName::Master),
            "worker" => Some(RoleName::Worker),
            "standalone" => Some(RoleName::Standalone),
            _ => None,
        }
    }
}

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's `.wasm` component, relative to the config's folder.
    pub path: PathBuf,
    /// The roles to load it for; every role its recorders serve when absent.
    pub roles: Option<Vec<RoleName>>,
    /// Option values, by the plugin's option names.
    #[serde(default)]
    pub options: BTreeMap<String, toml::Value>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities granted beyond the default of none.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Environment variables the host may read for this plugin's options (an option's
    /// declared `env-var` is read only when it is listed here). Secrets of swarmtel, the bridge
    /// and Locust can never be listed.
    #[serde(default)]
    pub env_vars: Vec<String>,
    /// Whether the run fails when this plugin cannot be loaded or ends disabled. By default a
    /// broken plugin is reported and the run goes on without it.
    #[serde(default)]
    pub required: bool,
}

/// `[plugins.capabilities]`: what a plugin may see of the host. Nothing by default: without a
/// grant, clocks read as the Unix epoch and random numbers are a fixed sequence, so a guest
/// learns nothing about the host and behaves the same on every run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// The real wall clock (`wasi:clocks/wall-clock`).
    pub wall_clock: bool,
    /// The real monotonic clock (`wasi:clocks/monotonic-clock`).
    pub monotonic_clock: bool,
    /// Real random numbers (`wasi:random`).
    pub random: bool,
}

impl Capabilities {
    /// The granted capabilities by name, for `swarmtel check`.
    pub fn granted(&self) -> Vec<&'static str> {
        [
            (self.wall_clock, "wall_clock"),
            (self.monotonic_clock, "monotonic_clock"),
            (self.random, "random"),
        ]
        .into_iter()
        .filter_map(|(granted, name)| granted.then_some(name))
        .collect()
    }
}

/// `[plugins.limits]`: what one recorder instance may use.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget of one call into the guest, in milliseconds (epoch deadline).
    pub cpu_ms_per_call: u64,
    /// Linear memory cap per instance, in MiB.
    pub memory_mib: u64,
    /// Most telemetry items one call may return; the rest are rejected.
    pub max_items_per_call: usize,
    /// Largest telemetry item (name + message + fields), in bytes.
    pub max_item_bytes: usize,
    /// Largest total of one call's telemetry, in bytes; items past it are rejected.
    pub max_call_bytes: usize,
    /// Faults (traps, deadline, memory, fuel) within `fault_window_seconds` of event time
    /// that disable the recorder for the rest of the run.
    pub max_faults: u32,
    /// The window in which faults count towards `max_faults`, in seconds of event time.
    pub fault_window_seconds: u64,
    /// Wait before the first restart after a fault, in ms of event time; doubles with each
    /// further fault in a row. Events meanwhile are counted as lost.
    pub restart_backoff_ms: u64,
    /// Longest wait before a restart, in ms of event time.
    pub restart_backoff_max_ms: u64,
    /// Fuel (roughly, wasm instructions) per call, for deterministic budgets; off when absent.
    pub fuel_per_call: Option<u64>,
    /// Captured stdout plus stderr kept per instance, in bytes; the rest is dropped.
    pub stdio_bytes: usize,
    /// Most component and core instances one recorder instance may create.
    pub max_instances: usize,
    /// Most tables one recorder instance may create.
    pub max_tables: usize,
    /// Most elements in one table.
    pub max_table_elements: usize,
    /// Most metric points one call may return; the rest are rejected.
    pub max_points_per_call: usize,
    /// Most metric series (distinct name and attribute sets) the plugin may create over the
    /// process's life, over all its recorders and runs; points of new series past it are
    /// rejected. At most 10,000.
    pub max_metric_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            cpu_ms_per_call: 200,
            memory_mib: 64,
            max_items_per_call: 1_000,
            max_item_bytes: 16 * 1024,
            max_call_bytes: 1024 * 1024,
            max_faults: 5,
            fault_window_seconds: 60,
            restart_backoff_ms: 100,
            restart_backoff_max_ms: 10_000,
            fuel_per_call: None,
            stdio_bytes: 64 * 1024,
            max_instances: 32,
            max_tables: 16,
            max_table_elements: 100_000,
            max_points_per_call: 1_000,
            max_metric_series: 1_000,
        }
    }
}

/// Host memory one telemetry item may take beyond its bytes when a call's results are copied
/// out of the guest (the host's record of three strings and a type).
pub const RESULT_ITEM_OVERHEAD_BYTES: usize = 128;

/// Host memory one metric point may take beyond its text and lists when a call's results are
/// copied out of the guest (its record, its value and list headers).
pub const RESULT_POINT_OVERHEAD_BYTES: usize = 256;

/// The most `max_metric_series` a plugin may be given.
pub const MAX_METRIC_SERIES: usize = 10_000;

impl Limits {
    /// Most bytes of host memory one call's results may take: `max_call_bytes` of text and
    /// lists plus [`RESULT_ITEM_OVERHEAD_BYTES`] for each of `max_items_per_call` items and
    /// [`RESULT_POINT_OVERHEAD_BYTES`] for each of `max_points_per_call` metric points.
    /// wasmtime checks it (as the store's hostcall fuel) before it copies anything out of the
    /// guest; a call over it faults (`results_too_large`). With the defaults: 1,432,576 bytes.
    pub fn result_bytes(&self) -> usize {
        self.max_call_bytes
            .saturating_add(
                self.max_items_per_call
                    .saturating_mul(RESULT_ITEM_OVERHEAD_BYTES),
            )
            .saturating_add(
                self.max_points_per_call
                    .saturating_mul(RESULT_POINT_OVERHEAD_BYTES),
            )
    }
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, path, &base_dir)
    }

    /// Parses config text as if read from `path`, resolving paths against `base_dir`.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|error| ConfigError::Invalid {
            path: path.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        config.base_dir = base_dir.to_owned();
        config.source_path = path.to_owned();
        config.resolve_outputs()?;
        config.check()?;
        Ok(config)
    }

    /// A plugin's `.wasm` path, resolved against the config's folder.
    pub fn plugin_path(&self, plugin: &PluginConfig) -> PathBuf {
        self.resolve(&plugin.path)
    }

    /// A path from the config, resolved against its folder; `-` stays as is.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() || path == Path::new("-") {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    fn value_error(&self, key: String, message: impl Into<String>) -> ConfigError {
        ConfigError::Value {
            path: self.source_path.clone(),
            key,
            message: message.into(),
        }
    }

    /// Reads `[[outputs]]`, `[dead_letter]` and the older `[output]` into [`Config::outputs`]
    /// and [`Config::dead_letter`], and refuses two outputs on one file, stream or address:
    /// their buffered writes would cut each other's lines.
    fn resolve_outputs(&mut self) -> Result<(), ConfigError> {
        let legacy = self.legacy_output.take();
        let listed = self.listed_outputs.take();
        // Whether the config names a dead letter, and whether the one output is the default
        // (for messages about what the user did not write).
        let dead_letter_given = self.listed_dead_letter.is_some()
            || legacy
                .as_ref()
                .is_some_and(|legacy| legacy.dead_letter.is_some());
        let mut default_output = false;
        let listed_dead_letter = self.listed_dead_letter.take();
        // The key each output's destination goes by in messages.
        let (output_key, dead_letter_key): (fn(usize, &str) -> String, &str);
        if let Some(legacy) = legacy {
            if listed.is_some() {
                return Err(self.value_error(
                    "output".into(),
                    "[output] and [[outputs]] cannot both be used: make [output]'s path an [[outputs]] entry with type = \"json_lines\"",
                ));
            }
            if legacy.dead_letter.is_some() && listed_dead_letter.is_some() {
                return Err(self.value_error(
                    "output.dead_letter".into(),
                    "[dead_letter] is given too: keep one of them",
                ));
            }
            self.outputs = vec![OutputConfig::JsonLines(JsonLinesConfig {
                path: legacy.path,
                existing: legacy.existing,
                filter: Default::default(),
                envelope: Default::default(),
            })];
            (output_key, dead_letter_key) = match (listed_dead_letter, legacy.dead_letter) {
                (Some(dead_letter), _) => {
                    self.dead_letter = dead_letter;
                    (legacy_key, "dead_letter.path")
                }
                (None, dead_letter) => {
                    self.dead_letter = DeadLetterConfig {
                        path: dead_letter.unwrap_or_else(|| "-".into()),
                        existing: legacy.existing,
                    };
                    (legacy_key, "output.dead_letter")
                }
            };
        } else {
            // No `outputs` key at all: telemetry goes to stdout (`outputs = []` stays empty).
            default_output = listed.is_none();
            let mut outputs = Vec::new();
            for (index, table) in listed.into_iter().flatten().enumerate() {
                let output = OutputConfig::from_table(table).map_err(|(key, message)| {
                    let key = if key.is_empty() {
                        format!("outputs[{index}]")
                    } else {
                        format!("outputs[{index}].{key}")
                    };
                    self.value_error(key, message)
                })?;
                outputs.push(output);
            }
            if default_output {
                outputs.push(OutputConfig::JsonLines(JsonLinesConfig::default()));
            }
            self.outputs = outputs;
            self.dead_letter = listed_dead_letter.unwrap_or_default();
            (output_key, dead_letter_key) = (listed_key, "dead_letter.path");
        }
        let mut claimed: Vec<(Destination, Existing, String)> = Vec::new();
        let mut claim = |config: &Config, destination: Destination, existing, key: String| {
            let taken = claimed.iter().find(|(other, other_existing, _)| {
                // Two outputs that each write a new numbered file never share one.
                *other == destination
                    && !(matches!(destination, Destination::File(_))
                        && existing == Existing::New
                        && *other_existing == Existing::New)
            });
            if let Some((_, _, first)) = taken {
                return Err(config.value_error(
                    key,
                    format!(
                        "{first} writes there already: two outputs on one file, stream or address would cut each other's lines"
                    ),
                ));
            }
            claimed.push((destination, existing, key));
            Ok(())
        };
        let dead_letter_key = if dead_letter_given {
            dead_letter_key.to_owned()
        } else {
            "the dead letter (stderr by default)".to_owned()
        };
        claim(
            self,
            self.destination(&self.dead_letter.path, Destination::Stderr),
            self.dead_letter.existing,
            dead_letter_key,
        )?;
        for (index, output) in self.outputs.iter().enumerate() {
            match output {
                OutputConfig::JsonLines(settings) => claim(
                    self,
                    self.destination(&settings.path, Destination::Stdout),
                    settings.existing,
                    if default_output {
                        "the default output (stdout)".to_owned()
                    } else {
                        output_key(index, "path")
                    },
                )?,
                OutputConfig::Prometheus(settings) => {
                    let address = settings.address().map_err(|message| {
                        self.value_error(output_key(index, "listen"), message)
                    })?;
                    if address.port() == 0 {
                        // The kernel picks a free port for each.
                        continue;
                    }
                    claim(
                        self,
                        Destination::Listen(address),
                        Existing::Append,
                        output_key(index, "listen"),
                    )?
                }
                // Requests to a receiver do not cut each other: two outputs may share one.
                OutputConfig::Otlp(_) => {}
            }
        }
        Ok(())
    }

    /// Where a path of an output leads: `-` is the console stream `console`, and so are the
    /// special files that name a standard stream; any other path is the absolute file.
    fn destination(&self, path: &str, console: Destination) -> Destination {
        match path {
            "-" => console,
            "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" => Destination::Stdout,
            "/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2" => Destination::Stderr,
            path => {
                let resolved = self.resolve(Path::new(path));
                Destination::File(normalized(
                    &std::path::absolute(&resolved).unwrap_or(resolved),
                ))
            }
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.run.testplan.trim().is_empty() {
            return Err(self.value_error("run.testplan".into(), "must not be empty"));
        }
        if let Some(run_id) = &self.run.run_id
            && run_id.trim().is_empty()
        {
            return Err(self.value_error("run.run_id".into(), "must not be empty when set"));
        }
        if !(1..=65_536).contains(&self.run.batch_size) {
            return Err(self.value_error("run.batch_size".into(), "must be from 1 to 65536"));
        }
        if !(1..=1_000_000).contains(&self.run.max_live_instances) {
            return Err(
                self.value_error("run.max_live_instances".into(), "must be from 1 to 1000000")
            );
        }
        if let Err((key, message)) = self.request_metrics.check() {
            return Err(self.value_error(format!("request_metrics.{key}"), message));
        }
        for (index, plugin) in self.plugins.iter().enumerate() {
            let key = |field: &str| format!("plugins[{index}].{field}");
            if let Some(roles) = &plugin.roles
                && roles.is_empty()
            {
                return Err(self.value_error(key("roles"), "must name at least one role"));
            }
            for (position, var) in plugin.env_vars.iter().enumerate() {
                let key = || key(&format!("env_vars[{position}]"));
                if !crate::plugin::option_env_var_allowed(var) {
                    return Err(self.value_error(
                        key(),
                        format!(
                            "`{}`: only LOCUST_* and SWARMTEL_* names (A-Z, 0-9, _) can be given to plugins",
                            var.escape_debug()
                        ),
                    ));
                }
                if crate::plugin::env_var_holds_secret(var) {
                    return Err(self.value_error(
                        key(),
                        format!(
                            "`{var}` holds a secret of swarmtel, its Locust bridge or Locust and is never given to a plugin"
                        ),
                    ));
                }
            }
            let limits = &plugin.limits;
            let positive: [(&str, u64); 12] = [
                ("limits.cpu_ms_per_call", limits.cpu_ms_per_call),
                ("limits.memory_mib", limits.memory_mib),
                (
                    "limits.max_items_per_call",
                    limits.max_items_per_call as u64,
                ),
                ("limits.max_item_bytes", limits.max_item_bytes as u64),
                ("limits.max_call_bytes", limits.max_call_bytes as u64),
                ("limits.max_faults", u64::from(limits.max_faults)),
                ("limits.fault_window_seconds", limits.fault_window_seconds),
                ("limits.fuel_per_call", limits.fuel_per_call.unwrap_or(1)),
                ("limits.max_instances", limits.max_instances as u64),
                ("limits.max_tables", limits.max_tables as u64),
                (
                    "limits.max_points_per_call",
                    limits.max_points_per_call as u64,
                ),
                ("limits.max_metric_series", limits.max_metric_series as u64),
            ];
            for (field, value) in positive {
                if value == 0 {
                    return Err(self.value_error(key(field), "must be greater than 0"));
                }
            }
            if limits.memory_mib > 4096 {
                return Err(self.value_error(key("limits.memory_mib"), "must be at most 4096"));
            }
            if limits.max_metric_series > MAX_METRIC_SERIES {
                return Err(self.value_error(
                    key("limits.max_metric_series"),
                    format!("must be at most {MAX_METRIC_SERIES}"),
                ));
            }
            if limits.restart_backoff_max_ms < limits.restart_backoff_ms {
                return Err(self.value_error(
                    key("limits.restart_backoff_max_ms"),
                    "must not be below restart_backoff_ms",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/cfg/swarmtel.toml"), Path::new("/cfg"))
    }

    #[test]
    fn outputs_are_listed_with_types_and_filters() {
        let config = parse(
            r#"
[run]
testplan = "t"

[[outputs]]
type = "json_lines"
path = "stats.ndjson"
existing = "truncate"
filter = { plugins = ["request-stats"], types = ["metric"] }

[[outputs]]
type = "json_lines"

[[outputs]]
type = "prometheus"
listen = "127.0.0.1:9999"

[dead_letter]
path = "rejected.ndjson"
"#,
        )
        .unwrap();
        assert_eq!(config.outputs.len(), 3);
        assert_eq!(
            config.outputs[2],
            OutputConfig::Prometheus(crate::sinks::prometheus::PrometheusConfig {
                listen: "127.0.0.1:9999".into(),
                linger_seconds: 0,
            })
        );
        let OutputConfig::JsonLines(stats) = &config.outputs[0] else {
            panic!("{:?}", config.outputs[0]);
        };
        assert_eq!(stats.path, "stats.ndjson");
        assert_eq!(stats.existing, crate::sinks::json_lines::Existing::Truncate);
        assert_eq!(stats.filter.plugins, ["request-stats"]);
        assert_eq!(
            stats.filter.types,
            [crate::sinks::filter::TelemetryKind::Metric]
        );
        assert_eq!(
            config.outputs[1],
            OutputConfig::JsonLines(JsonLinesConfig::default())
        );
        assert_eq!(config.dead_letter.path, "rejected.ndjson");
    }

    #[test]
    fn a_json_lines_output_takes_the_locust_telemetry_envelope() {
        let config = parse(
            "[run]\ntestplan = \"t\"\n[[outputs]]\ntype = \"json_lines\"\nenvelope = \"locust-telemetry\"\n\
             [[outputs]]\ntype = \"json_lines\"\npath = \"own.ndjson\"\n",
        )
        .unwrap();
        let envelopes: Vec<_> = config
            .outputs
            .iter()
            .map(|output| match output {
                OutputConfig::JsonLines(settings) => settings.envelope,
                other => panic!("{other:?}"),
            })
            .collect();
        use crate::sinks::json_lines::Envelope;
        assert_eq!(envelopes, [Envelope::LocustTelemetry, Envelope::Swarmtel]);
    }

    #[test]
    fn the_older_output_table_still_reads_as_one_json_lines_output() {
        let config = parse(
            "[run]\ntestplan = \"t\"\n[output]\npath = \"out.ndjson\"\ndead_letter = \"dead.ndjson\"\nexisting = \"new\"\n",
        )
        .unwrap();
        assert_eq!(
            config.outputs,
            [OutputConfig::JsonLines(JsonLinesConfig {
                path: "out.ndjson".into(),
                existing: crate::sinks::json_lines::Existing::New,
                filter: Default::default(),
                envelope: Default::default(),
            })]
        );
        assert_eq!(
            config.dead_letter,
            DeadLetterConfig {
                path: "dead.ndjson".into(),
                existing: crate::sinks::json_lines::Existing::New,
            }
        );
    }

    #[test]
    fn output_mistakes_name_their_entry_and_key() {
        let json = "[[outputs]]\ntype = \"json_lines\"\n";
        let cases = [
            (
                "[output]\npath = \"a\"\n[[outputs]]\ntype = \"json_lines\"\n".to_owned(),
                "config /cfg/swarmtel.toml: output: [output] and [[outputs]] cannot both be used",
            ),
            (
                "[output]\ndead_letter = \"a\"\n[dead_letter]\npath = \"b\"\n".to_owned(),
                "config /cfg/swarmtel.toml: output.dead_letter: [dead_letter] is given too",
            ),
            (
                "[output]\npath = \"x\"\ndead_letter = \"./x\"\n".to_owned(),
                "config /cfg/swarmtel.toml: output.path: output.dead_letter writes there already",
            ),
            (
                format!("{json}path = \"a.ndjson\"\n{json}path = \"./x/../a.ndjson\"\n"),
                "config /cfg/swarmtel.toml: outputs[1].path: outputs[0].path writes there already",
            ),
            (
                format!("{json}{json}path = \"-\"\n"),
                "config /cfg/swarmtel.toml: outputs[1].path: outputs[0].path writes there already",
            ),
            (
                format!("{json}{json}path = \"/dev/stdout\"\n"),
                "config /cfg/swarmtel.toml: outputs[1].path: outputs[0].path writes there already",
            ),
            (
                format!("[dead_letter]\npath = \"/cfg/a\"\n{json}path = \"a\"\n"),
                "config /cfg/swarmtel.toml: outputs[0].path: dead_letter.path writes there already",
            ),
            (
                format!("{json}[[outputs]]\ntype = \"kafka\"\n"),
                "config /cfg/swarmtel.toml: outputs[1].type: unknown output type `kafka`",
            ),
            (
                format!("{json}[[outputs]]\npath = \"a\"\n"),
                "config /cfg/swarmtel.toml: outputs[1].type: missing",
            ),
            (
                format!("{json}{json}paht = \"a\"\n"),
                "config /cfg/swarmtel.toml: outputs[1]: unknown field `paht`",
            ),
            (
                format!("{json}envelope = \"loki\"\n"),
                "config /cfg/swarmtel.toml: outputs[0].envelope: unknown variant `loki`, expected `swarmtel` or `locust-telemetry`",
            ),
            (
                format!("{json}filter = {{ plugin = [\"a\"] }}\n"),
                "config /cfg/swarmtel.toml: outputs[0].filter: unknown field `plugin`",
            ),
            (
                format!("{json}filter = {{ types = [\"log\"] }}\n"),
                "config /cfg/swarmtel.toml: outputs[0].filter.types: unknown variant `log`",
            ),
            (
                "[[outputs]]\ntype = \"prometheus\"\nlisten = \"localhost:9464\"\n".to_owned(),
                "config /cfg/swarmtel.toml: outputs[0].listen: `localhost:9464` is not IP:PORT",
            ),
            (
                "[[outputs]]\ntype = \"prometheus\"\nlinger_seconds = \"15\"\n".to_owned(),
                "config /cfg/swarmtel.toml: outputs[0].linger_seconds: invalid type: string",
            ),
            (
                "[[outputs]]\ntype = \"prometheus\"\nlinger_seconds = 601\n".to_owned(),
                "config /cfg/swarmtel.toml: outputs[0].linger_seconds: must be from 0 to 600",
            ),
            (
                format!("{json}existing = \"new\"\n{json}existing = \"new\"\n"),
                "config /cfg/swarmtel.toml: outputs[1].path: outputs[0].path writes there already",
            ),
            (
                format!("{json}path = \"/dev/stderr\"\n"),
                "config /cfg/swarmtel.toml: outputs[0].path: the dead letter (stderr by default) writes there already",
            ),
            (
                "[dead_letter]\npath = \"/dev/stdout\"\n".to_owned(),
                "config /cfg/swarmtel.toml: the default output (stdout): dead_letter.path writes there already",
            ),
            (
                "[[outputs]]\ntype = \"prometheus\"\nfilter = {}\n".to_owned(),
                "config /cfg/swarmtel.toml: outputs[0]: unknown field `filter`",
            ),
            (
                "[[outputs]]\ntype = \"prometheus\"\n[[outputs]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:9464\"\n"
                    .to_owned(),
                "config /cfg/swarmtel.toml: outputs[1].listen: outputs[0].listen writes there already",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&format!("[run]\ntestplan = \"t\"\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(expected), "{text}\n{error}");
        }
    }

    #[test]
    fn outputs_that_cannot_collide_are_accepted() {
        for text in [
            // Each writes a numbered file of its own when the file exists.
            "[output]\npath = \"x\"\ndead_letter = \"x\"\nexisting = \"new\"\n",
            // `..` past the config's folder is another file.
            "[[outputs]]\ntype = \"json_lines\"\npath = \"../../a\"\n[[outputs]]\ntype = \"json_lines\"\npath = \"a\"\n",
            // stdout and stderr.
            "[[outputs]]\ntype = \"json_lines\"\npath = \"/dev/stdout\"\n[dead_letter]\npath = \"-\"\n",
            // Two endpoints on ports the kernel picks.
            "[[outputs]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n[[outputs]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n",
            // No outputs at all.
            "outputs = []\n",
        ] {
            let config = parse(&format!("{text}[run]\ntestplan = \"t\"\n"))
                .unwrap_or_else(|error| panic!("{text}\n{error}"));
            if text.starts_with("outputs") {
                assert!(config.outputs.is_empty());
            }
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse("[run]\ntestplan = \"checkout\"\n").unwrap();
        assert_eq!(
            config.outputs,
            [OutputConfig::JsonLines(JsonLinesConfig::default())]
        );
        assert_eq!(config.dead_letter, DeadLetterConfig::default());
        assert_eq!(config.run.batch_size, 1024);
        assert!(config.plugins.is_empty());
    }

    #[test]
    fn plugin_paths_resolve_against_the_config_folder() {
        let config = parse(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = \"p/a.wasm\"\n[plugins.limits]\nmemory_mib = 8\n",
        )
        .unwrap();
        assert_eq!(
            config.plugin_path(&config.plugins[0]),
            PathBuf::from("/cfg/p/a.wasm")
        );
        assert_eq!(config.plugins[0].limits.memory_mib, 8);
        assert_eq!(config.plugins[0].limits.max_faults, 5);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let error = parse("[run]\ntestplan = \"t\"\ncolour = \"red\"\n").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("/cfg/swarmtel.toml"), "{text}");
        assert!(text.contains("colour"), "{text}");
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn unknown_limit_is_rejected() {
        let error = parse(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = \"a.wasm\"\n[plugins.limits]\nfuel = 3\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("fuel"), "{error}");
    }

    #[test]
    fn zero_limits_and_empty_roles_are_rejected() {
        let error = parse("[run]\ntestplan = \"t\"\n[[plugins]]\npath = \"a.wasm\"\n[plugins.limits]\nmax_faults = 0\n")
            .unwrap_err();
        assert!(
            error.to_string().contains("plugins[0].limits.max_faults"),
            "{error}"
        );
        let error = parse("[run]\ntestplan = \"t\"\n[[plugins]]\npath = \"a.wasm\"\nroles = []\n")
            .unwrap_err();
        assert!(error.to_string().contains("plugins[0].roles"), "{error}");
    }

    #[test]
    fn a_wrong_role_name_is_rejected() {
        let error =
            parse("[run]\ntestplan = \"t\"\n[[plugins]]\npath = \"a.wasm\"\nroles = [\"boss\"]\n")
                .unwrap_err();
        assert!(error.to_string().contains("boss"), "{error}");
    }

    #[test]
    fn capabilities_and_required_default_to_none() {
        let config = parse("[run]\ntestplan = \"t\"\n[[plugins]]\npath = \"a.wasm\"\n").unwrap();
        assert!(!config.plugins[0].required);
        assert!(config.plugins[0].capabilities.granted().is_empty());
        assert!(config.cache.enabled);
        let config = parse(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = \"a.wasm\"\nrequired = true\n[plugins.capabilities]\nrandom = true\nwall_clock = true\n",
        )
        .unwrap();
        assert!(config.plugins[0].required);
        assert_eq!(
            config.plugins[0].capabilities.granted(),
            ["wall_clock", "random"]
        );
        let error = parse(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = \"a.wasm\"\n[plugins.capabilities]\nnetwork = true\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("network"), "{error}");
    }

    #[test]
    fn missing_testplan_is_named() {
        let error = parse("[run]\n").unwrap_err();
        assert!(error.to_string().contains("testplan"), "{error}");
    }

    mod fuzz {
        //! Property tests: the config loader never panics on any text, and on TOML made of
        //! the config's own keys with values of any type.

        use super::*;
        use proptest::prelude::*;

        const KEYS: [&str; 19] = [
            "type",
            "existing",
            "filter",
            "testplan",
            "run_id",
            "batch_size",
            "path",
            "dead_letter",
            "roles",
            "required",
            "memory_mib",
            "cpu_ms_per_call",
            "max_faults",
            "fuel_per_call",
            "random",
            "enabled",
            "dir",
            "wall_clock",
            "bogus",
        ];

        fn toml_value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                "[a-z\\-/.]{0,10}".prop_map(|s| format!("{s:?}")),
                Just("[\"master\", \"worker\"]".to_owned()),
                Just("[]".to_owned()),
                Just("1.5".to_owned()),
                Just("\"json_lines\"".to_owned()),
                Just("{ plugins = [\"a\"], types = [\"metric\"] }".to_owned()),
            ]
        }

        fn table(name: &'static str) -> impl Strategy<Value = String> {
            proptest::collection::vec((proptest::sample::select(&KEYS[..]), toml_value()), 0..5)
                .prop_map(move |pairs| {
                    let mut text = format!("{name}\n");
                    let mut seen = std::collections::BTreeSet::new();
                    for (key, value) in pairs {
                        if seen.insert(key) {
                            text.push_str(&format!("{key} = {value}\n"));
                        }
                    }
                    text
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_text_never_panics(text in ".{0,400}") {
                let _ = parse(&text);
            }

            #[test]
            fn config_shaped_toml_never_panics(
                run in table("[run]"),
                output in table("[output]"),
                outputs in table("[[outputs]]"),
                plugin in table("[[plugins]]"),
                limits in table("[plugins.limits]"),
                capabilities in table("[plugins.capabilities]"),
                cache in table("[cache]"),
            ) {
                let text = format!("{run}{output}{outputs}{cache}{plugin}{limits}{capabilities}");
                if let Ok(config) = parse(&text) {
                    prop_assert!(!config.run.testplan.trim().is_empty());
                    for plugin in &config.plugins {
                        prop_assert!(plugin.limits.max_faults > 0);
                    }
                }
            }
        }
    }
}
