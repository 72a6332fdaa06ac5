//! Sources: where events come from and how they reach the [`crate::pipeline`].
//!
//! - [`ingest`] decodes event lines (the replay format, which live connections speak too);
//! - [`replay`] reads a recorded stream from a file or stdin;
//! - [`serve`] accepts live Locust processes over [`wire`] (the bridge's protocol);
//! - [`synthetic`] generates streams for tests and benchmarks.

pub mod ingest;
pub mod replay;
pub mod serve;
pub mod synthetic;
pub mod wire;
