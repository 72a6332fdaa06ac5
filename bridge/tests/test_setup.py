"""Bridge.setup (the ``init`` hook): events fired before it, the run id request, and a
runtime child that cannot start."""
import logging
import os
import stat
import sys
import types

import pytest
from locust.runners import WorkerRunner

from conftest import HERE, wait_for
from protoserver import ProtoServer
from swarmtel_locust import plugin


class FakeWorkerRunner(WorkerRunner):
    """A WorkerRunner for isinstance checks only: no connection, calls recorded in order."""

    def __init__(self):  # noqa: D107 - deliberately not calling WorkerRunner.__init__
        self.greenlet = None  # for Runner.__del__
        self.calls = []
        self.worker_index = 3
        self.client_id = "h_1"

    def register_message(self, msg_type, listener, concurrent=False):
        self.calls.append(("register", msg_type))

    def send_message(self, msg_type, data=None, client_id=None):
        self.calls.append(("send", msg_type))


#: Any runner that is neither a MasterRunner nor a WorkerRunner is a standalone one.
STANDALONE = types.SimpleNamespace()


def options(**kw):
    values = {"swarmtel_" + k: v for k, v in kw.items()}
    return types.SimpleNamespace(**values)


def env(runner, **kw):
    return types.SimpleNamespace(runner=runner, parsed_options=options(**kw))


def test_events_fired_before_setup_are_kept_and_sent(sockdir):
    """A late worker's first spawn message is handled inside WorkerRunner's constructor,
    before ``init``: its ``test_start`` must reach the runtime, not vanish."""
    srv = ProtoServer(os.path.join(sockdir, "s.sock")).start()
    try:
        b = plugin.Bridge()
        b.record("test_start")
        b.record("spawning_complete", user_count=2)
        runner = FakeWorkerRunner()
        b.setup(env(runner, endpoint="unix:" + srv.path, flush_interval=0.05))
        # The handler is registered before the request goes out, so the answer always finds it.
        assert runner.calls == [("register", plugin.MSG_RUN), ("register", plugin.MSG_TEST),
                                    ("send", plugin.MSG_RUN_REQUEST)]
        assert len(b.buffer) == 2 and not b.has_run()
        b._on_run_message(msg=types.SimpleNamespace(data={"run_id": "run-5", "testplan": None}))
        assert wait_for(lambda: srv.conns and len(srv.conns[0]["lines"]) == 2)
        b.finish()
        c = srv.conns[0]
        assert (c["hello"]["run_id"], c["hello"]["node"], c["hello"]["dropped"]) == ("run-5", "worker-3", 0)
        assert [(l["event"], l["node"]) for l in c["lines"]] == [("test_start", "worker-3"),
                                                                 ("spawning_complete", "worker-3")]
        assert wait_for(lambda: c["bye"] is not None)
        assert c["bye"] == {"bye": True, "sent": 2, "dropped": 0}
    finally:
        srv.stop()


def test_early_events_beyond_the_configured_buffer_are_counted():
    b = plugin.Bridge()
    for _ in range(5):
        b.buffer.push(("request",))
    b.buffer.count_dropped(2)
    runner = FakeWorkerRunner()
    b.setup(env(runner, endpoint="unix:/nonexistent/s.sock", buffer=3))
    try:
        # capacity 3 plus the control reserve holds all 5; the 2 counted earlier stay counted
        assert (len(b.buffer), b.buffer.dropped) == (5, 2)
    finally:
        b.shipper.stopped = True
        b.flusher.kill()


def test_disabled_bridge_forgets_early_events():
    b = plugin.Bridge()
    b.record("test_start")
    b.setup(env(FakeWorkerRunner(), disable=True))
    assert b.buffer is None and b.shipper is None
    b.record("test_stop")  # and records nothing later


def _failing_bin(tmp_path):
    p = tmp_path / "swarmtel"
    p.write_text("#!/bin/sh\nprintf 'swarmtel: starting\\n' >&2\n"
                 "printf 'swarmtel: error: plugins[0] \\033[31mcannot serve\\033[0m role \"master\"\\n' >&2\n"
                 "exit 1\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def test_runtime_that_cannot_start_stops_locust(tmp_path, sockdir, caplog):
    b = plugin.Bridge()
    with caplog.at_level(logging.ERROR, logger="swarmtel_locust"), pytest.raises(SystemExit) as e:
        b.setup(env(STANDALONE, endpoint=f"unix:{sockdir}/s.sock", config="/c.toml",
                    bin=_failing_bin(tmp_path)))
    assert e.value.code == 1
    msg = caplog.text
    assert "exited with code 1 before it was ready" in msg
    # serve's own words, one line, escape sequences stripped
    assert 'swarmtel: starting | swarmtel: error: plugins[0] cannot serve role "master"' in msg
    assert "--swarmtel-optional" in msg
    assert b.child is None  # nothing left running


def test_runtime_that_cannot_be_run_stops_locust(caplog, sockdir):
    b = plugin.Bridge()
    with caplog.at_level(logging.ERROR, logger="swarmtel_locust"), pytest.raises(SystemExit):
        b.setup(env(STANDALONE, endpoint=f"unix:{sockdir}/s.sock", config="/c.toml",
                    bin="/nonexistent/swarmtel"))
    assert "cannot run /nonexistent/swarmtel serve" in caplog.text
    assert "No such file or directory" in caplog.text


def test_runtime_refusing_the_hello_stops_locust(tmp_path, sockdir, caplog):
    binary = tmp_path / "swarmtel"
    binary.write_text(f"#!{sys.executable}\nimport sys, time\nsys.path.insert(0, {HERE!r})\n"
                      "from protoserver import ProtoServer\n"
                      "listen = sys.argv[sys.argv.index('--listen') + 1][len('unix:'):]\n"
                      "ProtoServer(listen, refuse='unsupported version').start()\n"
                      "time.sleep(60)\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    b = plugin.Bridge()
    with caplog.at_level(logging.ERROR, logger="swarmtel_locust"), pytest.raises(SystemExit):
        b.setup(env(STANDALONE, endpoint=f"unix:{sockdir}/s.sock", config="/c.toml", bin=str(binary)))
    assert f"{binary} serve --config /c.toml --listen unix:{sockdir}/s.sock refused the bridge's hello: " \
           "unsupported version; stopping Locust" in caplog.text
    assert b.child is None  # stopped, not left running


def test_optional_runtime_that_cannot_start_turns_the_bridge_off(tmp_path, sockdir, caplog):
    b = plugin.Bridge()
    b.record("test_start")
    with caplog.at_level(logging.WARNING, logger="swarmtel_locust"):
        b.setup(env(STANDALONE, endpoint=f"unix:{sockdir}/s.sock", config="/c.toml",
                    bin=_failing_bin(tmp_path), optional=True))
    assert "WITHOUT telemetry" in caplog.text and "cannot serve role" in caplog.text
    assert [r.levelname for r in caplog.records if "did not start" in r.message] == ["WARNING"]
    assert b.buffer is None and b.shipper is None and b.flusher is None and b.child is None
    plugin.Bridge.record(b, "request")  # recording is a no-op, nothing grows
    b.finish()
