//! Enrichment: turns a validated item into the output line, adding the context the host owns.
//!
//! The shape is locust-telemetry's JSON log line, so its Loki/Promtail rules and Grafana
//! dashboards keep working: top-level `time` (RFC 3339 UTC, milliseconds, `Z`), `level`,
//! `name`, `message`, and a `telemetry` object with `telemetry_type`, `telemetry_name`,
//! `source` (the role), `source_id` (the node), `run_id`, `testplan`, `plugin`, then the
//! recorder's own fields. A guest cannot set any of the context keys (see [`crate::pipeline::validate`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::bindings::types as wit;
use crate::config::RoleName;
use crate::pipeline::validate::{RejectedItem, ValidItem, type_name};

/// The plugin id of the runtime's own telemetry (faults, rejections, summary).
pub const SELF_PLUGIN_ID: &str = "swarmtel";

/// The run's context, stamped on every line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunContext {
    /// The run id.
    pub run_id: String,
    /// The test plan's name.
    pub testplan: String,
}

/// Where an item came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The plugin id.
    pub plugin: &'a str,
    /// The recorder name.
    pub recorder: &'a str,
    /// The node's role.
    pub role: RoleName,
    /// The node id.
    pub node: &'a str,
    /// Event time the item belongs to (the last event of the batch), Unix seconds.
    pub time: f64,
    /// The test the item belongs to: the id the node's latest `test_start` carried, if any
    /// (the locust-telemetry envelope's run id).
    pub test: Option<&'a str>,
}

/// Severity of an output line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Normal telemetry.
    Info,
    /// The runtime's own warnings (rejections, faults).
    Warning,
    /// The runtime's own errors (a recorder disabled).
    Error,
}

/// One telemetry output line.
#[derive(Debug, Serialize)]
pub struct TelemetryLine<'a> {
    time: String,
    level: Level,
    name: String,
    message: &'a str,
    telemetry: TelemetryContext<'a>,
}

#[derive(Debug, Serialize)]
struct TelemetryContext<'a> {
    telemetry_type: &'static str,
    telemetry_name: &'a str,
    source: &'static str,
    source_id: &'a str,
    run_id: &'a str,
    testplan: &'a str,
    /// Absent in locust-telemetry's envelope.
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin: Option<&'a str>,
    #[serde(flatten)]
    fields: &'a Map<String, Value>,
}

/// Formats Unix seconds as RFC 3339 UTC with milliseconds and `Z`. Total: a time outside
/// 1970 to 9999 (which ingest refuses) is clamped, never a panic.
pub fn format_time(unix_seconds: f64) -> String {
    let seconds = if unix_seconds.is_nan() {
        0.0
    } else {
        unix_seconds.clamp(0.0, crate::sources::ingest::MAX_UNIX_SECONDS)
    };
    let time = UNIX_EPOCH + Duration::from_secs_f64(seconds);
    humantime::format_rfc3339_millis(time).to_string()
}

/// The current time in Unix seconds (for the runtime's own records outside any event).
pub fn now_unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// locust-telemetry's name for a role: the class name of Locust's runner.
pub fn runner_class(role: RoleName) -> &'static str {
    match role {
        RoleName::Master => "MasterRunner",
        RoleName::Worker => "WorkerRunner",
        RoleName::Standalone => "LocalRunner",
    }
}

/// Builds the output line for a valid item in locust-telemetry 2.1.2's shape: `metrics` for
/// a metric, the runner class as `source`, the test's id as `run_id` (the run's own id
/// before the node's first `test_start` with one), and no `plugin` key.
pub fn locust_telemetry_line<'a>(
    run: &'a RunContext,
    origin: &Origin<'a>,
    item: &'a ValidItem,
    level: Level,
) -> TelemetryLine<'a> {
    line(
        origin,
        item,
        level,
        TelemetryContext {
            telemetry_type: match item.telemetry_type {
                wit::TelemetryType::Event => "event",
                wit::TelemetryType::Metric => "metrics",
            },
            telemetry_name: &item.name,
            source: runner_class(origin.role),
            source_id: origin.node,
            run_id: origin.test.unwrap_or(&run.run_id),
            testplan: &run.testplan,
            plugin: None,
            fields: &item.fields,
        },
    )
}

