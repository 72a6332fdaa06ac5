//! Replays real and generated event streams through plugins built from source, with the real
//! `swarmtel` binary, and checks the telemetry that comes out.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::*;

/// Per worker node: (requests, failures) in the input stream.
fn requests_per_node(stream: &[u8]) -> BTreeMap<String, (u64, u64)> {
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(stream).lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if event["event"] == "request" {
            let entry = counts
                .entry(event["node"].as_str().unwrap().to_owned())
                .or_insert((0, 0));
            entry.0 += 1;
            entry.1 += u64::from(!event["exception"].is_null());
        }
    }
    counts
}

fn example_config(workspace: &Workspace, extra: &str) -> std::path::PathBuf {
    workspace.write(
        "swarmtel.toml",
        format!(
            r#"
[run]
testplan = "replay-test"
run_id = "run-1"

[[plugins]]
path = {custom}
roles = ["master", "worker"]
[plugins.options]
custom-option = "from-config"

[[plugins]]
path = {stats}
{extra}
"#,
            custom = toml_path(&guest("custom_telemetry")),
            stats = toml_path(&guest("request_stats")),
        ),
    )
}

#[test]
fn sample_run_through_the_example_plugins() {
    let workspace = Workspace::new();
    let config = example_config(&workspace, "");
    let stream = sample_stream();
    let output = replay(&config, &stream, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output.stdout);

    // The ported CustomTelemetryRecorder: start and stop once per master and worker.
    let custom = from_plugin(&lines, "custom-telemetry");
    let mut seen: Vec<(String, String)> = custom
        .iter()
        .map(|line| {
            (
                line["telemetry"]["telemetry_name"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                line["telemetry"]["source_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let expected: Vec<(String, String)> = ["CUSTOM_START", "CUSTOM_STOP"]
        .iter()
        .flat_map(|name| {
            ["master", "worker-0", "worker-1"]
                .iter()
                .map(move |node| (name.to_string(), node.to_string()))
        })
        .collect();
    assert_eq!(seen, expected);
    assert!(
        custom
            .iter()
            .all(|line| line["telemetry"]["custom_option"] == "from-config")
    );

    // Request stats: the final Aggregated row of each worker equals what the stream holds.
    let stats = from_plugin(&lines, "request-stats");
    for (node, (requests, failures)) in requests_per_node(&stream) {
        let last_total = stats
            .iter()
            .rev()
            .find(|line| {
                line["telemetry"]["source_id"] == node.as_str()
                    && line["telemetry"]["endpoint"] == "Aggregated"
            })
            .unwrap_or_else(|| panic!("no Aggregated row for {node}"));
        assert_eq!(last_total["telemetry"]["requests"], requests, "{node}");
        assert_eq!(last_total["telemetry"]["failures"], failures, "{node}");
        assert_eq!(last_total["telemetry"]["final"], true);
    }
    // Periodic reports came from ticks, before the final ones.
    assert!(stats.iter().any(|line| line["telemetry"]["final"] == false));

    // Context the host owns is on every line.
    for line in &lines {
        let telemetry = &line["telemetry"];
        assert_eq!(telemetry["run_id"], "run-1");
        assert_eq!(telemetry["testplan"], "replay-test");
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }

    // No rejections or faults; the summary says so.
    let summaries = self_telemetry(&lines, "PLUGIN_SUMMARY");
    assert_eq!(summaries.len(), 2);
    for summary in summaries {
        assert_eq!(summary["telemetry"]["rejected"], 0);
        assert_eq!(summary["telemetry"]["faults"], 0);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("5436 events, 0 bad lines, 3 nodes"),
        "{stderr}"
    );

    // And the exact output, for review when it changes.
    insta::assert_snapshot!(String::from_utf8_lossy(&output.stdout));
}

#[test]
fn replay_reads_a_file_argument_too() {
    let workspace = Workspace::new();
    let config = example_config(&workspace, "");
    let events = workspace.write("events.ndjson", sample_stream());
    let from_file = swarmtel()
        .args(["replay", "--config"])
        .arg(&config)
        .arg(&events)
        .output()
        .unwrap();
    let from_stdin = replay(&config, &sample_stream(), &[]);
    assert!(from_file.status.success());
    assert_eq!(from_file.stdout, from_stdin.stdout);
}

#[test]
fn a_trapping_guest_does_not_lose_another_recorders_output() {
    let (alone, together, stderr) = healthy_beside("panic-on-request", "max_faults = 3");
    assert_healthy_output_unchanged(&alone, &together);
    // Two worker instances, each faulting up to the limit, then disabled.
    assert_eq!(fault_kinds(&together), vec!["trap"; 6]);
    let disabled = self_telemetry(&together, "PLUGIN_DISABLED");
    assert_eq!(disabled.len(), 2);
    let summary = self_telemetry(&together, "PLUGIN_SUMMARY")
        .into_iter()
        .find(|line| line["telemetry"]["subject_plugin"] == "misbehave")
        .unwrap();
    assert_eq!(summary["telemetry"]["faults"], 6);
    assert_eq!(summary["telemetry"]["disabled"], 2);
    assert!(stderr.contains("disabled after 3 faults"), "{stderr}");
    assert!(stderr.contains("misbehave"), "{stderr}");
}

#[test]
fn the_deadline_stops_an_endless_loop() {
    let (alone, together, _) =
        healthy_beside("loop-on-request", "cpu_ms_per_call = 20\nmax_faults = 1");
    assert_healthy_output_unchanged(&alone, &together);
    assert_eq!(fault_kinds(&together), vec!["deadline"; 2]);
}

#[test]
fn the_memory_cap_stops_unbounded_growth() {
    let (alone, together, _) = healthy_beside("grow-memory", "memory_mib = 16\nmax_faults = 1");
    assert_healthy_output_unchanged(&alone, &together);
    assert_eq!(fault_kinds(&together), vec!["memory"; 2]);
}

#[test]
fn invalid_telemetry_goes_to_the_dead_letter_output_with_its_reason() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"r\"\n[output]\ndead_letter = \"rejected.jsonl\"\n\
             [[plugins]]\npath = {bad}\n[plugins.options]\nmode = \"bad-telemetry\"\n\
             [plugins.limits]\nmax_item_bytes = 10000\n",
            bad = toml_path(&guest("misbehave")),
        ),
    );
    let events = concat!(
        r#"{"event":"test_start","role":"worker","node":"worker-0","time":1700000000}"#,
        "\n"
    );
    let output = replay(&config, events.as_bytes(), &[]);
    assert!(output.status.success());
    let lines = json_lines(&output.stdout);
    let valid = from_plugin(&lines, "misbehave");
    assert_eq!(valid.len(), 1, "only the valid item reaches the output");
    assert_eq!(valid[0]["telemetry"]["count"], 1);
    assert_eq!(valid[0]["message"], "valid");

    let dead: Vec<Value> = json_lines(&std::fs::read(workspace.path("rejected.jsonl")).unwrap());
    let mut kinds: Vec<&str> = dead
        .iter()
        .map(|line| line["reason_kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "envelope",
            "fields_not_json",
            "fields_not_object",
            "host_owned_key",
            "item_too_large",
            "schema"
        ]
    );
    let forged = dead
        .iter()
        .find(|line| line["reason_kind"] == "host_owned_key")
        .unwrap();
    assert!(forged["reason"].as_str().unwrap().contains("run_id"));
    assert_eq!(forged["plugin"], "misbehave");
    assert_eq!(forged["source_id"], "worker-0");
    // The forged run id never reached the output.
    assert!(lines.iter().all(|line| line["telemetry"]["run_id"] == "r"));

    let rejected = self_telemetry(&lines, "TELEMETRY_REJECTED");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["telemetry"]["rejected"], 6);
}

#[test]
fn malformed_lines_are_reported_with_their_number_and_skipped() {
    let workspace = Workspace::new();
    let config = example_config(&workspace, "");
    let events = concat!(
        r#"{"event":"test_start","role":"worker","node":"worker-0","time":1700000000}"#,
        "\n",
        "this is not json\n",
        "\n",
        r#"{"event":"request","role":"worker","node":"worker-0","time":1700000001,"name":"/a","response_time":1}"#,
        "\n",
        r#"{"event":"test_stop","role":"worker","node":"worker-0","time":1700000002}"#,
        "\n",
    );
    let output = replay(&config, events.as_bytes(), &[]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stdin:2: "), "{stderr}");
    assert!(
        stderr.contains("stdin:4: event `request` needs `request_type`"),
        "{stderr}"
    );
    assert!(stderr.contains("2 bad lines"), "{stderr}");
    // The good lines around the bad ones were all processed.
    let lines = json_lines(&output.stdout);
    let custom = from_plugin(&lines, "custom-telemetry");
    assert_eq!(custom.len(), 2);

    let strict = replay(&config, events.as_bytes(), &["--strict"]);
    assert!(!strict.status.success());
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(stderr.contains("stdin:2:"), "{stderr}");
    // What came before the bad line was still flushed.
    let lines = json_lines(&strict.stdout);
    assert_eq!(from_plugin(&lines, "custom-telemetry").len(), 1);
}

#[test]
fn a_node_that_changes_role_is_a_bad_line() {
    let workspace = Workspace::new();
    let config = example_config(&workspace, "");
    let events = concat!(
        r#"{"event":"test_start","role":"worker","node":"n1","time":1}"#,
        "\n",
        r#"{"event":"test_stop","role":"master","node":"n1","time":2}"#,
        "\n",
    );
    let output = replay(&config, events.as_bytes(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stdin:2: node `n1` was worker and is now master"),
        "{stderr}"
    );
}
