"""A runtime that answers hellos before its plugins are loaded (wire protocol, sections 2 and
3a): the transport reads the ``ready`` and ``error`` frames, the bridge waits for the runtime it
started to be ready (never giving up while it runs, with progress every 10 s) and fails as
before when it exits or reports an error first; connections to a runtime it did not start do
not wait. Against tests/protoserver.py, in process and as a fake ``swarmtel`` binary."""
import json
import logging
import os
import stat
import sys
import time
import types

import pytest

from conftest import HERE, wait_for
from protoserver import ProtoServer
from swarmtel_locust import plugin
from swarmtel_locust.buffer import EventBuffer
from swarmtel_locust.child import FAILED, LOADING, READY, REFUSED, STARTING, Probe, ServerChild
from swarmtel_locust.encode import event_item
from swarmtel_locust.shipper import Shipper
from swarmtel_locust.transport import Backoff, Transport

HELLO = {"role": "worker", "node": "worker-1", "run_id": "r-1", "testplan": None, "token": None}


def make(path, clock, acks=True):
    buf = EventBuffer(1000, reserve=0)
    t = Transport("unix:" + path, lambda: dict(HELLO), lambda: buf.dropped, io_timeout=2.0,
                  backoff=Backoff(rng=lambda: 0.0), clock=clock)
    s = Shipper(buf, t, lambda: ("worker", "worker-1"), clock=clock, sleep=lambda s: None)
    if not acks:
        t.first_seq = None  # a client that does not ask for acknowledgements
    return buf, t, s


def push(buf, n, start=0):
    for i in range(start, start + n):
        assert buf.push(event_item("cpu_warning", cpu_usage=float(i)))


def messages(caplog, level=None):
    return [r.getMessage() for r in caplog.records
            if r.name == "swarmtel_locust" and (level is None or r.levelno == level)]


@pytest.fixture
def server(sockdir):
    servers = []

    def start(**kwargs):
        srv = ProtoServer(os.path.join(sockdir, "s.sock"), acks=True, **kwargs).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


# ------------------------------------------------------------------ transport


def test_lines_sent_while_loading_are_held_and_acknowledged_once_ready(server, clock, caplog):
    """A remote runtime still loading: the bridge does not wait, it sends; the runtime holds
    the lines and acknowledges them once ready. The ready frame is not mistaken for anything."""
    srv = server(ready=False)
    buf, t, s = make(srv.path, clock)
    push(buf, 5)
    with caplog.at_level(logging.INFO, logger="swarmtel_locust"):
        assert s.flush_once() == 5
        assert t.connected and not t.ready and t.awaiting_ready
        assert wait_for(lambda: len(srv.conns[0]["lines"]) == 5)
        time.sleep(0.1)
        assert t.poll() and t.acked == 0 and len(s.unacked) == 5  # held: nothing acknowledged yet
        srv.set_ready()
        assert wait_for(lambda: t.poll() and t.ready and t.acked == 5)
    assert not t.awaiting_ready and t.connected and len(s.unacked) == 0 and t.runtime_error is None
    assert srv.conns[0]["frames"] == [{"ready": True}]
    assert messages(caplog) == [
        f"swarmtel-locust: the runtime at {t.endpoint} is still loading its plugins; it holds the events "
        "sent meanwhile and processes them once it is ready",
        f"swarmtel-locust: the runtime at {t.endpoint} is ready"]
    assert s.finish(timeout=2.0) == 0


def test_ready_runtime_and_older_runtime(server, clock):
    srv = server(ready=True)
    _, t, _ = make(srv.path, clock)
    assert t.try_connect() and t.ready and not t.awaiting_ready
    t.close()
    srv.ready = None  # a runtime that predates readiness: no `ready` key
    assert t.try_connect(force=True) and t.ready and not t.awaiting_ready


def test_loading_reply_to_a_hello_without_seq_awaits_no_frame(server, clock):
    """Only a hello with `seq` gets the ready frame: without it there is nothing to wait for."""
    srv = server(ready=False)
    _, t, _ = make(srv.path, clock, acks=False)
    assert t.try_connect()
    assert "seq" not in srv.conns[0]["hello"] and srv.conns[0]["awaiting_ready"] is False
    assert not t.ready and not t.awaiting_ready


