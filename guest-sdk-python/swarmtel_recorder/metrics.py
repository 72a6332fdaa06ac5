"""Metric points: counters, gauges and Locust response-time histograms, handed to the host
beside the telemetry of a call and exported by its metrics outputs (Prometheus, OTLP).

A recorder reports them with ``self.add_counter``, ``self.set_gauge`` and
``self.record_response_times`` (see `BaseTelemetryRecorder`). Points of one call that name the
same series (name, kind and attributes) are merged into one: counter increments add up, the
last gauge value wins, response times add up. So a per-request listener may call
``add_counter`` each time and the host still gets one point per series and call.

The SDK checks what is plainly wrong at the call (a negative counter, NaN, a bool passed as a
number, an attribute that is not text, an integer or a boolean) and raises `MetricError`. The
host checks the rest: names, units, attribute keys, and how many series a plugin may create.
"""

import math
from bisect import bisect_left
from collections import Counter
from functools import reduce
from itertools import repeat
from operator import add
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

from .errors import AuthorError

#: The largest counter increment (the WIT's ``u64``).
U64_MAX = 2**64 - 1
#: The largest response-time bucket (the WIT's ``u32``), in milliseconds: about 49.7 days.
U32_MAX = 2**32 - 1
#: The response times a bucket holds are below this many milliseconds (from here on they
#: round past `U32_MAX`).
RESPONSE_TIME_LIMIT_MS = 4_294_967_500.0
_S64 = (-(2**63), 2**63 - 1)

#: An attribute value: text, an integer (64-bit) or a boolean.
AttributeValue = Union[str, int, bool]


class MetricError(AuthorError, ValueError):
    """A metric call the host would refuse, raised at the call (an `AuthorError` that names the
    author's line, and a `ValueError`)."""


def bucket_response_time(response_time_ms: float) -> int:
    """Locust's ``bucket_response_time``: a response time in milliseconds rounded to about two
    significant digits, with Python's ``round`` (a half goes to the even neighbour): to 1 ms
    below 100 ms, to 10 ms below 1 s, to 100 ms below 10 s, to 1 s above (147 → 150,
    145 → 140, 3432 → 3400, 58760 → 59000)."""
    if response_time_ms < 100:
        return round(response_time_ms)
    if response_time_ms < 1000:
        return int(round(response_time_ms, -1))
    if response_time_ms < 10000:
        return int(round(response_time_ms, -2))
    return int(round(response_time_ms, -3))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _out_of_range(response_time_ms: float) -> str:
    return "a response time is a number of milliseconds from 0 to below %d, got %r" % (
        RESPONSE_TIME_LIMIT_MS,
        response_time_ms,
    )


