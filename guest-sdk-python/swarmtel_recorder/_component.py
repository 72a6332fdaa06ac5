"""The component side: converts WIT values to the SDK's plain ones and back. Nothing else.

Imported only inside a component built by ``swarmtel-recorder build`` (its generated entry
module imports the author's module, then this one). ``wit_world`` exists only there. Importing
happens at build time (componentize-py pre-initializes), so the plugin is described once,
then and there, and the description is part of the snapshot.
"""

import logging

import wit_world
from componentize_py_types import Err
from wit_world.exports import plugin as _plugin_exports
from wit_world.imports import host as _host
from wit_world.imports import types as _t

from . import dispatch
from .dispatch import Event
from .errors import Refusal
from .hooks import HOOKS
from .metrics import MetricPoint
from .plugin import registered_plugin
from .stats import StatsEntry, StatsError, milliseconds

_INFO = dispatch.describe(registered_plugin())

_TYPES = {"event": _t.TelemetryType.EVENT, "metric": _t.TelemetryType.METRIC}
_OPTION_TYPES = {
    "text": (_t.OptionType.TEXT, _t.OptionValue_Text),
    "integer": (_t.OptionType.INTEGER, _t.OptionValue_Integer),
    "float": (_t.OptionType.FLOAT, _t.OptionValue_Float),
    "boolean": (_t.OptionType.BOOLEAN, _t.OptionValue_Boolean),
}
_ROLES = {"master": _t.Role.MASTER, "worker": _t.Role.WORKER, "standalone": _t.Role.STANDALONE}
_ROLE_NAMES = {value: key for key, value in _ROLES.items()}
_EXTRAS = {"url": _t.RequestExtras.URL, "context": _t.RequestExtras.CONTEXT}


def _kind(hook_name: str) -> "_t.EventKind":
    return _t.EventKind[HOOKS[hook_name].kind.upper().replace("-", "_")]


def _plugin_info(info: dispatch.PluginInfo) -> "_t.PluginInfo":
    options = []
    for spec in info.options:
        option_type, value_type = _OPTION_TYPES[spec.option_type]
        default = None if spec.default is None else value_type(spec.default)
        options.append(_t.OptionSpec(spec.name, option_type, default, spec.help, spec.env_var))
    recorders = []
    for recorder in info.recorders:
        extras = _t.RequestExtras(0)
        for extra in recorder.request_extras:
            extras |= _EXTRAS[extra]
        recorders.append(
            _t.RecorderSpec(
                recorder.name,
                [_ROLES[role] for role in recorder.roles],
                [_kind(name) for name in recorder.events],
                recorder.tick_interval_ms,
                extras,
            )
        )
    schemas = [_t.TelemetrySchema(name, text) for name, text in info.schemas]
    return _t.PluginInfo(info.id, info.version, info.description, options, recorders, schemas)


def _stats_entry(row: "_t.EndpointStats") -> StatsEntry:
    return StatsEntry(
        row.request_type,
        row.name,
        row.num_requests,
        row.num_failures,
        row.total_response_time_ms,
        row.min_response_time_ms,
        row.max_response_time_ms,
        row.total_content_length,
        {milliseconds(ms): count for ms, count in row.response_times},
        row.current_rps,
        row.current_fail_per_sec,
        row.start_time,
        row.last_request_time,
    )


def _stats_error(row: "_t.ErrorStats") -> StatsError:
    return StatsError(row.request_type, row.name, row.error, row.occurrences, row.first_seen, row.last_seen)


def _heartbeat(value: "_t.Heartbeat") -> dict:
    return {"client_id": value.client_id, "timestamp": value.timestamp}


#: WIT event case → (hook name, Locust keyword arguments from its payload).
_EVENTS = {
    _t.Event_TestStart: ("test_start", lambda e: {}),
    _t.Event_TestStopping: ("test_stopping", lambda e: {}),
    _t.Event_TestStop: ("test_stop", lambda e: {}),
    _t.Event_SpawningComplete: ("spawning_complete", lambda e: {"user_count": e.value}),
    _t.Event_UserError: (
        "user_error",
        lambda e: {
            "user_instance": e.value.user_instance,
            "exception": e.value.exception,
            "tb": e.value.traceback,
        },
    ),
    _t.Event_CpuWarning: ("cpu_warning", lambda e: {"cpu_usage": e.value}),
    _t.Event_UsageMonitor: (
        "usage_monitor",
        lambda e: {"cpu_usage": e.value.cpu_usage, "memory_usage": e.value.memory_usage},
    ),
    _t.Event_WorkerConnect: ("worker_connect", lambda e: {"client_id": e.value}),
    _t.Event_WorkerReport: (
        "worker_report",
        lambda e: {"client_id": e.value.client_id, "data": {"user_count": e.value.user_count}},
    ),
    _t.Event_HeartbeatSent: ("heartbeat_sent", lambda e: _heartbeat(e.value)),
    _t.Event_HeartbeatReceived: ("heartbeat_received", lambda e: _heartbeat(e.value)),
    _t.Event_ResetStats: ("reset_stats", lambda e: {}),
    _t.Event_Quitting: ("quitting", lambda e: {}),
    _t.Event_Quit: ("quit", lambda e: {"exit_code": e.value}),
    _t.Event_StatsSnapshot: (
        "stats",
        lambda e: {
            "user_count": e.value.user_count,
            "entries": [_stats_entry(row) for row in e.value.entries],
            "total": _stats_entry(e.value.total),
            "errors": [_stats_error(row) for row in e.value.errors],
        },
    ),
    _t.Event_Tick: ("tick", lambda e: {}),
    _t.Event_ProcessSample: (
        "process_sample",
        lambda e: {
            "cpu_percent": e.value.cpu_percent,
            "memory_bytes": e.value.memory_bytes,
            "network_sent_bytes": e.value.network_sent_bytes,
            "network_recv_bytes": e.value.network_recv_bytes,
        },
    ),
}


