"""Metric points: Locust's rounding, merging per series and call, the checks at the call, the
harness's copy of the host's rules, and the 0.2.0 event fields (exception types, the stats
snapshot's times and error table, process samples)."""

import json
import math
import random

import pytest

from swarmtel_recorder import (
    AuthorError,
    BaseTelemetryPlugin,
    BaseTelemetryRecorder,
    MetricError,
    ResponseTimes,
    TelemetryData,
    bucket_response_time,
)
from locust.stats import bucket_response_time as locust_bucket_response_time
from swarmtel_recorder.testing import Harness, MetricRejected, replay


#: Locust's own ``bucket_response_time`` (Python's ``round``): the oracle.
python_bucket = locust_bucket_response_time


#: Ties of every range (a half goes to the even neighbour), values next to them, range edges.
TIES = [0, 0.5, 1.5, 2.5, 12.5, 13.5, 99.5, math.nextafter(99.5, 0), 100, 145, 155,
        math.nextafter(145.0, 0), math.nextafter(145.0, 1000), 995, 999.5, 1000, 1050, 1150, 1250,
        9950, 10000, 12500, 13500, 1e6 + 500, 4294967000.0, 4294967499.0]


def test_bucket_response_time_is_locusts_rounding_with_pythons_round():
    assert [bucket_response_time(ms) for ms in (12.5, 145, 2.5, 13.5, 155, 1050, 12500)] == [
        12, 140, 2, 14, 160, 1000, 12000]
    rng = random.Random(7)
    values = TIES + [rng.random() * 10 ** rng.randint(0, 9) for _ in range(5000)]
    values += [rng.randint(0, 4000) * step / 2 for step in (1, 10, 100, 1000) for _ in range(500)]
    for ms in values:
        assert bucket_response_time(ms) == python_bucket(ms), ms
        assert type(bucket_response_time(ms)) is int


def test_response_times_count_rounded_buckets_and_the_exact_sum():
    times = ResponseTimes()
    for ms in (12.5, 145, 2.5, 1050, 12.4, 145):
        times.observe(ms)
    assert times.buckets == {12: 2, 140: 2, 2: 1, 1000: 1}
    assert times.sum_ms == 12.5 + 145 + 2.5 + 1050 + 12.4 + 145
    assert times.count == 6
    times.reset()
    assert (times.buckets, times.sum_ms, times.count) == ({}, 0.0, 0)


def test_observe_many_is_observe_one_by_one():
    rng = random.Random(3)
    values = TIES + [rng.random() * 10 ** rng.randint(0, 6) for _ in range(3000)] + [7, 250, 4321, 12345]
    rng.shuffle(values)
    one, many = ResponseTimes(), ResponseTimes()
    one.observe(1.25)
    many.observe(1.25)
    for ms in values:
        one.observe(ms)
    many.observe_many(values)
    assert many.buckets == one.buckets
    assert many.sum_ms == one.sum_ms  # the same additions in the same order
    many.observe_many([])
    assert many == one


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, 4294967500.0, 10**400])
def test_a_response_time_outside_the_buckets_is_refused(bad):
    for observe in (lambda t: t.observe(bad), lambda t: t.observe_many([1.0, bad, 2.0])):
        times = ResponseTimes()
        with pytest.raises(MetricError, match="a response time is a number of milliseconds from 0 to below 4294967500"):
            observe(times)
        assert times.count == 0 and times.sum_ms == 0.0, "nothing counted"
    assert bucket_response_time(math.nextafter(ResponseTimes.limit_ms, 0)) == 4294967000


@pytest.mark.parametrize("bad", [True, "12", None])
def test_a_response_time_that_is_not_a_number_is_refused(bad):
    with pytest.raises(MetricError, match="a response time is a number of milliseconds"):
        ResponseTimes().observe(bad)
    with pytest.raises(MetricError):
        ResponseTimes().observe_many([1.0, bad])


class Reporter(BaseTelemetryRecorder):
    """Runs the calls its test hands it at test_start, and logs one telemetry item."""

    name = "reporter"
    calls = []

    def on_test_start(self):
        for call in type(self).calls:
            call(self)
        self.log_telemetry(TelemetryData("event", "STARTED"), "started")


class ReporterPlugin(BaseTelemetryPlugin):
    def load_worker_telemetry_recorders(self, environment, **kwargs):
        Reporter(env=environment)


def run(*calls, **harness_options):
    Reporter.calls = list(calls)
    return Harness(ReporterPlugin(), **harness_options).event("test_start", time=1.0)


