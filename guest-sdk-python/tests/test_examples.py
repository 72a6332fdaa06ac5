"""The two Python example plugins in the harness: the seed port and request-stats."""

import json
import random
from collections import Counter
import sys

import pytest

from swarmtel_recorder.dispatch import describe
from swarmtel_recorder.testing import Harness, load_plugin, replay

from conftest import REQUEST_STATS, SAMPLE, SEED_ENTRY

sys.path.insert(0, str(REQUEST_STATS.parent))
from request_stats_py import aggregate  # noqa: E402  (plain Python, no SDK types)

sys.path.remove(str(REQUEST_STATS.parent))


@pytest.fixture(scope="module")
def seed():
    return load_plugin(SEED_ENTRY)


@pytest.fixture(scope="module")
def request_stats():
    return load_plugin(REQUEST_STATS)


def test_the_seed_port_describes_like_the_guide_says(seed):
    info = describe(seed)
    assert info.id == "custom-telemetry"
    [option] = info.options
    assert (option.name, option.option_type, option.default, option.help, option.env_var) == (
        "custom-option", "text", "default-value", "Example custom argument", "LOCUST_CUSTOM_OPTION"
    )
    [recorder] = info.recorders
    assert recorder.name == "custom_telemetry_recorder"
    assert recorder.roles == ["master", "worker", "standalone"]
    assert recorder.events == ["test_start", "test_stop"]


@pytest.mark.parametrize("role", ["master", "worker"])
def test_the_seed_port_logs_start_and_stop(seed, role):
    harness = Harness(seed, "custom_telemetry_recorder", role=role, options={"custom-option": "x"})
    assert harness.event("test_start", time=10.0) == [
        {"type": "event", "name": "CUSTOM_START", "message": "Custom telemetry recorder started", "fields": {}}
    ]
    assert harness.event("test_stop", time=20.0)[0]["name"] == "CUSTOM_STOP"
    assert harness.recorder.env.parsed_options.custom_option == "x"


def fields_of(items):
    return [(i["fields"]["endpoint"], i["fields"]["requests"], i["fields"]["failures"]) for i in items]


def test_request_stats_reports_per_endpoint_at_test_stop(request_stats):
    harness = Harness(request_stats, "request_stats_recorder", role="worker")
    harness.request("GET", "/items", 10.0, 100)
    harness.request("GET", "/items", 30.0, 100, exception="HTTPError 500")
    harness.request("POST", "/orders", 5.0, 10)
    items = harness.event("test_stop", time=1.0)
    assert fields_of(items) == [("/items", 2, 1), ("/orders", 1, 0), ("Aggregated", 3, 1)]
    assert items[0]["message"] == "GET /items: 2 requests, 1 failures"
    assert items[2]["message"] == "Aggregated: 3 requests, 1 failures"
    assert items[2]["fields"]["total_bytes"] == 210
    assert items[0]["fields"]["avg_response_time_ms"] == 20.0
    assert all(i["fields"]["final"] for i in items)


def test_request_stats_ticks_report_only_after_new_requests(request_stats):
    harness = Harness(request_stats, role="worker")
    assert harness.tick(5.0) == []
    harness.request("GET", "/", 1.0, 1)
    assert len(harness.tick(10.0)) == 2
    assert harness.tick(15.0) == []
    quiet = Harness(request_stats, role="worker", options={"periodic": False})
    quiet.request("GET", "/", 1.0, 1)
    assert quiet.tick(5.0) == []
    assert len(quiet.finish()) == 2, "requests after the last report are reported at the end"


def test_request_stats_reset_starts_over_and_keeps_endpoint_names(request_stats):
    harness = Harness(request_stats, role="worker")
    harness.request("GET", "/a", 1.0, 1)
    harness.request("GET", "/b", 1.0, 1)
    harness.event("reset_stats", time=1.0)
    harness.request("GET", "/b", 1.0, 1)
    harness.request("GET", "/a", 1.0, 1)
    harness.request("GET", "/a", 1.0, 1)
    items = harness.event("test_stop", time=2.0)
    assert fields_of(items) == [("/a", 2, 0), ("/b", 1, 0), ("Aggregated", 3, 0)]


def test_request_stats_rounds_like_locust():
    assert aggregate.round_response_time(12.4) == 12
    # Locust's _log_response_time uses Python's round(): a half goes to the even neighbour.
    assert aggregate.round_response_time(12.5) == 12
    assert aggregate.round_response_time(13.5) == 14
    assert aggregate.round_response_time(0.5) == 0
    assert aggregate.round_response_time(99.5) == 100
    assert aggregate.round_response_time(145.0) == 140
    assert aggregate.round_response_time(155.0) == 160
    assert aggregate.round_response_time(1050.0) == 1000
    assert aggregate.round_response_time(12500.0) == 12000
    assert aggregate.round_response_time(147.0) == 150
    assert aggregate.round_response_time(3449.0) == 3400
    assert aggregate.round_response_time(12600.0) == 13000


