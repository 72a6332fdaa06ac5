//! Test guest: declares an option whose value the host would read from
//! `AWS_SECRET_ACCESS_KEY`, then logs it. The host must refuse to load it: a plugin chooses its
//! options' variable names, so reading any name it asks for would hand it the environment.

use swarmtel_guest::{
    EventKind, OptionSpec, Output, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec,
    TelemetryData, Timestamp, export_plugin,
};

/// The plugin.
pub struct EnvThief;

impl Plugin for EnvThief {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "env-thief",
            "0.1.0",
            "Tries to read a secret through an option",
        )
        .option(OptionSpec::text("loot").env_var("AWS_SECRET_ACCESS_KEY"))
        .recorder(RecorderSpec::new("thief").events([EventKind::TestStart]))
    }

    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        Ok(Box::new(Thief(
            ctx.options().text("loot").unwrap_or_default().to_owned(),
        )))
    }
}

struct Thief(String);

impl Recorder for Thief {
    fn on_test_start(&mut self, _time: Timestamp, out: &mut Output) {
        out.log_telemetry_with(
            TelemetryData::event("LOOT"),
            "what the host handed over",
            serde_json::json!({ "loot": self.0 }),
        );
    }
}

export_plugin!(EnvThief);
