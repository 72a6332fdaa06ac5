"""A real Prometheus scrapes `swarmtel serve`'s Prometheus output during a real distributed
Locust run (a master and two workers through the bridge), and PromQL over its HTTP API gives
the runtime's own counters exactly as the server's summary states them when it ends, and the
built-in request metrics exactly as Locust's master reports them in its `--json-file` and
`--csv` files: requests and failures per endpoint, failures per exception type, and p50, p95
and p99 per endpoint and Aggregated over both workers.

Needs SWARMTEL_BIN, the example plugins built into target/guests/, and PROMETHEUS_BIN (the
Debian `prometheus` binary; scripts/prometheus-env.sh installs it, scripts/test.sh passes it).
"""
import csv
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from test_live_locust import GUESTS, clean_env, free_port, locust, swarmtel_bin, target, wait_until  # noqa: F401 (fixtures)

PLUGINS = ("custom_telemetry", "request_stats", "locust_overview")


@pytest.fixture(scope="module")
def prometheus_bin():
    path = os.environ.get("PROMETHEUS_BIN")
    assert path and os.access(path, os.X_OK), "set PROMETHEUS_BIN (scripts/test.sh does)"
    return path


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def scrape_value(address, series):
    """One series' value from the scrape endpoint itself."""
    _, text = http_get(f"http://{address}/metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def promql(prometheus, query):
    """{labels-as-tuple: value} of an instant PromQL query."""
    url = f"http://{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    _, body = http_get(url)
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return {tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("__name__", "instance", "job"))): float(r["value"][1])
            for r in answer["data"]["result"]}


def summary_rows(log):
    """The server's closing summary: {plugin: events_in}, and its event count."""
    events = int(re.search(r"swarmtel: \d+ lines, (\d+) events", log).group(1))
    rows = {}
    for plugin in ("custom-telemetry", "request-stats", "locust-overview"):
        match = re.search(rf"^{plugin}\s+(\d+)\s+(\d+)\s+(\d+)", log, re.MULTILINE)
        assert match, log[-3000:]
        rows[plugin] = (int(match.group(1)), int(match.group(3)))
    return events, rows


