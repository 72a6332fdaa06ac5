//! The plugin against Locust's own numbers and locust-telemetry's own cadence.

use serde_json::{Value, json};
use swarmtel_guest::testing::{Harness, MetricValue};
use swarmtel_guest::{
    EndpointStats, ErrorStats, Event, OptionValue, Options, ProcessSample, Role, StatsSnapshot,
    TelemetryType,
};

use super::*;

/// `locust.util.rounding.proper_round` as CPython 3.11 computed it (Locust 2.47).
const PROPER_ROUND: &str = "[[0.5, 1.0], [1.5, 2.0], [2.5, 3.0], [12.5, 13.0], [145.0, 145.0], [145.5, 146.0], [0.0001, 0.0], [1e-05, 0.0], [123456.5, 123457.0], [99.99999, 100.0], [0.0, 0.0], [1.0, 1.0], [2.4999999, 2.0], [1234.5678, 1235.0], [1e+16, 1e+16], [3.5e-07, 0.0], [0.49999999999999994, 0.0], [7.5, 8.0], [1000000.5, 1000001.0]]";

#[test]
fn proper_round_is_locusts_to_the_last_tie() {
    let table: Vec<(f64, f64)> = serde_json::from_str(PROPER_ROUND).unwrap();
    for (value, expected) in table {
        assert_eq!(proper_round(value), expected, "proper_round({value})");
    }
    // str(float) lengths: fixed and scientific notation.
    for (value, python) in [
        (12.0, "12.0"),
        (0.0001, "0.0001"),
        (1e-5, "1e-05"),
        (1e16, "1e+16"),
        (1.5e-7, "1.5e-07"),
        (-2.5, "-2.5"),
    ] {
        assert_eq!(python_float_repr_len(value), python.len(), "{value}");
    }
}

/// Each pair: the bridge's `stats_entry(entry)` (our input) and Locust's own
/// `entry.to_dict()` with locust-telemetry's `add_percentiles` (the expected row), printed by
/// a script over a real `locust.stats.RequestStats` (Locust 2.47): 21 GET /items with times
/// 12.5, 145, 147.3, 3432, 58760, 0.4 and 99.5 ms, one failed POST /orders of 1.5 ms, the
/// total's start and last request times set 12.5 s apart.
const ENTRIES: [(&str, &str); 3] = [
    (
        r#"{"request_type": "GET", "name": "/items", "num_requests": 21, "num_failures": 0, "total_response_time": 187790.1, "min_response_time": 0.4, "max_response_time": 58760.0, "total_content_length": 1110, "response_times": [[0.0, 3], [12.0, 3], [100.0, 3], [140.0, 3], [150.0, 3], [3400.0, 3], [59000.0, 3]], "current_rps": 0.0, "current_fail_per_sec": 0.0, "start_time": 1796184296.776765, "last_request_timestamp": 1796184296.7768574}"#,
        r#"{"method": "GET", "name": "/items", "num_requests": 21, "num_failures": 0, "min_response_time": 0.0, "max_response_time": 58760.0, "current_rps": 0.0, "current_fail_per_sec": 0.0, "avg_response_time": 8942.385714285714, "median_response_time": 140, "total_rps": 1.68, "total_fail_per_sec": 0.0, "avg_content_length": 52.857142857142854, "percentile_95": 59000, "percentile_99": 59000}"#,
    ),
    (
        r#"{"request_type": "POST", "name": "/orders", "num_requests": 1, "num_failures": 1, "total_response_time": 1.5, "min_response_time": 1.5, "max_response_time": 1.5, "total_content_length": 10, "response_times": [[2.0, 1]], "current_rps": 0.0, "current_fail_per_sec": 0.0, "start_time": 1796184296.7768633, "last_request_timestamp": 1796184296.7768686}"#,
        r#"{"method": "POST", "name": "/orders", "num_requests": 1, "num_failures": 1, "min_response_time": 2.0, "max_response_time": 2.0, "current_rps": 0.0, "current_fail_per_sec": 0.0, "avg_response_time": 1.5, "median_response_time": 1.5, "total_rps": 0.08, "total_fail_per_sec": 0.08, "avg_content_length": 10.0, "percentile_95": 2, "percentile_99": 2}"#,
    ),
    (
        r#"{"request_type": "", "name": "Aggregated", "num_requests": 22, "num_failures": 1, "total_response_time": 187791.6, "min_response_time": 0.4, "max_response_time": 58760.0, "total_content_length": 1120, "response_times": [[0.0, 3], [2.0, 1], [12.0, 3], [100.0, 3], [140.0, 3], [150.0, 3], [3400.0, 3], [59000.0, 3]], "current_rps": 0.0, "current_fail_per_sec": 0.0, "start_time": 1700000000.25, "last_request_timestamp": 1700000012.75}"#,
        r#"{"method": "", "name": "Aggregated", "num_requests": 22, "num_failures": 1, "min_response_time": 0.0, "max_response_time": 58760.0, "current_rps": 0.0, "current_fail_per_sec": 0.0, "avg_response_time": 8535.98181818182, "median_response_time": 140, "total_rps": 1.76, "total_fail_per_sec": 0.08, "avg_content_length": 50.90909090909091, "percentile_95": 59000, "percentile_99": 59000}"#,
    ),
];

