"""Wiring into Locust: options, roles, run id hand-out to workers, and one listener per hook."""
from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import uuid
from typing import Any, Dict, Optional, Tuple

import gevent

from . import encode
from .buffer import EventBuffer
from .child import FAILED, LOADING, READY, REFUSED, STARTING, Probe, ServerChild
from .options import Settings, add_arguments
from .runid import uuid7
from .shipper import Shipper
from .transport import Transport, parse_endpoint

log = logging.getLogger("swarmtel_locust")

#: Custom Locust message, master -> worker, only ever in answer to :data:`MSG_RUN_REQUEST`:
#: ``{"run_id": str, "testplan": str | None}``.
MSG_RUN = "swarmtel_run"
#: Custom Locust message, worker -> master (no data): "send me ``swarmtel_run``". A worker
#: sends it once it has registered its handler for the answer, so the answer always finds it.
MSG_RUN_REQUEST = "swarmtel_run_request"
#: Custom Locust message, master -> each worker that asked for the run (so it has its
#: handler), at each test start: ``{"test_id": str}``. The master fires ``test_start`` before
#: it sends the spawn messages, and a worker handles messages in order, so a worker knows the
#: new test id when its own ``test_start`` fires. A worker that asks later gets the current
#: test id in ``swarmtel_run``.
MSG_TEST = "swarmtel_test"

#: Until ``init`` reads the options, events are kept in a buffer of the default size. A
#: worker can fire events before ``init``: Locust's WorkerRunner connects to the master in
#: its constructor, and a spawn message handled there fires ``test_start``.
EARLY_BUFFER = 100000

FLUSH_TIMEOUT = 10.0
CHILD_STOP_TIMEOUT = 20.0
#: Stopping the child when Locust is interrupted while waiting for it: SIGTERM, then SIGKILL
#: after this many seconds.
INTERRUPT_STOP_TIMEOUT = 5.0


@contextlib.contextmanager
def _terminate_as_exit():
    """While waiting for the runtime (inside Locust's ``init``, before Locust installs its own
    SIGTERM handler), turn SIGTERM into ``SystemExit(143)`` so the caller can stop the child
    first; outside the main thread, or where signals cannot be set, do nothing."""
    def on_term(signum, frame):
        raise SystemExit(128 + signal.SIGTERM)

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _runner_kind(runner: Any) -> str:
    from locust.runners import MasterRunner, WorkerRunner

    if isinstance(runner, MasterRunner):
        return "master"
    if isinstance(runner, WorkerRunner):
        return "worker"
    return "standalone"