/// Builds the output line for a valid item.
pub fn telemetry_line<'a>(
    run: &'a RunContext,
    origin: &Origin<'a>,
    item: &'a ValidItem,
    level: Level,
) -> TelemetryLine<'a> {
    line(
        origin,
        item,
        level,
        TelemetryContext {
            telemetry_type: type_name(item.telemetry_type),
            telemetry_name: &item.name,
            source: origin.role.as_str(),
            source_id: origin.node,
            run_id: &run.run_id,
            testplan: &run.testplan,
            plugin: Some(origin.plugin),
            fields: &item.fields,
        },
    )
}

/// The line around a `telemetry` object: the batch's time, the level, `swarmtel.<plugin>`
/// and the message.
fn line<'a>(
    origin: &Origin<'a>,
    item: &'a ValidItem,
    level: Level,
    telemetry: TelemetryContext<'a>,
) -> TelemetryLine<'a> {
    TelemetryLine {
        time: format_time(origin.time),
        level,
        name: format!("swarmtel.{}", origin.plugin),
        message: &item.message,
        telemetry,
    }
}

/// One dead-letter line: a rejected item, where it came from, and why.
#[derive(Debug, Serialize)]
pub struct DeadLetterLine<'a> {
    time: String,
    run_id: &'a str,
    plugin: &'a str,
    recorder: &'a str,
    source: &'static str,
    source_id: &'a str,
    reason: String,
    reason_kind: &'static str,
    telemetry_type: &'static str,
    telemetry_name: String,
    message: String,
    fields: String,
    /// On the line that stands for a call's items past its caps: how many more were dropped
    /// without a line of their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    more_items: Option<u64>,
}

/// The most of a rejected item's text kept in the dead-letter line, per field.
const DEAD_LETTER_TEXT_BYTES: usize = 4096;

fn truncated(text: &str) -> String {
    if text.len() <= DEAD_LETTER_TEXT_BYTES {
        return text.to_owned();
    }
    let mut end = DEAD_LETTER_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes]", &text[..end], text.len())
}

/// Builds the dead-letter line for a rejected item; long texts are truncated.
pub fn dead_letter_line<'a>(
    run: &'a RunContext,
    origin: &Origin<'a>,
    rejected: &RejectedItem,
) -> DeadLetterLine<'a> {
    DeadLetterLine {
        reason: rejected.reason.to_string(),
        reason_kind: rejected.reason.label(),
        telemetry_type: type_name(rejected.item.telemetry_type),
        telemetry_name: truncated(&rejected.item.name),
        message: truncated(&rejected.item.message),
        fields: truncated(&rejected.item.fields),
        ..DeadLetterLine::at(run, origin)
    }
}

/// The dead-letter line that stands for `count` further items of one call rejected by the
/// per-call caps, so a flood of items cannot become a flood of dead letters.
pub fn over_cap_line<'a>(
    run: &'a RunContext,
    origin: &Origin<'a>,
    reason_kind: &'static str,
    count: u64,
) -> DeadLetterLine<'a> {
    DeadLetterLine {
        reason: format!("{count} more items of this call past the per-call caps, dropped"),
        reason_kind,
        more_items: Some(count),
        ..DeadLetterLine::at(run, origin)
    }
}

