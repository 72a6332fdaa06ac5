//! The runtime's own counters ([`Summary`]) as metrics, so every metrics output shows the
//! same names: `swarmtel.events` (Prometheus: `swarmtel_events_total`), per plugin, per
//! output and, under `swarmtel serve`, per connection role.

use super::counters::{PluginCounters, SourceCounters, Summary};
use super::metrics::{AttributeValue, Metric, MetricKind, Point, PointValue};

/// The roles, in the order of per-role arrays.
const ROLES: [&str; 3] = ["master", "worker", "standalone"];

fn counter(name: &'static str, description: &'static str, points: Vec<Point>) -> Metric {
    Metric {
        name: name.into(),
        unit: "".into(),
        description: description.into(),
        kind: MetricKind::Counter,
        points,
    }
}

fn gauge(name: &'static str, description: &'static str, points: Vec<Point>) -> Metric {
    Metric {
        name: name.into(),
        unit: "".into(),
        description: description.into(),
        kind: MetricKind::Gauge,
        points,
    }
}

fn count(value: u64) -> PointValue {
    PointValue::Counter(value)
}

fn level(value: u64) -> PointValue {
    PointValue::IntGauge(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Summary {
    /// The counters as metrics; `live_instances` is the number of recorder instances alive.
    pub fn metrics(&self, live_instances: u64) -> Vec<Metric> {
        let mut metrics = vec![
            counter(
                "swarmtel.lines",
                "Lines read from every source (good, bad and blank).",
                vec![Point::bare(count(self.lines))],
            ),
            counter(
                "swarmtel.events",
                "Events decoded.",
                vec![Point::bare(count(self.events))],
            ),
            counter(
                "swarmtel.bad_lines",
                "Lines skipped as malformed.",
                vec![Point::bare(count(self.bad_lines))],
            ),
            counter(
                "swarmtel.nodes_started",
                "Nodes started.",
                vec![Point::bare(count(self.nodes))],
            ),
            counter(
                "swarmtel.nodes_retired_idle",
                "Nodes whose recorders were freed after node_idle_seconds without an event.",
                vec![Point::bare(count(self.nodes_retired_idle))],
            ),
            counter(
                "swarmtel.events_refused_instance_cap",
                "Events refused at the max_live_instances cap.",
                vec![Point::bare(count(self.events_refused_instance_cap))],
            ),
            counter(
                "swarmtel.requests_not_aggregated",
                "Requests of runs past the request metrics' cap of runs: counted, not aggregated.",
                vec![Point::bare(count(self.requests_not_aggregated))],
            ),
            gauge(
                "swarmtel.live_instances",
                "Recorder instances alive now.",
                vec![Point::bare(level(live_instances))],
            ),
        ];
        let per_plugin = |value: fn(&PluginCounters) -> u64| -> Vec<Point> {
            self.plugins
                .iter()
                .map(|(id, counters)| Point::with("plugin", id.clone(), count(value(counters))))
                .collect()
        };
        metrics.extend([
            counter(
                "swarmtel.plugin.events_in",
                "Stream events delivered to the plugin's recorders.",
                per_plugin(|c| c.events_in),
            ),
            counter(
                "swarmtel.plugin.events_lost",
                "Events lost to the plugin's recorders (a faulted batch, a disabled recorder).",
                per_plugin(|c| c.events_lost),
            ),
            counter(
                "swarmtel.plugin.telemetry_out",
                "Telemetry items that passed validation.",
                per_plugin(|c| c.telemetry_out),
            ),
            counter(
                "swarmtel.plugin.restarts",
                "Recorder instances restarted after a fault.",
                per_plugin(|c| c.restarts),
            ),
            counter(
                "swarmtel.plugin.disabled",
                "Recorder instances disabled.",
                per_plugin(|c| c.disabled),
            ),
            counter(
                "swarmtel.plugin.stdio_dropped_bytes",
                "Bytes of guest stdout/stderr dropped past stdio_bytes.",
                per_plugin(|c| c.stdio_dropped_bytes),
            ),
        ]);
        type ByKey = fn(&PluginCounters) -> &std::collections::BTreeMap<&'static str, u64>;
        let by_key = |key: &'static str, select: ByKey| -> Vec<Point> {
            self.plugins
                .iter()
                .flat_map(|(id, counters)| {
                    select(counters).iter().map(move |(label, n)| Point {
                        attributes: vec![
                            ("plugin".into(), AttributeValue::from(id.clone())),
                            (key.into(), AttributeValue::from(*label)),
                        ],
                        value: count(*n),
                    })
                })
                .collect()
        };
        metrics.push(counter(
            "swarmtel.plugin.rejected",
            "Telemetry items rejected, by reason.",
            by_key("reason", |c| &c.rejected),
        ));
        metrics.push(counter(
            "swarmtel.plugin.faults",
            "Recorder faults, by kind.",
            by_key("kind", |c| &c.faults),
        ));
        if let Some(source) = &self.source {
            metrics.extend(source.metrics());
        }
        metrics.push(counter(
            "swarmtel.output.records",
            "Records each output took, by its place in the config (outputs[i]).",
            self.outputs
                .iter()
                .map(|output| Point::with("output", output.key.clone(), count(output.records)))
                .collect(),
        ));
        metrics.push(counter(
            "swarmtel.output.dropped",
            "Records an output took but could not deliver (a receiver that stayed down).",
            self.outputs
                .iter()
                .map(|output| Point::with("output", output.key.clone(), count(output.dropped)))
                .collect(),
        ));
        metrics
    }
}

impl SourceCounters {
    /// `swarmtel serve`'s connections, losses and queue as metrics.
    fn metrics(&self) -> Vec<Metric> {
        let by_role = |values: [u64; 3], value: fn(u64) -> PointValue| -> Vec<Point> {
            ROLES
                .iter()
                .zip(values)
                .map(|(role, n)| Point::with("role", *role, value(n)))
                .collect()
        };
        let connections = &self.connections;
        vec![
            counter(
                "swarmtel.serve.connections",
                "Connections accepted, by role.",
                by_role(connections.accepted, count),
            ),
            gauge(
                "swarmtel.serve.open_connections",
                "Connections open now, by role.",
                by_role(self.open, level),
            ),
            counter(
                "swarmtel.serve.bad_frames",
                "Frames that did not parse or named another node: skipped.",
                vec![Point::bare(count(connections.bad_frames))],
            ),
            counter(
                "swarmtel.serve.overlong_lines",
                "Lines past the 1 MiB limit: skipped.",
                vec![Point::bare(count(connections.overlong))],
            ),
            counter(
                "swarmtel.serve.duplicates_skipped",
                "Lines a client sent again after a reconnect that were already processed.",
                vec![Point::bare(count(connections.duplicates_skipped))],
            ),
            counter(
                "swarmtel.serve.events_dropped",
                "Events lost before the pipeline: by the bridges, here under --overload drop, or in transit.",
                vec![
                    Point::with("where", "bridges", count(connections.dropped_by_clients)),
                    Point::with("where", "here", count(connections.dropped_here)),
                    Point::with("where", "in_transit", count(connections.lost_in_transit)),
                ],
            ),
            gauge(
                "swarmtel.serve.queue_bytes",
                "Bytes of read lines waiting for the pipeline.",
                vec![Point::bare(level(self.queued_bytes))],
            ),
            gauge(
                "swarmtel.serve.queue_capacity_bytes",
                "The queue's byte budget (--queue-mib).",
                vec![Point::bare(level(self.queue_capacity_bytes))],
            ),
        ]
    }
}
