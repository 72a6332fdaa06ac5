"""End to end with real Locust: the bridge, `swarmtel serve` started by the bridge, the example
plugins, and a local HTTP target. Runs a master with two workers, then a standalone run, and
checks the telemetry against Locust's own `--json-file` output.

Needs SWARMTEL_BIN (the swarmtel binary) and the example plugins built into
target/guests/ (scripts/test.sh does both, then runs this with the venv from
scripts/python-env.sh).
"""
import collections
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "target" / "guests" / "wasm32-wasip2" / "release"
LOCUSTFILE = ROOT / "examples" / "locustfile.py"
PLUGINS = ("custom_telemetry", "request_stats", "locust_overview")


@pytest.fixture(scope="module")
def swarmtel_bin():
    path = os.environ.get("SWARMTEL_BIN")
    assert path and os.access(path, os.X_OK), "set SWARMTEL_BIN to the swarmtel binary (scripts/test.sh does)"
    for plugin in PLUGINS:
        assert (GUESTS / f"{plugin}.wasm").exists(), f"build the guests first: {plugin}.wasm missing"
    return path


@pytest.fixture(scope="module")
def target():
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "target.py"), "0"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("listening on "), line
    yield "http://" + line.split()[-1]
    proc.terminate()
    proc.wait(timeout=10)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path):
    plugins = "".join(f'[[plugins]]\npath = "{GUESTS / p}.wasm"\n' for p in PLUGINS)
    config = tmp_path / "swarmtel.toml"
    config.write_text(
        '[run]\ntestplan = "configured"\n'
        f'[output]\npath = "{tmp_path / "telemetry.ndjson"}"\ndead_letter = "{tmp_path / "dead.ndjson"}"\n'
        f"{plugins}"
    )
    return config


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "SWARMTEL_"))}
    env["SWARMTEL_CACHE_DIR"] = str(ROOT / "target" / "test-compile-cache")
    env["SWARMTEL_WAIT"] = "0.05"
    return env


def locust(*args):
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def telemetry(lines, name, source_id=None):
    return [l for l in lines if l["telemetry"]["telemetry_name"] == name
            and (source_id is None or l["telemetry"]["source_id"] == source_id)]


def final_request_stats(lines, nodes):
    """Per (method, name): requests and failures, summed over nodes' last final reports."""
    totals = collections.Counter()
    for node in nodes:
        last = {}
        for line in telemetry(lines, "request_stats", node):
            t = line["telemetry"]
            if t["final"] and t["endpoint"] != "Aggregated":
                last[(t["request_type"], t["endpoint"])] = (t["requests"], t["failures"])
        for key, (requests, failures) in last.items():
            totals[(key, "requests")] += requests
            totals[(key, "failures")] += failures
    return totals


def locust_totals(json_file):
    totals = collections.Counter()
    for entry in json.loads(json_file.read_text()):
        key = (entry["method"], entry["name"])
        totals[(key, "requests")] += entry["num_requests"]
        totals[(key, "failures")] += entry["num_failures"]
    return totals


def check_run(tmp_path, server_log, nodes, testplan):
    lines = read_lines(tmp_path / "telemetry.ndjson")
    assert (tmp_path / "dead.ndjson").read_text() == "", "no rejected items"
    locust = locust_totals(tmp_path / "locust.json")
    assert sum(v for (k, kind), v in locust.items() if kind == "requests") > 500, locust

    # Totals: the workers' final request stats equal Locust's own numbers, per endpoint.
    workers = [n for n in nodes if n != "master"]
    assert final_request_stats(lines, workers) == locust
    # And the master's (or standalone's) final stats snapshot, forwarded by the bridge.
    stats_node = "master" if "master" in nodes else "local"
    final = [l["telemetry"] for l in telemetry(lines, "locust_stats", stats_node) if l["telemetry"]["final"]]
    assert len(final) == 1
    assert final[0]["requests"] == sum(v for (k, kind), v in locust.items() if kind == "requests")
    assert final[0]["failures"] == sum(v for (k, kind), v in locust.items() if kind == "failures")

    # Test start and stop once each, on every node that runs the custom recorder.
    for node in nodes:
        if node == "local":
            continue  # custom-telemetry runs on master and worker only, as in the seed
        assert len(telemetry(lines, "CUSTOM_START", node)) == 1, node
        assert len(telemetry(lines, "CUSTOM_STOP", node)) == 1, node
    # Every node's usage samples arrived.
    for node in nodes:
        assert telemetry(lines, "node_usage", node), f"no usage samples from {node}"
    # One run id across all sources, and the bridge's test plan.
    run_ids = {l["telemetry"]["run_id"] for l in lines}
    assert len(run_ids) == 1, run_ids
    assert {l["telemetry"]["testplan"] for l in lines} == {testplan}
    assert {l["telemetry"]["source_id"] for l in lines} == set(nodes) | {"swarmtel"}
    # Nothing rejected, faulted or dropped anywhere.
    for summary in telemetry(lines, "PLUGIN_SUMMARY"):
        t = summary["telemetry"]
        assert (t["rejected"], t["faults"], t["events_lost"]) == (0, 0, 0), t
    assert "0 bad frames" in server_log, server_log[-3000:]
    assert "events dropped: 0 by bridges, 0 here, 0 lost in transit" in server_log, server_log[-3000:]
    assert "telemetry is being lost" not in server_log
    return lines


