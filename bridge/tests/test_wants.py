"""What the runtime wants sent (wire protocol, section 2): the transport takes ``wants`` from
the hello reply or the ``ready`` frame, forgets it when the connection goes; the bridge then
ships only the request fields wanted and, when no recorder of its role takes requests, stops
listening to them, so they cost Locust nothing. Against tests/protoserver.py, and against
the real runtime (``SWARMTEL_BIN``) for what it says."""
import os
import subprocess
import types

import pytest
from locust import events

from conftest import wait_for
from protoserver import ProtoServer
from swarmtel_locust import plugin
from swarmtel_locust.buffer import EventBuffer
from swarmtel_locust.transport import Backoff, Transport

HELLO = {"role": "worker", "node": "worker-1", "run_id": "r-1", "testplan": None, "token": None}
NONE_WANTED = {"requests": False, "url": False, "context": False}
REQUESTS_ONLY = {"requests": True, "url": False, "context": False}


def transport(path):
    t = Transport("unix:" + path, lambda: dict(HELLO), lambda: 0, io_timeout=2.0,
                  backoff=Backoff(rng=lambda: 0.0))
    seen = []
    t.on_wants = seen.append
    return t, seen


@pytest.fixture
def bridge_state():
    """Leave the process-wide bridge as it was: everything wanted, the listener in place."""
    bridge = plugin.BRIDGE
    saved = (bridge.buffer, bridge.test_running, bridge.wants)
    yield bridge
    bridge.test_running = False
    bridge.apply_wants(None)
    bridge.buffer, bridge.test_running, bridge.wants = saved


def listening():
    return plugin._on_request in events.request._handlers


def test_the_reply_says_what_is_wanted_and_a_lost_connection_forgets_it(sockdir):
    srv = ProtoServer(os.path.join(sockdir, "s.sock"), ready=True, wants=REQUESTS_ONLY).start()
    try:
        t, seen = transport(srv.path)
        assert t.wants is None
        assert t.try_connect()
        assert t.wants == REQUESTS_ONLY and seen == [REQUESTS_ONLY]
        t.close()
        assert t.wants is None and seen == [REQUESTS_ONLY, None], "unknown again: send everything"
    finally:
        srv.stop()


def test_a_runtime_still_loading_says_it_in_the_ready_frame(sockdir):
    srv = ProtoServer(os.path.join(sockdir, "s.sock"), acks=True, ready=False, wants=NONE_WANTED).start()
    try:
        t, seen = transport(srv.path)
        t.first_seq = lambda: 0
        assert t.try_connect()
        assert t.wants is None and seen == []
        srv.set_ready()
        assert wait_for(lambda: t.poll() and t.wants == NONE_WANTED)
        assert seen == [NONE_WANTED]
    finally:
        srv.stop()


@pytest.mark.parametrize("wants", [{"requests": "yes", "url": False, "context": False},
                                   {"requests": True}, ["requests"], None])
def test_anything_but_three_booleans_means_send_everything(sockdir, wants):
    srv = ProtoServer(os.path.join(sockdir, "s.sock"), ready=True, wants=wants).start()
    try:
        t, seen = transport(srv.path)
        assert t.try_connect()
        assert t.wants is None and seen == []
    finally:
        srv.stop()


def test_requests_nobody_wants_are_not_listened_to(bridge_state):
    assert listening()
    bridge_state.test_running = True
    bridge_state.apply_wants(NONE_WANTED)
    assert not listening(), "the listener goes at once, during a test too"
    bridge_state.apply_wants(REQUESTS_ONLY)
    assert listening(), "wanted again: back at once"
    bridge_state.apply_wants(NONE_WANTED)
    bridge_state.apply_wants(None)
    assert listening(), "not known: everything is sent"


def test_a_change_while_a_request_fires_leaves_the_other_listeners_alone(bridge_state):
    """Locust fires over a copy of the listeners: one removed mid-fire skips nobody."""
    calls = []

    def first(**kwargs):
        calls.append("first")
        bridge_state.apply_wants(NONE_WANTED)

    def last(**kwargs):
        calls.append("last")

    events.request._handlers.insert(0, first)
    events.request.add_listener(last)
    try:
        events.request.fire(request_type="GET", name="/a", response_time=1.0, response_length=0,
                            response=None, context={}, exception=None, start_time=1.0, url=None)
        assert calls == ["first", "last"] and not listening()
    finally:
        events.request.remove_listener(first)
        events.request.remove_listener(last)


def test_unwanted_request_fields_are_left_out(bridge_state):
    bridge_state.buffer = EventBuffer(10, reserve=0)
    fire = lambda: events.request.fire(  # noqa: E731
        request_type="GET", name="/a", response_time=1.5, response_length=3, response=None,
        context={"user": 7}, exception=None, start_time=1.0, url="http://h/a")
    bridge_state.apply_wants(REQUESTS_ONLY)
    fire()
    bridge_state.apply_wants({"requests": True, "url": True, "context": True})
    fire()
    items = bridge_state.buffer.drain(10)
    # request_item: (..., start_time, url, status, context)
    assert [(item[9], item[11]) for item in items] == [(None, None), ("http://h/a", {"user": 7})]


@pytest.mark.parametrize("request_metrics, wanted", [("false", NONE_WANTED), ("true", REQUESTS_ONLY)])
def test_the_runtime_tells_a_worker_what_to_send(tmp_path, sockdir, request_metrics, wanted):
    """The real runtime: a config whose only plugin takes no requests; requests are wanted
    only while the runtime's own request metrics are on."""
    binary = os.environ.get("SWARMTEL_BIN")
    if not binary:
        pytest.skip("SWARMTEL_BIN is not set (scripts/test.sh sets it)")
    guests = subprocess.run(["bash", "scripts/build-guests.sh"], cwd=plugin_root(), check=True,
                            stdout=subprocess.PIPE, text=True).stdout.strip()
    config = tmp_path / "swarmtel.toml"
    config.write_text(f'[run]\ntestplan = "t"\n[output]\npath = "{tmp_path / "out.ndjson"}"\n'
                      f'[[plugins]]\npath = "{guests}/custom_telemetry.wasm"\nroles = ["worker"]\n'
                      f'[request_metrics]\nenabled = {request_metrics}\n')
    socket_path = os.path.join(sockdir, "serve.sock")
    server = subprocess.Popen([binary, "serve", "--config", str(config), "--listen", "unix:" + socket_path,
                               "--status", "off"], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: os.path.exists(socket_path), timeout=60)
        t, _ = transport(socket_path)
        t.first_seq = lambda: 0
        assert wait_for(lambda: t.try_connect(force=True), timeout=30)
        assert wait_for(lambda: t.poll() and t.wants is not None, timeout=60)
        assert t.wants == wanted
        t.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def plugin_root():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
