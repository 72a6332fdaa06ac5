#!/usr/bin/env python3
"""The request-stats recorder in Rust, Python and JavaScript (both engines), side by side,
whole-process.

    python3 bench/polyglot.py [--requests 1000000] [--runs 3]

Builds swarmtel (release) and the four request-stats plugins from source
(`scripts/build-polyglot.sh`), writes the generated stream (`synthetic_stream` example: 4
workers, N requests) under target/bench/, then for each plugin, one after the other in this
one run:

- load, cold: `swarmtel check` with an empty compile cache (compiles the component);
- load, cached: `swarmtel check` again, best of 5;
- replay: `swarmtel replay` of the stream, best of `--runs`: wall time, CPU time (user + sys,
  from the child's rusage) and request events per second of each;
- memory per instance: peak RSS of a replay whose stream has 65 worker nodes (65 live
  instances) minus that of one with 1 node, divided by 64.

Before it prints, it checks that every replay wrote the same `request_stats` lines.
Prints a Markdown table for BENCHMARKS.md.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "target" / "bench"


def run_measured(argv, stdout=subprocess.DEVNULL):
    """Run a command; return (wall s, CPU s, peak RSS KiB, stderr text)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, err.decode(errors="replace")


def config(path: Path, plugin: Path, cache: Path, output: Path) -> Path:
    path.write_text(
        '[run]\ntestplan = "bench"\nrun_id = "bench"\n'
        f'[output]\npath = "{output}"\n'
        f'[cache]\ndir = "{cache}"\n'
        f'[[plugins]]\npath = "{plugin}"\n'
    )
    return path


def stream(workers: int, requests: int) -> Path:
    path = BENCH / f"stream-{workers}x{requests}.ndjson"
    if not path.exists():
        BENCH.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            subprocess.run(["cargo", "run", "--quiet", "--release", "-p", "swarmtel", "--example",
                            "synthetic_stream", "--", str(workers), str(requests)], cwd=ROOT, stdout=out,
                           check=True)
    return path


def request_stats_lines(path: Path):
    return sorted(line for line in path.read_text().splitlines() if '"telemetry_name":"request_stats"' in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "swarmtel"], cwd=ROOT, check=True)
    swarmtel = ROOT / "target" / "release" / "swarmtel"
    built = subprocess.run([ROOT / "scripts" / "build-polyglot.sh"], cwd=ROOT, check=True,
                           stdout=subprocess.PIPE, text=True).stdout.split()
    plugins = dict(zip(["Rust", "Python", "JavaScript (QuickJS)", "JavaScript (SpiderMonkey)"], map(Path, built)))
    big = stream(4, args.requests)
    one_node = stream(1, 6_500)
    many_nodes = stream(65, 6_500)

    rows = {}
    outputs = {}
    work = Path(tempfile.mkdtemp(prefix="swarmtel-polyglot-"))
    try:
        for language, plugin in plugins.items():
            cache = work / f"cache-{language}"
            output = work / f"out-{language}.ndjson"
            toml = config(work / f"{language}.toml", plugin, cache, output)
            cold, _, cold_rss, _ = run_measured([swarmtel, "check", "--config", toml])
            cached = min(run_measured([swarmtel, "check", "--config", toml])[0] for _ in range(5))
            replays = []
            for _ in range(args.runs):
                output.unlink(missing_ok=True)
                replays.append(run_measured([swarmtel, "replay", "--config", toml, big])[:2])
            wall, cpu = min(replays)
            outputs[language] = request_stats_lines(output)
            rss_one = run_measured([swarmtel, "replay", "--config", toml, one_node])[2]
            rss_many = run_measured([swarmtel, "replay", "--config", toml, many_nodes])[2]
            rows[language] = {
                "size": plugin.stat().st_size / 1e6,
                "cold": cold,
                "cold_rss": cold_rss / 1024,
                "cached": cached,
                "wall": wall,
                "cpu": cpu,
                "per_instance": (rss_many - rss_one) / 64 / 1024,
            }
            print(f"{language}: done", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    reference = outputs["Rust"]
    for language, lines in outputs.items():
        if lines != reference:
            sys.exit(f"{language}'s request_stats lines differ from Rust's ({len(lines)} vs {len(reference)} lines)")

    print(f"{args.requests:,} requests on 4 workers, {len(reference):,} request_stats lines, "
          f"identical in all; best of {args.runs} replays, of 5 cached loads.\n")
    print("| request-stats in | component | load, cold (peak RSS) | load, cached | replay wall | replay CPU | "
          "events per CPU-second | vs Rust | RSS per instance |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rust_rate = args.requests / rows["Rust"]["cpu"]
    for language, row in rows.items():
        rate = args.requests / row["cpu"]
        print(f"| {language} | {row['size']:.1f} MB | {row['cold']:.2f} s ({row['cold_rss']:.0f} MiB) | "
              f"{row['cached'] * 1000:.0f} ms | {row['wall']:.2f} s | {row['cpu']:.2f} s | "
              f"{rate / 1e6:.2f} M | {rate / rust_rate:.0%} | {row['per_instance']:.2f} MiB |")


if __name__ == "__main__":
    main()
