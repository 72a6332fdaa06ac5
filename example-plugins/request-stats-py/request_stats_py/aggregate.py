"""Per-endpoint request statistics, computed the way Locust computes them.

The Python twin of the Rust request-stats' ``aggregate.rs``: same rounding, same percentile
walk, same float operations in the same order, so both give identical numbers. Plain Python
without SDK types. Counting works on whole columns at a time with C-level builtins
(``sorted``, ``map``, ``Counter``, ``functools.reduce``) rather than a Python loop per request.
"""

from bisect import bisect_left
from collections import Counter
from functools import reduce
from math import floor, inf, isfinite
from operator import add
from typing import Dict, List, Optional, Tuple

#: Rust's ``u64::MAX``: where ``as u64`` saturates, and the modulus of its wrapping sums.
U64_MAX = (1 << 64) - 1

#: Below this, ``round(x / 1000.0) * 1000`` (exact) equals Rust's float product.
_EXACT_LIMIT = 2.0 ** 52


def as_u64(value: float) -> int:
    """Rust's ``value as u64``: NaN and negatives to 0, at most ``u64::MAX``."""
    if not value > 0.0:
        return 0
    if value >= 18446744073709551616.0:
        return U64_MAX
    return int(value)


def round_half_away(value: float) -> float:
    """Rust's ``f64::round``: halves away from zero; non-finite values stay as they are."""
    if not isfinite(value):
        return value
    whole = floor(value)
    if value >= 0:
        return float(whole + 1 if value - whole >= 0.5 else whole)
    return -round_half_away(-value)


def round_response_time(response_time_ms: float) -> int:
    """Locust's rounding for its histogram (``StatsEntry._log_response_time``): to 1 ms below
    100 ms, to 10 ms below 1 s, to 100 ms below 10 s, to 1 s above, with Python's ``round``
    (a half goes to the even neighbour: 12.5 → 12, 145 → 140, 1,050 → 1,000).

    Like the Rust recorder: a negative or NaN time counts as 0, and the result saturates at
    ``u64::MAX`` (Rust's ``as u64``), so absurd values never raise."""
    ms = response_time_ms if response_time_ms > 0.0 else 0.0  # NaN → 0, as f64::max(0.0)
    if ms < 100.0:
        return round(ms)
    if ms < 1000.0:
        return round(ms / 10.0) * 10
    if ms < 10000.0:
        return round(ms / 100.0) * 100
    if ms == inf:
        return U64_MAX
    return as_u64(float(round(ms / 1000.0)) * 1000.0)


def count_rounded(histogram: Counter, response_times: List[float]) -> Tuple[float, float]:
    """Adds each response time, rounded as `round_response_time` does, to ``histogram``.

    Returns the smallest and largest value (free, once sorted). Works on the sorted values
    a range at a time, all in C: builtin ``round`` of a float is Python's half-to-even
    rounding, and ``Counter.update`` of an iterable counts in C. Every value must be finite
    (`EndpointStats.record_many` takes `count_rounded_one_by_one` otherwise).
    """
    values = sorted(response_times)
    low = bisect_left(values, 0.0)
    if low:
        histogram[0] += low
    cut_100 = bisect_left(values, 100.0, low)
    histogram.update(map(round, values[low:cut_100]))
    if cut_100 < len(values):
        cut_1000 = bisect_left(values, 1000.0, cut_100)
        cut_10000 = bisect_left(values, 10000.0, cut_1000)
        cut_exact = bisect_left(values, _EXACT_LIMIT, cut_10000)
        for start, end, unit in (
            (cut_100, cut_1000, 10),
            (cut_1000, cut_10000, 100),
            (cut_10000, cut_exact, 1000),
        ):
            if start < end:
                divide = float(unit).__rtruediv__
                scale = unit.__mul__
                histogram.update(map(scale, map(round, map(divide, values[start:end]))))
        if cut_exact < len(values):
            histogram.update(map(round_response_time, values[cut_exact:]))
    return values[0], values[-1]


def count_rounded_one_by_one(histogram: Counter, response_times: List[float]) -> Tuple[float, float]:
    """`count_rounded` for a column with NaN or infinities: one value at a time, min and max
    ignoring NaN (Rust's ``f64::min``/``max``). Returns (inf, 0.0) when every value is NaN."""
    histogram.update(map(round_response_time, response_times))
    finite = [value for value in response_times if value == value]
    if not finite:
        return inf, 0.0
    return min(finite), max(finite)


def percentile(histogram: Dict[int, int], total: int, percent: float) -> int:
    """Locust's ``calculate_response_time_percentile``: the rounded response time below which
    ``percent`` (0 to 1) of ``total`` requests fall."""
    wanted = int(total * percent)
    processed = 0
    for ms in sorted(histogram, reverse=True):
        processed += histogram[ms]
        if max(total - processed, 0) <= wanted:
            return ms
    return 0


