//! Plugin loading: reads a `.wasm`, checks it is a component of our contract, asks it to
//! describe itself, and resolves its options from config, environment and defaults.

// Loading is a cold path (once per plugin): errors carry every name a user needs, unboxed.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::types::ComponentItem;

use crate::bindings::{self, PluginPre, types as wit};
use crate::config::{Capabilities, Limits, PluginConfig, RoleName};
use crate::guest_text::shown;
use crate::sandbox::{FaultKind, GuestState, Sandbox, WasmRecorder};

/// A plugin could not be loaded or configured. Every variant names the plugin file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("plugin {path}: cannot read: {source}")]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not WebAssembly at all.
    #[error("plugin {path}: not a WebAssembly file (no `\\0asm` header)")]
    NotWasm {
        /// The plugin file.
        path: PathBuf,
    },
    /// The file is a core module, not a component.
    #[error(
        "plugin {path}: a core WebAssembly module, not a component; build it for wasm32-wasip2 (or run `wasm-tools component new`)"
    )]
    CoreModule {
        /// The plugin file.
        path: PathBuf,
    },
    /// wasmtime refused to compile it (truncated, corrupt, unsupported feature).
    #[error("plugin {path}: does not compile: {message}")]
    Compile {
        /// The plugin file.
        path: PathBuf,
        /// wasmtime's message.
        message: String,
    },
    /// It does not export our plugin interface, or exports another version of it.
    #[error("plugin {path}: {message}")]
    Contract {
        /// The plugin file.
        path: PathBuf,
        /// What it exports or imports instead.
        message: String,
    },
    /// The guest faulted (trapped, overran its deadline or memory) while being instantiated,
    /// described or created.
    #[error("plugin {path}: {stage} faulted: {fault}")]
    Faulted {
        /// The plugin file.
        path: PathBuf,
        /// `instantiate`, `describe`, or `create recorder NAME for ROLE`.
        stage: String,
        /// What happened.
        fault: crate::sandbox::Fault,
    },
    /// Its self-description is unusable.
    #[error("plugin {path} ({id}): invalid description: {message}")]
    Description {
        /// The plugin file.
        path: PathBuf,
        /// The plugin id it reported.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// It cannot even start under the config's `[plugins.limits]`: it needs more memory,
    /// tables or instances than they allow.
    #[error(
        "plugin {path}: needs [plugins.limits] {limit} = {needed} or more ({why}); the config allows {allowed}"
    )]
    LimitTooLow {
        /// The plugin file.
        path: PathBuf,
        /// The limit's key in `[plugins.limits]`.
        limit: &'static str,
        /// The smallest value it starts with.
        needed: u64,
        /// The configured value.
        allowed: u64,
        /// What needs it.
        why: String,
    },
    /// Its description is over one of the [`caps`] on what a plugin may declare.
    #[error("plugin {path}: over the cap `{cap}` ({limit}): {detail}")]
    OverCap {
        /// The plugin file.
        path: PathBuf,
        /// The cap's name, as in SECURITY.md.
        cap: &'static str,
        /// The cap.
        limit: usize,
        /// What the plugin declared.
        detail: String,
    },
    /// One of its JSON Schemas cannot be used (does not compile, reaches outside the
    /// document, or is over a schema cap).
    #[error("plugin {id} ({path}): {source}")]
    Schema {
        /// The plugin file.
        path: PathBuf,
        /// The plugin id.
        id: String,
        /// Which schema, and why.
        source: crate::pipeline::validate::SchemaError,
    },
    /// An option names an environment variable that holds a secret of swarmtel, the bridge or
    /// Locust: such a plugin is refused whatever the config says.
    #[error(
        "plugin {id} ({path}): option `{option}` names env var `{var}`, which holds a secret of swarmtel, its Locust bridge or Locust; the host never reads it for a plugin"
    )]
    SecretEnvVar {
        /// The plugin file.
        path: PathBuf,
        /// The plugin id.
        id: String,
        /// The option.
        option: String,
        /// The variable it names.
        var: String,
    },
    /// The config sets an option the plugin does not declare.
    #[error(
        "plugin {id} ({path}): unknown option `{key}` in [plugins.options]; it declares: {declared}"
    )]
    UnknownOption {
        /// The plugin file.
        path: PathBuf,
        /// The plugin id.
        id: String,
        /// The unknown key.
        key: String,
        /// The declared option names.
        declared: String,
    },
    /// An option value has the wrong type.
    #[error("plugin {id} ({path}): option `{key}` from {origin}: expected {expected}, got {found}")]
    OptionType {
        /// The plugin file.
        path: PathBuf,
        /// The plugin id.
        id: String,
        /// The option.
        key: String,
        /// `config` or `env LOCUST_...`.
        origin: String,
        /// The declared type.
        expected: &'static str,
        /// What was given.
        found: String,
    },
    /// The config asks for a role none of the plugin's recorders serve.
    #[error("plugin {id} ({path}): roles: no recorder of this plugin serves `{role}`")]
    RoleNotServed {
        /// The plugin file.
        path: PathBuf,
        /// The plugin id.
        id: String,
        /// The role.
        role: &'static str,
    },
    /// The plugin's recorder refused to be created with these options.
    #[error("plugin {id} ({path}): recorder `{recorder}` for role {role} refused: {message}")]
    Refused {
        /// The plugin file.
        path: PathBuf,
        /// The plugin id.
        id: String,
        /// The recorder.
        recorder: String,
        /// The role.
        role: &'static str,
        /// The plugin's message.
        message: String,
    },
}

