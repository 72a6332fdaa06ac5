"""Run recorders in plain CPython, for pytest: no build, no host, the same dispatch code.

Two ways in:

- `Harness`: one recorder, fed by hand. ``harness.request(...)`` queues requests,
  ``harness.event("test_stop", time=...)`` delivers them and then the event, and returns the
  telemetry logged: a list of dicts ``{"type", "name", "message", "fields"}``.
- `replay`: a whole event stream (the NDJSON of ``swarmtel replay``), routed to every recorder
  of every node the way the host routes it (batches of requests ended by any other event, at
  most ``batch_size`` requests, ticks in event time); each item also carries ``recorder``,
  ``role``, ``node`` and ``time`` (the time ``swarmtel replay`` writes on its line).

Both return an `Output`: the list of telemetry items, whose ``metrics`` attribute lists the
metric points of the same calls as dicts ``{"name", "type", "value", "unit", "description",
"attributes"}``.

Both take the plugin object, or load it from a file with `load_plugin`.
"""

import importlib
import json
import math
import os
import re
import sys
import unicodedata
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Union

from . import dispatch, plugin as _plugin
from .dispatch import Event, RecorderRuntime
from .errors import AuthorError
from .errors import _relative as _shown
from .hooks import HOOKS
from .metrics import MetricPoint
from .plugin import BaseTelemetryPlugin
from .requests import Endpoint
from .stats import StatsEntry, StatsError, milliseconds

__all__ = [
    "Harness", "replay", "load_plugin", "make_event", "stats_entry", "stats_error", "Output",
    "PluginSource", "TelemetryRejected", "MetricRejected",
]


class Failure(NamedTuple):
    """A failed request of a batch (the WIT `request-failure`)."""

    index: int
    exception: str
    exception_type: str = ""


class Detail(NamedTuple):
    """Per-request extras of a batch (the WIT `request-detail`)."""

    index: int
    url: Optional[str]
    context: Optional[str]


class Columns:
    """A batch's requests in the WIT `request-columns` shape, built as the host builds them:
    the endpoint dictionary in order of first sight within the batch."""

    def __init__(self) -> None:
        self.endpoints: List[Endpoint] = []
        self.endpoint: List[int] = []
        self.start_time: List[float] = []
        self.response_time_ms: List[float] = []
        self.response_length: List[int] = []
        self.status_code: List[int] = []
        self.failures: List[Failure] = []
        self.details: List[Detail] = []
        self._local: Dict[Endpoint, int] = {}

    def push(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int,
        exception: Optional[str],
        start_time: float,
        status_code: int,
        url: Optional[str],
        context: Optional[str],
        exception_type: Optional[str],
        extras: Sequence[str],
    ) -> None:
        """Appends one request."""
        key = Endpoint(request_type, name)
        local = self._local.get(key)
        if local is None:
            local = self._local[key] = len(self.endpoints)
            self.endpoints.append(key)
        index = len(self.endpoint)
        self.endpoint.append(local)
        self.start_time.append(float(start_time))
        self.response_time_ms.append(float(response_time))
        self.response_length.append(int(response_length))
        self.status_code.append(int(status_code))
        if exception is not None:
            self.failures.append(Failure(index, str(exception), exception_type or ""))
        url = url if "url" in extras else None
        context = context if "context" in extras else None
        if url is not None or context is not None:
            self.details.append(Detail(index, url, context))

    def __len__(self) -> int:
        return len(self.endpoint)


PluginSource = Union[BaseTelemetryPlugin, str, "os.PathLike[str]"]


def stats_entry(
    name: str,
    method: str = "",
    num_requests: int = 0,
    num_failures: int = 0,
    total_response_time: float = 0.0,
    min_response_time: float = 0.0,
    max_response_time: float = 0.0,
    total_content_length: int = 0,
    response_times: Optional[Dict[Union[int, float], int]] = None,
    current_rps: float = 0.0,
    current_fail_per_sec: float = 0.0,
    start_time: Optional[float] = None,
    last_request_timestamp: Optional[float] = None,
) -> StatsEntry:
    """A `StatsEntry` for a hand-made ``stats`` event."""
    return StatsEntry(
        method,
        name,
        num_requests,
        num_failures,
        total_response_time,
        min_response_time,
        max_response_time,
        total_content_length,
        {milliseconds(ms): count for ms, count in (response_times or {}).items()},
        current_rps,
        current_fail_per_sec,
        start_time,
        last_request_timestamp,
    )