/// The bridge's JSON entry as the contract's record.
fn endpoint_stats(bridge: &Value) -> EndpointStats {
    EndpointStats {
        request_type: bridge["request_type"].as_str().unwrap().into(),
        name: bridge["name"].as_str().unwrap().into(),
        num_requests: bridge["num_requests"].as_u64().unwrap(),
        num_failures: bridge["num_failures"].as_u64().unwrap(),
        total_response_time_ms: bridge["total_response_time"].as_f64().unwrap(),
        min_response_time_ms: bridge["min_response_time"].as_f64().unwrap(),
        max_response_time_ms: bridge["max_response_time"].as_f64().unwrap(),
        total_content_length: bridge["total_content_length"].as_u64().unwrap(),
        response_times: serde_json::from_value(bridge["response_times"].clone()).unwrap(),
        current_rps: bridge["current_rps"].as_f64().unwrap(),
        current_fail_per_sec: bridge["current_fail_per_sec"].as_f64().unwrap(),
        start_time: bridge["start_time"].as_f64(),
        last_request_time: bridge["last_request_timestamp"].as_f64(),
    }
}

fn snapshot(user_count: u32) -> StatsSnapshot {
    let entries: Vec<EndpointStats> = ENTRIES
        .iter()
        .map(|(input, _)| endpoint_stats(&serde_json::from_str(input).unwrap()))
        .collect();
    StatsSnapshot {
        user_count,
        total: entries[2].clone(),
        entries: entries[..2].to_vec(),
        errors: vec![ErrorStats {
            request_type: "POST".into(),
            name: "/orders".into(),
            error: "boom".into(),
            occurrences: 1,
            first_seen: Some(1_700_000_005.5),
            last_seen: None,
        }],
    }
}

#[test]
fn stats_rows_are_locusts_to_dict_values_and_types() {
    let snapshot = snapshot(3);
    let clock = stats_row::StatsClock::of(&snapshot.total);
    for (index, (_, expected)) in ENTRIES.iter().enumerate() {
        let entry = if index < 2 {
            &snapshot.entries[index]
        } else {
            &snapshot.total
        };
        let ours = Value::Object(entry_fields(entry, clock));
        let theirs: Value = serde_json::from_str(expected).unwrap();
        // Equal as JSON text per field, so 140 (int) and 140.0 (float) differ.
        for (key, value) in theirs.as_object().unwrap() {
            assert_eq!(
                ours[key].to_string(),
                value.to_string(),
                "{} {key}",
                entry.name
            );
        }
        assert_eq!(
            ours.as_object().unwrap().len(),
            theirs.as_object().unwrap().len()
        );
    }
}