impl PluginError {
    /// Whether the plugin itself is at fault (its code faulted, or what it declared is unusable
    /// or over a cap), as opposed to the file or the config being wrong: such a plugin is
    /// skipped unless it is `required`, and costs only itself.
    pub fn is_plugin_fault(&self) -> bool {
        matches!(
            self,
            PluginError::Faulted { .. }
                | PluginError::Description { .. }
                | PluginError::LimitTooLow { .. }
                | PluginError::OverCap { .. }
                | PluginError::Schema { .. }
                | PluginError::SecretEnvVar { .. }
        )
    }

    /// A short label for summaries and self-telemetry: the fault kind, or what was wrong.
    pub fn kind_label(&self) -> &'static str {
        match self {
            PluginError::Faulted { fault, .. } => fault.kind.as_str(),
            PluginError::Description { .. } => "invalid_description",
            PluginError::OverCap { cap, .. } => cap,
            PluginError::LimitTooLow { .. } => "limit_too_low",
            PluginError::Schema { .. } => "schema",
            PluginError::SecretEnvVar { .. } => "secret_env_var",
            _ => "error",
        }
    }
}

/// Caps on what a plugin may declare in `describe`, checked before the host does any work for
/// it (compiling schemas, creating recorders). Each is named in the load error that hits it.
pub mod caps {
    /// Host memory the whole description may take when copied out of the guest (checked by
    /// wasmtime before it copies): `description_bytes`.
    pub const DESCRIPTION_BYTES: usize = 1024 * 1024;
    /// Recorders one plugin may declare: `recorders`.
    pub const RECORDERS: usize = 64;
    /// Options one plugin may declare: `options`.
    pub const OPTIONS: usize = 64;
    /// Schemas one plugin may declare: `schemas`.
    pub const SCHEMAS: usize = 64;
    /// Characters in an option, recorder or telemetry name, or an env var name: `name_chars`.
    pub const NAME_CHARS: usize = 128;
    /// Characters in the plugin's version: `version_chars`.
    pub const VERSION_CHARS: usize = 64;
    /// Characters in the description or an option's help: `text_chars`.
    pub const TEXT_CHARS: usize = 1024;
}

/// Bitset of [`wit::EventKind`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventMask(u32);

impl EventMask {
    /// Whether `kind` is in the set.
    #[inline]
    pub fn contains(self, kind: wit::EventKind) -> bool {
        self.0 & (1 << kind as u32) != 0
    }

    /// Adds `kind`.
    pub fn insert(&mut self, kind: wit::EventKind) {
        self.0 |= 1 << kind as u32;
    }
}

/// One recorder the plugin can create, as it described it.
#[derive(Debug, Clone)]
pub struct RecorderManifest {
    /// Recorder name.
    pub name: String,
    /// Roles it serves.
    pub roles: Vec<RoleName>,
    /// Events it wants.
    pub events: EventMask,
    /// Tick interval in ms of event time.
    pub tick_interval_ms: Option<u32>,
    /// Per-request details wanted.
    pub request_extras: wit::RequestExtras,
}

/// A loaded, described and configured plugin, ready to make recorder instances. Cloning is
/// cheap enough for benchmarks: the compiled code is shared.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// The `.wasm` file.
    pub path: PathBuf,
    /// What the plugin said about itself.
    pub info: wit::PluginInfo,
    /// Its recorders.
    pub recorders: Vec<RecorderManifest>,
    /// The roles it runs for in this run.
    pub roles: Vec<RoleName>,
    /// Resolved option values handed to every recorder.
    pub options: Vec<wit::OptionSetting>,
    /// Sandbox limits.
    pub limits: Limits,
    /// Capabilities granted.
    pub capabilities: Capabilities,
    /// Whether the run fails when this plugin ends disabled.
    pub required: bool,
    /// The env vars the config lets the host read for its options.
    pub env_vars: Vec<String>,
    /// Its telemetry schemas, checked against the caps and compiled at load.
    pub schemas: Arc<crate::pipeline::validate::PluginSchemas>,
    /// Linked component, for fast instantiation.
    pub pre: PluginPre,
}

impl LoadedPlugin {
    /// The plugin id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// A sandboxed instance of one of its recorders for one node, with the plugin's options,
    /// limits and capabilities; it instantiates on first use.
    pub fn wasm_recorder(
        &self,
        sandbox: &Arc<Sandbox>,
        recorder: &RecorderManifest,
        role: RoleName,
        node: &str,
    ) -> WasmRecorder {
        WasmRecorder::new(
            sandbox.clone(),
            self.pre.clone(),
            self.id(),
            self.limits,
            self.capabilities,
            recorder_config(self, recorder, role, node),
        )
    }
}

/// Maps a config role to the contract's.
pub fn wit_role(role: RoleName) -> wit::Role {
    match role {
        RoleName::Master => wit::Role::Master,
        RoleName::Worker => wit::Role::Worker,
        RoleName::Standalone => wit::Role::Standalone,
    }
}

