//! The hostile-plugin catalogue: each hostile guest runs beside a healthy recorder over the
//! same stream; the run goes on, the healthy output is unchanged, the fault is reported.
//!
//! Every hostile guest is the `misbehave` test guest in one of its modes (see its module doc),
//! built from source. Each test runs it beside `request_stats` over [`side_by_side_stream`] and
//! checks that the run exits 0, that request-stats wrote exactly what it writes alone, and that
//! the fault or rejection is counted by kind in the stderr summary and in self-telemetry. Each
//! test also shows its limit being hit: the exact fault kind, rejection kind and count.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use support::*;

/// Request batches per worker in the side-by-side stream at the default `batch_size` (1024):
/// 10,000 requests make 9 full batches and one of 784.
const BATCHES_PER_WORKER: u64 = 10;

/// The workers of the side-by-side stream.
const WORKERS: [&str; 2] = ["worker-0", "worker-1"];

/// Runs the misbehave guest in `mode` with `limits` (TOML lines) beside request-stats, and
/// checks the run exited 0 and request-stats wrote exactly what it writes alone.
fn misbehave(mode: &str, limits: &str) -> Beside {
    misbehave_with(mode, "", limits, |_| {})
}

/// [`misbehave`] with more option lines, and a hook to change the command (env, folder).
fn misbehave_with(
    mode: &str,
    options: &str,
    limits: &str,
    customize: impl FnOnce(&mut Command),
) -> Beside {
    let run = beside(
        "misbehave",
        &format!("[plugins.options]\nmode = \"{mode}\"\n{options}\n[plugins.limits]\n{limits}\n"),
        customize,
    );
    assert_healthy_output_unchanged(&healthy_alone().0, &run.lines);
    // The healthy plugin saw nothing go wrong.
    let healthy = stderr_row(&run.stderr, "request-stats");
    assert!(healthy.details.is_empty(), "{healthy:?}");
    let stats = plugin_summary(&run.lines, "request-stats");
    assert_eq!(stats["faults"], 0);
    assert_eq!(stats["rejected"], 0);
    assert_eq!(stats["events_lost"], 0);
    run
}

/// A plugin's row in the stderr summary, by column name, and the `rejected KIND: N` /
/// `fault KIND: N` lines under it.
#[derive(Debug)]
struct StderrRow {
    columns: BTreeMap<String, u64>,
    details: Vec<String>,
}

impl StderrRow {
    fn get(&self, column: &str) -> u64 {
        *self
            .columns
            .get(column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", self.columns))
    }
}

fn stderr_row(stderr: &str, plugin: &str) -> StderrRow {
    let mut lines = stderr
        .lines()
        .skip_while(|line| !line.starts_with("plugin ") || !line.contains("events_in"));
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("no summary table in stderr:\n{stderr}"))
        .split_whitespace()
        .skip(1)
        .collect();
    let mut lines = lines.skip_while(|line| line.split_whitespace().next() != Some(plugin));
    let row = lines
        .next()
        .unwrap_or_else(|| panic!("no summary row for {plugin}:\n{stderr}"));
    let cells: Vec<u64> = row
        .split_whitespace()
        .skip(1)
        .map(|cell| cell.parse().unwrap())
        .collect();
    assert_eq!(cells.len(), header.len(), "{row}");
    let details = lines
        .take_while(|line| line.starts_with("    "))
        .map(|line| line.trim().to_owned())
        .collect();
    StderrRow {
        columns: header.iter().map(|h| h.to_string()).zip(cells).collect(),
        details,
    }
}

/// The `telemetry` object of the runtime's `PLUGIN_SUMMARY` for `plugin`.
fn plugin_summary<'a>(lines: &'a [Value], plugin: &str) -> &'a Value {
    let summaries: Vec<&Value> = self_telemetry(lines, "PLUGIN_SUMMARY")
        .into_iter()
        .filter(|line| line["telemetry"]["subject_plugin"] == plugin)
        .collect();
    assert_eq!(summaries.len(), 1, "one PLUGIN_SUMMARY for {plugin}");
    &summaries[0]["telemetry"]
}

/// How many of `lines` have each value at `key` of their `telemetry` object.
fn count_by<'a>(lines: impl IntoIterator<Item = &'a Value>, key: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let value = match &line["telemetry"][key] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        *counts.entry(value).or_insert(0) += 1;
    }
    counts
}

