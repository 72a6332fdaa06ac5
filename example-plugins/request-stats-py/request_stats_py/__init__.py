"""A request-stats recorder in Python: the port of the Rust ``example-plugins/request-stats``.

Aggregates Locust ``request`` events per endpoint and logs counts, failures and response-time
percentiles (computed as Locust does) every tick and at test stop. Same plugin id, recorder,
option, tick interval, schema, messages and fields as the Rust one, so ``swarmtel replay``
writes the same lines for both.

Beside the telemetry it reports two metrics per endpoint (attributes ``request_type`` and
``endpoint``), every tick and at the end: the counter ``request_stats.requests`` and the
response-time histogram ``request_stats.duration``.

It works on the columns of each batch (``on_requests``), not one call per request, which is
what makes it fast. Build it with ``swarmtel-recorder build request_stats_py``.
"""

from swarmtel_recorder import (
    BaseTelemetryPlugin,
    BaseTelemetryRecorder,
    RequestBatch,
    ResponseTimes,
    TelemetryData,
    register_plugin,
)

from .aggregate import RequestStats

#: Interval of the periodic report, in milliseconds of event time.
TICK_INTERVAL_MS = 5000

#: The telemetry name of every report.
TELEMETRY_NAME = "request_stats"

#: The metrics: requests per endpoint (a counter), and their response times (a histogram).
REQUESTS_METRIC = "request_stats.requests"
DURATION_METRIC = "request_stats.duration"

#: The host's longest text attribute value, in bytes.
MAX_ATTRIBUTE_BYTES = 256

_COUNT = {"type": "integer", "minimum": 0}
_MS = {"type": "number", "minimum": 0}

#: The JSON Schema of a ``request_stats`` item's fields.
FIELDS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "request_type", "endpoint", "requests", "failures", "avg_response_time_ms",
        "min_response_time_ms", "max_response_time_ms", "p50_ms", "p90_ms", "p95_ms",
        "p99_ms", "total_bytes", "final",
    ],
    "properties": {
        "request_type": {"type": "string"},
        "endpoint": {"type": "string", "minLength": 1},
        "requests": _COUNT, "failures": _COUNT, "total_bytes": _COUNT,
        "avg_response_time_ms": _MS, "min_response_time_ms": _MS, "max_response_time_ms": _MS,
        "p50_ms": _COUNT, "p90_ms": _COUNT, "p95_ms": _COUNT, "p99_ms": _COUNT,
        "final": {"type": "boolean"},
    },
}


class RequestStatsRecorder(BaseTelemetryRecorder):
    """Aggregates requests; reports on tick (when something changed) and at test stop."""

    name = "request_stats_recorder"
    tick_interval_ms = TICK_INTERVAL_MS

    def __init__(self, env):
        super().__init__(env)
        self.stats = RequestStats()
        self.periodic = env.parsed_options.periodic
        self.requests_since_report = 0
        #: Per endpoint id: its metric attributes, and its requests and response times since
        #: the metrics were last reported.
        self.attributes: list = []
        self.pending_requests: list = []
        self.pending_times: list = []

    def report(self, is_final: bool) -> None:
        for message, fields in self.stats.report(is_final):
            self.log_telemetry(TelemetryData(type="metric", name=TELEMETRY_NAME), message, **fields)
        self.requests_since_report = 0

    def on_requests(self, batch: RequestBatch) -> None:
        stats = self.stats
        for endpoint_id, endpoint in batch.new_endpoints:
            stats.ensure_endpoint(endpoint_id, endpoint.request_type, endpoint.name)
            self.attributes.append(
                {"request_type": _attribute(endpoint.request_type), "endpoint": _attribute(endpoint.name)}
            )
            self.pending_requests.append(0)
            self.pending_times.append(ResponseTimes())
        endpoints = stats.endpoints
        times, lengths = batch.response_times, batch.response_lengths
        select = batch.select
        groups = batch.indices_by_endpoint()
        for endpoint_id, indices in groups.items():
            selected = select(times, indices)
            endpoints[endpoint_id].record_many(selected, select(lengths, indices))
            self.pending_requests[endpoint_id] += len(indices)
            if max(selected) >= ResponseTimes.limit_ms:  # absurd times: counted, not timed
                selected = [time for time in selected if time < ResponseTimes.limit_ms]
            self.pending_times[endpoint_id].observe_many(selected)
        if batch.failure_count:
            ids = batch.endpoint_ids
            for index, _exception in batch.failures:
                endpoints[ids[index]].failures += 1
        self.requests_since_report += len(batch)

    def report_metrics(self) -> None:
        """Reports each endpoint's requests and response times since the last report."""
        for endpoint_id, count in enumerate(self.pending_requests):
            if count:
                attributes = self.attributes[endpoint_id]
                times = self.pending_times[endpoint_id]
                self.add_counter(REQUESTS_METRIC, count, unit="{request}",
                                 description="Requests, per endpoint", attributes=attributes)
                self.record_response_times(DURATION_METRIC, times,
                                           description="Response times, per endpoint", attributes=attributes)
                self.pending_requests[endpoint_id] = 0
                times.reset()

    def on_tick(self, time):
        self.report_metrics()
        if self.periodic and self.requests_since_report > 0:
            self.report(False)

    def on_test_stop(self, **kwargs):
        self.report_metrics()
        self.report(True)

    def on_reset_stats(self):
        self.stats.reset()

    def on_finish(self):
        self.report_metrics()
        # Requests that arrived after the last test stop (a worker's final ones) still count.
        if self.requests_since_report > 0:
            self.report(True)


def _attribute(text: str) -> str:
    """``text`` cut to what the host takes as an attribute value (256 bytes of UTF-8)."""
    return text.encode("utf-8")[:MAX_ATTRIBUTE_BYTES].decode("utf-8", "ignore")


class RequestStatsPlugin(BaseTelemetryPlugin):
    """Per-endpoint request counts, failures and response-time percentiles"""

    schemas = {TELEMETRY_NAME: FIELDS_SCHEMA}

    def add_arguments(self, parser):
        group = parser.add_argument_group("telemetry.request_stats", "Request statistics")
        group.add_argument(
            "--periodic",
            type=bool,
            default=True,
            help="Also report every tick, not only at test stop",
            env_var="SWARMTEL_REQUEST_STATS_PERIODIC",
        )

    # Workers see the requests; a standalone run gets the worker's recorders by default.
    def load_worker_telemetry_recorders(self, environment, **kwargs):
        RequestStatsRecorder(env=environment)


register_plugin(plugin=RequestStatsPlugin())
