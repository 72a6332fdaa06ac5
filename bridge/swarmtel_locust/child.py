"""Starting and stopping ``swarmtel serve`` as a child process of the Locust master."""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from typing import Callable, List, NamedTuple, Optional

log = logging.getLogger("swarmtel_locust")

#: How much of the child's latest stderr output is kept, to quote when it fails to start.
STDERR_TAIL = 16 * 1024
#: At most this many characters of it are quoted in the bridge's error message.
QUOTE_LIMIT = 2000
#: How long to wait, once the child has exited, for the rest of its stderr.
DRAIN_TIMEOUT = 2.0
#: While waiting for the child to be ready: seconds between progress lines.
PROGRESS_EVERY = 10.0
#: How long to wait for the child to exit after it sent an error frame.
ERROR_EXIT_TIMEOUT = 5.0

#: What a readiness probe found (:meth:`ServerChild.wait_ready`): the runtime does not accept
#: connections yet; it accepted the hello and loads its plugins; it is ready; it refused the
#: hello; it failed (an error frame) before it was ready.
STARTING, LOADING, READY, REFUSED, FAILED = "starting", "loading", "ready", "refused", "failed"


class Probe(NamedTuple):
    """One look at the runtime: ``state`` (:data:`STARTING`, :data:`LOADING`, :data:`READY`,
    :data:`REFUSED` or :data:`FAILED`) and, for the last two, the runtime's ``words``."""

    state: str
    words: Optional[str] = None

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def serve_argv(binary: str, config: str, endpoint: str) -> List[str]:
    """The child's exact command line."""
    return [binary, "serve", "--config", config, "--listen", endpoint]


def quote_output(data: bytes, limit: int = QUOTE_LIMIT) -> str:
    """A child's stderr as one log-safe line: decoded (bad UTF-8 replaced), terminal escapes
    removed, other control characters written ``\\xNN``, blank lines dropped, lines joined
    with `` | ``, and only the last ``limit`` characters kept (an error comes last)."""
    text = _ANSI.sub("", data.decode("utf-8", "replace").replace("\r", "\n"))
    lines = [_CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()), line.strip())
             for line in text.split("\n")]
    quoted = " | ".join(line for line in lines if line)
    if len(quoted) > limit:
        quoted = "..." + quoted[len(quoted) - limit:]
    return quoted or "(no output)"


def _start_native_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a real OS thread, also when gevent has patched ``threading``: the
    relay blocks in ``os.read`` and must never wait for Locust's event loop."""
    try:
        from gevent import monkey
        start = monkey.get_original("_thread", "start_new_thread")
    except Exception:  # pragma: no cover - gevent is always there under Locust
        import _thread
        start = _thread.start_new_thread
    start(fn, ())


