//! What a plugin says about itself, and what a recorder is created from.

use crate::__private::bindings::swarmtel::telemetry::types as wit;
use crate::{EventKind, OptionType, OptionValue, RequestExtras, Role};

/// A plugin's self-description: id, version, options, recorders and schemas.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    id: String,
    version: String,
    description: String,
    options: Vec<OptionSpec>,
    recorders: Vec<RecorderSpec>,
    schemas: Vec<(String, serde_json::Value)>,
}

impl PluginInfo {
    /// Starts a description with the plugin's id (`a-z`, `0-9`, `-`, `_`), version and a
    /// one-line description.
    pub fn new(id: &str, version: &str, description: &str) -> Self {
        Self {
            id: id.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            options: Vec::new(),
            recorders: Vec::new(),
            schemas: Vec::new(),
        }
    }

    /// Declares an option, like locust-telemetry's `group.add_argument(...)`.
    pub fn option(mut self, option: OptionSpec) -> Self {
        self.options.push(option);
        self
    }

    /// Declares a recorder the plugin can create.
    pub fn recorder(mut self, recorder: RecorderSpec) -> Self {
        self.recorders.push(recorder);
        self
    }

    /// Declares a JSON Schema for the fields of the telemetry named `telemetry_name`; the host
    /// rejects items of that name whose fields do not match.
    pub fn schema(mut self, telemetry_name: &str, schema: serde_json::Value) -> Self {
        self.schemas.push((telemetry_name.to_owned(), schema));
        self
    }

    pub(crate) fn into_wit(self) -> wit::PluginInfo {
        wit::PluginInfo {
            id: self.id,
            version: self.version,
            description: self.description,
            options: self.options.into_iter().map(OptionSpec::into_wit).collect(),
            recorders: self
                .recorders
                .into_iter()
                .map(RecorderSpec::into_wit)
                .collect(),
            schemas: self
                .schemas
                .into_iter()
                .map(|(name, schema)| wit::TelemetrySchema {
                    name,
                    schema: schema.to_string(),
                })
                .collect(),
        }
    }
}

/// An option a plugin accepts: name, type, default, help text and environment variable.
#[derive(Debug, Clone)]
pub struct OptionSpec {
    name: String,
    option_type: OptionType,
    default: Option<OptionValue>,
    help: String,
    env_var: Option<String>,
}

impl OptionSpec {
    fn new(name: &str, option_type: OptionType) -> Self {
        Self {
            name: name.to_owned(),
            option_type,
            default: None,
            help: String::new(),
            env_var: None,
        }
    }

    /// A free-text option.
    pub fn text(name: &str) -> Self {
        Self::new(name, OptionType::Text)
    }

    /// A signed integer option.
    pub fn integer(name: &str) -> Self {
        Self::new(name, OptionType::Integer)
    }

    /// A float option.
    pub fn float(name: &str) -> Self {
        Self::new(name, OptionType::Float)
    }

    /// A true/false option.
    pub fn boolean(name: &str) -> Self {
        Self::new(name, OptionType::Boolean)
    }

    /// Sets the default of a text option.
    pub fn default_text(mut self, value: &str) -> Self {
        self.default = Some(OptionValue::Text(value.to_owned()));
        self
    }

    /// Sets the default of an integer option.
    pub fn default_integer(mut self, value: i64) -> Self {
        self.default = Some(OptionValue::Integer(value));
        self
    }

    /// Sets the default of a float option.
    pub fn default_float(mut self, value: f64) -> Self {
        self.default = Some(OptionValue::Float(value));
        self
    }

    /// Sets the default of a boolean option.
    pub fn default_boolean(mut self, value: bool) -> Self {
        self.default = Some(OptionValue::Boolean(value));
        self
    }

    /// Sets the help text shown by `swarmtel plugin inspect`.
    pub fn help(mut self, help: &str) -> Self {
        self.help = help.to_owned();
        self
    }

    /// Names the environment variable the host reads when the config does not set the option.
    pub fn env_var(mut self, name: &str) -> Self {
        self.env_var = Some(name.to_owned());
        self
    }

