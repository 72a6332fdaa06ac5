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
fn each_output_takes_what_its_filter_names_in_stream_order() {
    let workspace = Workspace::new();
    let config = example_config(
        &workspace,
        r#"
[[outputs]]
type = "json_lines"
path = "stats.ndjson"
filter = { plugins = ["request-stats"], types = ["metric"] }

[[outputs]]
type = "json_lines"
path = "runtime.ndjson"
filter = { plugins = ["swarmtel"], names = ["PLUGIN_SUMMARY"] }

[[outputs]]
type = "json_lines"

[[outputs]]
type = "json_lines"
path = "typo.ndjson"
filter = { plugins = ["request-stat"] }
"#,
    );
    let output = replay(&config, &sample_stream(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: outputs[3].filter names plugin `request-stat`, which is not loaded"
        ),
        "{stderr}"
    );
    assert_eq!(std::fs::read(workspace.path("typo.ndjson")).unwrap(), b"");
    let everything = json_lines(&output.stdout);
    let file = |name: &str| json_lines(&std::fs::read(workspace.path(name)).unwrap());
    let (stats, runtime) = (file("stats.ndjson"), file("runtime.ndjson"));

    let expected_stats: Vec<Value> = everything
        .iter()
        .filter(|line| {
            line["telemetry"]["plugin"] == "request-stats"
                && line["telemetry"]["telemetry_type"] == "metric"
        })
        .cloned()
        .collect();
    assert!(!expected_stats.is_empty());
    assert_eq!(stats, expected_stats);
    let expected_runtime: Vec<Value> = self_telemetry(&everything, "PLUGIN_SUMMARY")
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(expected_runtime.len(), 2);
    assert_eq!(runtime, expected_runtime);
    // The unfiltered output has the other plugin's events too.
    assert!(!from_plugin(&everything, "custom-telemetry").is_empty());

    // The summary counts what each output wrote.
    for (name, count) in [
        ("stats.ndjson", stats.len()),
        ("runtime.ndjson", 2),
        ("-", everything.len()),
    ] {
        let path = if name == "-" {
            "-".to_owned()
        } else {
            workspace.path(name).display().to_string()
        };
        assert!(
            stderr.contains(&format!("output {path}: {count} records\n")),
            "{name} {count}\n{stderr}"
        );
    }
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

// A time past the year 9999 used to panic the formatter (exit 101): now a bad line with its
// number, the lines around it processed, and fatal only with --strict.
#[test]
fn out_of_range_times_are_bad_lines_with_their_number() {
    let workspace = Workspace::new();
    let config = example_config(&workspace, "");
    let events = concat!(
        r#"{"event":"test_start","role":"worker","node":"worker-0","time":1700000000}"#,
        "\n",
        r#"{"event":"test_stop","role":"worker","node":"worker-0","time":1e12}"#,
        "\n",
        r#"{"event":"test_stop","role":"worker","node":"worker-0","time":1e300}"#,
        "\n",
        r#"{"event":"test_stop","role":"worker","node":"worker-0","time":1700000002}"#,
        "\n",
    );
    let output = replay(&config, events.as_bytes(), &[]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stdin:2: `time`: must be Unix seconds from 0 to 253402300799 (year 9999), got 1000000000000; line skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("stdin:3: `time`"), "{stderr}");
    assert!(stderr.contains("2 bad lines"), "{stderr}");
    let lines = json_lines(&output.stdout);
    assert_eq!(from_plugin(&lines, "custom-telemetry").len(), 2);
    let strict = replay(&config, events.as_bytes(), &["--strict"]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("stdin:2: `time`"));
}

mod whole_path_fuzz {
    //! Property test over the whole path, in process: arbitrary field values in lines of
    //! every event kind go through decode, routing, ticks, delivery to the three example
    //! plugins (real wasm), validation, enrichment and output. Nothing may panic, every line
    //! is an event or a bad line, and every output line is one JSON object with its context.

    use super::*;
    use proptest::prelude::*;
    use std::io::Write;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex, OnceLock};
    use swarmtel::config::Config;
    use swarmtel::pipeline::Pipeline;
    use swarmtel::sandbox::Sandbox;
    use swarmtel::sinks::Outputs;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// One sandbox and config for every case: compiling the plugins once.
    fn setup() -> &'static (Arc<Sandbox>, Config) {
        static SETUP: OnceLock<(Arc<Sandbox>, Config)> = OnceLock::new();
        SETUP.get_or_init(|| {
            // Thousands of bad lines: their reports would flood the test's output.
            swarmtel::silence_diagnostics(true);
            let workspace = Workspace::new();
            let path = example_config(&workspace, "");
            let config = Config::load(&path).unwrap();
            // Keep the folder: the config's paths are absolute, so only the file goes.
            std::mem::forget(workspace);
            (Arc::new(Sandbox::new().unwrap()), config)
        })
    }

    const EVENTS: [&str; 18] = [
        "test_start",
        "test_stopping",
        "test_stop",
        "spawning_complete",
        "request",
        "user_error",
        "cpu_warning",
        "usage_monitor",
        "worker_connect",
        "worker_report",
        "heartbeat_sent",
        "heartbeat_received",
        "reset_stats",
        "quitting",
        "quit",
        "stats",
        "teleport",
        "",
    ];

    fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::from(0)),
            Just(Value::from(1.7e9)),
            Just(Value::from(253_402_300_799.0)),
            Just(Value::from(253_402_300_800.0)),
            Just(Value::from(1e12)),
            Just(Value::from(1e300)),
            Just(Value::from(-1.0)),
            Just(Value::from(5e-324)),
            Just(Value::from(u64::MAX)),
            Just(Value::from(i64::MIN)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<u32>().prop_map(Value::from),
            Just(Value::from("12")),
            Just(Value::Null),
        ]
    }

    fn text() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::from("worker-0")),
            Just(Value::from("master")),
            Just(Value::from("/items/[id]")),
            Just(Value::from("w\u{0}\u{1b}[2J")),
            Just(Value::from("x".repeat(200))),
            ".{0,12}".prop_map(Value::from),
            number(),
        ]
    }

    fn entry() -> impl Strategy<Value = Value> {
        (text(), text(), number(), number(), number(), number(), prop::collection::vec((number(), number()), 0..4))
            .prop_map(|(request_type, name, n, f, total, max, times)| {
                serde_json::json!({
                    "request_type": request_type, "name": name, "num_requests": n,
                    "num_failures": f, "total_response_time": total, "max_response_time": max,
                    "min_response_time": total, "total_content_length": n,
                    "response_times": times.into_iter().map(|(a, b)| vec![a, b]).collect::<Vec<_>>(),
                    "current_rps": f, "current_fail_per_sec": f,
                })
            })
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(&EVENTS[..]),
            prop::sample::select(&["master", "worker", "standalone", "boss"][..]),
            prop_oneof![4 => Just(Value::from("worker-0")), 2 => Just(Value::from("master")), 1 => text()],
            number(),
            prop::collection::vec((prop::sample::select(&[
                "request_type", "name", "response_time", "response_length", "exception",
                "start_time", "url", "status_code", "context", "user_count", "cpu_usage",
                "memory_usage", "client_id", "timestamp", "exit_code", "user_instance", "tb",
            ][..]), text()), 0..8),
            prop::option::of((prop::collection::vec(entry(), 0..3), entry())),
        )
            .prop_map(|(event, role, node, time, fields, stats)| {
                let mut object = serde_json::json!({
                    "event": event, "role": role, "node": node, "time": time,
                });
                for (key, value) in fields {
                    object[key] = value;
                }
                if event == "request" {
                    object["request_type"] = "GET".into();
                    object["name"] = "/".into();
                    object["response_time"] = object.get("response_time").cloned().unwrap_or(1.into());
                }
                if let Some((entries, total)) = stats {
                    object["entries"] = entries.into();
                    object["total"] = total;
                }
                serde_json::to_vec(&object).unwrap()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn any_field_values_go_through_the_whole_path_without_a_panic(
            lines in prop::collection::vec(line(), 1..60)
        ) {
            let (sandbox, config) = setup();
            let output = Shared::default();
            let dead = Shared::default();
            let outputs = Outputs::json_lines(Box::new(output.clone()), Box::new(dead.clone()));
            let pipeline = Pipeline::new(sandbox.clone(), config, outputs, &|_| None).unwrap();
            let mut input = lines.join(&b'\n');
            input.push(b'\n');
            let summary = swarmtel::sources::replay::run_stream(pipeline, Box::new(std::io::Cursor::new(input)), "fuzz", false, &AtomicBool::new(false))
                .unwrap();
            prop_assert_eq!(summary.events + summary.bad_lines, lines.len() as u64);
            let written = output.0.lock().unwrap().clone();
            for line in String::from_utf8(written).unwrap().lines() {
                let value: Value = serde_json::from_str(line).unwrap();
                prop_assert!(value["telemetry"]["run_id"] == "run-1", "{}", line);
                let time = value["time"].as_str().unwrap();
                prop_assert!(time.len() == 24 && time.ends_with('Z'), "{}", line);
            }
        }
    }
}

