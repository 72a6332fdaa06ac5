"""JavaScript recorders, built from source with the JS guest SDK and run by the real binary.

- The request-stats port in example-plugins/request-stats-js, built with
  `swarmtel-recorder build` for each engine (SpiderMonkey via componentize-js, QuickJS via
  componentize-qjs), writes byte-identical `request_stats` lines to the Rust request-stats on
  the sample capture, and describes itself identically.
- The SDK's Node harness (`swarmtel-recorder replay`: the same dispatch code, batches and
  ticks as the host) gives the same telemetry as `swarmtel replay` of the component.
- The package installs into another folder with npm, and its `npx swarmtel-recorder` works.

Needs Node.js 20+ and npm; `scripts/js-env.sh` installs the SDK's pinned dependencies (npm ci)
when they changed. `SWARMTEL_BIN` names the swarmtel binary (default: target/debug/swarmtel).
"""

import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

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
        ms = int(round(item["time"] * 1e9)) // 1_000_000
        time = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)
        return (time, item["role"], item["node"], item["telemetry_type"], item["telemetry_name"],
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
