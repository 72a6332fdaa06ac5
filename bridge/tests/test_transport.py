"""Connect, hello, backoff, reconnect, refusal, loss reporting and bye, against a real
Unix-socket server (tests/protoserver.py)."""
import json
import logging
import os
import re

import pytest

from conftest import wait_for
from protoserver import ProtoServer
from swarmtel_locust.buffer import EventBuffer
from swarmtel_locust.encode import event_item
from swarmtel_locust.options import default_endpoint
from swarmtel_locust.runid import uuid7
from swarmtel_locust.shipper import Shipper
from swarmtel_locust.transport import Backoff, Transport, parse_endpoint

HELLO = {"role": "worker", "node": "worker-3", "run_id": "r-1", "testplan": None, "token": "s3cret"}


def make(path, clock, capacity=100, io_timeout=2.0, can_connect=lambda: True):
    buf = EventBuffer(capacity, reserve=0)
    t = Transport("unix:" + path, lambda: dict(HELLO), lambda: buf.dropped, io_timeout=io_timeout,
                  backoff=Backoff(rng=lambda: 0.0), clock=clock)
    s = Shipper(buf, t, lambda: ("worker", "worker-3"), can_connect=can_connect, clock=clock,
                sleep=lambda s: None)
    return buf, t, s


def push(buf, n, start=0):
    for i in range(start, start + n):
        buf.push(event_item("cpu_warning", cpu_usage=float(i)))


def values(conn):
    return [line["cpu_usage"] for line in conn["lines"]]


# ------------------------------------------------------------------ parsing, ids, backoff


def test_parse_endpoint():
    assert parse_endpoint("unix:/run/x.sock") == ("unix", "/run/x.sock")
    assert parse_endpoint("tcp:127.0.0.1:7000") == ("tcp", ("127.0.0.1", 7000))
    assert parse_endpoint("localhost:7000") == ("tcp", ("localhost", 7000))
    assert parse_endpoint("tcp:[::1]:7000") == ("tcp", ("::1", 7000))
    for bad in ["", "unix:", "nohost", "host:port", "host:0", "tcp:host:99999"]:
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_default_endpoint():
    assert default_endpoint({"XDG_RUNTIME_DIR": "/run/user/7"}) == "unix:/run/user/7/swarmtel/serve.sock"
    assert default_endpoint({}, uid=42) == "unix:/tmp/swarmtel-42/serve.sock"


def test_uuid7_format_and_order():
    a = uuid7(now=1700000000.000)
    b = uuid7(now=1700000000.001)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", a)
    assert a < b and a[:13] != b[:13]
    assert int(a.replace("-", "")[:12], 16) == 1700000000000
    assert uuid7() != uuid7()


def test_backoff_doubles_caps_and_jitters():
    b = Backoff(rng=lambda: 0.0)
    assert [b.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 10, 10, 10]
    b.reset()
    assert b.next_delay() == 0.5
    j = Backoff(rng=lambda: 1.0, jitter=0.2)
    assert [round(j.next_delay(), 3) for _ in range(3)] == [0.4, 0.8, 1.6]


# ------------------------------------------------------------------ refused / unreachable


def test_connection_refused_backs_off_growing_and_capped(sockdir, clock):
    path = os.path.join(sockdir, "none.sock")
    buf, t, s = make(path, clock)
    push(buf, 5)
    delays = []
    attempts = 0
    for _ in range(9):
        assert s.flush_once() == 0
        attempts += 1
        delays.append(round(t.next_attempt - clock(), 3))
        assert s.flush_once() == 0  # still backing off: no new attempt
        assert round(t.next_attempt - clock(), 3) == delays[-1]
        clock.advance(delays[-1])
    assert delays == [0.5, 1, 2, 4, 8, 10, 10, 10, 10]
    assert t.last_error and "No such file" in t.last_error
    assert len(buf) == 5 and buf.dropped == 0  # buffered, not lost


