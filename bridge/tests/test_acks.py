"""Acknowledgements (wire protocol, section 3a): the bridge numbers its lines, keeps them until
the runtime acknowledges them, and after a reconnect sends again exactly those it did not
acknowledge; a runtime that does not offer acks gets the old behaviour. Against the Unix-socket
server of tests/protoserver.py."""
import json
import logging
import os
import time

import pytest

from conftest import wait_for
from protoserver import ProtoServer
from swarmtel_locust.buffer import EventBuffer
from swarmtel_locust.encode import event_item
from swarmtel_locust.retain import Unacked
from swarmtel_locust.shipper import Shipper
from swarmtel_locust.transport import Backoff, Transport

HELLO = {"role": "worker", "node": "worker-3", "run_id": "r-1", "testplan": None, "token": None}


def make(path, clock, capacity=1000, retain=None, sleep=lambda s: None, batch=1000):
    buf = EventBuffer(capacity, reserve=0)
    t = Transport("unix:" + path, lambda: dict(HELLO), lambda: buf.dropped, io_timeout=2.0,
                  backoff=Backoff(rng=lambda: 0.0), clock=clock)
    s = Shipper(buf, t, lambda: ("worker", "worker-3"), clock=clock, sleep=sleep, retain=retain, batch=batch)
    return buf, t, s


def push(buf, n, start=0):
    for i in range(start, start + n):
        assert buf.push(event_item("cpu_warning", cpu_usage=float(i)))


def values(conn):
    return [int(line["cpu_usage"]) for line in conn["lines"]]


def kept_values(s):
    """The events kept for resending, in order, read back from the kept bytes."""
    out = []
    seq = s.unacked.first
    while True:
        batch = s.unacked.after(seq)
        if batch is None:
            return out
        data, count = batch
        lines = data.decode().splitlines()
        assert len(lines) == count
        out += [int(json.loads(line)["cpu_usage"]) for line in lines]
        seq += count


@pytest.fixture
def server(sockdir):
    servers = []

    def start(**kwargs):
        srv = ProtoServer(os.path.join(sockdir, "s.sock"), **kwargs).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def restart(srv, clock):
    """The runtime crashes (every connection cut) and comes back on the same path; the
    bridge's backoff is over."""
    srv.stop()
    srv.start()
    clock.advance(60)


# ------------------------------------------------------------------ the store


def lines(*values):
    return b"".join(b'{"v":%d}\n' % v for v in values)


def test_unacked_keeps_chunks_forgets_acked_and_slices_lines():
    u = Unacked(100)
    assert (u.first, u.next_seq, len(u)) == (0, 0, 0) and u.after(0) is None
    u.add(lines(0, 1, 2), 3)
    u.add(lines(3, 4), 2)
    assert (u.first, u.next_seq, len(u)) == (0, 5, 5)
    assert u.after(0) == (lines(0, 1, 2), 3)
    assert u.after(1) == (lines(1, 2), 2)  # from the middle of a chunk
    assert u.after(3) == (lines(3, 4), 2) and u.after(5) is None
    assert u.forget_before(2) == 2  # part of the first chunk
    assert (u.first, len(u)) == (2, 3) and u.after(2) == (lines(2), 1)
    assert u.forget_before(2) == 0 and u.forget_before(1) == 0  # old acks change nothing
    assert u.forget_before(5) == 3
    assert (u.first, u.next_seq, len(u)) == (5, 5, 0) and u.after(5) is None
    u.add(lines(5), 1)
    assert u.after(5) == (lines(5), 1) and u.clear() == 1 and u.first == 6


def test_unacked_overflow_forgets_the_oldest_and_says_how_many():
    u = Unacked(4)
    assert u.add(lines(0, 1, 2), 3) == 0
    assert u.add(lines(3, 4, 5), 3) == 2
    assert (u.first, len(u)) == (2, 4) and u.after(2) == (lines(2), 1)
    assert u.add(lines(6, 7, 8, 9), 4) == 4
    assert (u.first, len(u)) == (6, 4) and u.after(6) == (lines(6, 7, 8, 9), 4)


# ------------------------------------------------------------------ sequence numbers and acks


