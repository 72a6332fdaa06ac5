#!/usr/bin/env python3
"""What the outputs cost, whole-process, side by side in one run.

    target/py-venv/bin/python bench/outputs.py [--requests 1000000] [--runs 3]

(the venv of scripts/python-env.sh: the OTLP receiver decodes with opentelemetry-proto to count
the points it got).

Builds swarmtel (release) and the Rust request-stats plugin from source, writes the generated
stream (`synthetic_stream` example: 4 workers, N requests) under target/bench/, then replays it
with each output set in turn, best of `--runs` each (wall time, and CPU time from the child's
rusage):

- one JSON-lines output to a file, with the built-in request metrics off;
- the same with them on (the default; the baseline of the ratios);
- the same, plus a Prometheus scrape endpoint, scraped every 100 ms;
- the same, plus an OTLP output to a loopback receiver, metrics every 100 ms, logs off, and
  then logs on (the difference is what the logs cost, per record);
- the baseline plus a second JSON-lines output with a filter (request-stats metrics only).

Per exported point: the CPU an output adds over the baseline, divided by the points it
exported (series in every scrape; data points in every OTLP export). It checks that the first
output of every set wrote the same plugin lines before it prints a Markdown table for
BENCHMARKS.md.
"""
import argparse
import gzip
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "target" / "bench"


def run_measured(argv):
    """Run a command; return (wall s, CPU s)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        sys.exit(f"{argv} failed:\n{err.decode(errors='replace')[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime


class Receiver(http.server.BaseHTTPRequestHandler):
    """Takes OTLP requests; counts the metric data points it decodes."""
    points = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/metrics":
            request = ExportMetricsServiceRequest.FromString(gzip.decompress(body))
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        Receiver.points += len(getattr(metric, kind).data_points)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Scraper:
    """Scrapes a Prometheus endpoint every 100 ms; counts the samples it read."""

    def __init__(self, port):
        self.port, self.samples, self.stop = port, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.1):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=1) as response:
                    self.samples += sum(1 for line in response.read().decode().splitlines()
                                        if line and not line.startswith("#"))
            except OSError:
                pass


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    BENCH.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "swarmtel", "--bin", "swarmtel",
                    "--example", "synthetic_stream"], cwd=ROOT, check=True)
    guests = subprocess.run(["bash", str(ROOT / "scripts" / "build-guests.sh")], cwd=ROOT, check=True,
                            stdout=subprocess.PIPE, text=True).stdout.strip()
    plugin = Path(guests) / "request_stats.wasm"
    binary = ROOT / "target" / "release" / "swarmtel"
    stream = BENCH / f"outputs-stream-{args.requests}.ndjson"
    if not stream.exists():
        with open(stream, "wb") as out:
            subprocess.run([str(ROOT / "target" / "release" / "examples" / "synthetic_stream"), "4",
                            str(args.requests)], stdout=out, check=True)
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    json_lines = '[[outputs]]\ntype = "json_lines"\npath = "{path}"\nexisting = "truncate"\n'
    prometheus = '[[outputs]]\ntype = "prometheus"\nlisten = "127.0.0.1:{port}"\n'
    otlp = (f'[[outputs]]\ntype = "otlp"\nendpoint = "http://127.0.0.1:{receiver.server_address[1]}"\n'
            'export_interval_ms = 100\n')
    filtered = ('[[outputs]]\ntype = "json_lines"\npath = "{path}.metrics"\nexisting = "truncate"\n'
                'filter = {{ plugins = ["request-stats"], types = ["metric"] }}\n')
    off = '[request_metrics]\nenabled = false\n'
    sets = [
        ("JSON lines, request metrics off", json_lines + off, None),
        ("JSON lines (baseline)", json_lines, None),
        ("JSON lines + Prometheus, scraped every 100 ms", json_lines + prometheus, "prometheus"),
        ("JSON lines + OTLP metrics every 100 ms, logs off", json_lines + otlp + "logs = false\n", "otlp"),
        ("JSON lines + OTLP metrics every 100 ms and logs", json_lines + otlp, "otlp"),
        ("JSON lines + filtered JSON lines", json_lines + filtered, None),
    ]
    results, outputs = [], []
    for index, (label, outputs_toml, exported) in enumerate(sets):
        out = BENCH / f"outputs-{index}.ndjson"
        config = BENCH / f"outputs-{index}.toml"
        measured = []
        for _ in range(args.runs):
            port = free_port()
            config.write_text('[run]\ntestplan = "bench"\nrun_id = "bench"\n'
                              + outputs_toml.format(path=out, port=port)
                              + f'[dead_letter]\npath = "{BENCH / "outputs-dead.ndjson"}"\nexisting = "truncate"\n'
                              + f'[[plugins]]\npath = "{plugin}"\n')
            scraper = Scraper(port) if exported == "prometheus" else None
            Receiver.points = 0
            wall, cpu = run_measured([str(binary), "replay", "--config", str(config), str(stream)])
            if scraper:
                scraper.stop.set()
                scraper.thread.join()
            points = scraper.samples if scraper else Receiver.points if exported == "otlp" else 0
            measured.append((wall, cpu, points))
        best = min(measured, key=lambda m: m[1])
        results.append((label, min(m[0] for m in measured), best[1], best[2]))
        lines = [l for l in out.read_text().splitlines() if '"swarmtel"' not in l.split('"plugin":', 1)[1][:12]]
        outputs.append(sorted(l.split('"telemetry":', 1)[1] for l in lines))
    receiver.shutdown()
    assert all(o == outputs[0] for o in outputs), "the outputs differ"
    base_wall, base_cpu = results[1][1], results[1][2]
    print(f"{args.requests:,} requests, 4 workers; {len(outputs[0]):,} plugin telemetry lines per replay\n")
    print("| outputs | replay wall | replay CPU | vs baseline, wall | vs baseline, CPU | per event, CPU "
          "| points exported | added CPU per point |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    logs_off = next(r for r in results if "logs off" in r[0])
    for label, wall, cpu, points in results:
        per_point = f"{(cpu - base_cpu) / points * 1e6:.1f} µs" if points else "-"
        if "and logs" in label:
            per_point = (f"{(cpu - logs_off[2]) / len(outputs[0]) * 1e6:.1f} µs per log record "
                         "over logs off")
        print(f"| {label} | {wall:.2f} s | {cpu:.2f} s | {wall / base_wall:.1%} | {cpu / base_cpu:.1%} "
              f"| {cpu / args.requests * 1e9:.0f} ns | {points:,} | {per_point} |")


if __name__ == "__main__":
    main()