def test_request_stats_clamps_absurd_values_like_rust():
    """Rust's `as u64` saturates, f64::max(0.0) turns NaN into 0, u64 sums wrap, and
    serde_json writes a non-finite f64 as null: the port must do the same and never raise."""
    assert aggregate.round_response_time(float("nan")) == 0
    assert aggregate.round_response_time(-5.0) == 0
    assert aggregate.round_response_time(float("inf")) == aggregate.U64_MAX
    assert aggregate.round_response_time(1e300) == aggregate.U64_MAX
    assert aggregate.round_response_time(4.503599627370497e18) == 4503599627370497024
    assert aggregate.round3(float("inf")) is None
    stats = aggregate.EndpointStats("GET", "/a")
    stats.record_many([1.0, float("nan"), float("inf"), 1e308, 1e308], [aggregate.U64_MAX, 2, 0, 0, 0])
    fields = stats.fields(True)
    assert fields["total_bytes"] == 1, "wraps like a u64"
    assert fields["max_response_time_ms"] is None and fields["avg_response_time_ms"] is None
    assert fields["min_response_time_ms"] == 1.0
    assert fields["p99_ms"] == aggregate.U64_MAX and fields["p50_ms"] == aggregate.U64_MAX


def test_column_counting_equals_rounding_one_by_one():
    rng = random.Random(7)
    values = [rng.choice([rng.uniform(0, 20000), rng.randint(0, 300) / 2, rng.uniform(0, 2)]) for _ in range(20000)]
    values += [0.0, 0.49999999999999994, 0.5, 99.5, 99.99, 100.0, 104.99, 105.0, 999.4, 999.5,
               1000.0, 9949.0, 9950.0, 10000.0, 10499.0, 10500.0, 12.5, 145.0, 1050.0,
               12500.0, -1.0, -0.0, 1e6, 4.503599627370497e15, 6.755399441055746e18, 1e300]
    histogram = Counter()
    aggregate.count_rounded(histogram, values)
    expected = {}
    for value in values:
        rounded = aggregate.round_response_time(value)
        expected[rounded] = expected.get(rounded, 0) + 1
    assert histogram == expected
    # The round_response_time above is Python's round() per the Locust rule, written plainly.
    assert aggregate.round_response_time(2.5) == round(2.5) == 2


def test_percentiles_follow_locust():
    histogram = Counter()
    aggregate.count_rounded(histogram, [float(ms) for ms in range(1, 11)])
    assert aggregate.percentile(histogram, 10, 0.5) == 6
    assert aggregate.percentile(histogram, 10, 0.9) == 10
    assert aggregate.percentile({}, 0, 0.5) == 0


def test_request_stats_on_the_sample_counts_every_request(request_stats):
    items = replay(request_stats, SAMPLE)
    requests = {}
    with open(SAMPLE) as sample:
        for line in sample:
            record = json.loads(line)
            if record["event"] == "request":
                requests[record["node"]] = requests.get(record["node"], 0) + 1
    final_totals = {
        i["node"]: i["fields"]["requests"]
        for i in items
        if i["fields"]["endpoint"] == "Aggregated" and i["fields"]["final"]
    }
    assert final_totals == requests
    assert all(i["time"] % 5 == 0 for i in items if not i["fields"]["final"]), "ticks every 5 s"


def test_request_stats_reports_requests_and_response_times_as_metrics(request_stats):
    harness = Harness(request_stats, role="worker")
    for ms in (12.5, 145.0, 1050.0):
        harness.request("GET", "/a", ms, 1)
    harness.request("POST", "/b", 2.5, 1, exception="HTTPError 500")
    harness.request("POST", "/b", 1e300, 1)  # absurd: counted, but past every bucket
    ticked = harness.tick(5.0)
    assert [(m["name"], m["type"], m["value"], m["attributes"]) for m in ticked.metrics] == [
        ("request_stats.requests", "counter", 3, {"request_type": "GET", "endpoint": "/a"}),
        ("request_stats.duration", "response_times", {"buckets": {12: 1, 140: 1, 1000: 1}, "sum_ms": 1207.5},
         {"request_type": "GET", "endpoint": "/a"}),
        ("request_stats.requests", "counter", 2, {"request_type": "POST", "endpoint": "/b"}),
        ("request_stats.duration", "response_times", {"buckets": {2: 1}, "sum_ms": 2.5},
         {"request_type": "POST", "endpoint": "/b"}),
    ]
    assert len(ticked) == 3, "the telemetry is unchanged"
    harness.request("GET", "/a", 7.0, 1)
    stopped = harness.event("test_stop", time=6.0)
    assert [(m["name"], m["value"]) for m in stopped.metrics] == [
        ("request_stats.requests", 1), ("request_stats.duration", {"buckets": {7: 1}, "sum_ms": 7.0})]
    assert harness.finish().metrics == [], "nothing new to report"


def test_request_stats_metrics_on_the_sample_count_every_request_once(request_stats):
    items = replay(request_stats, SAMPLE)
    counted, timed = Counter(), Counter()
    for point in items.metrics:
        if point["type"] == "counter":
            counted[point["node"]] += point["value"]
        else:
            timed[point["node"]] += sum(point["value"]["buckets"].values())
    with open(SAMPLE) as sample:
        requests = Counter(record["node"] for record in map(json.loads, sample) if record["event"] == "request")
    assert counted == timed == requests