/// Asserts the misbehave plugin faulted exactly `per_worker` times with `kind` on each worker,
/// was disabled on each after `per_worker` faults, and that stderr and self-telemetry say so.
fn assert_faults(run: &Beside, kind: &str, per_worker: u64) {
    let total = per_worker * WORKERS.len() as u64;
    assert_eq!(fault_kinds(&run.lines), vec![kind; total as usize]);
    let faults = self_telemetry(&run.lines, "PLUGIN_FAULT");
    for fault in &faults {
        assert_eq!(fault["telemetry"]["plugin"], "swarmtel");
        assert_eq!(fault["telemetry"]["subject_plugin"], "misbehave");
        assert_eq!(fault["telemetry"]["recorder"], "misbehaving_recorder");
        assert!(fault["telemetry"]["events_lost"].as_u64().unwrap() > 0);
    }
    let per_node = count_by(faults.iter().copied(), "source_id");
    assert_eq!(
        per_node,
        WORKERS.map(|w| (w.to_owned(), per_worker)).into(),
        "faults per worker"
    );
    let disabled = self_telemetry(&run.lines, "PLUGIN_DISABLED");
    assert_eq!(
        count_by(disabled.iter().copied(), "source_id"),
        WORKERS.map(|w| (w.to_owned(), 1)).into()
    );
    assert!(
        disabled
            .iter()
            .all(|line| line["telemetry"]["subject_plugin"] == "misbehave"
                && line["telemetry"]["faults"] == per_worker)
    );

    let summary = plugin_summary(&run.lines, "misbehave");
    assert_eq!(summary["faults"], total);
    assert_eq!(summary["disabled"], 2);
    assert_eq!(summary["rejected"], 0);
    // Every event was either handled or lost; the faulted batches and all after disabling
    // were lost.
    let events_in = summary["events_in"].as_u64().unwrap();
    let events_lost = summary["events_lost"].as_u64().unwrap();
    assert!(events_lost > 0);
    assert_eq!(events_in + events_lost, EVENTS_PER_WORKER * 2);

    let row = stderr_row(&run.stderr, "misbehave");
    assert_eq!(row.details, [format!("fault {kind}: {total}")]);
    assert_eq!(
        ["faults", "disabled", "rejected"].map(|c| row.get(c)),
        [total, 2, 0]
    );
    assert_eq!(
        ["events_in", "lost"].map(|c| row.get(c)),
        [events_in, events_lost]
    );
    assert!(
        run.stderr
            .contains(&format!("disabled after {per_worker} faults")),
        "{}",
        run.stderr
    );
}

/// Asserts the misbehave plugin never faulted, had `rejected` items rejected with `reason`
/// (as many per worker), and that the dead letters, stderr and self-telemetry say so.
fn assert_rejections(run: &Beside, reason: &str, rejected: u64) {
    let total = rejected * WORKERS.len() as u64;
    assert_eq!(fault_kinds(&run.lines), [""; 0], "{}", run.stderr);
    assert_eq!(
        count_by_key(&run.dead_letters, "reason_kind"),
        [(reason.to_owned(), total)].into()
    );
    assert_eq!(
        count_by_key(&run.dead_letters, "source_id"),
        WORKERS.map(|w| (w.to_owned(), rejected)).into()
    );
    assert!(
        run.dead_letters
            .iter()
            .all(|line| line["plugin"] == "misbehave")
    );

    let reports = self_telemetry(&run.lines, "TELEMETRY_REJECTED");
    assert_eq!(
        reports.len(),
        WORKERS.len(),
        "one report per rejecting call"
    );
    for report in &reports {
        assert_eq!(report["telemetry"]["plugin"], "swarmtel");
        assert_eq!(report["telemetry"]["subject_plugin"], "misbehave");
        assert_eq!(report["telemetry"]["rejected"], rejected);
    }

    let summary = plugin_summary(&run.lines, "misbehave");
    assert_eq!(summary["rejected"], total);
    assert_eq!(
        (&summary["faults"], &summary["disabled"]),
        (&0.into(), &0.into())
    );
    assert_eq!(summary["events_lost"], 0);
    let row = stderr_row(&run.stderr, "misbehave");
    assert_eq!(row.details, [format!("rejected {reason}: {total}")]);
    assert_eq!(
        ["rejected", "faults", "disabled"].map(|c| row.get(c)),
        [total, 0, 0]
    );
    assert_still_running(run);
}

/// Top-level `key` of dead-letter lines, counted.
fn count_by_key(lines: &[Value], key: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        // A dead letter that stands for a call's further items past its caps counts them all.
        let weight = line.get("more_items").and_then(Value::as_u64).unwrap_or(1);
        *counts
            .entry(line[key].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += weight;
    }
    counts
}

/// The guest kept running to the end on both workers: it saw every request and reported so
/// at test stop.
fn assert_still_running(run: &Beside) {
    let seen: Vec<&Value> = from_plugin(&run.lines, "misbehave")
        .into_iter()
        .filter(|line| line["telemetry"]["telemetry_name"] == "REQUESTS_SEEN")
        .collect();
    assert_eq!(seen.len(), 2, "REQUESTS_SEEN from both workers");
    for line in seen {
        assert_eq!(line["telemetry"]["requests"], 10_000);
    }
    assert_eq!(fault_kinds(&run.lines), [""; 0], "{}", run.stderr);
    assert_eq!(plugin_summary(&run.lines, "misbehave")["faults"], 0);
}

/// The lines a probe mode logged, one per worker, as their `telemetry` objects.
fn probes<'a>(run: &'a Beside, name: &str) -> Vec<&'a Value> {
    let found: Vec<&Value> = from_plugin(&run.lines, "misbehave")
        .into_iter()
        .filter(|line| line["telemetry"]["telemetry_name"] == name)
        .map(|line| &line["telemetry"])
        .collect();
    assert_eq!(found.len(), 2, "{name} from both workers");
    found
}

/// A number no other test run uses, for file names.
fn nonce() -> i64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    i64::from(std::process::id()) * 1_000_000_000 + i64::from(nanos)
}

// 1. An endless loop in an event handler.
#[test]
fn an_endless_loop_is_stopped_by_the_deadline() {
    let run = misbehave("loop-on-request", "cpu_ms_per_call = 20\nmax_faults = 2");
    assert_faults(&run, "deadline", 2);
}

// 3. Unbounded recursion.
#[test]
fn unbounded_recursion_overflows_the_stack() {
    let run = misbehave("recurse-on-request", "max_faults = 2");
    assert_faults(&run, "stack_overflow", 2);
}

