"""Event lines match the capture locustfile's encoding and the event-stream schema."""
import importlib.util
import json
import re
import os
import sys
import types

import pytest
from locust.runners import LocalRunner
from locust.stats import RequestStats

import minischema
from conftest import REPO
from swarmtel_locust import encode, plugin
from swarmtel_locust.buffer import EventBuffer

SCHEMA = json.load(open(os.path.join(REPO, "schemas", "event-stream.schema.json")))


class Resp:
    status_code = 503


class ShopUser:
    pass


class FakeLocalRunner(LocalRunner):
    """A LocalRunner as far as isinstance goes, with fixed stats and user count."""
    user_count = 4
    stats = None
    greenlet = None

    def __init__(self, stats):
        self._fake_stats = stats

    stats = property(lambda self: self._fake_stats)


def _tb():
    try:
        raise RuntimeError("boom")
    except RuntimeError as e:
        return e, e.__traceback__


def _calls():
    """(hook name, kwargs) for every forwarded hook, with awkward values included."""
    exc, tb = _tb()
    return [
        ("test_start", {}),
        ("request", dict(request_type="GET", name="/items/[id]", response_time=12.5, response_length=321,
                         response=Resp(), context={"user": 1}, exception=None, start_time=1700000000.25,
                         url="http://h/items/7")),
        ("request", dict(request_type="POST", name="/orders", response_time=3, response_length=None,
                         response=None, context={"bad": object()}, exception=ValueError("nope"),
                         start_time=1700000001.0, url=None)),
        ("spawning_complete", dict(user_count=5)),
        ("user_error", dict(user_instance=ShopUser(), exception=exc, tb=tb)),
        ("cpu_warning", dict(cpu_usage=93.5)),
        ("usage_monitor", dict(cpu_usage=12.0, memory_usage=123456789)),
        ("worker_connect", dict(client_id="host_abc")),
        ("worker_report", dict(client_id="host_abc", data={"user_count": 3, "stats": []})),
        ("heartbeat_sent", dict(client_id="host_abc", timestamp=1700000002.5)),
        ("heartbeat_received", dict(client_id="host_abc", timestamp=1700000003.5)),
        ("reset_stats", {}),
        ("test_stopping", {}),
        ("test_stop", {}),
        ("quitting", {}),
        ("quit", dict(exit_code=1)),
    ]


