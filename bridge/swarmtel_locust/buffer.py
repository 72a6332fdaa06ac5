"""A bounded, never-blocking event buffer that counts what it drops."""
from __future__ import annotations

from collections import deque
from typing import Any, List


class EventBuffer:
    """FIFO of raw event items. ``push`` never blocks: past ``capacity`` it drops the new
    item and counts it. Control events (lifecycle hooks, stats) get a small ``reserve``
    beyond capacity so a request flood does not crowd out ``test_stop`` or ``quit``.

    ``dropped`` is the bridge's total loss counter: other parts add to it through
    :meth:`count_dropped`.
    """

    def __init__(self, capacity: int, reserve: int = 1000):
        self.capacity = max(1, int(capacity))
        self.reserve = max(0, int(reserve))
        self.dropped = 0
        self.closed = False
        self._items: deque = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: Any) -> bool:
        """Append a high-volume item (a request); drop and count it when full or closed."""
        if self.closed or len(self._items) >= self.capacity:
            self.dropped += 1
            return False
        self._items.append(item)
        return True

    def push_control(self, item: Any) -> bool:
        """Append a control item, allowed up to ``capacity + reserve``."""
        if self.closed or len(self._items) >= self.capacity + self.reserve:
            self.dropped += 1
            return False
        self._items.append(item)
        return True

    def drain(self, max_items: int) -> List[Any]:
        """Remove and return up to ``max_items`` items, oldest first."""
        items = self._items
        n = min(max_items, len(items))
        return [items.popleft() for _ in range(n)]

    def take_over(self, other: "EventBuffer") -> None:
        """Move ``other``'s items behind this buffer's (as far as capacity + reserve allow;
        the rest are dropped and counted) and add its loss count to this one's."""
        items = other.drain(len(other))
        room = max(0, self.capacity + self.reserve - len(self._items))
        if self.closed:
            room = 0
        self._items.extend(items[:room])
        self.dropped += other.dropped + len(items[room:])

    def count_dropped(self, n: int) -> None:
        """Add ``n`` events lost elsewhere (encoding, transport) to the loss counter."""
        self.dropped += n

    def discard_all(self) -> int:
        """Drop and count everything buffered; return how many."""
        n = len(self._items)
        self._items.clear()
        self.dropped += n
        return n

    def close(self) -> None:
        """Refuse (and count) every later push."""
        self.closed = True
