//! Loading a config's plugins before a run: every file checked, each plugin loaded, duplicate
//! ids refused; a plugin whose own code faults is skipped unless it is `required`.

use std::path::PathBuf;
use std::sync::Arc;

use super::RunError;
use crate::config::Config;
use crate::plugin::{self, LoadedPlugin, PluginError};
use crate::sandbox::Sandbox;

/// Checks that every plugin file of a config can be opened: the part of loading that needs
/// no compiling, so `serve` can report a missing file before it accepts connections.
pub fn check_plugin_files(config: &Config) -> Result<(), RunError> {
    for entry in &config.plugins {
        let path = config.plugin_path(entry);
        std::fs::File::open(&path).map_err(|source| PluginError::Read { path, source })?;
    }
    Ok(())
}

/// Plugins a config lists: those loaded, and those skipped because their code faulted while
/// loading (only plugins that are not `required` are skipped).
pub struct LoadedPlugins {
    /// Ready to run, in config order.
    pub loaded: Vec<LoadedPlugin>,
    /// Skipped: (plugin file, why).
    pub failed: Vec<(PathBuf, PluginError)>,
}

/// Loads every plugin of a config, in order. A file or config problem fails the whole run; a
/// plugin whose own code faults while loading is skipped with a warning, unless it is
/// `required`.
pub fn load_plugins(
    sandbox: &Arc<Sandbox>,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedPlugins, RunError> {
    let mut loaded = Vec::new();
    let mut failed = Vec::new();
    for entry in &config.plugins {
        let path = config.plugin_path(entry);
        let plugin = match plugin::load_plugin(sandbox, &path, entry, env) {
            Ok(plugin) => plugin,
            Err(error) if error.is_plugin_fault() && !entry.required => {
                crate::diag!("swarmtel: warning: {error}; the run goes on without it");
                failed.push((path, error));
                continue;
            }
            Err(error) if error.is_plugin_fault() => {
                return Err(RunError::RequiredPluginFailed {
                    id: path.display().to_string(),
                    reason: error.to_string(),
                });
            }
            Err(error) => return Err(error.into()),
        };
        if let Some(other) = loaded
            .iter()
            .find(|other: &&LoadedPlugin| other.id() == plugin.id())
        {
            // What a plugin declared: it costs only itself, like any other such refusal.
            let error = PluginError::Description {
                path: path.clone(),
                id: plugin.id().to_owned(),
                message: format!("id already used by {}", other.path.display()),
            };
            if entry.required {
                return Err(error.into());
            }
            crate::diag!("swarmtel: warning: {error}; the run goes on without it");
            failed.push((path, error));
            continue;
        }
        loaded.push(plugin);
    }
    Ok(LoadedPlugins { loaded, failed })
}

/// Warns about output filters that name a plugin no loaded plugin is (a typo, or a plugin
/// that failed to load): such a filter takes nothing of it.
pub(super) fn warn_about_filters(config: &Config, loaded: &[LoadedPlugin]) {
    for (index, output) in config.outputs.iter().enumerate() {
        for plugin in &output.filter().plugins {
            let known = plugin == crate::pipeline::enrich::SELF_PLUGIN_ID
                || loaded.iter().any(|loaded| loaded.id() == plugin);
            if !known {
                crate::diag!(
                    "swarmtel: warning: outputs[{index}].filter names plugin `{}`, which is not loaded: it takes nothing of it",
                    crate::guest_text::shown(plugin)
                );
            }
        }
    }
}
