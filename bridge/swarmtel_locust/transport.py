"""The connection to ``swarmtel serve``: endpoint parsing, connect, hello, writes, the
runtime's acknowledgements, bye, and the reconnect backoff."""
from __future__ import annotations

import json
import logging
import random
import select
import socket
import time
from typing import Callable, Dict, Optional, Tuple

from .child import quote_output

PROTOCOL_VERSION = 1
CLIENT = "swarmtel-locust/0.1.0"
MAX_REPLY = 64 * 1024
#: At most this many reads of the runtime's acknowledgements per :meth:`Transport.poll`.
MAX_POLL_READS = 16

log = logging.getLogger("swarmtel_locust")


def parse_endpoint(endpoint: str) -> Tuple[str, object]:
    """Parse ``unix:/path``, ``tcp:host:port`` or ``host:port`` into
    ``("unix", path)`` or ``("tcp", (host, port))``; raise ``ValueError`` otherwise."""
    ep = (endpoint or "").strip()
    if ep.startswith("unix:"):
        path = ep[len("unix:"):]
        if not path:
            raise ValueError(f"bad endpoint {endpoint!r}: empty socket path")
        return "unix", path
    if ep.startswith("tcp:"):
        ep = ep[len("tcp:"):]
    host, sep, port = ep.rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise ValueError(f"bad endpoint {endpoint!r}: expected unix:/path, tcp:host:port or host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return "tcp", (host, int(port))


def connect(endpoint: str, timeout: float) -> socket.socket:
    """Open a stream socket to ``endpoint`` with a connect timeout."""
    kind, addr = parse_endpoint(endpoint)
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection(addr, timeout=timeout)


class Backoff:
    """Exponential backoff: ``initial`` doubling up to ``cap`` seconds, each delay
    shortened by up to ``jitter`` (a fraction) at random."""

    def __init__(self, initial: float = 0.5, cap: float = 10.0, factor: float = 2.0,
                 jitter: float = 0.2, rng: Callable[[], float] = random.random):
        self.initial, self.cap, self.factor, self.jitter, self.rng = initial, cap, factor, jitter, rng
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; grows on each call."""
        base = min(self.cap, self.initial * (self.factor ** self.attempt))
        self.attempt += 1
        return base * (1.0 - self.jitter * self.rng())

    def reset(self) -> None:
        """Start over from ``initial`` (after a successful connection)."""
        self.attempt = 0


class HelloRefused(Exception):
    """The server answered the hello with ``ok:false``. ``retry``: the server said the
    refusal is temporary (too many connections)."""

    def __init__(self, message: str, retry: bool = False):
        super().__init__(message)
        self.retry = retry


class Transport:
    """One logical link to the runtime, reconnecting as needed.

    ``hello_fields()`` returns the hello's ``role``, ``node``, ``run_id``, ``testplan``
    and ``token`` (``None`` values are left out); ``dropped()`` returns the events lost so
    far, sent in each hello. Errors never escape: they close the socket, set
    :attr:`last_error` and schedule a reconnect with :class:`Backoff`. A refused hello
    sets :attr:`refused` and the transport never connects again, unless the server marked the
    refusal ``retry`` (then it backs off and tries again).

    Acknowledgements (wire protocol, section 3a): when :attr:`first_seq` is set, each hello
    carries ``seq``, its value then. A runtime that answers ``"acks":true`` (:attr:`acks`)
    sends ``{"ack":N}`` frames, read by :meth:`poll` without waiting; each one, never past
    what this connection wrote, goes to :attr:`on_ack`. :attr:`position` is the sequence
    number of the next line this connection writes.

    Readiness (wire protocol, sections 2 and 3a): a runtime still loading its plugins answers
    ``"ready":false`` and holds the lines it receives until they are loaded; to a hello with
    ``seq`` it then sends ``{"ready":true}`` (:attr:`ready` becomes true), or
    ``{"error":"..."}`` just before it exits because loading failed (kept in
    :attr:`runtime_error`). Unless :attr:`log_readiness` is off, each is logged once, the
    error as an error with the runtime's words. The transport never waits for readiness
    itself: it sends, and the runtime holds the lines.
    """

    def __init__(self, endpoint: str, hello_fields: Callable[[], Dict], dropped: Callable[[], int],
                 *, connect_timeout: float = 2.0, io_timeout: float = 5.0,
                 backoff: Optional[Backoff] = None, clock: Callable[[], float] = time.monotonic):
        self.endpoint = endpoint
        self.hello_fields = hello_fields
        self.dropped = dropped
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.sock: Optional[socket.socket] = None
        self.sent = 0  # event lines fully written on the current connection
        self.total_sent = 0
        self.connections = 0
        self.refused: Optional[str] = None
        self.last_error: Optional[str] = None
        self.next_attempt = 0.0
        self.reply: Optional[Dict] = None
        #: The sequence number of the first line the next connection will send (sent in its
        #: hello as ``seq``, asking for acks); ``None``: do not ask.
        self.first_seq: Optional[Callable[[], int]] = None
        #: Called with N for each ``{"ack":N}`` frame: every line before N is processed.
        self.on_ack: Optional[Callable[[int], None]] = None
        #: The current connection's runtime acknowledges its lines.
        self.acks = False
        self.hello_seq = 0  # the current connection's hello ``seq`` (0 when none was sent)
        self._offered_seq = 0
        self._offered_seq_sent = False
        self.acked = 0  # the highest acknowledgement received on the current connection
        self._inbox = b""  # bytes the runtime sent that do not make a whole line yet
        #: Whether the current connection's runtime has loaded its plugins: its reply did not
        #: say ``"ready":false``, or a ``{"ready":true}`` frame came since.
        self.ready = False
        #: Whether the current connection's runtime will send a ``ready`` or ``error`` frame:
        #: it answered ``"ready":false`` to a hello that had ``seq``.
        self.awaiting_ready = False
        #: The runtime's words from the last ``{"error":...}`` frame (it failed to load its
        #: plugins and is exiting), or ``None``.
        self.runtime_error: Optional[str] = None
        #: Log, once each per transport, that the runtime is loading its plugins (info), that
        #: it became ready (info) and its error frame (error). Off while a caller reports
        #: readiness itself (the bridge waiting for the runtime it started).
        self.log_readiness = True
        self._logged = set()
        #: What the current connection's runtime wants sent (wire protocol, section 2:
        #: ``{"requests": bool, "url": bool, "context": bool}``), or ``None`` while it is not
        #: known (not connected, still loading, an older runtime): then everything is sent.
        self.wants: Optional[Dict[str, bool]] = None
        #: Called with :attr:`wants` whenever it changes.
        self.on_wants: Optional[Callable[[Optional[Dict[str, bool]]], None]] = None

    @property
    def connected(self) -> bool:
        """Whether a connection with an accepted hello is open."""
        return self.sock is not None

    @property
    def position(self) -> int:
        """The sequence number of the next line written on the current connection."""
        return self.hello_seq + self.sent

    # ---------------------------------------------------------------- connecting

    def _hello(self) -> bytes:
        hello = {"hello": "swarmtel", "version": PROTOCOL_VERSION}
        for key, value in self.hello_fields().items():
            if value is not None:
                hello[key] = value
        hello["dropped"] = int(self.dropped())
        self._offered_seq = 0
        self._offered_seq_sent = self.first_seq is not None
        if self.first_seq is not None:
            self._offered_seq = hello["seq"] = int(self.first_seq())
        hello["client"] = CLIENT
        return (json.dumps(hello, separators=(",", ":")) + "\n").encode("utf-8")

    def _read_reply(self, sock: socket.socket) -> Dict:
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed before the hello reply")
            data += chunk
            if len(data) > MAX_REPLY:
                raise ConnectionError("hello reply too long")
        line, self._inbox = data.split(b"\n", 1)
        try:
            reply = json.loads(line.decode("utf-8"))
        except ValueError:
            raise ConnectionError(f"bad hello reply: {line[:200]!r}") from None
        if not isinstance(reply, dict) or reply.get("hello") != "swarmtel":
            raise ConnectionError(f"bad hello reply: {line[:200]!r}")
        if reply.get("ok") is not True:
            raise HelloRefused(str(reply.get("error") or "no reason given"), reply.get("retry") is True)
        return reply

    def try_connect(self, force: bool = False) -> bool:
        """Connect and exchange hellos unless connected, refused, or (without ``force``)
        still backing off. Return whether connected."""
        if self.sock is not None:
            if self.poll():
                return True
            self._fail("runtime closed the connection")
        if self.refused is not None:
            return False
        if not force and self.clock() < self.next_attempt:
            return False
        sock = None
        try:
            self._inbox = b""
            sock = connect(self.endpoint, self.connect_timeout)
            sock.settimeout(self.io_timeout)
            sock.sendall(self._hello())
            self.reply = self._read_reply(sock)
        except HelloRefused as e:
            if sock is not None:
                sock.close()
            if e.retry:
                self._schedule(f"runtime asked to retry: {e}")
                return False
            self.refused = str(e)
            self.last_error = f"runtime refused the hello: {e}"
            log.error("swarmtel-locust: the runtime at %s refused the hello: %s; "
                      "telemetry is off for this process (not retrying)", self.endpoint, e)
            return False
        except (OSError, ValueError) as e:
            if sock is not None:
                sock.close()
            self._schedule(_describe(e))
            return False
        self.sock = sock
        self.sent = 0
        self.hello_seq = self._offered_seq
        self.acks = self.first_seq is not None and self.reply.get("acks") is True
        self.acked = self.hello_seq
        self.ready = self.reply.get("ready") is not False
        self.awaiting_ready = not self.ready and self._offered_seq_sent
        if not self.ready:
            self._note("loading", logging.INFO, "the runtime at %s is still loading its plugins; it holds "
                       "the events sent meanwhile and processes them once it is ready", self.endpoint)
        self.connections += 1
        self.backoff.reset()
        self.last_error = None
        self._set_wants(self.reply.get("wants") if self.ready else None)
        self._take(b"")  # anything that came with the reply
        return True

    def _set_wants(self, wants: object) -> None:
        """Take what the runtime wants sent; anything but an object of booleans is ``None``
        (send everything)."""
        if not (isinstance(wants, dict)
                and all(type(wants.get(key)) is bool for key in ("requests", "url", "context"))):
            wants = None
        else:
            wants = {key: wants[key] for key in ("requests", "url", "context")}
        if wants != self.wants:
            self.wants = wants
            if self.on_wants is not None:
                self.on_wants(wants)

    def poll(self) -> bool:
        """Read what the runtime sent since the hello reply, without waiting (a ``select``
        with no timeout before each read, so under gevent no greenlet ever waits here): hand
        each acknowledgement to :attr:`on_ack`, note the ``ready`` and ``error`` frames. Return False when the connection is
        gone: closed by the runtime (end of stream), an error, or a line over 64 KiB. Acks
        read before the end of the stream still count."""
        sock = self.sock
        if sock is None:
            return False
        try:
            for _ in range(MAX_POLL_READS):
                readable, _, _ = select.select([sock], [], [], 0)
                if not readable:
                    return True
                data = sock.recv(65536)
                if not data:
                    return False
                if not self._take(data):
                    return False
        except (OSError, ValueError):
            return False
        return True

    def _take(self, data: bytes) -> bool:
        """Parse the whole lines of what arrived (acks, and the ``ready`` and ``error``
        frames); False when a line is too long. Anything else is ignored."""
        inbox = self._inbox + data
        *lines, self._inbox = inbox.split(b"\n")
        if len(self._inbox) > MAX_REPLY:
            return False
        for line in lines:
            try:
                frame = json.loads(line)
            except ValueError:
                continue
            if not isinstance(frame, dict):
                continue
            if frame.get("ready") is True and not self.ready:
                self.ready = True
                self.awaiting_ready = False
                self._note("ready", logging.INFO, "the runtime at %s is ready", self.endpoint)
                self._set_wants(frame.get("wants"))
            if "error" in frame:
                self._runtime_failed(frame["error"])
            ack = frame.get("ack")
            if not self.acks or type(ack) is not int:  # acks only from a runtime that offered them
                continue
            ack = min(ack, self.position)  # never past what this connection wrote
            if ack > self.acked:
                self.acked = ack
                if self.on_ack is not None:
                    self.on_ack(ack)
        return True

    def _runtime_failed(self, error: object) -> None:
        """An ``{"error":...}`` frame: the runtime could not load its plugins and exits."""
        text = error if isinstance(error, str) else json.dumps(error)
        self.runtime_error = text.strip() or "no reason given"
        self.awaiting_ready = False
        self._note("error", logging.ERROR, "the runtime at %s could not load its plugins and is exiting: %s",
                   self.endpoint, quote_output(self.runtime_error.encode("utf-8")))

    def _note(self, what: str, level: int, message: str, *args: object) -> None:
        """Log ``message`` once per transport for ``what``, unless :attr:`log_readiness` is off."""
        if self.log_readiness and what not in self._logged:
            self._logged.add(what)
            log.log(level, "swarmtel-locust: " + message, *args)

    def _schedule(self, reason: str) -> None:
        self.last_error = reason
        self.next_attempt = self.clock() + self.backoff.next_delay()

    def _fail(self, reason: str) -> None:
        self.close()
        self._schedule(reason)

    # ---------------------------------------------------------------- writing

    def send(self, data: bytes, lines: int) -> int:
        """Write ``data``, ``lines`` whole lines. Return how many lines were fully written.
        On any error (timeout, broken pipe) the connection is dropped and a reconnect
        scheduled; a partially written line is not counted."""
        if self.sock is None:
            return 0
        view = memoryview(data)
        off = 0
        try:
            while off < len(data):
                off += self.sock.send(view[off:])
        except (OSError, ValueError) as e:
            self._fail(_describe(e))
        written = lines if off == len(data) else data.count(b"\n", 0, off)
        self.sent += written
        self.total_sent += written
        return written

    def bye(self, dropped: int) -> bool:
        """Send the bye frame (``sent`` of this connection, ``dropped`` overall) and close."""
        if self.sock is None:
            return False
        frame = json.dumps({"bye": True, "sent": self.sent, "dropped": int(dropped)},
                           separators=(",", ":")) + "\n"
        ok = True
        try:
            self.sock.sendall(frame.encode("utf-8"))
        except (OSError, ValueError) as e:
            self.last_error = _describe(e)
            ok = False
        self.close()
        return ok

    def close(self) -> None:
        """Close the socket (if any). What the next runtime wants is not known yet: until it
        says, everything is sent."""
        self._set_wants(None)
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _describe(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
