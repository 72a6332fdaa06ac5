//! Sinks: where validated telemetry goes.

pub mod json_lines;
