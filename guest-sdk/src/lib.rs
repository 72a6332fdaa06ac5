#![warn(missing_docs)]
//! Write swarmtel telemetry recorders in plain Rust.
//!
//! swarmtel runs recorders as sandboxed WebAssembly components. This crate hides the
//! component plumbing: you implement [`Plugin`] (describe yourself, create recorders per role)
//! and [`Recorder`] (one method per Locust event, each a no-op by default), then call
//! [`export_plugin!`] once. Build with `cargo build --release --target wasm32-wasip2` and list
//! the `.wasm` in a swarmtel config.
//!
//! The concepts are locust-telemetry's: a plugin declares options and loads recorders per role;
//! a recorder listens to events and calls [`Output::log_telemetry`] with a [`TelemetryData`]
//! (type and name), a message, and optional fields. It can also report metric points
//! ([`Output::add_counter`], [`Output::set_gauge`], [`Output::record_response_times`]), which
//! the host exports through Prometheus and OTLP.
//!
//! # Example
//!
//! The locust-telemetry extending guide's `CustomTelemetryRecorder`, ported, and driven here
//! natively with the [`testing::Harness`] (the same code runs inside the sandbox):
//!
//! ```
//! use swarmtel_guest::{
//!     export_plugin, EventKind, OptionSpec, Output, Plugin, PluginInfo, Recorder,
//!     RecorderContext, RecorderSpec, Role, TelemetryData, Timestamp,
//! };
//!
//! struct CustomTelemetryPlugin;
//!
//! impl Plugin for CustomTelemetryPlugin {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("custom-telemetry", "0.1.0", "Logs when a test starts and stops")
//!             .option(
//!                 OptionSpec::text("custom-option")
//!                     .default_text("default-value")
//!                     .help("Example custom argument")
//!                     .env_var("LOCUST_CUSTOM_OPTION"),
//!             )
//!             .recorder(
//!                 RecorderSpec::new("custom_telemetry_recorder")
//!                     .roles([Role::Master, Role::Worker])
//!                     .events([EventKind::TestStart, EventKind::TestStop]),
//!             )
//!     }
//!
//!     fn create_recorder(_ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
//!         Ok(Box::new(CustomTelemetryRecorder))
//!     }
//! }
//!
//! struct CustomTelemetryRecorder;
//!
//! impl Recorder for CustomTelemetryRecorder {
//!     fn on_test_start(&mut self, _time: Timestamp, out: &mut Output) {
//!         out.log_telemetry(
//!             TelemetryData::event("CUSTOM_START"),
//!             "Custom telemetry recorder started",
//!         );
//!     }
//! }
//!
//! export_plugin!(CustomTelemetryPlugin);
//!
//! // Drive it natively, as the host would inside the sandbox:
//! let mut harness = swarmtel_guest::testing::Harness::new::<CustomTelemetryPlugin>(
//!     "custom_telemetry_recorder",
//!     Role::Master,
//! )
//! .unwrap();
//! let telemetry = harness.event(1_700_000_000.0, swarmtel_guest::Event::TestStart);
//! assert_eq!(telemetry[0].name, "CUSTOM_START");
//! ```

extern crate self as swarmtel_guest;

mod dispatch;
mod info;
mod metrics;
mod output;
mod requests;
pub mod testing;

#[doc(hidden)]
pub mod __private {
    //! Generated bindings and glue used by [`export_plugin!`](crate::export_plugin); not API.
    pub use wit_bindgen;

    #[allow(missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit/0.2.0",
            world: "recorder-plugin",
            additional_derives: [PartialEq],
            pub_export_macro: true,
            export_macro_name: "__export_recorder_plugin",
            default_bindings_module: "swarmtel_guest::__private::bindings",
            runtime_path: "swarmtel_guest::__private::wit_bindgen::rt",
            bitflags_path: "swarmtel_guest::__private::wit_bindgen::rt::bitflags",
        });
    }

    pub use crate::dispatch::PluginExport;
}

pub use info::{OptionSpec, Options, PluginInfo, RecorderContext, RecorderSpec};
pub use metrics::{AttributeValue, Metric, ResponseTimes, round_response_time};
pub use output::{Output, TelemetryData};
pub use requests::{Endpoint, EndpointId, Request, Requests};

/// Types of the WIT contract that appear unchanged in this API.
pub use __private::bindings::swarmtel::telemetry::types::{
    EndpointStats, ErrorStats, Event, EventKind, Heartbeat, OptionType, OptionValue, ProcessSample,
    RequestExtras, Role, StatsSnapshot, TelemetryType, Usage, UserError, WorkerReport,
};

/// Seconds since the Unix epoch (UTC), taken from the event, as Locust's `time.time()`.
pub type Timestamp = f64;

