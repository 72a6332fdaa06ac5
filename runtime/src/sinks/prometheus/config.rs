//! `type = "prometheus"`: its settings.

use serde::Deserialize;

/// A Prometheus scrape endpoint (`GET /metrics`, OpenMetrics text) served while the runtime
/// runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    /// The address to listen on, `HOST:PORT`; loopback port 9464 by default. Anything beyond
    /// loopback is reachable by whoever can reach the host: the metrics name plugins and
    /// outputs, so bind it where your Prometheus is.
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".to_owned()
}
