//! The Prometheus sink: a scrape endpoint (`GET /metrics`, OpenMetrics text) with the
//! runtime's own counters: lines, events, nodes and live instances; per plugin, events in
//! and lost, telemetry out, rejections by reason, faults by kind, restarts; per output,
//! records written. [`exposition`] encodes, [`server`] serves.
//!
//! The counters are those of [`crate::pipeline::counters`], published at each flush of the
//! outputs (when a live source is idle, before it acknowledges lines, and at the end).

pub mod config;
pub mod exposition;
pub mod server;

use std::io;
use std::sync::{Arc, Mutex};

pub use config::PrometheusConfig;
use exposition::Snapshot;
use server::{Limits, ScrapeServer};

use super::{Record, Sink};
use crate::pipeline::Summary;

/// Serves the latest published counters to Prometheus.
pub struct PrometheusSink {
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    linger: std::time::Duration,
    server: ScrapeServer,
}

impl PrometheusSink {
    /// Binds the endpoint and starts serving (empty counters until the first publish).
    pub fn start(config: &PrometheusConfig) -> io::Result<Self> {
        let snapshot = Arc::new(Mutex::new(Arc::new(Snapshot::default())));
        let server = ScrapeServer::start(&config.listen, snapshot.clone(), Limits::default())?;
        Ok(Self {
            snapshot,
            linger: std::time::Duration::from_secs(config.linger_seconds),
            server,
        })
    }

    /// The address it serves on.
    pub fn address(&self) -> std::net::SocketAddr {
        self.server.address()
    }
}

impl Drop for PrometheusSink {
    /// Keeps serving the final counters for `linger_seconds`, so a scrape can see them.
    fn drop(&mut self) {
        if !self.linger.is_zero() {
            crate::diag!(
                "swarmtel: serving the final metrics at http://{}/metrics for {} s (linger_seconds)",
                self.server.address(),
                self.linger.as_secs()
            );
            std::thread::sleep(self.linger);
        }
    }
}

impl Sink for PrometheusSink {
    fn write(&mut self, _record: &Record<'_>) -> io::Result<()> {
        // Never called: it takes no records (JSON telemetry has no metric type to expose).
        Ok(())
    }

    fn takes_records(&self) -> bool {
        false
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn publish_counters(&mut self, counters: &Summary, live_instances: u64) {
        let snapshot = Arc::new(Snapshot {
            counters: counters.clone(),
            live_instances,
        });
        *self
            .snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = snapshot;
    }
}