fn role_name(role: wit::Role) -> RoleName {
    match role {
        wit::Role::Master => RoleName::Master,
        wit::Role::Worker => RoleName::Worker,
        wit::Role::Standalone => RoleName::Standalone,
    }
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
/// Core modules carry version 1 and layer 0; components a different version and layer 1.
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

/// Reads, compiles and describes a plugin file, without config (default limits, no grants).
pub fn load_component(
    sandbox: &Arc<Sandbox>,
    path: &Path,
) -> Result<(wit::PluginInfo, PluginPre), PluginError> {
    load_component_with(sandbox, path, &Limits::default(), &Capabilities::default())
}

/// Reads, compiles and describes a plugin file; `describe` runs under `limits` and
/// `capabilities`.
pub fn load_component_with(
    sandbox: &Arc<Sandbox>,
    path: &Path,
    limits: &Limits,
    capabilities: &Capabilities,
) -> Result<(wit::PluginInfo, PluginPre), PluginError> {
    let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
        path: path.to_owned(),
        source,
    })?;
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(PluginError::NotWasm {
            path: path.to_owned(),
        });
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(PluginError::CoreModule {
            path: path.to_owned(),
        });
    }
    let component = sandbox
        .compile(&bytes, &path.display().to_string())
        .map_err(|error| PluginError::Compile {
            path: path.to_owned(),
            message: format!("{error:#}"),
        })?;
    let version = check_contract(sandbox, &component, path)?;
    check_start_resources(&component, path, limits)?;
    let pre = sandbox
        .prepare(&component, version)
        .map_err(|error| PluginError::Contract {
            path: path.to_owned(),
            message: format!("cannot be linked: {error:#}"),
        })?;
    let info = describe(sandbox, &pre, path, limits, capabilities)?;
    Ok((info, pre))
}

/// Checks the component exports `swarmtel:telemetry/plugin` in a version this runtime speaks
/// (one of [`bindings::VERSIONS`]) and returns that version; names what it exports instead
/// when it does not.
fn check_contract(
    sandbox: &Sandbox,
    component: &wasmtime::component::Component,
    path: &Path,
) -> Result<&'static str, PluginError> {
    let wanted = format!("{}/plugin@{}", bindings::PACKAGE, bindings::VERSION);
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(sandbox.engine())
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_owned())
        .collect();
    for version in bindings::VERSIONS {
        let name = format!("{}/plugin@{version}", bindings::PACKAGE);
        if exports.iter().any(|export| export == &name) {
            return Ok(version);
        }
    }
    let ours: Vec<&String> = exports
        .iter()
        .filter(|name| name.starts_with(&format!("{}/plugin", bindings::PACKAGE)))
        .collect();
    let message = if let Some(other) = ours.first() {
        format!(
            "targets `{other}`, but this runtime speaks `{wanted}` (and the older {}); rebuild the plugin against swarmtel-guest {}",
            bindings::VERSIONS[1..].join(", "),
            bindings::VERSION
        )
    } else {
        format!(
            "does not export `{wanted}` (exports: {}); is it a swarmtel plugin?",
            if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            }
        )
    };
    Err(PluginError::Contract {
        path: path.to_owned(),
        message,
    })
}

fn describe(
    sandbox: &Sandbox,
    pre: &PluginPre,
    path: &Path,
    limits: &Limits,
    capabilities: &Capabilities,
) -> Result<wit::PluginInfo, PluginError> {
    let mut store = sandbox.new_store("(loading)", limits, capabilities);
    let faulted = |store: &wasmtime::Store<GuestState>, stage: &str, error: wasmtime::Error| {
        PluginError::Faulted {
            path: path.to_owned(),
            stage: stage.to_owned(),
            fault: crate::sandbox::classify(store, &error, FaultKind::Instantiate),
        }
    };
    let instance = match pre.instantiate(&mut store) {
        Ok(instance) => instance,
        Err(error) if format!("{error:#}").contains("instance count too high") => {
            let needed = instances_needed(sandbox, pre, limits, capabilities);
            return Err(PluginError::LimitTooLow {
                path: path.to_owned(),
                limit: "max_instances",
                needed: needed.unwrap_or(MAX_PROBED_INSTANCES + 1) as u64,
                allowed: limits.max_instances as u64,
                why: match needed {
                    Some(_) => "the core and component instances it is made of".to_owned(),
                    None => format!("more than {MAX_PROBED_INSTANCES} instances"),
                },
            });
        }
        Err(error) => return Err(faulted(&store, "instantiate", error)),
    };
    sandbox.arm(&mut store, limits);
    // The description is copied out of the guest only if it fits: a plugin that declares
    // 100,000 recorders is refused here, before the host allocates for them.
    store.set_hostcall_fuel(caps::DESCRIPTION_BYTES);
    match instance.describe(&mut store) {
        Ok(info) => Ok(info),
        Err(error) => match faulted(&store, "describe", error) {
            PluginError::Faulted { fault, .. } if fault.kind == FaultKind::ResultsTooLarge => {
                Err(PluginError::OverCap {
                    path: path.to_owned(),
                    cap: "description_bytes",
                    limit: caps::DESCRIPTION_BYTES,
                    detail: "its description needs more host memory than that; refused before it was copied".into(),
                })
            }
            other => Err(other),
        },
    }
}

/// The most instances [`instances_needed`] tries before it gives up.
const MAX_PROBED_INSTANCES: usize = 256;

