"""Command-line options of the bridge and the settings read from them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

ENV_PREFIX = "LOCUST_SWARMTEL_"

#: Seconds between stats snapshots: locust-telemetry's default recorder interval, so its
#: records come at the same moments.
DEFAULT_STATS_INTERVAL = 3.0
#: Seconds between process samples (CPU, memory, network), the same default.
DEFAULT_SAMPLE_INTERVAL = 3.0
#: The shortest interval either accepts; smaller values are raised to it.
MIN_INTERVAL = 0.05


def default_endpoint(environ: Optional[dict] = None, uid: Optional[int] = None) -> str:
    """The protocol's default endpoint: ``unix:$XDG_RUNTIME_DIR/swarmtel/serve.sock``,
    or ``unix:/tmp/swarmtel-<uid>/serve.sock`` when ``XDG_RUNTIME_DIR`` is not set."""
    environ = os.environ if environ is None else environ
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return f"unix:{os.path.join(runtime_dir, 'swarmtel', 'serve.sock')}"
    if uid is None:
        uid = os.getuid() if hasattr(os, "getuid") else 0
    return f"unix:/tmp/swarmtel-{uid}/serve.sock"


def add_arguments(parser: Any) -> None:
    """Add the ``--swarmtel-*`` options (each with a ``LOCUST_SWARMTEL_*`` env var) to
    Locust's argument parser. Called from ``events.init_command_line_parser``."""
    parser = _EnvHelp(parser)
    parser.add_argument(
        "--swarmtel-endpoint", type=str, default=default_endpoint(), metavar="<endpoint>",
        env_var=ENV_PREFIX + "ENDPOINT",
        help="swarmtel: where `swarmtel serve` listens: unix:/path, tcp:host:port or host:port",
    )
    parser.add_argument(
        "--swarmtel-config", type=str, default=None, metavar="<path>",
        env_var=ENV_PREFIX + "CONFIG",
        help="swarmtel: start `swarmtel serve --config <path>` as a child process and start the "
             "test once it has loaded its plugins (master and standalone only)",
    )
    parser.add_argument(
        "--swarmtel-bin", type=str, default="swarmtel", metavar="<path>",
        env_var=ENV_PREFIX + "BIN",
        help="swarmtel: the swarmtel executable used with --swarmtel-config",
    )
    parser.add_argument(
        "--swarmtel-testplan", type=str, default=None, metavar="<name>",
        env_var=ENV_PREFIX + "TESTPLAN",
        help="swarmtel: test plan name sent in the hello (server's own when absent)",
    )
    parser.add_argument(
        "--swarmtel-run-id", type=str, default=None, metavar="<id>",
        env_var=ENV_PREFIX + "RUN_ID",
        help="swarmtel: run id (master/standalone decide it; generated UUIDv7 when absent)",
    )
    parser.add_argument(
        "--swarmtel-token", type=str, default=None, metavar="<token>",
        env_var=ENV_PREFIX + "TOKEN", is_secret=True,
        help="swarmtel: shared secret sent in the hello",
    )
    parser.add_argument(
        "--swarmtel-stats-interval", type=float, default=DEFAULT_STATS_INTERVAL, metavar="<seconds>",
        env_var=ENV_PREFIX + "STATS_INTERVAL",
        help="swarmtel: seconds between stats snapshots, the first at test start (master/standalone)",
    )
    parser.add_argument(
        "--swarmtel-sample-interval", type=float, default=DEFAULT_SAMPLE_INTERVAL, metavar="<seconds>",
        env_var=ENV_PREFIX + "SAMPLE_INTERVAL",
        help="swarmtel: seconds between samples of this process's CPU, memory and network use, "
             "from test start to test stop, the first at test start (every node); 0 turns them off",
    )
    parser.add_argument(
        "--swarmtel-flush-interval", type=float, default=0.2, metavar="<seconds>",
        env_var=ENV_PREFIX + "FLUSH_INTERVAL",
        help="swarmtel: seconds between batch writes to the runtime",
    )
    parser.add_argument(
        "--swarmtel-buffer", type=int, default=100000, metavar="<events>",
        env_var=ENV_PREFIX + "BUFFER",
        help="swarmtel: max buffered events; further events are dropped and counted",
    )
    parser.add_argument(
        "--swarmtel-optional", action="store_true", default=False,
        env_var=ENV_PREFIX + "OPTIONAL",
        help="swarmtel: when the runtime started with --swarmtel-config fails to start, run the "
             "test without telemetry (with a warning) instead of stopping Locust",
    )
    parser.add_argument(
        "--swarmtel-disable", action="store_true", default=False,
        env_var=ENV_PREFIX + "DISABLE",
        help="swarmtel: turn the swarmtel bridge off",
    )


class _EnvHelp:
    """Adds " [env LOCUST_SWARMTEL_...]" to each option's help text."""

    def __init__(self, parser: Any):
        self._parser = parser

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("env_var") and kwargs.get("help"):
            kwargs["help"] = f"{kwargs['help']} [env {kwargs['env_var']}]"
        return self._parser.add_argument(*args, **kwargs)


@dataclass
class Settings:
    """The bridge's settings, read from Locust's parsed options."""

    endpoint: str
    config: Optional[str] = None
    bin: str = "swarmtel"
    testplan: Optional[str] = None
    run_id: Optional[str] = None
    token: Optional[str] = None
    stats_interval: float = DEFAULT_STATS_INTERVAL
    #: Seconds between process samples; 0 means none.
    sample_interval: float = DEFAULT_SAMPLE_INTERVAL
    flush_interval: float = 0.2
    buffer: int = 100000
    optional: bool = False
    disable: bool = False

    @classmethod
    def from_options(cls, options: Any) -> "Settings":
        """Build settings from a parsed-options namespace (``None`` or missing keys: defaults)."""
        def get(name, default):
            value = getattr(options, "swarmtel_" + name, None) if options is not None else None
            return default if value is None else value

        return cls(
            endpoint=get("endpoint", default_endpoint()) or default_endpoint(),
            config=get("config", None) or None,
            bin=get("bin", "swarmtel") or "swarmtel",
            testplan=get("testplan", None) or None,
            run_id=get("run_id", None) or None,
            token=get("token", None) or None,
            stats_interval=max(MIN_INTERVAL, float(get("stats_interval", DEFAULT_STATS_INTERVAL))),
            sample_interval=_sample_interval(float(get("sample_interval", DEFAULT_SAMPLE_INTERVAL))),
            flush_interval=max(0.01, float(get("flush_interval", 0.2))),
            buffer=max(1, int(get("buffer", 100000))),
            optional=bool(get("optional", False)),
            disable=bool(get("disable", False)),
        )


def _sample_interval(seconds: float) -> float:
    """0 (or less) turns process samples off; anything else is at least :data:`MIN_INTERVAL`."""
    return 0.0 if seconds <= 0 else max(MIN_INTERVAL, seconds)
