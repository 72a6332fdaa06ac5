"""Run recorders in plain CPython, for pytest: no build, no host, the same dispatch code.

Two ways in:

- `Harness`: one recorder, fed by hand. ``harness.request(...)`` queues requests,
  ``harness.event("test_stop", time=...)`` delivers them and then the event, and returns the
  telemetry logged: a list of dicts ``{"type", "name", "message", "fields"}``.
- `replay`: a whole event stream (the NDJSON of ``swarmtel replay``), routed to every recorder
  of every node the way the host routes it (batches of requests ended by any other event, at
  most ``batch_size`` requests, ticks in event time); each item also carries ``recorder``,
  ``role``, ``node`` and ``time`` (the time ``swarmtel replay`` writes on its line).

Both take the plugin object, or load it from a file with `load_plugin`.
"""

import importlib
import json
import math
import os
import re
import sys
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Union

from . import dispatch, plugin as _plugin
from .dispatch import Event, RecorderRuntime
from .errors import AuthorError
from .errors import _relative as _shown
from .hooks import HOOKS
from .plugin import BaseTelemetryPlugin
from .requests import Endpoint
from .stats import StatsEntry

__all__ = ["Harness", "replay", "load_plugin", "make_event", "stats_entry", "PluginSource"]


class Failure(NamedTuple):
    """A failed request of a batch (the WIT `request-failure`)."""

    index: int
    exception: str


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
            self.failures.append(Failure(index, str(exception)))
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
    response_times: Optional[Dict[int, int]] = None,
    current_rps: float = 0.0,
    current_fail_per_sec: float = 0.0,
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
        dict(response_times or {}),
        current_rps,
        current_fail_per_sec,
    )


def _round_half_away(value: float) -> int:
    """The host's ``ms.max(0.0).round() as u32`` for a snapshot's histogram keys: halves away
    from zero, NaN to 0, saturating at ``u32::MAX``."""
    if not value > 0.0:
        return 0
    if value >= 2**32 - 1:
        return 2**32 - 1
    floor = math.floor(value)
    return int(floor + 1 if value - floor >= 0.5 else floor)


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
        {_round_half_away(float(ms)): count for ms, count in row.get("response_times") or []},
        float(row.get("current_rps") or 0.0),
        float(row.get("current_fail_per_sec") or 0.0),
    )


class _Missing(Exception):
    pass


def make_event(name: str, time: float = 0.0, **arguments: Any) -> Event:
    """An event for the harness, with Locust's keyword arguments, defaulted like the event
    stream's decoder defaults them (``quit`` without ``exit_code`` is 0, and so on).

    ``stats`` takes ``user_count``, ``entries`` and ``total`` (`StatsEntry` objects, see
    `stats_entry`); ``worker_report`` takes ``client_id`` and ``data={"user_count": n}`` (or
    ``user_count=n``).
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
    """One recorder of a plugin, fed by hand; every call returns the telemetry it produced.

    ``Harness(MyPlugin(), "my_recorder", role="worker", options={"custom-option": "x"})``
    creates the recorder through the same code the component runs (options resolved and
    checked, the role's loader called). ``recorder`` may be left out when the plugin has one.
    """

    def __init__(
        self,
        plugin: PluginSource,
        recorder: Optional[str] = None,
        role: str = "worker",
        node: Optional[str] = None,
        options: Optional[Dict[str, Any]] = None,
        batch_size: int = 1024,
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
    ) -> List[Dict[str, Any]]:
        """Queues one request (``exception`` marks it failed; status defaults to 200, or 500
        when failed). Returns telemetry only when the queue reaches ``batch_size`` and is
        delivered, as the host would."""
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
            self.recorder_info.request_extras,
        )
        if len(self._columns) >= self._batch_size:
            return self.flush()
        return []

    def event(self, name: str, time: float = 0.0, **arguments: Any) -> List[Dict[str, Any]]:
        """Delivers the queued requests, then the event ``name`` (a hook name such as
        ``test_stop``, with Locust's keyword arguments); returns what was logged."""
        return self._deliver([make_event(name, time, **arguments)])

    def tick(self, time: float) -> List[Dict[str, Any]]:
        """Delivers the queued requests, then a tick at ``time``."""
        return self._deliver([Event("tick", float(time), {})])

    def flush(self) -> List[Dict[str, Any]]:
        """Delivers the queued requests; returns what was logged."""
        return self._deliver([])

    def finish(self) -> List[Dict[str, Any]]:
        """Ends the stream: delivers what is queued, then calls ``on_finish``."""
        items = self.flush()
        items.extend(_item(raw) for raw in self._runtime.finish())
        return items

    def _deliver(self, events: List[Event]) -> List[Dict[str, Any]]:
        columns, self._columns = self._columns, Columns()
        if not columns and not events:
            return []
        wanted = [e for e in events if e.name in self.recorder_info.events]
        return [_item(raw) for raw in self._runtime.handle(columns, wanted)]


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

    def __init__(self, runtime: RecorderRuntime, info: dispatch.RecorderInfo, role: str, node: str):
        self.runtime = runtime
        self.info = info
        self.role = role
        self.node = node
        self.events = set(info.events)
        self.clock = _TickClock(info.tick_interval_ms) if info.tick_interval_ms else None
        self.columns = Columns()
        self.pending: List[Event] = []
        self.last_time = -math.inf

    def flush(self, out: List[Dict[str, Any]]) -> None:
        if not len(self.columns) and not self.pending:
            return
        columns, events, time = self.columns, self.pending, self.last_time
        self.columns, self.pending, self.last_time = Columns(), [], -math.inf
        self._emit(self.runtime.handle(columns, events), time, out)

    def finish(self, time: float, out: List[Dict[str, Any]]) -> None:
        self.flush(out)
        self._emit(self.runtime.finish(), time, out)

    def _emit(self, raws: List[dispatch.Item], time: float, out: List[Dict[str, Any]]) -> None:
        for raw in raws:
            item = _item(raw)
            item.update(recorder=self.info.name, role=self.role, node=self.node, time=time)
            out.append(item)


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
) -> List[Dict[str, Any]]:
    """Replays an event stream (a file path, or an iterable of NDJSON lines) through every
    recorder of ``plugin`` on every node, routed and batched as ``swarmtel replay`` does, and
    returns the telemetry in the order ``swarmtel replay`` writes it.

    ``roles`` restricts the roles served (the config's ``roles``); ``options`` are by option
    name. A line that does not decode raises `StreamError` naming the line; telemetry the host
    would reject raises `TelemetryRejected`.

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
            return _replay_lines(info, settings, served, handle, name, batch_size)
    return _replay_lines(info, settings, served, stream, "<stream>", batch_size)


def _replay_lines(
    info: dispatch.PluginInfo,
    settings: Dict[str, Any],
    served: set,
    lines: Iterable[str],
    source: str,
    batch_size: int,
) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
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
                        slots.append(_Slot(runtime, recorder, role, node))
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
