"""The bounded buffer drops and counts past capacity and never blocks."""
import time

from swarmtel_locust.buffer import EventBuffer


def test_drops_and_counts_past_capacity():
    b = EventBuffer(3, reserve=0)
    assert [b.push(i) for i in range(5)] == [True, True, True, False, False]
    assert len(b) == 3 and b.dropped == 2
    assert b.drain(10) == [0, 1, 2]  # the oldest are kept, the newest dropped
    assert b.push(9) and b.dropped == 2


def test_control_reserve_beyond_capacity():
    b = EventBuffer(2, reserve=1)
    b.push(1), b.push(2)
    assert not b.push(3)
    assert b.push_control("test_stop")
    assert not b.push_control("quit")
    assert b.dropped == 2 and b.drain(10) == [1, 2, "test_stop"]


def test_closed_buffer_counts_everything():
    b = EventBuffer(10)
    b.push(1)
    assert b.discard_all() == 1
    b.close()
    assert not b.push(2) and not b.push_control(3)
    assert len(b) == 0 and b.dropped == 3


def test_push_never_blocks_and_is_cheap():
    b = EventBuffer(1000)
    t0 = time.perf_counter()
    for i in range(200000):
        b.push(("request", 0.0, "GET", "/", 1.0, 0, None, None, None, 200, None))
    assert time.perf_counter() - t0 < 1.0
    assert len(b) == 1000 and b.dropped == 199000
