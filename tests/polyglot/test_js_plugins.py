"""JavaScript recorders, built from source with the JS guest SDK and run by the real binary.

- The request-stats port in example-plugins/request-stats-js, built with
  `swarmtel-recorder build` for each engine (SpiderMonkey via componentize-js, QuickJS via
  componentize-qjs), writes byte-identical `request_stats` lines to the Rust request-stats on
  the sample capture, and describes itself identically.
- The SDK's Node harness (`swarmtel-recorder replay`: the same dispatch code, batches and
  ticks as the host) gives the same telemetry as `swarmtel replay` of the component.
- The package installs into another folder with npm, and its `npx swarmtel-recorder` works.
- The request-stats port's metric points (a counter and a response-time histogram per
  endpoint) reach the host's Prometheus output with every request of the capture.

Needs Node.js 20+ and npm; `scripts/js-env.sh` installs the SDK's pinned dependencies (npm ci)
when they changed. `SWARMTEL_BIN` names the swarmtel binary (default: target/debug/swarmtel).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from plugin_metrics import events_020, expected_request_metrics, replay_and_scrape, scraped_request_metrics

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "polyglot"
CAPTURE = ROOT / "examples" / "locust-run.ndjson"
HOST_KEYS = {"telemetry_type", "telemetry_name", "source", "source_id", "run_id", "testplan", "plugin"}


def run(args, **kwargs):
    """Runs a command; fails the test with its output when it fails."""
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        pytest.fail("%s exited %d:\n%s\n%s" % (" ".join(map(str, args)), result.returncode, result.stdout, result.stderr))
    return result


@pytest.fixture(scope="module")
def swarmtel():
    binary = Path(os.environ.get("SWARMTEL_BIN", ROOT / "target" / "debug" / "swarmtel"))
    if not binary.exists():
        pytest.fail("no swarmtel binary at %s (cargo build, or set SWARMTEL_BIN)" % binary)
    return binary


@pytest.fixture(scope="module")
def sdk():
    """The JS SDK folder, its node_modules installed (npm ci when the lock changed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the JavaScript SDK's tests (Node.js 20+)")
    return Path(run([str(ROOT / "scripts" / "js-env.sh")]).stdout.strip())


@pytest.fixture(scope="module")
def rust_request_stats():
    guests = Path(run([str(ROOT / "scripts" / "build-guests.sh")]).stdout.strip())
    return guests / "request_stats.wasm"


ENGINES = ["spidermonkey", "quickjs"]


def build_js(sdk, source, name, engine):
    """Builds a JS recorder with the SDK's build command into target/polyglot/."""
    OUT.mkdir(parents=True, exist_ok=True)
    wasm = OUT / ("%s%s.wasm" % (name, "" if engine == "spidermonkey" else "_qjs"))
    if wasm.exists():
        wasm.unlink()
    result = run(
        ["node", str(sdk / "bin" / "swarmtel-recorder.js"), "build", source, "-o", str(wasm), "--engine", engine],
        cwd=ROOT,
    )
    assert "(%s)" % engine in result.stderr
    return wasm, result


@pytest.fixture(scope="module", params=ENGINES)
def js_request_stats(request, sdk):
    wasm, result = build_js(sdk, "example-plugins/request-stats-js/recorder.js", "request_stats_js", request.param)
    assert "plugin request-stats 0.1.0: request_stats_recorder (worker, standalone;" in result.stderr
    return wasm


def config_for(name, wasm):
    """A config with one plugin at default settings, its compile cache under target/."""
    path = OUT / ("%s.toml" % name)
    path.write_text(
        '[run]\ntestplan = "polyglot"\nrun_id = "polyglot"\n\n'
        '[cache]\ndir = "cache"\n\n'
        '[[plugins]]\npath = "%s"\n' % wasm
    )
    return path


def replay_lines(swarmtel, config):
    result = run([str(swarmtel), "replay", "--config", str(config), str(CAPTURE)])
    return [line for line in result.stdout.splitlines() if line.strip()]


def request_stats(lines):
    return [line for line in lines if json.loads(line)["telemetry"]["telemetry_name"] == "request_stats"]


def test_js_request_stats_matches_rust_byte_for_byte(swarmtel, rust_request_stats, js_request_stats):
    rust = request_stats(replay_lines(swarmtel, config_for("rust_request_stats", rust_request_stats)))
    js = request_stats(replay_lines(swarmtel, config_for(js_request_stats.stem, js_request_stats)))
    assert len(rust) > 0
    assert js == rust
    # The last final Aggregated row of each worker counts every request it sent.
    rows = [json.loads(line)["telemetry"] for line in js]
    last = {t["source_id"]: t["requests"] for t in rows if t["endpoint"] == "Aggregated" and t["final"]}
    sent = {}
    for line in CAPTURE.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "request":
            sent[event["node"]] = sent.get(event["node"], 0) + 1
    assert last == sent


def test_js_request_stats_metrics_reach_the_hosts_prometheus_output(swarmtel, js_request_stats, tmp_path):
    expected = expected_request_metrics(CAPTURE)
    plugin = '[[plugins]]\npath = "%s"\nrequired = true\n' % js_request_stats
    text = replay_and_scrape(str(swarmtel), plugin, OUT / "cache", tmp_path, CAPTURE, sum(e["requests"] for e in expected.values()))
    scraped = scraped_request_metrics(text)
    assert {k: (v["requests"], v["buckets"]) for k, v in scraped.items()} == {
        k: (v["requests"], v["buckets"]) for k, v in expected.items()}
    for endpoint, row in expected.items():
        assert scraped[endpoint]["sum_seconds"] == pytest.approx(row["sum_seconds"], rel=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_0_2_0_events_reach_a_js_component_as_they_reach_the_harness(swarmtel, sdk, engine, tmp_path):
    """Exception types, the stats snapshot's times, fractional keys and error table, and process
    samples: what the host hands a component of either engine is what the Node harness hands
    the same recorder."""
    wasm, _ = build_js(sdk, "guest-sdk-js/test/fixtures/metrics.js", "metrics_fixture_js", engine)
    stream = events_020(tmp_path / "events-0.2.0.ndjson")
    replayed = run([str(swarmtel), "replay", "--config", str(config_for(wasm.stem, wasm)), str(stream)])
    host = [(line["telemetry"]["telemetry_name"], line["message"],
             {k: v for k, v in line["telemetry"].items() if k not in HOST_KEYS})
            for line in map(json.loads, replayed.stdout.splitlines()) if line["telemetry"]["plugin"] == "metrics-fixture"]
    harness = run(["node", str(sdk / "bin" / "swarmtel-recorder.js"), "replay", "guest-sdk-js/test/fixtures/metrics.js",
                   str(stream)], cwd=ROOT).stdout.splitlines()
    assert host == [(item["telemetry_name"], item["message"], item["fields"]) for item in map(json.loads, harness)]
    assert [name for name, _, _ in host] == ["REQUESTS", "STATS", "STATS", "PROCESS", "PROCESS"]
    assert host[0][2]["types"] == ["HTTPError", None, "", "ConnectionRefusedError"]
    assert host[1][2]["errors"][1] == {"request_type": "POST", "name": "/b", "error": "timeout", "occurrences": 3,
                                       "first_seen": None, "last_seen": None}
    assert (host[1][2]["response_times"], host[2][2]["start_time"]) == ([[2.5, 2], [5, 1], [12, 1]], None)
    assert host[4][2]["sample"]["network_recv_bytes"] == 0


def rounding_stream(path):
    """A crafted capture: Locust's rounding ties (12.5, 13.5, 145, 155, 1050, 12500: Python's
    `round` goes to the even neighbour), the edges of its bands (0, 0.5, 99.5, 999.5, 9950),
    huge times (1e6, 1e20 and 1e306, past what a u64 holds: Rust's `as u64` saturates, and
    round3 of 1e306 is infinite, written null), and a response_length of 2^64 - 1 on its own
    node next to ordinary ones (the u64 sum wraps, as in a release build)."""
    times = [12.5, 13.5, 14.5, 145, 155, 165, 1050, 1150, 12500, 13500, 0, 0.5, 1.5, 99.5, 999.5,
             9950, 9949.999, 1e6, 2.5, 2.5, 2.5]
    lines = []
    t = 1795557120.0

    def add(node, event, **fields):
        nonlocal t
        t += 0.25
        lines.append(dict(event=event, role="worker", node=node, time=t, **fields))

    for node in ("worker-0", "worker-1", "worker-2"):
        add(node, "test_start")
    for i, ms in enumerate(times):
        add("worker-0", "request", request_type="GET", name="/ties", response_time=ms,
            response_length=i, exception="boom" if i % 5 == 0 else None)
    for ms in (1e20, 1e19, 1.8446744073709552e19, 5e18):
        add("worker-1", "request", request_type="GET", name="/huge", response_time=ms, response_length=1)
    add("worker-1", "request", request_type="POST", name="/huge", response_time=1e306, response_length=2)
    for length in (2**64 - 1, 2**63, 7):
        add("worker-2", "request", request_type="GET", name="/bytes", response_time=3.5, response_length=length)
    for node in ("worker-0", "worker-1", "worker-2"):
        add(node, "test_stop")
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_js_request_stats_rounds_ties_and_edges_as_rust(swarmtel, sdk, rust_request_stats, js_request_stats):
    """Byte for byte on a capture made of ties and edge values; the Node harness's replay of
    it gives the same rows (less those the host dead-letters)."""
    OUT.mkdir(parents=True, exist_ok=True)
    capture = rounding_stream(OUT / "rounding-ties.ndjson")

    def replayed(wasm):
        result = run([str(swarmtel), "replay", "--config", str(config_for(wasm.stem, wasm)), str(capture)])
        return [line for line in result.stdout.splitlines() if line.strip()], result.stderr

    rust, rust_err = replayed(rust_request_stats)
    js, js_err = replayed(js_request_stats)
    assert js == rust
    assert "PLUGIN_FAULT" not in "".join(js) and "threw" not in js_err
    rows = {(r["source_id"], r["endpoint"], r["final"]): r for r in
            (json.loads(line)["telemetry"] for line in rust) if r["telemetry_name"] == "request_stats"}
    ties = rows[("worker-0", "/ties", True)]
    assert ties["requests"] == 21 and ties["failures"] == 5
    huge = rows[("worker-1", "/huge", True)]
    assert huge["p99_ms"] == 2**64 - 1 and huge["min_response_time_ms"] == 5e18
    assert rows[("worker-2", "/bytes", True)]["total_bytes"] == (2**64 - 1 + 2**63 + 7) % 2**64
    # 1e306 ms: the Rust plugin's rounded average is infinite, so its row is dead-lettered.
    assert ("worker-1", "Aggregated", True) not in rows
    assert "PLUGIN_FAULT" not in "".join(rust)
    harness = run(["node", str(sdk / "bin" / "swarmtel-recorder.js"), "replay",
                   "example-plugins/request-stats-js/recorder.js", str(capture)], cwd=ROOT).stdout.splitlines()
    harness = [json.loads(line) for line in harness]
    host = [json.loads(line) for line in request_stats(rust)]
    assert [(item["rfc3339"], item["node"], item["message"], json.dumps(item["fields"], sort_keys=True))
            for item in harness if None not in item["fields"].values()] == \
        [(line["time"], line["telemetry"]["source_id"], line["message"],
          json.dumps({k: v for k, v in line["telemetry"].items() if k not in HOST_KEYS}, sort_keys=True))
         for line in host]
    assert sum(None in item["fields"].values() for item in harness) == 2, "the rows with an infinite time"


def test_js_request_stats_describes_itself_as_the_rust_one(swarmtel, rust_request_stats, js_request_stats):
    def inspect(wasm):
        info = json.loads(run([str(swarmtel), "plugin", "inspect", "--json", str(wasm)]).stdout)
        info.pop("path")
        return info

    assert inspect(js_request_stats) == inspect(rust_request_stats)


def test_node_harness_gives_what_swarmtel_replay_gives(swarmtel, sdk, js_request_stats):
    """The harness runs the same dispatch code as either engine's component."""
    replayed = [json.loads(line) for line in replay_lines(swarmtel, config_for(js_request_stats.stem, js_request_stats))]
    replayed = [line for line in replayed if line["telemetry"]["plugin"] == "request-stats"]
    harness = run(
        ["node", str(sdk / "bin" / "swarmtel-recorder.js"), "replay",
         "example-plugins/request-stats-js/recorder.js", str(CAPTURE)],
        cwd=ROOT,
    ).stdout.splitlines()
    harness = [json.loads(line) for line in harness]
    assert len(harness) == len(replayed) > 0

    def host_view(line):
        telemetry = line["telemetry"]
        fields = {k: v for k, v in telemetry.items() if k not in HOST_KEYS}
        return (line["time"], telemetry["source"], telemetry["source_id"], telemetry["telemetry_type"],
                telemetry["telemetry_name"], line["message"], json.dumps(fields, sort_keys=True))

    def harness_view(item):
        # The harness writes the time as the host does (rfc3339, cut to milliseconds).
        return (item["rfc3339"], item["role"], item["node"], item["telemetry_type"], item["telemetry_name"],
                item["message"], json.dumps(item["fields"], sort_keys=True))

    assert [harness_view(item) for item in harness] == [host_view(line) for line in replayed]


def test_sdk_installs_with_npm_and_runs_from_npx(sdk):
    project = OUT / "npm-install-check"
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    (project / "package.json").write_text('{"name": "my-recorder", "version": "1.0.0", "private": true, "type": "module"}\n')
    run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", str(sdk)], cwd=project)
    shutil.copy(ROOT / "guest-sdk-js" / "test" / "fixtures" / "custom-telemetry.js", project / "recorder.js")
    described = json.loads(run(["npx", "--no-install", "swarmtel-recorder", "describe", "recorder.js"], cwd=project).stdout)
    assert described["id"] == "custom-telemetry-js"
    # The harness, imported as an author's test would import it.
    (project / "recorder.test.mjs").write_text(
        'import { test } from "node:test";\n'
        'import assert from "node:assert/strict";\n'
        'import { Harness } from "swarmtel-recorder/testing";\n'
        'import plugin from "./recorder.js";\n'
        'test("start", () => {\n'
        '  const harness = new Harness(plugin, "custom_telemetry_recorder", "master");\n'
        '  assert.equal(harness.event({ event: "test_start", time: 1 })[0].name, "CUSTOM_START");\n'
        '});\n'
    )
    run(["node", "--test", "recorder.test.mjs"], cwd=project)


@pytest.mark.parametrize("engine", ENGINES)
def test_refusals_and_listener_errors_reach_the_host(swarmtel, sdk, engine):
    """A recorder that throws while created refuses with its message; a listener that throws
    traps its call, the host logs the error, and the other events still arrive."""
    wasm, _ = build_js(sdk, "guest-sdk-js/test/fixtures/faulty.js", "faulty_js", engine)
    config = config_for(wasm.stem, wasm)
    with config.open("a") as toml:
        toml.write('\n[plugins.options]\nrefuse = true\n')
    check = subprocess.run([str(swarmtel), "check", "--config", str(config)], capture_output=True, text=True)
    assert check.returncode == 1
    assert "recorder `faulty_recorder` for role worker refused: refused: --refuse is set" in check.stderr
    config = config_for(wasm.stem, wasm)
    result = run([str(swarmtel), "replay", "--config", str(config), str(CAPTURE)])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    names = [line["telemetry"]["telemetry_name"] for line in lines]
    assert names.count("OK") == 3
    assert names.count("PLUGIN_FAULT") == 3
    assert "recorder faulty_recorder threw Error: listener broke on purpose" in result.stderr
