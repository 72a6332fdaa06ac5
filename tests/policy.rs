//! Fault policy, capabilities and fuel: restart with backoff, disable, `required`, plugins
//! that fault while loading, clocks and random numbers only when granted.

mod support;

use serde_json::Value;
use support::*;

fn stats_entry() -> String {
    format!(
        "[[plugins]]\npath = {}\n",
        toml_path(&guest("request_stats"))
    )
}

fn lifecycle_entry(mode: &str, extra: &str) -> String {
    format!(
        "[[plugins]]\npath = {}\n{extra}\n[plugins.options]\nmode = \"{mode}\"\n",
        toml_path(&guest("lifecycle"))
    )
}

fn config(workspace: &Workspace, name: &str, plugins: &str) -> std::path::PathBuf {
    workspace.write(
        name,
        format!("[run]\ntestplan = \"t\"\nrun_id = \"r\"\n{plugins}"),
    )
}

fn stream() -> Vec<u8> {
    swarmtel::sources::synthetic::request_stream(2, 20_000)
}

fn summary_of<'a>(lines: &'a [Value], plugin: &str) -> &'a Value {
    self_telemetry(lines, "PLUGIN_SUMMARY")
        .into_iter()
        .find(|line| line["telemetry"]["subject_plugin"] == plugin)
        .unwrap_or_else(|| panic!("no summary for {plugin}"))
}

