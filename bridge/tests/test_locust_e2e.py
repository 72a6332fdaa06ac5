"""Real Locust runs with the bridge: standalone and master + worker, the runtime being the
fake `swarmtel serve` of tests/protoserver.py started through --swarmtel-config."""
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from conftest import BRIDGE, HERE

LOCUSTFILE = '''
import time
import swarmtel_locust
from locust import User, constant, task

class U(User):
    wait_time = constant(0.05)

    @task
    def t(self):
        self.environment.events.request.fire(request_type="GET", name="/x", response_time=1.5,
            response_length=10, response=None, context={}, exception=None, start_time=time.time(),
            url="http://x/x")
'''

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture
def setup(tmp_path, sockdir):
    lf = tmp_path / "locustfile.py"
    lf.write_text(LOCUSTFILE)
    fake = tmp_path / "fake-swarmtel"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} {os.path.join(HERE, 'protoserver.py')} \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "serve-out.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env.update(PYTHONPATH=BRIDGE, LOCUST_SWARMTEL_TOKEN="tok", LOCUST_SWARMTEL_STATS_INTERVAL="0.5")
    endpoint = "unix:" + os.path.join(sockdir, "serve.sock")
    return lf, fake, out, env, endpoint


def _locust(*args):
    return [sys.executable, "-m", "locust", *args]


def test_standalone_with_child(setup):
    lf, fake, out, env, endpoint = setup
    p = subprocess.run(_locust("-f", str(lf), "--headless", "-u", "2", "-r", "2", "-t", "2s",
                               "--swarmtel-endpoint", endpoint, "--swarmtel-config", str(out),
                               "--swarmtel-bin", str(fake), "--swarmtel-testplan", "plan-a"),
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())  # written by the fake server on SIGTERM, after our bye
    assert res["argv"][1:] == ["serve", "--config", str(out), "--listen", endpoint]
    assert res["token"] == "tok"  # token passed through the environment, not argv
    assert len(res["conns"]) == 1
    c = res["conns"][0]
    h = c["hello"]
    assert (h["role"], h["node"], h["testplan"], h["token"], h["version"]) == ("standalone", "local", "plan-a", "tok", 1)
    assert UUID7.fullmatch(h["run_id"])
    events = [line["event"] for line in c["lines"]]
    assert events[0] == "test_start" and events[-2:] == ["stats", "quit"]
    for e in ["spawning_complete", "request", "test_stopping", "test_stop", "quitting"]:
        assert e in events
    assert events.count("stats") >= 3  # periodic + test_stop + quit
    final = [line for line in c["lines"] if line["event"] == "stats"][-1]
    assert final["total"]["num_requests"] == events.count("request") > 10
    assert c["bye"] == {"bye": True, "sent": len(c["lines"]), "dropped": 0}
    assert "telemetry is being lost" not in p.stderr and "dropped" not in p.stderr


