"""Roles, node names, run id hand-out to workers, and the child process."""
import logging
import os
import stat
import time
import types

from swarmtel_locust import plugin
from swarmtel_locust.options import Settings
from swarmtel_locust.child import STARTING, Probe, ServerChild, quote_output, serve_argv


class FakeRunner:
    def __init__(self, clients=()):
        self.sent = []
        self.registered = {}
        self.clients = types.SimpleNamespace(all=[types.SimpleNamespace(id=c) for c in clients])

    def send_message(self, msg_type, data=None, client_id=None):
        self.sent.append((msg_type, data, client_id))

    def register_message(self, msg_type, listener, concurrent=False):
        self.registered[msg_type] = listener


def _bridge(role, runner, run_id=None):
    b = plugin.Bridge()
    b.settings = Settings(endpoint="unix:/nowhere")
    b.env = types.SimpleNamespace(runner=runner)
    b.role = role
    b.run_id = run_id
    b.testplan = "plan" if run_id else None
    return b


def test_node_names():
    r = FakeRunner()
    assert _bridge("master", r).node() == "master"
    assert _bridge("standalone", r).node() == "local"
    r.worker_index, r.client_id = 2, "h_abc"
    assert _bridge("worker", r).identity() == ("worker", "worker-2")
    r.worker_index = -1
    assert _bridge("worker", r).node() == "worker-h_abc"


def test_master_sends_run_only_to_the_worker_that_asks(monkeypatch):
    r = FakeRunner(clients=["w1", "w2", "w3"])
    b = _bridge("master", r, run_id="run-1")
    monkeypatch.setattr(plugin, "BRIDGE", b)
    # Never unsolicited (not on worker_connect, not at test_start): a worker that has not
    # registered its handler yet would log "Unknown message type received: swarmtel_run".
    plugin._on_worker_connect(client_id="w1")
    plugin._on_test_start()
    assert r.sent == []
    b._on_run_request(msg=types.SimpleNamespace(node_id="w2", data={"takes": [plugin.MSG_TEST]}))
    # An older bridge's worker asks without saying it takes swarmtel_test: it gets the run,
    # never a message it has no handler for.
    b._on_run_request(msg=types.SimpleNamespace(node_id="w3", data=None))
    test_id = b.test_id
    assert len(test_id) == 8
    assert r.sent == [(plugin.MSG_RUN, {"run_id": "run-1", "testplan": "plan", "test_id": test_id}, "w2"),
                      (plugin.MSG_RUN, {"run_id": "run-1", "testplan": "plan", "test_id": test_id}, "w3")]
    assert plugin.MSG_RUN == "swarmtel_run" and plugin.MSG_RUN_REQUEST == "swarmtel_run_request"
    _bridge("worker", r, run_id="x").send_run("w1")  # workers never hand out run ids
    assert len(r.sent) == 2
    # The next test start: a new test id, sent to the worker that asked and takes it, and
    # only to it.
    plugin._on_test_start()
    assert b.test_id != test_id
    assert r.sent[2:] == [(plugin.MSG_TEST, {"test_id": b.test_id}, "w2")]
    # w2 left: the next test start sends it nothing (and forgets it).
    r.clients.all = [c for c in r.clients.all if c.id != "w2"]
    plugin._on_test_start()
    assert len(r.sent) == 3 and b.bridged_workers == set()


def test_a_worker_whose_test_starts_before_init_makes_up_no_test_id(monkeypatch):
    b = plugin.Bridge()  # before setup: role unknown (the default), no settings
    monkeypatch.setattr(plugin, "BRIDGE", b)
    plugin._on_test_start()
    assert b.test_id is None and b.test_running
    starts = [item for item in b.buffer.drain(100) if item[0] == "test_start"]
    assert [item[2] for item in starts] == [{}]


def test_worker_takes_the_test_id_from_its_master_and_records_it_at_test_start(monkeypatch):
    r = FakeRunner()
    r.worker_index = 0
    b = _bridge("worker", r, run_id="run-1")
    b.buffer = plugin.EventBuffer(100)
    monkeypatch.setattr(plugin, "BRIDGE", b)
    plugin._on_test_start()  # before any test id: the line has none
    b._on_run_message(msg=types.SimpleNamespace(data={"run_id": "run-1", "testplan": "plan", "test_id": "0a1b2c3d"}))
    plugin._on_test_start()
    b._on_test_message(msg=types.SimpleNamespace(data={"test_id": "ffffeeee"}))
    plugin._on_test_start()
    starts = [item[2] for item in b.buffer.drain(100) if item[0] == "test_start"]
    assert starts == [{}, {"test_id": "0a1b2c3d"}, {"test_id": "ffffeeee"}]


def test_worker_without_run_id_asks_again_at_test_start(monkeypatch):
    r = FakeRunner()
    b = _bridge("worker", r)
    monkeypatch.setattr(plugin, "BRIDGE", b)
    plugin._on_test_start()
    assert r.sent == [(plugin.MSG_RUN_REQUEST, {"takes": [plugin.MSG_TEST]}, None)]
    b.run_id = "run-1"
    plugin._on_test_start()
    assert len(r.sent) == 1