impl<'a> DeadLetterLine<'a> {
    /// A line with where and when, and nothing else yet.
    fn at(run: &'a RunContext, origin: &Origin<'a>) -> Self {
        DeadLetterLine {
            time: format_time(origin.time),
            run_id: &run.run_id,
            plugin: origin.plugin,
            recorder: origin.recorder,
            source: origin.role.as_str(),
            source_id: origin.node,
            reason: String::new(),
            reason_kind: "",
            telemetry_type: "event",
            telemetry_name: String::new(),
            message: String::new(),
            fields: String::new(),
            more_items: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::types as wit;

    #[test]
    fn formats_rfc3339_millis_utc() {
        assert_eq!(format_time(1_700_000_000.123_4), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_time(f64::NAN), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(-1.0), "1970-01-01T00:00:00.000Z");
        for huge in [1e12, 1e17, 1e300, f64::INFINITY] {
            assert_eq!(format_time(huge), "9999-12-31T23:59:59.000Z", "{huge}");
        }
    }

    #[test]
    fn line_has_the_locust_telemetry_shape() {
        let run = RunContext {
            run_id: "r1".into(),
            testplan: "plan".into(),
        };
        let item = ValidItem {
            telemetry_type: wit::TelemetryType::Event,
            name: "CUSTOM_START".into(),
            message: "started".into(),
            fields: serde_json::from_str(r#"{"a":1}"#).unwrap(),
        };
        let origin = Origin {
            plugin: "custom",
            recorder: "rec",
            role: RoleName::Worker,
            node: "worker-1",
            time: 1_700_000_000.0,
            test: None,
        };
        let line =
            serde_json::to_string(&telemetry_line(&run, &origin, &item, Level::Info)).unwrap();
        assert_eq!(
            line,
            r#"{"time":"2023-11-14T22:13:20.000Z","level":"INFO","name":"swarmtel.custom","message":"started","telemetry":{"telemetry_type":"event","telemetry_name":"CUSTOM_START","source":"worker","source_id":"worker-1","run_id":"r1","testplan":"plan","plugin":"custom","a":1}}"#
        );
    }

    #[test]
    fn the_locust_telemetry_envelope_says_metrics_names_the_runner_and_uses_the_test_id() {
        let run = RunContext {
            run_id: "r1".into(),
            testplan: "plan".into(),
        };
        let item = ValidItem {
            telemetry_type: wit::TelemetryType::Metric,
            name: "locust.tl.system.metric.cpu".into(),
            message: "Recording telemetry metrics: locust.tl.system.metric.cpu".into(),
            fields: serde_json::from_str(r#"{"value":12.0,"unit":"percent"}"#).unwrap(),
        };
        let origin = Origin {
            plugin: "locust-telemetry",
            recorder: "rec",
            role: RoleName::Master,
            node: "master",
            time: 1_700_000_000.25,
            test: Some("3f2a9c1d"),
        };
        let line = serde_json::to_string(&locust_telemetry_line(&run, &origin, &item, Level::Info))
            .unwrap();
        assert_eq!(
            line,
            r#"{"time":"2023-11-14T22:13:20.250Z","level":"INFO","name":"swarmtel.locust-telemetry","message":"Recording telemetry metrics: locust.tl.system.metric.cpu","telemetry":{"telemetry_type":"metrics","telemetry_name":"locust.tl.system.metric.cpu","source":"MasterRunner","source_id":"master","run_id":"3f2a9c1d","testplan":"plan","unit":"percent","value":12.0}}"#
        );
        // Before the node's first test_start with an id: the run's own id; events stay
        // `event`; every role has its runner class.
        let event = ValidItem {
            telemetry_type: wit::TelemetryType::Event,
            fields: Map::new(),
            ..item
        };
        for (role, class) in [
            (RoleName::Worker, "WorkerRunner"),
            (RoleName::Standalone, "LocalRunner"),
        ] {
            let origin = Origin {
                role,
                test: None,
                ..origin
            };
            let line: Value =
                serde_json::to_value(locust_telemetry_line(&run, &origin, &event, Level::Info))
                    .unwrap();
            assert_eq!(line["telemetry"]["source"], class);
            assert_eq!(line["telemetry"]["run_id"], "r1");
            assert_eq!(line["telemetry"]["telemetry_type"], "event");
            assert!(line["telemetry"].get("plugin").is_none());
        }
    }

    #[test]
    fn dead_letter_truncates_long_text() {
        let long = "x".repeat(10_000);
        assert!(truncated(&long).ends_with("…[10000 bytes]"));
        assert_eq!(truncated("short"), "short");
    }
}
