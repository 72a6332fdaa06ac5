//! Test guest: declares a schema whose `pattern` backtracks exponentially in a backtracking
//! regex engine, and returns items that make it do so. With the host's old engine, two calls
//! cost 50 s of host CPU.

use swarmtel_guest::{
    EventKind, Output, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec, TelemetryData,
    Timestamp, export_plugin,
};

/// The plugin.
pub struct SchemaRegex;

impl Plugin for SchemaRegex {
    fn describe() -> PluginInfo {
        PluginInfo::new("schema-regex", "0.1.0", "A backtracking pattern")
            .recorder(RecorderSpec::new("regex").events([EventKind::TestStart]))
            .schema(
                "MATCHED",
                serde_json::json!({
                    "type": "object",
                    "properties": { "text": { "type": "string", "pattern": "^(a|aa)+\\1?$" } }
                }),
            )
    }

    fn create_recorder(_ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        Ok(Box::new(Matcher))
    }
}

struct Matcher;

impl Recorder for Matcher {
    fn on_test_start(&mut self, _time: Timestamp, out: &mut Output) {
        for _ in 0..2 {
            out.log_telemetry_with(
                TelemetryData::event("MATCHED"),
                "backtrack",
                serde_json::json!({ "text": format!("{}b", "a".repeat(40)) }),
            );
        }
    }
}

export_plugin!(SchemaRegex);