class ServerChild:
    """A ``swarmtel serve`` child: stdout inherited, stdin closed, in its own session (so a
    terminal Ctrl-C reaches Locust only, and the bridge flushes before the child is
    stopped). The token, if any, is passed as ``SWARMTEL_TOKEN`` in its environment, never
    on the command line.

    Its stderr goes through a pipe that a native thread copies to this process's stderr
    (``stderr_fd``) as it comes, keeping the latest :data:`STDERR_TAIL` bytes: when the
    child exits before it is ready, :attr:`failure` quotes them. Being a pipe,
    the runtime logs its status every 10 s instead of drawing a status line. The thread
    never waits for Locust, so a busy Locust never blocks the runtime's stderr."""

    def __init__(self, binary: str, config: str, endpoint: str, token: Optional[str] = None,
                 stderr_fd: int = 2):
        self.argv = serve_argv(binary, config, endpoint)
        self.token = token
        self.stderr_fd = stderr_fd
        self.proc: Optional[subprocess.Popen] = None
        #: Why the child is not serving, in words (set by :meth:`start` / :meth:`wait_ready`).
        self.failure: Optional[str] = None
        self._tail = b""
        self._relay_done = True

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    def start(self) -> bool:
        """Start the child. When it cannot be started, set :attr:`failure` and return False."""
        env = dict(os.environ)
        if self.token:
            env["SWARMTEL_TOKEN"] = self.token
        read_fd, write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stderr=write_fd, env=env,
                                         start_new_session=True)
        except OSError as e:
            os.close(read_fd)
            self.failure = f"cannot run {self.command}: {e.strerror or e}"
            return False
        finally:
            os.close(write_fd)
        self._relay_done = False
        _start_native_thread(lambda: self._relay(read_fd))
        log.info("swarmtel-locust: started %s (pid %d)", self.command, self.proc.pid)
        return True

    def _relay(self, fd: int) -> None:
        """Copy the child's stderr to ours until it closes (native thread)."""
        out_ok = True
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                self._tail = (self._tail + chunk)[-STDERR_TAIL:]
                view = memoryview(chunk)
                while out_ok and view:
                    try:
                        view = view[os.write(self.stderr_fd, view):]
                    except InterruptedError:
                        continue
                    except OSError:  # our stderr is gone: keep draining, so the child never blocks
                        out_ok = False
        finally:
            os.close(fd)
            self._relay_done = True

    def stderr_tail(self) -> bytes:
        """The latest bytes the child wrote to stderr."""
        return self._tail

    def exited(self) -> Optional[int]:
        """The exit code if the child has exited, else ``None``."""
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, probe: Callable[[], "Probe"], interval: float = 0.1,
                   progress_every: float = PROGRESS_EVERY, error_exit_timeout: float = ERROR_EXIT_TIMEOUT,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> bool:
        """Wait until the child is ready to take a test's events, never giving up while it
        runs: call ``probe`` (connect, read the runtime's frames) every ``interval`` seconds
        until it says :data:`READY` (return True) or the child fails (set :attr:`failure`,
        return False): it exits (its stderr quoted), refuses the hello
        (``Probe(REFUSED, reason)``), or sends an error frame (``Probe(FAILED, words)``; the
        child exits just after, so its stderr is quoted once it has, at most
        ``error_exit_timeout`` seconds later).

        Every ``progress_every`` seconds it logs what it waits for: the runtime to accept
        connections (:data:`STARTING`) or to load its plugins (:data:`LOADING`). A runtime
        that never gets there and never exits is waited for until the process is
        interrupted (Ctrl-C), which the caller handles."""
        started = clock()
        next_progress = started + progress_every
        accepted = False  # the runtime answered a hello and loads its plugins
        while True:
            state, words = probe()
            if state == READY:
                if accepted:
                    log.info("swarmtel-locust: the swarmtel runtime is ready (waited %.1f s)", clock() - started)
                return True
            if state == REFUSED:
                self.failure = f"{self.command} refused the bridge's hello: {words}"
                return False
            if state == FAILED:
                self._fail_after_error(words or "no reason given", error_exit_timeout, clock, sleep)
                return False
            if state == LOADING and not accepted:
                accepted = True
                log.info("swarmtel-locust: the swarmtel runtime is loading its plugins; the test starts "
                         "once it is ready")
            code = self.exited()
            if code is not None:  # (whether it answered a hello first is a race: not said)
                self.wait_relayed(sleep=sleep)
                self.failure = f"{self.command} exited with code {code} before it was ready: {quote_output(self._tail)}"
                return False
            now = clock()
            if now >= next_progress:
                waited = next_progress - started
                while next_progress <= now:
                    next_progress += progress_every
                what = "load its plugins" if state == LOADING else "accept connections"
                log.info("swarmtel-locust: waiting for the swarmtel runtime to %s (%.0f s)", what, waited)
            sleep(interval)

    def _fail_after_error(self, words: str, timeout: float, clock: Callable[[], float],
                          sleep: Callable[[float], None]) -> None:
        """The runtime sent an error frame: wait (bounded) for it to exit, then set
        :attr:`failure` quoting its stderr (and the frame's words, when they are not in it)."""
        deadline = clock() + timeout
        code = self.exited()
        while code is None and clock() < deadline:
            sleep(0.05)
            code = self.exited()
        said = quote_output(words.encode("utf-8"))
        if code is None:
            self.failure = f"{self.command} failed before it was ready: {said}"
            return
        self.wait_relayed(sleep=sleep)
        quoted = quote_output(self._tail)
        if said not in quoted:
            quoted = f"{said} | {quoted}" if self._tail.strip() else said
        self.failure = f"{self.command} exited with code {code} before it was ready: {quoted}"

    def wait_relayed(self, timeout: float = DRAIN_TIMEOUT, sleep: Callable[[float], None] = time.sleep) -> bool:
        """Wait (bounded) until everything the exited child wrote to stderr has been copied,
        so its last words (the runtime's summary) are not cut off when Locust exits."""
        deadline = time.monotonic() + timeout
        while not self._relay_done and time.monotonic() < deadline:
            sleep(0.01)
        return self._relay_done

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGTERM, wait up to ``timeout``, then SIGKILL with a warning; then let the relay
        copy the child's last output. Return the exit code."""
        code = self._stop(timeout)
        self.wait_relayed()
        return code

    def _stop(self, timeout: float) -> Optional[int]:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        try:
            proc.send_signal(signal.SIGTERM)
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("swarmtel-locust: %s did not exit %.0f s after SIGTERM; killing it",
                        self.command, timeout)
            proc.kill()
            return proc.wait()
        except OSError:
            return proc.poll()
