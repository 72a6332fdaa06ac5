//! The JSON-lines sink: each record as locust-telemetry's JSON log line (see
//! [`crate::pipeline::enrich`]), so its Loki/Promtail rules and Grafana dashboards keep
//! working. [`encode`] makes the line, [`writer`] carries it to a file or the console.

pub mod config;
pub mod encode;
pub mod writer;

use std::io;

pub use config::JsonLinesConfig;
pub use writer::{Console, Existing, JsonLinesWriter};

use super::{Record, Sink};
use crate::pipeline::enrich;

/// Writes each record as one JSON line.
pub struct JsonLinesSink {
    writer: JsonLinesWriter,
}

impl JsonLinesSink {
    /// A sink over an open writer.
    pub fn new(writer: JsonLinesWriter) -> Self {
        Self { writer }
    }
}

impl Sink for JsonLinesSink {
    fn write(&mut self, record: &Record<'_>) -> io::Result<()> {
        self.writer.write(&enrich::telemetry_line(
            record.run,
            record.origin,
            record.item,
            record.level,
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}
