"""A request-stats recorder in Python: the port of the Rust ``example-plugins/request-stats``.

Aggregates Locust ``request`` events per endpoint and logs counts, failures and response-time
percentiles (computed as Locust does) every tick and at test stop. Same plugin id, recorder,
option, tick interval, schema, messages and fields as the Rust one, so ``swarmtel replay``
writes the same lines for both.

It works on the columns of each batch (``on_requests``), not one call per request, which is
what makes it fast. Build it with ``swarmtel-recorder build request_stats_py``.
"""

from swarmtel_recorder import (
    BaseTelemetryPlugin,
    BaseTelemetryRecorder,
    RequestBatch,
    TelemetryData,
    register_plugin,
)

from .aggregate import RequestStats

#: Interval of the periodic report, in milliseconds of event time.
TICK_INTERVAL_MS = 5000

#: The telemetry name of every report.
TELEMETRY_NAME = "request_stats"

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

    def report(self, is_final: bool) -> None:
        for message, fields in self.stats.report(is_final):
            self.log_telemetry(TelemetryData(type="metric", name=TELEMETRY_NAME), message, **fields)
        self.requests_since_report = 0

    def on_requests(self, batch: RequestBatch) -> None:
        stats = self.stats
        for endpoint_id, endpoint in batch.new_endpoints:
            stats.ensure_endpoint(endpoint_id, endpoint.request_type, endpoint.name)
        endpoints = stats.endpoints
        times, lengths = batch.response_times, batch.response_lengths
        select = batch.select
        groups = batch.indices_by_endpoint()
        for endpoint_id, indices in groups.items():
            endpoints[endpoint_id].record_many(select(times, indices), select(lengths, indices))
        if batch.failure_count:
            ids = batch.endpoint_ids
            for index, _exception in batch.failures:
                endpoints[ids[index]].failures += 1
        self.requests_since_report += len(batch)

    def on_tick(self, time):
        if self.periodic and self.requests_since_report > 0:
            self.report(False)

    def on_test_stop(self, **kwargs):
        self.report(True)

    def on_reset_stats(self):
        self.stats.reset()

    def on_finish(self):
        # Requests that arrived after the last test stop (a worker's final ones) still count.
        if self.requests_since_report > 0:
            self.report(True)


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
