//! What Locust itself knows about a run, as telemetry: every node's resource use
//! (`usage_monitor`, `cpu_warning`) and the master's aggregated stats snapshots.
//!
//! - `usage_recorder` (every role) logs a `node_usage` metric per usage sample and a
//!   `CPU_WARNING` event when Locust warns about CPU.
//! - `stats_recorder` (master and standalone) logs a `locust_stats` metric per stats snapshot
//!   (totals, current rps, users) and, when the run finishes, the last snapshot again with
//!   `final: true`: Locust's final numbers, including the workers' last reports.

use swarmtel_guest::{
    EventKind, Output, Plugin, PluginInfo, Recorder, RecorderContext, RecorderSpec, Role,
    StatsSnapshot, TelemetryData, Timestamp, Usage, export_plugin,
};

/// The plugin: a usage recorder on every node and a stats recorder where stats aggregate.
pub struct LocustOverviewPlugin;

impl Plugin for LocustOverviewPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "locust-overview",
            env!("CARGO_PKG_VERSION"),
            "Node resource use and the master's aggregated stats",
        )
        .recorder(
            RecorderSpec::new("usage_recorder")
                .roles([Role::Master, Role::Worker, Role::Standalone])
                .events([EventKind::UsageMonitor, EventKind::CpuWarning]),
        )
        .recorder(
            RecorderSpec::new("stats_recorder")
                .roles([Role::Master, Role::Standalone])
                .events([EventKind::StatsSnapshot]),
        )
        .schema("node_usage", usage_schema())
        .schema("locust_stats", stats_schema())
    }

    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        match ctx.recorder() {
            "usage_recorder" => Ok(Box::new(UsageRecorder)),
            "stats_recorder" => Ok(Box::new(StatsRecorder { last: None })),
            other => Err(format!("no recorder named {other}")),
        }
    }
}

fn usage_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["cpu_percent", "memory_bytes"],
        "properties": {
            "cpu_percent": {"type": "number", "minimum": 0},
            "memory_bytes": {"type": "integer", "minimum": 0}
        }
    })
}

fn stats_schema() -> serde_json::Value {
    let count = serde_json::json!({"type": "integer", "minimum": 0});
    let number = serde_json::json!({"type": "number", "minimum": 0});
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["requests", "failures", "current_rps", "current_fail_per_sec", "user_count",
            "endpoints", "avg_response_time_ms", "final"],
        "properties": {
            "requests": count, "failures": count, "user_count": count, "endpoints": count,
            "current_rps": number, "current_fail_per_sec": number, "avg_response_time_ms": number,
            "final": {"type": "boolean"}
        }
    })
}

/// Logs each usage sample and CPU warning.
pub struct UsageRecorder;

impl Recorder for UsageRecorder {
    fn on_usage_monitor(&mut self, _time: Timestamp, usage: &Usage, out: &mut Output) {
        out.log_telemetry_with(
            TelemetryData::metric("node_usage"),
            format!(
                "CPU {:.1}%, memory {} MiB",
                usage.cpu_usage,
                usage.memory_usage / (1024 * 1024)
            ),
            serde_json::json!({
                "cpu_percent": usage.cpu_usage.max(0.0),
                "memory_bytes": usage.memory_usage,
            }),
        );
    }

    fn on_cpu_warning(&mut self, _time: Timestamp, cpu_usage: f64, out: &mut Output) {
        out.log_telemetry_with(
            TelemetryData::event("CPU_WARNING"),
            format!("Locust CPU at {cpu_usage:.1}%: results may be unreliable"),
            serde_json::json!({ "cpu_percent": cpu_usage.max(0.0) }),
        );
    }
}

/// Logs each stats snapshot, and the last one again as final when the run finishes.
pub struct StatsRecorder {
    last: Option<StatsSnapshot>,
}