#[test]
fn before_any_request_the_rates_are_locusts_int_zeros() {
    let empty = EndpointStats {
        request_type: "".into(),
        name: "Aggregated".into(),
        num_requests: 0,
        num_failures: 0,
        total_response_time_ms: 0.0,
        min_response_time_ms: 0.0,
        max_response_time_ms: 0.0,
        total_content_length: 0,
        response_times: vec![],
        current_rps: 0.0,
        current_fail_per_sec: 0.0,
        start_time: Some(1_700_000_000.0),
        last_request_time: None,
    };
    let row = Value::Object(entry_fields(&empty, stats_row::StatsClock::of(&empty)));
    // Locust 2.47's StatsEntry("Aggregated").to_dict() of a fresh RequestStats.
    let locust = json!({"method": "", "name": "Aggregated", "num_requests": 0, "num_failures": 0,
        "min_response_time": 0, "max_response_time": 0.0, "current_rps": 0, "current_fail_per_sec": 0,
        "avg_response_time": 0.0, "median_response_time": 0, "total_rps": 0.0, "total_fail_per_sec": 0.0,
        "avg_content_length": 0, "percentile_95": 0, "percentile_99": 0});
    assert_eq!(row.to_string(), locust.to_string());
}

fn options(interval: i64, recorders: &str) -> Options {
    Options::from_pairs([
        (INTERVAL_OPTION.to_owned(), OptionValue::Integer(interval)),
        (
            RECORDERS_OPTION.to_owned(),
            OptionValue::Text(recorders.to_owned()),
        ),
    ])
}

fn sample(cpu: f64) -> Event {
    Event::ProcessSample(ProcessSample {
        cpu_percent: cpu,
        memory_bytes: 3 * 1024 * 1024,
        network_sent_bytes: 1000,
        network_recv_bytes: 2000,
    })
}

fn names(items: &[swarmtel_guest::testing::TelemetryItem]) -> Vec<String> {
    items
        .iter()
        .map(|item| {
            match serde_json::from_str::<Value>(&item.fields)
                .ok()
                .and_then(|f| f.get("stats_type").cloned())
            {
                Some(kind) => format!("{}:{}", item.name, kind.as_str().unwrap()),
                None => item.name.clone(),
            }
        })
        .collect()
}