#[test]
fn a_recorder_that_faults_once_is_restarted_after_its_backoff() {
    let workspace = Workspace::new();
    // Small batches: the backoff skips whole batches, so this makes it skip close to the
    // events of the 500 ms.
    let path = workspace.write(
        "c.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"r\"\nbatch_size = 10\n{}",
            lifecycle_entry(
                "panic-on-test-start",
                "[plugins.limits]\nrestart_backoff_ms = 500"
            )
        ),
    );
    let output = replay(&path, &stream(), &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output.stdout);
    let faults = self_telemetry(&lines, "PLUGIN_FAULT");
    assert_eq!(faults.len(), 2, "one per worker");
    assert!(
        faults.iter().all(|f| f["telemetry"]["fault_kind"] == "trap"
            && f["telemetry"]["restart_backoff_ms"] == 500)
    );
    assert_eq!(self_telemetry(&lines, "PLUGIN_RESTARTED").len(), 2);
    assert!(self_telemetry(&lines, "PLUGIN_DISABLED").is_empty());
    let summary = summary_of(&lines, "lifecycle");
    assert_eq!(summary["telemetry"]["restarts"], 2);
    assert_eq!(summary["telemetry"]["disabled"], 0);
    // Each worker lost its test_start batch and what arrived during the 500 ms backoff
    // (1,000 requests per second over two workers), and saw the rest.
    let seen: Vec<u64> = from_plugin(&lines, "lifecycle")
        .iter()
        .filter(|l| l["telemetry"]["telemetry_name"] == "REQUESTS_SEEN")
        .map(|l| l["telemetry"]["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(seen.len(), 2);
    let lost = summary["telemetry"]["events_lost"].as_u64().unwrap();
    // About 250 requests per worker arrive during the backoff.
    assert!(
        (400..=600).contains(&lost),
        "the backoff dropped events: {lost}"
    );
    assert_eq!(
        seen.iter().sum::<u64>() + lost,
        20_000 + 2,
        "every event is seen or counted lost"
    );
}

#[test]
fn faults_outside_the_window_do_not_add_up() {
    // Two test starts 120 s apart on one worker: each faults once, the window is 60 s, so
    // max_faults = 2 is never reached.
    let workspace = Workspace::new();
    let path = config(
        &workspace,
        "c.toml",
        &lifecycle_entry(
            "panic-on-test-start",
            "[plugins.limits]\nmax_faults = 2\nfault_window_seconds = 60",
        ),
    );
    let events = [
        r#"{"event":"test_start","role":"worker","node":"worker-0","time":1000}"#,
        r#"{"event":"test_start","role":"worker","node":"worker-0","time":1120}"#,
        r#"{"event":"test_stop","role":"worker","node":"worker-0","time":1130}"#,
    ]
    .join("\n");
    let lines = json_lines(&replay(&path, events.as_bytes(), &[]).stdout);
    assert_eq!(self_telemetry(&lines, "PLUGIN_FAULT").len(), 2);
    assert!(self_telemetry(&lines, "PLUGIN_DISABLED").is_empty());

    // The same faults 10 s apart are inside the window: disabled.
    let events = events.replace("1120", "1010");
    let lines = json_lines(&replay(&path, events.as_bytes(), &[]).stdout);
    assert_eq!(self_telemetry(&lines, "PLUGIN_DISABLED").len(), 1);
}

#[test]
fn a_required_plugin_that_ends_disabled_fails_the_run_after_flushing() {
    let workspace = Workspace::new();
    let plugins = format!(
        "{}[[plugins]]\npath = {}\nrequired = true\n[plugins.options]\nmode = \"panic-on-request\"\n[plugins.limits]\nmax_faults = 1\n",
        stats_entry(),
        toml_path(&guest("misbehave"))
    );
    let path = config(&workspace, "c.toml", &plugins);
    let output = replay(&path, &stream(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("required plugin misbehave failed"),
        "{stderr}"
    );
    let lines = json_lines(&output.stdout);
    assert!(!self_telemetry(&lines, "PLUGIN_DISABLED").is_empty());
    assert_eq!(
        self_telemetry(&lines, "PLUGIN_SUMMARY").len(),
        2,
        "outputs were flushed"
    );

    // Not required: the same fault leaves the run successful.
    let path = config(
        &workspace,
        "d.toml",
        &plugins.replace("required = true\n", ""),
    );
    assert!(replay(&path, &stream(), &[]).status.success());
}

#[test]
fn a_plugin_that_hangs_while_describing_is_skipped_unless_required() {
    let workspace = Workspace::new();
    let hang = format!(
        "[[plugins]]\npath = {}\n",
        toml_path(&guest("hang_describe"))
    );
    let alone = replay(
        &config(&workspace, "a.toml", &stats_entry()),
        &stream(),
        &[],
    );
    let together_path = config(&workspace, "b.toml", &format!("{}{hang}", stats_entry()));
    let together = replay(&together_path, &stream(), &[]);
    assert!(
        together.status.success(),
        "{}",
        String::from_utf8_lossy(&together.stderr)
    );
    let (alone, together_lines) = (json_lines(&alone.stdout), json_lines(&together.stdout));
    assert_eq!(
        from_plugin(&alone, "request-stats"),
        from_plugin(&together_lines, "request-stats")
    );
    let disabled = self_telemetry(&together_lines, "PLUGIN_DISABLED");
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["telemetry"]["stage"], "describe");
    assert_eq!(disabled[0]["telemetry"]["fault_kind"], "deadline");
    let stderr = String::from_utf8_lossy(&together.stderr);
    assert!(
        stderr.contains("hang_describe.wasm: describe faulted: deadline"),
        "{stderr}"
    );
    assert!(stderr.contains("not loaded"), "{stderr}");

    // `check` reports it as a failure.
    let check = swarmtel()
        .args(["check", "--config"])
        .arg(&together_path)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));

    // Required: the run does not start.
    let required = config(
        &workspace,
        "c.toml",
        &format!("{}{hang}required = true\n", stats_entry()),
    );
    let output = replay(&required, &stream(), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("required plugin"));
}

