"""The harness: hand-fed recorders, and event streams routed and batched as the host does."""

import json

import pytest

from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, TelemetryData
from swarmtel_recorder.testing import Harness, StreamError, load_plugin, replay

from conftest import SAMPLE, SEED_ENTRY


class Batches(BaseTelemetryRecorder):
    """Logs one item per batch part it sees: its requests, then each event."""

    name = "batches"
    tick_interval_ms = 1000

    def on_requests(self, batch):
        self.log_telemetry(TelemetryData("metric", "REQUESTS"), "", count=len(batch))

    def on_test_stop(self, time):
        self.log_telemetry(TelemetryData("event", "STOP"), "", at=time)

    def on_tick(self, time):
        self.log_telemetry(TelemetryData("event", "TICK"), "", at=time)


class BatchesPlugin(BaseTelemetryPlugin):
    def load_worker_telemetry_recorders(self, environment, **kwargs):
        Batches(env=environment)


def line(event, node="worker-0", role="worker", time=100.0, **arguments):
    record = {"event": event, "role": role, "node": node, "time": time}
    record.update(arguments)
    return json.dumps(record)


def request(time, node="worker-0", name="/a"):
    return line("request", node=node, time=time, request_type="GET", name=name,
                response_time=5.0, response_length=1, exception=None)


def test_a_non_request_event_ends_the_batch_and_batches_hold_at_most_batch_size():
    lines = [request(100.0 + i / 100) for i in range(5)] + [line("test_stop", time=100.5)]
    items = replay(BatchesPlugin(), lines, batch_size=2)
    assert [(i["name"], i["fields"]) for i in items] == [
        ("REQUESTS", {"count": 2}),
        ("REQUESTS", {"count": 2}),
        ("REQUESTS", {"count": 1}),
        ("STOP", {"at": 100.5}),
    ]
    # Items carry the time of their batch's latest event, as swarmtel replay writes it: the
    # last request shares its batch with the stop that ended it.
    assert [i["time"] for i in items] == [100.01, 100.03, 100.5, 100.5]
    assert {(i["recorder"], i["role"], i["node"]) for i in items} == {("batches", "worker", "worker-0")}


def test_ticks_fall_on_multiples_of_the_interval_in_event_time_per_node():
    lines = [
        request(100.2),
        request(100.4, node="worker-1"),
        request(101.5),  # the tick at 101 ends the batch of the request at 100.2
        request(103.1),  # 102 ends the batch of 101.5; 103 comes alone
        request(103.2, node="worker-1"),  # worker-1's clock: 101, 102, 103
    ]
    items = replay(BatchesPlugin(), lines)
    seen = [(i["node"], i["name"], i["fields"].get("at", i["fields"].get("count"))) for i in items]
    assert seen == [
        ("worker-0", "REQUESTS", 1), ("worker-0", "TICK", 101.0),
        ("worker-0", "REQUESTS", 1), ("worker-0", "TICK", 102.0),
        ("worker-0", "TICK", 103.0),
        ("worker-1", "REQUESTS", 1), ("worker-1", "TICK", 101.0),
        ("worker-1", "TICK", 102.0), ("worker-1", "TICK", 103.0),
        # At the end every recorder's last batch is delivered, in creation order.
        ("worker-0", "REQUESTS", 1), ("worker-1", "REQUESTS", 1),
    ]


def test_a_long_gap_delivers_at_most_100_ticks():
    items = replay(BatchesPlugin(), [request(100.0), request(1000.0)])
    ticks = [i["fields"]["at"] for i in items if i["name"] == "TICK"]
    assert len(ticks) == 100
    assert ticks[0] == 101.0 and ticks[-1] == 200.0


def test_nodes_of_roles_the_plugin_does_not_serve_get_no_recorder():
    lines = [line("test_stop", node="master", role="master"), line("test_stop")]
    assert [i["node"] for i in replay(BatchesPlugin(), lines)] == ["worker-0"]
    assert replay(BatchesPlugin(), lines, roles=["master"]) == []


def test_a_bad_line_names_the_source_and_line():
    with pytest.raises(StreamError, match=r"<stream>:2: event `request` needs 'response_time'"):
        replay(BatchesPlugin(), [line("test_start"), line("request", request_type="GET", name="/")])
    with pytest.raises(StreamError, match=r"<stream>:1: unknown event `tset_start`"):
        replay(BatchesPlugin(), [line("tset_start")])


def test_hand_fed_events_return_telemetry_as_dicts():
    harness = Harness(BatchesPlugin())
    harness.request("GET", "/a", 1.0)
    assert harness.event("test_stop", time=7.0) == [
        {"type": "metric", "name": "REQUESTS", "message": "", "fields": {"count": 1}},
        {"type": "event", "name": "STOP", "message": "", "fields": {"at": 7.0}},
    ]
    with pytest.raises(ValueError, match="no hook named 'test_strat'"):
        harness.event("test_strat")