def test_lines_are_numbered_and_acked_lines_forgotten(server, sockdir, clock):
    srv = server(acks=True, auto_ack=False)
    buf, t, s = make(srv.path, clock)
    push(buf, 10)
    assert s.flush_once() == 10
    assert t.acks and srv.conns[0]["hello"]["seq"] == 0
    assert wait_for(lambda: srv.conns[0]["seqs"] == list(range(10)))
    assert len(s.unacked) == 10  # written, not acknowledged: kept
    srv.ack(0, 4)
    assert wait_for(lambda: s.flush_once() == 0 and s.unacked.first == 4)  # the flusher reads acks
    assert kept_values(s) == list(range(4, 10))
    push(buf, 5, start=10)
    assert s.flush_once() == 5
    srv.ack(0, 15)
    assert wait_for(lambda: s.flush_once() == 0 and len(s.unacked) == 0)
    assert s.unacked.first == s.unacked.next_seq == 15
    assert wait_for(lambda: srv.conns[0]["seqs"] == list(range(15)))
    assert values(srv.conns[0]) == list(range(15)) and len(srv.conns) == 1


def test_an_ack_beyond_what_was_written_forgets_nothing_unwritten(server, clock):
    srv = server(acks=True, auto_ack=False)
    buf, t, s = make(srv.path, clock)
    push(buf, 3)
    assert s.flush_once() == 3
    srv.ack(0, 1000)
    assert wait_for(lambda: s.flush_once() == 0 and len(s.unacked) == 0)
    assert s.unacked.first == 3
    push(buf, 2, start=3)
    assert s.flush_once() == 2 and len(s.unacked) == 2


def test_after_a_restart_lines_are_sent_again_from_the_first_unacked_one(server, clock):
    srv = server(acks=True, auto_ack=False)
    buf, t, s = make(srv.path, clock, batch=4)
    push(buf, 10)
    assert s.flush_once() == 10  # three batches: 0-3, 4-7, 8-9
    assert wait_for(lambda: len(srv.conns[0]["lines"]) == 10)
    srv.ack(0, 6)  # in the middle of the second batch
    assert wait_for(lambda: s.flush_once() == 0 and s.unacked.first == 6)
    restart(srv, clock)
    push(buf, 3, start=10)
    assert s.flush_once() == 0 and not t.connected  # finds the connection gone
    clock.advance(60)
    assert s.flush_once() == 7
    assert wait_for(lambda: len(srv.conns) == 2 and len(srv.conns[1]["lines"]) == 7)
    c2 = srv.conns[1]
    assert c2["hello"]["seq"] == 6 and c2["hello"]["dropped"] == 0
    # 6-9 again, in order and before anything new, then 10-12: no gap, nothing acked resent.
    assert values(c2) == list(range(6, 13)) and c2["seqs"] == list(range(6, 13))
    assert values(srv.conns[0]) == list(range(10))
    srv.ack(1, 13)
    assert wait_for(lambda: s.flush_once() == 0 and len(s.unacked) == 0)
    assert s.finish(2.0) == 0
    assert wait_for(lambda: srv.conns[1]["eof"])
    assert srv.conns[1]["bye"] == {"bye": True, "sent": 7, "dropped": 0}


def test_a_stream_through_a_crash_loses_nothing_and_repeats_only_the_unacked(server, clock):
    """Events flow, the runtime acknowledging as it reads; it is cut off mid-stream and
    comes back: the union of what both connections got is every event, and the second
    starts exactly at the last ack the first one sent."""
    srv = server(acks=True)
    buf, t, s = make(srv.path, clock, batch=50)
    n = 0
    for _ in range(20):
        push(buf, 50, start=n)
        n += 50
        s.flush_once()
        time.sleep(0.003)
    srv.stop()
    assert wait_for(lambda: srv.conns[0]["eof"])
    acked = srv.conns[0]["acked"]
    got = len(srv.conns[0]["lines"])
    assert acked <= got
    srv.start()
    for _ in range(10):
        push(buf, 50, start=n)
        n += 50
        clock.advance(60)
        s.flush_once()
    assert s.finish(5.0) == 0
    assert wait_for(lambda: len(srv.conns) == 2 and srv.conns[1]["eof"])
    first, second = srv.conns
    assert second["hello"]["seq"] == acked
    assert values(second) == list(range(acked, n)) and second["seqs"] == list(range(acked, n))
    assert values(first) == list(range(got))
    assert second["bye"] == {"bye": True, "sent": n - acked, "dropped": 0}


