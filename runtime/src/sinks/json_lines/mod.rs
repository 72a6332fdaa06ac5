//! The JSON-lines sink: each record as locust-telemetry's JSON log line (see
//! [`crate::pipeline::enrich`]), so its Loki/Promtail rules and Grafana dashboards keep
//! working. [`encode`] makes the line, [`writer`] carries it to a file or the console.

pub mod config;
pub mod encode;
pub mod writer;

use std::io;

pub use config::{Envelope, JsonLinesConfig};
pub use writer::{Console, Existing, JsonLinesWriter};

use super::{Record, Sink};
use crate::pipeline::enrich;

/// Builds one output line in a given envelope (see [`enrich`]).
type LineBuilder = for<'a> fn(
    &'a enrich::RunContext,
    &enrich::Origin<'a>,
    &'a crate::pipeline::validate::ValidItem,
    enrich::Level,
) -> enrich::TelemetryLine<'a>;

/// Writes each record as one JSON line.
pub struct JsonLinesSink {
    writer: JsonLinesWriter,
    line: LineBuilder,
}

impl JsonLinesSink {
    /// A sink over an open writer, writing swarmtel's own line.
    pub fn new(writer: JsonLinesWriter) -> Self {
        Self::with_envelope(writer, Envelope::Swarmtel)
    }

    /// A sink over an open writer, writing lines of the given shape.
    pub fn with_envelope(writer: JsonLinesWriter, envelope: Envelope) -> Self {
        let line: LineBuilder = match envelope {
            Envelope::Swarmtel => enrich::telemetry_line,
            Envelope::LocustTelemetry => enrich::locust_telemetry_line,
        };
        Self { writer, line }
    }
}

impl Sink for JsonLinesSink {
    fn write(&mut self, record: &Record<'_>) -> io::Result<()> {
        self.writer.write(&(self.line)(
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
