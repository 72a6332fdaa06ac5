//! The locust-telemetry extending guide's `CustomTelemetryPlugin` and
//! `CustomTelemetryRecorder`, ported one to one to a swarmtel plugin.
//!
//! Loaded on master and worker (like `load_master_telemetry_recorders` and
//! `load_worker_telemetry_recorders`), it logs `CUSTOM_START` at test start and `CUSTOM_STOP`
//! at test stop, and carries its `custom-option` (env `LOCUST_CUSTOM_OPTION`, default
//! `default-value`) in the fields so you can see options arrive.

use swarmtel_guest::{
    EventKind, OptionSpec, Output, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec,
    Role, TelemetryData, Timestamp, export_plugin,
};

/// The plugin: one option, one recorder for master and worker.
pub struct CustomTelemetryPlugin;

impl Plugin for CustomTelemetryPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "custom-telemetry",
            env!("CARGO_PKG_VERSION"),
            "The extending guide's custom recorder: logs test start and stop",
        )
        .option(
            OptionSpec::text("custom-option")
                .default_text("default-value")
                .help("Example custom argument")
                .env_var("LOCUST_CUSTOM_OPTION"),
        )
        .recorder(
            RecorderSpec::new("custom_telemetry_recorder")
                .roles([Role::Master, Role::Worker])
                .events([EventKind::TestStart, EventKind::TestStop]),
        )
    }

    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        let custom_option = ctx
            .options()
            .text("custom-option")
            .unwrap_or("default-value")
            .to_owned();
        Ok(Box::new(CustomTelemetryRecorder { custom_option }))
    }
}

/// Logs `CUSTOM_START` and `CUSTOM_STOP`.
pub struct CustomTelemetryRecorder {
    custom_option: String,
}

impl Recorder for CustomTelemetryRecorder {
    fn on_test_start(&mut self, _time: Timestamp, out: &mut Output) {
        out.log_telemetry_with(
            TelemetryData::event("CUSTOM_START"),
            "Custom telemetry recorder started",
            serde_json::json!({ "custom_option": self.custom_option }),
        );
    }

    fn on_test_stop(&mut self, _time: Timestamp, out: &mut Output) {
        out.log_telemetry_with(
            TelemetryData::event("CUSTOM_STOP"),
            "Custom telemetry recorder stopped",
            serde_json::json!({ "custom_option": self.custom_option }),
        );
    }
}

export_plugin!(CustomTelemetryPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use swarmtel_guest::testing::Harness;
    use swarmtel_guest::{Event, OptionValue, Options};

    #[test]
    fn logs_start_and_stop_with_the_option_value() {
        let options = Options::from_pairs([(
            "custom-option".to_owned(),
            OptionValue::Text("from-config".to_owned()),
        )]);
        let mut harness = Harness::with_options::<CustomTelemetryPlugin>(
            "custom_telemetry_recorder",
            Role::Worker,
            options,
        )
        .unwrap();
        let start = harness.event(10.0, Event::TestStart);
        let stop = harness.event(20.0, Event::TestStop);
        assert_eq!(start.len(), 1);
        assert_eq!(start[0].name, "CUSTOM_START");
        assert_eq!(start[0].fields, r#"{"custom_option":"from-config"}"#);
        assert_eq!(stop[0].name, "CUSTOM_STOP");
        assert_eq!(stop[0].message, "Custom telemetry recorder stopped");
    }

    #[test]
    fn defaults_the_option() {
        let mut harness =
            Harness::new::<CustomTelemetryPlugin>("custom_telemetry_recorder", Role::Master)
                .unwrap();
        let start = harness.event(10.0, Event::TestStart);
        assert_eq!(start[0].fields, r#"{"custom_option":"default-value"}"#);
    }
}