class Bridge:
    """The bridge's state for this Locust process (one per process: :data:`BRIDGE`)."""

    def __init__(self) -> None:
        self.env: Any = None
        self.settings: Optional[Settings] = None
        self.role = "standalone"
        self.run_id: Optional[str] = None
        self.testplan: Optional[str] = None
        # Events fired before setup (see EARLY_BUFFER) wait here; setup takes them over, or
        # drops this buffer when the bridge is off.
        self.buffer: Optional[EventBuffer] = EventBuffer(EARLY_BUFFER)
        self.transport: Optional[Transport] = None
        self.shipper: Optional[Shipper] = None
        self.child: Optional[ServerChild] = None
        self.flusher = None
        self.stats_greenlet = None
        self.sample_greenlet = None
        #: The id of the current test (a new one at each test start on the master or a
        #: standalone process; a worker's comes from its master), for a per-test run id.
        self.test_id: Optional[str] = None
        self.process: Any = None
        #: Master: the client ids of the workers that asked for the run and said they take
        #: ``swarmtel_test`` (older bridges do not), pruned to the connected ones.
        self.bridged_workers: set = set()
        #: Between test_start and test_stop (also before setup, for a worker whose test
        #: started inside Locust's constructor).
        self.test_running = False
        self.done = False
        #: What the runtime wants sent (:attr:`Transport.wants`); ``None``: everything.
        self.wants: Optional[Dict[str, bool]] = None

    # ---------------------------------------------------------------- identity

    @property
    def runner(self) -> Any:
        return self.env.runner if self.env is not None else None

    def node(self) -> str:
        """``master``, ``worker-<index>`` or ``local``."""
        if self.role == "master":
            return "master"
        if self.role == "worker":
            r = self.runner
            idx = getattr(r, "worker_index", -1)
            return f"worker-{idx}" if idx is not None and idx >= 0 else f"worker-{r.client_id}"
        return "local"

    def identity(self) -> Tuple[str, str]:
        return self.role, self.node()

    def hello_fields(self) -> dict:
        assert self.settings is not None
        return {"role": self.role, "node": self.node(), "run_id": self.run_id,
                "testplan": self.testplan, "token": self.settings.token}

    def has_run(self) -> bool:
        return self.run_id is not None

    @property
    def emits_stats(self) -> bool:
        return self.role in ("master", "standalone")

    # ---------------------------------------------------------------- setup

    def setup(self, environment: Any) -> None:
        """Start the bridge for this process (the ``init`` hook). Raises ``SystemExit(1)``
        when the runtime of ``--swarmtel-config`` cannot start (unless ``--swarmtel-optional``)."""
        early, self.buffer = self.buffer, None
        settings = Settings.from_options(getattr(environment, "parsed_options", None))
        if settings.disable or environment.runner is None:
            return
        try:
            parse_endpoint(settings.endpoint)
        except ValueError as e:
            log.error("swarmtel-locust: %s; bridge disabled", e)
            return
        self.env, self.settings = environment, settings
        self.role = _runner_kind(environment.runner)
        runner = environment.runner
        buffer = self.buffer = EventBuffer(settings.buffer)
        if early is not None:
            buffer.take_over(early)
        self.transport = Transport(settings.endpoint, self.hello_fields, lambda: buffer.dropped)
        self.transport.on_wants = self.apply_wants
        self.shipper = Shipper(buffer, self.transport, self.identity, can_connect=self.has_run,
                               waiting_reason="no run id from the master yet (is swarmtel_locust "
                                              "imported in the master's locustfile?)")
        if settings.sample_interval > 0:
            self.process = _own_process()
        if self.role == "worker":
            runner.register_message(MSG_RUN, self._on_run_message)
            runner.register_message(MSG_TEST, self._on_test_message)
            self.request_run()
        else:
            self.run_id = settings.run_id or uuid7()
            self.testplan = settings.testplan
            if self.role == "master":
                runner.register_message(MSG_RUN_REQUEST, self._on_run_request)
            if settings.config and not self._start_child():
                self.buffer = None
                return
        if settings.config and self.role == "worker":
            log.info("swarmtel-locust: --swarmtel-config is ignored on workers (the master starts the runtime)")
        self.flusher = gevent.spawn(self.shipper.run, settings.flush_interval)
        if self.test_running:  # a worker whose test started before init: sample it from now
            self.start_samples()
        atexit.register(self._atexit)
        log.info("swarmtel-locust: %s %s sending to %s%s", self.role, self.node(), settings.endpoint,
                 f" (run {self.run_id})" if self.run_id else "")

    def _start_child(self) -> bool:
        """Start the runtime and wait until it is ready: it accepted the bridge's hello and
        loaded its plugins (a cold compile of big plugins takes a while; progress is logged
        every 10 s). While the child runs the bridge never gives up, so the test never starts
        before the runtime is ready. When it cannot start (it cannot be run, exits, refuses
        our hello, or reports an error before it is ready): stop Locust with its error
        (``SystemExit(1)``), or with ``--swarmtel-optional`` warn, turn the bridge off for
        this process and return False. Interrupted while waiting (Ctrl-C, SIGTERM), it stops
        the child before Locust exits."""
        s = self.settings
        transport = self.transport
        child = self.child = ServerChild(s.bin, s.config, s.endpoint, s.token)
        transport.log_readiness = False  # what the runtime does is reported here, once
        try:
            with _terminate_as_exit():
                if child.start():
                    child.wait_ready(self._probe_child)
        except (KeyboardInterrupt, SystemExit) as e:  # Ctrl-C, SIGTERM: leave no runtime behind
            log.warning("swarmtel-locust: interrupted while waiting for the swarmtel runtime; stopping it")
            self.stop_child(INTERRUPT_STOP_TIMEOUT)
            self._drop_transport()
            if isinstance(e, KeyboardInterrupt):
                raise SystemExit(130) from None
            raise
        except BaseException:
            self.stop_child(INTERRUPT_STOP_TIMEOUT)
            self._drop_transport()
            raise
        finally:
            transport.log_readiness = True
        failure = child.failure
        if failure is None:
            return True
        self.stop_child(CHILD_STOP_TIMEOUT)
        self._drop_transport()
        if s.optional:
            log.warning("swarmtel-locust: the swarmtel runtime did not start: %s; --swarmtel-optional is set, "
                        "so the test runs WITHOUT telemetry", failure)
            return False
        log.error("swarmtel-locust: the swarmtel runtime did not start: %s; stopping Locust "
                  "(--swarmtel-optional runs the test without telemetry instead)", failure)
        raise SystemExit(1)

    def _probe_child(self) -> Probe:
        """One look at the runtime the bridge started, through the bridge's own connection
        (connect if not connected, read the runtime's frames if connected)."""
        t = self.transport
        connected = t.try_connect(force=True)
        if t.runtime_error is not None:
            return Probe(FAILED, t.runtime_error)
        if t.refused is not None:
            return Probe(REFUSED, t.refused)
        if not connected:
            return Probe(STARTING)
        return Probe(LOADING if t.awaiting_ready else READY)

    def _drop_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.shipper = self.transport = None

    # ---------------------------------------------------------------- run id hand-out

    def run_message(self) -> dict:
        return {"run_id": self.run_id, "testplan": self.testplan, "test_id": self.test_id}

    def request_run(self) -> None:
        """Worker without a run id: ask the master for ``swarmtel_run``."""
        if self.role != "worker" or self.run_id is not None or self.runner is None:
            return
        try:
            self.runner.send_message(MSG_RUN_REQUEST, {"takes": [MSG_TEST]})
        except Exception as e:  # asked again at test_start
            log.warning("swarmtel-locust: cannot ask the master for the run id: %s", e)

    def send_run(self, client_id: str) -> None:
        """Master: send ``swarmtel_run`` to the worker that asked for it."""
        if self.role != "master" or self.run_id is None or not client_id:
            return
        try:
            self.runner.send_message(MSG_RUN, self.run_message(), client_id=client_id)
        except Exception as e:
            log.warning("swarmtel-locust: cannot send the run id to worker %s: %s", client_id, e)

    def _on_run_request(self, environment: Any = None, msg: Any = None, **kwargs: Any) -> None:
        client_id = getattr(msg, "node_id", None)
        takes = (getattr(msg, "data", None) or {}).get("takes") or ()
        if client_id and MSG_TEST in takes:
            self.bridged_workers.add(client_id)
        self.send_run(client_id)

    def _on_run_message(self, environment: Any = None, msg: Any = None, **kwargs: Any) -> None:
        data = getattr(msg, "data", None) or {}
        run_id = data.get("run_id")
        if not run_id:
            return
        if self.test_id is None and data.get("test_id"):
            self.test_id = str(data["test_id"])
        if self.run_id is None:
            self.run_id, self.testplan = str(run_id), data.get("testplan")
            log.info("swarmtel-locust: %s joined run %s", self.node(), self.run_id)
        elif self.run_id != run_id:
            log.warning("swarmtel-locust: master sent run id %s but this worker already uses %s; keeping it",
                        run_id, self.run_id)

    def _on_test_message(self, environment: Any = None, msg: Any = None, **kwargs: Any) -> None:
        test_id = (getattr(msg, "data", None) or {}).get("test_id")
        if test_id:
            self.test_id = str(test_id)

    def apply_wants(self, wants: Optional[Dict[str, bool]]) -> None:
        """Follow what the runtime wants sent (the transport calls this whenever it changes;
        ``None``: not known, send everything): the request fields, and the request listener,
        added or removed at once (Locust fires an event over a copy of its listeners, so a
        change while a request fires affects the next one only)."""
        global _ship_url, _ship_context
        self.wants = wants
        _ship_url = wants is None or wants["url"]
        _ship_context = wants is None or wants["context"]
        _listen_to_requests(wants is None or wants["requests"])

    def start_test(self) -> None:
        """At ``test_start``: the master and a standalone process pick a new test id (and the
        master tells its workers); every node records ``test_start`` with the current id."""
        self.test_running = True
        if self.settings is not None and self.role != "worker":
            self.test_id = new_test_id()
            if self.role == "master" and self.runner is not None:
                connected = {client.id for client in getattr(getattr(self.runner, "clients", None), "all", ())}
                self.bridged_workers &= connected
                for client_id in sorted(self.bridged_workers):
                    try:
                        self.runner.send_message(MSG_TEST, {"test_id": self.test_id}, client_id=client_id)
                    except Exception as e:
                        log.warning("swarmtel-locust: cannot send the test id to worker %s: %s", client_id, e)
        self.record("test_start", **({"test_id": self.test_id} if self.test_id else {}))

    # ---------------------------------------------------------------- events

    def record(self, event: str, **fields: Any) -> None:
        """Buffer a non-request event."""
        if self.buffer is not None:
            self.buffer.push_control(encode.event_item(event, **fields))

    def record_stats(self) -> None:
        if self.buffer is not None and self.emits_stats and not self.done:
            try:
                item = encode.stats_item(self.runner)
            except Exception as e:
                log.debug("swarmtel-locust: stats snapshot failed: %s", e)
                self.buffer.count_dropped(1)
                return
            if item is not None:
                self.buffer.push_control(item)

    def _stats_loop(self) -> None:
        while True:
            self.record_stats()
            gevent.sleep(self.settings.stats_interval)

    def start_stats(self) -> None:
        """From test start: a stats snapshot at once, then one every stats interval."""
        if (self.emits_stats and self.stats_greenlet is None and self.buffer is not None
                and self.settings is not None):
            self.stats_greenlet = gevent.spawn(self._stats_loop)

    def stop_stats(self) -> None:
        g, self.stats_greenlet = self.stats_greenlet, None
        if g is not None:
            g.kill(block=False)

    def record_sample(self) -> None:
        if self.buffer is None or self.process is None or self.done:
            return
        try:
            import psutil

            fields = encode.process_sample_fields(self.process, psutil.net_io_counters)
        except Exception as e:  # a process or host psutil cannot read: no sample, counted
            log.debug("swarmtel-locust: process sample failed: %s", e)
            self.buffer.count_dropped(1)
            return
        self.buffer.push_control(encode.event_item("process_sample", **fields))

    def _sample_loop(self) -> None:
        while True:
            self.record_sample()
            gevent.sleep(self.settings.sample_interval)

    def start_samples(self) -> None:
        """From test start to test stop: a process sample at once, then one every sample
        interval (locust-telemetry's system recorder does the same)."""
        if (self.process is not None and self.sample_greenlet is None and self.buffer is not None
                and self.settings is not None and self.settings.sample_interval > 0):
            try:  # the CPU share is measured from here: the test, not the start-up before it
                self.process.cpu_percent()
            except Exception:
                pass
            self.sample_greenlet = gevent.spawn(self._sample_loop)

    def stop_samples(self) -> None:
        g, self.sample_greenlet = self.sample_greenlet, None
        if g is not None:
            g.kill(block=False)

    def flush(self) -> None:
        if self.shipper is not None and not self.done:
            try:
                self.shipper.flush(FLUSH_TIMEOUT)
                self.shipper.report()
            except Exception:
                log.exception("swarmtel-locust: flush failed")

    def finish(self) -> None:
        """At ``quit``: final flush, bye, close, loss total, then stop the child."""
        if self.shipper is None or self.done:
            return
        self.done = True
        self.stop_stats()
        self.stop_samples()
        try:
            self.shipper.finish(FLUSH_TIMEOUT)
        except Exception:
            log.exception("swarmtel-locust: final flush failed")
        if self.flusher is not None:
            self.flusher.kill(block=False)
        self.stop_child(CHILD_STOP_TIMEOUT)

    def stop_child(self, timeout: float) -> None:
        child, self.child = self.child, None
        if child is not None:
            child.stop(timeout)

    def _atexit(self) -> None:
        self.stop_child(5.0)


