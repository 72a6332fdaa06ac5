"""The connection to ``swarmtel serve``: endpoint parsing, connect, hello, writes, bye,
and the reconnect backoff."""
from __future__ import annotations

import json
import logging
import random
import select
import socket
import time
from typing import Callable, Dict, List, Optional, Tuple


PROTOCOL_VERSION = 1
CLIENT = "swarmtel-locust/0.1.0"
MAX_REPLY = 64 * 1024

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

    @property
    def connected(self) -> bool:
        """Whether a connection with an accepted hello is open."""
        return self.sock is not None

    # ---------------------------------------------------------------- connecting

    def _hello(self) -> bytes:
        hello = {"hello": "swarmtel", "version": PROTOCOL_VERSION}
        for key, value in self.hello_fields().items():
            if value is not None:
                hello[key] = value
        hello["dropped"] = int(self.dropped())
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
        line = data.split(b"\n", 1)[0]
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
            if not self._peer_closed():
                return True
            self._fail("runtime closed the connection")
        if self.refused is not None:
            return False
        if not force and self.clock() < self.next_attempt:
            return False
        sock = None
        try:
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
        self.connections += 1
        self.backoff.reset()
        self.last_error = None
        return True

    def _peer_closed(self) -> bool:
        """Non-blocking check whether the server closed its side (it sends nothing after
        the hello reply, so readability means EOF or an error)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return False
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _schedule(self, reason: str) -> None:
        self.last_error = reason
        self.next_attempt = self.clock() + self.backoff.next_delay()

    def _fail(self, reason: str) -> None:
        self.close()
        self._schedule(reason)

    # ---------------------------------------------------------------- writing

    def send(self, data: bytes, line_ends: List[int]) -> int:
        """Write ``data`` (whole lines; ``line_ends[i]`` is the offset just past line i).
        Return how many lines were fully written. On any error (timeout, broken pipe) the
        connection is dropped and a reconnect scheduled; a partially written line is not
        counted."""
        if self.sock is None:
            return 0
        view = memoryview(data)
        off = 0
        try:
            while off < len(data):
                off += self.sock.send(view[off:])
        except (OSError, ValueError) as e:
            self._fail(_describe(e))
        written = 0
        for end in line_ends:
            if end > off:
                break
            written += 1
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
        """Close the socket (if any)."""
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
