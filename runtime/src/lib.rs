#![warn(missing_docs)]
//! swarmtel: a WebAssembly-sandboxed telemetry recorder runtime for Locust load tests.
//!
//! Plugins are WebAssembly components (see `wit/telemetry.wit`) that describe themselves and
//! create recorders per Locust role. The runtime feeds them Locust events in columnar batches
//! and validates every piece of telemetry they return before it reaches an output.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! ingest ─► route ─► sandbox (recorder instances) ─► validate ─► enrich ─► sink
//!                                                        └─► dead letter
//! ```
//!
//! [`config`] reads the config file, [`plugin`] loads and describes plugins, and [`pipeline`]
//! drives a run.

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
pub mod enrich;
pub mod guest_text;
pub mod ingest;
pub mod pipeline;
pub mod plugin;
pub mod recorder_task;
pub mod route;
pub mod sandbox;
pub mod serve;
pub mod sink;
pub mod synthetic;
pub mod validate;
pub mod wire;