BRIDGE = Bridge()


def new_test_id() -> str:
    """A test id as locust-telemetry makes its run ids: 8 hex digits of a random UUID."""
    return uuid.uuid4().hex[:8]


def _own_process() -> Any:
    """This process for psutil, warmed up so the first ``cpu_percent`` is not 0 (as
    locust-telemetry does); ``None`` when psutil cannot read it."""
    try:
        import psutil

        process = psutil.Process()
        process.cpu_percent()
        return process
    except Exception as e:
        log.warning("swarmtel-locust: cannot sample this process (%s); no process samples", e)
        return None


# -------------------------------------------------------------------- listeners


def _on_command_line_parser(parser: Any, **kwargs: Any) -> None:
    add_arguments(parser)


def _on_init(environment: Any, **kwargs: Any) -> None:
    try:
        BRIDGE.setup(environment)
    except Exception:
        BRIDGE.buffer = None
        log.exception("swarmtel-locust: setup failed; bridge disabled")


#: Whether requests' ``url`` and ``context`` are shipped: what the runtime wants
#: (:meth:`Bridge.apply_wants`); both until it says.
_ship_url = True
_ship_context = True


def _on_request(request_type, name, response_time, response_length, response=None, context=None,
                exception=None, start_time=None, url=None, **kwargs):
    b = BRIDGE.buffer
    if b is not None:
        b.push(encode.request_item(request_type, name, response_time, response_length, response,
                                   context if _ship_context else None, exception, start_time,
                                   url if _ship_url else None))