#[test]
fn the_master_records_locust_telemetrys_records_on_its_triggers() {
    let mut h = Harness::with_options::<LocustTelemetryPlugin>(
        "locust_telemetry",
        Role::Master,
        options(3, "json"),
    )
    .unwrap();
    let t0 = 1_700_000_000.0;
    let mut items = Vec::new();
    // Nothing before the test starts: no stats row, no system metric, no CPU warning.
    items.extend(h.event(t0 - 5.0, Event::StatsSnapshot(snapshot(0))));
    items.extend(h.event(t0 - 4.0, sample(1.0)));
    items.extend(h.event(t0 - 3.0, Event::CpuWarning(95.0)));
    assert!(items.is_empty(), "{:?}", names(&items));
    items.extend(h.event(t0, Event::TestStart));
    // The bridge's first snapshot and sample come right after test start, then every
    // interval (a little late, as timers are); samples every second are averaged.
    for (offset, cpu) in [
        (0.01, 10.0),
        (1.0, 20.0),
        (2.0, 30.0),
        (3.02, 40.0),
        (4.0, 50.0),
        (5.0, 60.0),
        (6.01, 70.0),
    ] {
        items.extend(h.event(t0 + offset, sample(cpu)));
    }
    for offset in [0.01, 3.02, 6.03] {
        items.extend(h.event(t0 + offset, Event::StatsSnapshot(snapshot(3))));
    }
    items.extend(h.event(t0 + 6.5, Event::SpawningComplete(3)));
    items.extend(h.event(t0 + 6.6, Event::CpuWarning(91.5)));
    items.extend(h.event(t0 + 7.0, Event::TestStop));
    items.extend(h.event(t0 + 7.05, Event::StatsSnapshot(snapshot(0))));
    // After the stop: nothing more.
    items.extend(h.event(t0 + 8.0, sample(1.0)));
    items.extend(h.event(t0 + 9.0, Event::StatsSnapshot(snapshot(0))));
    items.extend(h.finish());
    let system = |n: &str| -> Vec<String> { vec![n.into(); 1] };
    let mut expected = vec!["locust.tl.event.test.start".to_owned()];
    for _ in 0..3 {
        expected.extend(system(names::CPU));
        expected.extend(system(names::MEMORY));
        expected.extend(system(names::NETWORK));
        expected.extend(system(names::NETWORK));
    }
    expected.extend(vec!["locust.tl.request.metric.stats:current".to_owned(); 3]);
    expected.extend([
        names::SPAWN_COMPLETE.to_owned(),
        names::CPU_WARNING.to_owned(),
        names::TEST_STOP.to_owned(),
        "locust.tl.request.metric.stats:final".to_owned(),
        "locust.tl.request.metric.stats:endpoint".to_owned(),
        "locust.tl.request.metric.stats:endpoint".to_owned(),
        "locust.tl.request.metric.stats:endpoint".to_owned(),
    ]);
    assert_eq!(names(&items), expected);
    let fields: Vec<Value> = items
        .iter()
        .map(|i| serde_json::from_str(&i.fields).unwrap())
        .collect();
    // CPU: the first record is its own sample, the next ones average their interval's.
    let cpu: Vec<f64> = items
        .iter()
        .zip(&fields)
        .filter(|(i, _)| i.name == names::CPU)
        .map(|(_, f)| f["value"].as_f64().unwrap())
        .collect();
    assert_eq!(cpu, [10.0, 30.0, 60.0]);
    let first_mem = items.iter().position(|i| i.name == names::MEMORY).unwrap();
    assert_eq!(fields[first_mem], json!({"value": 3.0, "unit": "MiB"}));
    assert_eq!(
        fields[first_mem + 1],
        json!({"value": 1000, "unit": "MiB", "direction": "sent"})
    );
    assert_eq!(
        fields[first_mem + 2],
        json!({"value": 2000, "unit": "MiB", "direction": "recv"})
    );
    let stop = items
        .iter()
        .position(|i| i.name == names::TEST_STOP)
        .unwrap();
    assert_eq!(
        fields[stop],
        json!({"end_time": "2023-11-14T22:13:28.000Z"})
    );
    assert_eq!(items[stop].telemetry_type, TelemetryType::Event);
    assert_eq!(
        items[stop].message,
        "Recording telemetry event: locust.tl.event.test.stop"
    );
    assert_eq!(fields[stop - 2], json!({"user_count": 3}));
    assert_eq!(fields[stop - 1], json!({"value": 91.5, "unit": "percent"}));
    let final_row = &fields[stop + 1];
    // The snapshot the bridge takes in the test_stop handler, where 2.1.2 reads the count.
    assert_eq!(final_row["user_count"], 0);
    assert_eq!(final_row["num_requests"], 22);
    assert_eq!(items[stop + 1].telemetry_type, TelemetryType::Metric);
    assert_eq!(
        items[stop + 1].message,
        "Recording telemetry metrics: locust.tl.request.metric.stats"
    );
    // Errors first, then every endpoint as "success" (2.1.2 counts failing ones too).
    assert_eq!(
        fields[stop + 2],
        json!({"stats_type": "endpoint", "status": "error", "method": "POST", "name": "/orders",
        "error": "boom", "occurrences": 1, "first_seen": 1_700_000_005.5, "last_seen": null, "percentile_95": "", "percentile_99": ""})
    );
    assert_eq!(
        (
            fields[stop + 3]["status"].as_str(),
            fields[stop + 3]["name"].as_str()
        ),
        (Some("success"), Some("/items"))
    );
    assert_eq!(
        (
            fields[stop + 4]["status"].as_str(),
            fields[stop + 4]["name"].as_str()
        ),
        (Some("success"), Some("/orders"))
    );
}

