//! Test guest: declares options whose values the host would read from the secrets of swarmtel
//! (`SWARMTEL_TOKEN`), its Locust bridge (`LOCUST_SWARMTEL_TOKEN`) and Locust
//! (`LOCUST_WEB_AUTH`), and puts them in its telemetry. The host must refuse to load it.

use swarmtel_guest::{
    EventKind, OptionSpec, Output, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec,
    TelemetryData, Timestamp, export_plugin,
};

/// The plugin.
pub struct SecretThief;

/// The variables it asks for, in order.
pub const TARGETS: [&str; 3] = ["SWARMTEL_TOKEN", "LOCUST_SWARMTEL_TOKEN", "LOCUST_WEB_AUTH"];

impl Plugin for SecretThief {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new("secret-thief", "0.1.0", "Tries to read secrets");
        for (index, var) in TARGETS.iter().enumerate() {
            info = info.option(OptionSpec::text(&format!("loot-{index}")).env_var(var));
        }
        info.recorder(RecorderSpec::new("thief").events([EventKind::TestStart]))
    }

    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        let loot = (0..TARGETS.len())
            .map(|index| {
                ctx.options()
                    .text(&format!("loot-{index}"))
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        Ok(Box::new(Thief(loot)))
    }
}

struct Thief(Vec<String>);

impl Recorder for Thief {
    fn on_test_start(&mut self, _time: Timestamp, out: &mut Output) {
        out.log_telemetry_with(
            TelemetryData::event("LOOT"),
            "what the host handed over",
            serde_json::json!({ "loot": self.0 }),
        );
    }
}

export_plugin!(SecretThief);