/// How many instances a component needs to be instantiated, found by instantiating it under
/// larger `max_instances` (binary search, at most 9 tries, each under the plugin's own
/// memory cap and deadline, dropped at once); `None` if more than
/// [`MAX_PROBED_INSTANCES`]. Only called when it failed under the configured limit, so the
/// error can say what to raise it to.
fn instances_needed(
    sandbox: &Sandbox,
    pre: &PluginPre,
    limits: &Limits,
    capabilities: &Capabilities,
) -> Option<usize> {
    let starts_with = |max_instances: usize| {
        let limits = Limits {
            max_instances,
            ..*limits
        };
        let mut store = sandbox.new_store("(loading)", &limits, capabilities);
        pre.instantiate(&mut store).is_ok()
    };
    let (mut too_few, mut enough) = (limits.max_instances, MAX_PROBED_INSTANCES);
    if !starts_with(enough) {
        return None;
    }
    while enough - too_few > 1 {
        let middle = too_few + (enough - too_few) / 2;
        if starts_with(middle) {
            enough = middle;
        } else {
            too_few = middle;
        }
    }
    Some(enough)
}

/// Checks the memory and tables a compiled component asks for at start against `limits`,
/// so a plugin that cannot start under them is refused with the limit to raise, before it
/// is instantiated.
fn check_start_resources(
    component: &wasmtime::component::Component,
    path: &Path,
    limits: &Limits,
) -> Result<(), PluginError> {
    let Some(required) = component.resources_required() else {
        return Ok(());
    };
    let too_low = |limit, needed: u64, allowed: u64, why: String| PluginError::LimitTooLow {
        path: path.to_owned(),
        limit,
        needed,
        allowed,
        why,
    };
    const PAGE: u64 = 64 * 1024;
    if let Some(pages) = required.max_initial_memory_size {
        let needed_mib = (pages * PAGE).div_ceil(1024 * 1024);
        if needed_mib > limits.memory_mib {
            return Err(too_low(
                "memory_mib",
                needed_mib,
                limits.memory_mib,
                format!("its linear memory starts at {pages} pages of 64 KiB"),
            ));
        }
    }
    if required.num_tables as usize > limits.max_tables {
        return Err(too_low(
            "max_tables",
            u64::from(required.num_tables),
            limits.max_tables as u64,
            "the tables its modules define".to_owned(),
        ));
    }
    if let Some(elements) = required.max_initial_table_size
        && elements > limits.max_table_elements as u64
    {
        return Err(too_low(
            "max_table_elements",
            elements,
            limits.max_table_elements as u64,
            "its largest table's initial size".to_owned(),
        ));
    }
    Ok(())
}

/// Checks what a plugin declared, as every command does before using it: the [`caps`], the
/// naming and env var rules, then its schemas (against
/// [`crate::pipeline::validate::schema_caps`], then compiled). Returns its recorders and compiled
/// schemas.
pub fn check_plugin_info(
    info: &wit::PluginInfo,
    path: &Path,
) -> Result<
    (
        Vec<RecorderManifest>,
        crate::pipeline::validate::PluginSchemas,
    ),
    PluginError,
> {
    let recorders = check_description(info, path)?;
    let schemas =
        crate::pipeline::validate::PluginSchemas::compile(&info.schemas).map_err(|source| {
            PluginError::Schema {
                path: path.to_owned(),
                id: info.id.clone(),
                source,
            }
        })?;
    Ok((recorders, schemas))
}

