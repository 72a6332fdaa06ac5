"""Starting and stopping ``swarmtel serve`` as a child process of the Locust master."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from typing import Callable, List, Optional

log = logging.getLogger("swarmtel_locust")


def serve_argv(binary: str, config: str, endpoint: str) -> List[str]:
    """The child's exact command line."""
    return [binary, "serve", "--config", config, "--listen", endpoint]


class ServerChild:
    """A ``swarmtel serve`` child: stdout/stderr inherited, stdin closed, in its own
    session (so a terminal Ctrl-C reaches Locust only, and the bridge flushes before the
    child is stopped). The token, if any, is passed as ``SWARMTEL_TOKEN`` in its
    environment, never on the command line."""

    def __init__(self, binary: str, config: str, endpoint: str, token: Optional[str] = None):
        self.argv = serve_argv(binary, config, endpoint)
        self.token = token
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> bool:
        """Start the child; log an error and return False when it cannot be started."""
        env = dict(os.environ)
        if self.token:
            env["SWARMTEL_TOKEN"] = self.token
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        except OSError as e:
            log.error("swarmtel-locust: cannot start %s: %s", " ".join(self.argv), e)
            return False
        log.info("swarmtel-locust: started %s (pid %d)", " ".join(self.argv), self.proc.pid)
        return True

    def exited(self) -> Optional[int]:
        """The exit code if the child has exited, else ``None``."""
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 20.0, interval: float = 0.1,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> bool:
        """Poll ``probe`` (a connect attempt) until it succeeds, the child exits, or
        ``timeout`` passes."""
        deadline = clock() + timeout
        while True:
            if probe():
                return True
            code = self.exited()
            if code is not None:
                log.error("swarmtel-locust: %s exited with code %s before accepting connections",
                          " ".join(self.argv), code)
                return False
            if clock() >= deadline:
                log.error("swarmtel-locust: %s did not accept connections within %.0f s",
                          " ".join(self.argv), timeout)
                return False
            sleep(interval)

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGTERM, wait up to ``timeout``, then SIGKILL with a warning. Return the exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        try:
            proc.send_signal(signal.SIGTERM)
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("swarmtel-locust: %s did not exit %.0f s after SIGTERM; killing it",
                        " ".join(self.argv), timeout)
            proc.kill()
            return proc.wait()
        except OSError:
            return proc.poll()