@pytest.fixture
def capture(tmp_path, monkeypatch):
    """Load examples/capture/locustfile.py as a module writing to tmp_path."""
    path = os.path.join(REPO, "examples", "capture", "locustfile.py")
    spec = importlib.util.spec_from_file_location("swarmtel_capture_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stats = RequestStats()
    stats.log_request("GET", "/", 10, 100)
    stats.log_request("GET", "/", 30, 50)
    stats.log_request("POST", "/orders", 7, 0)
    stats.log_error("POST", "/orders", "boom")
    runner = FakeLocalRunner(stats)
    mod.CAP.dir = str(tmp_path)
    mod.CAP.env = types.SimpleNamespace(runner=runner)
    # the bridge, standalone, with its own buffer
    monkeypatch.setattr(plugin.BRIDGE, "env", types.SimpleNamespace(runner=runner))
    monkeypatch.setattr(plugin.BRIDGE, "role", "standalone")
    monkeypatch.setattr(plugin.BRIDGE, "buffer", EventBuffer(1000))
    monkeypatch.setattr(plugin.BRIDGE, "settings", None)
    monkeypatch.setattr(plugin.BRIDGE, "shipper", None)  # no flushing / finishing
    yield mod
    mod.CAP.close()
    mod.CAP.dir = None
    mod.CAP.env = None
    g = mod.CAP.stats_greenlet
    if g is not None:
        g.kill()


def _both(capture):
    """Fire every hook through the capture listeners and the bridge listeners."""
    cap_listener = {
        "test_start": capture._on_test_start, "request": capture._on_request,
        "spawning_complete": capture._on_spawning_complete, "user_error": capture._on_user_error,
        "cpu_warning": capture._on_cpu_warning, "usage_monitor": capture._on_usage_monitor,
        "worker_connect": capture._on_worker_connect, "worker_report": capture._on_worker_report,
        "heartbeat_sent": capture._on_heartbeat_sent, "heartbeat_received": capture._on_heartbeat_received,
        "reset_stats": capture._on_reset_stats, "test_stopping": capture._on_test_stopping,
        "test_stop": capture._on_test_stop, "quitting": capture._on_quitting, "quit": capture._on_quit,
    }
    for name, kwargs in _calls():
        cap_listener[name](**kwargs)
        plugin.LISTENERS[name](**kwargs)
        if name == "test_start":  # the capture's stats loop: stop it, ours is not started (no settings)
            if capture.CAP.stats_greenlet is not None:
                capture.CAP.stats_greenlet.kill()
                capture.CAP.stats_greenlet = None
    capture.CAP.close()
    with open(os.path.join(capture.CAP.dir, "local.ndjson")) as fh:
        theirs = [json.loads(line) for line in fh]
    items = plugin.BRIDGE.buffer.drain(10000)
    ours_raw = [encode.encode_line(it, "standalone", "local") for it in items]
    return theirs, ours_raw


def test_every_event_matches_capture_encoding(capture):
    theirs, ours_raw = _both(capture)
    ours = [json.loads(line) for line in ours_raw]
    # the bridge adds one stats snapshot at quit (before the quit line)
    assert [o["event"] for o in ours] == [t["event"] for t in theirs[:-1]] + ["stats", "quit"]
    ours_cmp = [o for o in ours]
    del ours_cmp[-2]
    assert len(ours_cmp) == len(theirs)
    for o, t in zip(ours_cmp, theirs):
        o2, t2 = dict(o), dict(t)
        if o["event"] == "test_start":  # a random id per test start (once the bridge is set up)
            assert re.fullmatch(r"[0-9a-f]{8}", o2.pop("test_id", "00000000"))
            t2.pop("test_id", None)
        assert list(o2.keys()) == list(t2.keys()), o["event"]
        assert isinstance(o2.pop("time"), float)
        t2.pop("time")
        assert o2 == t2, o["event"]
    req = ours[1]
    assert req["status_code"] == 503 and req["response_time"] == 12.5 and req["context"] == {"user": 1}
    assert ours[2]["exception"] == "nope" and ours[2]["context"] == {} and ours[2]["response_length"] == 0
    assert ours[2]["exception_type"] == "ValueError" and "exception_type" not in ours[1]
    stats = [o for o in ours if o["event"] == "stats"]
    assert stats[0]["total"]["num_requests"] == 3 and stats[0]["total"]["num_failures"] == 1
    assert [e["name"] for e in stats[0]["entries"]] == ["/", "/orders"]


def test_lines_are_compact_newline_terminated_and_validate(capture):
    _, ours_raw = _both(capture)
    events = set()
    for raw in ours_raw:
        assert raw.endswith(b"\n") and raw.count(b"\n") == 1
        assert b", " not in raw[:40] and b'": ' not in raw[:40]
        obj = json.loads(raw)
        assert list(obj)[:4] == ["event", "role", "node", "time"]
        assert minischema.errors(obj, SCHEMA) == [], obj
        events.add(obj["event"])
    # process_sample comes from the bridge's own sampler (started only with settings), not
    # from a Locust hook: test_process_sample_validates covers it.
    assert events == set(SCHEMA["properties"]["event"]["enum"]) - {"process_sample"}


def test_process_sample_and_error_rows_validate():
    class Mem:
        rss = 123456789

    class Process:
        def cpu_percent(self):
            return 37.5

        def memory_info(self):
            return Mem()

    class Io:
        bytes_sent, bytes_recv = 10, 20

    fields = encode.process_sample_fields(Process(), lambda: Io())
    assert fields == {"cpu_percent": 37.5, "memory_bytes": 123456789,
                      "network_sent_bytes": 10, "network_recv_bytes": 20}
    line = encode.encode_line(encode.event_item("process_sample", **fields), "worker", "worker-0")
    assert minischema.errors(json.loads(line), SCHEMA) == []
    # a host without network counters (psutil returns None) samples 0 bytes
    assert encode.process_sample_fields(Process(), lambda: None)["network_sent_bytes"] == 0

    from locust.stats import StatsError

    # The table is cut by its encoded size: 300 distinct long non-ASCII errors stay far below
    # the 1 MiB line.
    many = [StatsError("GET", f"/e{i}", "ü" * 5000) for i in range(300)]
    rows = encode.error_rows(many)
    assert 0 < len(rows) < 300
    assert len(json.dumps(rows)) <= encode.MAX_ERROR_TABLE_BYTES
    assert [r["name"] for r in rows] == [f"/e{i}" for i in range(len(rows))]

    err = StatsError("GET", "/x", ValueError("boom " * 2000), occurrences=3, first_seen=5.0, last_seen=7.5)
    row = encode.error_row(err)
    assert row["method"] == "GET" and row["occurrences"] == 3 and (row["first_seen"], row["last_seen"]) == (5.0, 7.5)
    assert row["error"].startswith("ValueError('boom boom") and len(row["error"]) == encode.MAX_ERROR_CHARS + 3
    assert encode.error_row(StatsError("GET", "/y", "plain"))["first_seen"] is None


@pytest.mark.parametrize("bad", [
    {"event": "request", "role": "standalone", "node": "local", "time": 1.0, "request_type": "GET", "name": "/"},
    {"event": "stats", "role": "master", "node": "master", "time": 1.0, "entries": [], "total": {"name": "x"}},
    {"event": "nope", "role": "master", "node": "master", "time": 1.0},
    {"event": "quit", "role": "boss", "node": "master", "time": 1.0},
    {"event": "test_start", "role": "master", "node": "master", "time": 1.0, "test_id": "a b"},
    {"event": "test_start", "role": "master", "node": "master", "time": 1.0, "test_id": ""},
])
def test_minischema_rejects_bad_lines(bad):
    assert minischema.errors(bad, SCHEMA)


def test_line_too_long_is_refused():
    item = encode.event_item("user_error", user_instance="U", exception="x" * (1024 * 1024), tb="")
    with pytest.raises(encode.LineTooLong):
        encode.encode_line(item, "standalone", "local")


def test_the_fast_request_encoding_is_byte_for_byte_the_general_one():
    # encode_line builds request lines without a dict; it must write exactly what
    # to_record + json.dumps write, for every kind of value a listener can see.
    import itertools
    import random

    from swarmtel_locust import encode

    class Response:
        def __init__(self, status):
            self.status_code = status

    rng = random.Random(7)
    names = ["/", "/items/[id]", 'quote " and \\ backslash', "tab\tnew\nline", "ünïcödé ✓", "😀 emoji",
             "\x00\x1f control", ""]
    times = [0.0, 1.5, 12, None, 1e-7, 123456789.125]
    statuses = [None, 200, 500]
    fast_hits = 0
    for name, response_time, status in itertools.product(names, times, statuses):
        item = encode.request_item(
            rng.choice(["GET", "POST", "ünï"]), name, response_time, rng.choice([0, None, 154]),
            None if status is None else Response(status), None,
            rng.choice([None, ValueError("boom \"x\""), "plain"]),
            rng.choice([None, 1795557122.6012345]), rng.choice([None, "http://h/p?q=1&r=ü"]))
        for role, node in [("worker", "worker-0"), ("standalone", "local")]:
            general = (encode._dumps(encode.to_record(item, role, node)) + "\n").encode("utf-8")
            assert encode.encode_line(item, role, node) == general, item
            fast_hits += encode._fast_request_line(item, role, node) is not None
    assert fast_hits == len(names) * len(times) * len(statuses) * 2, "every ordinary request takes the fast path"
    # Unusual values go the general way and still encode the same.
    with_context = encode.request_item("GET", "/", 1.0, 1, None, {"user": 3}, None, None, None)
    assert encode._fast_request_line(with_context, "worker", "w") is None
    assert b'"context":{"user":3}' in encode.encode_line(with_context, "worker", "w")
    not_finite = encode.request_item("GET", "/", float("nan"), 1, None, None, None, None, None)
    assert encode._fast_request_line(not_finite, "worker", "w") is None
