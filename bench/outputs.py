#!/usr/bin/env python3
"""What the outputs cost, whole-process, side by side in one run.

    python3 bench/outputs.py [--requests 1000000] [--runs 3]

Builds swarmtel (release) and the Rust request-stats plugin from source, writes the generated
stream (`synthetic_stream` example: 4 workers, N requests) under target/bench/, then replays it
with each output set in turn, best of `--runs` each (wall time, and CPU time from the child's
rusage):

- one JSON-lines output to a file (the baseline);
- the same, plus a Prometheus scrape endpoint (counters published at every flush);
- the same, plus a second JSON-lines output with a filter (request-stats metrics only).

It checks that the first output of every set wrote the same lines before it prints a Markdown
table for BENCHMARKS.md.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

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
    json_lines = '[[outputs]]\ntype = "json_lines"\npath = "{path}"\nexisting = "truncate"\n'
    prometheus = '[[outputs]]\ntype = "prometheus"\nlisten = "127.0.0.1:0"\n'
    filtered = ('[[outputs]]\ntype = "json_lines"\npath = "{path}.metrics"\nexisting = "truncate"\n'
                'filter = {{ plugins = ["request-stats"], types = ["metric"] }}\n')
    sets = [
        ("JSON lines (baseline)", json_lines),
        ("JSON lines + Prometheus", json_lines + prometheus),
        ("JSON lines + Prometheus + filtered JSON lines", json_lines + prometheus + filtered),
    ]
    results, outputs = [], []
    for index, (label, outputs_toml) in enumerate(sets):
        out = BENCH / f"outputs-{index}.ndjson"
        config = BENCH / f"outputs-{index}.toml"
        config.write_text('[run]\ntestplan = "bench"\nrun_id = "bench"\n'
                          + outputs_toml.format(path=out)
                          + f'[dead_letter]\npath = "{BENCH / "outputs-dead.ndjson"}"\nexisting = "truncate"\n'
                          + f'[[plugins]]\npath = "{plugin}"\n')
        subprocess.run([str(binary), "check", "--config", str(config)], check=True, stdout=subprocess.DEVNULL)
        runs = [run_measured([str(binary), "replay", "--config", str(config), str(stream)])
                for _ in range(args.runs)]
        results.append((label, min(w for w, _ in runs), min(c for _, c in runs)))
        lines = [l for l in out.read_text().splitlines() if '"PLUGIN_SUMMARY"' not in l]
        outputs.append(sorted(l.split('"telemetry":', 1)[1] for l in lines))
    assert all(o == outputs[0] for o in outputs), "the outputs differ"
    base_wall, base_cpu = results[0][1], results[0][2]
    print(f"{args.requests:,} requests, 4 workers; {len(outputs[0]):,} telemetry lines per replay\n")
    print("| outputs | replay wall | replay CPU | vs baseline, wall | vs baseline, CPU | per event, CPU |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, wall, cpu in results:
        print(f"| {label} | {wall:.2f} s | {cpu:.2f} s | {wall / base_wall:.1%} | {cpu / base_cpu:.1%} "
              f"| {cpu / args.requests * 1e9:.0f} ns |")


if __name__ == "__main__":
    main()
