"""End to end with real Locust: the bridge, `swarmtel serve` started by the bridge, the example
plugins, and a local HTTP target. Runs a master with two workers and a third joining late, then
a standalone run, and checks the telemetry against Locust's own `--json-file` output; then
configs that `swarmtel serve` refuses, which must stop Locust before the test (or, with
--swarmtel-optional, let it run without telemetry); a distributed run with a cold compile
cache, which Locust must wait for without losing an event; and a distributed run during which
`swarmtel serve` (started by the test) is killed with SIGKILL and started again, which must
lose no request. The users are examples/locustfile.py's (through tests/live/locustfile.py,
which lets a test end a run when it has seen enough).

Needs SWARMTEL_BIN (the swarmtel binary) and the example and test plugins built into
target/guests/ (scripts/test.sh does both, then runs this with the venv from
scripts/python-env.sh).
"""
import collections
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "target" / "guests" / "wasm32-wasip2" / "release"
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"  # examples/locustfile.py's users
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


def read_complete_lines(path):
    """The telemetry lines written so far (a line still being written is left out)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]


def wait_until(what, condition, *procs, timeout=120):
    """Poll ``condition`` (a state, not a duration) until it holds; fail if a process exits."""
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            assert proc.poll() is None, f"waiting for {what}: Locust (pid {proc.pid}) exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"waiting for {what}: timed out"
        time.sleep(0.2)


def test_master_and_workers_one_joining_late(tmp_path, swarmtel_bin, target):
    """A master and two workers, and a third worker that joins after the test started: it gets
    the run id from the master through Locust's messages, and users through rebalancing.

    Deterministic: the late worker starts once the master has logged "All users spawned" (so
    its arrival triggers rebalancing), and the run ends (as --run-time ends it) once the
    telemetry shows that worker's first usage sample (Locust samples every 10 s) and
    requests. Whatever the late worker's timing, none of its events may be lost: its first
    spawn message can fire test_start before its `init`, which the bridge must keep."""
    config = write_config(tmp_path)
    endpoint = f"unix:{tmp_path / 'serve.sock'}"
    port = free_port()
    env = clean_env()
    env["SWARMTEL_LIVE_STOP_FILE"] = str(tmp_path / "stop")
    master_log_path = tmp_path / "master.log"
    procs = []

    def start(args, log_path):
        with open(log_path, "w") as log:
            proc = subprocess.Popen(locust(*args), env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    def worker(index):
        return start(["--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                      "--swarmtel-endpoint", endpoint], tmp_path / f"worker{index}.log")

    output = tmp_path / "telemetry.ndjson"
    try:
        master = start(["--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                        "--expect-workers", "2", "--enable-rebalancing", "-u", "12", "-r", "12",
                        "--host", target, "--json-file", str(tmp_path / "locust"), "--only-summary",
                        "--swarmtel-config", str(config), "--swarmtel-bin", swarmtel_bin,
                        "--swarmtel-endpoint", endpoint, "--swarmtel-testplan", "e2e-distributed"],
                       master_log_path)
        workers = [worker(0), worker(1)]
        wait_until("the first spawning to complete", lambda: "All users spawned" in master_log_path.read_text(),
                   master, *workers)
        workers.append(worker(2))

        def late_worker_ran():
            lines = read_complete_lines(output)
            return telemetry(lines, "node_usage", "worker-2") and any(
                l["telemetry"]["requests"] > 0 for l in telemetry(lines, "request_stats", "worker-2"))

        wait_until("a usage sample and requests from the late worker", late_worker_ran, master, *workers)
        (tmp_path / "stop").touch()
        master.wait(timeout=120)
        for w in workers:
            w.wait(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    master_log = master_log_path.read_text()
    worker_logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(3)]
    assert master.returncode in (0, 1), master_log[-3000:]  # 1: /flaky fails on purpose
    assert "Unknown message type" not in master_log, master_log[-3000:]
    for log in worker_logs:
        assert "Unknown message type" not in log, log[-3000:]
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


def test_cold_compile_cache_locust_waits_and_loses_nothing(tmp_path, swarmtel_bin, target):
    """The runtime the master starts loads the example plugins into a fresh, empty compile
    cache, and one of them (request_stats) loads slowly, as a big Python or JavaScript
    component compiles: its file is a FIFO the test fills only once the master's bridge has
    logged a progress line ("waiting ... to load its plugins (10 s)"). The runtime answers the
    bridge at once with `"ready":false`; Locust does not start the test (send the worker its
    users) until the runtime is ready; the worker does not wait: it connects and sends, and
    the runtime holds its lines. The run's telemetry is complete: every request Locust counted,
    on every node, nothing dropped anywhere.

    Deterministic: the plugin is released on log lines (the master's progress line, the
    worker's "still loading"), and the run ends (as --run-time ends it) once the telemetry
    shows a usage sample of both nodes (Locust samples every 10 s) and 600 of the worker's
    requests."""
    cache = tmp_path / "cache"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for plugin in PLUGINS:
        if plugin != "request_stats":
            (plugins / f"{plugin}.wasm").symlink_to(GUESTS / f"{plugin}.wasm")
    slow = plugins / "request_stats.wasm"
    os.mkfifo(slow)
    # Held open for writing (O_RDWR never blocks on a FIFO), so serve opens and reads the
    # file without blocking at open, and reads it to the end only once the test closes it.
    fifo = os.open(slow, os.O_RDWR)
    config = tmp_path / "swarmtel.toml"
    config.write_text(
        '[run]\ntestplan = "configured"\n'
        f'[output]\npath = "{tmp_path / "telemetry.ndjson"}"\ndead_letter = "{tmp_path / "dead.ndjson"}"\n'
        f'[cache]\ndir = "{cache}"\n'
        + "".join(f'[[plugins]]\npath = "{plugins / p}.wasm"\n' for p in PLUGINS))
    endpoint = f"unix:{tmp_path / 'serve.sock'}"
    port = free_port()
    env = clean_env()
    env["SWARMTEL_LIVE_STOP_FILE"] = str(tmp_path / "stop")
    master_log_path, worker_log_path = tmp_path / "master.log", tmp_path / "worker.log"
    output = tmp_path / "telemetry.ndjson"
    procs = []

    def start(args, log_path):
        with open(log_path, "w") as log:
            proc = subprocess.Popen(locust(*args), env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    def release():  # the slow plugin's bytes (more than a pipe holds: written as serve reads)
        try:
            data = (GUESTS / "request_stats.wasm").read_bytes()
            view = memoryview(data)
            while view:
                view = view[os.write(fifo, view):]
        finally:
            os.close(fifo)

    releaser = threading.Thread(target=release, daemon=True)
    try:
        master = start(["--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                        "--expect-workers", "1", "-u", "6", "-r", "6", "--host", target,
                        "--json-file", str(tmp_path / "locust"), "--only-summary",
                        "--swarmtel-config", str(config), "--swarmtel-bin", swarmtel_bin,
                        "--swarmtel-endpoint", endpoint, "--swarmtel-testplan", "e2e-cold-cache"],
                       master_log_path)
        worker = start(["--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                        "--swarmtel-endpoint", endpoint], worker_log_path)
        wait_until("the master's bridge to wait 10 s for the plugins", lambda: "waiting for the swarmtel runtime "
                   "to load its plugins (10 s)" in master_log_path.read_text(), master, worker)
        wait_until("the worker to connect to the loading runtime", lambda: "is still loading its plugins"
                   in worker_log_path.read_text(), master, worker)
        assert "Sending spawn jobs" not in master_log_path.read_text()  # the test waits
        releaser.start()

        def ran():
            lines = read_complete_lines(output)
            counts = {}
            for line in telemetry(lines, "request_stats", "worker-0"):
                t = line["telemetry"]
                if t["endpoint"] != "Aggregated":
                    key = (t["request_type"], t["endpoint"])
                    counts[key] = max(counts.get(key, 0), t["requests"])
            return (all(telemetry(lines, "node_usage", node) for node in ("master", "worker-0"))
                    and sum(counts.values()) > 600)

        wait_until("usage samples of both nodes and 600 requests of the worker", ran, master, worker)
        (tmp_path / "stop").touch()
        master.wait(timeout=120)
        worker.wait(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if releaser.ident is None:  # never released: serve (if still there) reads a cut file and exits
            os.close(fifo)
        releaser.join(timeout=10)
    master_log, worker_log = master_log_path.read_text(), worker_log_path.read_text()
    assert master.returncode in (0, 1), master_log[-3000:]  # 1: /flaky fails on purpose
    # The cache was cold: the runtime compiled every plugin into it.
    assert len(list(cache.glob("*.cwasm"))) == len(PLUGINS), sorted(p.name for p in cache.iterdir())
    # The bridge connected while the plugins loaded, and Locust waited for them.
    order = [master_log.find(text) for text in (
        "swarmtel-locust: the swarmtel runtime is loading its plugins; the test starts once it is ready",
        "swarmtel-locust: waiting for the swarmtel runtime to load its plugins (10 s)",
        "swarmtel-locust: the swarmtel runtime is ready (waited ",
        "Sending spawn jobs")]
    assert 0 <= order[0] < order[1] < order[2] < order[3], (order, master_log[-3000:])
    assert "the runtime at " in worker_log and " is ready" in worker_log, worker_log[-3000:]
    assert "/ERROR/swarmtel_locust" not in master_log, master_log[-3000:]
    assert "events dropped in total" not in master_log, master_log[-3000:]  # (serve's status says "dropped 0")
    assert "telemetry is being lost" not in worker_log and "dropped" not in worker_log, worker_log[-3000:]
    assert "2 connections (1 master, 1 worker, 0 standalone), 0 refused" in master_log, master_log[-3000:]
    check_run(tmp_path, master_log, ["master", "worker-0"], "e2e-cold-cache")


def bad_config(tmp_path, kind):
    """A config `swarmtel serve` refuses, and the words of its refusal."""
    config = tmp_path / "bad.toml"
    if kind == "role not served":
        # custom_telemetry's recorder serves master and worker only
        plugin = f'[[plugins]]\npath = "{GUESTS / "custom_telemetry"}.wasm"\nroles = ["standalone"]\n'
        words = "no recorder of this plugin serves `standalone`"
    else:
        missing = tmp_path / "missing.wasm"
        plugin = f'[[plugins]]\npath = "{missing}"\n'
        words = f"{missing}: cannot read"
    config.write_text('[run]\ntestplan = "bad"\n'
                      f'[output]\npath = "{tmp_path / "telemetry.ndjson"}"\n{plugin}')
    return config, words


@pytest.mark.parametrize("role, kind", [("standalone", "role not served"), ("master", "missing plugin")])
def test_runtime_refusing_its_config_stops_locust(tmp_path, swarmtel_bin, target, role, kind):
    """`swarmtel serve` refuses the config: Locust stops before the test starts, exit code 1,
    with serve's own error in the bridge's one error line. (A missing plugin file is found
    before serve listens; a role the plugin does not serve once it loads the plugin, after it
    may have answered the bridge's hello, which then gets an error frame: the same line.)"""
    config, words = bad_config(tmp_path, kind)
    endpoint = f"unix:{tmp_path / 'serve.sock'}"
    args = ["--headless", "-u", "2", "-r", "2", "-t", "10s", "--host", target,
            "--swarmtel-config", str(config), "--swarmtel-bin", swarmtel_bin, "--swarmtel-endpoint", endpoint]
    if role == "master":
        args += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(free_port()),
                 "--expect-workers", "1"]
    run = subprocess.run(locust(*args), env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=120)
    out = run.stdout
    assert run.returncode == 1, out[-3000:]
    errors = [l for l in out.splitlines() if "/ERROR/swarmtel_locust" in l]
    assert len(errors) == 1, out[-3000:]
    assert (f"the swarmtel runtime did not start: {swarmtel_bin} serve --config {config} --listen {endpoint} "
            "exited with code 1 before it was ready: ") in errors[0]
    error = errors[0].split("before it was ready: ", 1)[1]
    assert "swarmtel: error:" in error and words in error, errors[0]
    assert error.endswith("; stopping Locust (--swarmtel-optional runs the test without telemetry instead)")
    assert "Ramping to" not in out and "Waiting for workers" not in out, out[-3000:]
    output = tmp_path / "telemetry.ndjson"  # serve may create it before it reads the plugins
    assert not output.exists() or output.read_text() == ""


def test_runtime_refusing_its_config_with_optional_runs_without_telemetry(tmp_path, swarmtel_bin, target):
    config, words = bad_config(tmp_path, "role not served")
    env = clean_env()
    env["LOCUST_SWARMTEL_OPTIONAL"] = "true"
    run = subprocess.run(
        locust("--headless", "-u", "2", "-r", "2", "-t", "3s", "--host", target,
               "--swarmtel-config", str(config), "--swarmtel-bin", swarmtel_bin,
               "--swarmtel-endpoint", f"unix:{tmp_path / 'serve.sock'}"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    out = run.stdout
    assert run.returncode in (0, 1), out[-3000:]  # 1: /flaky fails on purpose
    warnings = [l for l in out.splitlines() if "/WARNING/swarmtel_locust" in l]
    assert len(warnings) == 1, out[-3000:]
    assert "exited with code 1 before it was ready: " in warnings[0] and words in warnings[0]
    assert warnings[0].endswith("--swarmtel-optional is set, so the test runs WITHOUT telemetry")
    assert "/ERROR/swarmtel_locust" not in out and "dropped" not in out, out[-3000:]
    assert "Ramping to" in out, out[-3000:]  # the test ran


LIFECYCLE = GUESTS / "lifecycle.wasm"
#: The run: `swarmtel serve` is killed this long after every user is spawned, comes back
#: RESTART_AFTER later, and the run ends RUN_TIME after the spawn (the scenario of issue 8,
#: item 9: a 25 s run, kill -9 at 8 s, restart 3 s later).
KILL_AT, RESTART_AFTER, RUN_TIME = 8.0, 3.0, 25.0
#: How many requests a worker's telemetry may count twice, as a share of its requests: what
#: the killed server processed (and wrote BATCH lines for) but had not acknowledged yet. It
#: acknowledges about every 200 ms, so this is a fraction of a second of a 25 s run: under 2%
#: even if the kill lands just before an acknowledgement and the server lags a whole second.
MAX_TWICE = 0.05


def test_serve_killed_and_restarted_mid_run_loses_nothing(tmp_path, swarmtel_bin, target):
    """`swarmtel serve`, started by the test (not by the bridge) on a TCP loopback port, is
    killed with SIGKILL mid-run and started again on the same endpoint with the same config;
    its output file is appended to. Its plugin (the lifecycle test guest, mode count-batches)
    writes a BATCH line for every request batch it receives, as it receives it. The bridges
    keep every line until the server acknowledges it (its telemetry on disk) and send the
    unacknowledged ones again to the new server, so per worker the BATCH requests in the file
    add up to at least Locust's own count, exceeding it only by what the killed server
    processed but had not acknowledged; no bridge drops anything.

    Deterministic: each step waits for a state (the server listening, users spawned, batches
    of both workers in the file, every node connected to the new server); only the kill and
    the end of the run are fixed offsets from the spawn."""
    assert LIFECYCLE.exists(), "build the guests first: lifecycle.wasm missing"
    output = tmp_path / "telemetry.ndjson"
    config = tmp_path / "swarmtel.toml"
    config.write_text(
        '[run]\ntestplan = "crash"\n'
        f'[output]\npath = "{output}"\ndead_letter = "{tmp_path / "dead.ndjson"}"\n'
        f'[[plugins]]\npath = "{LIFECYCLE}"\n[plugins.options]\nmode = "count-batches"\n'
    )
    endpoint = f"tcp:127.0.0.1:{free_port()}"
    port = free_port()
    env = clean_env()
    env["SWARMTEL_LIVE_STOP_FILE"] = str(tmp_path / "stop")
    env["SWARMTEL_LIVE_COUNT_DIR"] = str(tmp_path)
    procs = []

    def serve(index):
        log_path = tmp_path / f"serve{index}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([swarmtel_bin, "serve", "--config", str(config), "--listen", endpoint],
                                    env=clean_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        wait_until(f"serve #{index} to listen", lambda: f"serving on {endpoint}" in log_path.read_text(), proc)
        return proc, log_path

    def start(args, log_path):
        with open(log_path, "w") as log:
            proc = subprocess.Popen(locust(*args), env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    def batches(lines, node):
        return [l["telemetry"]["requests"] for l in telemetry(lines, "BATCH", node)]

    master_log_path = tmp_path / "master.log"
    try:
        first, _ = serve(1)
        master = start(["--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                        "--expect-workers", "2", "-u", "12", "-r", "12", "--host", target,
                        "--json-file", str(tmp_path / "locust"), "--only-summary",
                        "--swarmtel-endpoint", endpoint, "--swarmtel-testplan", "crash"], master_log_path)
        workers = [start(["--worker", "--master-host", "127.0.0.1", "--master-port", str(port),
                          "--swarmtel-endpoint", endpoint], tmp_path / f"worker{i}.log") for i in range(2)]
        wait_until("the spawning to complete", lambda: "All users spawned" in master_log_path.read_text(),
                   master, *workers)
        spawned = time.monotonic()
        wait_until("batches from both workers", lambda: all(
            batches(read_complete_lines(output), f"worker-{i}") for i in range(2)), master, *workers, first)
        time.sleep(max(0.0, spawned + KILL_AT - time.monotonic()))
        first.kill()  # SIGKILL: no drain, no summary, unflushed output lost
        first.wait()
        killed_at = output.stat().st_size
        time.sleep(RESTART_AFTER)
        second, second_log = serve(2)

        def everyone_back():
            log = second_log.read_text()
            if not all(f": {role} {node} " in log for role, node in
                       [("master", "master"), ("worker", "worker-0"), ("worker", "worker-1")]):
                return False
            with open(output) as f:
                f.seek(killed_at)  # the new server's lines (after a newline if the old one cut its last)
                text = f.read()
            after = [json.loads(l) for l in text[:text.rfind("\n") + 1].splitlines() if l.strip()]
            return all(batches(after, f"worker-{i}") for i in range(2))

        wait_until("every node to reconnect, and batches from both workers after the restart",
                   everyone_back, master, *workers, second)
        time.sleep(max(0.0, spawned + RUN_TIME - time.monotonic()))
        (tmp_path / "stop").touch()
        master.wait(timeout=120)
        for w in workers:
            w.wait(timeout=60)
        second.terminate()  # SIGTERM: drain, then the summary
        assert second.wait(timeout=60) == 0, second_log.read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    master_log = master_log_path.read_text()
    assert master.returncode in (0, 1), master_log[-3000:]  # 1: /flaky fails on purpose
    for log in [master_log] + [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]:
        assert "telemetry is being lost" not in log and "dropped" not in log, log[-3000:]
    assert (tmp_path / "dead.ndjson").read_text() == "", "no rejected items"

    # The killed server may have cut its last line; the restarted one went on after it.
    text = output.read_text()
    lines, cut = [], 0
    for raw in text.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            cut += 1
    assert cut <= 1, cut

    locust_total = sum(v for (k, kind), v in locust_totals(tmp_path / "locust.json").items() if kind == "requests")
    counts = {f"worker-{i}": int((tmp_path / f"worker-{i}.requests").read_text()) for i in range(2)}
    assert sum(counts.values()) == locust_total > 1000, (counts, locust_total)
    measured = {}
    for node, made in counts.items():
        seen = sum(batches(lines, node))
        measured[node] = (made, seen, seen - made)
        assert seen >= made, f"{node}: {made - seen} of {made} requests never reached the recorders ({measured})"
        assert seen - made <= MAX_TWICE * made, f"{node}: {seen - made} requests counted twice ({measured})"
    print(f"requests per worker (Locust, BATCH sum, counted twice): {measured}")

    summaries = [l["telemetry"] for l in telemetry(lines, "SERVE_SUMMARY")]
    assert len(summaries) == 1, summaries  # the killed server wrote none
    summary = summaries[0]
    assert (summary["dropped_by_bridges"], summary["dropped_here"], summary["lost_in_transit"]) == (0, 0, 0), summary
    assert summary["connections"] == 3, summary
    assert "3 connections (1 master, 2 worker, 0 standalone), 0 refused" in second_log.read_text()