// A replay whose stream pauses (stdin from a live source) shows its counters on the
// Prometheus output while it waits, and keeps serving the final ones for linger_seconds.
#[test]
fn a_paused_replay_shows_its_counters_and_lingers_with_the_final_ones() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let workspace = Workspace::new();
    let config = example_config(
        &workspace,
        "[[outputs]]\ntype = \"json_lines\"\npath = \"out.ndjson\"\n\
         [[outputs]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\nlinger_seconds = 3\n",
    );
    let mut replay = LiveReplay::start(&config);
    let address = metrics_address(&replay.wait_for("prometheus metrics at http://"));
    let stream = sample_stream();
    let lines: Vec<&[u8]> = stream.split_inclusive(|b| *b == b'\n').collect();
    let (first, rest) = lines.split_at(lines.len() / 2);
    let mut stdin = replay.child.stdin.take().unwrap();
    stdin.write_all(&first.concat()).unwrap();
    stdin.flush().unwrap();
    // The stream pauses: its first half shows.
    let deadline = Instant::now() + Duration::from_secs(20);
    while series(&scrape(&address), "swarmtel_events_total") != Some(first.len() as u64) {
        assert!(Instant::now() < deadline, "{}", scrape(&address));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        series(&scrape(&address), "swarmtel_lines_total"),
        Some(first.len() as u64)
    );
    stdin.write_all(&rest.concat()).unwrap();
    drop(stdin);
    let ended = Instant::now();
    replay.wait_for("serving the final metrics");
    let exposition = scrape(&address);
    assert_eq!(series(&exposition, "swarmtel_events_total"), Some(5436));
    // The recorders' final telemetry is counted: 6 custom lines, 36 request-stats reports.
    assert_eq!(
        series(
            &exposition,
            "swarmtel_plugin_telemetry_out_total{plugin=\"request-stats\"}"
        ),
        Some(36)
    );
    assert!(replay.child.wait().unwrap().success());
    assert!(
        ended.elapsed() >= Duration::from_secs(3),
        "exited {:?} after its stream ended, with a linger of 3 s",
        ended.elapsed()
    );
}

