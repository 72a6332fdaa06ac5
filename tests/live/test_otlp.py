"""The OTLP output against a receiver that decodes with the official OpenTelemetry protobuf
definitions (PyPI's `opentelemetry-proto`, independent of the runtime's encoder).

The runtime replays `examples/locust-run.ndjson` (a real distributed Locust run: two workers,
5,343 requests); the receiver gets the built-in request metrics with exact values (checked
against Locust's own `bucket_response_time` and `calculate_response_time_percentile` over the
raw events), times that are the events' own, and every JSON telemetry line as a log record.
Then the receiver fails: answering 503 for a while, down when the run starts and up later,
and down for good, where what could not be delivered is counted, not hidden.
"""
import gzip
import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from locust.stats import bucket_response_time, calculate_response_time_percentile
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from test_live_locust import GUESTS, ROOT, free_port, swarmtel_bin  # noqa: F401 (fixture)

STREAM = ROOT / "examples" / "locust-run.ndjson"
# metrics_maker reports metric points (contract 0.2.0) and no telemetry lines.
PLUGINS = ("custom_telemetry", "request_stats", "metrics_maker")


class Receiver:
    """An OTLP/HTTP receiver on 127.0.0.1: decodes every request, answers `fail` (a status)
    to the first `failures` requests, then 200."""

    def __init__(self, port=0, failures=0, fail=503, retry_after=None):
        self.metrics, self.logs, self.headers = [], [], []
        self.refused = 0
        self.failures, self.fail, self.retry_after = failures, fail, retry_after
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                    if receiver.failures > 0:
                        receiver.failures -= 1
                        receiver.refused += 1
                        self.send_response(receiver.fail)
                        if receiver.retry_after is not None:
                            self.send_header("Retry-After", str(receiver.retry_after))
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    if self.path == "/v1/metrics":
                        receiver.metrics.append(ExportMetricsServiceRequest.FromString(body))
                    elif self.path == "/v1/logs":
                        receiver.logs.append(ExportLogsServiceRequest.FromString(body))
                    else:
                        self.send_response(404)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def log_records(self):
        """(resource attributes, scope name, record) of every log record received."""
        out = []
        for request in self.logs:
            for resource_logs in request.resource_logs:
                resource = attributes(resource_logs.resource.attributes)
                for scope_logs in resource_logs.scope_logs:
                    for record in scope_logs.log_records:
                        out.append((resource, scope_logs.scope.name, record))
        return out


def any_value(value):
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(key_values):
    return {kv.key: any_value(kv.value) for kv in key_values}


