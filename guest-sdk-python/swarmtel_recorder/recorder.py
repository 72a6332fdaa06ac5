"""Recorders: `BaseTelemetryRecorder`, the `Environment` it is created with, and its events.

As in locust-telemetry, a recorder is created with ``Recorder(env=environment)`` by a plugin's
``load_*_telemetry_recorders`` and subscribes in ``__init__`` with
``env.events.test_start.add_listener(self.on_test_start)``. A method named after a hook
(``on_test_start``, ``on_request``...) is subscribed even without ``add_listener``, and never
twice. ``self.log_telemetry(telemetry=TelemetryData(type="event", name="X"), message="...",
**fields)`` hands telemetry to the host, which validates it and adds the context;
``self.add_counter``, ``self.set_gauge`` and ``self.record_response_times`` hand it metric
points.
"""

import inspect
import json
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import AuthorError, object_location
from .hooks import HOOKS, Hook, near_hook
from .metrics import AttributeValue, MetricBuffer, ResponseTimes
from .options import ParsedOptions

#: The roles a recorder can serve.
ROLES = ("master", "worker", "standalone")

#: The per-request details a recorder can ask for in ``request_extras``.
REQUEST_EXTRAS = ("url", "context")


class TelemetryData:
    """The type and name of a piece of telemetry, like locust-telemetry's ``TelemetryData``."""

    __slots__ = ("type", "name")

    def __init__(self, type: str, name: str):
        if type not in ("event", "metric"):
            raise ValueError("TelemetryData type must be 'event' or 'metric', got %r" % (type,))
        #: ``event`` or ``metric``.
        self.type = type
        #: The telemetry name, such as ``CUSTOM_START``.
        self.name = name

    def __repr__(self) -> str:
        return "TelemetryData(type=%r, name=%r)" % (self.type, self.name)


class Listener:
    """A subscribed callable, with the keyword arguments it accepts worked out once."""

    __slots__ = ("function", "accepts_all", "names")

    def __init__(self, function: Callable[..., Any], hook: Hook):
        self.function = function
        offered = set(hook.arguments) | set(hook.extras)
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):  # builtins without a signature: give them everything
            self.accepts_all, self.names = True, ()
            return
        accepts_all = False
        names = []
        for parameter in signature.parameters.values():
            if parameter.kind is parameter.VAR_KEYWORD:
                accepts_all = True
            elif parameter.kind is parameter.VAR_POSITIONAL:
                continue
            elif parameter.name in offered and parameter.kind is not parameter.POSITIONAL_ONLY:
                names.append(parameter.name)
            elif parameter.default is parameter.empty:
                raise AuthorError(
                    "listener %s of %s takes `%s`, which the %s hook does not give (it gives %s)"
                    % (
                        getattr(function, "__qualname__", function),
                        hook.name,
                        parameter.name,
                        hook.name,
                        ", ".join(hook.arguments + hook.extras) or "no arguments",
                    ),
                    object_location(function),
                )
        #: Whether it takes ``**kwargs`` (then it gets every argument).
        self.accepts_all = accepts_all
        #: The arguments it names, when it does not take ``**kwargs``.
        self.names = tuple(names)

    def __call__(self, arguments: Dict[str, Any]) -> None:
        if self.accepts_all:
            self.function(**arguments)
        else:
            self.function(**{name: arguments[name] for name in self.names if name in arguments})