impl StatsRecorder {
    fn log(snapshot: &StatsSnapshot, is_final: bool, out: &mut Output) {
        let total = &snapshot.total;
        let average = if total.num_requests == 0 {
            0.0
        } else {
            total.total_response_time_ms / total.num_requests as f64
        };
        out.log_telemetry_with(
            TelemetryData::metric("locust_stats"),
            format!(
                "{} requests, {} failures, {:.1} rps, {} users",
                total.num_requests, total.num_failures, total.current_rps, snapshot.user_count
            ),
            serde_json::json!({
                "requests": total.num_requests,
                "failures": total.num_failures,
                "current_rps": total.current_rps.max(0.0),
                "current_fail_per_sec": total.current_fail_per_sec.max(0.0),
                "user_count": snapshot.user_count,
                "endpoints": snapshot.entries.len(),
                "avg_response_time_ms": average.max(0.0),
                "final": is_final,
            }),
        );
    }
}

impl Recorder for StatsRecorder {
    fn on_stats_snapshot(&mut self, _time: Timestamp, snapshot: &StatsSnapshot, out: &mut Output) {
        Self::log(snapshot, false, out);
        self.last = Some(snapshot.clone());
    }

    fn on_finish(&mut self, out: &mut Output) {
        if let Some(last) = &self.last {
            Self::log(last, true, out);
        }
    }
}

export_plugin!(LocustOverviewPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use swarmtel_guest::testing::Harness;
    use swarmtel_guest::{EndpointStats, Event};

    fn row(name: &str, requests: u64, failures: u64) -> EndpointStats {
        EndpointStats {
            request_type: "GET".into(),
            name: name.into(),
            num_requests: requests,
            num_failures: failures,
            total_response_time_ms: 10.0 * requests as f64,
            min_response_time_ms: 1.0,
            max_response_time_ms: 20.0,
            total_content_length: 0,
            response_times: Vec::new(),
            current_rps: 4.5,
            current_fail_per_sec: 0.5,
            start_time: None,
            last_request_time: None,
        }
    }

    #[test]
    fn usage_samples_become_node_usage_metrics() {
        let mut harness =
            Harness::new::<LocustOverviewPlugin>("usage_recorder", Role::Worker).unwrap();
        let items = harness.event(
            1.0,
            Event::UsageMonitor(Usage {
                cpu_usage: 12.5,
                memory_usage: 64 * 1024 * 1024,
            }),
        );
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].name, "node_usage");
        assert_eq!(items[0].message, "CPU 12.5%, memory 64 MiB");
        assert_eq!(
            items[0].fields,
            r#"{"cpu_percent":12.5,"memory_bytes":67108864}"#
        );
        let warning = harness.event(2.0, Event::CpuWarning(95.0));
        assert_eq!(warning[0].name, "CPU_WARNING");
    }

    #[test]
    fn the_last_snapshot_is_logged_again_as_final() {
        let mut harness =
            Harness::new::<LocustOverviewPlugin>("stats_recorder", Role::Master).unwrap();
        let snapshot = |requests| StatsSnapshot {
            user_count: 3,
            entries: vec![row("/a", requests, 1)],
            total: row("Aggregated", requests, 1),
            errors: Vec::new(),
        };
        let first = harness.event(1.0, Event::StatsSnapshot(snapshot(10)));
        assert!(
            first[0].fields.contains(r#""requests":10"#),
            "{}",
            first[0].fields
        );
        assert!(first[0].fields.contains(r#""final":false"#));
        harness.event(2.0, Event::StatsSnapshot(snapshot(25)));
        let last = harness.finish();
        assert_eq!(last.len(), 1);
        assert!(
            last[0].fields.contains(r#""requests":25"#),
            "{}",
            last[0].fields
        );
        assert!(last[0].fields.contains(r#""failures":1"#));
        assert!(last[0].fields.contains(r#""final":true"#));
    }

    #[test]
    fn no_snapshot_no_final_line() {
        let mut harness =
            Harness::new::<LocustOverviewPlugin>("stats_recorder", Role::Master).unwrap();
        assert!(harness.finish().is_empty());
    }
}