class ResponseTimes:
    """Response times counted in Locust's rounded buckets, as a `StatsEntry` counts them, so
    histograms from every call, node and worker merge exactly, as Locust's master merges them.

    ``observe(ms)`` counts one time; ``buckets`` maps the rounded milliseconds to counts,
    ``sum_ms`` is the sum of the exact (unrounded) times. Hand it to
    ``recorder.record_response_times(name, times)``, which copies it, then ``reset()`` it:
    each point holds the times observed since the series was last reported.

    A time is a number of milliseconds from 0 to below ``limit_ms`` (about 49.7 days, where
    the rounded time no longer fits the host's 32-bit bucket); anything else raises
    `MetricError`.
    """

    __slots__ = ("buckets", "sum_ms")

    #: Times from this many milliseconds on do not fit a bucket.
    limit_ms = RESPONSE_TIME_LIMIT_MS

    def __init__(self) -> None:
        #: Rounded milliseconds → how many times fell there.
        self.buckets: Dict[int, int] = {}
        #: The sum of the exact response times, in milliseconds.
        self.sum_ms = 0.0

    def observe(self, response_time_ms: float) -> None:
        """Counts one response time, in milliseconds (from 0 to below ``limit_ms``)."""
        if not _is_number(response_time_ms):
            raise MetricError(
                "ResponseTimes.observe: a response time is a number of milliseconds, got %r" % (response_time_ms,)
            )
        if not 0 <= response_time_ms < RESPONSE_TIME_LIMIT_MS:  # NaN fails too
            raise MetricError("ResponseTimes.observe: %s" % _out_of_range(response_time_ms))
        bucket = bucket_response_time(response_time_ms)
        buckets = self.buckets
        buckets[bucket] = buckets.get(bucket, 0) + 1
        self.sum_ms += response_time_ms

    def observe_many(self, response_times_ms: Iterable[float]) -> None:
        """Counts every time of an iterable: the same as `observe` for each, in order, but
        the rounding and counting run in C (for ``on_requests`` columns)."""
        times = list(response_times_ms)
        if not times:
            return
        if not set(map(type, times)) <= {int, float}:
            for time in times:  # bools, strings, other number types: checked one by one
                self.observe(time)
            return
        values = sorted(times)
        total = 0.0
        if values[0] >= 0 and values[-1] < RESPONSE_TIME_LIMIT_MS:
            total = reduce(add, times, self.sum_ms)  # the additions of `observe`, in order
        if not total == total or not values[0] >= 0 or not values[-1] < RESPONSE_TIME_LIMIT_MS:  # NaN: total is NaN
            bad = next(t for t in times if not 0 <= t < RESPONSE_TIME_LIMIT_MS)
            raise MetricError("ResponseTimes.observe_many: %s" % _out_of_range(bad))
        cut_100 = bisect_left(values, 100)
        cut_1000 = bisect_left(values, 1000, cut_100)
        cut_10000 = bisect_left(values, 10000, cut_1000)
        counts = Counter(map(round, values[:cut_100]))
        for start, end, digits in ((cut_100, cut_1000, -1), (cut_1000, cut_10000, -2), (cut_10000, len(values), -3)):
            if start < end:
                counts.update(map(int, map(round, values[start:end], repeat(digits))))
        buckets = self.buckets
        for bucket, count in counts.items():
            buckets[bucket] = buckets.get(bucket, 0) + count
        self.sum_ms = total

    def reset(self) -> None:
        """Forgets every time observed."""
        self.buckets = {}
        self.sum_ms = 0.0

    @property
    def count(self) -> int:
        """How many times were observed."""
        return sum(self.buckets.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResponseTimes):
            return NotImplemented
        return self.buckets == other.buckets and self.sum_ms == other.sum_ms

    def __repr__(self) -> str:
        buckets = dict(sorted(self.buckets.items()))
        return "ResponseTimes(count=%d, sum_ms=%r, buckets=%r)" % (self.count, self.sum_ms, buckets)


class MetricPoint(NamedTuple):
    """One point as the WIT `metric-point` carries it, in plain Python values."""

    #: The metric's name, such as ``checkout.items``.
    name: str
    #: ``counter``, ``gauge`` or ``response_times``.
    kind: str
    #: An int (counter increment), a float (gauge), or ``(buckets, sum_ms)`` for response
    #: times, the buckets as ascending ``(ms, count)`` pairs.
    value: Any
    #: Its unit (UCUM), such as ``ms`` or ``By``; empty for none.
    unit: str
    #: One line on what it measures.
    description: str
    #: ``(key, value)`` pairs, in the order given.
    attributes: Tuple[Tuple[str, AttributeValue], ...]


def _text(call: str, what: str, value: Any) -> str:
    if not isinstance(value, str):
        raise MetricError("%s: %s must be a str, got %r" % (call, what, value))
    return value


def _attributes(
    call: str, attributes: Optional[Mapping[str, AttributeValue]]
) -> Tuple[Tuple[str, AttributeValue], ...]:
    if attributes is None:
        return ()
    if not isinstance(attributes, Mapping):
        raise MetricError("%s: attributes must be a dict of str to str, int or bool, got %r" % (call, attributes))
    pairs = []
    for key, value in attributes.items():
        if not isinstance(key, str):
            raise MetricError("%s: attribute key %r is not a str" % (call, key))
        if isinstance(value, bool) or isinstance(value, str):
            pass
        elif isinstance(value, int):
            if not _S64[0] <= value <= _S64[1]:
                raise MetricError("%s: attribute %s: %d does not fit in 64 bits" % (call, key, value))
            value = int(value)
        else:
            raise MetricError(
                "%s: attribute %s: a value is a str, an int or a bool, got %r (%s)"
                % (call, key, value, type(value).__name__)
            )
        pairs.append((key, value))
    return tuple(pairs)