def test_error_frame_is_logged_once_with_the_runtimes_words(server, clock, caplog):
    srv = server(ready=False)
    buf, t, s = make(srv.path, clock)
    push(buf, 3)
    with caplog.at_level(logging.INFO, logger="swarmtel_locust"):
        assert s.flush_once() == 3
        srv.fail("plugins[1] (/p/x.wasm): no recorder of this plugin serves `standalone`\nsecond line")
        assert wait_for(lambda: not t.poll())
        assert not t.try_connect(force=True)  # the runtime is gone
        srv.start()  # one that comes back, loading, and fails again: not logged twice
        assert t.try_connect(force=True)
        srv.fail("again")
        assert wait_for(lambda: not t.poll())
    assert t.runtime_error == "again" and not t.ready
    errors = messages(caplog, logging.ERROR)
    assert errors == [f"swarmtel-locust: the runtime at {t.endpoint} could not load its plugins and is exiting: "
                      "plugins[1] (/p/x.wasm): no recorder of this plugin serves `standalone` | second line"]
    assert len(s.unacked) == 3  # kept, to be sent again to a runtime that comes back


def test_frames_with_the_reply_and_unknown_frames(server, clock):
    """A ready frame in the same read as the reply counts; frames nobody defined are ignored."""
    srv = server(ready=False)
    _, t, _ = make(srv.path, clock)
    assert t.try_connect()
    rec = srv.conns[0]
    with rec["send_lock"]:
        rec["sock"].sendall(b'[1,2]\n{"future":"frame"}\nnot json\n{"ready":false}\n')
    time.sleep(0.05)
    assert t.poll() and not t.ready and t.runtime_error is None
    srv.set_ready()
    assert wait_for(lambda: t.poll() and t.ready)
    t._inbox = b""
    assert t._take(b'{"ack":0}\n{"ready":true}\n') and t.ready


# ------------------------------------------------------------------ waiting for the child


