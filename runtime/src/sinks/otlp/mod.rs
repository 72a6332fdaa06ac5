//! The OTLP sink: metrics (the built-in request metrics and the runtime's own counters) and,
//! unless turned off, the JSON telemetry as logs, sent over OTLP/HTTP protobuf to an
//! OpenTelemetry Collector or any OTLP receiver. [`encode`] builds the protobuf messages,
//! [`transport`] sends them.
//!
//! Metrics go out every `export_interval_ms` (at a flush of the outputs) and once more at
//! the end; logs at every flush, in requests of at most [`MAX_LOGS_PER_REQUEST`] records.

pub mod config;
pub mod encode;
pub mod transport;

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use config::{Compression, OtlpConfig};
use encode::LogSource;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use transport::{Export, Signal, Target, Transport, TransportStats};

use super::{Record, Sink};
use crate::pipeline::Summary;
use crate::pipeline::metrics::RunMetrics;

/// Most log records in one request.
pub const MAX_LOGS_PER_REQUEST: usize = 512;

/// Sends metrics and logs to an OTLP receiver.
pub struct OtlpSink {
    name: String,
    logs: bool,
    gzip: bool,
    interval: Duration,
    drain: Duration,
    transport: Transport,
    /// Log records waiting for the next flush, grouped by where they came from.
    pending: Vec<(LogSource, Vec<LogRecord>)>,
    pending_index: HashMap<LogSource, usize>,
    pending_records: usize,
    /// The latest published counters and request metrics.
    latest: Option<(Summary, u64, Arc<Vec<RunMetrics>>)>,
    last_export: Option<Instant>,
    /// When the sink started, Unix seconds: the start of the runtime's own sums.
    started: f64,
    /// The run ended and the transport drained.
    finished: bool,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

impl OtlpSink {
    /// Starts the sending thread (nothing is sent before the first flush).
    pub fn start(config: &OtlpConfig) -> io::Result<Self> {
        let endpoint = config.endpoint().map_err(io::Error::other)?;
        let name = endpoint.url("");
        let transport = Transport::start(
            Target {
                authority: endpoint.authority,
                prefix: endpoint.prefix,
                headers: config
                    .headers
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect(),
                gzip: config.compression == Compression::Gzip,
                timeout: Duration::from_millis(config.timeout_ms),
            },
            usize::try_from(config.queue_mib << 20).unwrap_or(usize::MAX),
        )?;
        Ok(Self {
            name,
            logs: config.logs,
            gzip: config.compression == Compression::Gzip,
            interval: Duration::from_millis(config.export_interval_ms),
            drain: Duration::from_millis(config.timeout_ms),
            transport,
            pending: Vec::new(),
            pending_index: HashMap::new(),
            pending_records: 0,
            latest: None,
            last_export: None,
            started: unix_now(),
            finished: false,
        })
    }

    /// The receiver's base URL, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn body(&self, message: &impl Message) -> Bytes {
        let plain = message.encode_to_vec();
        if !self.gzip {
            return Bytes::from(plain);
        }
        let mut encoder =
            flate2::write::GzEncoder::new(Vec::with_capacity(plain.len() / 4), Default::default());
        // Writing to a Vec cannot fail.
        let _ = encoder.write_all(&plain);
        Bytes::from(encoder.finish().unwrap_or_default())
    }

    fn send_logs(&mut self) {
        if self.pending_records == 0 {
            return;
        }
        let records = self.pending_records as u64;
        let request = encode::logs_request(std::mem::take(&mut self.pending));
        self.pending_index.clear();
        self.pending_records = 0;
        let body = self.body(&request);
        self.transport.send(Export {
            signal: Signal::Logs,
            body,
            records,
        });
    }

    fn send_metrics(&mut self) {
        let Some((counters, live_instances, runs)) = &self.latest else {
            return;
        };
        let request = encode::metrics_request(
            &counters.metrics(*live_instances),
            self.started,
            unix_now(),
            runs,
        );
        let body = self.body(&request);
        self.transport.send(Export {
            signal: Signal::Metrics,
            body,
            records: 0,
        });
        self.last_export = Some(Instant::now());
    }

    /// What the transport did so far.
    pub fn stats(&self) -> TransportStats {
        self.transport.stats()
    }
}

