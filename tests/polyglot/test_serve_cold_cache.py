"""`swarmtel serve` with a big Python component and an empty compile cache: it answers a
bridge's hello while the component still compiles (`"ready": false`), says what it compiles,
holds the lines sent meanwhile, and processes every one of them once the plugin is ready.

Needs SWARMTEL_BIN and the venv of scripts/python-env.sh (swarmtel-recorder and
componentize-py). Builds the Python request-stats example from source into
target/polyglot/serve-cold/ (about 10 s) and compiles it once in a fresh cache (7 to 12 s).
"""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "locust-run.ndjson"
OUT = ROOT / "target" / "polyglot" / "serve-cold"
REQUEST_STATS_PY = ROOT / "example-plugins" / "request-stats-py" / "request_stats_py"


@pytest.fixture(scope="module")
def request_stats_py_wasm():
    OUT.mkdir(parents=True, exist_ok=True)
    wasm = OUT / "request_stats_py.wasm"
    result = subprocess.run(
        [sys.executable, "-m", "swarmtel_recorder", "build", str(REQUEST_STATS_PY), "-o", str(wasm)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return wasm


class Serve:
    """A running `swarmtel serve` whose stderr lines are collected as they come."""

    def __init__(self, config: Path):
        self.proc = subprocess.Popen(
            [os.environ["SWARMTEL_BIN"], "serve", "--status", "off", "--listen", "127.0.0.1:0",
             "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.log = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120.0) -> str:
        for line in self.log:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self.log.append(line)
            if text in line:
                return line
        raise AssertionError("no %r on stderr; so far:\n%s" % (text, "\n".join(self.log)))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        self.wait_for("swarmtel serve: ")  # the connection summary, the last line
        return code


def test_serve_answers_while_a_python_plugin_compiles_and_loses_nothing(tmp_path, request_stats_py_wasm):
    output = tmp_path / "telemetry.ndjson"
    config = tmp_path / "swarmtel.toml"
    config.write_text(
        '[run]\ntestplan = "cold"\nrun_id = "cold-run"\n'
        '[output]\npath = "%s"\n[cache]\ndir = "%s"\n'
        '[[plugins]]\npath = "%s"\nrequired = true\n'
        % (output, tmp_path / "empty-cache", request_stats_py_wasm)
    )
    started = time.monotonic()
    serve = Serve(config)
    try:
        listening = serve.wait_for("serving on ")
        port = int(listening.split("serving on ", 1)[1].split(";")[0].rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        reader = sock.makefile("r", encoding="utf-8")
        hello = {"hello": "swarmtel", "version": 1, "role": "worker", "node": "worker-0", "client": "test", "seq": 0}
        sock.sendall((json.dumps(hello) + "\n").encode())
        reply = json.loads(reader.readline())
        answered_after = time.monotonic() - started
        assert reply["ok"] is True and reply["ready"] is False, reply
        print("hello answered %.2f s after serve started, while compiling" % answered_after)
        compiling = serve.wait_for("swarmtel: compiling ")
        assert "request_stats_py.wasm" in compiling and "MB)" in compiling, compiling

        # The sample capture's worker-0 lines, sent while the plugin compiles.
        lines = [line for line in SAMPLE.read_text().splitlines(keepends=True)
                 if json.loads(line)["node"] == "worker-0"]
        sock.sendall("".join(lines).encode())
        # The Python request-stats recorder takes requests, without url or context.
        assert json.loads(reader.readline()) == {
            "ready": True, "wants": {"requests": True, "url": False, "context": False}}
        assert serve.wait_for("swarmtel: compiled ").split(" in ")[-1].endswith(" s")
        serve.wait_for("plugins ready after ")
        while True:
            ack = json.loads(reader.readline())
            if ack.get("ack") == len(lines):
                break
        sock.sendall(b'{"bye":true,"sent":%d,"dropped":0}\n' % len(lines))
        reader.close()  # the file object holds the socket open too
        sock.close()
        serve.wait_for("(worker-0) closed: ")
    finally:
        code = serve.stop()
    assert code == 0, "\n".join(serve.log)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    finals = [r["telemetry"] for r in records
              if r["telemetry"]["telemetry_name"] == "request_stats" and r["telemetry"].get("final")]
    sent = sum(1 for line in lines if json.loads(line)["event"] == "request")
    assert sent > 1000
    assert [t["requests"] for t in finals if t["endpoint"] == "Aggregated"] == [sent], finals
    assert sum(t["requests"] for t in finals if t["endpoint"] != "Aggregated") == sent, finals
    assert all(t["source_id"] == "worker-0" for t in finals)
