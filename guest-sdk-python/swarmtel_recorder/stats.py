"""The master's statistics snapshot (the ``stats`` hook), shaped like Locust's ``StatsEntry``
and ``StatsError``."""

from typing import Dict, Optional, Union

#: A response-time histogram key: whole milliseconds as an int, or a float where a locustfile
#: replaced Locust's rounding with fractional buckets (as in Locust's own dict).
Milliseconds = Union[int, float]


class StatsEntry:
    """One row of Locust's aggregated statistics, with Locust's attribute names."""

    __slots__ = (
        "method",
        "name",
        "num_requests",
        "num_failures",
        "total_response_time",
        "min_response_time",
        "max_response_time",
        "total_content_length",
        "response_times",
        "current_rps",
        "current_fail_per_sec",
        "start_time",
        "last_request_timestamp",
    )

    def __init__(
        self,
        method: str,
        name: str,
        num_requests: int,
        num_failures: int,
        total_response_time: float,
        min_response_time: float,
        max_response_time: float,
        total_content_length: int,
        response_times: Dict[Milliseconds, int],
        current_rps: float,
        current_fail_per_sec: float,
        start_time: Optional[float] = None,
        last_request_timestamp: Optional[float] = None,
    ):
        #: Locust's ``method`` (request type); empty for the ``Aggregated`` row.
        self.method = method
        #: Locust's ``name``; ``Aggregated`` for the total row.
        self.name = name
        #: Requests so far.
        self.num_requests = num_requests
        #: Failed requests so far.
        self.num_failures = num_failures
        #: Sum of response times, in milliseconds.
        self.total_response_time = total_response_time
        #: Smallest response time in milliseconds (0 when there was none).
        self.min_response_time = min_response_time
        #: Largest response time in milliseconds.
        self.max_response_time = max_response_time
        #: Sum of response lengths, in bytes.
        self.total_content_length = total_content_length
        #: Locust's rounded histogram: milliseconds (an int when whole, else a float) → count.
        self.response_times = response_times
        #: Requests per second over Locust's current window.
        self.current_rps = current_rps
        #: Failures per second over Locust's current window.
        self.current_fail_per_sec = current_fail_per_sec
        #: When this entry started counting (the last stats reset), Unix seconds; None when
        #: the bridge did not send it.
        self.start_time = start_time
        #: When its last request was counted, Unix seconds; None before the first request or
        #: when the bridge did not send it.
        self.last_request_timestamp = last_request_timestamp

    @property
    def avg_response_time(self) -> float:
        """Mean response time in milliseconds (0 without requests)."""
        return self.total_response_time / self.num_requests if self.num_requests else 0.0

    @property
    def fail_ratio(self) -> float:
        """Failures per request (0 without requests)."""
        return self.num_failures / self.num_requests if self.num_requests else 0.0

    def get_response_time_percentile(self, percent: float) -> Milliseconds:
        """Locust's ``calculate_response_time_percentile`` over this row's histogram."""
        wanted = int(self.num_requests * percent)
        processed = 0
        for ms in sorted(self.response_times, reverse=True):
            processed += self.response_times[ms]
            if self.num_requests - processed <= wanted:
                return ms
        return 0

    def __repr__(self) -> str:
        return "StatsEntry(%s %s: %d requests)" % (self.method, self.name, self.num_requests)


def milliseconds(value: float) -> Milliseconds:
    """A histogram key as Locust's dict holds it: an int when whole, else the float."""
    return int(value) if float(value).is_integer() else value


class StatsError:
    """One row of Locust's error table, with Locust's attribute names, and when the bridge
    first and last saw it."""

    __slots__ = ("method", "name", "error", "occurrences", "first_seen", "last_seen")

    def __init__(
        self,
        method: str,
        name: str,
        error: str,
        occurrences: int,
        first_seen: Optional[float] = None,
        last_seen: Optional[float] = None,
    ):
        #: Locust's ``method`` (request type).
        self.method = method
        #: Locust's ``name``.
        self.name = name
        #: The error text, as Locust shows it.
        self.error = error
        #: How many times it happened since the last stats reset.
        self.occurrences = occurrences
        #: When the bridge first saw it, Unix seconds; None when not known.
        self.first_seen = first_seen
        #: When the bridge last saw it, Unix seconds; None when not known.
        self.last_seen = last_seen

    def __repr__(self) -> str:
        return "StatsError(%s %s: %r x%d)" % (self.method, self.name, self.error, self.occurrences)
