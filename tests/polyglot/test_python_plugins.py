"""The Python guest SDK end to end: both Python example plugins built from source with
`swarmtel-recorder build`, replayed by the real `swarmtel` binary over the sample capture.

- the Python request-stats writes byte-identical `request_stats` lines to the Rust one, and
  describes itself identically (`swarmtel plugin inspect`);
- the seed's recorder, ported, logs CUSTOM_START and CUSTOM_STOP on the master and both
  workers;
- the harness (`swarmtel_recorder.testing.replay`, plain CPython) gives the same telemetry as
  `swarmtel replay` of the component, line for line;
- the Python request-stats' metric points (a counter and a response-time histogram per
  endpoint) reach the host's Prometheus output with every request of the capture, and the
  harness reports the same points.

Needs SWARMTEL_BIN (the swarmtel binary) and a Python with swarmtel-recorder and
componentize-py installed (the venv from scripts/python-env.sh). Builds each component once per
session into target/polyglot/ (about 10 s each) with a compile cache in target/polyglot/cache;
builds the Rust guests with scripts/build-guests.sh only when they are missing.
"""

import collections
import datetime
import decimal
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plugin_metrics import events_020, expected_request_metrics, replay_and_scrape, scraped_request_metrics
from swarmtel_recorder.testing import load_plugin, replay

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "locust-run.ndjson"
OUT = ROOT / "target" / "polyglot"
CACHE = OUT / "cache"
RUST_GUESTS = ROOT / "target" / "guests" / "wasm32-wasip2" / "release"
SEED_ENTRY = ROOT / "example-plugins" / "custom-telemetry-py" / "my_project" / "entry.py"
REQUEST_STATS_PY = ROOT / "example-plugins" / "request-stats-py" / "request_stats_py"


@pytest.fixture(scope="session")
def swarmtel_bin():
    path = os.environ.get("SWARMTEL_BIN")
    assert path and os.access(path, os.X_OK), "set SWARMTEL_BIN to the swarmtel binary (scripts/test.sh does)"
    return path