def stats_error(
    name: str,
    error: str,
    occurrences: int = 1,
    method: str = "",
    first_seen: Optional[float] = None,
    last_seen: Optional[float] = None,
) -> StatsError:
    """A `StatsError` (a row of Locust's error table) for a hand-made ``stats`` event."""
    return StatsError(method, name, error, occurrences, first_seen, last_seen)


def _optional_float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


def _stats_from_json(row: Dict[str, Any]) -> StatsEntry:
    return StatsEntry(
        row.get("request_type") or "",
        row["name"],
        int(row["num_requests"]),
        int(row["num_failures"]),
        float(row["total_response_time"]),
        float(row.get("min_response_time") or 0.0),
        float(row["max_response_time"]),
        int(row.get("total_content_length") or 0),
        {milliseconds(float(ms)): count for ms, count in row.get("response_times") or []},
        float(row.get("current_rps") or 0.0),
        float(row.get("current_fail_per_sec") or 0.0),
        _optional_float(row.get("start_time")),
        _optional_float(row.get("last_request_timestamp")),
    )


def _error_from_json(row: Dict[str, Any]) -> StatsError:
    return StatsError(
        row.get("request_type", row.get("method")) or "",
        row["name"],
        row["error"],
        int(row["occurrences"]),
        _optional_float(row.get("first_seen")),
        _optional_float(row.get("last_seen")),
    )


class _Missing(Exception):
    pass


def make_event(name: str, time: float = 0.0, **arguments: Any) -> Event:
    """An event for the harness, with Locust's keyword arguments, defaulted like the event
    stream's decoder defaults them (``quit`` without ``exit_code`` is 0, and so on).

    ``stats`` takes ``user_count``, ``entries`` and ``total`` (`StatsEntry` objects, see
    `stats_entry`) and ``errors`` (`StatsError` objects, see `stats_error`; none by default);
    ``worker_report`` takes ``client_id`` and ``data={"user_count": n}`` (or
    ``user_count=n``); ``process_sample`` takes ``cpu_percent``, ``memory_bytes``, and
    ``network_sent_bytes`` and ``network_recv_bytes`` (0 by default).
    """
    if name == "request":
        raise ValueError("requests are queued with Harness.request(...)")
    if name not in HOOKS:
        raise ValueError("no hook named %r (hooks: %s)" % (name, ", ".join(HOOKS)))

    def need(key: str) -> Any:
        if key not in arguments:
            raise ValueError("event %s needs %s" % (name, key))
        return arguments[key]

    if name == "spawning_complete":
        values: Dict[str, Any] = {"user_count": int(need("user_count"))}
    elif name == "user_error":
        values = {
            "user_instance": str(arguments.get("user_instance", "")),
            "exception": str(need("exception")),
            "tb": str(arguments.get("tb", "")),
        }
    elif name == "cpu_warning":
        values = {"cpu_usage": float(need("cpu_usage"))}
    elif name == "usage_monitor":
        values = {"cpu_usage": float(need("cpu_usage")), "memory_usage": int(need("memory_usage"))}
    elif name == "worker_connect":
        values = {"client_id": str(need("client_id"))}
    elif name == "worker_report":
        data = arguments.get("data") or {}
        user_count = arguments.get("user_count", data.get("user_count", 0))
        values = {"client_id": str(need("client_id")), "data": {"user_count": int(user_count)}}
    elif name in ("heartbeat_sent", "heartbeat_received"):
        values = {
            "client_id": str(need("client_id")),
            "timestamp": float(arguments.get("timestamp", time)),
        }
    elif name == "quit":
        values = {"exit_code": int(arguments.get("exit_code", 0))}
    elif name == "stats":
        values = {
            "user_count": int(arguments.get("user_count", 0)),
            "entries": list(need("entries")),
            "total": need("total"),
            "errors": list(arguments.get("errors") or []),
        }
    elif name == "process_sample":
        values = {
            "cpu_percent": float(need("cpu_percent")),
            "memory_bytes": int(need("memory_bytes")),
            "network_sent_bytes": int(arguments.get("network_sent_bytes", 0)),
            "network_recv_bytes": int(arguments.get("network_recv_bytes", 0)),
        }
    else:
        values = {}
    return Event(name, float(time), values)