#[test]
fn a_stream_that_ends_before_the_last_snapshot_still_gets_its_final_rows() {
    let mut h = Harness::with_options::<LocustTelemetryPlugin>(
        "locust_telemetry",
        Role::Standalone,
        options(3, "json"),
    )
    .unwrap();
    let mut items = h.event(10.0, Event::TestStart);
    items.extend(h.event(10.1, Event::StatsSnapshot(snapshot(2))));
    items.extend(h.event(11.0, Event::TestStop));
    items.extend(h.finish());
    assert_eq!(
        names(&items)[..4],
        [
            names::TEST_START.to_owned(),
            "locust.tl.request.metric.stats:current".to_owned(),
            names::TEST_STOP.to_owned(),
            "locust.tl.request.metric.stats:final".to_owned(),
        ]
    );
}

#[test]
fn a_worker_records_system_metrics_only() {
    let mut h = Harness::with_options::<LocustTelemetryPlugin>(
        "locust_telemetry",
        Role::Worker,
        options(3, "json"),
    )
    .unwrap();
    let mut items = h.event(1.0, Event::TestStart);
    items.extend(h.event(1.0, sample(5.0)));
    items.extend(h.event(2.0, Event::CpuWarning(99.0)));
    items.extend(h.event(2.5, Event::SpawningComplete(4)));
    items.extend(h.event(3.0, Event::TestStop));
    items.extend(h.finish());
    assert_eq!(
        names(&items),
        [names::CPU, names::MEMORY, names::NETWORK, names::NETWORK]
    );
}

#[test]
fn the_otel_recorder_reports_its_instruments_under_their_names() {
    let mut h = Harness::with_options::<LocustTelemetryPlugin>(
        "locust_telemetry",
        Role::Worker,
        options(3, "otel"),
    )
    .unwrap();
    assert!(h.event(1.0, Event::TestStart).is_empty());
    h.request("GET", "/items", 12.4, 10, None);
    h.request("GET", "/items", 147.0, 10, None);
    h.request("POST", "/items", 3.0, 10, None);
    h.request("GET", "/flaky", 2.0, 0, Some("boom"));
    assert!(h.flush().is_empty(), "otel alone logs no JSON records");
    assert!(h.event(2.0, sample(25.0)).is_empty());
    let points = h.take_metrics();
    let find = |name: &str, attribute: (&str, &str)| {
        points
            .iter()
            .find(|p| {
                p.name == name
                    && p.attributes.iter().any(|a| {
                        a.key == attribute.0
                            && matches!(&a.value, swarmtel_guest::AttributeValue::Text(t) if t == attribute.1)
                    })
            })
            .unwrap_or_else(|| panic!("no {name} {attribute:?} in {points:?}"))
    };
    let success = find(names::REQUEST_SUCCESS, ("endpoint", "/items"));
    let MetricValue::ResponseTimes(times) = &success.value else {
        panic!()
    };
    // GET and POST /items are one series by endpoint name and status code, as in 2.1.2.
    assert_eq!(times.buckets, [(3, 1), (12, 1), (150, 1)]);
    assert_eq!(success.unit, "ms");
    let error = find(names::REQUEST_ERROR, ("endpoint", "/flaky"));
    assert!(
        error
            .attributes
            .iter()
            .any(|a| a.key == "status_code"
                && a.value == swarmtel_guest::AttributeValue::Integer(500))
    );
    let cpu = find(names::CPU, ("source_id", "worker-0"));
    assert_eq!(cpu.value, MetricValue::Gauge(25.0));
    assert_eq!(
        find(names::NETWORK, ("direction", "recv")).value,
        MetricValue::Gauge(2000.0)
    );
    // Workers count no test events (the master does).
    assert!(points.iter().all(|p| p.name != names::TEST_EVENTS));
}

