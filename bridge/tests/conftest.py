import os
import shutil
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BRIDGE = os.path.dirname(HERE)
REPO = os.path.dirname(BRIDGE)
sys.path.insert(0, BRIDGE)
sys.path.insert(0, HERE)

import swarmtel_locust  # noqa: E402,F401  (patches gevent via locust, registers listeners)


@pytest.fixture
def sockdir():
    """A short directory for Unix sockets (tmp_path can exceed the 108-byte limit)."""
    d = tempfile.mkdtemp(prefix="swt-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, dt):
        self.t += dt


@pytest.fixture
def clock():
    return FakeClock()


def wait_for(cond, timeout=5.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()