def test_worker_takes_first_run_id_only(caplog):
    r = FakeRunner()
    r.worker_index = 0
    b = _bridge("worker", r)
    assert not b.has_run()
    b._on_run_message(msg=types.SimpleNamespace(data={"run_id": "run-7", "testplan": "tp"}))
    assert b.has_run() and (b.run_id, b.testplan) == ("run-7", "tp")
    with caplog.at_level(logging.WARNING, logger="swarmtel_locust"):
        b._on_run_message(msg=types.SimpleNamespace(data={"run_id": "run-8", "testplan": "tp"}))
    assert b.run_id == "run-7" and "run-8" in caplog.text


def _script(tmp_path, body):
    p = tmp_path / "fake-bin"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def test_child_argv():
    assert serve_argv("swarmtel", "/c.toml", "unix:/s") == ["swarmtel", "serve", "--config", "/c.toml",
                                                             "--listen", "unix:/s"]


def test_child_sigkill_after_ignored_sigterm(tmp_path, caplog):
    ready = tmp_path / "ready"
    binary = _script(tmp_path, f"trap '' TERM\ntouch {ready}\nwhile true; do sleep 0.05; done\n")
    c = ServerChild(binary, "/c", "unix:/s")
    assert c.start()
    deadline = time.monotonic() + 5
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    with caplog.at_level(logging.WARNING, logger="swarmtel_locust"):
        t0 = time.monotonic()
        code = c.stop(timeout=0.5)
    assert code == -9 and time.monotonic() - t0 < 5
    assert "killing it" in caplog.text


def test_child_sigterm_exits_cleanly(tmp_path, caplog):
    binary = _script(tmp_path, "exec sleep 30\n")
    c = ServerChild(binary, "/c", "unix:/s")
    assert c.start()
    with caplog.at_level(logging.WARNING, logger="swarmtel_locust"):
        assert c.stop(timeout=5) == -15
    assert "killing" not in caplog.text


def test_child_exiting_early_is_reported(tmp_path, caplog):
    binary = _script(tmp_path, "echo bad config >&2\nexit 3\n")
    out = tmp_path / "stderr"
    with open(out, "wb") as fh:
        c = ServerChild(binary, "/c", "unix:/s", stderr_fd=fh.fileno())
        assert c.start()
        assert c.wait_ready(lambda: Probe(STARTING), interval=0.02) is False
    assert c.failure == "fake-bin serve --config /c --listen unix:/s exited with code 3 before it was " \
        "ready: bad config".replace("fake-bin", binary)
    assert out.read_bytes() == b"bad config\n"  # still shown as it came


def test_child_stderr_is_relayed_while_it_runs(tmp_path):
    binary = _script(tmp_path, "echo line one >&2\necho line two >&2\nexec sleep 30\n")
    out = tmp_path / "stderr"
    with open(out, "wb") as fh:
        c = ServerChild(binary, "/c", "unix:/s", stderr_fd=fh.fileno())
        assert c.start()
        try:
            deadline = time.monotonic() + 5
            while out.read_bytes() != b"line one\nline two\n" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert out.read_bytes() == b"line one\nline two\n"
            assert c.stderr_tail() == b"line one\nline two\n"
        finally:
            c.stop(timeout=5)


def test_child_last_words_are_relayed_before_stop_returns(tmp_path):
    ready = tmp_path / "ready"
    binary = _script(tmp_path, f"trap 'echo summary: 0 dropped >&2; exit 0' TERM\ntouch {ready}\n"
                               "while true; do sleep 0.05; done\n")
    out = tmp_path / "stderr"
    with open(out, "wb") as fh:
        c = ServerChild(binary, "/c", "unix:/s", stderr_fd=fh.fileno())
        assert c.start()
        deadline = time.monotonic() + 5
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.stop(timeout=5) == 0
        assert out.read_bytes() == b"summary: 0 dropped\n"


def test_child_missing_binary():
    c = ServerChild("/nonexistent/swarmtel", "/c", "unix:/s")
    assert c.start() is False
    assert c.failure == "cannot run /nonexistent/swarmtel serve --config /c --listen unix:/s: " \
        "No such file or directory"


def test_quote_output():
    assert quote_output(b"") == "(no output)"
    assert quote_output(b"a\n\n  b  \r\nc\n") == "a | b | c"
    assert quote_output(b"\x1b[31merror\x1b[0m: \x07bell\ttab") == "error: \\x07bell\ttab"
    assert quote_output("caf\u00e9 \u2713".encode() + b" \xff") == "caf\u00e9 \u2713 \ufffd"
    long = quote_output(b"x" * 5000 + b" the end", limit=100)
    assert long == "..." + ("x" * 5000 + " the end")[-100:] and long.endswith("the end")


def test_importing_the_bridge_before_locust_still_sleeps_cooperatively():
    # Locust's gevent monkey-patching must happen before the bridge binds time.sleep.
    import subprocess
    import sys

    from conftest import BRIDGE

    code = ("import swarmtel_locust, time, inspect, gevent\n"
            "from swarmtel_locust.shipper import Shipper\n"
            "from swarmtel_locust.child import ServerChild\n"
            "print(inspect.signature(Shipper).parameters['sleep'].default is gevent.sleep,\n"
            "      inspect.signature(ServerChild.wait_ready).parameters['sleep'].default is gevent.sleep)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=BRIDGE)).stdout
    assert out.split() == ["True", "True"]
