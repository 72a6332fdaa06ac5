"""The author-facing API: options, plugin description, subscriptions, listener arguments,
endpoints and the columns fast path. Everything runs through the SDK's dispatch, as in the
component."""

import json
import os

import pytest

from swarmtel_recorder import (
    AuthorError,
    BaseTelemetryPlugin,
    BaseTelemetryRecorder,
    Refusal,
    TelemetryData,
)
from swarmtel_recorder.dispatch import describe
from swarmtel_recorder.testing import Harness, stats_entry, stats_error


class Everything(BaseTelemetryRecorder):
    """Subscribes to every hook with add_listener, recording the arguments it gets."""

    name = "everything"
    tick_interval_ms = 1000

    def __init__(self, env):
        super().__init__(env)
        self.calls = []
        for hook in (
            "test_start", "test_stopping", "test_stop", "spawning_complete", "request",
            "user_error", "cpu_warning", "usage_monitor", "worker_connect", "worker_report",
            "heartbeat_sent", "heartbeat_received", "reset_stats", "quitting", "quit",
            "stats", "tick", "process_sample",
        ):
            env.events.hook(hook).add_listener(self._make(hook))

    def _make(self, hook):
        def listener(**kwargs):
            self.calls.append((hook, kwargs))
        return listener


class EverythingPlugin(BaseTelemetryPlugin):
    def load_master_telemetry_recorders(self, environment, **kwargs):
        Everything(env=environment)


class Options(BaseTelemetryRecorder):
    name = "options"

    def on_test_start(self, environment):
        options = environment.parsed_options
        self.log_telemetry(
            TelemetryData(type="event", name="OPTIONS"),
            "role %s node %s" % (environment.role, environment.node),
            text=options.text_option, count=options.count, ratio=options.ratio,
            flag=options.flag, quiet=options.quiet,
        )


class OptionsPlugin(BaseTelemetryPlugin):
    plugin_id = "options-demo"
    version = "2.3.4"

    def add_arguments(self, parser):
        group = parser.add_argument_group("telemetry.options", "Options of every type")
        group.add_argument("--text-option", type=str, default="t", help="text", env_var="LOCUST_TEXT")
        group.add_argument("--count", type=int, default=3, choices=[1, 2, 3])
        group.add_argument("--ratio", type=float, default=1)
        group.add_argument("--flag", type=bool, default=False)
        group.add_argument("--quiet", action="store_true")

    def load_worker_telemetry_recorders(self, environment, **kwargs):
        Options(env=environment)


def test_options_are_declared_with_types_defaults_and_env_vars():
    info = describe(OptionsPlugin())
    declared = [(o.name, o.option_type, o.default, o.env_var, o.dest) for o in info.options]
    assert declared == [
        ("text-option", "text", "t", "LOCUST_TEXT", "text_option"),
        ("count", "integer", 3, None, "count"),
        ("ratio", "float", 1.0, None, "ratio"),
        ("flag", "boolean", False, None, "flag"),
        ("quiet", "boolean", False, None, "quiet"),
    ]
    assert isinstance(info.options[2].default, float)
    assert (info.id, info.version) == ("options-demo", "2.3.4")


def test_parsed_options_hold_resolved_values_and_env_says_where_it_runs():
    harness = Harness(OptionsPlugin(), role="worker", node="worker-7", options={"count": 2, "flag": True})
    [item] = harness.event("test_start", time=1.0)
    assert item["message"] == "role worker node worker-7"
    assert item["fields"] == {"text": "t", "count": 2, "ratio": 1.0, "flag": True, "quiet": False}


def test_an_option_value_of_the_wrong_type_or_not_in_choices_refuses_the_recorder():
    with pytest.raises(Refusal, match="option count must be int"):
        Harness(OptionsPlugin(), options={"count": "many"})
    with pytest.raises(Refusal, match="option count must be one of 1, 2, 3, got 5"):
        Harness(OptionsPlugin(), options={"count": 5})