// 3, with large frames: the Rust guest's shadow stack (in linear memory) runs out first.
#[test]
fn unbounded_recursion_with_large_frames_is_a_stack_overflow() {
    let run = misbehave("recurse-big-frames-on-request", "max_faults = 1");
    assert_faults(&run, "stack_overflow", 1);
}

// 4. Memory growth until the cap.
#[test]
fn unbounded_memory_growth_hits_the_cap() {
    let run = misbehave("grow-memory", "memory_mib = 16\nmax_faults = 2");
    assert_faults(&run, "memory", 2);
}

// 5. One huge item.
#[test]
fn a_huge_item_is_rejected_and_the_guest_goes_on() {
    // A call may hand back `max_call_bytes` (plus item overhead) of results; raised here so
    // the 2 MB item reaches validation (with the default, see
    // `results_past_the_host_memory_bound_are_refused_before_they_are_copied`).
    let run = misbehave("huge-item", "max_call_bytes = 4194304");
    assert_rejections(&run, "item_too_large", 1);
    let dead = &run.dead_letters[0];
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .ends_with("exceeds 16384 bytes"),
        "{dead}"
    );
    // The dead letter keeps only the start of the item.
    assert!(dead["fields"].as_str().unwrap().len() < 10_000);
}

// 6. A flood of items from one call.
#[test]
fn a_flood_of_items_is_cut_at_the_call_limit() {
    // Generous CPU: building 100,000 items must not hit the deadline on a loaded machine.
    // Host memory for the results is raised so they can be copied and counted one by one.
    let run = misbehave(
        "flood-items",
        "cpu_ms_per_call = 5000\nmax_call_bytes = 16777216",
    );
    // Each worker's test_start call returned 100,000 items: 1,000 pass, the rest do not.
    assert_rejections(&run, "too_many_items", 99_000);
    let flood = from_plugin(&run.lines, "misbehave")
        .into_iter()
        .filter(|line| line["telemetry"]["telemetry_name"] == "FLOOD")
        .collect::<Vec<_>>();
    assert_eq!(
        count_by(flood.iter().copied(), "source_id"),
        WORKERS.map(|w| (w.to_owned(), 1_000)).into()
    );
    // The first 1,000 of each call, in order.
    let indexes: Vec<u64> = flood
        .iter()
        .filter(|line| line["telemetry"]["source_id"] == "worker-0")
        .map(|line| line["telemetry"]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..1_000).collect::<Vec<u64>>());
    // Per call: a dead letter for the first item past the cap, then one line for the rest.
    assert_eq!(run.dead_letters.len(), 4);
    let more: Vec<&Value> = run
        .dead_letters
        .iter()
        .filter_map(|line| line.get("more_items"))
        .collect();
    assert_eq!(more, [&Value::from(98_999), &Value::from(98_999)]);
}

// 7. Fields that are not JSON.
#[test]
fn fields_that_are_not_json_are_rejected() {
    let run = misbehave("invalid-json", "");
    assert_rejections(&run, "fields_not_json", 1);
    assert_eq!(run.dead_letters[0]["fields"], "{\"count\": 1,");
}

// 8. JSON that breaks the plugin's declared schema.
#[test]
fn fields_that_break_the_declared_schema_are_rejected() {
    let run = misbehave("schema-break", "");
    assert_rejections(&run, "schema", 1);
    let reason = run.dead_letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("CHECKED") && reason.contains("/count"),
        "{reason}"
    );
    assert!(
        from_plugin(&run.lines, "misbehave")
            .iter()
            .all(|line| line["telemetry"]["telemetry_name"] != "CHECKED")
    );
}

// 9. Fields that try to overwrite each host-owned key.
#[test]
fn fields_cannot_overwrite_host_owned_keys() {
    let keys = [
        "run_id",
        "source",
        "source_id",
        "testplan",
        "time",
        "plugin",
        "telemetry_type",
        "telemetry_name",
    ];
    let run = misbehave("forge-host-keys", "");
    assert_rejections(&run, "host_owned_key", keys.len() as u64);
    // Each key was refused by name, on each worker.
    let mut refused: Vec<String> = run
        .dead_letters
        .iter()
        .map(|line| line["reason"].as_str().unwrap().to_owned())
        .collect();
    refused.sort();
    let mut expected: Vec<String> = keys
        .iter()
        .flat_map(|key| {
            let reason =
                format!("field `{key}` is owned by the host and cannot be set by a plugin");
            [reason.clone(), reason]
        })
        .collect();
    expected.sort();
    assert_eq!(refused, expected);
    // No line anywhere carries a forged value.
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(!stdout.contains("forged"), "{stdout}");
    for line in &run.lines {
        let telemetry = &line["telemetry"];
        assert_eq!(telemetry["run_id"], "r");
        assert_eq!(telemetry["testplan"], "t");
        assert!(["worker", "standalone"].contains(&telemetry["source"].as_str().unwrap()));
        assert!(
            ["request-stats", "misbehave", "swarmtel"]
                .contains(&telemetry["plugin"].as_str().unwrap())
        );
    }
}

// 10. A panic.
#[test]
fn a_panic_is_a_trap() {
    let run = misbehave("panic-on-request", "max_faults = 1");
    assert_faults(&run, "trap", 1);
}

// 10. A wasm `unreachable`.
#[test]
fn a_wasm_unreachable_is_a_trap() {
    let run = misbehave("unreachable-on-request", "max_faults = 1");
    assert_faults(&run, "trap", 1);
}