    fn into_wit(self) -> wit::OptionSpec {
        wit::OptionSpec {
            name: self.name,
            option_type: self.option_type,
            default: self.default,
            help: self.help,
            env_var: self.env_var,
        }
    }
}

/// A recorder a plugin can create: roles served, events wanted, tick interval.
#[derive(Debug, Clone)]
pub struct RecorderSpec {
    name: String,
    roles: Vec<Role>,
    events: Vec<EventKind>,
    tick_interval_ms: Option<u32>,
    request_extras: RequestExtras,
}

impl RecorderSpec {
    /// A recorder named `name`, serving every role and wanting no events yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            roles: vec![Role::Master, Role::Worker, Role::Standalone],
            events: Vec::new(),
            tick_interval_ms: None,
            request_extras: RequestExtras::empty(),
        }
    }

    /// The roles this recorder is created for.
    pub fn roles(mut self, roles: impl IntoIterator<Item = Role>) -> Self {
        self.roles = roles.into_iter().collect();
        self
    }

    /// The events it wants delivered.
    pub fn events(mut self, events: impl IntoIterator<Item = EventKind>) -> Self {
        self.events = events.into_iter().collect();
        self
    }

    /// Asks for a `tick` every `interval_ms` milliseconds of event time.
    pub fn tick_every_ms(mut self, interval_ms: u32) -> Self {
        self.tick_interval_ms = Some(interval_ms);
        if !self.events.contains(&EventKind::Tick) {
            self.events.push(EventKind::Tick);
        }
        self
    }

    /// Asks for per-request URLs and/or contexts (each costs delivery time).
    pub fn request_extras(mut self, extras: RequestExtras) -> Self {
        self.request_extras = extras;
        self
    }

    fn into_wit(self) -> wit::RecorderSpec {
        wit::RecorderSpec {
            name: self.name,
            roles: self.roles,
            events: self.events,
            tick_interval_ms: self.tick_interval_ms,
            request_extras: self.request_extras,
        }
    }
}

/// Resolved option values, by name, as the host handed them over.
#[derive(Debug, Clone, Default)]
pub struct Options {
    values: Vec<(String, OptionValue)>,
}

impl Options {
    /// Options from (name, value) pairs; mostly for tests.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, OptionValue)>) -> Self {
        Self {
            values: pairs.into_iter().collect(),
        }
    }

    /// The value of option `name`, whatever its type.
    pub fn get(&self, name: &str) -> Option<&OptionValue> {
        self.values
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// A text option's value.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            OptionValue::Text(value) => Some(value),
            _ => None,
        }
    }

    /// An integer option's value.
    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.get(name)? {
            OptionValue::Integer(value) => Some(*value),
            _ => None,
        }
    }

    /// A float option's value (an integer value is widened).
    pub fn float(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            OptionValue::Float(value) => Some(*value),
            OptionValue::Integer(value) => Some(*value as f64),
            _ => None,
        }
    }

    /// A boolean option's value.
    pub fn boolean(&self, name: &str) -> Option<bool> {
        match self.get(name)? {
            OptionValue::Boolean(value) => Some(*value),
            _ => None,
        }
    }
}

/// What a recorder is created for: its name, role, node and options.
#[derive(Debug, Clone)]
pub struct RecorderContext {
    recorder: String,
    role: Role,
    node: String,
    options: Options,
}

impl RecorderContext {
    /// A context; the host builds these, tests may too.
    pub fn new(recorder: &str, role: Role, node: &str, options: Options) -> Self {
        Self {
            recorder: recorder.to_owned(),
            role,
            node: node.to_owned(),
            options,
        }
    }

    pub(crate) fn from_wit(config: wit::RecorderConfig) -> Self {
        Self {
            recorder: config.recorder,
            role: config.role,
            node: config.node,
            options: Options::from_pairs(
                config
                    .options
                    .into_iter()
                    .map(|setting| (setting.name, setting.value)),
            ),
        }
    }

    /// Which of the plugin's recorders to create.
    pub fn recorder(&self) -> &str {
        &self.recorder
    }

    /// The role of the node served.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The node id: `master`, `worker-<n>` or `local`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The resolved options.
    pub fn options(&self) -> &Options {
        &self.options
    }
}