def test_points_of_one_series_merge_within_a_call_and_come_back_with_the_telemetry():
    durations = ResponseTimes()
    durations.observe(12.5)

    def report(recorder):
        for _ in range(3):
            recorder.add_counter("shop.orders", attributes={"endpoint": "/a", "code": 200})
        recorder.add_counter("shop.orders", 4, attributes={"code": 200, "endpoint": "/a"})  # same set
        recorder.add_counter("shop.orders", 2, unit="{order}", attributes={"endpoint": "/b", "code": 200})
        recorder.add_counter("shop.orders", 0, attributes={"endpoint": "/a", "code": True})  # a bool is not 1
        recorder.set_gauge("shop.queue", 3, unit="1", description="Queue depth")
        recorder.set_gauge("shop.queue", 2.5)
        recorder.record_response_times("shop.duration", durations, attributes={"endpoint": "/a"})
        durations.observe(145)  # after the report: not in it, but in the next one
        recorder.record_response_times("shop.duration", durations, attributes={"endpoint": "/a"})

    out = run(report)
    assert out == [{"type": "event", "name": "STARTED", "message": "started", "fields": {}}]
    assert [(m["name"], m["type"], m["value"], m["attributes"]) for m in out.metrics] == [
        ("shop.orders", "counter", 7, {"endpoint": "/a", "code": 200}),
        ("shop.orders", "counter", 2, {"endpoint": "/b", "code": 200}),
        ("shop.orders", "counter", 0, {"endpoint": "/a", "code": True}),
        ("shop.queue", "gauge", 2.5, {}),
        ("shop.duration", "response_times", {"buckets": {12: 2, 140: 1}, "sum_ms": 12.5 + 12.5 + 145}, {"endpoint": "/a"}),
    ]
    assert type(out.metrics[3]["value"]) is float
    # The first point of a series gives its unit and description.
    assert [(m["unit"], m["description"]) for m in out.metrics[1:5]] == [
        ("{order}", ""), ("", ""), ("1", "Queue depth"), ("ms", "")]


def test_each_call_hands_back_only_its_own_points():
    class Ticking(BaseTelemetryRecorder):
        tick_interval_ms = 1000

        def on_tick(self):
            self.add_counter("ticks.seen")

    class TickingPlugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Ticking(env=environment)

    harness = Harness(TickingPlugin())
    assert [m["value"] for m in harness.tick(1.0).metrics] == [1]
    assert [m["value"] for m in harness.tick(2.0).metrics] == [1]
    assert harness.finish().metrics == []
    items = replay(TickingPlugin(), [
        json.dumps({"event": "test_start", "role": "worker", "node": node, "time": time})
        for node, time in (("worker-0", 10.5), ("worker-1", 10.7), ("worker-0", 12.2))])
    assert items == []
    assert [(m["node"], m["time"], m["value"], m["recorder"], m["role"]) for m in items.metrics] == [
        ("worker-0", 11.0, 1, "ticking", "worker"), ("worker-0", 12.0, 1, "ticking", "worker")]


@pytest.mark.parametrize("call, words", [
    (lambda r: r.add_counter("c", -1), "add_counter c: an increment is an int from 0 to 2\\*\\*64 - 1, got -1"),
    (lambda r: r.add_counter("c", 2**64), "an int from 0 to 2\\*\\*64 - 1"),
    (lambda r: r.add_counter("c", 1.0), "add_counter c: an increment is an int >= 0, got 1.0"),
    (lambda r: r.add_counter("c", True), "an increment is an int >= 0, got True"),
    (lambda r: [r.add_counter("c", 2**63) for _ in range(2)], "add up past 2\\*\\*64 - 1"),
    (lambda r: r.set_gauge("g", math.nan), "set_gauge g: a value must be finite, got nan"),
    (lambda r: r.set_gauge("g", -math.inf), "a value must be finite"),
    (lambda r: r.set_gauge("g", 10**400), "a value must be finite"),
    (lambda r: r.set_gauge("g", False), "set_gauge g: a value is an int or a float, got False"),
    (lambda r: r.set_gauge("g", "3"), "a value is an int or a float"),
    (lambda r: r.add_counter(b"c"), "add_counter: the name must be a str"),
    (lambda r: r.add_counter("c", unit=None), "add_counter c: unit must be a str"),
    (lambda r: r.set_gauge("g", 1, description=5), "set_gauge g: description must be a str"),
    (lambda r: r.add_counter("c", attributes={1: "a"}), "attribute key 1 is not a str"),
    (lambda r: r.add_counter("c", attributes={"ratio": 0.5}), "attribute ratio: a value is a str, an int or a bool, got 0.5 \\(float\\)"),
    (lambda r: r.add_counter("c", attributes={"n": None}), "a value is a str, an int or a bool"),
    (lambda r: r.add_counter("c", attributes={"n": 2**63}), "attribute n: 9223372036854775808 does not fit in 64 bits"),
    (lambda r: r.add_counter("c", attributes=[("k", "v")]), "attributes must be a dict"),
    (lambda r: r.record_response_times("d", {12: 1}), "record_response_times d: times must be a ResponseTimes"),
])
def test_plainly_wrong_metric_calls_raise_at_the_call_naming_the_line(call, words):
    with pytest.raises(MetricError, match=words) as raised:
        run(call)
    assert isinstance(raised.value, AuthorError) and isinstance(raised.value, ValueError)
    assert raised.value.location.startswith("tests/test_metrics.py:") or "test_metrics.py:" in raised.value.location


