"""Locust scenario + event capture hook for swarmtel.

Every Locust event fired on THIS node is appended as one JSON object per line to
$SWARMTEL_CAPTURE_DIR/<node>.ndjson (node = master | worker-<index> | local).
If SWARMTEL_CAPTURE_DIR is unset, nothing is captured.
"""
import json
import os
import random
import time
import traceback
import uuid

import gevent
from locust import HttpUser, constant, events, task
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

STATS_INTERVAL = 2.0


class ShopUser(HttpUser):
    wait_time = constant(float(os.environ.get("SWARMTEL_WAIT", "0.02")))

    @task(4)
    def index(self):
        self.client.get("/")

    @task(6)
    def list_items(self):
        self.client.get("/items")

    @task(5)
    def get_item(self):
        self.client.get(f"/items/{random.randint(1, 500)}", name="/items/[id]")

    @task(2)
    def create_order(self):
        self.client.post("/orders", json={"item_id": random.randint(1, 500), "qty": random.randint(1, 3)})

    @task(2)
    def flaky(self):
        self.client.get("/flaky")


# --------------------------------------------------------------------------- capture

class _Capture:
    def __init__(self):
        self.dir = os.environ.get("SWARMTEL_CAPTURE_DIR")
        self.env = None
        self.fh = None
        self.closed = False
        self.stats_greenlet = None

    # role / node are computed lazily: a worker only learns its index on the master's ACK
    @property
    def runner(self):
        return self.env.runner if self.env is not None else None

    def role(self):
        r = self.runner
        if isinstance(r, MasterRunner):
            return "master"
        if isinstance(r, WorkerRunner):
            return "worker"
        return "standalone"

    def node(self):
        r = self.runner
        if isinstance(r, MasterRunner):
            return "master"
        if isinstance(r, WorkerRunner):
            idx = getattr(r, "worker_index", -1)
            return f"worker-{idx}" if idx is not None and idx >= 0 else f"worker-{r.client_id}"
        return "local"

    def write(self, event, **fields):
        if not self.dir or self.env is None:
            return
        if self.fh is None:
            os.makedirs(self.dir, exist_ok=True)
            # append: an event after the close at `quit` reopens rather than being lost
            self.fh = open(os.path.join(self.dir, f"{self.node()}.ndjson"), "a", buffering=1, encoding="utf-8")
        rec = {"event": event, "role": self.role(), "node": self.node(), "time": time.time()}
        rec.update(fields)
        self.fh.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def close(self):
        if self.fh is not None:
            self.fh.flush()
            self.fh.close()
            self.fh = None


CAP = _Capture()


def _json_safe(obj, default):
    try:
        json.dumps(obj)
        return obj
    except (TypeError, ValueError):
        return default


def _entry(e):
    return {
        "request_type": e.method or "",
        "name": e.name,
        "num_requests": e.num_requests,
        "num_failures": e.num_failures,
        "total_response_time": float(e.total_response_time),
        "min_response_time": float(e.min_response_time or 0),
        "max_response_time": float(e.max_response_time),
        "total_content_length": int(e.total_content_length),
        "response_times": [[float(k), int(v)] for k, v in sorted(e.response_times.items())],
        "current_rps": float(e.current_rps),
        "current_fail_per_sec": float(e.current_fail_per_sec),
        "start_time": e.start_time,
        "last_request_timestamp": e.last_request_timestamp,
    }


def _error(e):
    return {
        "method": e.method or "",
        "name": e.name,
        "error": type(e).parse_error(e.error),
        "occurrences": int(e.occurrences),
        "first_seen": getattr(e, "first_seen", None),
        "last_seen": getattr(e, "last_seen", None),
    }


def _write_stats():
    r = CAP.runner
    if r is None:
        return
    st = r.stats
    entries = [_entry(e) for _, e in sorted(st.entries.items(), key=lambda kv: (kv[0][0], kv[0][1]))]
    CAP.write("stats", user_count=int(r.user_count), entries=entries, total=_entry(st.total),
              errors=[_error(e) for e in st.errors.values()])