#[test]
fn a_recorder_that_hangs_while_being_created_is_skipped() {
    let workspace = Workspace::new();
    let path = config(
        &workspace,
        "c.toml",
        &format!("{}{}", stats_entry(), lifecycle_entry("loop-on-create", "")),
    );
    let output = replay(&path, &stream(), &[]);
    assert!(output.status.success());
    let lines = json_lines(&output.stdout);
    let disabled = self_telemetry(&lines, "PLUGIN_DISABLED");
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["telemetry"]["fault_kind"], "deadline");
    assert!(
        disabled[0]["telemetry"]["stage"]
            .as_str()
            .unwrap()
            .contains("creating recorder `lifecycle_recorder`")
    );
    assert!(!from_plugin(&lines, "request-stats").is_empty());
}

#[test]
fn fuel_bounds_a_call_deterministically() {
    let workspace = Workspace::new();
    // Plenty of time, little fuel: the fault is `fuel`, not `deadline`.
    let path = config(
        &workspace,
        "c.toml",
        &format!(
            "{}{}",
            stats_entry(),
            lifecycle_entry(
                "burn",
                "[plugins.limits]\nfuel_per_call = 1000000\ncpu_ms_per_call = 10000\nmax_faults = 1",
            )
            .replace("mode = \"burn\"", "mode = \"burn\"\nspin = 100000000")
        ),
    );
    let output = replay(&path, &stream(), &[]);
    assert!(output.status.success());
    let lines = json_lines(&output.stdout);
    let kinds: Vec<&Value> = self_telemetry(&lines, "PLUGIN_FAULT")
        .iter()
        .map(|f| &f["telemetry"]["fault_kind"])
        .collect();
    assert_eq!(kinds, vec!["fuel"; 2]);

    // The same work within a larger budget completes.
    let path = config(
        &workspace,
        "d.toml",
        &lifecycle_entry("burn", "[plugins.limits]\nfuel_per_call = 100000000000")
            .replace("mode = \"burn\"", "mode = \"burn\"\nspin = 1000"),
    );
    let lines = json_lines(&replay(&path, &stream(), &[]).stdout);
    assert!(self_telemetry(&lines, "PLUGIN_FAULT").is_empty());
}

fn host_view(capabilities: &str) -> Value {
    let workspace = Workspace::new();
    let path = config(
        &workspace,
        "c.toml",
        &lifecycle_entry("report-host", capabilities),
    );
    let events = r#"{"event":"test_start","role":"worker","node":"worker-0","time":1000}"#;
    let output = replay(&path, events.as_bytes(), &[]);
    assert!(output.status.success());
    let lines = json_lines(&output.stdout);
    let view = from_plugin(&lines, "lifecycle")
        .into_iter()
        .find(|l| l["telemetry"]["telemetry_name"] == "HOST_VIEW")
        .expect("HOST_VIEW")
        .clone();
    view["telemetry"].clone()
}

#[test]
fn clocks_and_random_are_frozen_unless_granted() {
    let denied = host_view("");
    assert_eq!(denied["wall_clock_seconds"], 0.0);
    assert_eq!(denied["monotonic_elapsed_ns"], 0);
    // Without the random capability the seed is fixed: the same hash on every run.
    assert_eq!(denied["seeded_hash"], host_view("")["seeded_hash"]);

    let granted = host_view(
        "[plugins.capabilities]\nwall_clock = true\nmonotonic_clock = true\nrandom = true",
    );
    assert!(granted["wall_clock_seconds"].as_f64().unwrap() > 1.7e9);
    let other = host_view("[plugins.capabilities]\nrandom = true");
    assert_ne!(
        granted["seeded_hash"], other["seeded_hash"],
        "real random seeds differ"
    );
    assert_eq!(
        other["wall_clock_seconds"], 0.0,
        "granting random grants no clock"
    );
}

#[test]
fn check_lists_granted_capabilities() {
    let workspace = Workspace::new();
    let path = config(
        &workspace,
        "c.toml",
        &lifecycle_entry("report-host", "[plugins.capabilities]\nrandom = true"),
    );
    let output = swarmtel()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("capabilities: granted random"), "{text}");
    assert!(text.contains("not required"), "{text}");
}