/// A telemetry plugin: says what it is and creates recorders, like locust-telemetry's
/// `BaseTelemetryPlugin` with `add_arguments` and `load_*_telemetry_recorders`.
pub trait Plugin: 'static {
    /// Describes the plugin: id, version, options, recorders and schemas.
    fn describe() -> PluginInfo;

    /// Creates the recorder `ctx.recorder()` for one node in `ctx.role()`, from resolved
    /// options. An `Err` refuses with a message the host reports.
    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String>;
}

/// A recorder: reacts to Locust events and logs telemetry, like locust-telemetry's
/// `BaseTelemetryRecorder`. Every hook is a no-op unless overridden; the host delivers only
/// the events named in the recorder's [`RecorderSpec`].
#[allow(unused_variables)]
pub trait Recorder: 'static {
    /// Locust `test_start`.
    fn on_test_start(&mut self, time: Timestamp, out: &mut Output) {}
    /// Locust `test_stopping`.
    fn on_test_stopping(&mut self, time: Timestamp, out: &mut Output) {}
    /// Locust `test_stop`.
    fn on_test_stop(&mut self, time: Timestamp, out: &mut Output) {}
    /// Locust `spawning_complete(user_count)`.
    fn on_spawning_complete(&mut self, time: Timestamp, user_count: u32, out: &mut Output) {}
    /// All request events of one batch. The default calls [`Recorder::on_request`] for each;
    /// override it to work on the columns directly.
    fn on_requests(&mut self, requests: &Requests<'_>, out: &mut Output) {
        for request in requests.iter() {
            self.on_request(&request, out);
        }
    }
    /// Locust `request(...)`, one request.
    fn on_request(&mut self, request: &Request<'_>, out: &mut Output) {}
    /// Locust `user_error`.
    fn on_user_error(&mut self, time: Timestamp, error: &UserError, out: &mut Output) {}
    /// Locust `cpu_warning(cpu_usage)`, in percent.
    fn on_cpu_warning(&mut self, time: Timestamp, cpu_usage: f64, out: &mut Output) {}
    /// Locust `usage_monitor(cpu_usage, memory_usage)`.
    fn on_usage_monitor(&mut self, time: Timestamp, usage: &Usage, out: &mut Output) {}
    /// Locust `worker_connect(client_id)`.
    fn on_worker_connect(&mut self, time: Timestamp, client_id: &str, out: &mut Output) {}
    /// Locust `worker_report`.
    fn on_worker_report(&mut self, time: Timestamp, report: &WorkerReport, out: &mut Output) {}
    /// Locust `heartbeat_sent`.
    fn on_heartbeat_sent(&mut self, time: Timestamp, heartbeat: &Heartbeat, out: &mut Output) {}
    /// Locust `heartbeat_received`.
    fn on_heartbeat_received(&mut self, time: Timestamp, heartbeat: &Heartbeat, out: &mut Output) {}
    /// Locust `reset_stats`.
    fn on_reset_stats(&mut self, time: Timestamp, out: &mut Output) {}
    /// Locust `quitting`.
    fn on_quitting(&mut self, time: Timestamp, out: &mut Output) {}
    /// Locust `quit(exit_code)`.
    fn on_quit(&mut self, time: Timestamp, exit_code: i32, out: &mut Output) {}
    /// The master's aggregated statistics.
    fn on_stats_snapshot(&mut self, time: Timestamp, snapshot: &StatsSnapshot, out: &mut Output) {}
    /// The host's tick, every `tick_interval_ms` of event time.
    fn on_tick(&mut self, time: Timestamp, out: &mut Output) {}
    /// A sample of this node's Locust process: CPU, memory and network use.
    fn on_process_sample(&mut self, time: Timestamp, sample: &ProcessSample, out: &mut Output) {}
    /// The event stream ended: log anything still pending.
    fn on_finish(&mut self, out: &mut Output) {}
}

/// Logs one line of the plugin's own diagnostics through the host (not telemetry).
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    __private::bindings::swarmtel::telemetry::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Severity of a diagnostic line for [`log`].
pub use __private::bindings::swarmtel::telemetry::host::LogLevel;

/// Exports a [`Plugin`] type as the component's implementation. Call it once per crate.
///
/// ```ignore
/// swarmtel_guest::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        // Only a wasm build exports: the component ABI's symbol names do not link natively,
        // where the plugin is driven through `testing::Harness` instead.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type SwarmtelPluginExport = $crate::__private::PluginExport<$plugin>;
            $crate::__private::bindings::__export_recorder_plugin!(SwarmtelPluginExport);
        };
    };
}

/// The README's Rust example, compiled as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExample;