/// A `swarmtel replay` reading stdin, with its stderr read line by line on a thread.
struct LiveReplay {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
    /// Every stderr line so far, for failure messages.
    seen: String,
}

impl LiveReplay {
    fn start(config: &std::path::Path) -> Self {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = swarmtel()
            .args(["replay", "--config"])
            .arg(config)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, stderr) = std::sync::mpsc::channel::<String>();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        Self {
            child,
            stderr,
            seen: String::new(),
        }
    }

    /// The next stderr line that contains `text` (within 60 s).
    fn wait_for(&mut self, text: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no `{text}` on stderr: {}", self.seen));
            self.seen.push_str(&line);
            self.seen.push('\n');
            if line.contains(text) {
                return line;
            }
        }
    }
}

/// Replays `stream` with `config` (which must have a Prometheus output with a linger) and
/// returns the exposition served after the stream ended, and the process's stderr.
fn final_exposition(config: &std::path::Path, stream: &[u8]) -> (String, String) {
    use std::io::Write;
    let mut replay = LiveReplay::start(config);
    let address = metrics_address(&replay.wait_for("prometheus metrics at http://"));
    let mut stdin = replay.child.stdin.take().unwrap();
    stdin.write_all(stream).unwrap();
    drop(stdin);
    replay.wait_for("serving the final metrics");
    let exposition = scrape(&address);
    assert!(replay.child.wait().unwrap().success(), "{}", replay.seen);
    (exposition, replay.seen)
}

