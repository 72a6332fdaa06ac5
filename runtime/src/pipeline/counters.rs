//! The runtime's own counters: per plugin and for the whole run. The summary on stderr,
//! the summary records and a live status line all read them from here.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Per-plugin counters for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginCounters {
    /// Stream events delivered to this plugin's recorders (one event to two recorders counts
    /// twice; the host's ticks do not count).
    pub events_in: u64,
    /// Events that could not be delivered (lost with a faulted batch, or to a disabled
    /// recorder).
    pub events_lost: u64,
    /// Telemetry items that passed validation (each goes to every output that takes it).
    pub telemetry_out: u64,
    /// Items rejected, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Faults, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Recorder instances restarted after a fault.
    pub restarts: u64,
    /// Bytes of guest stdout/stderr dropped past `stdio_bytes`.
    pub stdio_dropped_bytes: u64,
    /// Recorder instances disabled (plugins that failed to load are listed in
    /// [`Summary::failed_plugins`] instead).
    pub disabled: u64,
}

impl PluginCounters {
    /// All rejected items.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// All faults.
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }

    /// The fields of the plugin's `PLUGIN_SUMMARY` record.
    pub fn summary_fields(&self, plugin_id: &str) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("subject_plugin".into(), plugin_id.into());
        fields.insert("events_in".into(), self.events_in.into());
        fields.insert("events_lost".into(), self.events_lost.into());
        fields.insert("telemetry_out".into(), self.telemetry_out.into());
        fields.insert("rejected".into(), self.rejected_total().into());
        fields.insert("faults".into(), self.faults_total().into());
        fields.insert("restarts".into(), self.restarts.into());
        fields.insert(
            "stdio_dropped_bytes".into(),
            self.stdio_dropped_bytes.into(),
        );
        fields.insert("disabled".into(), self.disabled.into());
        fields
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines read from the stream (including bad and blank ones).
    pub lines: u64,
    /// Events decoded.
    pub events: u64,
    /// Lines skipped as malformed.
    pub bad_lines: u64,
    /// Nodes started (a node that was retired and came back counts again).
    pub nodes: u64,
    /// Nodes whose recorders were finished and freed after `node_idle_seconds` without an
    /// event.
    pub nodes_retired_idle: u64,
    /// Events refused because their node's recorders would pass `max_live_instances`.
    pub events_refused_instance_cap: u64,
    /// Requests of runs past the built-in request metrics' run cap: counted, not aggregated.
    pub requests_not_aggregated: u64,
    /// Counters per plugin id, in config order.
    pub plugins: Vec<(String, PluginCounters)>,
    /// A live source's counters, as it last published them (none for a replay).
    pub source: Option<SourceCounters>,
    /// Records each output that takes records wrote, in config order.
    pub outputs: Vec<OutputRecords>,
    /// Plugins skipped because their code faulted while loading: (file, error).
    pub failed_plugins: Vec<(String, String)>,
    /// Whether the run stopped early on a signal.
    pub interrupted: bool,
}

impl Summary {
    /// The summary as text for stderr.
    pub fn render(&self) -> String {
        let mut text = format!(
            "swarmtel: {} lines, {} events, {} bad lines, {} nodes{}\n",
            self.lines,
            self.events,
            self.bad_lines,
            self.nodes,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        text.push_str(&format!(
            "{:<24} {:>10} {:>10} {:>10} {:>9} {:>7} {:>9} {:>9}\n",
            "plugin",
            "events_in",
            "lost",
            "telemetry",
            "rejected",
            "faults",
            "restarts",
            "disabled"
        ));
        for (id, counters) in &self.plugins {
            text.push_str(&format!(
                "{:<24} {:>10} {:>10} {:>10} {:>9} {:>7} {:>9} {:>9}\n",
                id,
                counters.events_in,
                counters.events_lost,
                counters.telemetry_out,
                counters.rejected_total(),
                counters.faults_total(),
                counters.restarts,
                counters.disabled
            ));
            for (reason, count) in &counters.rejected {
                text.push_str(&format!("    rejected {reason}: {count}\n"));
            }
            for (kind, count) in &counters.faults {
                text.push_str(&format!("    fault {kind}: {count}\n"));
            }
            if counters.stdio_dropped_bytes > 0 {
                text.push_str(&format!(
                    "    stdout/stderr dropped past the cap: {} bytes\n",
                    counters.stdio_dropped_bytes
                ));
            }
        }
        if self.nodes_retired_idle > 0 {
            text.push_str(&format!(
                "nodes retired after node_idle_seconds without events: {}\n",
                self.nodes_retired_idle
            ));
        }
        if self.requests_not_aggregated > 0 {
            text.push_str(&format!(
                "requests not in the request metrics (past their cap of runs): {}\n",
                self.requests_not_aggregated
            ));
        }
        if self.events_refused_instance_cap > 0 {
            text.push_str(&format!(
                "events refused at the max_live_instances cap: {}\n",
                self.events_refused_instance_cap
            ));
        }
        for output in &self.outputs {
            text.push_str(&format!(
                "output {}: {} records{}\n",
                output.name,
                output.records,
                if output.dropped > 0 {
                    format!(", {} not delivered", output.dropped)
                } else {
                    String::new()
                }
            ));
        }
        for (path, error) in &self.failed_plugins {
            text.push_str(&format!("plugin {path} not loaded: {error}\n"));
        }
        text
    }

    /// Counters of one plugin.
    pub fn plugin(&self, id: &str) -> Option<&PluginCounters> {
        self.plugins
            .iter()
            .find(|(plugin, _)| plugin == id)
            .map(|(_, counters)| counters)
    }
}

/// Totals across plugins, for a live status line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Events decoded.
    pub events: u64,
    /// Telemetry lines written.
    pub telemetry_out: u64,
    /// Items rejected.
    pub rejected: u64,
    /// Recorder faults.
    pub faults: u64,
}