class TelemetryRejected(ValueError):
    """Telemetry the host would reject (and write to its dead-letter output instead): a
    host-owned key, fields that are not a JSON object, a bad telemetry name, a message over
    4,096 characters, more than 256 fields. The harness raises it where the host would drop
    the item, so a test sees the mistake. The plugin's own ``schemas`` are not checked here."""


#: The keys the host owns in every item (``runtime/src/pipeline/validate.rs``).
HOST_OWNED_KEYS = ("time", "run_id", "testplan", "source", "source_id", "plugin", "telemetry_type", "telemetry_name")

_TELEMETRY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,127}\Z")
_JSON_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}


def check_item(raw: dispatch.Item) -> Dict[str, Any]:
    """Parses one logged item as the host's validation does (without the plugin's schemas,
    and without the size limits of a call); raises `TelemetryRejected` with the host's reason
    for what the host rejects."""
    kind, name, message, fields = raw

    def rejected(reason: str) -> TelemetryRejected:
        return TelemetryRejected("telemetry %s rejected by the host: %s" % (name, reason))

    if fields.strip():
        try:
            parsed = json.loads(fields, parse_constant=_no_constant)
        except ValueError as error:
            raise rejected("fields are not valid JSON: %s" % error) from None
    else:
        parsed = {}
    if not isinstance(parsed, dict):
        raise rejected("fields must be a JSON object, got %s" % _JSON_KINDS.get(type(parsed), "a value"))
    for key in HOST_OWNED_KEYS:
        if key in parsed:
            raise rejected("field `%s` is owned by the host and cannot be set by a plugin" % key)
    if not isinstance(name, str) or not _TELEMETRY_NAME.match(name):
        raise rejected('envelope: at /telemetry_name: value does not match "^[A-Za-z][A-Za-z0-9_.:-]{0,127}$"')
    if len(message) > 4096:
        raise rejected("envelope: at /message: longer than 4096 characters")
    if len(parsed) > 256:
        raise rejected("envelope: at /fields: more than 256 properties")
    return parsed


def _no_constant(constant: str) -> Any:
    raise ValueError("%s is not JSON" % constant)


def _item(raw: dispatch.Item) -> Dict[str, Any]:
    kind, name, message, _fields = raw
    return {"type": kind, "name": name, "message": message, "fields": check_item(raw)}


class MetricRejected(ValueError):
    """A metric point the host would reject (and count, instead of exporting it): a name,
    unit, description or attribute outside the host's rules, a new series past the plugin's
    ``max_metric_series``, more than 1,000 points in one call, or a point whose kind is not
    its name's. The harness raises it where the host would drop the point, with the host's
    reason. It does not check what depends on other plugins (a name another plugin owns) or
    on Prometheus's spelling of sample names (two names that export the same sample)."""


#: Metric names the host exports itself (``runtime/src/pipeline/request_metrics.rs``).
BUILTIN_METRICS = ("locust.client.duration", "locust.client.duration.percentile", "locust.users.count")
#: Attribute keys the outputs use themselves (compared after `.` becomes `_`).
RESERVED_ATTRIBUTE_KEYS = ("run_id", "testplan", "le", "quantile")
#: The host's caps on metric points (``runtime/src/pipeline/plugin_metrics.rs``, and the
#: config's ``max_points_per_call`` and ``max_metric_series``).
MAX_METRIC_POINTS_PER_CALL = 1000
MAX_METRIC_SERIES = 1000
MAX_ATTRIBUTES = 16
MAX_BUCKETS = 1024