def test_loss_warning_logged_exactly_once(sockdir, clock, caplog):
    path = os.path.join(sockdir, "none.sock")
    buf, t, s = make(path, clock, capacity=10)
    caplog.set_level(logging.INFO, logger="swarmtel_locust")
    for round_ in range(5):
        push(buf, 10)
        s.flush_once()
        s.report()
        clock.advance(20)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "telemetry is being lost" in msg and "unreachable" in msg and "unix:" + path in msg
    assert "10 events dropped so far" in msg
    assert buf.dropped == 40


def test_a_refusal_marked_retry_backs_off_and_tries_again(sockdir, clock, caplog):
    path = os.path.join(sockdir, "s.sock")
    srv = ProtoServer(path, refuse="too many connections: this server takes 2 at a time",
                      refuse_retry=2).start()
    try:
        buf, t, s = make(path, clock)
        push(buf, 5)
        with caplog.at_level(logging.INFO, logger="swarmtel_locust"):
            assert s.flush_once() == 0
            assert t.refused is None, "a retry refusal is not final"
            assert s.flush_once() == 0, "still backing off"
            clock.advance(60)
            assert s.flush_once() == 0  # the second refusal
            clock.advance(60)
            assert s.flush_once() == 5  # taken on the third hello
        assert len(srv.conns) == 3
        assert not [r for r in caplog.records if r.levelno == logging.ERROR]
        assert buf.dropped == 0
    finally:
        srv.stop()


def test_hello_refused_stops_trying_and_logs(sockdir, clock, caplog):
    path = os.path.join(sockdir, "s.sock")
    srv = ProtoServer(path, refuse="token missing or wrong").start()
    try:
        buf, t, s = make(path, clock)
        push(buf, 7)
        with caplog.at_level(logging.INFO, logger="swarmtel_locust"):
            assert s.flush_once() == 0
            assert t.refused == "token missing or wrong"
            for _ in range(3):
                clock.advance(60)
                s.flush_once()
                s.flush(0.5)
            push(buf, 2)
            s.report()
        assert len(srv.conns) == 1  # never tried again
        assert srv.conns[0]["hello"]["token"] == "s3cret"
        errs = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errs) == 1 and "token missing or wrong" in errs[0] and "refused" in errs[0]
        assert buf.dropped == 9
        warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warn) == 1 and "refused the hello" in warn[0]
        assert s.finish(0.5) == 9
    finally:
        srv.stop()


# ------------------------------------------------------------------ delivery, restart, bye


def test_hello_lines_and_bye(sockdir, clock):
    path = os.path.join(sockdir, "s.sock")
    srv = ProtoServer(path).start()
    try:
        buf, t, s = make(path, clock)
        push(buf, 25)
        assert s.flush_once() == 25
        push(buf, 5, start=25)
        assert s.finish(2.0) == 0
        assert wait_for(lambda: srv.conns and srv.conns[0]["eof"])
        c = srv.conns[0]
        assert c["hello"] == {"hello": "swarmtel", "version": 1, "role": "worker", "node": "worker-3",
                              "run_id": "r-1", "token": "s3cret", "dropped": 0, "seq": 0,
                              "client": "swarmtel-locust/0.1.0"}
        assert values(c) == [float(i) for i in range(30)]
        assert all(line["role"] == "worker" and line["node"] == "worker-3" for line in c["lines"])
        assert c["bye"] == {"bye": True, "sent": 30, "dropped": 0}
        assert c["raw_bad"] == []
    finally:
        srv.stop()