def test_finish_waits_for_the_last_acks(server, clock):
    srv = server(acks=True)
    buf, t, s = make(srv.path, clock, sleep=time.sleep)
    push(buf, 20)
    assert s.finish(5.0) == 0
    assert t.acked == 20 and len(s.unacked) == 0
    assert wait_for(lambda: srv.conns[0]["eof"])
    assert srv.conns[0]["bye"] == {"bye": True, "sent": 20, "dropped": 0}


def test_finish_counts_unacked_lines_as_dropped_when_the_runtime_is_gone(server, clock, caplog):
    srv = server(acks=True, auto_ack=False)
    buf, t, s = make(srv.path, clock)
    push(buf, 8)
    assert s.flush_once() == 8
    srv.ack(0, 3)
    assert wait_for(lambda: s.flush_once() == 0 and s.unacked.first == 3)
    srv.stop()  # and it does not come back
    with caplog.at_level(logging.WARNING, logger="swarmtel_locust"):
        assert s.finish(2.0) == 5
    assert any("5 events dropped in total" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ overflow


def test_overflow_of_unacked_lines_is_counted_as_dropped_and_warned_once(server, clock, caplog):
    srv = server(acks=True, auto_ack=False)  # a runtime that reads but never acknowledges
    buf, t, s = make(srv.path, clock, capacity=100, retain=10)
    with caplog.at_level(logging.WARNING, logger="swarmtel_locust"):
        for round_ in range(4):
            push(buf, 8, start=8 * round_)
            assert s.flush_once() == 8
            s.report()
    # 32 written, 10 kept: the 22 oldest can no longer be sent again.
    assert buf.dropped == 22 and len(s.unacked) == 10 and s.unacked.first == 22
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "acknowledges too slowly" in warnings[0] and "6 events dropped so far" in warnings[0]  # at the second round
    restart(srv, clock)
    assert s.flush_once() == 0
    clock.advance(60)
    assert s.flush_once() == 10
    assert wait_for(lambda: len(srv.conns) == 2 and len(srv.conns[1]["lines"]) == 10)
    c2 = srv.conns[1]
    assert c2["hello"]["seq"] == 22 and c2["hello"]["dropped"] == 22
    assert values(c2) == list(range(22, 32))


# ------------------------------------------------------------------ an older runtime


def test_a_runtime_without_acks_gets_each_line_once_and_nothing_is_kept(server, clock):
    srv = server(acks=False)
    buf, t, s = make(srv.path, clock)
    push(buf, 10)
    assert s.flush_once() == 10
    assert srv.conns[0]["hello"]["seq"] == 0  # asked, but the reply says nothing of acks
    assert not t.acks and len(s.unacked) == 0  # written: forgotten at once
    assert wait_for(lambda: len(srv.conns[0]["lines"]) == 10)
    restart(srv, clock)
    push(buf, 4, start=10)
    assert s.flush_once() == 0
    clock.advance(60)
    assert s.flush_once() == 4
    assert s.finish(2.0) == 0
    assert wait_for(lambda: len(srv.conns) == 2 and srv.conns[1]["eof"])
    c2 = srv.conns[1]
    assert c2["hello"]["seq"] == 10
    assert values(c2) == list(range(10, 14))  # nothing sent twice
    assert c2["bye"] == {"bye": True, "sent": 4, "dropped": 0}
    assert c2["seqs"] == []  # the old server numbers nothing


def test_finish_does_not_wait_for_acks_from_a_runtime_without_them(server, clock):
    srv = server(acks=False)
    slept = []
    buf, t, s = make(srv.path, clock, sleep=slept.append)
    push(buf, 5)
    assert s.finish(5.0) == 0
    assert [d for d in slept if d] == []  # no waiting at all
