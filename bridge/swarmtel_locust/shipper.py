"""Moves buffered events to the runtime: encode in batches, number and keep the lines until
the runtime acknowledges them, write, write again after a reconnect what was not
acknowledged, and report loss (once while running, in total at the end)."""
from __future__ import annotations

import logging
try:
    from gevent.lock import RLock
except ImportError:  # pragma: no cover
    from threading import RLock
import time
from typing import Callable, Optional, Tuple

from .buffer import EventBuffer
from .encode import encode_line
from .retain import Unacked
from .transport import Transport

log = logging.getLogger("swarmtel_locust")

#: While waiting for the last acknowledgements at the end: seconds between reads.
ACK_POLL = 0.05


class Shipper:
    """The bridge's single writer. ``identity()`` gives the ``(role, node)`` stamped on
    each line; ``can_connect()`` is false while a worker still waits for its run id.
    ``clock``/``sleep`` are injectable for tests (under Locust, ``time.sleep`` is gevent's).

    Every encoded line gets a sequence number (from 0, over the process's life) and stays
    in :attr:`unacked` (at most ``retain`` lines, default the buffer's capacity) until the
    runtime acknowledges it; a runtime that does not offer acks gets each line once, and
    a written line is forgotten at once. Each connection starts (its hello's ``seq``) at
    the first line kept, so after a reconnect the runtime gets again, in order and before
    anything new, every line it did not acknowledge. Lines forgotten because more than
    ``retain`` await their ack are counted as dropped."""

    def __init__(self, buffer: EventBuffer, transport: Transport, identity: Callable[[], Tuple[str, str]],
                 *, can_connect: Callable[[], bool] = lambda: True, batch: int = 1000,
                 max_batches: int = 100, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, waiting_reason: str = "waiting for the run id",
                 retain: Optional[int] = None):
        self.buffer = buffer
        self.unacked = Unacked(buffer.capacity if retain is None else retain)
        self.transport = transport
        transport.first_seq = lambda: self.unacked.first
        transport.on_ack = self.unacked.forget_before
        self.identity = identity
        self.can_connect = can_connect
        self.batch = batch
        self.max_batches = max_batches
        self.clock = clock
        self.sleep = sleep
        self.waiting_reason = waiting_reason
        self.lock = RLock()
        self.stopped = False
        self.finished = False
        self.warned_loss = False
        self.noted_unreachable = False
        self.overflowed = False  # lines awaiting an ack were forgotten (and counted)
        self._loop_error_logged = False

    # ---------------------------------------------------------------- one round

    def flush_once(self, force_connect: bool = False, deadline: Optional[float] = None) -> int:
        """Connect if due (reading the runtime's acks when connected), then write up to
        ``max_batches`` batches: first the kept lines this connection has not had yet
        (after a reconnect, from its hello's ``seq``), then new events. Return lines
        written."""
        with self.lock:
            if self.finished or not self.can_connect():
                return 0
            t = self.transport
            if not t.try_connect(force=force_connect):
                if t.refused is not None:
                    self.discard_all()
                    self.buffer.close()
                return 0
            kept = self.unacked
            written = 0
            for _ in range(self.max_batches):
                if deadline is not None and self.clock() >= deadline:
                    break
                batch = kept.after(t.position)
                if batch is None:
                    if not len(self.buffer):
                        break
                    batch = self._encode(min(self.batch, kept.capacity))
                    if batch is None:
                        continue
                data, count = batch
                n = t.send(data, count)
                written += n
                if not t.acks:  # a runtime that does not acknowledge: written is delivered
                    kept.forget_before(t.position)
                if n < count:  # connection dropped mid-batch: the rest goes on the next one
                    break
                self.sleep(0)  # let user greenlets run between batches
            return written

    def _encode(self, max_items: int) -> Optional[Tuple[bytes, int]]:
        """Encode up to ``max_items`` buffered events as one batch and keep it: ``(data,
        lines)``, or ``None`` when none could be encoded."""
        items = self.buffer.drain(max_items)
        role, node = self.identity()
        lines = []
        for item in items:
            try:
                lines.append(encode_line(item, role, node))
            except Exception as e:  # unserialisable or too long: lose this one only
                log.debug("swarmtel-locust: dropping an event that cannot be encoded: %s", e)
                self.buffer.count_dropped(1)
        if not lines:
            return None
        data = b"".join(lines)
        forgotten = self.unacked.add(data, len(lines))
        if forgotten:  # more lines await their ack than we keep: the oldest cannot be resent
            self.overflowed = True
            self.buffer.count_dropped(forgotten)
        return data, len(lines)

    def discard_all(self) -> int:
        """Drop and count every buffered event and every kept line; return how many."""
        return self.buffer.discard_all() + self._count_kept(self.unacked.clear())

    def _count_kept(self, n: int) -> int:
        self.buffer.count_dropped(n)
        return n

    def unwritten(self) -> bool:
        """Whether events still have to be written: buffered ones, or kept lines the
        current connection has not had (every kept line when there is no connection: the
        next one starts with them)."""
        if len(self.buffer):
            return True
        t = self.transport
        if t.connected:
            return t.position < self.unacked.next_seq
        return len(self.unacked) > 0

    def awaiting_acks(self) -> bool:
        """Whether the connected runtime has lines to acknowledge still."""
        return self.transport.connected and self.transport.acks and len(self.unacked) > 0

    # ---------------------------------------------------------------- bounded flush

    def flush(self, timeout: float = 10.0, acked: bool = False) -> bool:
        """Write everything buffered, waiting at most ``timeout`` seconds; with ``acked``,
        also wait (within the same time) until a runtime that acknowledges has acknowledged
        it all. A disconnected transport gets up to two immediate connect attempts, no
        backoff wait. Return whether nothing is left to write (or, with ``acked``, to be
        acknowledged)."""
        deadline = self.clock() + timeout
        attempts = 0
        waits, max_waits = 0, int(timeout / ACK_POLL) + 1
        with self.lock:
            while self.clock() < deadline and not self.finished:
                waiting = acked and not self.unwritten() and self.awaiting_acks()
                if not waiting and not self.unwritten():
                    break
                if not self.can_connect() or self.transport.refused is not None:
                    break
                if not self.transport.connected:
                    if attempts >= 2:
                        break
                    attempts += 1
                    if not self.transport.try_connect(force=True):
                        continue
                if waiting:
                    if waits >= max_waits:
                        break
                    waits += 1
                    self.sleep(ACK_POLL)
                self.flush_once(deadline=deadline)
            return not self.unwritten() and not (acked and self.awaiting_acks())

    # ---------------------------------------------------------------- loop

    def run(self, interval: float) -> None:
        """The flusher loop: every ``interval`` seconds, one :meth:`flush_once`."""
        while not self.stopped:
            self.sleep(interval)
            if self.stopped:
                break
            try:
                self.flush_once()
                self.report()
            except Exception:  # never let the flusher die silently, never crash the test
                if not self._loop_error_logged:
                    self._loop_error_logged = True
                    log.exception("swarmtel-locust: flusher error (continuing)")

    def loss_reason(self, final: bool = False) -> str:
        """Why events are being lost, in words (``final``: at the end, no retry talk)."""
        t = self.transport
        if t.refused is not None:
            return f"runtime at {t.endpoint} refused the hello ({t.refused})" + ("" if final else "; not retrying")
        if not self.can_connect():
            return f"{self.waiting_reason}; buffer full"
        if not t.connected and t.last_error:
            return f"runtime at {t.endpoint} unreachable ({t.last_error})" + ("" if final else "; retrying with backoff")
        if self.overflowed:
            return (f"runtime at {t.endpoint} acknowledges too slowly (more than {self.unacked.capacity} sent "
                    f"lines awaiting acknowledgement; the oldest can no longer be sent again)")
        return f"runtime at {t.endpoint} too slow (buffer of {self.buffer.capacity} events full)"

    def report(self) -> None:
        """Log, once each: that the runtime is not reachable yet (info), and that telemetry
        is being lost (warning, with the reason and the count so far)."""
        t = self.transport
        if not self.noted_unreachable and not t.connected and t.last_error and t.refused is None:
            self.noted_unreachable = True
            log.info("swarmtel-locust: runtime at %s not reachable (%s); buffering up to %d events "
                     "and retrying with backoff", t.endpoint, t.last_error, self.buffer.capacity)
        if not self.warned_loss and self.buffer.dropped > 0:
            self.warned_loss = True
            log.warning("swarmtel-locust: telemetry is being lost: %s; %d events dropped so far",
                        self.loss_reason(), self.buffer.dropped)

    # ---------------------------------------------------------------- end

    def finish(self, timeout: float = 10.0) -> int:
        """Final flush (bounded), count what is left as dropped, send the bye and close.
        Log the total dropped when not zero. Return the total dropped."""
        self.stopped = True
        with self.lock:
            if self.finished:
                return self.buffer.dropped
            reason = None
            if not self.flush(timeout, acked=True):
                reason = self.loss_reason(final=True)
            self.finished = True
            t = self.transport
            # What the runtime did not get: kept lines not written on the open connection, or
            # every kept line when it is gone. Lines written on the open connection count as
            # delivered (the bye's `sent` lets the runtime check), acknowledged or not.
            kept = self.unacked
            self._count_kept(kept.next_seq - t.position if t.connected else len(kept))
            kept.clear()
            self.buffer.discard_all()
            self.buffer.close()
            t.bye(self.buffer.dropped)
            dropped = self.buffer.dropped
        if dropped:
            log.warning("swarmtel-locust: %d events dropped in total (%s)", dropped,
                        reason or self.transport.last_error or "buffer was full")
        return dropped