// A fault's message is what an operator reads first; it should name what happened.
#[test]
fn a_fault_message_names_its_cause() {
    let run = misbehave("unreachable-on-request", "max_faults = 1");
    for fault in self_telemetry(&run.lines, "PLUGIN_FAULT") {
        let message = fault["telemetry"]["fault_message"].as_str().unwrap();
        assert!(message.contains("unreachable"), "{message}");
    }
}

// 11. Files: every attempt fails inside the guest, nothing is created on the host.
#[test]
fn a_guest_cannot_open_read_or_write_files() {
    let nonce = nonce();
    let tmp = format!("/tmp/swarmtel-hostile-{nonce}");
    let cwd = tempfile::tempdir().unwrap();
    let cwd_path = cwd.path().to_owned();
    let run = misbehave_with("fs-probe", &format!("count = {nonce}"), "", |command| {
        command.current_dir(&cwd_path);
    });
    assert_still_running(&run);
    for probe in probes(&run, "FS_PROBE") {
        for key in [
            "read_dir_root",
            "read_etc_passwd",
            "write_relative",
            "write_tmp",
            "create_dir_tmp",
            "open_dot",
        ] {
            let result = probe[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key}: {probe}"));
            assert!(result.starts_with("err: "), "{key} was allowed: {result}");
        }
    }
    assert!(!std::path::Path::new(&tmp).exists(), "{tmp} was created");
    assert!(!std::path::Path::new(&format!("{tmp}-dir")).exists());
    assert!(!cwd.path().join("x").exists(), "./x was created");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
}

// 12. Environment variables and arguments.
#[test]
fn a_guest_sees_no_environment_or_arguments() {
    let run = misbehave_with("env-probe", "", "", |command| {
        command
            .env("SWARMTEL_HOSTILE_PROBE", "leaked")
            .env("HOME", "/home/leaked");
    });
    assert_still_running(&run);
    for probe in probes(&run, "ENV_PROBE") {
        assert_eq!(probe["vars"], 0, "{probe}");
        assert_eq!(probe["args"], 0, "{probe}");
        assert_eq!(probe["probe_var"], "Err(NotPresent)");
        assert_eq!(probe["home"], "Err(NotPresent)");
    }
    assert!(!String::from_utf8_lossy(&run.stdout).contains("leaked"));
}

// 13. Sockets and name lookup.
#[test]
fn a_guest_cannot_open_sockets_or_resolve_names() {
    // A TCP listener and a UDP socket on the same port, both waiting for the guest.
    let (listener, udp) = (0..20)
        .find_map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).ok()?;
            Some((listener, udp))
        })
        .expect("a port free for both TCP and UDP");
    let port = listener.local_addr().unwrap().port();
    let run = misbehave_with("net-probe", &format!("count = {port}"), "", |_| {});
    assert_still_running(&run);
    for probe in probes(&run, "NET_PROBE") {
        for key in [
            "tcp_connect",
            "tcp_connect_timeout",
            "tcp_listen",
            "udp_bind",
            "udp_send",
            "resolve_localhost",
        ] {
            let result = probe[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key}: {probe}"));
            assert!(result.starts_with("err: "), "{key} was allowed: {result}");
        }
    }
    listener.set_nonblocking(true).unwrap();
    let accepted = listener.accept();
    assert_eq!(
        accepted.map(|(_, peer)| peer).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the guest reached the listener"
    );
    udp.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 64];
    assert_eq!(
        udp.recv_from(&mut buffer).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the guest's datagram arrived"
    );
}

// 14. Endless writes to stdout and stderr.
#[test]
fn stdout_and_stderr_floods_stay_inside_the_sandbox() {
    // Deliberately generous CPU: this test is about stdio, not the deadline.
    let run = misbehave("stdio-flood", "stdio_bytes = 4096\ncpu_ms_per_call = 5000");
    assert_still_running(&run);
    // Floods at test start and in every request batch; nothing failed inside the guest.
    let calls = 1 + BATCHES_PER_WORKER;
    let flood_bytes: u64 = 5 * 1024 * 1024;
    for report in probes(&run, "STDIO_FLOOD") {
        assert_eq!(report["calls"], calls, "{report}");
        assert_eq!(report["bytes_written"], calls * 2 * flood_bytes, "{report}");
        assert_eq!(report["first_error"], Value::Null, "{report}");
    }
    // None of it reached the telemetry output (stdout parsed as JSON lines already). The
    // runtime's stderr shows it as the plugin's diagnostics, but only the first
    // `stdio_bytes` of each instance; the rest is dropped and counted exactly.
    assert!(!String::from_utf8_lossy(&run.stdout).contains("HOSTILE-STDIO-FLOOD"));
    let shown: usize = run
        .stderr
        .lines()
        .filter_map(|line| line.strip_prefix("[plugin misbehave on "))
        .map(|rest| rest.split_once("] ").map_or(0, |(_, text)| text.len()))
        .sum();
    assert!(shown > 0, "the first bytes are shown as diagnostics");
    assert!(
        shown <= WORKERS.len() * 4096,
        "at most stdio_bytes per instance: {shown}"
    );
    let summary = plugin_summary(&run.lines, "misbehave");
    assert_eq!(
        summary["stdio_dropped_bytes"],
        WORKERS.len() as u64 * (calls * 2 * flood_bytes - 4096)
    );
    // And the host kept at most `stdio_bytes` of it: the run's peak memory is far below what
    // keeping it would take.
    let written_kib = WORKERS.len() as u64 * calls * 2 * flood_bytes / 1024;
    let (_, alone_kib) = *healthy_alone();
    assert!(
        run.peak_rss_kib > 0 && run.peak_rss_kib < alone_kib + written_kib / 2,
        "peak {} KiB; alone {} KiB; the guest wrote {} KiB",
        run.peak_rss_kib,
        alone_kib,
        written_kib
    );
}