class Flags(BaseTelemetryRecorder):
    name = "flags"

    def on_test_start(self):
        o = self.env.parsed_options
        self.log_telemetry(TelemetryData("event", "FLAGS"), "", thing=o.thing, verbose=o.verbose, on=o.on)


class FlagsPlugin(BaseTelemetryPlugin):
    def add_arguments(self, parser):
        parser.add_argument("--no-thing", action="store_false", dest="thing")
        parser.add_argument("--verbose", action="store_true")
        parser.add_argument("--on", action="store_true", default=True)

    def load_worker_telemetry_recorders(self, environment, **kwargs):
        Flags(env=environment)


def test_store_true_and_store_false_behave_like_argparse():
    """`no-thing = true` in the config is `--no-thing` on a command line: thing becomes False."""
    import argparse

    def fields(options):
        return Harness(FlagsPlugin(), options=options).event("test_start", time=1.0)[0]["fields"]

    def argparse_says(argv):
        parser = argparse.ArgumentParser()
        parser.add_argument("--no-thing", action="store_false", dest="thing")
        parser.add_argument("--verbose", action="store_true")
        parser.add_argument("--on", action="store_true", default=True)
        return vars(parser.parse_args(argv))

    assert fields({}) == argparse_says([]) == {"thing": True, "verbose": False, "on": True}
    assert fields({"no-thing": True, "verbose": True}) == argparse_says(["--no-thing", "--verbose"])
    assert fields({"no-thing": True})["thing"] is False
    assert fields({"no-thing": False})["thing"] is True
    # The host sees each flag as a boolean option that is off unless the config sets it.
    assert [(o.name, o.option_type, o.default) for o in describe(FlagsPlugin()).options] == [
        ("no-thing", "boolean", False), ("verbose", "boolean", False), ("on", "boolean", False)]


def test_unknown_options_are_an_error_in_the_harness():
    with pytest.raises(ValueError, match="declares no option colour"):
        Harness(OptionsPlugin(), options={"colour": "red"})


def test_plugin_id_version_and_description_default_from_the_class():
    class CustomTelemetryPlugin(BaseTelemetryPlugin):
        """Logs things.

        More text."""

        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Options(env=environment)

    class HTTPLatencyPlugin(CustomTelemetryPlugin):
        description = "explicit"

    info = describe(CustomTelemetryPlugin())
    assert (info.id, info.version, info.description) == ("custom-telemetry", "0.1.0", "Logs things.")
    assert describe(HTTPLatencyPlugin()).id == "http-latency"
    assert describe(HTTPLatencyPlugin()).description == "explicit"


def test_roles_come_from_the_loaders_and_standalone_defaults_to_master_and_worker():
    class MasterOnly(BaseTelemetryRecorder):
        name = "master_only"

        def on_stats(self, entries, total):
            pass

    class WorkerOnly(BaseTelemetryRecorder):
        def on_request(self, name):
            pass

    class Both(BaseTelemetryPlugin):
        def load_master_telemetry_recorders(self, environment, **kwargs):
            MasterOnly(env=environment)

        def load_worker_telemetry_recorders(self, environment, **kwargs):
            WorkerOnly(env=environment)

    info = describe(Both())
    assert [(r.name, r.roles, r.events) for r in info.recorders] == [
        ("master_only", ["master", "standalone"], ["stats"]),
        ("worker_only", ["worker", "standalone"], ["request"]),
    ]

    class NoStandalone(Both):
        def load_standalone_telemetry_recorders(self, environment, **kwargs):
            pass

    assert [r.roles for r in describe(NoStandalone()).recorders] == [["master"], ["worker"]]


