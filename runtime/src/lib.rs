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

pub mod bindings;
pub mod cache;
pub mod config;
pub mod enrich;
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