def round3(value: float) -> Optional[float]:
    """Milliseconds to three decimals, as the Rust recorder rounds them."""
    rounded = round_half_away(value * 1000.0) / 1000.0
    return rounded if isfinite(rounded) else None  # serde_json writes a non-finite f64 as null


class EndpointStats:
    """Running statistics of one endpoint."""

    __slots__ = (
        "request_type",
        "name",
        "requests",
        "failures",
        "total_response_time_ms",
        "min_response_time_ms",
        "max_response_time_ms",
        "total_bytes",
        "histogram",
    )

    def __init__(self, request_type: str, name: str):
        #: Locust's request type, such as ``GET``.
        self.request_type = request_type
        #: Locust's name, or ``Aggregated`` for the total.
        self.name = name
        #: Requests seen.
        self.requests = 0
        #: Failed requests seen.
        self.failures = 0
        #: Sum of response times, added one by one in request order.
        self.total_response_time_ms = 0.0
        #: Smallest response time (infinity before the first request).
        self.min_response_time_ms = inf
        #: Largest response time.
        self.max_response_time_ms = 0.0
        #: Sum of response lengths in bytes.
        self.total_bytes = 0
        #: Rounded milliseconds → count.
        self.histogram: Counter = Counter()

    def record_many(self, response_times: List[float], response_lengths: List[int]) -> None:
        """Counts several requests, in order."""
        if not response_times:
            return
        self.requests += len(response_times)
        self.total_response_time_ms = reduce(add, response_times, self.total_response_time_ms)
        self.total_bytes = (self.total_bytes + sum(response_lengths)) & U64_MAX  # u64 wraps
        if isfinite(self.total_response_time_ms):
            smallest, largest = count_rounded(self.histogram, response_times)
        else:  # a NaN or an infinity somewhere (or an overflowing sum): the careful way
            smallest, largest = count_rounded_one_by_one(self.histogram, response_times)
        self.min_response_time_ms = min(self.min_response_time_ms, smallest)
        self.max_response_time_ms = max(self.max_response_time_ms, largest)

    def merge(self, other: "EndpointStats") -> None:
        """Adds another endpoint's statistics to these."""
        self.requests += other.requests
        self.failures += other.failures
        self.total_response_time_ms += other.total_response_time_ms
        self.min_response_time_ms = min(self.min_response_time_ms, other.min_response_time_ms)
        self.max_response_time_ms = max(self.max_response_time_ms, other.max_response_time_ms)
        self.total_bytes = (self.total_bytes + other.total_bytes) & U64_MAX
        self.histogram.update(other.histogram)

    def fields(self, is_final: bool) -> Dict[str, object]:
        """The telemetry fields, as the ``request_stats`` schema describes (keys sorted, as
        the Rust recorder writes them)."""
        requests = self.requests
        average = self.total_response_time_ms / requests if requests else 0.0
        minimum = self.min_response_time_ms if requests else 0.0
        histogram = self.histogram
        return {
            "avg_response_time_ms": round3(average),
            "endpoint": self.name,
            "failures": self.failures,
            "final": is_final,
            "max_response_time_ms": round3(self.max_response_time_ms),
            "min_response_time_ms": round3(minimum),
            "p50_ms": percentile(histogram, requests, 0.50),
            "p90_ms": percentile(histogram, requests, 0.90),
            "p95_ms": percentile(histogram, requests, 0.95),
            "p99_ms": percentile(histogram, requests, 0.99),
            "request_type": self.request_type,
            "requests": requests,
            "total_bytes": self.total_bytes,
        }


class RequestStats:
    """Statistics of every endpoint, indexed by a dense endpoint number."""

    def __init__(self) -> None:
        #: Per endpoint number.
        self.endpoints: List[EndpointStats] = []

    def ensure_endpoint(self, index: int, request_type: str, name: str) -> None:
        """Makes sure endpoint number ``index`` exists, named as given."""
        while len(self.endpoints) <= index:
            named = len(self.endpoints) == index
            self.endpoints.append(EndpointStats(request_type if named else "", name if named else ""))

    def reset(self) -> None:
        """Zeroes every count, keeping the endpoints and their numbers (Locust `reset_stats`)."""
        self.endpoints = [EndpointStats(e.request_type, e.name) for e in self.endpoints]

    def total(self) -> EndpointStats:
        """The ``Aggregated`` row over every endpoint."""
        total = EndpointStats("", "Aggregated")
        for endpoint in self.endpoints:
            total.merge(endpoint)
        return total

    def report(self, is_final: bool) -> List[Tuple[str, Dict[str, object]]]:
        """One (message, fields) pair per endpoint that saw requests, ordered by request type
        and name, then the ``Aggregated`` row."""
        seen = sorted(
            (e for e in self.endpoints if e.requests > 0), key=lambda e: (e.request_type, e.name)
        )
        seen.append(self.total())
        return [
            (
                ("%s %s: %d requests, %d failures" % (s.request_type, s.name, s.requests, s.failures)).lstrip(),
                s.fields(is_final),
            )
            for s in seen
        ]
