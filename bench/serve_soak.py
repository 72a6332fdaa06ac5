"""Soak: does `swarmtel serve` keep flat memory while nodes come and go?

    python3 bench/serve_soak.py [--seconds 150] [--interval 0.5] [--requests 200] [--quiet-every 5]

Starts the release `swarmtel serve` with the example plugins (custom-telemetry and
request-stats, output to a temporary file) on a loopback port, then, every `--interval`
seconds, a new node (a new worker name) connects, says hello, sends test_start, `--requests`
request events and test_stop. Most then send quit and close (finished nodes); every
`--quiet-every`-th closes without quit (a peer that never says goodbye, retired after
`node_idle_seconds`, set to 5 here). The server's resident memory (VmRSS) is sampled every
second. Prints the samples at 10% steps, the growth from the first fifth of the run to the
end, and the growth per node. Standard library only; build first with
`cargo build --release -p swarmtel` and `scripts/build-guests.sh`.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUESTS = ROOT / "target/guests/wasm32-wasip2/release"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def node_session(port: int, node: str, requests: int, quit: bool) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        hello = {"hello": "swarmtel", "version": 1, "role": "worker", "node": node,
                 "client": "soak"}
        sock.sendall((json.dumps(hello) + "\n").encode())
        reply = sock.makefile().readline()
        assert json.loads(reply)["ok"], reply
        now = time.time()
        lines = [json.dumps({"event": "test_start", "role": "worker", "node": node, "time": now})]
        for index in range(requests):
            lines.append(json.dumps({
                "event": "request", "role": "worker", "node": node, "time": now + index / 1000,
                "request_type": "GET", "name": f"/items/{index % 20}", "response_time": 3.5,
                "response_length": 512, "exception": None}))
        lines.append(json.dumps({"event": "test_stop", "role": "worker", "node": node,
                                 "time": now + 1}))
        if quit:
            lines.append(json.dumps({"event": "quit", "role": "worker", "node": node,
                                     "time": now + 2, "exit_code": 0}))
        sock.sendall(("\n".join(lines) + "\n").encode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--quiet-every", type=int, default=5)
    args = parser.parse_args()
    binary = ROOT / "target/release/swarmtel"
    if not binary.exists():
        print(f"build it first: cargo build --release -p swarmtel ({binary})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        config = work / "swarmtel.toml"
        config.write_text(
            "[run]\ntestplan = \"soak\"\nrun_id = \"soak\"\nnode_idle_seconds = 5\n"
            f"[output]\npath = \"{work / 'out.ndjson'}\"\n"
            f"[[plugins]]\npath = \"{GUESTS / 'custom_telemetry.wasm'}\"\n"
            "roles = [\"master\", \"worker\"]\n"
            f"[[plugins]]\npath = \"{GUESTS / 'request_stats.wasm'}\"\n")
        env = dict(os.environ, SWARMTEL_CACHE_DIR=str(work / "cache"))
        server = subprocess.Popen(
            [str(binary), "serve", "--config", str(config), "--listen", "127.0.0.1:0",
             "--status", "off"], stderr=subprocess.PIPE, text=True, env=env)
        port = None
        for line in server.stderr:
            if "serving on" in line:
                port = int(line.split("serving on ")[1].split()[0].rstrip(";,").rsplit(":", 1)[1])
                break
        threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
        samples = []
        nodes = 0
        start = time.monotonic()
        next_node = start
        next_sample = start
        while time.monotonic() - start < args.seconds:
            now = time.monotonic()
            if now >= next_node:
                quit = args.quiet_every <= 0 or (nodes % args.quiet_every) != args.quiet_every - 1
                node_session(port, f"worker-{nodes}", args.requests, quit)
                nodes += 1
                next_node += args.interval
            if now >= next_sample:
                samples.append((now - start, nodes, rss_kib(server.pid)))
                next_sample += 1.0
            time.sleep(0.01)
        server.terminate()
        server.wait(timeout=60)
    print(f"{nodes} nodes over {args.seconds:.0f} s ({args.requests} requests each, "
          f"1 in {args.quiet_every} never quits)")
    print(f"{'second':>8} {'nodes':>7} {'RSS MiB':>9}")
    step = max(1, len(samples) // 10)
    for second, count, rss in samples[::step] + [samples[-1]]:
        print(f"{second:8.0f} {count:7d} {rss / 1024:9.1f}")
    early = samples[len(samples) // 5]
    last = samples[-1]
    growth = last[2] - early[2]
    per_node = growth / max(1, last[1] - early[1])
    print(f"growth from second {early[0]:.0f} to {last[0]:.0f}: {growth / 1024:+.1f} MiB, "
          f"{per_node:+.2f} KiB per node")
    return 0


if __name__ == "__main__":
    sys.exit(main())