_METRIC_NAME = re.compile(r"[a-z][a-z0-9_.]*\Z")
_ATTRIBUTE_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.]*\Z")
_KIND_NAMES = {"counter": "counter", "gauge": "gauge", "response_times": "response-times"}


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def check_point(point: MetricPoint) -> None:
    """Checks one metric point as the host does (``check_point`` in
    ``runtime/src/pipeline/plugin_metrics.rs``); raises `MetricRejected` with its reason."""

    def rejected(reason: str) -> MetricRejected:
        return MetricRejected("metric %s rejected by the host: %s" % (point.name, reason))

    name = point.name
    if not 1 <= len(name.encode("utf-8")) <= 128:
        raise rejected("the name must be 1 to 128 bytes")
    if not _METRIC_NAME.match(name):
        raise rejected("the name must be lower-case letters, digits, `_` and `.`, starting with a letter")
    if name.startswith("swarmtel"):
        raise rejected("names starting `swarmtel` are the runtime's own")
    if name in BUILTIN_METRICS:
        raise rejected("the name is a built-in metric's (%s)" % ", ".join(BUILTIN_METRICS))
    if len(point.unit.encode("utf-8")) > 32 or any(not "!" <= c <= "~" for c in point.unit):
        raise rejected("the unit must be at most 32 printable ASCII characters")
    description = point.description
    if len(description.encode("utf-8")) > 512 or _has_control(description) or "\\" in description or '"' in description:
        raise rejected("the description must be at most 512 bytes, without control characters, `\\` or `\"`")
    if len(point.attributes) > MAX_ATTRIBUTES:
        raise rejected("%d attributes, more than %d" % (len(point.attributes), MAX_ATTRIBUTES))
    seen = set()
    for key, value in point.attributes:
        if not (1 <= len(key.encode("utf-8")) <= 64 and _ATTRIBUTE_KEY.match(key)):
            raise rejected(
                "attribute key %s must be 1 to 64 letters, digits, `_` and `.`, not starting with a digit"
                % json.dumps(key)
            )
        spelled = key.replace(".", "_")
        if spelled in RESERVED_ATTRIBUTE_KEYS or spelled.startswith("__"):
            raise rejected("attribute key `%s` is the outputs' own" % key)
        if spelled in seen:
            raise rejected("attribute key `%s` repeats another (`.` and `_` are the same in Prometheus)" % key)
        seen.add(spelled)
        if isinstance(value, str) and (len(value.encode("utf-8")) > 256 or _has_control(value)):
            raise rejected("attribute `%s`: a text value must be at most 256 bytes, without control characters" % key)
    if point.kind == "gauge" and not math.isfinite(point.value):
        raise rejected("a gauge must be finite, got %r" % point.value)
    if point.kind == "response_times":
        buckets, sum_ms = point.value
        if len(buckets) > MAX_BUCKETS:
            raise rejected("%d buckets, more than %d" % (len(buckets), MAX_BUCKETS))
        if not (math.isfinite(sum_ms) and sum_ms >= 0):
            raise rejected("the sum must be finite milliseconds >= 0, got %r" % sum_ms)


class _MetricLedger:
    """What the host remembers of one plugin's metrics: each name's kind, and its series."""

    def __init__(self, max_series: int = MAX_METRIC_SERIES):
        self.max_series = max_series
        self.kinds: Dict[str, str] = {}
        self.series: set = set()

    def check(self, points: List[MetricPoint]) -> None:
        if len(points) > MAX_METRIC_POINTS_PER_CALL:
            raise MetricRejected(
                "metric %s rejected by the host: more than %d points in one call (max_points_per_call)"
                % (points[MAX_METRIC_POINTS_PER_CALL].name, MAX_METRIC_POINTS_PER_CALL)
            )
        for point in points:
            check_point(point)
            kind = self.kinds.setdefault(point.name, point.kind)
            if kind != point.kind:
                raise MetricRejected(
                    "metric %s rejected by the host: a %s point for a %s metric"
                    % (point.name, _KIND_NAMES[point.kind], _KIND_NAMES[kind])
                )
            series = (point.name, _series_labels(point.attributes))
            if series not in self.series:
                if len(self.series) >= self.max_series:
                    raise MetricRejected(
                        "metric %s rejected by the host: a new series past the plugin's %d (max_metric_series)"
                        % (point.name, self.max_series)
                    )
                self.series.add(series)


def _label_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _series_labels(attributes) -> frozenset:
    """A series as the host tells series apart (as Prometheus sees them): keys with `.` as
    `_`, values as text, empty text values dropped."""
    return frozenset((k.replace(".", "_"), _label_text(v)) for k, v in attributes if v != "")


def _metric(point: MetricPoint) -> Dict[str, Any]:
    value = point.value
    if point.kind == "response_times":
        buckets, sum_ms = value
        value = {"buckets": dict(buckets), "sum_ms": sum_ms}
    return {
        "name": point.name,
        "type": point.kind,
        "value": value,
        "unit": point.unit,
        "description": point.description,
        "attributes": dict(point.attributes),
    }