def write_config(tmp_path, port, **settings):
    plugins = "".join(f'[[plugins]]\npath = "{GUESTS / p}.wasm"\n' for p in PLUGINS)
    def toml_value(value):
        if isinstance(value, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        return json.dumps(value)

    otlp = "".join(f"{key} = {toml_value(value)}\n" for key, value in settings.items())
    config = tmp_path / "swarmtel.toml"
    config.write_text(
        '[run]\ntestplan = "otlp-test"\nrun_id = "run-otlp"\n'
        f'[[outputs]]\ntype = "json_lines"\npath = "{tmp_path / "telemetry.ndjson"}"\n'
        f'[[outputs]]\ntype = "otlp"\nendpoint = "http://127.0.0.1:{port}"\n{otlp}'
        f'[dead_letter]\npath = "{tmp_path / "dead.ndjson"}"\n'
        f"{plugins}"
    )
    return config


def replay(swarmtel_bin, config, stdin=None):
    return subprocess.run([swarmtel_bin, "replay", "--config", str(config), str(STREAM)],
                          capture_output=True, text=True, timeout=120, stdin=stdin)


def json_lines(tmp_path):
    return [json.loads(line) for line in (tmp_path / "telemetry.ndjson").read_text().splitlines()]


def locust_oracle():
    """What Locust computes over the raw stream: per (method, name), requests, failures and
    rounded response times; per histogram series, the count; and the first and last event
    times."""
    entries = defaultdict(lambda: {"requests": 0, "failures": 0, "times": Counter()})
    series = Counter()
    times = []
    for line in STREAM.read_text().splitlines():
        event = json.loads(line)
        times.append(event["time"])
        if event["event"] != "request":
            continue
        for key in ((event["request_type"], event["name"]), ("", "Aggregated")):
            entry = entries[key]
            entry["requests"] += 1
            entry["failures"] += event["exception"] is not None
            entry["times"][bucket_response_time(event["response_time"])] += 1
        attrs = {"name": event["name"], "http.request.method": event["request_type"]}
        if event["exception"] is not None:
            attrs["error.type"] = event.get("exception_type") or "_OTHER"
        if event.get("status_code"):
            attrs["http.response.status_code"] = event["status_code"]  # an int attribute
        series[tuple(sorted(attrs.items()))] += 1
    return entries, series, min(times), max(times)


def final_run_metrics(receiver):
    """{metric name: metric} of the run's resource in the last metrics export."""
    last = receiver.metrics[-1]
    runs = [rm for rm in last.resource_metrics if "run_id" in attributes(rm.resource.attributes)]
    assert len(runs) == 1, last
    assert attributes(runs[0].resource.attributes) == {
        "service.name": "swarmtel", "run_id": "run-otlp", "testplan": "otlp-test"}
    return {m.name: m for sm in runs[0].scope_metrics for m in sm.metrics}


def runtime_metrics(receiver):
    last = receiver.metrics[-1]
    runtime = [rm for rm in last.resource_metrics if "run_id" not in attributes(rm.resource.attributes)]
    return {m.name: m for sm in runtime[0].scope_metrics for m in sm.metrics}


def check_logs_match_json_lines(receiver, tmp_path):
    """Every JSON telemetry line arrived once as a log record with the same content."""
    received = receiver.log_records()
    lines = json_lines(tmp_path)
    assert len(received) == len(lines) > 40
    def key_of_line(line):
        t = line["telemetry"]
        fields = {k: v for k, v in t.items() if k not in (
            "telemetry_type", "telemetry_name", "source", "source_id", "run_id", "testplan", "plugin")}
        return (t["telemetry_name"], line["message"], t["source"], t["source_id"], t["plugin"],
                json.dumps(fields, sort_keys=True))

    def key_of_record(item):
        resource, scope, record = item
        attrs = attributes(record.attributes)
        plugin = attrs.pop("plugin")
        assert scope == f"swarmtel.{plugin}"
        assert attrs.pop("telemetry_name") == record.event_name
        attrs.pop("telemetry_type")
        assert resource["run_id"] == "run-otlp" and resource["testplan"] == "otlp-test"
        return (record.event_name, record.body.string_value, resource["role"], resource["node"], plugin,
                json.dumps(attrs, sort_keys=True))

    assert Counter(map(key_of_record, received)) == Counter(map(key_of_line, lines))
    # Event time, not the time of the replay.
    stream_end = max(json.loads(line)["time"] for line in STREAM.read_text().splitlines())
    assert all(record.time_unix_nano <= int(stream_end * 1e9) + 1 for _, _, record in received)


def check_everything_arrived(receiver, tmp_path):
    """Every log record once, and the final metrics count every request."""
    check_logs_match_json_lines(receiver, tmp_path)
    entries, _, _, _ = locust_oracle()
    duration = final_run_metrics(receiver)["locust.client.duration"]
    assert sum(p.count for p in duration.histogram.data_points) == entries[("", "Aggregated")]["requests"]


def test_metrics_and_logs_reach_the_receiver_with_exact_values(tmp_path, swarmtel_bin):
    receiver = Receiver()
    try:
        config = write_config(tmp_path, receiver.port, export_interval_ms=100,
                              headers={"x-scope-orgid": "team-a"})
        run = replay(swarmtel_bin, config)
    finally:
        receiver.close()
    assert run.returncode == 0, run.stderr
    assert "0 retried, 0 refused, 0 log records dropped, 0 metrics exports dropped" in run.stderr, run.stderr
    assert all(h["content-encoding"] == "gzip" and h["content-type"] == "application/x-protobuf"
               and h["x-scope-orgid"] == "team-a" for h in receiver.headers)

    entries, series, first_time, last_time = locust_oracle()
    metrics = final_run_metrics(receiver)
    duration = metrics["locust.client.duration"]
    assert duration.unit == "s" and duration.histogram.aggregation_temporality == 2  # cumulative
    got_series = {}
    for point in duration.histogram.data_points:
        assert point.start_time_unix_nano == int(first_time * 1e9)
        assert point.time_unix_nano == int(last_time * 1e9)
        assert sum(point.bucket_counts) == point.count
        assert list(point.explicit_bounds) == [0.0, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5,
                                               0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
        got_series[tuple(sorted(attributes(point.attributes).items()))] = point.count
    assert got_series == dict(series)

    percentiles = {}
    for point in metrics["locust.client.duration.percentile"].gauge.data_points:
        attrs = attributes(point.attributes)
        percentiles[(attrs.get("http.request.method", ""), attrs["name"], attrs["quantile"])] = point.as_double
    assert len(percentiles) == 3 * len(entries)
    for (method, name), entry in entries.items():
        for quantile in (0.5, 0.95, 0.99):
            expected = calculate_response_time_percentile(entry["times"], entry["requests"], quantile)
            assert percentiles[(method, name, str(quantile))] == expected / 1000, (method, name, quantile)
    # The users of the run: the sum of the workers' last reports.
    last_reports = {}
    for line in STREAM.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "worker_report":
            last_reports[event["client_id"]] = event["user_count"]
    users = metrics["locust.users.count"].gauge.data_points
    assert [p.as_double for p in users] == [float(sum(last_reports.values()))]

    # The runtime's own counters, under the runtime's resource.
    runtime = runtime_metrics(receiver)
    assert runtime["swarmtel.events"].sum.data_points[0].as_int == len(STREAM.read_text().splitlines())
    assert runtime["swarmtel.events"].sum.is_monotonic
    records = {attributes(p.attributes)["output"]: p.as_int for p in runtime["swarmtel.output.records"].sum.data_points}
    assert records == {"outputs[0]": len(json_lines(tmp_path)), "outputs[1]": len(json_lines(tmp_path))}

    # A plugin's metric points, merged over both workers, with typed attributes.
    expected_requests = Counter()
    expected_durations = Counter()
    for line in STREAM.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "request":
            expected_requests[(event["name"], event["request_type"], event.get("status_code") or 0,
                               event["exception"] is not None)] += 1
            expected_durations[event["name"]] += 1
    maker = metrics["maker.requests"]
    assert maker.unit == "1" and maker.description == "Requests seen by the metrics maker"
    assert maker.sum.is_monotonic and maker.sum.aggregation_temporality == 2
    got = {}
    for point in maker.sum.data_points:
        attrs = attributes(point.attributes)
        assert isinstance(attrs["status"], int) and isinstance(attrs["failed"], bool), attrs
        got[(attrs["endpoint"], attrs["method"], attrs["status"], attrs["failed"])] = point.as_int
    assert got == dict(expected_requests)
    durations = {attributes(p.attributes)["endpoint"]: p.count
                 for p in metrics["maker.duration"].histogram.data_points}
    assert durations == dict(expected_durations)
    assert metrics["maker.duration"].unit == "s"

    check_logs_match_json_lines(receiver, tmp_path)


def test_a_receiver_answering_503_gets_everything_once_it_recovers(tmp_path, swarmtel_bin):
    receiver = Receiver(failures=3, fail=503, retry_after=0)
    try:
        config = write_config(tmp_path, receiver.port, export_interval_ms=100, compression="none")
        run = replay(swarmtel_bin, config)
    finally:
        receiver.close()
    assert run.returncode == 0, run.stderr
    assert receiver.refused == 3
    assert "3 retried, 0 refused, 0 log records dropped" in run.stderr, run.stderr
    assert all("content-encoding" not in h for h in receiver.headers)
    check_everything_arrived(receiver, tmp_path)


def test_a_receiver_down_at_the_start_gets_everything_when_it_comes_up(tmp_path, swarmtel_bin):
    port = free_port()
    config = write_config(tmp_path, port, export_interval_ms=100, timeout_ms=20000)
    lines = STREAM.read_bytes().splitlines(keepends=True)
    proc = subprocess.Popen([swarmtel_bin, "replay", "--config", str(config), "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    receiver = None
    try:
        proc.stdin.write(b"".join(lines[: len(lines) // 2]))
        proc.stdin.flush()
        time.sleep(1.5)  # the runtime exports into the void, and retries
        receiver = Receiver(port=port)
        proc.stdin.write(b"".join(lines[len(lines) // 2:]))
        proc.stdin.close()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if receiver is not None:
            receiver.close()
    stderr = stderr.decode()
    assert proc.returncode == 0, stderr
    assert "0 log records dropped, 0 metrics exports dropped" in stderr, stderr
    assert "latest problem: cannot connect to 127.0.0.1:" in stderr, stderr
    check_everything_arrived(receiver, tmp_path)


def test_a_receiver_down_for_good_costs_the_run_nothing_and_is_counted(tmp_path, swarmtel_bin):
    port = free_port()
    config = write_config(tmp_path, port, timeout_ms=300)
    started = time.monotonic()
    run = replay(swarmtel_bin, config)
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started < 30
    records = len(json_lines(tmp_path))
    assert f"{records} log records dropped, 1 metrics exports dropped" in run.stderr, run.stderr
    # The summary names what the output could not deliver.
    assert f"output http://127.0.0.1:{port}: {records} records, {records} not delivered" in run.stderr, run.stderr


def test_a_refused_request_is_not_retried(tmp_path, swarmtel_bin):
    receiver = Receiver(failures=1000, fail=400)
    try:
        config = write_config(tmp_path, receiver.port, logs=False)
        run = replay(swarmtel_bin, config)
    finally:
        receiver.close()
    assert run.returncode == 0, run.stderr
    # Metrics only (logs off): each export tried once and refused, none retried. (How many
    # exports there are depends on timing: a newer metrics export replaces one that has not
    # gone out yet, so a loaded machine may send only the final one.)
    assert receiver.refused >= 1 and len(receiver.headers) == receiver.refused, receiver.refused
    assert f"0 retried, {receiver.refused} refused" in run.stderr, run.stderr
    assert "HTTP 400 (not retried)" in run.stderr, run.stderr