def build(target: Path, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    output = OUT / name
    result = subprocess.run(
        [sys.executable, "-m", "swarmtel_recorder", "build", str(target), "-o", str(output)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert output.stat().st_size > 1_000_000, "a component with CPython inside"
    return output


@pytest.fixture(scope="session")
def seed_wasm():
    return build(SEED_ENTRY, "custom_telemetry_py.wasm")


@pytest.fixture(scope="session")
def request_stats_py_wasm():
    return build(REQUEST_STATS_PY, "request_stats_py.wasm")


@pytest.fixture(scope="session")
def request_stats_rust_wasm():
    wasm = RUST_GUESTS / "request_stats.wasm"
    if not wasm.exists():
        subprocess.run([str(ROOT / "scripts" / "build-guests.sh")], check=True, cwd=str(ROOT))
    assert wasm.exists()
    return wasm


def config(tmp_path: Path, plugin: Path, extra: str = "") -> Path:
    # A generous per-call deadline: the epoch deadline is wall time, and on a busy machine a
    # descheduled recorder thread must not turn into a fault that changes the output.
    path = tmp_path / ("%s.toml" % plugin.stem)
    path.write_text(
        '[run]\ntestplan = "polyglot"\nrun_id = "polyglot-run"\n\n'
        '[cache]\ndir = "%s"\n\n[[plugins]]\npath = "%s"\nrequired = true\n%s\n'
        '[plugins.limits]\ncpu_ms_per_call = 5000\n'
        % (CACHE, plugin, extra)
    )
    return path


def swarmtel_replay(swarmtel_bin: str, config_path: Path, stream: Path = SAMPLE) -> list:
    result = subprocess.run(
        [swarmtel_bin, "replay", "--config", str(config_path), str(stream)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def telemetry_lines(lines: list, name: str) -> list:
    return [line for line in lines if json.loads(line)["telemetry"]["telemetry_name"] == name]


def test_python_request_stats_writes_the_same_lines_as_the_rust_one(
    swarmtel_bin, tmp_path, request_stats_py_wasm, request_stats_rust_wasm
):
    python = telemetry_lines(swarmtel_replay(swarmtel_bin, config(tmp_path, request_stats_py_wasm)), "request_stats")
    rust = telemetry_lines(swarmtel_replay(swarmtel_bin, config(tmp_path, request_stats_rust_wasm)), "request_stats")
    assert len(rust) > 10
    assert python == rust


#: Response times on Locust's rounding ties (Python's round: half to even), its range edges,
#: and absurd values where Rust's `as u64` saturates; lengths whose u64 sum wraps.
TIES = [0, 0.5, 1.5, 2.5, 12.5, 13.5, 99.5, 100, 145, 155, 995, 999.5, 1000, 1050, 1150,
        9950, 10000, 12500, 13500, 1e6, 1e6 + 500, 4.503599627370497e15, 6.755399441055746e18,
        1e300, 1.7e308]


def crafted_stream(path: Path) -> Path:
    lines = [{"event": "test_start", "role": "worker", "node": "worker-0", "time": 1795557121.0}]
    for index, response_time in enumerate(TIES * 3):
        lines.append({
            "event": "request", "role": "worker", "node": "worker-%d" % (index % 2),
            "time": 1795557122.0 + index / 100, "request_type": "GET",
            "name": "/tie-%d" % (index % 5), "response_time": response_time,
            "response_length": 18446744073709551615 if index % 7 == 0 else index,
            "exception": "boom" if index % 11 == 0 else None,
        })
    for index, response_time in enumerate((12.5, 145, 1050, 12500)):  # one endpoint each
        lines.append({
            "event": "request", "role": "worker", "node": "worker-0", "time": 1795557129.0,
            "request_type": "GET", "name": "/only-%s" % response_time,
            "response_time": response_time, "response_length": 1, "exception": None,
        })
    lines.append({"event": "test_stop", "role": "worker", "node": "worker-0", "time": 1795557130.0})
    lines.append({"event": "test_stop", "role": "worker", "node": "worker-1", "time": 1795557130.0})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_python_request_stats_rounds_ties_and_clamps_like_the_rust_one(
    swarmtel_bin, tmp_path, request_stats_py_wasm, request_stats_rust_wasm
):
    stream = crafted_stream(tmp_path / "ties.ndjson")
    for batch_size in (1024, 3):
        python_config = config(tmp_path, request_stats_py_wasm)
        rust_config = config(tmp_path, request_stats_rust_wasm)
        for path in (python_config, rust_config):
            path.write_text(path.read_text().replace('run_id = "polyglot-run"\n',
                                                     'run_id = "polyglot-run"\nbatch_size = %d\n' % batch_size))
        python = telemetry_lines(swarmtel_replay(swarmtel_bin, python_config, stream), "request_stats")
        rust = telemetry_lines(swarmtel_replay(swarmtel_bin, rust_config, stream), "request_stats")
        assert len(rust) >= 12
        assert python == rust, "batch size %d" % batch_size
    # Locust's own rounding (Python's round, half to even) shows in the percentiles.
    p50 = {
        json.loads(line)["telemetry"]["endpoint"]: json.loads(line)["telemetry"]["p50_ms"]
        for line in rust if json.loads(line)["telemetry"]["endpoint"].startswith("/only-")
    }
    assert p50 == {"/only-12.5": 12, "/only-145": 140, "/only-1050": 1000, "/only-12500": 12000}


def test_python_request_stats_describes_itself_like_the_rust_one(
    swarmtel_bin, request_stats_py_wasm, request_stats_rust_wasm
):
    def inspect(wasm):
        result = subprocess.run(
            [swarmtel_bin, "plugin", "inspect", "--json", str(wasm)],
            capture_output=True, text=True, timeout=300, env=dict(os.environ, SWARMTEL_CACHE_DIR=str(CACHE)),
        )
        assert result.returncode == 0, result.stderr
        described = json.loads(result.stdout)
        described.pop("file", None)
        described.pop("path", None)
        for recorder in described["recorders"]:
            recorder["events"] = sorted(recorder["events"])  # a set; each SDK lists it its own way
        return described

    assert inspect(request_stats_py_wasm) == inspect(request_stats_rust_wasm)


def test_the_seed_port_logs_start_and_stop_on_master_and_workers(swarmtel_bin, tmp_path, seed_wasm):
    extra = 'roles = ["master", "worker"]\n\n[plugins.options]\ncustom-option = "from-config"\n'
    lines = swarmtel_replay(swarmtel_bin, config(tmp_path, seed_wasm, extra))
    seen = [
        (record["telemetry"]["telemetry_name"], record["telemetry"]["source_id"], record["message"], record["name"])
        for record in map(json.loads, lines)
        if record["telemetry"]["plugin"] == "custom-telemetry"
    ]
    assert sorted(seen) == sorted(
        (name, node, "Custom telemetry recorder %s" % verb, "swarmtel.custom-telemetry")
        for name, verb in (("CUSTOM_START", "started"), ("CUSTOM_STOP", "stopped"))
        for node in ("master", "worker-0", "worker-1")
    )
    assert [name for name, _, _, _ in seen] == ["CUSTOM_START"] * 3 + ["CUSTOM_STOP"] * 3


def rfc3339_millis(seconds: float) -> str:
    """The host's `format_time`: Duration::from_secs_f64 (to the nearest nanosecond, exact
    from the float), then humantime's RFC 3339 with the milliseconds truncated."""
    nanos = round(decimal.Decimal(seconds) * 10**9)
    millis = nanos // 10**6
    moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        seconds=millis // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (millis % 1000)


def test_rfc3339_millis_truncates_like_the_host():
    assert rfc3339_millis(1795557121.0009999) == "2026-11-24T21:52:01.000Z"  # 999_928 ns
    assert rfc3339_millis(1795557121.9996) == "2026-11-24T21:52:01.999Z"
    assert rfc3339_millis(0.9999999996) == "1970-01-01T00:00:01.000Z"  # rounds to 1 s first


def test_the_harness_gives_what_swarmtel_replay_gives(swarmtel_bin, tmp_path, request_stats_py_wasm):
    host = [json.loads(line) for line in swarmtel_replay(swarmtel_bin, config(tmp_path, request_stats_py_wasm))]
    host = [
        (
            record["time"],
            record["telemetry"]["source_id"],
            record["telemetry"]["telemetry_type"],
            record["message"],
            {k: v for k, v in record["telemetry"].items() if k not in (
                "telemetry_type", "telemetry_name", "source", "source_id", "run_id", "testplan", "plugin")},
        )
        for record in host
        if record["telemetry"]["telemetry_name"] == "request_stats"
    ]
    harness = [
        (rfc3339_millis(item["time"]), item["node"], item["type"], item["message"], item["fields"])
        for item in replay(load_plugin(REQUEST_STATS_PY), SAMPLE)
    ]
    assert len(harness) > 10
    assert harness == host


def test_python_request_stats_metrics_reach_the_hosts_prometheus_output(swarmtel_bin, tmp_path, request_stats_py_wasm):
    expected = expected_request_metrics(SAMPLE)
    plugin = '[[plugins]]\npath = "%s"\nrequired = true\n\n[plugins.limits]\ncpu_ms_per_call = 5000\n' % request_stats_py_wasm
    text = replay_and_scrape(swarmtel_bin, plugin, CACHE, tmp_path, SAMPLE, sum(e["requests"] for e in expected.values()))
    scraped = scraped_request_metrics(text)
    assert {k: (v["requests"], v["buckets"]) for k, v in scraped.items()} == {
        k: (v["requests"], v["buckets"]) for k, v in expected.items()}
    for endpoint, row in expected.items():
        assert scraped[endpoint]["sum_seconds"] == pytest.approx(row["sum_seconds"], rel=1e-9)
    # The harness reports the same: every request once, Locust's buckets.
    harness = collections.Counter()
    for point in replay(load_plugin(REQUEST_STATS_PY), SAMPLE).metrics:
        if point["type"] == "counter":
            harness[(point["attributes"]["request_type"], point["attributes"]["endpoint"])] += point["value"]
    assert harness == {k: v["requests"] for k, v in expected.items()}


EVENTS_020_PLUGIN = """
from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, ResponseTimes, TelemetryData, register_plugin

class Contract020(BaseTelemetryRecorder):
    name = "contract_020"

    def __init__(self, env):
        super().__init__(env)
        self.times = ResponseTimes()

    def on_requests(self, batch):
        self.log_telemetry(TelemetryData("event", "FAILURES"), "", failures=batch.failures, types=batch.failure_types)
        self.times.observe_many(batch.response_times)
        self.add_counter("contract.requests", len(batch), attributes={"node": self.env.node})

    def on_request(self, name, exception, exception_type):
        self.log_telemetry(TelemetryData("event", "REQUEST"), name, exception=exception, exception_type=exception_type)

    def on_stats(self, total, entries, errors):
        self.log_telemetry(TelemetryData("metric", "STATS"), "",
                           keys=[[ms, count] for ms, count in sorted(total.response_times.items())],
                           p25=total.get_response_time_percentile(0.25), start=entries[0].start_time,
                           last=total.last_request_timestamp,
                           errors=[[e.method, e.name, e.error, e.occurrences, e.first_seen, e.last_seen] for e in errors])

    def on_process_sample(self, cpu_percent, memory_bytes, network_sent_bytes, network_recv_bytes):
        self.set_gauge("contract.cpu", cpu_percent, unit="%")
        self.log_telemetry(TelemetryData("metric", "PROCESS"), "",
                           sample=[cpu_percent, memory_bytes, network_sent_bytes, network_recv_bytes])

    def on_test_stop(self):
        self.record_response_times("contract.duration", self.times)
        self.times.reset()

class Contract020Plugin(BaseTelemetryPlugin):
    plugin_id = "contract-020"

    def load_master_telemetry_recorders(self, environment, **kwargs):
        Contract020(env=environment)

register_plugin(plugin=Contract020Plugin())
"""


def test_the_0_2_0_events_reach_a_python_component_as_they_reach_the_harness(swarmtel_bin, tmp_path):
    source = tmp_path / "contract_020.py"
    source.write_text(EVENTS_020_PLUGIN)
    stream = events_020(tmp_path / "events-0.2.0.ndjson")
    wasm = build(source, "contract_020_py.wasm")
    lines = swarmtel_replay(swarmtel_bin, config(tmp_path, wasm), stream)
    host = [(record["telemetry"]["telemetry_name"], record["message"],
             {k: v for k, v in record["telemetry"].items() if k not in (
                 "telemetry_type", "telemetry_name", "source", "source_id", "run_id", "testplan", "plugin")})
            for record in map(json.loads, lines) if record["telemetry"]["plugin"] == "contract-020"]
    items = replay(load_plugin(source), stream)
    assert host == [(item["name"], item["message"], item["fields"]) for item in items]
    assert [fields for name, _, fields in host if name in ("FAILURES", "STATS", "PROCESS")] == [
        {"failures": [[0, "HTTPError('500')"], [2, "boom"], [3, "refused"]],
         "types": [[0, "HTTPError"], [2, ""], [3, "ConnectionRefusedError"]]},
        {"keys": [[2.5, 2], [5, 1], [12, 1]], "p25": 2.5, "start": 1795557120.5, "last": 1795557123.25,
         "errors": [["GET", "/a", "HTTPError('500')", 1, 1795557121.0, 1795557121.0], ["POST", "/b", "timeout", 3, None, None]]},
        {"keys": [[2.5, 2], [5, 1], [12, 1]], "p25": 2.5, "start": None, "last": None, "errors": []},
        {"sample": [37.5, 2**40, 1000, 2000]},
        {"sample": [0.0, 1, 0, 0]},
    ]
    assert [(p["name"], p["value"]) for p in items.metrics] == [
        ("contract.requests", 4), ("contract.cpu", 37.5), ("contract.cpu", 0.0),
        ("contract.duration", {"buckets": {2: 1, 12: 1, 140: 1, 1000: 1}, "sum_ms": 1210.0})]


#: Descriptions the host refuses. `swarmtel-recorder check` must refuse each in the same words
#: as `swarmtel check` of the component built without the SDK's own check.
HOST_RULES = {
    "recorder_name": (
        'class R(BaseTelemetryRecorder):\n    name = "métrique"\n    def on_test_stop(self): pass\n'
        "class P(BaseTelemetryPlugin):\n"
        "    def load_worker_telemetry_recorders(self, environment, **kw): R(env=environment)\n",
        "invalid description: recorder name `métrique` must be 1 to 128 of A-Z, a-z, 0-9, `.`, `:`, `-`, `_`",
    ),
    "env_var": (
        "class R(BaseTelemetryRecorder):\n    def on_test_stop(self): pass\n"
        "class P(BaseTelemetryPlugin):\n"
        "    def add_arguments(self, parser): parser.add_argument('--x', type=str, default='a', env_var='CUSTOM_X')\n"
        "    def load_worker_telemetry_recorders(self, environment, **kw): R(env=environment)\n",
        "invalid description: option `x` names env var `CUSTOM_X`; the host reads only LOCUST_* and "
        "SWARMTEL_* names for plugins (A-Z, 0-9, _; at most 128)",
    ),
    "secret_env_var": (
        "class R(BaseTelemetryRecorder):\n    def on_test_stop(self): pass\n"
        "class P(BaseTelemetryPlugin):\n"
        "    def add_arguments(self, parser): parser.add_argument('--x', type=str, default='a', env_var='LOCUST_API_TOKEN')\n"
        "    def load_worker_telemetry_recorders(self, environment, **kw): R(env=environment)\n",
        "option `x` names env var `LOCUST_API_TOKEN`, which holds a secret of swarmtel, its Locust bridge "
        "or Locust; the host never reads it for a plugin",
    ),
    "reserved_id": (
        "class R(BaseTelemetryRecorder):\n    def on_test_stop(self): pass\n"
        "class P(BaseTelemetryPlugin):\n    plugin_id = 'swarmtel'\n"
        "    def load_worker_telemetry_recorders(self, environment, **kw): R(env=environment)\n",
        "invalid description: id `swarmtel` is reserved for the runtime",
    ),
}

HOST_RULES_HEADER = "from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, register_plugin\n"
#: Turns the SDK's own description checks off inside the component (the plugin module is
#: imported before the SDK describes it), so the host's verdict on the raw description shows.
WITHOUT_SDK_CHECKS = (
    "import swarmtel_recorder.dispatch as _d\n"
    "_d.check_plugin_text = _d.check_names = lambda *args: None\n"
)


@pytest.mark.parametrize("case", sorted(HOST_RULES))
def test_the_sdk_refuses_a_description_in_the_words_swarmtel_check_uses(swarmtel_bin, tmp_path, case):
    body, words = HOST_RULES[case]
    checked = tmp_path / "checked" / "rule_plugin.py"
    unchecked = tmp_path / "unchecked" / "rule_plugin.py"
    for path, extra in ((checked, ""), (unchecked, WITHOUT_SDK_CHECKS)):
        path.parent.mkdir()
        path.write_text(HOST_RULES_HEADER + extra + body + "register_plugin(plugin=P())\n")
    # Run from the plugin's folder: the error names the file as the author typed it.
    sdk = subprocess.run([sys.executable, "-m", "swarmtel_recorder", "check", "rule_plugin.py"],
                         capture_output=True, text=True, timeout=120, cwd=str(checked.parent))
    assert sdk.returncode == 1
    assert sdk.stderr.startswith("swarmtel-recorder: error: rule_plugin.py:") and words in sdk.stderr, sdk.stderr
    wasm = tmp_path / "rule.wasm"
    built = subprocess.run([sys.executable, "-m", "swarmtel_recorder", "build", str(unchecked), "-o", str(wasm)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    host = subprocess.run([swarmtel_bin, "check", "--config", str(config(tmp_path, wasm))],
                          capture_output=True, text=True, timeout=300)
    assert host.returncode != 0
    assert words in host.stderr, host.stderr


SHARED_STATE_PLUGIN = """
from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, TelemetryData, register_plugin

STARTS = []  # module-level state, as Locust plugins often keep

class Counter(BaseTelemetryRecorder):
    name = "counter"

    def on_test_start(self):
        STARTS.append(self.env.node)
        self.log_telemetry(TelemetryData("event", "STARTS"), "seen %d" % len(STARTS), nodes=list(STARTS))

class SharedPlugin(BaseTelemetryPlugin):
    plugin_id = "shared"

    def load_master_telemetry_recorders(self, environment, **kwargs):
        Counter(env=environment)

    def load_worker_telemetry_recorders(self, environment, **kwargs):
        Counter(env=environment)

register_plugin(plugin=SharedPlugin())
"""


def test_module_state_is_per_instance_in_the_harness_as_in_the_host(swarmtel_bin, tmp_path):
    source = tmp_path / "shared_plugin.py"
    source.write_text(SHARED_STATE_PLUGIN)
    wasm = build(source, "shared_state_py.wasm")
    host = sorted(
        (record["telemetry"]["source_id"], record["message"], record["telemetry"]["nodes"])
        for record in map(json.loads, swarmtel_replay(swarmtel_bin, config(tmp_path, wasm)))
        if record["telemetry"]["telemetry_name"] == "STARTS"
    )
    harness = sorted((i["node"], i["message"], i["fields"]["nodes"]) for i in replay(load_plugin(source), SAMPLE))
    assert host == [(node, "seen 1", [node]) for node in ("master", "worker-0", "worker-1")]
    assert harness == host


def write_tree(root: Path, files: dict) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def one_event_stream(tmp_path: Path) -> Path:
    stream = tmp_path / "stop.ndjson"
    stream.write_text('{"event":"test_stop","role":"worker","node":"worker-0","time":1795557121.0}\n')
    return stream


def test_the_whole_package_goes_into_the_component(swarmtel_bin, tmp_path):
    """A data file read at import, and a module of the package imported inside a function."""
    write_tree(tmp_path / "src", {
        "datapkg/__init__.py": (
            "import json, os\n"
            "from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, TelemetryData, register_plugin\n"
            "with open(os.path.join(os.path.dirname(__file__), 'data', 'words.json')) as f:\n"
            "    WORDS = json.load(f)\n"
            "class R(BaseTelemetryRecorder):\n"
            "    def on_test_stop(self):\n"
            "        from . import later\n"
            "        self.log_telemetry(TelemetryData('event', 'X'), later.message(), word=WORDS['word'])\n"
            "class P(BaseTelemetryPlugin):\n"
            "    plugin_id = 'datapkg'\n"
            "    def load_worker_telemetry_recorders(self, environment, **kw): R(env=environment)\n"
            "register_plugin(plugin=P())\n"
        ),
        "datapkg/later.py": "def message():\n    return 'from a module imported late'\n",
        "datapkg/data/words.json": '{"word": "bundled"}',
    })
    wasm = build(tmp_path / "src" / "datapkg", "datapkg_py.wasm")
    lines = swarmtel_replay(swarmtel_bin, config(tmp_path, wasm), one_event_stream(tmp_path))
    [record] = [json.loads(line) for line in telemetry_lines(lines, "X")]
    assert (record["message"], record["telemetry"]["word"]) == ("from a module imported late", "bundled")


def test_a_hyphenated_file_name_builds_and_runs(swarmtel_bin, tmp_path):
    source = tmp_path / "ok-plugin.py"
    source.write_text(
        "from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, TelemetryData, register_plugin\n"
        "class R(BaseTelemetryRecorder):\n"
        "    def on_test_stop(self): self.log_telemetry(TelemetryData('event', 'X'), 'hyphen')\n"
        "class P(BaseTelemetryPlugin):\n"
        "    def load_worker_telemetry_recorders(self, environment, **kw): R(env=environment)\n"
        "register_plugin(plugin=P())\n"
    )
    wasm = build(source, "hyphen_py.wasm")
    lines = swarmtel_replay(swarmtel_bin, config(tmp_path, wasm), one_event_stream(tmp_path))
    assert [json.loads(line)["message"] for line in telemetry_lines(lines, "X")] == ["hyphen"]


def test_a_failure_inside_componentize_py_is_one_line(tmp_path):
    source = tmp_path / "uses_ssl.py"
    source.write_text(
        "import ssl\n"
        "from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, register_plugin\n"
        "class R(BaseTelemetryRecorder):\n"
        "    def on_test_stop(self): pass\n"
        "class P(BaseTelemetryPlugin):\n"
        "    def load_worker_telemetry_recorders(self, environment, **kw): R(env=environment)\n"
        "register_plugin(plugin=P())\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "swarmtel_recorder", "build", "uses_ssl.py", "-o", "out.wasm"],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "swarmtel-recorder: error: uses_ssl.py:1: ModuleNotFoundError: No module named '_ssl' "
        "(in the component's Python) (componentize-py's output: out.wasm.log)"
    ]
    assert not (tmp_path / "out.wasm").exists()


CONDITIONAL_PLUGIN = """
from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, TelemetryData, register_plugin

class R(BaseTelemetryRecorder):
    name = "conditional"

    def __init__(self, env):
        super().__init__(env)
        env.events.test_start.add_listener(self.started)
        if env.parsed_options.track_stop:
            env.events.test_stop.add_listener(self.stopped)

    def started(self):
        self.log_telemetry(TelemetryData("event", "START"), "s")

    def stopped(self):
        self.log_telemetry(TelemetryData("event", "STOP"), "s")

class P(BaseTelemetryPlugin):
    plugin_id = "condsub"

    def add_arguments(self, parser):
        parser.add_argument("--track-stop", action="store_true")

    def load_worker_telemetry_recorders(self, environment, **kwargs):
        R(env=environment)

register_plugin(plugin=P())
"""


def test_a_subscription_that_depends_on_options_is_refused_by_the_host(swarmtel_bin, tmp_path):
    source = tmp_path / "condsub.py"
    source.write_text(CONDITIONAL_PLUGIN)
    wasm = build(source, "condsub_py.wasm")
    ok = subprocess.run([swarmtel_bin, "check", "--config", str(config(tmp_path, wasm))],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(
        [swarmtel_bin, "check", "--config", str(config(tmp_path, wasm, "\n[plugins.options]\ntrack-stop = true\n"))],
        capture_output=True, text=True, timeout=300,
    )
    assert refused.returncode != 0
    assert ("recorder conditional subscribes to test_stop with these options, but not when the plugin was "
            "described") in refused.stderr, refused.stderr


def test_an_exception_in_a_recorder_is_logged_to_the_host_in_one_line(swarmtel_bin, tmp_path):
    source = tmp_path / "sysexit_plugin.py"
    source.write_text(
        "from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, register_plugin\n"
        "class R(BaseTelemetryRecorder):\n"
        "    def on_test_stop(self):\n"
        "        raise SystemExit(3)\n"
        "class P(BaseTelemetryPlugin):\n"
        "    plugin_id = 'sysexit'\n"
        "    def load_worker_telemetry_recorders(self, environment, **kw): R(env=environment)\n"
        "register_plugin(plugin=P())\n"
    )
    wasm = build(source, "sysexit_py.wasm")
    result = subprocess.run(
        [swarmtel_bin, "replay", "--config", str(config(tmp_path, wasm)), str(one_event_stream(tmp_path))],
        capture_output=True, text=True, timeout=300,
    )
    assert "recorder handle raised SystemExit: 3 at sysexit_plugin.py:4" in result.stderr, result.stderr
    assert "unknown handle index" not in result.stderr  # what a bare SystemExit used to trap with