// A plugin's metric points (contract 0.2.0) reach the Prometheus output merged over both
// workers and every call, exactly: counters per attribute set, response-time histograms per
// endpoint, gauges per node. A plugin built against the frozen 0.1.0 runs beside it.
#[test]
fn plugin_metric_points_reach_prometheus_merged_over_nodes() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"metrics\"\nrun_id = \"run-1\"\n\
             [[plugins]]\npath = {maker}\n\
             [[plugins]]\npath = {frozen}\n\
             [[outputs]]\ntype = \"json_lines\"\npath = \"out.ndjson\"\n\
             [[outputs]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\nlinger_seconds = 2\n",
            maker = toml_path(&guest("metrics_maker")),
            frozen = toml_path(&guest("frozen_v0_1")),
        ),
    );
    let stream = sample_stream();
    let (exposition, stderr) = final_exposition(&config, &stream);
    // What the stream holds: requests per (endpoint, method, status, failed), per endpoint,
    // and the endpoints each worker saw.
    let mut per_series: BTreeMap<(String, String, u64, bool), u64> = BTreeMap::new();
    let mut per_endpoint: BTreeMap<String, u64> = BTreeMap::new();
    let mut bytes_of: BTreeMap<String, u64> = BTreeMap::new();
    let mut endpoints_of: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&stream).lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if event["event"] != "request" {
            continue;
        }
        let name = event["name"].as_str().unwrap().to_owned();
        *per_series
            .entry((
                name.clone(),
                event["request_type"].as_str().unwrap().to_owned(),
                event["status_code"].as_u64().unwrap_or(0),
                !event["exception"].is_null(),
            ))
            .or_insert(0) += 1;
        *per_endpoint.entry(name.clone()).or_insert(0) += 1;
        *bytes_of.entry(name.clone()).or_insert(0) +=
            event["response_length"].as_u64().unwrap_or(0);
        endpoints_of
            .entry(event["node"].as_str().unwrap().to_owned())
            .or_default()
            .insert(name);
    }
    assert!(
        per_series.keys().any(|key| key.3),
        "the sample has failures"
    );
    let run = "run_id=\"run-1\",testplan=\"metrics\"";
    for ((endpoint, method, status, failed), count) in &per_series {
        let name = format!(
            "maker_requests_total{{{run},endpoint=\"{endpoint}\",failed=\"{failed}\",method=\"{method}\",status=\"{status}\"}}"
        );
        assert_eq!(
            series(&exposition, &name),
            Some(*count),
            "{name}\n{exposition}"
        );
    }
    assert_eq!(
        exposition.matches("maker_requests_total{").count(),
        per_series.len()
    );
    for (endpoint, count) in &per_endpoint {
        let name = format!("maker_duration_seconds_count{{{run},endpoint=\"{endpoint}\"}}");
        assert_eq!(series(&exposition, &name), Some(*count), "{name}");
        let infinite =
            format!("maker_duration_seconds_bucket{{le=\"+Inf\",{run},endpoint=\"{endpoint}\"}}");
        assert_eq!(series(&exposition, &infinite), Some(*count), "{infinite}");
    }
    // Unit `By`: `_bytes`, as the OpenTelemetry Collector names it.
    for (endpoint, bytes) in &bytes_of {
        let name = format!("maker_response_size_bytes_total{{{run},endpoint=\"{endpoint}\"}}");
        assert_eq!(series(&exposition, &name), Some(*bytes), "{name}");
    }
    for (node, endpoints) in &endpoints_of {
        let name = format!("maker_endpoints{{{run},node=\"{node}\"}}");
        let value: f64 = exposition
            .lines()
            .find_map(|line| line.strip_prefix(&name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(value, endpoints.len() as f64, "{name}");
    }
    assert!(
        exposition.contains("# HELP maker_requests Requests seen by the metrics maker"),
        "{exposition}"
    );
    assert!(!stderr.contains("rejected metric"), "{stderr}");
    // The 0.1.0 plugin counted what its nodes saw.
    let lines = json_lines(&std::fs::read(workspace.path("out.ndjson")).unwrap());
    let expected = requests_per_node(&stream);
    for (node, (requests, failures)) in &expected {
        let counts = from_plugin(&lines, "frozen-v0-1")
            .into_iter()
            .find(|line| line["telemetry"]["source_id"] == node.as_str())
            .unwrap_or_else(|| panic!("no COUNTS from {node}"));
        assert_eq!(counts["telemetry"]["requests"], *requests);
        assert_eq!(counts["telemetry"]["failures"], *failures);
        assert_eq!(
            counts["telemetry"]["urls"], *requests,
            "url extras asked for"
        );
    }
}

// A plugin built against the frozen 0.1.0 contract, without the SDK, loads in a runtime that
// speaks 0.2.0 and gets every field 0.1.0 has: its option, failures with their text, URLs,
// and stats snapshots whose fractional keys (a custom rounding) go to whole milliseconds.
#[test]
fn a_plugin_built_against_the_frozen_0_1_0_contract_still_runs() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"r\"\n[[plugins]]\npath = {frozen}\n\
             [plugins.options]\ngreeting = \"bonjour\"\n",
            frozen = toml_path(&guest("frozen_v0_1")),
        ),
    );
    let stats = |time: f64| {
        format!(
            r#"{{"event":"stats","role":"master","node":"master","time":{time},"user_count":1,"entries":[],"total":{{"request_type":"","name":"Aggregated","num_requests":3,"num_failures":1,"total_response_time":7.5,"max_response_time":4,"response_times":[[1.5,1],[2.0,1],[4,1]],"start_time":{time},"last_request_timestamp":{time}}},"errors":[{{"method":"GET","name":"/b","error":"boom","occurrences":1}}]}}"#
        )
    };
    let request = |time: f64, name: &str, exception: &str| {
        format!(
            r#"{{"event":"request","role":"worker","node":"worker-0","time":{time},"request_type":"GET","name":"{name}","response_time":2.5,"response_length":1,"exception":{exception},"exception_type":"ValueError","url":"http://x{name}","status_code":200}}"#
        )
    };
    let stream = [
        r#"{"event":"test_start","role":"master","node":"master","time":1}"#.to_owned(),
        request(1.1, "/a", "null"),
        request(1.2, "/b", "\"boom\""),
        request(1.3, "/a", "null"),
        stats(1.5),
        r#"{"event":"process_sample","role":"worker","node":"worker-0","time":1.6,"cpu_percent":12.5,"memory_bytes":1000}"#.to_owned(),
        r#"{"event":"test_stop","role":"worker","node":"worker-0","time":2}"#.to_owned(),
        r#"{"event":"test_stop","role":"master","node":"master","time":2}"#.to_owned(),
    ]
    .join("\n");
    let output = replay(&config, stream.as_bytes(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("0 bad lines"), "{stderr}");
    assert!(
        stderr.contains("frozen counter on worker-0"),
        "its host.log: {stderr}"
    );
    let lines = json_lines(&output.stdout);
    let counts = |node: &str| {
        from_plugin(&lines, "frozen-v0-1")
            .into_iter()
            .find(|line| line["telemetry"]["source_id"] == node)
            .unwrap_or_else(|| panic!("no COUNTS from {node}: {lines:?}"))
            .clone()
    };
    let worker = counts("worker-0");
    assert_eq!(worker["message"], "bonjour");
    assert_eq!(worker["telemetry"]["requests"], 3);
    assert_eq!(worker["telemetry"]["failures"], 1);
    assert_eq!(worker["telemetry"]["urls"], 3);
    assert_eq!(worker["telemetry"]["first_exception"], "boom");
    let master = counts("master");
    // 1.5 and 2.0 meet at 2 ms in 0.1.0's whole milliseconds: one key.
    assert_eq!(master["telemetry"]["stats_keys"], serde_json::json!([2, 4]));
}