def _on_test_start(**kwargs):
    BRIDGE.start_test()
    BRIDGE.request_run()  # a worker still without a run id asks again
    BRIDGE.start_stats()
    BRIDGE.start_samples()


def _on_test_stopping(**kwargs):
    BRIDGE.record("test_stopping")


def _on_test_stop(**kwargs):
    BRIDGE.test_running = False
    BRIDGE.record("test_stop")
    BRIDGE.stop_samples()
    BRIDGE.stop_stats()
    BRIDGE.record_stats()
    BRIDGE.flush()


def _on_reset_stats(**kwargs):
    BRIDGE.record("reset_stats")


def _on_quitting(**kwargs):
    BRIDGE.record("quitting")


def _on_spawning_complete(user_count, **kwargs):
    BRIDGE.record("spawning_complete", user_count=int(user_count))


def _on_user_error(user_instance, exception, tb, **kwargs):
    if BRIDGE.buffer is not None:
        BRIDGE.record("user_error", **encode.user_error_fields(user_instance, exception, tb))


def _on_cpu_warning(cpu_usage, **kwargs):
    BRIDGE.record("cpu_warning", cpu_usage=float(cpu_usage))


def _on_usage_monitor(cpu_usage, memory_usage, **kwargs):
    BRIDGE.record("usage_monitor", cpu_usage=float(cpu_usage), memory_usage=int(memory_usage))


