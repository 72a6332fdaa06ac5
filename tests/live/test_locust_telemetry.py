"""swarmtel's locust-telemetry plugin against the real locust-telemetry 2.1.2 (from PyPI), on
one scenario run twice (master + one worker, 4 users of 25 requests each): the same record
names, the same fields with the same JSON types, the same counts and the same totals, and a
line a locust-telemetry dashboard reads the same (with the JSON-lines output's
`envelope = "locust-telemetry"`).

Needs SWARMTEL_BIN and target/guests/.../locust_telemetry.wasm (scripts/test.sh builds both)
and locust-telemetry installed (scripts/python-requirements.txt pins it).
"""
import collections
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from test_live_locust import GUESTS, clean_env, free_port, target  # noqa: F401  (fixture)

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "lt_compare_locustfile.py"
USERS, REQUESTS_PER_USER = 4, 25
RUN_TIME = "9s"


def run(tmp_path, host, mode, extra, while_running=None):
    """Runs the scenario as a master and one worker; returns (master stderr, worker stderr).
    `while_running(master)` is called in a thread while the master runs."""
    port = free_port()
    env = clean_env()
    env["LT_MODE"] = mode
    env["LOCUST_TESTPLAN_NAME"] = "lt-compare"
    common = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    master = subprocess.Popen(
        common + ["--headless", "--master", "--expect-workers", "1", "--master-bind-port", str(port),
                  "-u", str(USERS), "-r", str(USERS), "-t", RUN_TIME, "-H", host, *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    worker = subprocess.Popen(
        common + ["--worker", "--master-port", str(port), *([] if mode == "swarmtel" else extra)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    watcher = None
    if while_running is not None:
        watcher = threading.Thread(target=while_running, args=(master,), daemon=True)
        watcher.start()
    master_err = master.communicate(timeout=120)[1]
    if watcher is not None:
        watcher.join(timeout=30)
    worker_err = worker.communicate(timeout=60)[1]
    assert master.returncode in (0, 1), master_err[-3000:]  # 1: the run had failures (404s)
    return master_err, worker_err


def json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"telemetry"' in line:
            obj = json.loads(line)
            if isinstance(obj.get("telemetry"), dict) and "telemetry_name" in obj["telemetry"]:
                out.append(obj)
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory, target):  # noqa: F811
    bin_ = os.environ.get("SWARMTEL_BIN")
    wasm = GUESTS / "locust_telemetry.wasm"
    assert bin_ and wasm.exists(), "set SWARMTEL_BIN and build the guests (scripts/test.sh does)"
    theirs_dir = tmp_path_factory.mktemp("locust-telemetry")
    master_err, worker_err = run(theirs_dir, target, "locust-telemetry", ["--enable-telemetry-recorder", "json"])
    theirs = json_lines(master_err) + json_lines(worker_err)
    ours_dir = tmp_path_factory.mktemp("swarmtel")
    out, dead = ours_dir / "telemetry.ndjson", ours_dir / "dead.ndjson"
    config = ours_dir / "swarmtel.toml"
    metrics_port = free_port()
    config.write_text(
        '[run]\ntestplan = "lt-compare"\n'
        f'[[outputs]]\ntype = "json_lines"\npath = "{out}"\nenvelope = "locust-telemetry"\n'
        # the runtime's own summaries are not locust-telemetry records
        '[outputs.filter]\nplugins = ["locust-telemetry"]\n'
        f'[[outputs]]\ntype = "prometheus"\nlisten = "127.0.0.1:{metrics_port}"\n'
        f'[dead_letter]\npath = "{dead}"\n'
        f'[[plugins]]\npath = "{wasm}"\n'
        # both of 2.1.2's recorders: the JSON records and the OTel twin's metrics
        '[plugins.options]\nenable-telemetry-recorder = "json,otel"\n')
    scrapes = []

    def scrape(master):
        """The last exposition with the plugin's request histograms, scraped while it runs."""
        while master.poll() is None:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read().decode()
                if "locust_tl_request_metric_error_seconds_count" in text:
                    scrapes.append(text)
            except OSError:
                pass
            time.sleep(0.5)

    run(ours_dir, target, "swarmtel", ["--swarmtel-config", str(config), "--swarmtel-bin", bin_,
                                       "--swarmtel-testplan", "lt-compare"], while_running=scrape)
    ours = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert dead.read_text() == "", "no rejected items"
    assert scrapes, "the plugin's metrics never reached the Prometheus output"
    return theirs, ours, scrapes[-1]


def kind(line):
    """A record's kind: its name, and for request stats its stats type and status."""
    t = line["telemetry"]
    return (t["telemetry_name"], t.get("stats_type"), t.get("status"))


def json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return type(value).__name__


def by_kind(lines):
    groups = collections.defaultdict(list)
    for line in lines:
        groups[kind(line)].append(line)
    return groups


def test_the_same_records_with_the_same_fields_and_types(both):
    theirs, ours, _ = both
    assert theirs and ours
    mine, real = by_kind(ours), by_kind(theirs)
    assert set(mine) == set(real), (sorted(mine, key=str), sorted(real, key=str))
    for k, lines in real.items():
        assert {tuple(sorted(l)) for l in mine[k]} == {tuple(sorted(l)) for l in lines}, k  # top-level keys
        assert {tuple(sorted(l["telemetry"])) for l in mine[k]} == {tuple(sorted(l["telemetry"])) for l in lines}, k
        # Types as Python's json wrote them, on the last record of each kind (after requests).
        real_types = {f: json_type(v) for f, v in lines[-1]["telemetry"].items()}
        my_types = {f: json_type(v) for f, v in mine[k][-1]["telemetry"].items()}
        assert my_types == real_types, k
        assert {l["telemetry"]["source"] for l in mine[k]} == {l["telemetry"]["source"] for l in lines}, k
        assert {l["telemetry"]["source_id"] for l in mine[k]} == {l["telemetry"]["source_id"] for l in lines}, k
        assert {l["telemetry"]["telemetry_type"] for l in mine[k]} == {l["telemetry"]["telemetry_type"] for l in lines}, k
        assert {l["message"] for l in mine[k]} == {l["message"] for l in lines}, k


def test_the_same_counts_and_totals(both):
    theirs, ours, _ = both
    mine, real = by_kind(ours), by_kind(theirs)
    for name in ("locust.tl.event.test.start", "locust.tl.event.test.stop", "locust.tl.event.spawn.complete"):
        assert len(mine[(name, None, None)]) == len(real[(name, None, None)]) == 1, name
    stats = "locust.tl.request.metric.stats"
    for status in ("success", "error"):
        key = (stats, "endpoint", status)
        assert len(mine[key]) == len(real[key]), key
    assert len(mine[(stats, "final", None)]) == len(real[(stats, "final", None)]) == 1
    # Periodic records: every 3 s from test start to stop on the same clock, within one tick.
    assert abs(len(mine[(stats, "current", None)]) - len(real[(stats, "current", None)])) <= 1
    for name in ("locust.tl.system.metric.cpu", "locust.tl.system.metric.mem"):
        for node in ("master", "worker-0"):
            count = lambda lines: sum(1 for l in lines if l["telemetry"]["source_id"] == node)  # noqa: E731
            assert count(mine[(name, None, None)]) >= 3, (name, node)
            assert abs(count(mine[(name, None, None)]) - count(real[(name, None, None)])) <= 1, (name, node)
    # Totals are exact: every user makes the same requests.
    fields = ("num_requests", "num_failures")
    final = lambda groups: {f: groups[(stats, "final", None)][0]["telemetry"][f] for f in fields}  # noqa: E731
    assert final(mine) == final(real) == {"num_requests": USERS * REQUESTS_PER_USER,
                                          "num_failures": USERS * REQUESTS_PER_USER // 5}
    rows = lambda groups, status, what: sorted(  # noqa: E731
        (l["telemetry"]["method"], l["telemetry"]["name"], *(l["telemetry"][f] for f in what))
        for l in groups[(stats, "endpoint", status)])
    assert rows(mine, "success", fields) == rows(real, "success", fields)
    assert rows(mine, "error", ("occurrences",)) == rows(real, "error", ("occurrences",))
    assert [l["telemetry"]["error"] for l in mine[(stats, "endpoint", "error")]] == \
        [l["telemetry"]["error"] for l in real[(stats, "endpoint", "error")]]


def test_one_run_id_per_test_on_every_node(both):
    for lines in both[:2]:
        run_ids = {l["telemetry"]["run_id"] for l in lines}
        assert len(run_ids) == 1 and re.fullmatch(r"[0-9a-f]{8}", run_ids.pop()), run_ids
        assert {l["telemetry"]["testplan"] for l in lines} == {"lt-compare"}


def test_the_dashboards_find_every_label_and_field_they_read_in_our_output(both):
    import dashboards

    _, ours, _ = both
    shipped = sorted((HERE.parents[1] / "examples" / "grafana" / "dashboards").glob("*.json"))
    loki = [path for path in shipped if "otel" not in path.name]
    assert [path.name for path in loki] == ["locust-telemetry.json", "test-runs.json"]
    assert dashboards.check(loki, ours) == []


def test_the_migration_guides_config_is_accepted(tmp_path):
    """The swarmtel.toml the migration guide shows, with its paths pointed here, passes
    `swarmtel check` (options, envelope, filter, env_vars and all)."""
    guide = (HERE.parents[1] / "docs" / "migrating-from-locust-telemetry.md").read_text()
    block = re.search(r"```toml\n(.*?)```", guide, re.S).group(1)
    assert 'envelope = "locust-telemetry"' in block and "enable-telemetry-recorder" in block
    config = tmp_path / "swarmtel.toml"
    config.write_text(block
                      .replace("/var/log/swarmtel/telemetry.ndjson", str(tmp_path / "telemetry.ndjson"))
                      .replace("target/guests/wasm32-wasip2/release/locust_telemetry.wasm",
                               str(GUESTS / "locust_telemetry.wasm")))
    env = clean_env()
    env["LOCUST_TELEMETRY_STATS_RECORDER_INTERVAL"] = "5"
    check = subprocess.run([os.environ["SWARMTEL_BIN"], "check", "--config", str(config)],
                           env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    # A refused option value names the plugin's option.
    env["LOCUST_ENABLE_TELEMETRY_RECORDER"] = "prometheus"
    config.write_text(config.read_text().replace('enable-telemetry-recorder = "json"', ""))
    check = subprocess.run([os.environ["SWARMTEL_BIN"], "check", "--config", str(config)],
                           env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode != 0 and "unknown recorder `prometheus`" in check.stderr, check.stderr


def test_a_standalone_run_is_recorded_as_the_master(tmp_path, target):  # noqa: F811
    """2.1.2 records nothing on a standalone `locust`; the plugin records it as a master:
    source LocalRunner, node local, events, stats rows and system metrics, exact totals."""
    out = tmp_path / "telemetry.ndjson"
    config = tmp_path / "swarmtel.toml"
    config.write_text(
        '[run]\ntestplan = "lt-compare"\n'
        f'[[outputs]]\ntype = "json_lines"\npath = "{out}"\nenvelope = "locust-telemetry"\n'
        '[outputs.filter]\nplugins = ["locust-telemetry"]\n'
        f'[dead_letter]\npath = "{tmp_path / "dead.ndjson"}"\n'
        f'[[plugins]]\npath = "{GUESTS / "locust_telemetry.wasm"}"\n')
    env = clean_env()
    env["LT_MODE"] = "swarmtel"
    users = 2
    locust = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users),
         "-t", "5s", "-H", target, "--swarmtel-config", str(config), "--swarmtel-bin", os.environ["SWARMTEL_BIN"]],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert locust.returncode in (0, 1), locust.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(l["telemetry"]["source"], l["telemetry"]["source_id"]) for l in lines} == {("LocalRunner", "local")}
    groups = by_kind(lines)
    stats = "locust.tl.request.metric.stats"
    for k in [("locust.tl.event.test.start", None, None), ("locust.tl.event.test.stop", None, None),
              ("locust.tl.event.spawn.complete", None, None), (stats, "final", None)]:
        assert len(groups[k]) == 1, k
    assert len(groups[(stats, "current", None)]) >= 2
    assert len(groups[("locust.tl.system.metric.cpu", None, None)]) >= 2
    final = groups[(stats, "final", None)][0]["telemetry"]
    assert (final["num_requests"], final["num_failures"]) == (users * REQUESTS_PER_USER, users * REQUESTS_PER_USER // 5)
    assert sorted(l["telemetry"]["name"] for l in groups[(stats, "endpoint", "success")]) == ["/items", "/missing"]


def test_the_otel_dashboard_finds_every_series_and_label_it_reads_in_our_metrics(both):
    """The OTel twin's metrics, scraped from the Prometheus output during the run: every
    metric, matcher and grouping label of the OTel dashboard is there, and the request
    histograms count exactly the requests."""
    import promdashboards

    _, _, exposition = both
    dashboard = HERE.parents[1] / "examples" / "grafana" / "dashboards" / "locust-telemetry-otel.json"
    assert promdashboards.check([dashboard], exposition) == []
    counts = collections.Counter()
    sample_lines = [line for line in exposition.splitlines() if line and not line.startswith("#")]
    for (name, labels), line in zip(promdashboards.parse_exposition(exposition), sample_lines):
        if name in ("locust_tl_request_metric_success_seconds_count", "locust_tl_request_metric_error_seconds_count"):
            counts[(name, labels["endpoint"], labels["status_code"], labels["source_id"])] += float(line.split()[-1])
    assert counts == {
        ("locust_tl_request_metric_success_seconds_count", "/items", "200", "worker-0"): USERS * REQUESTS_PER_USER * 4 // 5,
        ("locust_tl_request_metric_error_seconds_count", "/missing", "404", "worker-0"): USERS * REQUESTS_PER_USER // 5,
    }
