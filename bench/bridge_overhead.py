"""What the bridge costs Locust: requests per second of the same Locust test against the same
local target, with and without the bridge, alternating, several rounds in one run.

    target/py-venv/bin/python bench/bridge_overhead.py [--rounds 4] [--run-time 15] [--users 20]

"Without" runs examples/locustfile.py with its `import swarmtel_locust` line removed (no
bridge at all); "with" runs it as it is, the bridge starting `swarmtel serve` (release build)
with examples/swarmtel.toml, so the runtime's CPU on this machine counts too. Each round runs
both, in alternating order. rps = requests / (last request - first request), from Locust's
--json-file. Also CPU time per request: user + system time of Locust and everything it
waited for (the bridge's `swarmtel serve` child included, the target not), which wobbles less
than rps on a shared machine. Prints one row per run and the ratios of medians.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def rps(json_file: Path) -> tuple:
    entries = json.loads(json_file.read_text())
    requests = sum(e["num_requests"] for e in entries)
    start = min(e["start_time"] for e in entries)
    end = max(e["last_request_timestamp"] for e in entries)
    return requests, requests / (end - start)


def run(locustfile: Path, work: Path, args, bridge: bool, host: str, index: int) -> tuple:
    json_base = work / f"run-{index}"
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
               "-u", str(args.users), "-r", str(args.users), "-t", f"{args.run_time}s",
               "--host", host, "--json-file", str(json_base), "--only-summary"]
    if bridge:
        command += ["--swarmtel-config", str(ROOT / "examples" / "swarmtel.toml"),
                    "--swarmtel-bin", str(ROOT / "target" / "release" / "swarmtel"),
                    "--swarmtel-endpoint", f"unix:{work / 'serve.sock'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "SWARMTEL_"))}
    env["SWARMTEL_WAIT"] = "0"
    log = work / f"run-{index}.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as out:
        result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=out, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode not in (0, 1):
        sys.exit(f"locust failed ({result.returncode}); see {log}")
    text = log.read_text()
    if bridge and "0 by bridges, 0 here, 0 lost in transit" not in text:
        sys.exit(f"the bridge run lost events; see {log}")
    requests, rate = rps(Path(f"{json_base}.json"))
    return requests, rate, cpu / requests * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--run-time", type=int, default=15)
    parser.add_argument("--users", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = (ROOT / "examples" / "locustfile.py").read_text()
        plain = work / "plain_locustfile.py"
        plain.write_text("\n".join(line for line in source.splitlines() if "import swarmtel_locust" not in line))
        assert "swarmtel_locust" not in plain.read_text()
        target = subprocess.Popen([sys.executable, str(ROOT / "examples" / "target.py"), "0"],
                                  stdout=subprocess.PIPE, text=True)
        host = "http://" + target.stdout.readline().split()[-1]
        results = {False: [], True: []}
        cpu_per_request = {False: [], True: []}
        try:
            index = 0
            for round_ in range(args.rounds):
                order = (False, True) if round_ % 2 == 0 else (True, False)
                for bridge in order:
                    index += 1
                    requests, rate, cpu_us = run(ROOT / "examples" / "locustfile.py" if bridge else plain,
                                                 work, args, bridge, host, index)
                    results[bridge].append(rate)
                    cpu_per_request[bridge].append(cpu_us)
                    print(f"round {round_ + 1} {'with   ' if bridge else 'without'} bridge: "
                          f"{requests:7d} requests, {rate:8.1f} rps, {cpu_us:6.1f} CPU-us/request", flush=True)
        finally:
            target.terminate()
            target.wait()
    without, with_ = statistics.median(results[False]), statistics.median(results[True])
    print(f"median rps without {without:.1f}, with {with_:.1f}: with/without = {with_ / without:.1%}")
    pairs = [w / wo for w, wo in zip(results[True], results[False])]
    print("per-round ratios: " + ", ".join(f"{p:.1%}" for p in pairs))
    cpu_without, cpu_with = statistics.median(cpu_per_request[False]), statistics.median(cpu_per_request[True])
    print(f"median CPU-us per request without {cpu_without:.1f}, with {cpu_with:.1f}: "
          f"with/without = {cpu_with / cpu_without:.1%}")


if __name__ == "__main__":
    main()