// 16. Trapping on every call: disabled after max_faults, not restarted forever.
#[test]
fn a_guest_that_always_traps_ends_disabled() {
    let run = misbehave("panic-on-request", "max_faults = 3");
    // More request batches than max_faults: restarting forever would fault more often.
    const { assert!(BATCHES_PER_WORKER > 3) };
    assert_faults(&run, "trap", 3);
    let summary = plugin_summary(&run.lines, "misbehave");
    // Only test_start was handled; every request and test_stop was lost.
    assert_eq!(summary["events_in"], 2);
    assert_eq!(summary["events_lost"], EVENTS_PER_WORKER * 2 - 2);
}

/// The control: the misbehave guest in `healthy` mode changes nothing and reports nothing.
#[test]
fn a_healthy_guest_beside_is_not_reported() {
    let run = misbehave("healthy", "");
    assert_still_running(&run);
    assert!(run.dead_letters.is_empty());
    for name in ["PLUGIN_FAULT", "PLUGIN_DISABLED", "TELEMETRY_REJECTED"] {
        assert!(self_telemetry(&run.lines, name).is_empty(), "{name}");
    }
    let row = stderr_row(&run.stderr, "misbehave");
    assert!(row.details.is_empty(), "{:?}", row.details);
    assert_eq!(row.get("events_in"), EVENTS_PER_WORKER * 2);
    assert_eq!(row.get("telemetry"), 2);
}