class Output(list):
    """The telemetry items of a harness call or a replay (a list of dicts, compared as a
    list), with ``metrics``: the metric points the same calls reported, as dicts
    ``{"name", "type" (counter, gauge or response_times), "value", "unit", "description",
    "attributes"}``; a response-times value is ``{"buckets": {ms: count}, "sum_ms": ...}``."""

    def __init__(self, items: Iterable[Dict[str, Any]] = (), metrics: Iterable[Dict[str, Any]] = ()):
        super().__init__(items)
        #: The metric points, as dicts, in the order reported.
        self.metrics: List[Dict[str, Any]] = list(metrics)

    def add(self, other: "Output") -> "Output":
        """Appends another output's items and metrics; returns self."""
        self.extend(other)
        self.metrics.extend(other.metrics)
        return self


def _output(raw: dispatch.Output, ledger: _MetricLedger) -> Output:
    ledger.check(raw.metrics)
    return Output([_item(item) for item in raw.telemetry], [_metric(point) for point in raw.metrics])


def load_plugin(path: Union[str, "os.PathLike[str]"]) -> BaseTelemetryPlugin:
    """Imports a plugin module (a ``.py`` file, or a package directory) the way
    ``swarmtel-recorder build`` does, and returns the plugin it registers.

    Each call imports it afresh. Raises `AuthorError` naming the file and line for a syntax
    error, an exception at import, or no or several registered plugins.
    """
    return import_plugin(path)[0]


def import_plugin(path: Union[str, "os.PathLike[str]"]) -> "tuple[BaseTelemetryPlugin, str, List[str]]":
    """`load_plugin`, also returning the ``sys.path`` root and the names of the modules the
    import added to ``sys.modules``, in import order."""
    root, module = module_of(path)
    before = list(_plugin._registered)
    _plugin._registered.clear()
    _forget_modules(module.split(".")[0])
    known = set(sys.modules)
    sys.path.insert(0, root)
    try:
        try:
            importlib.import_module(module)
        except AuthorError:
            raise
        except SyntaxError as error:
            where = "%s:%s" % (_shown(error.filename or module), error.lineno or "?")
            raise AuthorError("syntax error: %s" % (error.msg,), where) from None
        except Exception as error:
            from .errors import traceback_location

            raise AuthorError(
                "%s: %s" % (type(error).__name__, error), traceback_location(error.__traceback__)
            ) from None
        try:
            plugin = _plugin.registered_plugin()
        except AuthorError as error:
            if not error.location:
                error.location = _shown(getattr(sys.modules.get(module), "__file__", None) or module)
            raise
        added = [name for name in list(sys.modules) if name not in known]
        try:  # where it came from, so `replay` can import it afresh for every recorder instance
            plugin._swarmtel_source = os.path.abspath(os.fspath(path))
        except AttributeError:
            pass
        return plugin, root, added
    finally:
        sys.path.remove(root)
        _plugin._registered[:] = before


def module_of(path: Union[str, "os.PathLike[str]"]) -> "tuple[str, str]":
    """The ``sys.path`` root and dotted module name of a plugin file or package directory."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "__init__.py")):
            raise AuthorError("%s is a directory without __init__.py, not a package" % path, None)
        parts = [os.path.basename(path)]
        parent = os.path.dirname(path)
    elif path.endswith(".py") and os.path.isfile(path):
        parent = os.path.dirname(path)
        stem = os.path.basename(path)[:-3]
        parts = [] if stem == "__init__" else [stem]
    else:
        raise AuthorError("%s: no such .py file or package directory" % path, None)
    # Climb out of packages, so `from my_project.recorder import ...` works.
    while os.path.isfile(os.path.join(parent, "__init__.py")):
        parts.insert(0, os.path.basename(parent))
        parent = os.path.dirname(parent)
    if not parts:
        raise AuthorError("%s: cannot tell the module's name" % path, None)
    return parent, ".".join(parts)


def _forget_modules(top: str) -> None:
    """Drops the plugin's package (or module) from ``sys.modules``, so importing it runs its
    ``register_plugin`` again."""
    for name in list(sys.modules):
        if name == top or name.startswith(top + "."):
            del sys.modules[name]


def _plugin_of(source: PluginSource) -> BaseTelemetryPlugin:
    if isinstance(source, BaseTelemetryPlugin):
        return source
    return load_plugin(source)


def _own_modules(root: str) -> Dict[str, Any]:
    """The modules in ``sys.modules`` loaded from the plugin's folder (not the SDK)."""
    sdk = os.path.dirname(os.path.abspath(__file__)) + os.sep
    own = {}
    for name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None)
        if filename:
            filename = os.path.abspath(filename)
            if filename.startswith(root + os.sep) and not filename.startswith(sdk):
                own[name] = module
    return own


