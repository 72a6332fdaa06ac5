"""Sent lines kept until the runtime acknowledges them (wire protocol, section 3a)."""
from __future__ import annotations

from collections import deque
from typing import Optional, Tuple


def _offset_after(data: bytes, lines: int) -> int:
    """The byte offset just past the first ``lines`` lines of ``data``."""
    pos = 0
    for _ in range(lines):
        pos = data.index(b"\n", pos) + 1
    return pos


class Unacked:
    """The node's event lines from the first one not yet acknowledged to the last one
    encoded, in order, as the encoded batches they were written in: each chunk is its bytes,
    the sequence number of its first line and its line count, so keeping costs one entry per
    batch, not per line. (A line never holds a raw newline: JSON escapes it.)

    :attr:`next_seq` is the sequence number the next encoded line gets, counted over the
    node's life from 0. At most ``capacity`` lines are kept: :meth:`add` forgets the oldest
    beyond that and says how many, for the caller to count as dropped."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self.lines = 0
        self.next_seq = 0
        self._chunks: deque = deque()  # [first_seq, data, count]

    def __len__(self) -> int:
        return self.lines

    @property
    def first(self) -> int:
        """The sequence number of the oldest kept line (:attr:`next_seq` when none is)."""
        return self._chunks[0][0] if self._chunks else self.next_seq

    def add(self, data: bytes, count: int) -> int:
        """Keep ``count`` newly encoded lines (``data``), numbered from :attr:`next_seq`.
        Return how many of the oldest kept lines were forgotten to stay within capacity."""
        self._chunks.append([self.next_seq, data, count])
        self.next_seq += count
        self.lines += count
        over = self.lines - self.capacity
        if over > 0:
            return self.forget_before(self.first + over)
        return 0

    def forget_before(self, seq: int) -> int:
        """Forget every kept line numbered below ``seq`` (acknowledged, or delivered to a
        runtime that does not acknowledge). Return how many were forgotten."""
        chunks = self._chunks
        forgotten = 0
        while chunks:
            first, data, count = chunks[0]
            if first + count <= seq:
                chunks.popleft()
                forgotten += count
                continue
            if first < seq:
                cut = seq - first
                chunks[0] = [seq, data[_offset_after(data, cut):], count - cut]
                forgotten += cut
            break
        self.lines -= forgotten
        return forgotten

    def after(self, seq: int) -> Optional[Tuple[bytes, int]]:
        """Kept lines from sequence number ``seq`` on, up to the end of the chunk that holds
        it: ``(data, count)``; ``None`` when no kept line is numbered ``seq`` or later."""
        if seq >= self.next_seq:
            return None
        for first, data, count in self._chunks:
            if seq < first + count:
                if seq <= first:
                    return data, count
                skip = seq - first
                return data[_offset_after(data, skip):], count - skip
        return None  # pragma: no cover - seq < next_seq always falls in a chunk

    def clear(self) -> int:
        """Forget everything; return how many lines were kept."""
        n = self.lines
        self._chunks.clear()
        self.lines = 0
        return n