def test_every_hook_gets_locusts_keyword_arguments():
    harness = Harness(EverythingPlugin(), role="master")
    recorder = harness.recorder
    harness.request("GET", "/a", 12.5, 100, start_time=5.0, url="http://x/a", context={"k": 1})
    harness.request("POST", "/b", 3.0, 7, exception="HTTPError('500')", exception_type="HTTPError")
    harness.request("POST", "/b", 4.0, 7, exception="refused")
    harness.event("spawning_complete", time=1.0, user_count=10)
    harness.event("user_error", time=2.0, user_instance="MyUser", exception="boom", tb="tb")
    harness.event("usage_monitor", time=3.0, cpu_usage=12.5, memory_usage=1000)
    harness.event("worker_report", time=4.0, client_id="c1", user_count=5)
    harness.event("heartbeat_sent", time=5.0, client_id="c1", timestamp=4.5)
    harness.event("quit", time=6.0)
    total = stats_entry("Aggregated", num_requests=4, num_failures=1, response_times={10: 3, 20: 1},
                        start_time=1.5, last_request_timestamp=6.5)
    error = stats_error("/b", "HTTPError('500')", occurrences=1, method="POST", first_seen=2.0, last_seen=2.0)
    harness.event("stats", time=7.0, user_count=3, entries=[], total=total, errors=[error])
    harness.tick(8.0)
    harness.event("process_sample", time=9.0, cpu_percent=37.5, memory_bytes=2**40,
                  network_sent_bytes=1000, network_recv_bytes=2000)
    calls = {hook: kwargs for hook, kwargs in recorder.calls}
    first = recorder.calls[0]
    assert first[0] == "request"
    assert {k: v for k, v in first[1].items() if k != "environment"} == {
        "request_type": "GET", "name": "/a", "response_time": 12.5, "response_length": 100,
        "exception": None, "context": {}, "url": None, "start_time": 5.0, "response": None,
        "status_code": 200, "endpoint_id": 0, "exception_type": None,
    }, "no url/context unless the recorder asks for request_extras"
    assert recorder.calls[1][1]["exception"] == "HTTPError('500')"
    assert recorder.calls[1][1]["exception_type"] == "HTTPError"
    assert recorder.calls[1][1]["status_code"] == 500
    assert (recorder.calls[2][1]["exception"], recorder.calls[2][1]["exception_type"]) == ("refused", ""), \
        "a failure whose class is unknown has an empty type"
    assert calls["spawning_complete"]["user_count"] == 10
    assert calls["spawning_complete"]["time"] == 1.0
    assert calls["user_error"]["user_instance"] == "MyUser"
    assert calls["user_error"]["tb"] == "tb"
    assert calls["usage_monitor"]["cpu_usage"] == 12.5
    assert calls["usage_monitor"]["environment"] is recorder.env
    assert calls["worker_report"]["data"] == {"user_count": 5}
    assert calls["heartbeat_sent"]["timestamp"] == 4.5
    assert calls["quit"]["exit_code"] == 0
    assert calls["stats"]["total"].get_response_time_percentile(0.5) == 10
    assert calls["stats"]["total"].fail_ratio == 0.25
    assert (calls["stats"]["total"].start_time, calls["stats"]["total"].last_request_timestamp) == (1.5, 6.5)
    [error] = calls["stats"]["errors"]
    assert (error.method, error.name, error.error, error.occurrences, error.first_seen, error.last_seen) == (
        "POST", "/b", "HTTPError('500')", 1, 2.0, 2.0)
    assert calls["tick"]["time"] == 8.0
    assert {k: v for k, v in calls["process_sample"].items() if k != "environment"} == {
        "cpu_percent": 37.5, "memory_bytes": 2**40, "network_sent_bytes": 1000,
        "network_recv_bytes": 2000, "time": 9.0,
    }


