#![warn(missing_docs)]
//! swarmtel: a WebAssembly-sandboxed telemetry recorder runtime for Locust load tests.
//!
//! Plugins are WebAssembly components (see `wit/telemetry.wit`) that describe themselves and
//! create recorders per Locust role. The runtime feeds them Locust events in columnar batches
//! and validates every piece of telemetry they return before it reaches an output.
//!
//! The folders follow the flow of an event:
//!
//! ```text
//! sources ──────────► pipeline ──────────────────────────────────────────────► sinks
//! replay, serve       route ─► sandbox (recorder instances) ─► validate ─► enrich   json_lines
//! (ingest, wire)                                                  └─► dead letter
//! ```
//!
//! - [`sources`]: where events come from (a replayed stream, live Locust processes);
//! - [`pipeline`]: one module per stage, plus the runtime's own [`pipeline::counters`];
//! - [`sinks`]: where validated telemetry goes;
//! - around them, the plugin host: [`config`] reads the config file, [`plugin`] loads and
//!   describes plugins in the [`sandbox`], [`cache`] keeps compiled components.

/// Like `eprintln!`, for the runtime's diagnostics, except that a closed or broken stderr is
/// ignored instead of panicking: losing a log line must never stop a run or lose telemetry
/// (`swarmtel serve 2>&1 | head` closes stderr early).
#[macro_export]
macro_rules! diag {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        if !$crate::diagnostics_silenced() {
            let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
        }
    }};
}

/// Like `eprint!`, with [`diag!`]'s tolerance of a closed stderr.
#[macro_export]
macro_rules! diag_text {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        if !$crate::diagnostics_silenced() {
            let _ = ::std::write!(::std::io::stderr(), $($arg)*);
        }
    }};
}

static SILENCED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the runtime's diagnostics on stderr off (or back on) for this process: for programs
/// that embed the pipeline and report through its summary instead, such as property tests
/// that feed it thousands of bad lines.
pub fn silence_diagnostics(silenced: bool) {
    SILENCED.store(silenced, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`silence_diagnostics`] turned diagnostics off.
#[doc(hidden)]
pub fn diagnostics_silenced() -> bool {
    SILENCED.load(std::sync::atomic::Ordering::Relaxed)
}

pub mod bindings;
pub mod cache;
pub mod config;
pub mod guest_text;
pub mod pipeline;
pub mod plugin;
pub mod sandbox;
pub mod sinks;
pub mod sources;