/// What one output wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputRecords {
    /// `outputs[i]`: its place in the config.
    pub key: String,
    /// What it writes (a path, a URL).
    pub name: String,
    /// Records written.
    pub records: u64,
    /// Records it took but could not deliver.
    pub dropped: u64,
}

/// `swarmtel serve`'s connection counters, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionTotals {
    /// Connections accepted, by role (master, worker, standalone).
    pub accepted: [u64; 3],
    /// Connections refused at hello.
    pub refused: u64,
    /// Connections closed before their hello to make room for newer ones.
    pub evicted_before_hello: u64,
    /// Frames that did not parse or named another node.
    pub bad_frames: u64,
    /// Events the bridges said they dropped (from hello and bye frames).
    pub dropped_by_clients: u64,
    /// Event lines dropped here under `Overload::Drop`.
    pub dropped_here: u64,
    /// Event lines a bye frame counted that never arrived.
    pub lost_in_transit: u64,
    /// Over-long lines skipped.
    pub overlong: u64,
    /// Lines a client sent again after a reconnect that had already been processed: skipped.
    pub duplicates_skipped: u64,
}

impl ConnectionTotals {
    /// The totals as text for stderr.
    pub fn render(&self) -> String {
        let [master, worker, standalone] = self.accepted;
        format!(
            "swarmtel serve: {} connections ({master} master, {worker} worker, {standalone} standalone), {} refused{}; {} bad frames, {} over-long lines; events dropped: {} by bridges, {} here, {} lost in transit\n",
            master + worker + standalone,
            self.refused,
            if self.evicted_before_hello > 0 {
                format!(
                    ", {} closed before their hello to make room",
                    self.evicted_before_hello
                )
            } else {
                String::new()
            },
            self.bad_frames,
            self.overlong,
            self.dropped_by_clients,
            self.dropped_here,
            self.lost_in_transit,
        ) + &if self.duplicates_skipped > 0 {
            format!(
                "swarmtel serve: {} lines sent again after a reconnect were already processed: skipped\n",
                self.duplicates_skipped
            )
        } else {
            String::new()
        }
    }
}

/// A live source's own counters (`swarmtel serve`), for the metrics outputs: its connections,
/// what was lost on the way, and how full its queue is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Connections and losses so far.
    pub connections: ConnectionTotals,
    /// Connections open now, by role (master, worker, standalone).
    pub open: [u64; 3],
    /// Bytes of read lines waiting for the pipeline.
    pub queued_bytes: u64,
    /// The queue's byte budget (`--queue-mib`).
    pub queue_capacity_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_renders_counts_reasons_and_faults() {
        let mut counters = PluginCounters {
            events_in: 10,
            events_lost: 2,
            telemetry_out: 3,
            restarts: 7,
            disabled: 1,
            ..PluginCounters::default()
        };
        counters.rejected.insert("schema", 4);
        counters.faults.insert("trap", 5);
        let summary = Summary {
            lines: 12,
            events: 11,
            bad_lines: 1,
            nodes: 1,
            nodes_retired_idle: 2,
            events_refused_instance_cap: 3,
            requests_not_aggregated: 0,
            plugins: vec![("stats".into(), counters)],
            outputs: vec![OutputRecords {
                key: "outputs[0]".into(),
                name: "out.ndjson".into(),
                records: 9,
                dropped: 2,
            }],
            source: None,
            interrupted: true,
            failed_plugins: vec![("bad.wasm".into(), "describe faulted".into())],
        };
        let text = summary.render();
        assert!(
            text.starts_with("swarmtel: 12 lines, 11 events, 1 bad lines, 1 nodes (interrupted)"),
            "{text}"
        );
        assert!(text.contains("    rejected schema: 4"), "{text}");
        assert!(text.contains("    fault trap: 5"), "{text}");
        assert!(
            text.contains("nodes retired after node_idle_seconds without events: 2\n"),
            "{text}"
        );
        assert!(
            text.contains("events refused at the max_live_instances cap: 3\n"),
            "{text}"
        );
        let row = text.lines().nth(2).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, ["stats", "10", "2", "3", "4", "5", "7", "1"]);
        assert!(
            text.contains("\noutput out.ndjson: 9 records, 2 not delivered\n"),
            "{text}"
        );
        assert!(
            text.ends_with("plugin bad.wasm not loaded: describe faulted\n"),
            "{text}"
        );
        assert_eq!(summary.plugin("stats").unwrap().faults_total(), 5);
    }
}