def _fresh_instance(plugin: BaseTelemetryPlugin) -> "tuple[BaseTelemetryPlugin, dispatch.PluginInfo]":
    """The plugin imported afresh, with its own module state, and described in it, as the
    host's new interpreter for a recorder instance has it (the component is snapshotted after
    importing and describing). Every module from the plugin's folder is imported anew for it;
    ``sys.modules`` is left as it was. Only for a plugin loaded from a file (a path, or
    `load_plugin`); any other plugin object is used as it is, its module state shared."""
    path = getattr(plugin, "_swarmtel_source", None)
    if path is None:
        return plugin, dispatch.describe(plugin)
    root = module_of(path)[0]
    saved = _own_modules(root)
    for name in saved:
        del sys.modules[name]
    try:
        fresh = load_plugin(path)
        return fresh, dispatch.describe(fresh)
    finally:
        for name in _own_modules(root):
            del sys.modules[name]
        sys.modules.update(saved)


def _settings(info: dispatch.PluginInfo, options: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    options = dict(options or {})
    known = {spec.name for spec in info.options}
    for spec in info.options:  # also accept the attribute spelling (custom_option)
        if spec.dest in options and spec.name not in options:
            options[spec.name] = options.pop(spec.dest)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            "plugin %s declares no option %s (it declares: %s)"
            % (info.id, ", ".join(unknown), ", ".join(sorted(known)) or "none")
        )
    return options


_NODES = dispatch.PROBE_NODES


class Harness:
    """One recorder of a plugin, fed by hand; every call returns the telemetry it produced,
    as an `Output` (a list of dicts) whose ``metrics`` are the metric points it reported.

    ``Harness(MyPlugin(), "my_recorder", role="worker", options={"custom-option": "x"})``
    creates the recorder through the same code the component runs (options resolved and
    checked, the role's loader called). ``recorder`` may be left out when the plugin has one.
    ``max_metric_series`` is the config's cap on the plugin's metric series.
    """

    def __init__(
        self,
        plugin: PluginSource,
        recorder: Optional[str] = None,
        role: str = "worker",
        node: Optional[str] = None,
        options: Optional[Dict[str, Any]] = None,
        batch_size: int = 1024,
        max_metric_series: int = MAX_METRIC_SERIES,
    ):
        #: The plugin's description, as the host sees it.
        self.info = dispatch.describe(_plugin_of(plugin))
        if recorder is None:
            if len(self.info.recorders) != 1:
                raise ValueError(
                    "plugin %s has %d recorders; name one (%s)"
                    % (self.info.id, len(self.info.recorders), ", ".join(r.name for r in self.info.recorders))
                )
            recorder = self.info.recorders[0].name
        recorder_info = self.info.recorder(recorder)
        if recorder_info is None:
            raise ValueError("plugin %s has no recorder %r" % (self.info.id, recorder))
        #: What the host would know about this recorder.
        self.recorder_info = recorder_info
        #: The role and node it serves.
        self.role, self.node = role, node or _NODES[role]
        self._runtime: RecorderRuntime = dispatch.create(
            self.info, recorder, role, self.node, _settings(self.info, options)
        )
        #: The author's recorder object, for assertions on its state.
        self.recorder = self._runtime.recorder
        self._batch_size = batch_size
        self._columns = Columns()
        self._ledger = _MetricLedger(max_metric_series)

    def request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        response_length: int = 0,
        exception: Optional[str] = None,
        start_time: float = 0.0,
        status_code: Optional[int] = None,
        url: Optional[str] = None,
        context: Optional[Dict[str, Any]] = None,
        exception_type: Optional[str] = None,
    ) -> Output:
        """Queues one request (``exception`` marks it failed, ``exception_type`` names its
        class; status defaults to 200, or 500 when failed). Returns telemetry only when the
        queue reaches ``batch_size`` and is delivered, as the host would."""
        if status_code is None:
            status_code = 500 if exception is not None else 200
        self._columns.push(
            request_type,
            name,
            response_time,
            response_length,
            exception,
            start_time,
            status_code,
            url,
            json.dumps(context, separators=(",", ":")) if context else None,
            exception_type,
            self.recorder_info.request_extras,
        )
        if len(self._columns) >= self._batch_size:
            return self.flush()
        return Output()

    def event(self, name: str, time: float = 0.0, **arguments: Any) -> Output:
        """Delivers the queued requests, then the event ``name`` (a hook name such as
        ``test_stop``, with Locust's keyword arguments); returns what was logged."""
        return self._deliver([make_event(name, time, **arguments)])

    def tick(self, time: float) -> Output:
        """Delivers the queued requests, then a tick at ``time``."""
        return self._deliver([Event("tick", float(time), {})])

    def flush(self) -> Output:
        """Delivers the queued requests; returns what was logged."""
        return self._deliver([])

    def finish(self) -> Output:
        """Ends the stream: delivers what is queued, then calls ``on_finish``."""
        return self.flush().add(_output(self._runtime.finish(), self._ledger))

    def _deliver(self, events: List[Event]) -> Output:
        columns, self._columns = self._columns, Columns()
        if not columns and not events:
            return Output()
        wanted = [e for e in events if e.name in self.recorder_info.events]
        return _output(self._runtime.handle(columns, wanted), self._ledger)


