"""Run id generation: time-ordered UUIDv7-style strings."""
from __future__ import annotations

import os
import time
import uuid
from typing import Callable, Optional


def uuid7(now: Optional[float] = None, randbytes: Callable[[int], bytes] = os.urandom) -> str:
    """A UUIDv7-style id: 48-bit Unix-ms timestamp, version 7, variant 10, 74 random bits."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    rnd = int.from_bytes(randbytes(10), "big")
    rand_a = (rnd >> 68) & 0xFFF
    rand_b = rnd & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))
