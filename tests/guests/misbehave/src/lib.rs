//! Test guest: a recorder that misbehaves as its `mode` option says, so tests can show the
//! runtime contains it while healthy recorders beside it lose nothing.
//!
//! Modes: `panic-on-request` (panics on every request batch), `loop-on-request` (never
//! returns), `grow-memory` (allocates until the memory cap), `bad-telemetry` (at test start,
//! one valid item and one of each kind of invalid item), `refuse` (refuses to be created),
//! `healthy` (counts requests, reports at test stop).

use swarmtel_guest::{
    EventKind, OptionSpec, Output, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec,
    Requests, Role, TelemetryData, Timestamp, export_plugin,
};

/// The plugin.
pub struct Misbehave;

impl Plugin for Misbehave {
    fn describe() -> PluginInfo {
        PluginInfo::new("misbehave", "0.1.0", "Misbehaves on purpose, for tests")
            .option(
                OptionSpec::text("mode")
                    .default_text("healthy")
                    .help("What to do wrong")
                    .env_var("MISBEHAVE_MODE"),
            )
            .option(
                OptionSpec::integer("count")
                    .default_integer(1)
                    .help("A number"),
            )
            .recorder(
                RecorderSpec::new("misbehaving_recorder")
                    .roles([Role::Worker, Role::Standalone])
                    .events([
                        EventKind::Request,
                        EventKind::TestStart,
                        EventKind::TestStop,
                    ]),
            )
            .schema(
                "CHECKED",
                serde_json::json!({
                    "type": "object",
                    "required": ["count"],
                    "properties": {"count": {"type": "integer"}}
                }),
            )
    }

    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        let mode = ctx.options().text("mode").unwrap_or("healthy").to_owned();
        if mode == "refuse" {
            return Err("mode `refuse`: this recorder refuses to start".into());
        }
        Ok(Box::new(Misbehaving {
            mode,
            requests: 0,
            hoard: Vec::new(),
        }))
    }
}

struct Misbehaving {
    mode: String,
    requests: u64,
    hoard: Vec<Vec<u8>>,
}

impl Recorder for Misbehaving {
    fn on_requests(&mut self, requests: &Requests<'_>, _out: &mut Output) {
        self.requests += requests.len() as u64;
        match self.mode.as_str() {
            "panic-on-request" => panic!("misbehave: panic on request"),
            "loop-on-request" => {
                let mut spin = 0u64;
                loop {
                    spin = std::hint::black_box(spin.wrapping_add(1));
                }
            }
            "grow-memory" => loop {
                self.hoard.push(vec![1u8; 1024 * 1024]);
            },
            _ => {}
        }
    }

    fn on_test_start(&mut self, _time: Timestamp, out: &mut Output) {
        if self.mode != "bad-telemetry" {
            return;
        }
        let checked = TelemetryData::metric("CHECKED");
        out.log_telemetry_with(checked.clone(), "valid", serde_json::json!({"count": 1}));
        out.log_telemetry_raw(checked.clone(), "not json", "{\"count\":".into());
        out.log_telemetry_raw(checked.clone(), "not an object", "[1,2]".into());
        out.log_telemetry_with(
            checked.clone(),
            "schema",
            serde_json::json!({"count": "one"}),
        );
        out.log_telemetry_with(
            checked.clone(),
            "host key",
            serde_json::json!({"count": 1, "run_id": "forged"}),
        );
        out.log_telemetry_with(
            checked,
            "too large",
            serde_json::json!({"count": 1, "pad": "x".repeat(20_000)}),
        );
        out.log_telemetry(TelemetryData::event("bad name!"), "envelope");
    }

    fn on_test_stop(&mut self, _time: Timestamp, out: &mut Output) {
        out.log_telemetry_with(
            TelemetryData::metric("REQUESTS_SEEN"),
            "requests seen",
            serde_json::json!({"requests": self.requests, "mode": self.mode}),
        );
    }
}

export_plugin!(Misbehave);