@pytest.mark.parametrize("call, reason", [
    (lambda r: r.add_counter("Orders"), "the name must be lower-case letters, digits, `_` and `.`, starting with a letter"),
    (lambda r: r.add_counter("1orders"), "starting with a letter"),
    (lambda r: r.add_counter("o" * 129), "the name must be 1 to 128 bytes"),
    (lambda r: r.add_counter("swarmtel.mine"), "names starting `swarmtel` are the runtime's own"),
    (lambda r: r.set_gauge("locust.users.count", 1), "the name is a built-in metric's"),
    (lambda r: r.add_counter("c", unit="per second"), "the unit must be at most 32 printable ASCII characters"),
    (lambda r: r.add_counter("c", unit="s" * 33), "the unit must be at most 32"),
    (lambda r: r.add_counter("c", description="two\nlines"), "without control characters, `\\\\` or `\"`"),
    (lambda r: r.add_counter("c", description='a "quote"'), "without control characters, `\\\\` or `\"`"),
    (lambda r: r.add_counter("swarmtel"), "names starting `swarmtel` are the runtime's own"),
    (lambda r: r.add_counter("c", attributes={"__name__": "x"}), "attribute key `__name__` is the outputs' own"),
    (lambda r: r.add_counter("c", attributes={"k%d" % i: i for i in range(17)}), "17 attributes, more than 16"),
    (lambda r: r.add_counter("c", attributes={"1k": 1}), "attribute key \"1k\" must be 1 to 64 letters"),
    (lambda r: r.add_counter("c", attributes={"le": 1}), "attribute key `le` is the outputs' own"),
    (lambda r: r.add_counter("c", attributes={"run.id": "x"}), "attribute key `run.id` is the outputs' own"),
    (lambda r: r.add_counter("c", attributes={"http.code": 1, "http_code": 2}), "attribute key `http_code` repeats another"),
    (lambda r: r.add_counter("c", attributes={"url": "x" * 257}), "attribute `url`: a text value must be at most 256 bytes"),
    (lambda r: [r.add_counter("same"), r.set_gauge("same", 1)], "a gauge point for a counter metric"),
    (lambda r: [r.add_counter("c", attributes={"i": i}) for i in range(1001)], "more than 1000 points in one call"),
])
def test_the_harness_rejects_points_the_host_rejects(call, reason):
    with pytest.raises(MetricRejected, match="rejected by the host: .*" + reason.replace("(", "\\(")):
        run(call)


def test_the_harness_keeps_the_hosts_series_cap_and_kinds_over_calls():
    class Growing(BaseTelemetryRecorder):
        tick_interval_ms = 1000

        def __init__(self, env):
            super().__init__(env)
            self.ticks = 0

        def on_tick(self):
            self.ticks += 1
            self.add_counter("grows", attributes={"tick": min(self.ticks, 3)})

    class GrowingPlugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Growing(env=environment)

    harness = Harness(GrowingPlugin(), max_metric_series=2)
    harness.tick(1.0)
    harness.tick(2.0)
    with pytest.raises(MetricRejected, match="a new series past the plugin's 2 \\(max_metric_series\\)"):
        harness.tick(3.0)
    assert Harness(GrowingPlugin(), max_metric_series=3).tick(1.0).metrics[0]["value"] == 1


