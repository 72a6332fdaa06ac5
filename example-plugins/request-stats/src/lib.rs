//! A request-stats recorder: aggregates Locust `request` events per endpoint and logs
//! counts, failures and response-time percentiles (computed as Locust does) every tick and at
//! test stop.
//!
//! It works on the columns of each batch directly (no per-request object), which is what
//! makes a sandboxed recorder about as fast as a native one. The aggregation itself lives in
//! [`aggregate`], free of sandbox types, so swarmtel's benchmarks can run it natively too.

pub mod aggregate;

use swarmtel_guest::{
    EventKind, OptionSpec, Output, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec,
    Requests, Role, TelemetryData, Timestamp, export_plugin,
};

use crate::aggregate::RequestStats;

/// Interval of the periodic report, in milliseconds of event time.
pub const TICK_INTERVAL_MS: u32 = 5_000;

/// The telemetry name of every report.
pub const TELEMETRY_NAME: &str = "request_stats";

/// The plugin: one recorder, on the roles that see requests.
pub struct RequestStatsPlugin;

impl Plugin for RequestStatsPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "request-stats",
            env!("CARGO_PKG_VERSION"),
            "Per-endpoint request counts, failures and response-time percentiles",
        )
        .option(
            OptionSpec::boolean("periodic")
                .default_boolean(true)
                .help("Also report every tick, not only at test stop")
                .env_var("SWARMTEL_REQUEST_STATS_PERIODIC"),
        )
        .recorder(
            RecorderSpec::new("request_stats_recorder")
                .roles([Role::Worker, Role::Standalone])
                .events([
                    EventKind::Request,
                    EventKind::TestStop,
                    EventKind::ResetStats,
                ])
                .tick_every_ms(TICK_INTERVAL_MS),
        )
        .schema(TELEMETRY_NAME, fields_schema())
    }

    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        Ok(Box::new(RequestStatsRecorder {
            stats: RequestStats::default(),
            periodic: ctx.options().boolean("periodic").unwrap_or(true),
            requests_since_report: 0,
        }))
    }
}

/// The JSON Schema of a `request_stats` item's fields.
pub fn fields_schema() -> serde_json::Value {
    let count = serde_json::json!({"type": "integer", "minimum": 0});
    let ms = serde_json::json!({"type": "number", "minimum": 0});
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["request_type", "endpoint", "requests", "failures", "avg_response_time_ms",
            "min_response_time_ms", "max_response_time_ms", "p50_ms", "p90_ms", "p95_ms",
            "p99_ms", "total_bytes", "final"],
        "properties": {
            "request_type": {"type": "string"},
            "endpoint": {"type": "string", "minLength": 1},
            "requests": count, "failures": count, "total_bytes": count,
            "avg_response_time_ms": ms, "min_response_time_ms": ms, "max_response_time_ms": ms,
            "p50_ms": count, "p90_ms": count, "p95_ms": count, "p99_ms": count,
            "final": {"type": "boolean"}
        }
    })
}

/// Aggregates requests; reports on tick (when something changed) and at test stop.
pub struct RequestStatsRecorder {
    stats: RequestStats,
    periodic: bool,
    requests_since_report: u64,
}

impl RequestStatsRecorder {
    fn report(&mut self, is_final: bool, out: &mut Output) {
        for (message, fields) in self.stats.report(is_final) {
            out.log_telemetry_with(TelemetryData::metric(TELEMETRY_NAME), message, fields);
        }
        self.requests_since_report = 0;
    }
}

impl Recorder for RequestStatsRecorder {
    fn on_requests(&mut self, requests: &Requests<'_>, _out: &mut Output) {
        let known = self.stats.endpoint_count();
        for (id, endpoint) in requests.endpoints().skip(known) {
            self.stats
                .ensure_endpoint(id.index(), &endpoint.request_type, &endpoint.name);
        }
        let ids = requests.endpoint_ids();
        for ((id, time), length) in ids
            .iter()
            .zip(requests.response_times_ms())
            .zip(requests.response_lengths())
        {
            self.stats.record(id.index(), *time, *length);
        }
        for (index, _exception) in requests.failures() {
            self.stats.record_failure(ids[index].index());
        }
        self.requests_since_report += requests.len() as u64;
    }

    fn on_tick(&mut self, _time: Timestamp, out: &mut Output) {
        if self.periodic && self.requests_since_report > 0 {
            self.report(false, out);
        }
    }

    fn on_test_stop(&mut self, _time: Timestamp, out: &mut Output) {
        self.report(true, out);
    }

    fn on_reset_stats(&mut self, _time: Timestamp, _out: &mut Output) {
        self.stats.reset();
    }

    fn on_finish(&mut self, out: &mut Output) {
        // Requests that arrived after the last test stop (a worker's final ones) still count.
        if self.requests_since_report > 0 {
            self.report(true, out);
        }
    }
}

export_plugin!(RequestStatsPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use swarmtel_guest::Event;
    use swarmtel_guest::testing::Harness;

    fn fields(item: &swarmtel_guest::testing::TelemetryItem) -> serde_json::Value {
        serde_json::from_str(&item.fields).unwrap()
    }

    #[test]
    fn reports_per_endpoint_at_test_stop() {
        let mut harness =
            Harness::new::<RequestStatsPlugin>("request_stats_recorder", Role::Worker).unwrap();
        harness.request("GET", "/items", 10.0, 100, None);
        harness.request("GET", "/items", 30.0, 100, Some("HTTPError 500"));
        harness.request("POST", "/orders", 5.0, 10, None);
        let items = harness.event(1.0, Event::TestStop);
        assert_eq!(items.len(), 3);
        let items_row = fields(&items[0]);
        assert_eq!(items_row["endpoint"], "/items");
        assert_eq!(items_row["requests"], 2);
        assert_eq!(items_row["failures"], 1);
        assert_eq!(items_row["final"], true);
        assert_eq!(fields(&items[2])["endpoint"], "Aggregated");
        assert_eq!(fields(&items[2])["requests"], 3);
    }

    #[test]
    fn tick_reports_only_after_new_requests() {
        let mut harness =
            Harness::new::<RequestStatsPlugin>("request_stats_recorder", Role::Worker).unwrap();
        assert!(harness.event(5.0, Event::Tick).is_empty());
        harness.request("GET", "/", 1.0, 1, None);
        assert_eq!(harness.event(10.0, Event::Tick).len(), 2);
        assert!(harness.event(15.0, Event::Tick).is_empty());
    }

    #[test]
    fn reset_stats_starts_over_and_keeps_endpoint_names() {
        let mut harness =
            Harness::new::<RequestStatsPlugin>("request_stats_recorder", Role::Worker).unwrap();
        harness.request("GET", "/a", 1.0, 1, None);
        harness.request("GET", "/b", 1.0, 1, None);
        harness.event(1.0, Event::ResetStats);
        // After the reset, the endpoint seen second comes first.
        harness.request("GET", "/b", 1.0, 1, None);
        harness.request("GET", "/a", 1.0, 1, None);
        harness.request("GET", "/a", 1.0, 1, None);
        let items = harness.event(2.0, Event::TestStop);
        let rows: Vec<(String, u64)> = items
            .iter()
            .map(|item| {
                let row = fields(item);
                (
                    row["endpoint"].as_str().unwrap().to_owned(),
                    row["requests"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![("/a".into(), 2), ("/b".into(), 1), ("Aggregated".into(), 3)]
        );
    }
}
