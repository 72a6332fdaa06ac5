//! Test guest: faults at a chosen point of its life, or reports what it can see of the host.
//!
//! Modes (option `mode`):
//! - `loop-on-create`: never returns from `create-recorder`;
//! - `panic-on-test-start`: panics on `test_start` only, then works: the host restarts it;
//! - `burn`: spins for `spin` iterations on every request batch (fuel and deadline tests);
//! - `report-host`: at `test_start`, reports the wall clock, the monotonic clock and a value
//!   that depends on the random seed, as telemetry `HOST_VIEW`;
//! - `slow-on-worker-0`: on worker-0 only, spins for `spin` iterations on every request batch;
//!   on every node, records the wall-clock interval of each request-batch call and reports
//!   them at test stop as `CALLS` (needs the `wall_clock` capability).
//!
//! - `count-batches`: reports every request batch at once as `BATCH` with its request count
//!   (so a test can count what reached the recorders even if the runtime is killed later).
//! - `slow-load`: spins for `spin` iterations in `create-recorder` for the host's start-up
//!   probe (node `probe`) only, so loading the plugin takes long, like compiling a big one;
//!   then works like `count-batches`.
//!
//! Every mode counts requests and reports `REQUESTS_SEEN` at test stop.

use std::hash::{BuildHasher, Hasher};

use swarmtel_guest::{
    EventKind, OptionSpec, Output, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec,
    Requests, Role, TelemetryData, Timestamp, export_plugin,
};

/// The plugin.
pub struct Lifecycle;

impl Plugin for Lifecycle {
    fn describe() -> PluginInfo {
        PluginInfo::new("lifecycle", "0.1.0", "Faults at a chosen point, for tests")
            .option(
                OptionSpec::text("mode")
                    .default_text("report-host")
                    .help("What to do"),
            )
            .option(
                OptionSpec::integer("spin")
                    .default_integer(0)
                    .help("Spin iterations"),
            )
            .recorder(
                RecorderSpec::new("lifecycle_recorder")
                    .roles([Role::Worker, Role::Standalone])
                    .events([
                        EventKind::Request,
                        EventKind::TestStart,
                        EventKind::TestStop,
                    ]),
            )
    }

    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        let mode = ctx.options().text("mode").unwrap_or_default().to_owned();
        if mode == "loop-on-create" {
            let mut spin = 0u64;
            loop {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
        }
        let spin = ctx.options().integer("spin").unwrap_or(0) as u64;
        let spin = match mode.as_str() {
            "slow-on-worker-0" if ctx.node() != "worker-0" => 0,
            "slow-load" => {
                if ctx.node() == "probe" {
                    let mut count = 0u64;
                    while count < spin {
                        count = std::hint::black_box(count + 1);
                    }
                }
                0
            }
            _ => spin,
        };
        Ok(Box::new(LifecycleRecorder {
            mode,
            spin,
            requests: 0,
            calls: Vec::new(),
        }))
    }
}

struct LifecycleRecorder {
    mode: String,
    spin: u64,
    requests: u64,
    /// Wall-clock (start, end) of each request-batch call, in Unix seconds.
    calls: Vec<(f64, f64)>,
}

fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(-1.0)
}

impl Recorder for LifecycleRecorder {
    fn on_requests(&mut self, requests: &Requests<'_>, out: &mut Output) {
        self.requests += requests.len() as u64;
        if self.mode == "count-batches" || self.mode == "slow-load" {
            out.log_telemetry_with(
                TelemetryData::metric("BATCH"),
                "a request batch",
                serde_json::json!({ "requests": requests.len() }),
            );
        }
        let start = wall_clock();
        if self.mode == "burn" || self.mode == "slow-on-worker-0" {
            let mut x = 0u64;
            for i in 0..self.spin {
                x = std::hint::black_box(x.wrapping_add(i));
            }
        }
        if self.mode == "slow-on-worker-0" {
            self.calls.push((start, wall_clock()));
        }
    }

    fn on_test_start(&mut self, _time: Timestamp, out: &mut Output) {
        match self.mode.as_str() {
            "panic-on-test-start" => panic!("lifecycle: panic on test start"),
            "report-host" => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(-1.0);
                let start = std::time::Instant::now();
                let elapsed_ns = start.elapsed().as_nanos() as u64;
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u64(42);
                out.log_telemetry_with(
                    TelemetryData::event("HOST_VIEW"),
                    "what the guest sees",
                    serde_json::json!({
                        "wall_clock_seconds": wall,
                        "monotonic_elapsed_ns": elapsed_ns,
                        "seeded_hash": hasher.finish().to_string(),
                    }),
                );
            }
            _ => {}
        }
    }

    fn on_test_stop(&mut self, _time: Timestamp, out: &mut Output) {
        if self.mode == "slow-on-worker-0" {
            out.log_telemetry_with(
                TelemetryData::metric("CALLS"),
                "wall-clock intervals of request-batch calls",
                serde_json::json!({ "calls": self.calls }),
            );
        }
        out.log_telemetry_with(
            TelemetryData::metric("REQUESTS_SEEN"),
            "requests seen",
            serde_json::json!({"requests": self.requests, "mode": self.mode}),
        );
    }
}

export_plugin!(Lifecycle);