def _events(timed_events: list) -> list:
    events = []
    for timed in timed_events:
        name, arguments = _EVENTS[type(timed.event)]
        events.append(Event(name, timed.time, arguments(timed.event)))
    return events


def _attribute(key: str, value: object) -> "_t.Attribute":
    if isinstance(value, bool):
        return _t.Attribute(key, _t.AttributeValue_Boolean(value))
    if isinstance(value, int):
        return _t.Attribute(key, _t.AttributeValue_Integer(value))
    return _t.Attribute(key, _t.AttributeValue_Text(value))


def _metric_value(point: MetricPoint) -> "_t.MetricValue":
    if point.kind == "counter":
        return _t.MetricValue_Counter(point.value)
    if point.kind == "gauge":
        return _t.MetricValue_Gauge(point.value)
    buckets, sum_ms = point.value
    return _t.MetricValue_ResponseTimes(_t.ResponseTimes(buckets, sum_ms))


def _output(output: dispatch.Output) -> "_t.RecorderOutput":
    telemetry = [
        _t.Telemetry(_TYPES[kind], name, message, fields) for kind, name, message, fields in output.telemetry
    ]
    metrics = [
        _t.MetricPoint(
            point.name,
            point.unit,
            point.description,
            [_attribute(key, value) for key, value in point.attributes],
            _metric_value(point),
        )
        for point in output.metrics
    ]
    return _t.RecorderOutput(telemetry, metrics)


class _HostLogHandler(logging.Handler):
    """Sends the plugin's ``logging`` records to the host's diagnostics log."""

    _LEVELS = (
        (logging.ERROR, _host.LogLevel.ERROR),
        (logging.WARNING, _host.LogLevel.WARN),
        (logging.INFO, _host.LogLevel.INFO),
        (logging.DEBUG, _host.LogLevel.DEBUG),
    )

    def emit(self, record: logging.LogRecord) -> None:
        level = _host.LogLevel.TRACE
        for threshold, host_level in self._LEVELS:
            if record.levelno >= threshold:
                level = host_level
                break
        _host.log(level, self.format(record))


logging.getLogger().addHandler(_HostLogHandler())


class Recorder(_plugin_exports.Recorder):
    """The WIT `recorder` resource: one SDK `RecorderRuntime`."""

    def __init__(self, runtime: dispatch.RecorderRuntime):
        self._runtime = runtime

    # An exception from the author's code traps: componentize-py prints its traceback to the
    # captured stderr, and the host counts a fault, restarts the recorder or disables it.
    # Anything raised (SystemExit and KeyboardInterrupt too) is first logged through the host's
    # diagnostics log, in one line, so the reason shows even where stderr is not kept; what is
    # not an Exception is raised again as a RuntimeError, which componentize-py reports.
    def handle(self, batch: "_t.EventBatch") -> "_t.RecorderOutput":
        try:
            return _output(self._runtime.handle(batch.requests, _events(batch.events)))
        except Exception as error:
            _log_failure("handle", error)
            raise
        except BaseException as error:  # SystemExit...: componentize-py cannot report these
            _log_failure("handle", error)
            raise RuntimeError("%s: %s" % (type(error).__name__, error)) from error

    def finish(self) -> "_t.RecorderOutput":
        try:
            return _output(self._runtime.finish())
        except Exception as error:
            _log_failure("finish", error)
            raise
        except BaseException as error:  # SystemExit...: componentize-py cannot report these
            _log_failure("finish", error)
            raise RuntimeError("%s: %s" % (type(error).__name__, error)) from error


def _log_failure(call: str, error: BaseException) -> None:
    try:
        import traceback

        frames = traceback.extract_tb(error.__traceback__)
        where = ""
        for frame in frames:
            if "/swarmtel_recorder/" not in frame.filename:
                filename = frame.filename[3:] if frame.filename.startswith("/0/") else frame.filename
                where = " at %s:%s" % (filename, frame.lineno)
        _host.log(_host.LogLevel.ERROR, "recorder %s raised %s: %s%s" % (call, type(error).__name__, error, where))
    except BaseException:
        pass


class Plugin(wit_world.exports.Plugin):
    """The WIT `plugin` interface, served by the SDK's dispatch."""

    def describe(self) -> "_t.PluginInfo":
        return _plugin_info(_INFO)

    def create_recorder(self, config: "_t.RecorderConfig") -> Recorder:
        settings = {setting.name: setting.value.value for setting in config.options}
        try:
            runtime = dispatch.create(
                _INFO, config.recorder, _ROLE_NAMES[config.role], config.node, settings
            )
        except Refusal as refusal:
            raise Err(str(refusal))
        return Recorder(runtime)