/// Loads a plugin listed in the config: describe, check the description, resolve options
/// (config, then the option's env var, then its default) and roles, and check every recorder
/// it will run accepts them.
pub fn load_plugin(
    sandbox: &Arc<Sandbox>,
    path: &Path,
    entry: &PluginConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedPlugin, PluginError> {
    let (info, pre) = load_component_with(sandbox, path, &entry.limits, &entry.capabilities)?;
    let (recorders, schemas) = check_plugin_info(&info, path)?;
    let options = resolve_options(&info, path, entry, env)?;
    let served: Vec<RoleName> = RoleName::ALL
        .into_iter()
        .filter(|role| recorders.iter().any(|r| r.roles.contains(role)))
        .collect();
    let roles = match &entry.roles {
        Some(roles) => {
            for role in roles {
                if !served.contains(role) {
                    return Err(PluginError::RoleNotServed {
                        path: path.to_owned(),
                        id: info.id.clone(),
                        role: role.as_str(),
                    });
                }
            }
            let mut roles = roles.clone();
            roles.sort();
            roles.dedup();
            roles
        }
        None => served,
    };
    let plugin = LoadedPlugin {
        path: path.to_owned(),
        info,
        recorders,
        roles,
        options,
        limits: entry.limits,
        capabilities: entry.capabilities,
        required: entry.required,
        env_vars: entry.env_vars.clone(),
        schemas: Arc::new(schemas),
        pre,
    };
    probe_recorders(sandbox, &plugin)?;
    Ok(plugin)
}

/// Creates each recorder once per role it will serve, so a plugin that refuses its options
/// fails at start-up with its message, not later mid-run.
fn probe_recorders(sandbox: &Arc<Sandbox>, plugin: &LoadedPlugin) -> Result<(), PluginError> {
    for recorder in &plugin.recorders {
        for role in recorder.roles.iter().filter(|r| plugin.roles.contains(r)) {
            let mut instance = plugin.wasm_recorder(sandbox, recorder, *role, "probe");
            instance.start().map_err(|fault| {
                if fault.kind == FaultKind::Refused {
                    PluginError::Refused {
                        path: plugin.path.clone(),
                        id: plugin.id().to_owned(),
                        recorder: recorder.name.clone(),
                        role: role.as_str(),
                        message: fault.message,
                    }
                } else {
                    PluginError::Faulted {
                        path: plugin.path.clone(),
                        stage: format!(
                            "creating recorder `{}` for role {}",
                            recorder.name,
                            role.as_str()
                        ),
                        fault,
                    }
                }
            })?;
        }
    }
    Ok(())
}

/// The `create-recorder` argument for one recorder on one node.
pub fn recorder_config(
    plugin: &LoadedPlugin,
    recorder: &RecorderManifest,
    role: RoleName,
    node: &str,
) -> wit::RecorderConfig {
    wit::RecorderConfig {
        recorder: recorder.name.clone(),
        role: wit_role(role),
        node: node.to_owned(),
        options: plugin.options.clone(),
    }
}

/// Whether `name` is usable as an option, recorder or telemetry name: 1 to
/// [`caps::NAME_CHARS`] of ASCII letters, digits, `.`, `:`, `-` and `_` (what Locust and
/// locust-telemetry use, and safe on any terminal and in any log query).
pub fn name_allowed(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= caps::NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

/// Checks a description against the [`caps`] and the naming rules, in that order, before the
/// host does anything else with it. Every guest string in an error is escaped and capped.
fn check_description(
    info: &wit::PluginInfo,
    path: &Path,
) -> Result<Vec<RecorderManifest>, PluginError> {
    let over = |cap: &'static str, limit: usize, detail: String| PluginError::OverCap {
        path: path.to_owned(),
        cap,
        limit,
        detail,
    };
    for (cap, limit, count, what) in [
        (
            "recorders",
            caps::RECORDERS,
            info.recorders.len(),
            "recorders",
        ),
        ("options", caps::OPTIONS, info.options.len(), "options"),
        ("schemas", caps::SCHEMAS, info.schemas.len(), "schemas"),
    ] {
        if count > limit {
            return Err(over(cap, limit, format!("declares {count} {what}")));
        }
    }
    let id_ok = !info.id.is_empty()
        && info.id.len() <= 64
        && info
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    let bad = |message: String| PluginError::Description {
        path: path.to_owned(),
        id: if id_ok {
            info.id.clone()
        } else {
            shown(&info.id)
        },
        message,
    };
    if !id_ok {
        return Err(bad(format!(
            "id `{}` must be 1 to 64 of a-z, 0-9, `-`, `_`",
            shown(&info.id)
        )));
    }
    if info.id == crate::pipeline::enrich::SELF_PLUGIN_ID {
        return Err(bad(format!("id `{}` is reserved for the runtime", info.id)));
    }
    let chars = |text: &str| text.chars().count();
    if chars(&info.version) > caps::VERSION_CHARS || info.version.chars().any(char::is_control) {
        return Err(bad(format!(
            "version `{}` must be at most {} characters, none of them control characters (cap `version_chars`)",
            shown(&info.version),
            caps::VERSION_CHARS
        )));
    }
    if chars(&info.description) > caps::TEXT_CHARS {
        return Err(over(
            "text_chars",
            caps::TEXT_CHARS,
            format!("a description of {} characters", chars(&info.description)),
        ));
    }
    let name_rule = "1 to 128 of A-Z, a-z, 0-9, `.`, `:`, `-`, `_`";
    let mut option_names = BTreeMap::new();
    for option in &info.options {
        if !name_allowed(&option.name) {
            return Err(bad(format!(
                "option name `{}` must be {name_rule}",
                shown(&option.name)
            )));
        }
        if option_names.insert(&option.name, ()).is_some() {
            return Err(bad(format!("option name `{}` is repeated", option.name)));
        }
        if chars(&option.help) > caps::TEXT_CHARS {
            return Err(over(
                "text_chars",
                caps::TEXT_CHARS,
                format!(
                    "option `{}` has help of {} characters",
                    option.name,
                    chars(&option.help)
                ),
            ));
        }
        if let Some(var) = &option.env_var {
            if !option_env_var_allowed(var) {
                return Err(bad(format!(
                    "option `{}` names env var `{}`; the host reads only LOCUST_* and SWARMTEL_* names for plugins (A-Z, 0-9, _; at most 128)",
                    option.name,
                    shown(var)
                )));
            }
            if env_var_holds_secret(var) {
                return Err(PluginError::SecretEnvVar {
                    path: path.to_owned(),
                    id: info.id.clone(),
                    option: option.name.clone(),
                    var: var.clone(),
                });
            }
        }
        if let Some(default) = &option.default
            && option_type_name(option.option_type) != value_type_name(default)
        {
            return Err(bad(format!(
                "option `{}` is {} but its default is {}",
                option.name,
                option_type_name(option.option_type),
                value_type_name(default)
            )));
        }
    }
    for schema in &info.schemas {
        if !name_allowed(&schema.name) {
            return Err(bad(format!(
                "schema for telemetry name `{}`: the name must be {name_rule}",
                shown(&schema.name)
            )));
        }
    }
    if info.recorders.is_empty() {
        return Err(bad("declares no recorder".into()));
    }
    let mut recorders = Vec::new();
    for spec in &info.recorders {
        if !name_allowed(&spec.name) {
            return Err(bad(format!(
                "recorder name `{}` must be {name_rule}",
                shown(&spec.name)
            )));
        }
        if recorders
            .iter()
            .any(|r: &RecorderManifest| r.name == spec.name)
        {
            return Err(bad(format!("recorder name `{}` is repeated", spec.name)));
        }
        if spec.roles.is_empty() {
            return Err(bad(format!("recorder `{}` serves no role", spec.name)));
        }
        let mut events = EventMask::default();
        for kind in &spec.events {
            events.insert(*kind);
        }
        match spec.tick_interval_ms {
            Some(0) => return Err(bad(format!("recorder `{}`: tick interval 0", spec.name))),
            Some(_) if !events.contains(wit::EventKind::Tick) => {
                return Err(bad(format!(
                    "recorder `{}` sets a tick interval but does not subscribe to `tick`",
                    spec.name
                )));
            }
            None if events.contains(wit::EventKind::Tick) => {
                return Err(bad(format!(
                    "recorder `{}` subscribes to `tick` without a tick interval",
                    spec.name
                )));
            }
            _ => {}
        }
        let mut roles: Vec<RoleName> = spec.roles.iter().map(|r| role_name(*r)).collect();
        roles.sort();
        roles.dedup();
        recorders.push(RecorderManifest {
            name: spec.name.clone(),
            roles,
            events,
            tick_interval_ms: spec.tick_interval_ms,
            request_extras: spec.request_extras,
        });
    }
    Ok(recorders)
}

/// Environment variables of swarmtel itself and of its Locust bridge that hold secrets or
/// steer the runtime; never read for a plugin.
const OWN_ENV_VARS: [&str; 3] = ["SWARMTEL_TOKEN", "SWARMTEL_CONFIG", "SWARMTEL_CACHE_DIR"];

/// Words that mark a variable as a secret when they stand between underscores in its name
/// (`LOCUST_WEB_AUTH`, `LOCUST_API_KEY`, `SWARMTEL_DB_PASSWORD`).
const SECRET_WORDS: [&str; 16] = [
    "TOKEN",
    "TOKENS",
    "SECRET",
    "SECRETS",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PWD",
    "AUTH",
    "CREDENTIAL",
    "CREDENTIALS",
    "KEY",
    "APIKEY",
    "COOKIE",
    "SESSION",
    "PRIVATE",
];

/// Whether `name` holds (or may hold) a secret of swarmtel, the bridge (`LOCUST_SWARMTEL_*`,
/// its token among them) or Locust (`LOCUST_WEB_AUTH`, TLS keys): the host never reads such a
/// variable for a plugin, whatever the config lists.
pub fn env_var_holds_secret(name: &str) -> bool {
    OWN_ENV_VARS.contains(&name)
        || name.starts_with("LOCUST_SWARMTEL_")
        || SECRET_PARTS.iter().any(|part| name.contains(part))
        || name.split('_').any(|word| {
            SECRET_WORDS.contains(&word)
                || SECRET_WORDS
                    .iter()
                    .any(|secret| word.strip_suffix('S') == Some(secret))
                || word.starts_with("TLS")
        })
}

/// Parts that mark a variable as a secret wherever they stand in its name
/// (`LOCUST_APITOKEN`, `SWARMTEL_AUTHTOKEN`, `DB_PASSPHRASE`, `CLIENT_CERT_FILE`).
const SECRET_PARTS: [&str; 7] = [
    "TOKEN",
    "SECRET",
    "PASSW",
    "PASSPHRASE",
    "CREDENTIAL",
    "PRIVATE",
    "CERT",
];

/// Whether the host may read `name` on a plugin's behalf. The plugin chooses the name, so only
/// variables meant for Locust tooling qualify; anything else could exfiltrate a secret through
/// an option value.
pub fn option_env_var_allowed(name: &str) -> bool {
    let well_formed = name
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    let prefixed = ["LOCUST_", "SWARMTEL_"]
        .iter()
        .any(|prefix| name.len() > prefix.len() && name.starts_with(prefix));
    well_formed && prefixed && name.len() <= caps::NAME_CHARS
}

/// The name of an option type, as written in errors and `plugin inspect`.
pub fn option_type_name(option_type: wit::OptionType) -> &'static str {
    match option_type {
        wit::OptionType::Text => "text",
        wit::OptionType::Integer => "integer",
        wit::OptionType::Float => "float",
        wit::OptionType::Boolean => "boolean",
    }
}

