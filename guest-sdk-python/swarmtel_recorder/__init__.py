"""Write swarmtel telemetry recorders in Python, with locust-telemetry's API.

A plugin subclasses `BaseTelemetryPlugin` (options in ``add_arguments``, recorders per role in
``load_*_telemetry_recorders``), a recorder subclasses `BaseTelemetryRecorder` (listen with
``env.events.<hook>.add_listener`` or ``on_<hook>`` methods, log with
``self.log_telemetry(TelemetryData(...), message, **fields)``), and the module registers the
plugin with `register_plugin`. ``swarmtel-recorder build my_plugin.py`` turns it into a
sandboxed WebAssembly component; `swarmtel_recorder.testing` runs it in plain Python.
"""

from .errors import AuthorError, Refusal
from .hooks import HOOKS
from .options import ArgumentGroup, ArgumentParser, LocustArgumentParser, ParsedOptions
from .plugin import BaseTelemetryPlugin, register_plugin
from .recorder import BaseTelemetryRecorder, Environment, TelemetryData
from .requests import Endpoint, Request, RequestBatch
from .stats import StatsEntry

__version__ = "0.1.0"

__all__ = [
    "HOOKS",
    "ArgumentGroup",
    "ArgumentParser",
    "AuthorError",
    "BaseTelemetryPlugin",
    "BaseTelemetryRecorder",
    "Endpoint",
    "Environment",
    "LocustArgumentParser",
    "ParsedOptions",
    "Refusal",
    "Request",
    "RequestBatch",
    "StatsEntry",
    "TelemetryData",
    "register_plugin",
]
