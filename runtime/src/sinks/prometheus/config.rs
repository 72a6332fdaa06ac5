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
    /// Seconds to keep serving the final counters after the run ends, so that the last
    /// scrape sees them: set it to your scrape interval (0 to 600; 0 by default).
    #[serde(default)]
    pub linger_seconds: u64,
}

impl PrometheusConfig {
    /// The listen address, checked: `HOST:PORT` with an IP address (no name lookup).
    pub fn address(&self) -> Result<std::net::SocketAddr, String> {
        self.listen.parse().map_err(|_| {
            format!(
                "`{}` is not IP:PORT (such as 127.0.0.1:9464 or [::1]:9464)",
                self.listen
            )
        })
    }

    /// Checks the settings: a key and what is wrong with it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.address().map_err(|message| ("listen", message))?;
        if self.linger_seconds > 600 {
            return Err(("linger_seconds", "must be from 0 to 600".into()));
        }
        Ok(())
    }
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            linger_seconds: 0,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".to_owned()
}