impl Sink for OtlpSink {
    fn write(&mut self, record: &Record<'_>) -> io::Result<()> {
        let source = LogSource::of(record);
        let index = match self.pending_index.get(&source) {
            Some(&index) => index,
            None => {
                self.pending.push((source.clone(), Vec::new()));
                self.pending_index.insert(source, self.pending.len() - 1);
                self.pending.len() - 1
            }
        };
        self.pending[index].1.push(encode::log_record(record));
        self.pending_records += 1;
        if self.pending_records >= MAX_LOGS_PER_REQUEST {
            self.send_logs();
        }
        Ok(())
    }

    fn takes_records(&self) -> bool {
        self.logs
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_logs();
        Ok(())
    }

    fn dropped(&self) -> u64 {
        self.transport.stats().dropped_records
    }

    fn publish_counters(
        &mut self,
        counters: &Summary,
        live_instances: u64,
        metrics: &Arc<Vec<RunMetrics>>,
    ) {
        if self.finished {
            // The transport has drained and stopped: nothing more can go out.
            return;
        }
        self.latest = Some((counters.clone(), live_instances, metrics.clone()));
        if self
            .last_export
            .is_none_or(|last| last.elapsed() >= self.interval)
        {
            self.send_metrics();
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.send_logs();
        self.send_metrics();
        self.transport.close(self.drain);
        let stats = self.transport.stats();
        let problem = self
            .transport
            .last_error()
            .filter(|_| {
                stats.retries + stats.failed + stats.dropped_records + stats.rejected_points > 0
            })
            .map(|error| format!("; latest problem: {error}"))
            .unwrap_or_default();
        crate::diag!(
            "swarmtel: otlp {}: {} requests sent, {} retried, {} refused, {} log records dropped, {} metrics exports dropped{}{problem}",
            self.name,
            stats.sent,
            stats.retries,
            stats.failed,
            stats.dropped_records,
            stats.dropped_metrics,
            if stats.rejected_points > 0 {
                format!(
                    ", {} metric points rejected by the receiver",
                    stats.rejected_points
                )
            } else {
                String::new()
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoleName;
    use crate::pipeline::enrich::{Level, Origin, RunContext};
    use crate::pipeline::validate::ValidItem;

    #[test]
    fn logs_go_out_in_requests_of_at_most_512_records() {
        // A receiver that never answers: the requests stay queued or in flight.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config: OtlpConfig = toml::from_str(&format!(
            "endpoint = \"http://{}\"\ntimeout_ms = 60000",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let mut sink = OtlpSink::start(&config).unwrap();
        let run = RunContext {
            run_id: "r".into(),
            testplan: "p".into(),
        };
        let item = ValidItem {
            telemetry_type: crate::bindings::types::TelemetryType::Event,
            name: "N".into(),
            message: "m".into(),
            fields: serde_json::Map::new(),
        };
        for index in 0..1100 {
            let node = format!("worker-{}", index % 3);
            let origin = Origin {
                plugin: "p",
                recorder: "r",
                role: RoleName::Worker,
                node: &node,
                time: 1.0,
                test: None,
            };
            sink.write(&Record {
                run: &run,
                origin: &origin,
                item: &item,
                level: Level::Info,
            })
            .unwrap();
        }
        // Two requests of 512 went to the transport; the rest waits for the next flush,
        // grouped by node.
        assert_eq!(sink.pending_records, 1100 - 2 * MAX_LOGS_PER_REQUEST);
        assert_eq!(sink.pending.len(), 3);
        sink.transport.close(Duration::ZERO);
        assert_eq!(
            sink.stats().dropped_records,
            2 * MAX_LOGS_PER_REQUEST as u64
        );
    }

    #[test]
    fn nothing_is_queued_after_the_end() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config: OtlpConfig = toml::from_str(&format!(
            "endpoint = \"http://{}\"\ntimeout_ms = 100\nexport_interval_ms = 100",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let mut sink = OtlpSink::start(&config).unwrap();
        let runs = Arc::new(Vec::new());
        sink.publish_counters(&Summary::default(), 0, &runs);
        sink.finish();
        assert_eq!(
            sink.stats().dropped_metrics,
            1,
            "the final export, the receiver never answering"
        );
        std::thread::sleep(Duration::from_millis(150));
        // A publish after the end (serve publishes once more after the drain) queues
        // nothing that could be lost uncounted.
        sink.publish_counters(&Summary::default(), 0, &runs);
        assert_eq!(sink.transport.queued(), 0);
    }
}
