"""Bridge.setup (the ``init`` hook): events fired before it, and the run id request."""
import os
import types

from locust.runners import WorkerRunner

from conftest import wait_for
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
        assert runner.calls == [("register", plugin.MSG_RUN), ("send", plugin.MSG_RUN_REQUEST)]
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