def test_prometheus_scrapes_the_runtime_counters_of_a_distributed_run(tmp_path, swarmtel_bin, prometheus_bin, target):
    scrape_port, prometheus_port, master_port = free_port(), free_port(), free_port()
    scrape_address = f"127.0.0.1:{scrape_port}"
    prometheus = f"127.0.0.1:{prometheus_port}"
    plugins = "".join(f'[[plugins]]\npath = "{GUESTS / p}.wasm"\n' for p in PLUGINS)
    config = tmp_path / "swarmtel.toml"
    config.write_text(
        '[run]\ntestplan = "prometheus"\n'
        f'[[outputs]]\ntype = "json_lines"\npath = "{tmp_path / "telemetry.ndjson"}"\n'
        f'[[outputs]]\ntype = "prometheus"\nlisten = "{scrape_address}"\n'
        f'[dead_letter]\npath = "{tmp_path / "dead.ndjson"}"\n'
        f"{plugins}"
    )
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: swarmtel\n    static_configs:\n      - targets: ['{scrape_address}']\n"
    )
    endpoint = f"tcp:127.0.0.1:{free_port()}"
    env = clean_env()
    procs = []
    serve_log = tmp_path / "serve.log"
    try:
        with open(serve_log, "w") as log:
            serve = subprocess.Popen([swarmtel_bin, "serve", "--status", "off", "--config", str(config),
                                      "--listen", endpoint], env=env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT)
        procs.append(serve)
        wait_until("serve to listen", lambda: f"serving on {endpoint}" in serve_log.read_text(), serve)
        assert f"prometheus metrics at http://{scrape_address}/metrics" in serve_log.read_text()

        with open(tmp_path / "prometheus.log", "w") as log:
            prom = subprocess.Popen([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                     f"--web.listen-address={prometheus}"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        procs.append(prom)

        def ready():
            try:
                return http_get(f"http://{prometheus}/-/ready")[0] == 200
            except OSError:
                return False

        wait_until("Prometheus to be ready", ready, prom, timeout=60)

        master_log = tmp_path / "master.log"
        with open(master_log, "w") as log:
            master = subprocess.Popen(locust(
                "--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
                "--expect-workers", "2", "-u", "8", "-r", "8", "-t", "8s", "--host", target, "--only-summary",
                "--json-file", str(tmp_path / "locust"), "--csv", str(tmp_path / "locust"),
                "--swarmtel-endpoint", endpoint, "--swarmtel-testplan", "prometheus"),
                env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        procs.append(master)
        workers = []
        for index in range(2):
            with open(tmp_path / f"worker{index}.log", "w") as log:
                workers.append(subprocess.Popen(locust(
                    "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port),
                    "--swarmtel-endpoint", endpoint), env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
        procs.extend(workers)
        master.wait(timeout=120)
        for worker in workers:
            worker.wait(timeout=60)
        assert master.returncode in (0, 1), master_log.read_text()[-3000:]  # 1: /flaky fails on purpose
        wait_until("every connection to close", lambda: serve_log.read_text().count(") closed: ") == 3, serve)

        # The endpoint's final values, once the server has published them...
        def settled():
            first = scrape_value(scrape_address, "swarmtel_events_total")
            time.sleep(1.5)
            return first is not None and first > 0 and first == scrape_value(scrape_address, "swarmtel_events_total")

        wait_until("the counters to settle", settled, serve, timeout=60)
        final_events = scrape_value(scrape_address, "swarmtel_events_total")
        # ...are scraped by Prometheus.
        wait_until("Prometheus to scrape the final counters",
                   lambda: promql(prometheus, "swarmtel_events_total") == {(): final_events}, prom, timeout=60)
        events_in = promql(prometheus, "swarmtel_plugin_events_in_total")
        telemetry_out = promql(prometheus, "swarmtel_plugin_telemetry_out_total")
        rejected = promql(prometheus, "sum(swarmtel_plugin_rejected_total) or vector(0)")
        faults = promql(prometheus, "sum(swarmtel_plugin_faults_total) or vector(0)")
        instances = promql(prometheus, "swarmtel_live_instances")

        # Locust's own numbers, as its master wrote them.
        with open(tmp_path / "locust.json") as fh:
            locust_entries = {(e["method"], e["name"]): e for e in json.load(fh)}
        with open(tmp_path / "locust_stats.csv") as fh:
            locust_rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(fh)}
        with open(tmp_path / "locust_failures.csv") as fh:
            locust_failures = list(csv.DictReader(fh))
        aggregated = int(locust_rows[("", "Aggregated")]["Request Count"])
        wait_until("Prometheus to scrape the final request metrics",
                   lambda: promql(prometheus, "sum(locust_client_duration_seconds_count)") == {(): aggregated},
                   prom, timeout=60)
        by_endpoint = 'sum by (name, http_request_method) ({})'
        requests = promql(prometheus, by_endpoint.format("locust_client_duration_seconds_count"))
        failures = promql(prometheus, by_endpoint.format('locust_client_duration_seconds_count{error_type!=""}'))
        errors = promql(prometheus, 'sum by (name, http_request_method, error_type) '
                                    '(locust_client_duration_seconds_count{error_type!=""})')
        percentiles = promql(prometheus, "locust_client_duration_percentile_seconds")
        # Users, from the workers' reports: all 8 once both had spawned theirs.
        users = promql(prometheus, "max_over_time(locust_users_count[10m])")

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = serve_log.read_text()
    events, rows = summary_rows(log)
    assert final_events == events, log[-3000:]
    assert events > 100, log[-3000:]
    for plugin, (plugin_events_in, plugin_telemetry_out) in rows.items():
        assert events_in[(("plugin", plugin),)] == plugin_events_in, (plugin, events_in, log[-3000:])
        assert telemetry_out[(("plugin", plugin),)] == plugin_telemetry_out, (plugin, telemetry_out)
    assert rejected == {(): 0.0} and faults == {(): 0.0}
    # The nodes quit: their recorders were finished and freed.
    assert instances == {(): 0.0}

    # Requests and failures per endpoint are Locust's.
    assert len(locust_entries) >= 4, locust_entries.keys()
    endpoint = lambda method, name: (("http_request_method", method), ("name", name))  # noqa: E731
    assert requests == {endpoint(m, n): float(e["num_requests"]) for (m, n), e in locust_entries.items()}
    assert failures == {endpoint(m, n): float(e["num_failures"]) for (m, n), e in locust_entries.items()
                        if e["num_failures"]}
    assert sum(e["num_failures"] for e in locust_entries.values()) > 0, "the /flaky endpoint fails"
    # Failures per exception class: Locust's failures.csv has repr(exception), `Class(...)`.
    expected_errors = {}
    for row in locust_failures:
        key = (("error_type", row["Error"].split("(", 1)[0]),
               ("http_request_method", row["Method"]), ("name", row["Name"]))
        expected_errors[key] = expected_errors.get(key, 0.0) + float(row["Occurrences"])
    assert errors == expected_errors
    records = [json.loads(line)["telemetry"] for line in (tmp_path / "telemetry.ndjson").read_text().splitlines()]
    run_id = records[0]["run_id"]
    # p50, p95 and p99 over both workers are the master's, per endpoint and Aggregated.
    for (method, name), row in locust_rows.items():
        for quantile, column in (("0.5", "50%"), ("0.95", "95%"), ("0.99", "99%")):
            labels = [("name", name), ("quantile", quantile), ("run_id", run_id), ("testplan", "prometheus")]
            if method:
                labels.append(("http_request_method", method))
            value = percentiles[tuple(sorted(labels))]
            assert round(value * 1000) == int(row[column]), (method, name, quantile, value, row)
    assert len(percentiles) == 3 * len(locust_rows)
    assert users == {(("run_id", run_id), ("testplan", "prometheus")): 8.0}

    # The same numbers, as REQUEST_SUMMARY records in the JSON lines.
    summaries = {(r["request_type"], r["name"]): r for r in records if r["telemetry_name"] == "REQUEST_SUMMARY"}
    assert summaries.keys() == locust_rows.keys()
    for key, row in locust_rows.items():
        summary = summaries[key]
        assert summary["num_requests"] == int(row["Request Count"]), (key, summary, row)
        assert summary["num_failures"] == int(row["Failure Count"]), (key, summary, row)
        for percent, column in (("0.5", "50%"), ("0.95", "95%"), ("0.99", "99%")):
            assert summary[f"response_time_percentile_{percent}"] == int(row[column]), (key, summary, row)