# --- replaying an event stream, routed as the host routes it --------------------------------


class StreamError(ValueError):
    """A line of an event stream that does not decode; names the file and line."""


class _Request(NamedTuple):
    request_type: str
    name: str
    response_time: float
    response_length: int
    exception: Optional[str]
    start_time: float
    status_code: int
    url: Optional[str]
    context: Optional[str]
    exception_type: Optional[str]


_MAX_TICKS_PER_GAP = 100


class _TickClock:
    """route.rs's `TickClock`: ticks on multiples of the interval, at most 100 per gap."""

    def __init__(self, interval_ms: int):
        self.interval = interval_ms / 1000.0
        self.next: Optional[float] = None

    def due(self, time: float) -> List[float]:
        interval = self.interval
        if self.next is None:
            self.next = (math.floor(time / interval) + 1.0) * interval
        if time < self.next:
            return []
        ticks = []
        tick = self.next
        while tick <= time and len(ticks) < _MAX_TICKS_PER_GAP:
            ticks.append(tick)
            tick += interval
        if tick <= time:
            tick = (math.floor(time / interval) + 1.0) * interval
        self.next = tick
        return ticks


class _Slot:
    """One recorder instance of one node, with its batch under construction."""

    def __init__(
        self, runtime: RecorderRuntime, info: dispatch.RecorderInfo, role: str, node: str, ledger: _MetricLedger
    ):
        self.runtime = runtime
        self.ledger = ledger
        self.info = info
        self.role = role
        self.node = node
        self.events = set(info.events)
        self.clock = _TickClock(info.tick_interval_ms) if info.tick_interval_ms else None
        self.columns = Columns()
        self.pending: List[Event] = []
        self.last_time = -math.inf

    def flush(self, out: Output) -> None:
        if not len(self.columns) and not self.pending:
            return
        columns, events, time = self.columns, self.pending, self.last_time
        self.columns, self.pending, self.last_time = Columns(), [], -math.inf
        self._emit(self.runtime.handle(columns, events), time, out)

    def finish(self, time: float, out: Output) -> None:
        self.flush(out)
        self._emit(self.runtime.finish(), time, out)

    def _emit(self, raw: dispatch.Output, time: float, out: Output) -> None:
        output = _output(raw, self.ledger)
        where = {"recorder": self.info.name, "role": self.role, "node": self.node, "time": time}
        for item in output:
            item.update(where)
        for point in output.metrics:
            point.update(where)
        out.add(output)


def _decode(line: str, where: str) -> "tuple[str, str, float, Union[_Request, Event]]":
    try:
        raw = json.loads(line)
    except ValueError as error:
        raise StreamError("%s: %s" % (where, error)) from None
    if not isinstance(raw, dict):
        raise StreamError("%s: not a JSON object" % where)
    try:
        event, role, node, time = raw["event"], raw["role"], raw["node"], float(raw["time"])
    except KeyError as error:
        raise StreamError("%s: missing %s" % (where, error)) from None
    if role not in ("master", "worker", "standalone"):
        raise StreamError("%s: unknown role `%s`" % (where, role))
    if event == "request":
        try:
            response_time = float(raw["response_time"])
            context = raw.get("context")
            body: Union[_Request, Event] = _Request(
                raw["request_type"],
                raw["name"],
                response_time,
                int(raw.get("response_length") or 0),
                raw.get("exception"),
                float(raw["start_time"]) if raw.get("start_time") is not None else time,
                int(raw.get("status_code") or 0),
                raw.get("url"),
                json.dumps(context, separators=(",", ":")) if context else None,
                raw.get("exception_type"),
            )
        except KeyError as error:
            raise StreamError("%s: event `request` needs %s" % (where, error)) from None
        return role, node, time, body
    if event not in HOOKS or event == "tick":
        raise StreamError("%s: unknown event `%s`" % (where, event))
    arguments = {k: v for k, v in raw.items() if k not in ("event", "role", "node", "time") and v is not None}
    if event == "stats":
        arguments["entries"] = [_stats_from_json(row) for row in arguments.get("entries", [])]
        if "total" in arguments:
            arguments["total"] = _stats_from_json(arguments["total"])
        arguments["errors"] = [_error_from_json(row) for row in arguments.get("errors", [])]
    try:
        return role, node, time, make_event(event, time, **arguments)
    except ValueError as error:
        raise StreamError("%s: %s" % (where, error)) from None