class MetricBuffer:
    """The metric points a recorder reported since its last call, one per series."""

    __slots__ = ("_points",)

    def __init__(self) -> None:
        # (name, kind, attributes with their types) → [point fields..., value]
        self._points: Dict[Tuple[Any, ...], List[Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._points)

    def _slot(
        self, call: str, name: Any, kind: str, unit: Any, description: Any, attributes: Any
    ) -> Tuple[Tuple[Any, ...], Optional[List[Any]], Tuple[Tuple[str, AttributeValue], ...]]:
        """The series key of a point, its merged point so far (None when new), and its
        attributes; checks the name, unit, description and attributes."""
        _text(call, "the name", name)
        pairs = _attributes("%s %s" % (call, name), attributes)
        _text("%s %s" % (call, name), "unit", unit)
        _text("%s %s" % (call, name), "description", description)
        key = (name, kind, tuple(sorted((k, type(v).__name__, v) for k, v in pairs)))
        return key, self._points.get(key), pairs

    def counter(self, name: str, value: Any, unit: Any, description: Any, attributes: Any) -> None:
        """Adds a counter increment."""
        if not isinstance(value, int) or isinstance(value, bool):
            raise MetricError("add_counter %s: an increment is an int >= 0, got %r" % (name, value))
        if not 0 <= value <= U64_MAX:
            raise MetricError("add_counter %s: an increment is an int from 0 to 2**64 - 1, got %d" % (name, value))
        key, slot, pairs = self._slot("add_counter", name, "counter", unit, description, attributes)
        if slot is None:
            self._points[key] = [name, "counter", int(value), unit, description, pairs]
            return
        total = slot[2] + value
        if total > U64_MAX:
            raise MetricError("add_counter %s: the increments of one call add up past 2**64 - 1" % name)
        slot[2] = total

    def gauge(self, name: str, value: Any, unit: Any, description: Any, attributes: Any) -> None:
        """Sets a gauge (the last value of a call wins)."""
        if not _is_number(value):
            raise MetricError("set_gauge %s: a value is an int or a float, got %r" % (name, value))
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise MetricError("set_gauge %s: a value must be finite, got %r" % (name, value))
        key, slot, pairs = self._slot("set_gauge", name, "gauge", unit, description, attributes)
        if slot is None:
            self._points[key] = [name, "gauge", number, unit, description, pairs]
        else:
            slot[2] = number

    def response_times(self, name: str, times: Any, unit: str, description: Any, attributes: Any) -> None:
        """Adds a copy of ``times`` (a `ResponseTimes`)."""
        if not isinstance(times, ResponseTimes):
            raise MetricError(
                "record_response_times %s: times must be a ResponseTimes (swarmtel_recorder.ResponseTimes), got %r"
                % (name, times)
            )
        key, slot, pairs = self._slot("record_response_times", name, "response_times", unit, description, attributes)
        if slot is None:
            copy = (Counter(times.buckets), times.sum_ms)
            self._points[key] = [name, "response_times", copy, unit, description, pairs]
        else:
            buckets, sum_ms = slot[2]
            buckets.update(times.buckets)
            slot[2] = (buckets, sum_ms + times.sum_ms)

    def take(self) -> List[MetricPoint]:
        """The points, in order of first report; the buffer starts over."""
        points = []
        for name, kind, value, unit, description, pairs in self._points.values():
            if kind == "response_times":
                buckets, sum_ms = value
                value = (sorted(buckets.items()), sum_ms)
            points.append(MetricPoint(name, kind, value, unit, description, pairs))
        self._points = {}
        return points
