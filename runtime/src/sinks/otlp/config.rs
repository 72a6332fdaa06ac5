//! `type = "otlp"`: its settings.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::sinks::filter::FilterConfig;

/// Most header entries an OTLP output may set, and the longest name plus value.
pub const MAX_HEADERS: usize = 16;
/// The longest header (name and value together), in bytes.
pub const MAX_HEADER_BYTES: usize = 4096;

/// An OpenTelemetry Collector (or any OTLP/HTTP receiver) that takes the metrics, and the
/// JSON telemetry as logs, in OTLP protobuf.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The receiver's base URL, `http://HOST:PORT` (optionally with a path prefix);
    /// `/v1/metrics` and `/v1/logs` are appended, as OTLP/HTTP does.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Whether JSON telemetry goes out as OTLP logs too (metrics always do).
    #[serde(default = "default_true")]
    pub logs: bool,
    /// `gzip` (the default) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Milliseconds between two exports of the metrics (cumulative, so a lost export is
    /// made good by the next one); 100 to 3,600,000.
    #[serde(default = "default_export_interval_ms")]
    pub export_interval_ms: u64,
    /// Milliseconds one request may take; also how long the end of a run waits for what is
    /// still queued. 100 to 600,000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// MiB of requests waiting to be sent while the receiver is slow or down; past it the
    /// oldest logs are dropped, counted (a newer metrics export replaces an older one). 1 to
    /// 1024.
    #[serde(default = "default_queue_mib")]
    pub queue_mib: u64,
    /// Extra HTTP headers, such as a tenant id; values are never printed, not even in an
    /// error about them.
    #[serde(default, deserialize_with = "headers")]
    pub headers: BTreeMap<String, String>,
    /// Which telemetry goes out as logs.
    #[serde(default)]
    pub filter: FilterConfig,
}

/// Request body compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `Content-Encoding: gzip`.
    #[default]
    Gzip,
    /// Plain protobuf.
    None,
}

/// Header values as strings; an error names the header, not its value (it may be a secret).
fn headers<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, toml::Value>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(name, value)| match value {
            toml::Value::String(text) => Ok((name, text)),
            _ => Err(serde::de::Error::custom(format!(
                "the value of header `{name}` must be a string"
            ))),
        })
        .collect()
}