def test_standalone_with_a_runtime_that_acknowledges(setup):
    """Under Locust (gevent), the flusher reads the acks, and at quit waits for the last one
    before its bye: one connection, every line numbered from 0, nothing sent twice."""
    lf, fake, out, env, endpoint = setup
    p = subprocess.run(_locust("-f", str(lf), "--headless", "-u", "2", "-r", "2", "-t", "2s",
                               "--swarmtel-endpoint", endpoint, "--swarmtel-config", str(out),
                               "--swarmtel-bin", str(fake)),
                       env=dict(env, FAKE_SERVE_ACKS="1"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert len(res["conns"]) == 1
    c = res["conns"][0]
    n = len(c["lines"])
    assert c["hello"]["seq"] == 0 and c["seqs"] == list(range(n)) and n > 10
    assert c["acked"] == n  # the last line was acknowledged before the bye
    assert c["bye"] == {"bye": True, "sent": n, "dropped": 0}
    assert [line["event"] for line in c["lines"]][-2:] == ["stats", "quit"]
    assert "telemetry is being lost" not in p.stderr and "dropped" not in p.stderr


def test_standalone_without_runtime_does_not_hurt(setup):
    lf, fake, out, env, endpoint = setup
    t0 = time.monotonic()
    p = subprocess.run(_locust("-f", str(lf), "--headless", "-u", "2", "-r", "2", "-t", "2s",
                               "--swarmtel-endpoint", endpoint, "--swarmtel-buffer", "20"),
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-3000:]
    assert time.monotonic() - t0 < 10
    assert p.stderr.count("telemetry is being lost") == 1
    assert re.search(r"\d+ events dropped in total", p.stderr)


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick), for the master to bind; a port
    derived from the pid could be held by another test's server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _master_and_worker(setup, env=None, worker_locustfile=None, master_args=(), worker_delay=0.0):
    """Runs a headless master (2 users, 2 s) and one worker through the fake runtime; returns
    the master's exit code and both stderr texts."""
    lf, fake, out, setup_env, endpoint = setup
    env = setup_env if env is None else env
    port = str(free_port())
    master = subprocess.Popen(_locust("-f", str(lf), "--master", "--headless", "--expect-workers", "1",
                                      "-u", "2", "-r", "2", "-t", "2s", "--master-bind-port", port,
                                      "--swarmtel-endpoint", endpoint, "--swarmtel-config", str(out),
                                      "--swarmtel-bin", str(fake), *master_args),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(worker_delay)
    worker = subprocess.Popen(_locust("-f", str(worker_locustfile or lf), "--worker", "--master-port", port,
                                      "--swarmtel-endpoint", endpoint),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, merr = master.communicate(timeout=60)
        _, werr = worker.communicate(timeout=30)
    finally:
        for p in (master, worker):
            if p.poll() is None:
                p.kill()
    return master.returncode, merr, werr


def test_master_and_worker_share_run_id(setup):
    lf, fake, out, env, endpoint = setup
    code, merr, werr = _master_and_worker(setup, master_args=("--swarmtel-run-id", "run-xyz"), worker_delay=1.0)
    assert code == 0, merr[-3000:]
    # The run id is only ever sent to a worker that asked for it, after registering its handler.
    assert "Unknown message type" not in werr, werr[-3000:]
    assert "Unknown message type" not in merr, merr[-3000:]
    res = json.loads(out.read_text())
    hellos = {c["hello"]["node"]: c for c in res["conns"]}
    assert set(hellos) == {"master", "worker-0"}, [c["hello"] for c in res["conns"]]
    assert hellos["master"]["hello"]["run_id"] == "run-xyz" == hellos["worker-0"]["hello"]["run_id"]
    assert hellos["worker-0"]["hello"]["role"] == "worker"
    w = hellos["worker-0"]
    wev = [line["event"] for line in w["lines"]]
    assert "request" in wev and "test_start" in wev and wev[-1] == "quit"
    assert all(line["node"] == "worker-0" and line["role"] == "worker" for line in w["lines"])
    assert w["bye"] == {"bye": True, "sent": len(w["lines"]), "dropped": 0}, werr[-2000:]
    m = hellos["master"]
    mev = [line["event"] for line in m["lines"]]
    assert "worker_connect" in mev and "worker_report" in mev and mev[-2:] == ["stats", "quit"]
    final = [line for line in m["lines"] if line["event"] == "stats"][-1]
    assert final["total"]["num_requests"] == wev.count("request")


# Holds the worker's constructor (WorkerRunner connects to the master there) until the first
# spawn message has fired test_start: what happens to a worker that joins a running test,
# forced here so that every run takes that path. The init listener reports whether it did.
HOLD_WORKER_CONSTRUCTOR = """
import sys
import gevent.event
from locust import events
from locust.runners import WorkerRunner

_started = gevent.event.Event()
events.test_start.add_listener(lambda **kw: _started.set())
_connect = WorkerRunner.connect_to_master

def _connect_and_wait_for_spawn(self):
    _connect(self)
    if not _started.wait(timeout=30):
        raise RuntimeError("no spawn message within 30 s")

WorkerRunner.connect_to_master = _connect_and_wait_for_spawn

@events.init.add_listener
def _report(environment, **kw):
    if isinstance(environment.runner, WorkerRunner):
        print(f"TEST: test_start fired before init: {_started.is_set()}", file=sys.stderr, flush=True)
"""


def test_worker_events_before_init_are_not_lost(setup, tmp_path):
    lf, fake, out, env, endpoint = setup
    wlf = tmp_path / "worker_locustfile.py"
    wlf.write_text(LOCUSTFILE + HOLD_WORKER_CONSTRUCTOR)
    code, merr, werr = _master_and_worker(setup, worker_locustfile=wlf)
    assert code == 0, merr[-3000:]
    assert "TEST: test_start fired before init: True" in werr, werr[-3000:]
    assert "Unknown message type" not in werr, werr[-3000:]
    res = json.loads(out.read_text())
    w = {c["hello"]["node"]: c for c in res["conns"]}["worker-0"]
    wev = [line["event"] for line in w["lines"]]
    assert wev[0] == "test_start" and wev.count("test_start") == 1, wev[:5]
    assert "request" in wev and wev[-1] == "quit"
    assert w["bye"] == {"bye": True, "sent": len(w["lines"]), "dropped": 0}, werr[-2000:]
    assert "dropped" not in werr and "telemetry is being lost" not in werr, werr[-3000:]
    m = {c["hello"]["node"]: c for c in res["conns"]}["master"]
    final = [line for line in m["lines"] if line["event"] == "stats"][-1]
    assert final["total"]["num_requests"] == wev.count("request")


FAILING_SERVE = "#!/bin/sh\nprintf 'swarmtel: error: plugins[1] \\033[1mserves no role\\033[0m\\n' >&2\nexit 1\n"


@pytest.mark.parametrize("role", ["standalone", "master"])
def test_runtime_that_cannot_start_stops_locust(setup, tmp_path, role):
    lf, fake, out, env, endpoint = setup
    failing = tmp_path / "failing-swarmtel"
    failing.write_text(FAILING_SERVE)
    failing.chmod(failing.stat().st_mode | stat.S_IXUSR)
    args = ["-f", str(lf), "--headless", "-u", "2", "-r", "2", "-t", "2s", "--swarmtel-endpoint", endpoint,
            "--swarmtel-config", str(out), "--swarmtel-bin", str(failing)]
    if role == "master":
        args += ["--master", "--expect-workers", "1", "--master-bind-port", str(free_port())]
    p = subprocess.run(_locust(*args), env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr[-3000:]
    assert "swarmtel: error: plugins[1] \x1b[1mserves no role\x1b[0m\n" in p.stderr  # its stderr, as it came
    errors = [l for l in p.stderr.splitlines() if "/ERROR/swarmtel_locust" in l]
    assert len(errors) == 1, p.stderr[-3000:]
    assert f"{failing} serve --config {out} --listen {endpoint} exited with code 1 before it was " \
           "ready: swarmtel: error: plugins[1] serves no role; stopping Locust" in errors[0]
    # Stopped in init: the test never started (nor waited for workers).
    assert "Ramping to" not in p.stderr and "Waiting for workers" not in p.stderr, p.stderr[-3000:]


def test_optional_runtime_that_cannot_start_runs_without_telemetry(setup, tmp_path):
    lf, fake, out, env, endpoint = setup
    failing = tmp_path / "failing-swarmtel"
    failing.write_text(FAILING_SERVE)
    failing.chmod(failing.stat().st_mode | stat.S_IXUSR)
    env = dict(env, LOCUST_SWARMTEL_OPTIONAL="true")
    p = subprocess.run(_locust("-f", str(lf), "--headless", "-u", "2", "-r", "2", "-t", "2s",
                               "--swarmtel-endpoint", endpoint, "--swarmtel-config", str(out),
                               "--swarmtel-bin", str(failing)),
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-3000:]
    warnings = [l for l in p.stderr.splitlines() if "/WARNING/swarmtel_locust" in l]
    assert len(warnings) == 1, p.stderr[-3000:]
    assert "exited with code 1 before it was ready: swarmtel: error: plugins[1] serves no role; " \
           "--swarmtel-optional is set, so the test runs WITHOUT telemetry" in warnings[0]
    assert "Ramping to" in p.stderr  # the test ran
    assert "/ERROR/" not in p.stderr and "dropped" not in p.stderr, p.stderr[-3000:]


def test_standalone_waits_for_the_runtime_to_load_its_plugins(setup):
    """The runtime answers at once but loads its plugins for 3 s: the test starts only once it
    is ready, and every event arrives, acknowledged, on the one connection."""
    lf, fake, out, env, endpoint = setup
    p = subprocess.run(_locust("-f", str(lf), "--headless", "-u", "2", "-r", "2", "-t", "2s",
                               "--swarmtel-endpoint", endpoint, "--swarmtel-config", str(out),
                               "--swarmtel-bin", str(fake)),
                       env=dict(env, FAKE_SERVE_LOAD_SECONDS="3"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert len(res["conns"]) == 1
    c = res["conns"][0]
    n = len(c["lines"])
    assert c["lines"][0]["event"] == "test_start" and c["lines"][0]["time"] >= res["ready_at"]
    assert c["frames"] == [{"ready": True}] and c["seqs"] == list(range(n)) and c["acked"] == n
    assert c["bye"] == {"bye": True, "sent": n, "dropped": 0}
    err = p.stderr
    assert "the swarmtel runtime is loading its plugins; the test starts once it is ready" in err, err[-3000:]
    assert err.index("the swarmtel runtime is ready (waited") < err.index("Ramping to"), err[-3000:]
    assert "telemetry is being lost" not in err and "dropped" not in err


def test_worker_sends_to_a_loading_runtime_without_waiting(setup):
    """The master waits for the runtime it started; the worker does not: it connects while
    the runtime still loads (the fake one stays loading until the worker said hello), sends,
    and the runtime holds its lines. Nothing is lost."""
    lf, fake, out, env, endpoint = setup
    env = dict(env, FAKE_SERVE_LOAD_SECONDS="0.5", FAKE_SERVE_READY_AFTER_NODES="master,worker-0")
    code, merr, werr = _master_and_worker(setup, env=env)
    assert code == 0, merr[-3000:]
    res = json.loads(out.read_text())
    conns = {c["hello"]["node"]: c for c in res["conns"]}
    assert set(conns) == {"master", "worker-0"} and len(res["conns"]) == 2
    for node, c in conns.items():
        n = len(c["lines"])
        assert c["frames"] == [{"ready": True}], node  # both connected while it was loading
        assert c["seqs"] == list(range(n)) and c["acked"] == n and c["bye"] == {"bye": True, "sent": n, "dropped": 0}
    assert "is still loading its plugins; it holds the events sent meanwhile" in werr, werr[-3000:]
    assert "is ready" in werr
    assert merr.index("the swarmtel runtime is ready (waited") < merr.index("Sending spawn jobs"), merr[-3000:]
    for c in conns.values():  # the test started once the runtime was ready
        assert [l["time"] >= res["ready_at"] for l in c["lines"] if l["event"] == "test_start"] == [True]
    wev = [line["event"] for line in conns["worker-0"]["lines"]]
    final = [line for line in conns["master"]["lines"] if line["event"] == "stats"][-1]
    assert final["total"]["num_requests"] == wev.count("request") > 10
    for log in (merr, werr):
        assert "telemetry is being lost" not in log and "dropped" not in log, log[-3000:]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupting_locust_while_the_runtime_loads_stops_both(setup, sig, code):
    """A runtime that never gets ready is waited for, with progress, until the user
    interrupts Locust (Ctrl-C, or SIGTERM): Locust exits at once and stops the runtime."""
    lf, fake, out, env, endpoint = setup
    p = subprocess.Popen(_locust("-f", str(lf), "--headless", "-u", "2", "-r", "2", "-t", "2s",
                                 "--swarmtel-endpoint", endpoint, "--swarmtel-config", str(out),
                                 "--swarmtel-bin", str(fake)),
                         env=dict(env, FAKE_SERVE_LOAD_SECONDS="forever"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in p.stderr:  # until the bridge says it is waiting for the plugins
            lines.append(line)
            if "the swarmtel runtime is loading its plugins" in line:
                break
        else:
            pytest.fail("".join(lines)[-3000:])
        p.send_signal(sig)
        rest = p.stderr.read()
        assert p.wait(timeout=15) == code, rest[-3000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "interrupted while waiting for the swarmtel runtime; stopping it" in rest, rest[-3000:]
    assert "Ramping to" not in rest and "Traceback" not in rest, rest[-3000:]
    pid = int(out.with_name(out.name + ".pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped (and reaped), not left behind
    assert json.loads(out.read_text())["ready_at"] is None  # it wrote its output on SIGTERM
