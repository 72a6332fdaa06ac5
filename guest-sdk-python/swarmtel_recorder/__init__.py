"""Write swarmtel telemetry recorders in Python, with locust-telemetry's API.

A plugin subclasses `BaseTelemetryPlugin` (options in ``add_arguments``, recorders per role in
``load_*_telemetry_recorders``), a recorder subclasses `BaseTelemetryRecorder` (listen with
``env.events.<hook>.add_listener`` or ``on_<hook>`` methods, log with
``self.log_telemetry(TelemetryData(...), message, **fields)``, report metric points with
``self.add_counter``, ``self.set_gauge`` and ``self.record_response_times``), and the module
registers the plugin with `register_plugin`. ``swarmtel-recorder build my_plugin.py`` turns it
into a sandboxed WebAssembly component; `swarmtel_recorder.testing` runs it in plain Python.
"""

from .errors import AuthorError, Refusal
from .hooks import HOOKS
from .metrics import MetricError, ResponseTimes, bucket_response_time
from .options import ArgumentGroup, ArgumentParser, LocustArgumentParser, ParsedOptions
from .plugin import BaseTelemetryPlugin, register_plugin
from .recorder import BaseTelemetryRecorder, Environment, TelemetryData
from .requests import Endpoint, Request, RequestBatch
from .stats import StatsEntry, StatsError

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
    "MetricError",
    "ParsedOptions",
    "Refusal",
    "Request",
    "RequestBatch",
    "ResponseTimes",
    "StatsEntry",
    "StatsError",
    "TelemetryData",
    "bucket_response_time",
    "register_plugin",
]