fn default_endpoint() -> String {
    "http://127.0.0.1:4318".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_export_interval_ms() -> u64 {
    5_000
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_queue_mib() -> u64 {
    16
}

/// Where an OTLP output sends: the authority to connect to and the path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `HOST:PORT`, for the connection and the `Host` header.
    pub authority: String,
    /// The path before `/v1/...`, without a trailing `/` (empty for none).
    pub prefix: String,
}

impl Endpoint {
    /// The URL of one signal, such as `/v1/metrics`.
    pub fn url(&self, signal_path: &str) -> String {
        format!("http://{}{}{signal_path}", self.authority, self.prefix)
    }
}

impl OtlpConfig {
    /// The endpoint, checked: `http://HOST:PORT[/PREFIX]`.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let Some(rest) = self.endpoint.strip_prefix("http://") else {
            return Err(if self.endpoint.starts_with("https://") {
                format!(
                    "`{}`: https is not supported; send to a collector on this host or network over http (see docs/deploy.md)",
                    self.endpoint
                )
            } else {
                format!(
                    "`{}` is not an http:// URL such as http://127.0.0.1:4318",
                    self.endpoint
                )
            });
        };
        let (authority, prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let port = authority
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|port| port.parse::<u16>().ok());
        if port.is_none_or(|port| port == 0)
            || authority.contains(['@', '?', '#'])
            || prefix.contains(['?', '#'])
            || !rest.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "`{}` needs a host and a port, such as http://127.0.0.1:4318 (no user, query, fragment, space or non-ASCII)",
                self.endpoint
            ));
        }
        Ok(Endpoint {
            authority: authority.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// Checks the settings: a key and what is wrong with it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.endpoint().map_err(|message| ("endpoint", message))?;
        let ranges: [(&'static str, u64, u64, u64); 3] = [
            (
                "export_interval_ms",
                self.export_interval_ms,
                100,
                3_600_000,
            ),
            ("timeout_ms", self.timeout_ms, 100, 600_000),
            ("queue_mib", self.queue_mib, 1, 1024),
        ];
        for (key, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err((key, format!("must be from {low} to {high}, got {value}")));
            }
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(("headers", format!("at most {MAX_HEADERS} headers")));
        }
        for (name, value) in &self.headers {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name {
                return Err(("headers", "a header name is not a valid HTTP token".into()));
            }
            if name.len() + value.len() > MAX_HEADER_BYTES
                || value.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
            {
                return Err((
                    "headers",
                    format!(
                        "the value of `{name}` has control characters or is past {MAX_HEADER_BYTES} bytes"
                    ),
                ));
            }
            if matches!(
                name.to_ascii_lowercase().as_str(),
                "host" | "content-type" | "content-encoding" | "content-length" | "connection"
            ) {
                return Err(("headers", format!("`{name}` is set by the output itself")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> OtlpConfig {
        toml::from_str(&format!("endpoint = \"{endpoint}\"")).unwrap()
    }

    #[test]
    fn endpoints_are_http_host_port_with_an_optional_prefix() {
        let endpoint = config("http://collector:4318/otlp/").endpoint().unwrap();
        assert_eq!(
            endpoint.url("/v1/logs"),
            "http://collector:4318/otlp/v1/logs"
        );
        let endpoint = config("http://[::1]:4318").endpoint().unwrap();
        assert_eq!(endpoint.url("/v1/metrics"), "http://[::1]:4318/v1/metrics");
        for (bad, says) in [
            ("https://c:4318", "https is not supported"),
            ("c:4318", "not an http:// URL"),
            ("http://c", "needs a host and a port"),
            ("http://c:0", "needs a host and a port"),
            ("http://:4318", "needs a host and a port"),
            ("http://u@c:4318", "needs a host and a port"),
            ("http://c:4318/x?y", "needs a host and a port"),
            ("http://c:4318/a b", "needs a host and a port"),
            ("http://c:4318/ü", "needs a host and a port"),
        ] {
            let error = config(bad).check().unwrap_err();
            assert_eq!(error.0, "endpoint");
            assert!(error.1.contains(says), "{bad}: {}", error.1);
        }
    }

    #[test]
    fn bounds_and_headers_are_checked() {
        let mut otlp = config("http://c:4318");
        otlp.queue_mib = 0;
        assert_eq!(otlp.check().unwrap_err().0, "queue_mib");
        let mut otlp = config("http://c:4318");
        otlp.headers.insert("content-type".into(), "x".into());
        assert!(otlp.check().unwrap_err().1.contains("set by the output"));
        let mut otlp = config("http://c:4318");
        otlp.headers.insert("x-scope-orgid".into(), "a\nb".into());
        assert!(otlp.check().unwrap_err().1.contains("control characters"));
        let mut otlp = config("http://c:4318");
        otlp.headers
            .insert("x-long".into(), "v".repeat(MAX_HEADER_BYTES));
        assert!(otlp.check().unwrap_err().1.contains("past 4096 bytes"));
        let mut otlp = config("http://c:4318");
        for i in 0..=MAX_HEADERS {
            otlp.headers.insert(format!("x-{i}"), "v".into());
        }
        assert!(otlp.check().unwrap_err().1.contains("at most 16"));
    }

    #[test]
    fn a_header_value_of_the_wrong_type_is_not_echoed() {
        // As the config loader reads an `[[outputs]]` entry.
        let table: toml::Table =
            toml::from_str("type = \"otlp\"\nheaders = { \"x-token\" = 987654321 }").unwrap();
        let (key, message) = crate::sinks::config::OutputConfig::from_table(table).unwrap_err();
        assert_eq!(key, "headers");
        assert_eq!(message, "the value of header `x-token` must be a string");
    }
}
