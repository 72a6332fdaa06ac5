"""The events a recorder can listen to: Locust's own hook names and keyword arguments.

Every hook here is one WIT `event-kind`. A listener is called with Locust's keyword
arguments for that hook (``env.events.request`` listeners get ``request_type``, ``name``,
``response_time``...), plus a few swarmtel extras (``time``: the event's Unix seconds) that are
passed only to listeners that name them or take ``**kwargs``.
"""

import difflib
from typing import Dict, NamedTuple, Optional, Tuple


class Hook(NamedTuple):
    """One hook: its name, its WIT event kind and the keyword arguments a listener gets."""

    #: Locust's hook name, such as ``test_start``; also the event stream's ``event`` value.
    name: str
    #: The WIT `event-kind` case, such as ``test-start``.
    kind: str
    #: Keyword arguments under Locust's names, in Locust's order.
    arguments: Tuple[str, ...]
    #: Extra keyword arguments swarmtel offers (passed only when the listener accepts them).
    extras: Tuple[str, ...] = ("time", "environment")


#: Every hook, by name, in the WIT's order.
HOOKS: Dict[str, Hook] = {
    hook.name: hook
    for hook in (
        Hook("test_start", "test-start", ("environment",)),
        Hook("test_stopping", "test-stopping", ("environment",)),
        Hook("test_stop", "test-stop", ("environment",)),
        Hook("spawning_complete", "spawning-complete", ("user_count",)),
        Hook(
            "request",
            "request",
            (
                "request_type",
                "name",
                "response_time",
                "response_length",
                "exception",
                "context",
                "url",
                "start_time",
                "response",
            ),
            # No `time`: a request's columns carry its start time, not the event time.
            ("status_code", "endpoint_id", "exception_type", "environment"),
        ),
        Hook("user_error", "user-error", ("user_instance", "exception", "tb")),
        Hook("cpu_warning", "cpu-warning", ("environment", "cpu_usage")),
        Hook("usage_monitor", "usage-monitor", ("environment", "cpu_usage", "memory_usage")),
        Hook("worker_connect", "worker-connect", ("client_id",)),
        Hook("worker_report", "worker-report", ("client_id", "data")),
        Hook("heartbeat_sent", "heartbeat-sent", ("client_id", "timestamp")),
        Hook("heartbeat_received", "heartbeat-received", ("client_id", "timestamp")),
        Hook("reset_stats", "reset-stats", ()),
        Hook("quitting", "quitting", ("environment",)),
        Hook("quit", "quit", ("exit_code",)),
        # swarmtel's own: the master's aggregated statistics, the host's tick, and each
        # process's resource use.
        Hook("stats", "stats-snapshot", ("user_count", "entries", "total", "errors")),
        Hook("tick", "tick", ()),
        Hook(
            "process_sample",
            "process-sample",
            ("cpu_percent", "memory_bytes", "network_sent_bytes", "network_recv_bytes"),
        ),
    )
}

#: Recorder methods that are not hooks but are called by the SDK.
SPECIAL_METHODS = ("on_requests", "on_finish")


def near_hook(name: str) -> Optional[str]:
    """The hook name closest to a mistyped ``name``, if one is close enough to suggest."""
    matches = difflib.get_close_matches(name, list(HOOKS), n=1, cutoff=0.75)
    return matches[0] if matches else None


def near_method(method: str) -> Optional[str]:
    """The ``on_<hook>`` method (or `on_requests`/`on_finish`) closest to ``method``."""
    candidates = ["on_" + name for name in HOOKS] + list(SPECIAL_METHODS)
    matches = difflib.get_close_matches(method, candidates, n=1, cutoff=0.85)
    return matches[0] if matches else None