class EventHook:
    """One hook of ``env.events``: ``add_listener(fn)`` subscribes ``fn``.

    Every recorder created with one environment shares its ``env.events``, as in Locust; each
    listener belongs to a recorder: the one it is a method of, otherwise the recorder created
    last before it was added.
    """

    def __init__(self, hook: Hook, env: "Environment"):
        self._hook = hook
        self._env = env
        #: ``(function, owning recorder)`` pairs, in order of subscription.
        self.subscriptions: List[Tuple[Callable[..., Any], "BaseTelemetryRecorder"]] = []
        #: Functions removed with `remove_listener` (an ``on_<hook>`` method is then not
        #: subscribed by its name either).
        self.removed: List[Callable[..., Any]] = []

    def add_listener(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Subscribes ``function``; returns it, so this works as a decorator too."""
        if not callable(function):
            raise AuthorError("env.events.%s.add_listener needs a function" % self._hook.name)
        owner = getattr(function, "__self__", None)
        if not isinstance(owner, BaseTelemetryRecorder):
            if not self._env.recorders:
                raise AuthorError(
                    "env.events.%s.add_listener outside a recorder: subscribe in a "
                    "BaseTelemetryRecorder's __init__" % self._hook.name
                )
            owner = self._env.recorders[-1]
        Listener(function, self._hook)  # checks the signature now, where the author is
        delivered = self._env.delivered_hooks
        if delivered is not None:  # the recorder is live: the host sends only what it declared
            if self._hook.name not in delivered:
                raise AuthorError(
                    "env.events.%s.add_listener after the recorder was created: the host sends it "
                    "only the hooks it subscribed to when the plugin was described (%s); subscribe "
                    "to %s in __init__ and ignore it until wanted"
                    % (self._hook.name, ", ".join(sorted(delivered)) or "none", self._hook.name)
                )
            self._env.listeners_changed = True
        if function in self.removed:
            self.removed.remove(function)
        self.subscriptions.append((function, owner))
        return function

    def remove_listener(self, function: Callable[..., Any]) -> None:
        """Unsubscribes ``function`` (an ``on_<hook>`` method too): it is not called again."""
        self.subscriptions = [s for s in self.subscriptions if s[0] != function]
        self.removed.append(function)
        self._env.listeners_changed = True

    def listeners_of(self, recorder: "BaseTelemetryRecorder") -> List[Callable[..., Any]]:
        """The functions subscribed for ``recorder``, in order."""
        return [function for function, owner in self.subscriptions if owner is recorder]

    def fire(self, **kwargs: Any) -> None:
        """Not available: only the host fires events."""
        raise AuthorError("env.events.%s.fire: events come from the host" % self._hook.name)


class UnknownHook(AuthorError, AttributeError):
    """``env.events.<name>`` for a name that is no hook (an `AuthorError` and an
    `AttributeError`, so ``hasattr`` still works)."""


class Events:
    """``env.events``: one `EventHook` per Locust hook name, plus ``stats`` and ``tick``."""

    def __init__(self, env: "Environment") -> None:
        self._hooks = {name: EventHook(hook, env) for name, hook in HOOKS.items()}

    def __getattr__(self, name: str) -> EventHook:
        hooks = self.__dict__.get("_hooks")
        if hooks is not None and name in hooks:
            return hooks[name]
        if name.startswith("__"):
            raise AttributeError(name)
        near = near_hook(name)
        raise UnknownHook(
            "env.events.%s: no such event%s"
            % (name, "; did you mean env.events.%s?" % near if near else " (see swarmtel_recorder.HOOKS)")
        )

    def hook(self, name: str) -> EventHook:
        """The hook named ``name``."""
        return getattr(self, name)


class Environment:
    """What a plugin's loaders and a recorder get, in place of Locust's ``Environment``.

    ``events`` to subscribe to, ``parsed_options`` with the plugin's resolved options, and
    where the recorder runs: ``role`` (``master``, ``worker`` or ``standalone``) and ``node``
    (``master``, ``worker-0``, ``local``...).
    """

    def __init__(self, role: str, node: str, parsed_options: ParsedOptions, probing: bool = False):
        if role not in ROLES:
            raise ValueError("role must be one of %s, got %r" % (", ".join(ROLES), role))
        #: ``env.events.<hook>.add_listener(fn)``.
        self.events = Events(self)
        #: The plugin's options, by attribute (``custom-option`` → ``custom_option``).
        self.parsed_options = parsed_options
        #: ``master``, ``worker`` or ``standalone``.
        self.role = role
        #: ``master``, ``worker-<n>`` or ``local``.
        self.node = node
        #: True while the SDK describes the plugin (options are at their defaults then).
        self.probing = probing
        #: The recorders created with this environment, in order.
        self.recorders: List["BaseTelemetryRecorder"] = []
        #: Once a recorder is live: the hooks the host delivers to it (None before).
        self.delivered_hooks: Optional[frozenset] = None
        #: Set when a listener is added or removed after creation (the SDK then rebuilds
        #: its listener lists before the next batch).
        self.listeners_changed = False


def _fields_json(telemetry: TelemetryData, fields: Any) -> str:
    """The fields as JSON text; raises ValueError here, at the author's call, for what is
    not JSON (NaN and infinities included: the host would reject the item)."""
    if isinstance(fields, dict) and not fields:
        return ""
    try:
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        detail = str(error)
        if "Out of range float" in detail:
            detail = "NaN and Infinity are not JSON (%s); log None or a string instead" % detail
        raise ValueError(
            "log_telemetry %s: fields are not JSON: %s" % (telemetry.name, detail)
        ) from None


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class BaseTelemetryRecorder:
    """Base class of a recorder: subclass it, set ``name``, subscribe to events, log telemetry.

    Class attributes a recorder may set:

    - ``name``: the recorder's name, unique in the plugin (default: the class name in
      snake case);
    - ``tick_interval_ms``: the interval of ``tick`` events, in milliseconds of event time
      (listen to ``tick`` or define ``on_tick`` to get them);
    - ``request_extras``: ``("url",)``, ``("context",)`` or both, to get each request's URL
      and context (off by default: they cost delivery time).
    """

    #: The recorder's name; the config and the telemetry use it.
    name: str = ""
    #: Interval of ``tick`` events in milliseconds of event time (None: no ticks).
    tick_interval_ms: Optional[int] = None
    #: Per-request details wanted: any of ``"url"``, ``"context"``.
    request_extras: Tuple[str, ...] = ()

    def __init__(self, env: Environment, *args: Any, **kwargs: Any):
        if not isinstance(env, Environment):
            raise AuthorError(
                "%s(env=...) needs the environment the loader was given" % type(self).__name__
            )
        #: The environment the recorder was created with.
        self.env = env
        self._telemetry_out: List[Tuple[str, str, str, str]] = []
        self._metrics_out = MetricBuffer()
        env.recorders.append(self)

    @classmethod
    def recorder_name(cls) -> str:
        """``name``, or the class name in snake case when it is not set."""
        return cls.name or _snake(cls.__name__)

    def log_telemetry(self, telemetry: TelemetryData, message: str = "", **fields: Any) -> None:
        """Logs one piece of telemetry: its type and name, a message and optional fields.

        ``fields`` must serialize to JSON; the host rejects an item whose fields set a key it
        owns (``time``, ``run_id``, ``testplan``, ``source``, ``source_id``, ``plugin``,
        ``telemetry_type``, ``telemetry_name``) or break the plugin's schema for that name.
        """
        if not isinstance(telemetry, TelemetryData):
            raise TypeError("log_telemetry needs telemetry=TelemetryData(type=..., name=...)")
        self._telemetry_out.append((telemetry.type, telemetry.name, str(message), _fields_json(telemetry, fields)))

    def log_telemetry_fields(self, telemetry: TelemetryData, message: str, fields: Dict[str, Any]) -> None:
        """Like `log_telemetry`, with the fields as one dict (for keys that are not names)."""
        if not isinstance(telemetry, TelemetryData):
            raise TypeError("log_telemetry_fields needs telemetry=TelemetryData(type=..., name=...)")
        self._telemetry_out.append((telemetry.type, telemetry.name, str(message), _fields_json(telemetry, fields)))

    # --- metric points (see swarmtel_recorder.metrics) ---------------------------------------
    # Points of the same series in one call are merged into one. The SDK refuses plainly wrong
    # values here (MetricError); the host checks the rest of each point (a name of 1 to 128
    # bytes of [a-z][a-z0-9_.]*, units, attribute keys, series per plugin: the README's
    # "Metrics" lists its rules), and the harness raises MetricRejected where it would refuse.

    def add_counter(
        self,
        name: str,
        value: int = 1,
        *,
        unit: str = "",
        description: str = "",
        attributes: Optional[Dict[str, AttributeValue]] = None,
    ) -> None:
        """Adds ``value`` (an int >= 0) to the counter ``name`` (for ``attributes``): the
        increment since this recorder last reported the series. The host sums the increments
        of every call and node into one total."""
        self._metrics_out.counter(name, value, unit, description, attributes)

    def set_gauge(
        self,
        name: str,
        value: float,
        *,
        unit: str = "",
        description: str = "",
        attributes: Optional[Dict[str, AttributeValue]] = None,
    ) -> None:
        """Sets the gauge ``name`` (for ``attributes``) to ``value`` (a finite number): its value
        now. The last value reported wins."""
        self._metrics_out.gauge(name, value, unit, description, attributes)

    def record_response_times(
        self,
        name: str,
        times: ResponseTimes,
        *,
        description: str = "",
        attributes: Optional[Dict[str, AttributeValue]] = None,
    ) -> None:
        """Reports a copy of ``times`` (a `ResponseTimes`): the response times observed since
        this recorder last reported the series; ``times.reset()`` afterwards. The host merges
        the buckets of every call and node and exports a histogram in seconds, with the
        bucket bounds of ``locust.client.duration``."""
        self._metrics_out.response_times(name, times, "ms", description, attributes)

    def on_finish(self) -> None:
        """Called once when the event stream ends; log any last telemetry here."""
