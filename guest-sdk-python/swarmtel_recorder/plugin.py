"""Plugins: `BaseTelemetryPlugin` and `register_plugin`.

As in locust-telemetry, a plugin declares its options in ``add_arguments(parser)`` and creates
its recorders per role in ``load_master_telemetry_recorders``,
``load_worker_telemetry_recorders`` and ``load_standalone_telemetry_recorders``. Its module
registers one instance with ``register_plugin(plugin=MyPlugin())``, the line that replaces
locust-telemetry's ``plugin_manager.register_plugin(plugin=MyPlugin())``.
"""

import re
from typing import Any, Dict, List, Optional

from .errors import AuthorError, caller_location


class BaseTelemetryPlugin:
    """Base class of a plugin. Class attributes a plugin may set:

    - ``plugin_id``: the id in configs and telemetry (default: the class name without
      ``Plugin``, in kebab case: ``CustomTelemetryPlugin`` → ``custom-telemetry``);
    - ``version``: the plugin's version (default ``0.1.0``);
    - ``description``: one line (default: the first line of the class docstring);
    - ``schemas``: ``{telemetry_name: JSON Schema dict}``; the host rejects items of that
      name whose fields do not match.
    """

    #: Stable id (``a-z``, ``0-9``, ``-``, ``_``); derived from the class name when empty.
    plugin_id: str = ""
    #: The plugin's own version.
    version: str = "0.1.0"
    #: One line on what it records; the class docstring's first line when empty.
    description: str = ""
    #: JSON Schemas for the fields of telemetry names.
    schemas: Dict[str, Dict[str, Any]] = {}

    def add_arguments(self, parser: Any) -> None:
        """Declares options: ``group = parser.add_argument_group(title, description)``, then
        ``group.add_argument("--name", type=str, default=..., help=..., env_var=...)``."""

    def load_master_telemetry_recorders(self, environment: Any, **kwargs: Any) -> None:
        """Creates the recorders of a master: ``MyRecorder(env=environment)``."""

    def load_worker_telemetry_recorders(self, environment: Any, **kwargs: Any) -> None:
        """Creates the recorders of a worker: ``MyRecorder(env=environment)``."""

    def load_standalone_telemetry_recorders(self, environment: Any, **kwargs: Any) -> None:
        """Creates the recorders of a standalone run (one process that is master and worker).

        By default: the master's recorders, then the worker's that have another name. A
        standalone process sees both the master's events (stats snapshots) and a worker's
        (requests), so a recorder written for either works there.
        """
        self.load_master_telemetry_recorders(environment, **kwargs)
        names = {recorder.recorder_name() for recorder in environment.recorders}
        before = len(environment.recorders)
        self.load_worker_telemetry_recorders(environment, **kwargs)
        added = environment.recorders[before:]
        del environment.recorders[before:]
        for recorder in added:
            if recorder.recorder_name() not in names:
                names.add(recorder.recorder_name())
                environment.recorders.append(recorder)

    @classmethod
    def get_plugin_id(cls) -> str:
        """``plugin_id``, or the id derived from the class name."""
        if cls.plugin_id:
            return cls.plugin_id
        name = cls.__name__
        if name.endswith("Plugin") and len(name) > len("Plugin"):
            name = name[: -len("Plugin")]
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name).lower()

    @classmethod
    def get_description(cls) -> str:
        """``description``, or the first line of the class docstring."""
        if cls.description:
            return cls.description
        doc = cls.__doc__ if cls.__doc__ is not BaseTelemetryPlugin.__doc__ else None
        return (doc or "").strip().split("\n")[0].strip()


class _Registration:
    __slots__ = ("plugin", "location")

    def __init__(self, plugin: BaseTelemetryPlugin, location: Optional[str]):
        self.plugin = plugin
        self.location = location


#: Plugins registered so far in this interpreter, in order.
_registered: List[_Registration] = []


def register_plugin(plugin: BaseTelemetryPlugin) -> BaseTelemetryPlugin:
    """Registers the plugin this module builds into; call it once, at module level.

    Replaces locust-telemetry's ``PluginManager().register_plugin(plugin=...)``.
    """
    if not isinstance(plugin, BaseTelemetryPlugin):
        raise AuthorError(
            "register_plugin(plugin=...) needs an instance of a BaseTelemetryPlugin subclass, "
            "got %r" % (plugin,)
        )
    _registered.append(_Registration(plugin, caller_location()))
    return plugin


def registered_plugin() -> BaseTelemetryPlugin:
    """The one registered plugin; an `AuthorError` when there is none or more than one."""
    if not _registered:
        raise AuthorError(
            "no plugin registered: call swarmtel_recorder.register_plugin(plugin=MyPlugin()) "
            "at module level",
            None,
        )
    if len(_registered) > 1:
        raise AuthorError(
            "%d plugins registered (%s); a module builds one plugin"
            % (
                len(_registered),
                ", ".join(
                    "%s at %s" % (type(r.plugin).__name__, r.location or "?") for r in _registered
                ),
            ),
            _registered[1].location,
        )
    return _registered[0].plugin