def test_listeners_get_only_the_arguments_they_name():
    class Picky(BaseTelemetryRecorder):
        def __init__(self, env):
            super().__init__(env)
            env.events.spawning_complete.add_listener(self.spawned)

        def spawned(self, user_count):
            self.log_telemetry(TelemetryData("event", "SPAWNED"), "users", users=user_count)

    class Plugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Picky(env=environment)

    [item] = Harness(Plugin()).event("spawning_complete", time=1.0, user_count=4)
    assert item == {"type": "event", "name": "SPAWNED", "message": "users", "fields": {"users": 4}}


def test_a_listener_that_needs_an_argument_the_hook_lacks_is_an_author_error():
    class Wrong(BaseTelemetryRecorder):
        def __init__(self, env):
            super().__init__(env)
            env.events.test_stop.add_listener(self.stopped)

        def stopped(self, user_count):
            pass

    class Plugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Wrong(env=environment)

    with pytest.raises(AuthorError, match="takes `user_count`, which the test_stop hook does not give"):
        describe(Plugin())


def test_overridden_hook_methods_subscribe_once_even_when_also_registered():
    class Counting(BaseTelemetryRecorder):
        def __init__(self, env):
            super().__init__(env)
            env.events.test_start.add_listener(self.on_test_start)
            self.starts = 0
            self.stops = 0

        def on_test_start(self, **kwargs):
            self.starts += 1

        def on_test_stop(self):
            self.stops += 1

    class Plugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Counting(env=environment)

    assert describe(Plugin()).recorders[0].events == ["test_start", "test_stop"]
    harness = Harness(Plugin())
    harness.event("test_start", time=1.0)
    harness.event("test_stop", time=2.0)
    assert (harness.recorder.starts, harness.recorder.stops) == (1, 1)


def test_events_not_subscribed_are_not_delivered():
    harness = Harness(OptionsPlugin())
    assert harness.event("test_stop", time=1.0) == []
    assert harness.event("spawning_complete", time=1.0, user_count=2) == []


class EndpointIds(BaseTelemetryRecorder):
    def __init__(self, env):
        super().__init__(env)
        self.batches = []
        self.per_request = []

    def on_requests(self, batch):
        self.batches.append(
            {
                "ids": list(batch.endpoint_ids),
                "new": [(i, tuple(e)) for i, e in batch.new_endpoints],
                "times": list(batch.response_times),
                "lengths": list(batch.response_lengths),
                "failures": list(batch.failures),
                "groups": batch.indices_by_endpoint(),
                "names": [batch.endpoint(i).name for i in batch.endpoint_ids],
            }
        )

    def on_request(self, name, endpoint_id, exception):
        self.per_request.append((name, endpoint_id, exception))


class EndpointPlugin(BaseTelemetryPlugin):
    def load_worker_telemetry_recorders(self, environment, **kwargs):
        EndpointIds(env=environment)


def test_endpoint_ids_are_stable_across_batches_and_columns_line_up():
    harness = Harness(EndpointPlugin())
    harness.request("GET", "/b", 1.0, 10)
    harness.request("GET", "/a", 2.0, 20, exception="boom")
    harness.request("GET", "/b", 3.0, 30)
    harness.flush()
    # Next batch: the host's per-batch dictionary starts over ("/a" comes first now).
    harness.request("GET", "/a", 4.0, 40)
    harness.request("POST", "/b", 5.0, 50)
    harness.flush()
    first, second = harness.recorder.batches
    assert first["ids"] == [0, 1, 0]
    assert first["new"] == [(0, ("GET", "/b")), (1, ("GET", "/a"))]
    assert first["times"] == [1.0, 2.0, 3.0]
    assert first["lengths"] == [10, 20, 30]
    assert first["failures"] == [(1, "boom")]
    assert first["groups"] == {0: [0, 2], 1: [1]}
    assert second["ids"] == [1, 2]
    assert second["new"] == [(2, ("POST", "/b"))]
    assert second["names"] == ["/a", "/b"]
    assert harness.recorder.per_request == [
        ("/b", 0, None), ("/a", 1, "boom"), ("/b", 0, None), ("/a", 1, None), ("/b", 2, None)
    ]