#[test]
fn the_locust_telemetry_envelope_gives_each_test_its_own_run_id_on_every_node() {
    let workspace = Workspace::new();
    let lt_path = workspace.path("lt.ndjson");
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"the-run\"\n\
             [[outputs]]\ntype = \"json_lines\"\npath = {lt}\nenvelope = \"locust-telemetry\"\n\
             [outputs.filter]\nplugins = [\"locust-telemetry\"]\n\
             [[outputs]]\ntype = \"json_lines\"\npath = \"-\"\n\
             [[plugins]]\npath = {plugin}\n",
            lt = toml_path(&lt_path),
            plugin = toml_path(&guest("locust_telemetry")),
        ),
    );
    let event = |event: &str, role: &str, node: &str, time: f64, extra: &str| {
        format!(r#"{{"event":"{event}","role":"{role}","node":"{node}","time":{time}{extra}}}"#)
    };
    let sample = r#","cpu_percent":12.5,"memory_bytes":2097152,"network_sent_bytes":7,"network_recv_bytes":9"#;
    let stats = r#","user_count":2,"entries":[],"total":{"request_type":"","name":"Aggregated","num_requests":0,"num_failures":0,"total_response_time":0,"max_response_time":0,"response_times":[]},"errors":[]"#;
    let mut stream = Vec::new();
    // A worker sample before any test: not recorded (2.1.2 records from test start).
    stream.push(event("process_sample", "worker", "worker-0", 0.5, sample));
    // The third test's lines come from an older bridge: no test id.
    for (test_id, start) in [("aaaa1111", 1.0), ("bbbb2222", 10.0), ("", 20.0)] {
        let id = if test_id.is_empty() {
            String::new()
        } else {
            format!(r#","test_id":"{test_id}""#)
        };
        stream.push(event("test_start", "master", "master", start, &id));
        stream.push(event("stats", "master", "master", start + 0.01, stats));
        stream.push(event(
            "process_sample",
            "master",
            "master",
            start + 0.01,
            sample,
        ));
        stream.push(event("test_start", "worker", "worker-0", start + 0.1, &id));
        stream.push(event(
            "process_sample",
            "worker",
            "worker-0",
            start + 0.1,
            sample,
        ));
        stream.push(event("test_stop", "worker", "worker-0", start + 2.0, ""));
        stream.push(event("test_stop", "master", "master", start + 2.1, ""));
        stream.push(event("stats", "master", "master", start + 2.2, stats));
    }
    let output = replay(&config, stream.join("\n").as_bytes(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("0 bad lines"), "{stderr}");

    let lines = json_lines(&std::fs::read(&lt_path).unwrap());
    let seen: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|line| {
            let t = &line["telemetry"];
            let text = |key: &str| t[key].as_str().unwrap().to_owned();
            (
                text("run_id"),
                text("source"),
                text("source_id"),
                text("telemetry_name"),
            )
        })
        .collect();
    // Without an id, a test's lines carry the run's own id, not the last test's.
    for (test_id, expected) in [("aaaa1111", 12), ("bbbb2222", 12), ("the-run", 12)] {
        let of_test: Vec<_> = seen.iter().filter(|s| s.0 == test_id).collect();
        // master: start, current, cpu, mem, 2 network, stop, final; worker: cpu, mem, 2 network
        assert_eq!(of_test.len(), expected, "{test_id}: {of_test:?}");
        assert!(
            of_test
                .iter()
                .any(|s| s.1 == "WorkerRunner" && s.2 == "worker-0")
        );
        assert!(
            of_test
                .iter()
                .any(|s| s.1 == "MasterRunner" && s.3 == "locust.tl.event.test.start")
        );
    }
    assert_eq!(seen.len(), 36, "nothing else: {seen:?}");
    assert!(lines.iter().all(|l| l["telemetry"].get("plugin").is_none()));
    let metric = lines
        .iter()
        .find(|l| l["telemetry"]["telemetry_name"] == "locust.tl.system.metric.mem")
        .unwrap();
    assert_eq!(metric["telemetry"]["telemetry_type"], "metrics");
    assert_eq!(metric["telemetry"]["value"], 2.0);
    assert_eq!(metric["name"], "swarmtel.locust-telemetry");

    // The other output keeps swarmtel's own line, with the run's id.
    let own = json_lines(&output.stdout);
    let own = from_plugin(&own, "locust-telemetry");
    assert_eq!(own.len(), 36);
    assert!(own.iter().all(|l| l["telemetry"]["run_id"] == "the-run"));
    assert!(
        own.iter()
            .any(|l| l["telemetry"]["telemetry_type"] == "metric")
    );
    assert!(own.iter().any(|l| l["telemetry"]["source"] == "worker"));
}
