"""The Python guest SDK end to end: both Python example plugins built from source with
`swarmtel-recorder build`, replayed by the real `swarmtel` binary over the sample capture.

- the Python request-stats writes byte-identical `request_stats` lines to the Rust one, and
  describes itself identically (`swarmtel plugin inspect`);
- the seed's recorder, ported, logs CUSTOM_START and CUSTOM_STOP on the master and both
  workers;
- the harness (`swarmtel_recorder.testing.replay`, plain CPython) gives the same telemetry as
  `swarmtel replay` of the component, line for line.

Needs SWARMTEL_BIN (the swarmtel binary) and a Python with swarmtel-recorder and
componentize-py installed (the venv from scripts/python-env.sh). Builds each component once per
session into target/polyglot/ (about 10 s each) with a compile cache in target/polyglot/cache;
builds the Rust guests with scripts/build-guests.sh only when they are missing.
"""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def swarmtel_replay(swarmtel_bin: str, config_path: Path) -> list:
    result = subprocess.run(
        [swarmtel_bin, "replay", "--config", str(config_path), str(SAMPLE)],
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
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


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