def test_request_failures_carry_their_exception_type():
    seen = []

    class Failures(BaseTelemetryRecorder):
        def on_request(self, exception, exception_type):
            seen.append(("request", exception, exception_type))

        def on_requests(self, batch):
            seen.append(("batch", batch.failures, batch.failure_types))
            seen.extend(("iter", r.exception, r.exception_type) for r in batch)

    class FailuresPlugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Failures(env=environment)

    def request(exception, exception_type):
        line = {"event": "request", "role": "worker", "node": "worker-0", "time": 1.0, "request_type": "GET",
                "name": "/", "response_time": 1.0, "exception": exception}
        if exception_type is not None:
            line["exception_type"] = exception_type
        return json.dumps(line)

    replay(FailuresPlugin(), [request("boom", "ConnectionError"), request(None, None), request("500", None)])
    assert seen == [
        ("batch", [(0, "boom"), (2, "500")], [(0, "ConnectionError"), (2, "")]),
        ("iter", "boom", "ConnectionError"), ("iter", None, None), ("iter", "500", ""),
        ("request", "boom", "ConnectionError"), ("request", None, None), ("request", "500", ""),
    ]


class Watcher(BaseTelemetryRecorder):
    """Logs what the stats and process_sample hooks give."""

    def on_stats(self, total, errors, entries):
        self.log_telemetry(TelemetryData("metric", "STATS"), "", keys=sorted(map(str, total.response_times)),
                           key_types=sorted({type(k).__name__ for k in total.response_times}),
                           start=total.start_time, last=total.last_request_timestamp,
                           entry_start=entries[0].start_time, p25=total.get_response_time_percentile(0.25),
                           errors=[[e.method, e.name, e.error, e.occurrences, e.first_seen, e.last_seen] for e in errors])

    def on_process_sample(self, cpu_percent, memory_bytes, network_sent_bytes, network_recv_bytes, time):
        self.log_telemetry(TelemetryData("metric", "PROCESS"), "", sample=[
            cpu_percent, memory_bytes, network_sent_bytes, network_recv_bytes, time])


class WatcherPlugin(BaseTelemetryPlugin):
    def load_master_telemetry_recorders(self, environment, **kwargs):
        Watcher(env=environment)


def test_stats_snapshots_carry_times_fractional_keys_and_the_error_table():
    row = {"request_type": "GET", "name": "/a", "num_requests": 4, "num_failures": 1, "total_response_time": 20.0,
           "min_response_time": 1.0, "max_response_time": 12.0, "total_content_length": 0,
           "response_times": [[2.5, 2], [5.0, 1], [12, 1]], "current_rps": 1.0, "current_fail_per_sec": 0.0,
           "start_time": 100.5, "last_request_timestamp": 104.25}
    old = {k: v for k, v in row.items() if k not in ("start_time", "last_request_timestamp")}
    errors = [{"request_type": "GET", "name": "/a", "error": "HTTPError('500')", "occurrences": 1,
               "first_seen": 101.0, "last_seen": 101.0},
              {"method": "POST", "name": "/b", "error": "timeout", "occurrences": 2}]
    lines = [json.dumps({"event": "stats", "role": "master", "node": "master", "time": 105.0, "user_count": 1,
                         "entries": [row], "total": dict(row, name="Aggregated"), "errors": errors}),
             json.dumps({"event": "stats", "role": "master", "node": "master", "time": 106.0, "user_count": 1,
                         "entries": [old], "total": dict(old, name="Aggregated")})]
    first, second = [item["fields"] for item in replay(WatcherPlugin(), lines)]
    # 5.0 is a whole millisecond, an int as in Locust's dict; 2.5 stays fractional.
    assert (first["keys"], first["key_types"], first["p25"]) == (["12", "2.5", "5"], ["float", "int"], 2.5)
    assert (first["start"], first["last"], first["entry_start"]) == (100.5, 104.25, 100.5)
    assert first["errors"] == [["GET", "/a", "HTTPError('500')", 1, 101.0, 101.0], ["POST", "/b", "timeout", 2, None, None]]
    assert (second["start"], second["last"], second["errors"]) == (None, None, [])


def test_process_samples_reach_their_hook():
    lines = [json.dumps({"event": "process_sample", "role": "master", "node": "master", "time": 7.0,
                         "cpu_percent": 12.5, "memory_bytes": 2**40, "network_sent_bytes": 10, "network_recv_bytes": 20}),
             json.dumps({"event": "process_sample", "role": "master", "node": "master", "time": 8.0,
                         "cpu_percent": 0.0, "memory_bytes": 1})]
    assert [item["fields"]["sample"] for item in replay(WatcherPlugin(), lines)] == [
        [12.5, 2**40, 10, 20, 7.0], [0.0, 1, 0, 0, 8.0]]