class SteppedClock:
    """A fake clock that each ``sleep`` advances."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def sleep(self, dt):
        self.t += dt


def _sleeper(tmp_path, body="exec sleep 60\n"):
    p = tmp_path / "fake-bin"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def test_waits_as_long_as_the_runtime_runs_with_progress_every_10_s(tmp_path, caplog):
    """Not accepting for 25 s, then loading its plugins until 75 s: never given up on, one
    progress line every 10 s saying what it waits for, then ready."""
    c = ServerChild(_sleeper(tmp_path), "/c", "unix:/s")
    assert c.start()
    clock = SteppedClock()
    t0 = clock()

    def probe():
        waited = clock() - t0
        return Probe(STARTING if waited < 25 else LOADING if waited < 75 else READY)

    try:
        with caplog.at_level(logging.INFO, logger="swarmtel_locust"):
            assert c.wait_ready(probe, interval=0.5, clock=clock, sleep=clock.sleep) is True
    finally:
        c.stop(timeout=5)
    assert c.failure is None and clock() - t0 == 75
    assert [m for m in messages(caplog) if "started" not in m] == [
        "swarmtel-locust: waiting for the swarmtel runtime to accept connections (10 s)",
        "swarmtel-locust: waiting for the swarmtel runtime to accept connections (20 s)",
        "swarmtel-locust: the swarmtel runtime is loading its plugins; the test starts once it is ready",
        "swarmtel-locust: waiting for the swarmtel runtime to load its plugins (30 s)",
        "swarmtel-locust: waiting for the swarmtel runtime to load its plugins (40 s)",
        "swarmtel-locust: waiting for the swarmtel runtime to load its plugins (50 s)",
        "swarmtel-locust: waiting for the swarmtel runtime to load its plugins (60 s)",
        "swarmtel-locust: waiting for the swarmtel runtime to load its plugins (70 s)",
        "swarmtel-locust: the swarmtel runtime is ready (waited 75.0 s)",
    ]


def test_ready_at_once_logs_nothing(tmp_path, caplog):
    c = ServerChild(_sleeper(tmp_path), "/c", "unix:/s")
    assert c.start()
    try:
        with caplog.at_level(logging.INFO, logger="swarmtel_locust"):
            assert c.wait_ready(lambda: Probe(READY)) is True
    finally:
        c.stop(timeout=5)
    assert [m for m in messages(caplog) if "started" not in m] == []


def test_exit_while_loading_is_a_failure_before_it_was_ready(tmp_path):
    marker = tmp_path / "accepted"
    binary = _sleeper(tmp_path, f"echo 'swarmtel: compiling x.wasm' >&2\nwhile [ ! -e {marker} ]; do sleep 0.02; done\n"
                                "echo 'swarmtel: out of memory' >&2\nexit 3\n")
    out = tmp_path / "stderr"
    with open(out, "wb") as fh:
        c = ServerChild(binary, "/c", "unix:/s", stderr_fd=fh.fileno())
        assert c.start()

        def probe():
            marker.touch()  # the runtime accepted our hello, then dies
            return Probe(LOADING)

        assert c.wait_ready(probe, interval=0.02) is False
    assert c.failure == f"{binary} serve --config /c --listen unix:/s exited with code 3 before it was ready: " \
        "swarmtel: compiling x.wasm | swarmtel: out of memory"


def test_error_frame_quotes_the_runtimes_stderr_once_it_exited(tmp_path):
    binary = _sleeper(tmp_path, "sleep 0.2\necho 'swarmtel: error: plugins[0]: cannot read' >&2\nexit 1\n")
    c = ServerChild(binary, "/c", "unix:/s", stderr_fd=os.open(os.devnull, os.O_WRONLY))
    assert c.start()
    assert c.wait_ready(lambda: Probe(FAILED, "plugins[0]: cannot read")) is False
    assert c.failure == f"{binary} serve --config /c --listen unix:/s exited with code 1 before it was ready: " \
        "swarmtel: error: plugins[0]: cannot read"


def test_error_frame_words_are_quoted_when_stderr_lacks_them(tmp_path):
    binary = _sleeper(tmp_path, "echo 'swarmtel: loading' >&2\nexit 1\n")
    c = ServerChild(binary, "/c", "unix:/s", stderr_fd=os.open(os.devnull, os.O_WRONLY))
    assert c.start()
    assert c.wait_ready(lambda: Probe(FAILED, "bad\nthing")) is False
    assert c.failure.endswith("exited with code 1 before it was ready: bad | thing | swarmtel: loading")


def test_error_frame_from_a_runtime_that_does_not_exit(tmp_path):
    c = ServerChild(_sleeper(tmp_path), "/c", "unix:/s")
    assert c.start()
    clock = SteppedClock()
    try:
        assert c.wait_ready(lambda: Probe(FAILED, "boom"), clock=clock, sleep=clock.sleep,
                            error_exit_timeout=5) is False
        assert c.exited() is None  # the caller stops it
    finally:
        c.stop(timeout=5)
    assert c.failure == f"{c.argv[0]} serve --config /c --listen unix:/s failed before it was ready: boom"


def test_refused_hello(tmp_path):
    c = ServerChild(_sleeper(tmp_path), "/c", "unix:/s")
    assert c.start()
    try:
        assert c.wait_ready(lambda: Probe(REFUSED, "unsupported version")) is False
    finally:
        c.stop(timeout=5)
    assert c.failure == f"{c.argv[0]} serve --config /c --listen unix:/s refused the bridge's hello: unsupported version"


# ------------------------------------------------------------------ Bridge.setup with a fake runtime


STANDALONE = types.SimpleNamespace()


def env(**kw):
    return types.SimpleNamespace(runner=STANDALONE,
                                 parsed_options=types.SimpleNamespace(**{"swarmtel_" + k: v for k, v in kw.items()}))


@pytest.fixture
def fake_serve(tmp_path, sockdir, monkeypatch):
    """``(binary, out, endpoint, configure)``: a fake ``swarmtel`` (tests/protoserver.py) whose
    loading ``configure(seconds, fail=None, error=None)`` sets."""
    binary = tmp_path / "fake-swarmtel"
    binary.write_text(f"#!/bin/sh\nexec {sys.executable} {os.path.join(HERE, 'protoserver.py')} \"$@\"\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "serve-out.json"

    def configure(seconds, fail=None, error=None):
        monkeypatch.setenv("FAKE_SERVE_LOAD_SECONDS", str(seconds))
        for name, value in [("FAKE_SERVE_LOAD_FAIL", fail), ("FAKE_SERVE_LOAD_ERROR", error)]:
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return str(binary), out, f"unix:{sockdir}/s.sock", configure


def test_setup_returns_once_the_runtime_it_started_is_ready(fake_serve, caplog):
    binary, out, endpoint, configure = fake_serve
    configure(1.5)
    b = plugin.Bridge()
    b.record("test_start")
    with caplog.at_level(logging.INFO, logger="swarmtel_locust"):
        b.setup(env(endpoint=endpoint, config=str(out), bin=binary, flush_interval=0.05))
    try:
        returned = time.time()
        assert b.transport.ready and b.transport.connections == 1
        text = caplog.text
        assert "the swarmtel runtime is loading its plugins; the test starts once it is ready" in text
        assert "the swarmtel runtime is ready (waited" in text
        assert "is still loading its plugins; it holds" not in text  # reported once, by the wait
    finally:
        b.finish()
    res = json.loads(out.read_text())
    assert res["ready_at"] is not None and res["ready_at"] <= returned
    c = res["conns"][0]
    assert c["frames"] == [{"ready": True}] and [l["event"] for l in c["lines"]] == ["test_start"]
    assert c["acked"] == 1 and c["bye"] == {"bye": True, "sent": 1, "dropped": 0}


@pytest.mark.parametrize("optional", [False, True])
def test_error_frame_before_ready_stops_locust_or_runs_without_telemetry(fake_serve, caplog, optional):
    binary, out, endpoint, configure = fake_serve
    configure(0.5, fail="frame", error="plugins[0] (x.wasm): no recorder of this plugin serves `standalone`")
    b = plugin.Bridge()
    with caplog.at_level(logging.INFO, logger="swarmtel_locust"):
        if optional:
            assert b.setup(env(endpoint=endpoint, config=str(out), bin=binary, optional=True)) is None
        else:
            with pytest.raises(SystemExit) as e:
                b.setup(env(endpoint=endpoint, config=str(out), bin=binary))
            assert e.value.code == 1
    reports = [m for m in messages(caplog) if "did not start" in m or "could not load" in m]
    assert len(reports) == 1, caplog.text  # one line, the transport does not report it again
    assert reports[0].startswith(f"swarmtel-locust: the swarmtel runtime did not start: {binary} serve --config "
                                 f"{out} --listen {endpoint} exited with code 1 before it was ready: "
                                 "swarmtel: compiling plugins | swarmtel: error: plugins[0] (x.wasm): no recorder "
                                 "of this plugin serves `standalone`; ")
    level = logging.WARNING if optional else logging.ERROR
    assert [r.levelno for r in caplog.records if "did not start" in r.getMessage()] == [level]
    assert b.child is None and b.transport is None and b.shipper is None


def test_exit_while_loading_stops_locust(fake_serve, caplog):
    binary, out, endpoint, configure = fake_serve
    configure(0.5, fail="exit")
    b = plugin.Bridge()
    with caplog.at_level(logging.ERROR, logger="swarmtel_locust"), pytest.raises(SystemExit):
        b.setup(env(endpoint=endpoint, config=str(out), bin=binary))
    assert f"{binary} serve --config {out} --listen {endpoint} exited with code 3 before it was ready: " \
           "swarmtel: compiling plugins | swarmtel: compiling crashed; stopping Locust" in caplog.text
    assert b.child is None


def test_interrupted_while_waiting_stops_the_runtime(fake_serve, caplog, monkeypatch):
    """Ctrl-C while the runtime loads forever: the child is stopped, Locust exits 130."""
    binary, out, endpoint, configure = fake_serve
    configure("forever")
    b = plugin.Bridge()
    waits = []

    def probe():
        result = plugin.Bridge._probe_child(b)
        waits.append(result.state)
        if result.state == LOADING:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(b, "_probe_child", probe)
    with caplog.at_level(logging.WARNING, logger="swarmtel_locust"), pytest.raises(SystemExit) as e:
        b.setup(env(endpoint=endpoint, config=str(out), bin=binary))
    assert e.value.code == 130 and waits[-1] == LOADING
    assert "interrupted while waiting for the swarmtel runtime; stopping it" in caplog.text
    assert b.child is None and b.transport is None
    pid = int((out.parent / (out.name + ".pid")).read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
