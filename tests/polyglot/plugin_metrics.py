"""Helpers for the polyglot tests of contract 0.2.0: replay a capture through the real
`swarmtel` with a Prometheus output, scrape request-stats' metric series once every point is
in, and work out what they must hold from the capture itself; and a capture of the events and
fields 0.2.0 added."""

import collections
import json
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from locust.stats import bucket_response_time  # Locust's own: the oracle

#: The bucket bounds of `locust.client.duration` (and so of every plugin histogram), in ms.
BOUNDS_MS = (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')




def samples(text: str) -> list:
    """``(name, labels, value)`` for every sample of a Prometheus text exposition."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match:
            name, labels, value = match.groups()
            found.append((name, dict(_LABEL.findall(labels)), float(value)))
    return found


def expected_request_metrics(stream: Path) -> dict:
    """What request-stats' metrics must hold for a capture, per (request type, endpoint):
    requests, the histogram's cumulative bucket counts (Locust-rounded times against each
    bound) and the sum of the exact times in seconds."""
    times = collections.defaultdict(list)
    with open(stream) as lines:
        for record in map(json.loads, lines):
            if record["event"] == "request":
                times[(record["request_type"], record["name"])].append(record["response_time"])
    return {
        endpoint: {
            "requests": len(values),
            "buckets": {bound: sum(1 for ms in values if bucket_response_time(ms) <= bound) for bound in BOUNDS_MS},
            "sum_seconds": sum(values) / 1000.0,
        }
        for endpoint, values in times.items()
    }


def scraped_request_metrics(text: str) -> dict:
    """request-stats' series from a scrape, in the shape of `expected_request_metrics`."""
    found = collections.defaultdict(lambda: {"requests": 0, "buckets": {}, "sum_seconds": 0.0})
    for name, labels, value in samples(text):
        if not name.startswith("request_stats_"):
            continue
        row = found[(labels["request_type"], labels["endpoint"])]
        if name == "request_stats_requests_total":
            row["requests"] = int(value)
        elif name == "request_stats_duration_seconds_bucket" and labels["le"] != "+Inf":
            row["buckets"][round(float(labels["le"]) * 1000)] = int(value)
        elif name == "request_stats_duration_seconds_sum":
            row["sum_seconds"] = value
    return dict(found)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def replay_and_scrape(swarmtel_bin: str, plugin_block: str, cache: Path, tmp_path: Path, stream: Path,
                      requests: int, timeout: float = 300.0) -> str:
    """Replays ``stream`` with the plugin of ``plugin_block`` (its ``[[plugins]]`` table) and a
    Prometheus output, and returns the exposition once request-stats' counter and histogram
    both hold all ``requests``; the replay is stopped then."""
    port = _free_port()
    config = tmp_path / "metrics.toml"
    config.write_text(
        '[run]\ntestplan = "polyglot"\nrun_id = "polyglot-metrics"\n\n[cache]\ndir = "%s"\n\n'
        '[[outputs]]\ntype = "json_lines"\npath = "%s"\n\n'
        '[[outputs]]\ntype = "prometheus"\nlisten = "127.0.0.1:%d"\nlinger_seconds = 120\n\n%s'
        % (cache, tmp_path / "lines.ndjson", port, plugin_block)
    )
    log = tmp_path / "replay.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen([swarmtel_bin, "replay", "--config", str(config), str(stream)],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError("swarmtel replay exited %s:\n%s" % (process.returncode, log.read_text()))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as response:
                    text = response.read().decode("utf-8")
            except OSError:
                time.sleep(0.2)
                continue
            totals = collections.Counter()
            for name, _labels, value in samples(text):
                if name in ("request_stats_requests_total", "request_stats_duration_seconds_count"):
                    totals[name] += value
            if totals["request_stats_requests_total"] == totals["request_stats_duration_seconds_count"] == requests:
                return text
            time.sleep(0.2)
        raise AssertionError("request-stats' metrics never reached %d requests:\n%s" % (requests, log.read_text()))
    finally:
        process.terminate()
        process.wait(timeout=60)


def events_020(path: Path) -> Path:
    """A capture of what 0.2.0 added, on the master: failed requests with and without an
    exception type, stats snapshots with and without start and last request times, a
    fractional histogram key and an error table, and process samples with and without network
    counters."""
    entry = {"request_type": "GET", "name": "/a", "num_requests": 4, "num_failures": 1, "total_response_time": 20.5,
             "min_response_time": 1.0, "max_response_time": 12.0, "total_content_length": 40,
             "response_times": [[2.5, 2], [5.0, 1], [12, 1]], "current_rps": 1.5, "current_fail_per_sec": 0.25}
    timed = dict(entry, start_time=1795557120.5, last_request_timestamp=1795557123.25)
    errors = [{"request_type": "GET", "name": "/a", "error": "HTTPError('500')", "occurrences": 1,
               "first_seen": 1795557121.0, "last_seen": 1795557121.0},
              {"method": "POST", "name": "/b", "error": "timeout", "occurrences": 3}]
    base = {"role": "master", "node": "master"}
    lines = [dict(base, event="test_start", time=1795557120.0)]
    for index, (exception, exception_type) in enumerate(
            (("HTTPError('500')", "HTTPError"), (None, None), ("boom", None), ("refused", "ConnectionRefusedError"))):
        line = dict(base, event="request", time=1795557121.0 + index / 10, request_type="GET", name="/a",
                    response_time=[12.5, 145.0, 2.5, 1050.0][index], response_length=10, exception=exception)
        if exception_type is not None:
            line["exception_type"] = exception_type
        lines.append(line)
    lines.append(dict(base, event="stats", time=1795557123.5, user_count=2, entries=[timed],
                      total=dict(timed, request_type="", name="Aggregated"), errors=errors))
    lines.append(dict(base, event="stats", time=1795557124.0, user_count=2, entries=[entry],
                      total=dict(entry, request_type="", name="Aggregated")))
    lines.append(dict(base, event="process_sample", time=1795557124.5, cpu_percent=37.5, memory_bytes=2**40,
                      network_sent_bytes=1000, network_recv_bytes=2000))
    lines.append(dict(base, event="process_sample", time=1795557125.0, cpu_percent=0.0, memory_bytes=1))
    lines.append(dict(base, event="test_stop", time=1795557126.0))
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
