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
use std::time::Duration;

pub use config::PrometheusConfig;
use exposition::Snapshot;
use server::{Limits, ScrapeServer};

use super::{Record, Sink};
use crate::pipeline::Summary;
use crate::pipeline::metrics::RunMetrics;

/// Serves the latest published counters to Prometheus.
pub struct PrometheusSink {
    snapshot: Arc<Mutex<Arc<Snapshot>>>,
    linger: Duration,
    /// The run finished and its final counters were published.
    finished: bool,
    server: Option<ScrapeServer>,
}

impl PrometheusSink {
    /// Binds the endpoint and starts serving (zero counters until the first publish).
    pub fn start(config: &PrometheusConfig) -> io::Result<Self> {
        // Zero counters until the first publish.
        let snapshot = Arc::new(Mutex::new(Arc::new(Snapshot {
            runtime: Summary::default().metrics(0),
            ..Snapshot::default()
        })));
        let server = ScrapeServer::start(&config.listen, snapshot.clone(), Limits::default())?;
        Ok(Self {
            snapshot,
            linger: Duration::from_secs(config.linger_seconds),
            finished: false,
            server: Some(server),
        })
    }

    /// The address it serves on.
    pub fn address(&self) -> std::net::SocketAddr {
        self.server
            .as_ref()
            .map(ScrapeServer::address)
            .expect("serving until dropped")
    }
}

/// Endpoints of finished runs kept serving for their `linger_seconds`, until
/// [`linger_after_run`].
static LINGERING: Mutex<Vec<(ScrapeServer, Duration)>> = Mutex::new(Vec::new());

impl Drop for PrometheusSink {
    /// After a run that finished, an endpoint with `linger_seconds` is kept for
    /// [`linger_after_run`]; otherwise (an error, no linger) it stops now.
    fn drop(&mut self) {
        if let Some(server) = self.server.take()
            && self.finished
            && !self.linger.is_zero()
        {
            LINGERING
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push((server, self.linger));
        }
    }
}

/// Whether endpoints of a finished run wait for [`linger_after_run`].
pub fn lingering() -> bool {
    !LINGERING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .is_empty()
}

/// Keeps the endpoints of a finished run serving their final counters for the longest of
/// their `linger_seconds` (all together), or until `interrupted` says so; then stops them.
/// A command calls this after it has printed its summary, on success only.
pub fn linger_after_run(interrupted: &dyn Fn() -> bool) {
    let lingering = std::mem::take(
        &mut *LINGERING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    let Some(longest) = lingering.iter().map(|(_, linger)| *linger).max() else {
        return;
    };
    let addresses: Vec<String> = lingering
        .iter()
        .map(|(server, _)| format!("http://{}/metrics", server.address()))
        .collect();
    crate::diag!(
        "swarmtel: serving the final metrics at {} for {} s (linger_seconds; Ctrl-C to stop)",
        addresses.join(", "),
        longest.as_secs()
    );
    let deadline = std::time::Instant::now() + longest;
    while std::time::Instant::now() < deadline && !interrupted() {
        std::thread::sleep(Duration::from_millis(50));
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

    fn finish(&mut self) {
        self.finished = true;
    }

    fn publish_counters(
        &mut self,
        counters: &Summary,
        live_instances: u64,
        metrics: &Arc<Vec<RunMetrics>>,
    ) {
        let snapshot = Arc::new(Snapshot {
            runtime: counters.metrics(live_instances),
            runs: metrics.clone(),
        });
        *self
            .snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = snapshot;
    }
}
