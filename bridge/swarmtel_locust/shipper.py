"""Moves buffered events to the runtime: encode in batches, write, requeue what a broken
connection did not take, and report loss (once while running, in total at the end)."""
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
from .transport import Transport

log = logging.getLogger("swarmtel_locust")


class Shipper:
    """The bridge's single writer. ``identity()`` gives the ``(role, node)`` stamped on
    each line; ``can_connect()`` is false while a worker still waits for its run id.
    ``clock``/``sleep`` are injectable for tests (under Locust, ``time.sleep`` is gevent's)."""

    def __init__(self, buffer: EventBuffer, transport: Transport, identity: Callable[[], Tuple[str, str]],
                 *, can_connect: Callable[[], bool] = lambda: True, batch: int = 1000,
                 max_batches: int = 100, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, waiting_reason: str = "waiting for the run id"):
        self.buffer = buffer
        self.transport = transport
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
        self._loop_error_logged = False

    # ---------------------------------------------------------------- one round

    def flush_once(self, force_connect: bool = False, deadline: Optional[float] = None) -> int:
        """Connect if due, then write up to ``max_batches`` batches. Return lines written."""
        with self.lock:
            if self.finished or not self.can_connect():
                return 0
            t = self.transport
            if not t.try_connect(force=force_connect):
                if t.refused is not None:
                    self.buffer.discard_all()
                    self.buffer.close()
                return 0
            written = 0
            for _ in range(self.max_batches):
                if not len(self.buffer) or (deadline is not None and self.clock() >= deadline):
                    break
                items = self.buffer.drain(self.batch)
                role, node = self.identity()
                lines, kept, ends, off = [], [], [], 0
                for item in items:
                    try:
                        line = encode_line(item, role, node)
                    except Exception as e:  # unserialisable or too long: lose this one only
                        log.debug("swarmtel-locust: dropping an event that cannot be encoded: %s", e)
                        self.buffer.count_dropped(1)
                        continue
                    lines.append(line)
                    kept.append(item)
                    off += len(line)
                    ends.append(off)
                if not lines:
                    continue
                n = t.send(b"".join(lines), ends)
                written += n
                if n < len(kept):  # connection dropped mid-batch: resend the rest on the next one
                    self.buffer.requeue_front(kept[n:])
                    break
                self.sleep(0)  # let user greenlets run between batches
            return written

    # ---------------------------------------------------------------- bounded flush

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything buffered, waiting at most ``timeout`` seconds. A disconnected
        transport gets up to two immediate connect attempts, no backoff wait. Return
        whether the buffer is empty."""
        deadline = self.clock() + timeout
        attempts = 0
        with self.lock:
            while len(self.buffer) and self.clock() < deadline and not self.finished:
                if not self.can_connect() or self.transport.refused is not None:
                    break
                if not self.transport.connected:
                    if attempts >= 2:
                        break
                    attempts += 1
                    if not self.transport.try_connect(force=True):
                        continue
                self.flush_once(deadline=deadline)
            return not len(self.buffer)

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
            if not self.flush(timeout):
                reason = self.loss_reason(final=True)
            self.finished = True
            self.buffer.discard_all()
            self.buffer.close()
            self.transport.bye(self.buffer.dropped)
            dropped = self.buffer.dropped
        if dropped:
            log.warning("swarmtel-locust: %d events dropped in total (%s)", dropped,
                        reason or self.transport.last_error or "buffer was full")
        return dropped