def _on_worker_connect(client_id, **kwargs):
    BRIDGE.record("worker_connect", client_id=str(client_id))


def _on_worker_report(client_id, data, **kwargs):
    BRIDGE.record("worker_report", **encode.worker_report_fields(client_id, data))


def _on_heartbeat_sent(client_id, timestamp, **kwargs):
    BRIDGE.record("heartbeat_sent", client_id=str(client_id), timestamp=float(timestamp))


def _on_heartbeat_received(client_id, timestamp, **kwargs):
    BRIDGE.record("heartbeat_received", client_id=str(client_id), timestamp=float(timestamp))


def _on_quit(exit_code=0, **kwargs):
    BRIDGE.record_stats()
    BRIDGE.record("quit", exit_code=int(exit_code or 0))
    BRIDGE.finish()


LISTENERS = {
    "init_command_line_parser": _on_command_line_parser,
    "init": _on_init,
    "request": _on_request,
    "test_start": _on_test_start,
    "test_stopping": _on_test_stopping,
    "test_stop": _on_test_stop,
    "reset_stats": _on_reset_stats,
    "quitting": _on_quitting,
    "spawning_complete": _on_spawning_complete,
    "user_error": _on_user_error,
    "cpu_warning": _on_cpu_warning,
    "usage_monitor": _on_usage_monitor,
    "worker_connect": _on_worker_connect,
    "worker_report": _on_worker_report,
    "heartbeat_sent": _on_heartbeat_sent,
    "heartbeat_received": _on_heartbeat_received,
    "quit": _on_quit,
}

_registered = False
#: The events the listeners were added to (:func:`register`), and whether the request
#: listener is among them now (:meth:`Bridge.apply_wants`).
_events: Any = None
_requests_listened = False


def _listen_to_requests(on: bool) -> None:
    """Add or remove the request listener (once registered; no-op when already so)."""
    global _requests_listened
    hook = getattr(_events, "request", None)
    if hook is None or on == _requests_listened:
        return
    if on:
        hook.add_listener(_on_request)
    else:
        hook.remove_listener(_on_request)
    _requests_listened = on


def register(events: Any = None) -> None:
    """Add the bridge's listeners to ``events`` (default ``locust.events``); idempotent.
    Hooks missing from an older Locust are skipped."""
    global _registered, _events, _requests_listened
    if _registered:
        return
    if events is None:
        from locust import events as events
    for name, listener in LISTENERS.items():
        hook = getattr(events, name, None)
        if hook is not None:
            hook.add_listener(listener)
    _events = events
    _requests_listened = getattr(events, "request", None) is not None
    _registered = True