fn value_type_name(value: &wit::OptionValue) -> &'static str {
    match value {
        wit::OptionValue::Text(_) => "text",
        wit::OptionValue::Integer(_) => "integer",
        wit::OptionValue::Float(_) => "float",
        wit::OptionValue::Boolean(_) => "boolean",
    }
}

/// An option value as JSON, for display.
pub fn option_value_json(value: &wit::OptionValue) -> serde_json::Value {
    match value {
        wit::OptionValue::Text(text) => text.clone().into(),
        wit::OptionValue::Integer(number) => (*number).into(),
        wit::OptionValue::Float(number) => (*number).into(),
        wit::OptionValue::Boolean(flag) => (*flag).into(),
    }
}

fn resolve_options(
    info: &wit::PluginInfo,
    path: &Path,
    entry: &PluginConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<wit::OptionSetting>, PluginError> {
    for key in entry.options.keys() {
        if !info.options.iter().any(|option| &option.name == key) {
            let declared: Vec<&str> = info.options.iter().map(|o| o.name.as_str()).collect();
            return Err(PluginError::UnknownOption {
                path: path.to_owned(),
                id: info.id.clone(),
                key: key.clone(),
                declared: if declared.is_empty() {
                    "no options".to_owned()
                } else {
                    declared.join(", ")
                },
            });
        }
    }
    let mut settings = Vec::new();
    for option in &info.options {
        let type_error = |origin: String, found: String| PluginError::OptionType {
            path: path.to_owned(),
            id: info.id.clone(),
            key: option.name.clone(),
            origin,
            expected: option_type_name(option.option_type),
            found,
        };
        let value = if let Some(value) = entry.options.get(&option.name) {
            Some(from_toml(option.option_type, value).ok_or_else(|| {
                type_error("config".into(), format!("{} `{value}`", value.type_str()))
            })?)
        } else if let Some((var, text)) = option
            .env_var
            .as_ref()
            .filter(|var| entry.env_vars.contains(var))
            .and_then(|var| env(var).map(|text| (var, text)))
        {
            Some(
                from_text(option.option_type, &text)
                    .ok_or_else(|| type_error(format!("env {var}"), format!("`{text}`")))?,
            )
        } else {
            option.default.clone()
        };
        if let Some(value) = value {
            settings.push(wit::OptionSetting {
                name: option.name.clone(),
                value,
            });
        }
    }
    Ok(settings)
}

fn from_toml(option_type: wit::OptionType, value: &toml::Value) -> Option<wit::OptionValue> {
    match (option_type, value) {
        (wit::OptionType::Text, toml::Value::String(text)) => {
            Some(wit::OptionValue::Text(text.clone()))
        }
        (wit::OptionType::Integer, toml::Value::Integer(number)) => {
            Some(wit::OptionValue::Integer(*number))
        }
        (wit::OptionType::Float, toml::Value::Float(number)) => {
            Some(wit::OptionValue::Float(*number))
        }
        (wit::OptionType::Float, toml::Value::Integer(number)) => {
            Some(wit::OptionValue::Float(*number as f64))
        }
        (wit::OptionType::Boolean, toml::Value::Boolean(flag)) => {
            Some(wit::OptionValue::Boolean(*flag))
        }
        _ => None,
    }
}

fn from_text(option_type: wit::OptionType, text: &str) -> Option<wit::OptionValue> {
    let text = text.trim();
    match option_type {
        wit::OptionType::Text => Some(wit::OptionValue::Text(text.to_owned())),
        wit::OptionType::Integer => text.parse().ok().map(wit::OptionValue::Integer),
        wit::OptionType::Float => text.parse().ok().map(wit::OptionValue::Float),
        wit::OptionType::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(wit::OptionValue::Boolean(true)),
            "false" | "0" | "no" | "off" => Some(wit::OptionValue::Boolean(false)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_text_parses_by_type() {
        assert_eq!(
            from_text(wit::OptionType::Integer, " 42 "),
            Some(wit::OptionValue::Integer(42))
        );
        assert_eq!(from_text(wit::OptionType::Integer, "4.2"), None);
        assert_eq!(
            from_text(wit::OptionType::Boolean, "Yes"),
            Some(wit::OptionValue::Boolean(true))
        );
        assert_eq!(from_text(wit::OptionType::Boolean, "maybe"), None);
    }

    #[test]
    fn toml_values_must_match_the_declared_type() {
        let int = toml::Value::Integer(3);
        assert_eq!(
            from_toml(wit::OptionType::Float, &int),
            Some(wit::OptionValue::Float(3.0))
        );
        assert_eq!(from_toml(wit::OptionType::Text, &int), None);
        assert_eq!(
            from_toml(
                wit::OptionType::Boolean,
                &toml::Value::String("true".into())
            ),
            None
        );
    }

    #[test]
    fn only_locust_and_swarmtel_env_vars_are_read_for_plugins() {
        assert!(option_env_var_allowed("LOCUST_CUSTOM_OPTION"));
        assert!(option_env_var_allowed("SWARMTEL_REQUEST_STATS_PERIODIC"));
        for name in [
            "HOME",
            "AWS_SECRET_ACCESS_KEY",
            "LOCUST_",
            "locust_x",
            "LOCUST_A-B",
            "",
        ] {
            assert!(!option_env_var_allowed(name), "{name}");
        }
    }

    #[test]
    fn secrets_of_swarmtel_the_bridge_and_locust_are_recognised() {
        for name in [
            "SWARMTEL_TOKEN",
            "LOCUST_SWARMTEL_TOKEN",
            "LOCUST_SWARMTEL_ENDPOINT",
            "LOCUST_WEB_AUTH",
            "LOCUST_TLS_KEY",
            "LOCUST_TLS_CERT",
            "LOCUST_API_KEY",
            "SWARMTEL_DB_PASSWORD",
            "SWARMTEL_CONFIG",
            "SWARMTEL_CACHE_DIR",
            "LOCUST_SECRET",
            "LOCUST_APITOKEN",
            "SWARMTEL_AUTHTOKEN",
            "LOCUST_DB_PASSPHRASE",
            "LOCUST_PASSWORDS",
            "LOCUST_API_KEYS",
            "LOCUST_CLIENT_CERT_FILE",
        ] {
            assert!(env_var_holds_secret(name), "{name}");
        }
        for name in [
            "LOCUST_CUSTOM_OPTION",
            "SWARMTEL_REQUEST_STATS_PERIODIC",
            "LOCUST_HOST",
        ] {
            assert!(!env_var_holds_secret(name), "{name}");
        }
    }

    /// A change to a test description.
    type Edit<'a> = Box<dyn Fn(&mut wit::PluginInfo) + 'a>;

    fn info_with(edit: impl FnOnce(&mut wit::PluginInfo)) -> wit::PluginInfo {
        let mut info = wit::PluginInfo {
            id: "p".into(),
            version: "1.0".into(),
            description: "d".into(),
            options: Vec::new(),
            recorders: vec![wit::RecorderSpec {
                name: "r".into(),
                roles: vec![wit::Role::Worker],
                events: vec![wit::EventKind::TestStart],
                tick_interval_ms: None,
                request_extras: wit::RequestExtras::empty(),
            }],
            schemas: Vec::new(),
        };
        edit(&mut info);
        info
    }

    fn check(info: &wit::PluginInfo) -> Result<(), String> {
        check_plugin_info(info, Path::new("p.wasm"))
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    #[test]
    fn each_cap_on_a_description_is_hit_and_named() {
        let recorder = |index: usize| wit::RecorderSpec {
            name: format!("r{index}"),
            roles: vec![wit::Role::Worker],
            events: vec![wit::EventKind::TestStart],
            tick_interval_ms: None,
            request_extras: wit::RequestExtras::empty(),
        };
        let option = |index: usize| wit::OptionSpec {
            name: format!("o{index}"),
            option_type: wit::OptionType::Text,
            default: None,
            help: String::new(),
            env_var: None,
        };
        let schema = |index: usize| wit::TelemetrySchema {
            name: format!("s{index}"),
            schema: "{}".into(),
        };
        let at_caps = info_with(|info| {
            info.recorders = (0..caps::RECORDERS).map(recorder).collect();
            info.options = (0..caps::OPTIONS).map(option).collect();
            info.schemas = (0..caps::SCHEMAS).map(schema).collect();
        });
        check(&at_caps).expect("at every cap is fine");
        let cases: [(&str, Edit); 7] = [
            (
                "`recorders` (64)",
                Box::new(|i| i.recorders = (0..65).map(recorder).collect()),
            ),
            (
                "`options` (64)",
                Box::new(|i| i.options = (0..65).map(option).collect()),
            ),
            (
                "`schemas` (64)",
                Box::new(|i| i.schemas = (0..65).map(schema).collect()),
            ),
            (
                "`text_chars` (1024)",
                Box::new(|i| i.description = "d".repeat(1025)),
            ),
            (
                "`text_chars` (1024)",
                Box::new(|i| {
                    i.options = vec![wit::OptionSpec {
                        help: "h".repeat(1025),
                        ..option(0)
                    }]
                }),
            ),
            (
                "cap `version_chars`",
                Box::new(|i| i.version = "v".repeat(65)),
            ),
            (
                "must be 1 to 128",
                Box::new(|i| {
                    i.recorders = vec![wit::RecorderSpec {
                        name: "r".repeat(129),
                        ..recorder(0)
                    }]
                }),
            ),
        ];
        for (expected, edit) in cases {
            let error = check(&info_with(edit)).unwrap_err();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn guest_text_in_load_errors_is_escaped() {
        let evil = "x\u{1b}]0;pwned\u{7}\u{1b}[2J";
        let cases: [Edit; 4] = [
            Box::new(|i| i.id = evil.into()),
            Box::new(|i| i.version = evil.into()),
            Box::new(|i| i.recorders[0].name = evil.into()),
            Box::new(|i| {
                i.schemas = vec![wit::TelemetrySchema {
                    name: evil.into(),
                    schema: "{}".into(),
                }]
            }),
        ];
        for edit in cases {
            let error = check(&info_with(edit)).unwrap_err();
            assert!(
                !error.contains('\u{1b}') && !error.contains('\u{7}'),
                "{error:?}"
            );
            assert!(error.contains("\\u{1b}]0;pwned"), "{error}");
        }
    }

    #[test]
    fn an_option_naming_a_secret_is_refused_as_the_plugins_fault() {
        let info = info_with(|i| {
            i.options = vec![wit::OptionSpec {
                name: "loot".into(),
                option_type: wit::OptionType::Text,
                default: None,
                help: String::new(),
                env_var: Some("LOCUST_SWARMTEL_TOKEN".into()),
            }]
        });
        let Err(error) = check_plugin_info(&info, Path::new("p.wasm")) else {
            panic!("accepted");
        };
        assert!(error.is_plugin_fault());
        assert_eq!(error.kind_label(), "secret_env_var");
        assert!(
            error
                .to_string()
                .contains("`LOCUST_SWARMTEL_TOKEN`, which holds a secret")
        );
    }

    #[test]
    fn event_mask_holds_kinds() {
        let mut mask = EventMask::default();
        mask.insert(wit::EventKind::Request);
        mask.insert(wit::EventKind::Tick);
        assert!(mask.contains(wit::EventKind::Request));
        assert!(mask.contains(wit::EventKind::Tick));
        assert!(!mask.contains(wit::EventKind::TestStart));
    }
}