def replay(
    plugin: PluginSource,
    stream: Union[str, "os.PathLike[str]", Iterable[str]],
    options: Optional[Dict[str, Any]] = None,
    roles: Optional[Sequence[str]] = None,
    batch_size: int = 1024,
    max_metric_series: int = MAX_METRIC_SERIES,
) -> Output:
    """Replays an event stream (a file path, or an iterable of NDJSON lines) through every
    recorder of ``plugin`` on every node, routed and batched as ``swarmtel replay`` does, and
    returns the telemetry in the order ``swarmtel replay`` writes it, as an `Output` whose
    ``metrics`` are the metric points, each with ``recorder``, ``role``, ``node`` and ``time``.

    ``roles`` restricts the roles served (the config's ``roles``); ``options`` are by option
    name; ``max_metric_series`` is the config's cap on the plugin's metric series. A line
    that does not decode raises `StreamError` naming the line; telemetry the host would
    reject raises `TelemetryRejected`, and a metric point it would reject `MetricRejected`.

    As in the host, every recorder instance (node and recorder) has its own module state: a
    plugin loaded from a file is imported afresh for each. A plugin object defined elsewhere
    (in a test module) is shared by all instances.
    """
    info = dispatch.describe(_plugin_of(plugin))
    settings = _settings(info, options)
    served = set(roles) if roles is not None else {r for rec in info.recorders for r in rec.roles}
    if isinstance(stream, (str, os.PathLike)):
        name = os.fspath(stream)
        with open(name, encoding="utf-8") as handle:
            return _replay_lines(info, settings, served, handle, name, batch_size, max_metric_series)
    return _replay_lines(info, settings, served, stream, "<stream>", batch_size, max_metric_series)


def _replay_lines(
    info: dispatch.PluginInfo,
    settings: Dict[str, Any],
    served: set,
    lines: Iterable[str],
    source: str,
    batch_size: int,
    max_metric_series: int,
) -> Output:
    out = Output()
    ledger = _MetricLedger(max_metric_series)
    nodes: Dict[str, "tuple[str, List[_Slot]]"] = {}
    last_time: Dict[str, float] = {}
    order: List[_Slot] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        role, node, time, body = _decode(line.rstrip("\r\n"), "%s:%d" % (source, number))
        if node not in nodes:
            slots = []
            if role in served:
                for recorder in info.recorders:
                    if role in recorder.roles:
                        _plugin_object, own_info = _fresh_instance(info.plugin)
                        runtime = dispatch.create(own_info, recorder.name, role, node, settings)
                        slots.append(_Slot(runtime, recorder, role, node, ledger))
            nodes[node] = (role, slots)
            order.extend(slots)
        elif nodes[node][0] != role:
            raise StreamError(
                "%s:%d: node `%s` was %s and is now %s" % (source, number, node, nodes[node][0], role)
            )
        last_time[node] = max(last_time.get(node, -math.inf), time)
        kind = "request" if isinstance(body, _Request) else body.name
        for slot in nodes[node][1]:
            if slot.clock is not None:
                for tick in slot.clock.due(time):
                    slot.pending.append(Event("tick", tick, {}))
                    slot.last_time = max(slot.last_time, tick)
                    slot.flush(out)
            if kind not in slot.events:
                continue
            slot.last_time = max(slot.last_time, time)
            if isinstance(body, _Request):
                slot.columns.push(*body, extras=slot.info.request_extras)
                if len(slot.columns) >= batch_size:
                    slot.flush(out)
            else:
                slot.pending.append(body)
                slot.flush(out)
    for slot in order:
        slot.finish(last_time[slot.node], out)
    return out