def test_server_restart_reconnects_with_new_hello_carrying_dropped(sockdir, clock, caplog):
    path = os.path.join(sockdir, "s.sock")
    srv = ProtoServer(path).start()
    try:
        buf, t, s = make(path, clock, capacity=10)
        push(buf, 4)
        assert s.flush_once() == 4
        assert wait_for(lambda: len(srv.conns[0]["lines"]) == 4)
        srv.stop()  # the runtime goes away
        assert wait_for(lambda: srv.conns[0]["eof"])
        push(buf, 13, start=4)  # 10 fit, 3 dropped
        assert buf.dropped == 3
        assert s.flush_once() == 0
        assert not t.connected and t.last_error
        srv.start()  # back on the same path
        assert s.flush_once() == 0  # backoff not over yet
        clock.advance(0.5)
        assert s.flush_once() == 10
        assert t.connections == 2
        with caplog.at_level(logging.WARNING, logger="swarmtel_locust"):
            assert s.finish(2.0) == 3
        assert wait_for(lambda: len(srv.conns) == 2 and srv.conns[1]["eof"])
        c2 = srv.conns[1]
        assert c2["hello"]["dropped"] == 3
        assert values(c2) == [float(i) for i in range(4, 14)]
        assert c2["bye"] == {"bye": True, "sent": 10, "dropped": 3}
        assert any("3 events dropped in total" in r.getMessage() for r in caplog.records)
    finally:
        srv.stop()


def test_partial_write_resends_the_rest_on_new_connection(sockdir, clock):
    path = os.path.join(sockdir, "s.sock")
    srv = ProtoServer(path, stall=True, rcvbuf=4096).start()
    try:
        buf, t, s = make(path, clock, capacity=5000, io_timeout=0.3)
        n = 3000
        for i in range(n):
            buf.push(event_item("user_error", user_instance="U", exception=str(i), tb="x" * 200))
        written = s.flush_once()
        assert 0 < written < n  # the send timed out part-way
        # What was not written waits, encoded (the cut batch) or not: nothing is lost.
        assert not t.connected and len(buf) + len(s.unacked) == n - written and buf.dropped == 0
        srv.stall.clear()
        clock.advance(1)
        while len(buf):
            assert s.flush_once() > 0
        s.finish(2.0)
        assert wait_for(lambda: len(srv.conns) == 2 and srv.conns[1]["eof"])
        first = [int(line["exception"]) for line in srv.conns[0]["lines"]]
        second = [int(line["exception"]) for line in srv.conns[1]["lines"]]
        assert first == list(range(written))  # every fully written line arrived
        assert second == list(range(written, n))  # the rest, resent whole: no duplicates, no gap
        assert srv.conns[1]["bye"]["sent"] == n - written
        assert srv.conns[1]["hello"]["dropped"] == 0
        assert srv.conns[1]["hello"]["seq"] == written  # the first line it did not get
    finally:
        srv.stop()


def test_worker_waits_for_run_id_before_connecting(sockdir, clock):
    path = os.path.join(sockdir, "s.sock")
    srv = ProtoServer(path).start()
    ready = {"v": False}
    try:
        buf, t, s = make(path, clock, can_connect=lambda: ready["v"])
        push(buf, 3)
        assert s.flush_once() == 0 and s.flush(0.2) is False
        assert srv.conns == [] and len(buf) == 3
        ready["v"] = True
        assert s.flush_once() == 3
        assert wait_for(lambda: srv.conns and len(srv.conns[0]["lines"]) == 3)
    finally:
        srv.stop()


def test_finish_without_runtime_is_quick_and_counts_everything(sockdir, clock, caplog):
    path = os.path.join(sockdir, "none.sock")
    buf, t, s = make(path, clock)
    push(buf, 12)
    with caplog.at_level(logging.WARNING, logger="swarmtel_locust"):
        assert s.finish(10.0) == 12
    msgs = [r.getMessage() for r in caplog.records]
    assert any("12 events dropped in total" in m and "unreachable" in m for m in msgs)


def test_finish_reports_nothing_when_no_loss(sockdir, clock, caplog):
    path = os.path.join(sockdir, "s.sock")
    srv = ProtoServer(path).start()
    try:
        buf, t, s = make(path, clock)
        push(buf, 3)
        with caplog.at_level(logging.WARNING, logger="swarmtel_locust"):
            assert s.finish(2.0) == 0
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        srv.stop()
