//! Test guest: a schema just inside the caps (about 8,200 schema nodes once its `$ref`s are
//! followed) and, for every request batch, 10 items of 7,000 array values each, so every
//! value walks the whole schema: tens of milliseconds of host validation per item, far more
//! than the guest's own call.

use swarmtel_guest::{
    EventKind, Output, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec, Requests, Role,
    TelemetryData, export_plugin,
};

/// The plugin.
pub struct SchemaHeavy;

/// Items per request batch.
pub const ITEMS: usize = 10;

impl Plugin for SchemaHeavy {
    fn describe() -> PluginInfo {
        let branches: Vec<serde_json::Value> = (0..100)
            .map(|_| serde_json::json!({ "type": "string" }))
            .collect();
        let refs: Vec<serde_json::Value> = (0..40)
            .map(|_| serde_json::json!({ "$ref": "#/$defs/a" }))
            .collect();
        PluginInfo::new("schema-heavy", "0.1.0", "Costly to validate")
            .recorder(
                RecorderSpec::new("heavy")
                    .roles([Role::Worker, Role::Standalone])
                    .events([EventKind::Request]),
            )
            .schema(
                "HEAVY",
                serde_json::json!({
                    "$defs": { "a": { "not": { "anyOf": branches } } },
                    "properties": { "v": { "items": { "allOf": refs } } }
                }),
            )
    }

    fn create_recorder(_ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        Ok(Box::new(Heavy))
    }
}

struct Heavy;

impl Recorder for Heavy {
    fn on_requests(&mut self, _requests: &Requests<'_>, out: &mut Output) {
        let fields = format!("{{\"v\":[{}]}}", vec!["1"; 7_000].join(","));
        for _ in 0..ITEMS {
            out.log_telemetry_raw(TelemetryData::metric("HEAVY"), "heavy", fields.clone());
        }
    }
}

export_plugin!(SchemaHeavy);