def test_requests_are_delivered_in_batches_of_batch_size():
    harness = Harness(EndpointPlugin(), batch_size=2)
    harness.request("GET", "/a", 1.0)
    assert harness.recorder.batches == []
    harness.request("GET", "/a", 1.0)
    assert len(harness.recorder.batches) == 1
    harness.request("GET", "/a", 1.0)
    harness.finish()
    assert [len(b["ids"]) for b in harness.recorder.batches] == [2, 1]


def test_request_extras_give_url_and_context():
    class Extras(BaseTelemetryRecorder):
        request_extras = ("url", "context")

        def on_request(self, url, context):
            self.log_telemetry(TelemetryData("event", "R"), url or "", **context)

    class Plugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Extras(env=environment)

    assert describe(Plugin()).recorders[0].request_extras == ("url", "context")
    harness = Harness(Plugin())
    harness.request("GET", "/a", 1.0, url="http://h/a", context={"user": 7})
    [item] = harness.flush()
    assert (item["message"], item["fields"]) == ("http://h/a", {"user": 7})


def test_ticks_need_an_interval_and_the_interval_is_declared():
    class Ticking(BaseTelemetryRecorder):
        tick_interval_ms = 2500

        def on_tick(self, time):
            self.log_telemetry(TelemetryData("metric", "TICK"), "tick", at=time)

    class Plugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Ticking(env=environment)

    recorder = describe(Plugin()).recorders[0]
    assert (recorder.events, recorder.tick_interval_ms) == (["tick"], 2500)
    assert Harness(Plugin()).tick(5.0)[0]["fields"] == {"at": 5.0}

    class NoInterval(BaseTelemetryRecorder):
        def on_tick(self):
            pass

    class Broken(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            NoInterval(env=environment)

    with pytest.raises(AuthorError, match="listens to tick but sets no tick_interval_ms"):
        describe(Broken())


def test_schemas_are_json_text_by_telemetry_name():
    class WithSchema(OptionsPlugin):
        schemas = {"OPTIONS": {"type": "object", "required": ["text"]}}

    [(name, text)] = describe(WithSchema()).schemas
    assert name == "OPTIONS"
    assert json.loads(text) == {"type": "object", "required": ["text"]}


def test_telemetry_type_must_be_event_or_metric():
    with pytest.raises(ValueError, match="'event' or 'metric'"):
        TelemetryData(type="gauge", name="X")


def test_a_loader_that_raises_refuses_creation_with_its_message():
    class Picky(OptionsPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            if environment.parsed_options.count < 2 and not environment.probing:
                raise Refusal("count must be at least 2")
            super().load_worker_telemetry_recorders(environment)

    with pytest.raises(Refusal, match="^count must be at least 2$"):
        Harness(Picky(), options={"count": 1})
    Harness(Picky(), options={"count": 2})


def test_on_finish_is_called_at_the_end():
    class Finishing(BaseTelemetryRecorder):
        def on_test_start(self):
            pass

        def on_finish(self):
            self.log_telemetry(TelemetryData("event", "BYE"), "bye")

    class Plugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Finishing(env=environment)

    assert [i["name"] for i in Harness(Plugin()).finish()] == ["BYE"]


def test_the_package_carries_the_repositorys_wit():
    from swarmtel_recorder.build import WORLD, wit_dir

    from conftest import REPO

    packaged = os.path.join(wit_dir(), "telemetry.wit")
    with open(packaged) as mine, open(REPO / "wit" / "0.2.0" / "telemetry.wit") as theirs:
        text = mine.read()
        assert text == theirs.read()
    assert "package swarmtel:telemetry@0.2.0;" in text
    assert "world %s {" % WORLD in text


def test_subscribing_outside_a_recorder_and_unknown_extras_are_author_errors():
    class Early(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            environment.events.test_start.add_listener(lambda: None)

    with pytest.raises(AuthorError, match="add_listener outside a recorder"):
        describe(Early())

    class Extras(BaseTelemetryRecorder):
        request_extras = ("headers",)

        def on_request(self):
            pass

    class Plugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Extras(env=environment)

    with pytest.raises(AuthorError, match="request_extras 'headers' unknown"):
        describe(Plugin())


def test_hasattr_on_events_still_works():
    from swarmtel_recorder.recorder import Environment
    from swarmtel_recorder.options import ParsedOptions

    env = Environment("worker", "worker-0", ParsedOptions({}))
    assert hasattr(env.events, "test_start")
    assert not hasattr(env.events, "test_strat")


class ConditionalSubscriber(BaseTelemetryRecorder):
    name = "conditional"

    def __init__(self, env):
        super().__init__(env)
        env.events.test_start.add_listener(self.started)
        if env.parsed_options.track_stop:
            env.events.test_stop.add_listener(self.stopped)

    def started(self):
        self.log_telemetry(TelemetryData("event", "START"), "")

    def stopped(self):
        self.log_telemetry(TelemetryData("event", "STOP"), "")


class ConditionalPlugin(BaseTelemetryPlugin):
    def add_arguments(self, parser):
        parser.add_argument("--track-stop", action="store_true")

    def load_worker_telemetry_recorders(self, environment, **kwargs):
        ConditionalSubscriber(env=environment)


def test_subscribing_to_a_hook_only_for_some_option_values_refuses_the_recorder():
    assert describe(ConditionalPlugin()).recorders[0].events == ["test_start"]
    assert Harness(ConditionalPlugin()).event("test_start", time=1.0)[0]["name"] == "START"
    with pytest.raises(Refusal, match=r"recorder conditional subscribes to test_stop with these options, "
                                      r"but not when the plugin was described"):
        Harness(ConditionalPlugin(), options={"track-stop": True})


class Dynamic(BaseTelemetryRecorder):
    name = "dynamic"

    def __init__(self, env):
        super().__init__(env)
        env.events.test_start.add_listener(self.started)
        env.events.quitting.add_listener(self.bye)

    def started(self):
        self.env.events.quitting.remove_listener(self.bye)
        self.env.events.test_stop.remove_listener(self.on_test_stop)
        self.env.events.test_stopping.add_listener(self.stopping)

    def stopping(self):
        self.log_telemetry(TelemetryData("event", "STOPPING"), "")

    def on_test_stop(self):
        self.log_telemetry(TelemetryData("event", "STOP"), "removed, never called")

    def on_test_stopping(self):
        self.log_telemetry(TelemetryData("event", "ON_STOPPING"), "")

    def bye(self):
        self.log_telemetry(TelemetryData("event", "BYE"), "removed, never called")

    def spawned(self, user_count):
        pass


class DynamicPlugin(BaseTelemetryPlugin):
    def load_worker_telemetry_recorders(self, environment, **kwargs):
        Dynamic(env=environment)


def test_remove_listener_works_and_adding_a_declared_hook_later_works():
    harness = Harness(DynamicPlugin())
    assert harness.event("quitting", time=0.5)[0]["name"] == "BYE"
    assert harness.event("test_start", time=1.0) == []
    assert [i["name"] for i in harness.event("test_stopping", time=2.0)] == ["STOPPING", "ON_STOPPING"]
    assert harness.event("test_stop", time=3.0) == []
    assert harness.event("quitting", time=4.0) == []


def test_adding_a_listener_to_an_undeclared_hook_after_creation_is_an_author_error():
    from swarmtel_recorder.errors import AuthorError

    harness = Harness(DynamicPlugin())
    with pytest.raises(AuthorError, match=r"env\.events\.spawning_complete\.add_listener after the recorder "
                                          r"was created: the host sends it only the hooks it subscribed to"):
        harness.recorder.env.events.spawning_complete.add_listener(harness.recorder.spawned)