def _stats_loop():
    while True:
        gevent.sleep(STATS_INTERVAL)
        _write_stats()


def _emits_stats():
    return isinstance(CAP.runner, (MasterRunner, LocalRunner))


@events.init.add_listener
def _on_init(environment, **kwargs):
    CAP.env = environment


@events.request.add_listener
def _on_request(request_type, name, response_time, response_length, response=None, context=None,
                exception=None, start_time=None, url=None, **kwargs):
    status = getattr(response, "status_code", None) if response is not None else None
    # The exception's class name, such as ConnectionError (Locust --otel's error.type); only
    # for exceptions, not for plain failure texts.
    error_type = {"exception_type": type(exception).__name__} if isinstance(exception, BaseException) else {}
    CAP.write(
        "request",
        request_type=request_type,
        name=name,
        response_time=float(response_time) if response_time is not None else None,
        response_length=int(response_length or 0),
        exception=str(exception) if exception is not None else None,
        **error_type,
        start_time=start_time,
        url=str(url) if url is not None else None,
        status_code=int(status) if status is not None else None,
        context=_json_safe(context or {}, {}),
    )


@events.test_start.add_listener
def _on_test_start(**kwargs):
    # A new id per test start (the master's or standalone's; workers are not told here).
    CAP.write("test_start", **({"test_id": uuid.uuid4().hex[:8]} if _emits_stats() else {}))
    if _emits_stats() and CAP.stats_greenlet is None:
        CAP.stats_greenlet = gevent.spawn(_stats_loop)


@events.test_stopping.add_listener
def _on_test_stopping(**kwargs):
    CAP.write("test_stopping")


@events.test_stop.add_listener
def _on_test_stop(**kwargs):
    CAP.write("test_stop")
    if CAP.stats_greenlet is not None:
        CAP.stats_greenlet.kill(block=False)
        CAP.stats_greenlet = None
    if _emits_stats():
        _write_stats()


@events.reset_stats.add_listener
def _on_reset_stats(**kwargs):
    CAP.write("reset_stats")


@events.quitting.add_listener
def _on_quitting(**kwargs):
    CAP.write("quitting")


@events.spawning_complete.add_listener
def _on_spawning_complete(user_count, **kwargs):
    CAP.write("spawning_complete", user_count=int(user_count))


@events.user_error.add_listener
def _on_user_error(user_instance, exception, tb, **kwargs):
    CAP.write(
        "user_error",
        user_instance=type(user_instance).__name__,
        exception=str(exception),
        tb="".join(traceback.format_tb(tb)) if tb is not None else "",
    )


@events.cpu_warning.add_listener
def _on_cpu_warning(cpu_usage, **kwargs):
    CAP.write("cpu_warning", cpu_usage=float(cpu_usage))


@events.usage_monitor.add_listener
def _on_usage_monitor(cpu_usage, memory_usage, **kwargs):
    CAP.write("usage_monitor", cpu_usage=float(cpu_usage), memory_usage=int(memory_usage))


@events.worker_connect.add_listener
def _on_worker_connect(client_id, **kwargs):
    CAP.write("worker_connect", client_id=str(client_id))


@events.worker_report.add_listener
def _on_worker_report(client_id, data, **kwargs):
    CAP.write("worker_report", client_id=str(client_id), user_count=int((data or {}).get("user_count", 0)))


@events.heartbeat_sent.add_listener
def _on_heartbeat_sent(client_id, timestamp, **kwargs):
    CAP.write("heartbeat_sent", client_id=str(client_id), timestamp=float(timestamp))


@events.heartbeat_received.add_listener
def _on_heartbeat_received(client_id, timestamp, **kwargs):
    CAP.write("heartbeat_received", client_id=str(client_id), timestamp=float(timestamp))


@events.quit.add_listener
def _on_quit(exit_code, **kwargs):
    CAP.write("quit", exit_code=int(exit_code))
    CAP.close()