// 17. Unusable plugin files: the config is refused as a whole, naming the file.
#[test]
fn a_config_with_an_unusable_plugin_file_is_refused() {
    let workspace = Workspace::new();
    let stats = std::fs::read(guest("request_stats")).unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let bad_files = [
        workspace.write("core-module.wasm", b"\0asm\x01\0\0\0"),
        workspace.write("truncated.wasm", &stats[..stats.len() / 2]),
        workspace.write("random-bytes.wasm", noise),
        workspace.write("text.wasm", "this is not webassembly\n"),
        guest("other_version"),
    ];
    for bad in bad_files {
        let config = workspace.write(
            "swarmtel.toml",
            format!(
                "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {}\n[[plugins]]\npath = {}\n",
                toml_path(&guest("request_stats")),
                toml_path(&bad)
            ),
        );
        let started = std::time::Instant::now();
        let output = replay(&config, side_by_side_stream(), &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{}: {stderr}", bad.display());
        let name = bad.file_name().unwrap().to_str().unwrap();
        assert!(stderr.contains(name), "{name} not named: {stderr}");
        // Refused before any event was processed.
        assert!(output.stdout.is_empty(), "{name}");
        assert!(!stderr.contains("events,"), "{name}: {stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{name}"
        );
    }
}

// 15. A slow but legal guest: every call takes a good share of its deadline, yet the same
// plugin's instance on another node is served meanwhile, not after it.
#[test]
fn a_slow_guest_does_not_hold_up_other_recorders() {
    let workspace = Workspace::new();
    let config = workspace.write(
        "swarmtel.toml",
        format!(
            "[run]\ntestplan = \"t\"\nrun_id = \"r\"\nbatch_size = 100\n\
             [[plugins]]\npath = {}\n\
             [plugins.options]\nmode = \"slow-on-worker-0\"\nspin = 1000000000\n\
             [plugins.capabilities]\nwall_clock = true\n\
             [plugins.limits]\ncpu_ms_per_call = 2000\n",
            toml_path(&guest("lifecycle"))
        ),
    );
    let mut events = String::new();
    let start = 1_700_000_000.0;
    for worker in 0..2 {
        events.push_str(&format!(
            "{{\"event\":\"test_start\",\"role\":\"worker\",\"node\":\"worker-{worker}\",\"time\":{start}}}\n"
        ));
    }
    for index in 0..2_000 {
        events.push_str(&format!(
            "{{\"event\":\"request\",\"role\":\"worker\",\"node\":\"worker-{}\",\"time\":{},\"request_type\":\"GET\",\"name\":\"/\",\"response_time\":1}}\n",
            index % 2,
            start + f64::from(index) / 1_000.0
        ));
    }
    for worker in 0..2 {
        events.push_str(&format!(
            "{{\"event\":\"test_stop\",\"role\":\"worker\",\"node\":\"worker-{worker}\",\"time\":{}}}\n",
            start + 3.0
        ));
    }
    let output = replay(&config, events.as_bytes(), &[]);
    assert!(output.status.success());
    let lines = json_lines(&output.stdout);
    assert!(
        self_telemetry(&lines, "PLUGIN_FAULT").is_empty(),
        "the slow guest stays within its deadline"
    );
    let calls = |node: &str| -> Vec<(f64, f64)> {
        let line = from_plugin(&lines, "lifecycle")
            .into_iter()
            .find(|l| {
                l["telemetry"]["telemetry_name"] == "CALLS" && l["telemetry"]["source_id"] == node
            })
            .unwrap_or_else(|| panic!("no CALLS from {node}"));
        serde_json::from_value(line["telemetry"]["calls"].clone()).unwrap()
    };
    let (slow, quick) = (calls("worker-0"), calls("worker-1"));
    assert_eq!(
        (slow.len(), quick.len()),
        (10, 10),
        "every batch was delivered"
    );
    assert!(
        slow.iter().all(|(begin, end)| end - begin > 0.02),
        "worker-0's calls are slow: {slow:?}"
    );
    // Served while the slow one was busy: some quick call lies inside a slow call. One after
    // the other on a single thread, no call could.
    let overlapped = quick.iter().any(|(quick_begin, quick_end)| {
        slow.iter()
            .any(|(slow_begin, slow_end)| slow_begin < quick_begin && quick_end < slow_end)
    });
    assert!(overlapped, "slow {slow:?}\nquick {quick:?}");
}

// ---------------------------------------------------------------------------------------
// Work the host does on a plugin's behalf: reading the environment, amplified descriptions,
// schemas, text it prints or records, and memory for results. Each hostile plugin runs beside
// request-stats, whose output must not change, and the limit that acted is named in stderr,
// the summary and self-telemetry.

/// Runs `guest` beside request-stats and checks it was refused at load with `kind` (in
/// stderr, the summary and a `PLUGIN_DISABLED` record whose message contains `message`).
fn refused_at_load(
    guest: &str,
    plugin_toml: &str,
    customize: impl FnOnce(&mut Command),
    kind: &str,
    message: &str,
) -> Beside {
    let run = beside(guest, plugin_toml, customize);
    assert_healthy_output_unchanged(&healthy_alone().0, &run.lines);
    let refused = self_telemetry(&run.lines, "PLUGIN_DISABLED");
    assert_eq!(refused.len(), 1, "{}", run.stderr);
    assert_eq!(
        refused[0]["telemetry"]["fault_kind"], kind,
        "{}",
        run.stderr
    );
    let recorded = refused[0]["telemetry"]["fault_message"].as_str().unwrap();
    assert!(recorded.contains(message), "{recorded}");
    assert!(
        run.stderr.contains(message) && run.stderr.contains("the run goes on without it"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.lines().any(|line| line.starts_with("plugin ")
            && line.contains("not loaded")
            && line.contains(message)),
        "summary: {}",
        run.stderr
    );
    run
}

/// `swarmtel check` on a config listing `guest` (with `plugin_toml`): exits 1 and names
/// `message`, the same verdict replay and serve reach.
fn check_refuses(guest: &str, plugin_toml: &str, message: &str) -> String {
    let workspace = Workspace::new();
    let config = workspace.write(
        "check.toml",
        format!(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {}\n{plugin_toml}\n",
            toml_path(&guest_path(guest))
        ),
    );
    let output = swarmtel()
        .args(["check", "--config"])
        .arg(&config)
        .env("SWARMTEL_TOKEN", "tok-secret-1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stderr.contains(message), "{stderr}");
    stderr
}

fn guest_path(name: &str) -> std::path::PathBuf {
    guest(name)
}

// H1. Secrets through option env vars.
#[test]
fn a_plugin_naming_a_secret_env_var_is_refused_and_never_sees_it() {
    let secrets = [
        ("SWARMTEL_TOKEN", "tok-secret-1"),
        ("LOCUST_SWARMTEL_TOKEN", "tok-secret-2"),
        ("LOCUST_WEB_AUTH", "user:pw-secret-3"),
    ];
    let run = refused_at_load(
        "secret_thief",
        "",
        |command| {
            for (var, value) in secrets {
                command.env(var, value);
            }
        },
        "secret_env_var",
        "option `loot-0` names env var `SWARMTEL_TOKEN`, which holds a secret",
    );
    let stderr = check_refuses("secret_thief", "", "which holds a secret");
    for (_, value) in secrets {
        let secret = value;
        for text in [
            String::from_utf8_lossy(&run.stdout).into_owned(),
            run.stderr.clone(),
            stderr.clone(),
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}

// H2. `describe` amplification: 100,000 recorders and options.
#[test]
fn a_description_past_its_host_memory_cap_is_refused_before_it_is_copied() {
    // Memory for the guest to build it; the host still refuses to copy it.
    let run = refused_at_load(
        "describe_flood",
        "[plugins.limits]\nmemory_mib = 1024\ncpu_ms_per_call = 20000",
        |_| {},
        "description_bytes",
        "over the cap `description_bytes` (1048576)",
    );
    // The host never started a thread per recorder: the pool and a handful of its own.
    assert!(run.peak_threads <= 24, "{} threads", run.peak_threads);
}

#[test]
fn threads_stay_bounded_whatever_the_recorders_times_nodes() {
    // 300 workers: 300 request-stats instances (and the misbehave guest's 300).
    let stream = swarmtel::sources::synthetic::request_stream(300, 3_000);
    let workspace = Workspace::new();
    let config = workspace.write(
        "many.toml",
        format!(
            "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {}\n[[plugins]]\npath = {}\n",
            toml_path(&guest("request_stats")),
            toml_path(&guest("misbehave")),
        ),
    );
    let run = replay_with(&config, &stream, |_| {});
    assert!(run.output.status.success());
    let lines = json_lines(&run.output.stdout);
    let finals = from_plugin(&lines, "request-stats")
        .into_iter()
        .filter(|line| line["telemetry"]["final"] == true)
        .map(|line| line["telemetry"]["source_id"].to_string())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(finals.len(), 300, "every node's recorder ran");
    // main, the line reader, the epoch ticker, the pool, and wasmtime's compile threads (one
    // per core) if a plugin was not in the tests' compile cache yet.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let bound = 3 + swarmtel::pipeline::recorder_task::default_pool_threads() + cores;
    assert!(
        run.peak_threads <= bound as u64,
        "{} threads for 600 recorder instances (bound {bound})",
        run.peak_threads
    );
}

// H3. JSON Schema as a weapon.
#[test]
fn a_ref_chain_schema_is_refused_at_load_with_the_same_verdict_everywhere() {
    refused_at_load(
        "schema_ref_chain",
        "",
        |_| {},
        "schema",
        "cap `schema_refs`",
    );
    check_refuses("schema_ref_chain", "", "cap `schema_refs`");
}

#[test]
fn a_backtracking_pattern_is_refused_at_load() {
    let run = refused_at_load("schema_regex", "", |_| {}, "schema", "schema for `MATCHED`");
    assert!(run.stderr.contains(r#"is not a "regex""#), "{}", run.stderr);
    check_refuses("schema_regex", "", "schema for `MATCHED`");
}

#[test]
fn a_required_plugin_with_an_unusable_schema_fails_the_run() {
    let run = replay_with(
        &Workspace::new().write(
            "required.toml",
            format!(
                "[run]\ntestplan = \"t\"\n[[plugins]]\npath = {}\nrequired = true\n",
                toml_path(&guest("schema_ref_chain"))
            ),
        ),
        b"",
        |_| {},
    );
    assert_eq!(run.output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert!(stderr.contains("cap `schema_refs`"), "{stderr}");
}

// H3b. Telemetry that is costly to validate: each call's validation stops at the plugin's
// `cpu_ms_per_call`, the rest of its items rejected, and after `max_faults` such calls the
// recorder is disabled, so a plugin cannot keep the pipeline thread busy validating.
#[test]
fn validation_past_the_calls_budget_is_cut_and_then_disables_the_recorder() {
    let run = beside(
        "schema_heavy",
        "[plugins.limits]\ncpu_ms_per_call = 10\n",
        |_| {},
    );
    assert_healthy_output_unchanged(&healthy_alone().0, &run.lines);
    let disabled = self_telemetry(&run.lines, "PLUGIN_DISABLED");
    assert_eq!(disabled.len(), 2, "one per worker: {}", run.stderr);
    for line in &disabled {
        assert_eq!(line["telemetry"]["fault_kind"], "validation_budget");
        assert_eq!(line["telemetry"]["calls_over_budget"], 5);
    }
    assert!(
        run.stderr
            .contains("disabled: 5 calls used up their validation time (10 ms, cpu_ms_per_call)"),
        "{}",
        run.stderr
    );
    // Every dead letter is an item past a call's budget: at least one in each of the 5 calls
    // per worker (how many items fit in 10 ms depends on the machine).
    assert!(run.dead_letters.len() >= 10, "{}", run.dead_letters.len());
    assert!(
        run.dead_letters
            .iter()
            .all(|line| line["reason_kind"] == "validation_budget"),
        "{:?}",
        run.dead_letters
    );
    let summary = plugin_summary(&run.lines, "schema-heavy");
    assert_eq!(summary["disabled"], 2);
    // Batches after disabling never reached it, and are counted.
    assert!(summary["events_lost"].as_u64().unwrap() > 0);
}

// H4. Guest text on a terminal.
#[test]
fn escape_sequences_in_a_description_never_reach_the_terminal() {
    let raw = |text: &[u8]| {
        text.iter().any(|b| matches!(b, 0x1b | 0x07 | 0x00 | b'\r'))
            || String::from_utf8_lossy(text).contains('\u{9b}')
    };
    let run = refused_at_load(
        "text_escape",
        "",
        |_| {},
        "invalid_description",
        "version `1.0",
    );
    assert!(!raw(run.stderr.as_bytes()), "{:?}", run.stderr);
    assert!(!raw(&run.stdout));
    assert!(run.stderr.contains("\\u{1b}]0;pwned"), "{}", run.stderr);
    for json in [false, true] {
        let mut command = swarmtel();
        command
            .args(["plugin", "inspect"])
            .arg(guest("text_escape"));
        if json {
            command.arg("--json");
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(if json { 0 } else { 1 }));
        assert!(
            !raw(&output.stdout),
            "{:?}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(!raw(&output.stderr));
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("pwned"), "{text}");
        if json {
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                value["version"],
                format!("1.0{}", "\u{1b}[2J\u{1b}]0;pwned\u{7}\r\u{9b}31m\0")
            );
            assert!(value["problem"].as_str().unwrap().contains("version"));
        } else {
            assert!(text.contains("problem: "), "{text}");
        }
    }
}

// H4b. Guest text in telemetry and dead letters: valid JSON, and no raw control character
// on the terminal that shows the lines (the README's main command prints them).
#[test]
fn escape_sequences_in_telemetry_are_escaped_in_every_output() {
    let run = misbehave("escape-telemetry", "");
    let raw = |text: &[u8]| {
        let text = String::from_utf8_lossy(text);
        text.chars().any(|c| c.is_control() && c != '\n')
    };
    assert!(
        !raw(&run.stdout),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    let dead = std::fs::read(run.workspace.path("rejected.jsonl")).unwrap();
    assert!(!raw(&dead), "{}", String::from_utf8_lossy(&dead));
    let checked: Vec<&Value> = from_plugin(&run.lines, "misbehave")
        .into_iter()
        .filter(|line| line["telemetry"]["telemetry_name"] == "CHECKED")
        .collect();
    assert_eq!(checked.len(), 2, "one per worker");
    assert_eq!(
        checked[0]["telemetry"]["note"], "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{7f}",
        "the value itself is kept"
    );
    assert_eq!(run.dead_letters.len(), 2);
}

// H5. Guest text in the runtime's own records: refusals of 1 MB and 10 MB full of escapes.
#[test]
fn a_huge_refusal_is_capped_in_faults_self_telemetry_and_stderr() {
    // 10 MB is more than a call may hand back: refused before it is copied.
    let run = misbehave_with("refuse-escape", "count = 10", "", |_| {});
    assert_eq!(fault_kinds(&run.lines), ["results_too_large"; 10]);
    assert!(
        run.stderr.len() < 200_000,
        "{} bytes of stderr",
        run.stderr.len()
    );
    // 1 MB is copied, then escaped and capped once, wherever it is shown.
    let run = misbehave("refuse-escape", "");
    let faults = self_telemetry(&run.lines, "PLUGIN_FAULT");
    assert_eq!(faults.len(), 10, "5 faults per worker, then disabled");
    for fault in &faults {
        assert_eq!(fault["telemetry"]["fault_kind"], "refused");
        let message = fault["telemetry"]["fault_message"].as_str().unwrap();
        assert!(message.len() < 8_192, "{} bytes", message.len());
        assert!(!message.contains('\u{1b}'));
        assert!(message.ends_with("more bytes)"), "{message}");
        assert!(fault.to_string().len() < 16_384);
    }
    assert!(
        run.stdout.len() < 1_000_000,
        "{} bytes of telemetry",
        run.stdout.len()
    );
    assert!(
        run.stderr.len() < 200_000,
        "{} bytes of stderr",
        run.stderr.len()
    );
    assert!(!run.stderr.contains('\u{1b}'));
}

// H6. Host memory amplified by returned lists.
#[test]
fn results_past_the_host_memory_bound_are_refused_before_they_are_copied() {
    for mode in ["alias-flood", "flood-items"] {
        let run = misbehave(mode, "cpu_ms_per_call = 5000");
        assert_eq!(
            fault_kinds(&run.lines),
            ["results_too_large"; 2],
            "{mode}: {}",
            run.stderr
        );
        let fault = &self_telemetry(&run.lines, "PLUGIN_FAULT")[0]["telemetry"];
        assert_eq!(
            fault["fault_message"],
            "the call's results need more than the 1432576 bytes of host memory a call may take"
        );
        let row = stderr_row(&run.stderr, "misbehave");
        assert_eq!(row.details, ["fault results_too_large: 2"], "{mode}");
        // 1,200 strings of 100 KB would be 120 MB per worker if copied.
        let growth_kib = run.peak_rss_kib.saturating_sub(healthy_alone().1);
        assert!(
            growth_kib < 64 * 1024,
            "{mode}: the hostile plugin cost {growth_kib} KiB"
        );
    }
}

// Bad metric points are rejected one by one, each counted under its reason and reported,
// while the plugin's valid point and the healthy plugin beside it lose nothing.
#[test]
fn bad_metric_points_are_rejected_by_reason_and_nothing_else_is_lost() {
    let run = beside(
        "metrics_maker",
        "[plugins.options]\nmode = \"bad\"\n",
        |_| {},
    );
    // Two workers start the test: each reports the bad points once.
    for line in [
        "rejected metric_invalid: 18",
        "rejected metric_kind_mismatch: 2",
    ] {
        assert!(run.stderr.contains(line), "{line}: {}", run.stderr);
    }
    let reports = self_telemetry(&run.lines, "METRICS_REJECTED");
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0]["telemetry"]["rejected"], 10);
    assert_eq!(reports[0]["telemetry"]["reason"], "metric_invalid");
    assert!(
        reports[0]["message"]
            .as_str()
            .unwrap()
            .contains("metric \"Maker-Bad\""),
        "{}",
        reports[0]["message"]
    );
    assert_healthy_output_unchanged(&healthy_alone().0, &run.lines);
}

// A plugin that makes a new series per point stops at `max_metric_series`; one that sends
// more points per call than `max_points_per_call` loses the rest; both are counted.
#[test]
fn metric_series_and_points_per_call_are_capped() {
    let run = beside(
        "metrics_maker",
        "[plugins.options]\nmode = \"series-flood\"\ncount = 5000\n\
         [plugins.limits]\nmax_points_per_call = 10000\nmax_metric_series = 1000\n",
        |_| {},
    );
    // Worker 0 creates 1,000 series and is refused 4,000; worker 1 reuses those 1,000.
    assert!(
        run.stderr.contains("rejected metric_series_cap: 8000"),
        "{}",
        run.stderr
    );
    assert_healthy_output_unchanged(&healthy_alone().0, &run.lines);
    let run = beside(
        "metrics_maker",
        "[plugins.options]\nmode = \"call-flood\"\ncount = 5000\n\
         [plugins.limits]\nmax_metric_series = 10000\n",
        |_| {},
    );
    assert!(
        run.stderr.contains("rejected metric_call_cap: 8000"),
        "{}",
        run.stderr
    );
}

// A metric point too big for the call's result budget faults the call before the host copies
// it; the recorder restarts and the healthy plugin loses nothing.
#[test]
fn a_huge_metric_point_is_refused_before_it_is_copied() {
    let run = beside(
        "metrics_maker",
        "[plugins.options]\nmode = \"huge-point\"\ncount = 3\n",
        |_| {},
    );
    assert!(
        run.stderr.contains("fault results_too_large: 2"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("maker.huge"), "{}", run.stderr);
    assert_healthy_output_unchanged(&healthy_alone().0, &run.lines);
}