#[test]
fn the_master_counts_test_events_and_users_for_otel() {
    let mut h = Harness::with_options::<LocustTelemetryPlugin>(
        "locust_telemetry",
        Role::Master,
        options(3, "json,otel"),
    )
    .unwrap();
    h.event(1.0, Event::TestStart);
    h.event(1.1, Event::StatsSnapshot(snapshot(7)));
    h.event(2.0, Event::TestStop);
    let points = h.take_metrics();
    let events: Vec<&str> = points
        .iter()
        .filter(|p| p.name == names::TEST_EVENTS)
        .map(|p| match &p.attributes[0].value {
            swarmtel_guest::AttributeValue::Text(t) => t.as_str(),
            _ => "",
        })
        .collect();
    assert_eq!(events, [names::TEST_START, names::TEST_STOP]);
    assert!(
        points
            .iter()
            .any(|p| p.name == names::USER_COUNT && p.value == MetricValue::Gauge(7.0))
    );
}

#[test]
fn bad_options_are_refused_with_their_name() {
    for (interval, recorders, expected) in [
        (0, "json", "stats-recorder-interval must be 1 to 86400"),
        (86_401, "json", "stats-recorder-interval must be 1 to 86400"),
        (3, "json,prom", "unknown recorder `prom`"),
    ] {
        let error = Harness::with_options::<LocustTelemetryPlugin>(
            "locust_telemetry",
            Role::Master,
            options(interval, recorders),
        )
        .err()
        .unwrap();
        assert!(error.contains(expected), "{error}");
    }
    assert_eq!(
        rfc3339_millis(1_700_000_000.999_9),
        "2023-11-14T22:13:20.999Z"
    );
    assert_eq!(rfc3339_millis(951_782_400.0), "2000-02-29T00:00:00.000Z");
}

#[test]
fn a_lost_snapshot_after_a_stop_does_not_turn_the_next_tests_first_into_final_rows() {
    let mut h = Harness::with_options::<LocustTelemetryPlugin>(
        "locust_telemetry",
        Role::Master,
        options(3, "json"),
    )
    .unwrap();
    let mut items = h.event(10.0, Event::TestStart);
    items.extend(h.event(10.1, Event::StatsSnapshot(snapshot(2))));
    // Samples at the end of the first test, past its last record: not averaged into the next.
    items.extend(h.event(10.2, sample(1.0)));
    items.extend(h.event(11.0, sample(99.0)));
    items.extend(h.event(12.0, Event::TestStop));
    // The snapshot after the stop is lost; the next test starts.
    items.extend(h.event(20.0, Event::TestStart));
    items.extend(h.event(20.05, sample(7.0)));
    items.extend(h.event(20.1, Event::StatsSnapshot(snapshot(4))));
    let kinds = names(&items);
    let second_start = kinds.iter().rposition(|k| k == names::TEST_START).unwrap();
    // 1 error and 2 endpoints: 3 endpoint rows.
    assert_eq!(
        kinds[second_start - 5..second_start],
        [
            names::TEST_STOP.to_owned(),
            "locust.tl.request.metric.stats:final".to_owned(),
            "locust.tl.request.metric.stats:endpoint".to_owned(),
            "locust.tl.request.metric.stats:endpoint".to_owned(),
            "locust.tl.request.metric.stats:endpoint".to_owned(),
        ][..]
    );
    // The second test's own first row is a current row, and its CPU is its own sample.
    assert_eq!(
        kinds.last().unwrap(),
        "locust.tl.request.metric.stats:current"
    );
    let cpu: Vec<f64> = items
        .iter()
        .filter(|i| i.name == names::CPU)
        .map(|i| {
            serde_json::from_str::<Value>(&i.fields).unwrap()["value"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(cpu, [1.0, 7.0]);
}