def test_master_and_workers_one_joining_late(tmp_path, swarmtel_bin, target):
    """A master and two workers, and a third worker that joins after the test started: it gets
    the run id from the master through Locust's messages, and users through rebalancing."""
    config = write_config(tmp_path)
    endpoint = f"unix:{tmp_path / 'serve.sock'}"
    port = free_port()
    env = clean_env()
    master = subprocess.Popen(
        locust("--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
               "--expect-workers", "2", "--enable-rebalancing", "-u", "12", "-r", "12", "-t", "18s",
               "--host", target,
               "--json-file", str(tmp_path / "locust"), "--only-summary",
               "--swarmtel-config", str(config), "--swarmtel-bin", swarmtel_bin,
               "--swarmtel-endpoint", endpoint, "--swarmtel-testplan", "e2e-distributed"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    def worker():
        return subprocess.Popen(
            locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                   "--swarmtel-endpoint", endpoint),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    workers = [worker(), worker()]
    # The master's test_start telemetry is out: the test runs. Then the third worker joins
    # (early enough to live past its first 10 s usage sample).
    output, deadline = tmp_path / "telemetry.ndjson", time.monotonic() + 60
    while '"CUSTOM_START","source":"master"' not in (output.read_text() if output.exists() else ""):
        assert time.monotonic() < deadline and master.poll() is None, "the test never started"
        time.sleep(0.2)
    time.sleep(1)
    workers.append(worker())
    master_log, _ = master.communicate(timeout=120)
    worker_logs = [w.communicate(timeout=60)[0] for w in workers]
    assert master.returncode in (0, 1), master_log[-3000:]  # 1: /flaky fails on purpose
    for log in worker_logs:
        assert "telemetry is being lost" not in log, log[-3000:]
        assert "dropped" not in log, log[-3000:]
    assert "4 connections (1 master, 3 worker, 0 standalone), 0 refused" in master_log, master_log[-3000:]
    lines = check_run(tmp_path, master_log, ["master", "worker-0", "worker-1", "worker-2"], "e2e-distributed")
    late = [l for l in telemetry(lines, "request_stats", "worker-2") if l["telemetry"]["final"]]
    assert late and all(l["telemetry"]["requests"] > 0 for l in late), "the late worker ran users"


def test_standalone(tmp_path, swarmtel_bin, target):
    config = write_config(tmp_path)
    run = subprocess.run(
        locust("--headless", "-u", "5", "-r", "5", "-t", "12s", "--host", target,
               "--json-file", str(tmp_path / "locust"), "--only-summary",
               "--swarmtel-config", str(config), "--swarmtel-bin", swarmtel_bin,
               "--swarmtel-endpoint", f"unix:{tmp_path / 'serve.sock'}",
               "--swarmtel-testplan", "e2e-standalone", "--swarmtel-run-id", "standalone-run-1"),
        env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert run.returncode in (0, 1), run.stdout[-3000:]
    assert "1 connections (0 master, 0 worker, 1 standalone), 0 refused" in run.stdout, run.stdout[-3000:]
    lines = check_run(tmp_path, run.stdout, ["local"], "e2e-standalone")
    assert lines[0]["telemetry"]["run_id"] == "standalone-run-1"