def test_the_sample_capture_replays_through_the_seed_port():
    items = replay(load_plugin(SEED_ENTRY), SAMPLE)
    assert [(i["node"], i["name"], i["message"]) for i in items] == [
        ("master", "CUSTOM_START", "Custom telemetry recorder started"),
        ("worker-1", "CUSTOM_START", "Custom telemetry recorder started"),
        ("worker-0", "CUSTOM_START", "Custom telemetry recorder started"),
        ("master", "CUSTOM_STOP", "Custom telemetry recorder stopped"),
        ("worker-1", "CUSTOM_STOP", "Custom telemetry recorder stopped"),
        ("worker-0", "CUSTOM_STOP", "Custom telemetry recorder stopped"),
    ]
    assert all(i["type"] == "event" and i["fields"] == {} for i in items)


class Misbehaving(BaseTelemetryRecorder):
    """Logs, on test_start, what its `mode` option says: telemetry the host would reject."""

    name = "misbehaving"

    def __init__(self, env, mode):
        super().__init__(env)
        self.mode = mode

    def on_test_start(self):
        T = TelemetryData("event", "bad")
        if self.mode == "nan":
            self.log_telemetry(T, "x", v=float("nan"))
        elif self.mode == "inf":
            self.log_telemetry_fields(T, "x", {"v": float("inf")})
        elif self.mode == "owned":
            self.log_telemetry(T, "x", time=1, plugin="p")
        elif self.mode == "array":
            self.log_telemetry_fields(T, "x", [1, 2])
        elif self.mode == "badname":
            self.log_telemetry(TelemetryData("event", "bad name!"), "x")
        elif self.mode == "longmessage":
            self.log_telemetry(T, "x" * 4097)
        else:
            self.log_telemetry(T, "fine", ok=1)


def misbehaving_plugin(mode):
    class MisbehavingPlugin(BaseTelemetryPlugin):
        def load_worker_telemetry_recorders(self, environment, **kwargs):
            Misbehaving(environment, mode)

    return MisbehavingPlugin()


@pytest.mark.parametrize("mode", ["nan", "inf"])
def test_nan_and_infinity_raise_at_the_log_telemetry_call(mode):
    harness = Harness(misbehaving_plugin(mode))
    with pytest.raises(ValueError, match=r"log_telemetry bad: fields are not JSON: NaN and Infinity"):
        harness.event("test_start", time=1.0)


@pytest.mark.parametrize("mode, reason", [
    ("owned", "field `time` is owned by the host and cannot be set by a plugin"),
    ("array", "fields must be a JSON object, got an array"),
    ("badname", "envelope: at /telemetry_name: value does not match"),
    ("longmessage", "envelope: at /message"),
])
def test_the_harness_rejects_what_the_host_rejects(mode, reason):
    from swarmtel_recorder.testing import TelemetryRejected

    with pytest.raises(TelemetryRejected, match="rejected by the host: " + reason.replace("(", r"\(")):
        Harness(misbehaving_plugin(mode)).event("test_start", time=1.0)
    with pytest.raises(TelemetryRejected):
        replay(misbehaving_plugin(mode), [line("test_start", time=1.0)])
    assert Harness(misbehaving_plugin("fine")).event("test_start", time=1.0)[0]["fields"] == {"ok": 1}


SHARED_STATE_PLUGIN = """
from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, TelemetryData, register_plugin
from shared_helper import SEEN

STARTS = []  # module-level state, as Locust plugins often keep

class Counter(BaseTelemetryRecorder):
    name = "counter"

    def on_test_start(self):
        STARTS.append(self.env.node)
        SEEN.append(self.env.node)
        self.log_telemetry(TelemetryData("event", "STARTS"), "", starts=list(STARTS), seen=list(SEEN))

class SharedPlugin(BaseTelemetryPlugin):
    def load_master_telemetry_recorders(self, environment, **kwargs):
        Counter(env=environment)

    def load_worker_telemetry_recorders(self, environment, **kwargs):
        Counter(env=environment)

register_plugin(plugin=SharedPlugin())
"""


def test_replay_gives_every_recorder_instance_its_own_module_state(write_plugin):
    """The host runs each (node, recorder) in its own interpreter: module-level state, in the
    plugin's module or a module next to it, is never shared between nodes."""
    write_plugin("SEEN = []\n", "shared_helper.py")
    path = write_plugin(SHARED_STATE_PLUGIN)
    lines = [line("test_start", node=node, role=role, time=1.0)
             for node, role in (("master", "master"), ("worker-0", "worker"), ("worker-1", "worker"))]
    for plugin in (path, load_plugin(path)):
        items = replay(plugin, lines)
        assert [(i["node"], i["fields"]) for i in items] == [
            (node, {"starts": [node], "seen": [node]}) for node in ("master", "worker-0", "worker-1")]
