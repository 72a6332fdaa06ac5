#!/usr/bin/env python3
"""What one `swarmtel serve` absorbs: request events per second from 1 to 64 Locust workers.

    python3 bench/serve_capacity.py [--connections 1,4,16,64] [--events 1000000] [--runs 3] [--otlp]

Builds swarmtel (release) and the Rust request-stats plugin from source, starts
`swarmtel serve --overload block` on loopback TCP with the request-stats plugin, the built-in
request metrics and a JSON-lines output to a file, then, for each count of connections,
connects that many clients at once. Each says hello as `worker-<i>` and sends its share of
`--events` pre-encoded request lines (the bridge's encoding, five endpoints, 1% failures) as
fast as the socket takes them, then a bye frame. The clocks stop when the server has
processed and flushed every line (its summary, after SIGTERM once every connection closed).
Every run must account for every event (`--overload block` loses none). Best of `--runs`,
with the server's CPU time from its rusage.

`--otlp` adds a pass with an `otlp` output to a loopback receiver that accepts and discards,
so the table shows that output's share too. The clients run in this process (sendall of
large buffers, mostly kernel time); on a two-core machine they share the CPU with the
server, so the figures are a floor.
"""
import argparse
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "target" / "bench"
ENDPOINTS = [("GET", "/"), ("GET", "/items"), ("GET", "/items/[id]"), ("POST", "/orders"), ("GET", "/flaky")]


def request_lines(node, count, start=1795557122.0):
    lines = []
    for i in range(count):
        method, name = ENDPOINTS[i % len(ENDPOINTS)]
        failed = i % 100 == 99
        exception = '"HTTPError(\'500\')","exception_type":"HTTPError"' if failed else "null"
        lines.append(
            '{"event":"request","role":"worker","node":"%s","time":%r,"request_type":"%s","name":"%s",'
            '"response_time":%r,"response_length":154,"exception":%s,"start_time":%r,"url":null,'
            '"status_code":%d,"context":{}}\n'
            % (node, start + i * 1e-4, method, name, 1.0 + (i * 37 % 997) / 10, exception,
               start + i * 1e-4, 500 if failed else 200))
    return "".join(lines).encode()


class Discard(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def connect(port, node):
    """A connection whose hello was accepted. The server takes 8 hellos at a time from one
    address and answers the others ``"retry":true``: those try again shortly, as the bridge
    does."""
    hello = (json.dumps({"hello": "swarmtel", "version": 1, "role": "worker", "node": node,
                         "run_id": "bench", "testplan": "bench"}) + "\n").encode()
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(hello)
        reply = json.loads(sock.makefile("rb").readline())
        if reply.get("ok"):
            return sock
        sock.close()
        if not reply.get("retry"):
            raise RuntimeError(reply)
        time.sleep(0.01)
    raise RuntimeError(f"still refused: {reply}")


def client(port, node, payload, errors):
    try:
        sock = connect(port, node)
        sock.sendall(payload)
        lines = payload.count(b"\n")
        sock.sendall(('{"bye":true,"sent":%d,"dropped":0}\n' % lines).encode())
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
        sock.close()
    except Exception as error:  # noqa: BLE001 (reported by the caller)
        errors.append(f"{node}: {error}")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_run(binary, config, payloads):
    port = free_port()
    log = BENCH / "serve-capacity.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(binary), "serve", "--status", "off", "--overload", "block",
                                   "--max-connections", "256", "--config", str(config),
                                   "--listen", f"tcp:127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
    while f"serving on tcp:127.0.0.1:{port}" not in log.read_text():
        if server.poll() is not None:
            sys.exit(log.read_text())
        time.sleep(0.02)
    errors = []
    threads = [threading.Thread(target=client, args=(port, f"worker-{i}", payload, errors))
               for i, payload in enumerate(payloads)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    while log.read_text().count(") closed: ") < len(payloads) and not errors:
        time.sleep(0.01)
    server.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(server.pid, 0)
    wall = time.perf_counter() - started
    text = log.read_text()
    if status != 0 or errors:
        sys.exit(f"serve failed: {errors}\n{text[-3000:]}")
    events = int(re.search(r"swarmtel: \d+ lines, (\d+) events", text).group(1))
    return wall, usage.ru_utime + usage.ru_stime, events


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", default="1,2,4,8,16,32,64",
                        help="comma-separated counts of concurrent bridge connections")
    parser.add_argument("--events", type=int, default=1_000_000, help="per run, over all connections")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--otlp", action="store_true", help="also measure with an OTLP output added")
    args = parser.parse_args()
    counts = [int(count) for count in args.connections.split(",")]
    BENCH.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "swarmtel", "--bin", "swarmtel"], cwd=ROOT,
                   check=True)
    guests = subprocess.run(["bash", str(ROOT / "scripts" / "build-guests.sh")], cwd=ROOT, check=True,
                            stdout=subprocess.PIPE, text=True).stdout.strip()
    binary = ROOT / "target" / "release" / "swarmtel"
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discard)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    base = ('[run]\ntestplan = "bench"\nrun_id = "bench"\n'
            f'[[outputs]]\ntype = "json_lines"\npath = "{BENCH / "serve-capacity.ndjson"}"\nexisting = "truncate"\n'
            f'[dead_letter]\npath = "{BENCH / "serve-capacity-dead.ndjson"}"\nexisting = "truncate"\n'
            f'[[plugins]]\npath = "{Path(guests) / "request_stats.wasm"}"\n')
    otlp = (f'[[outputs]]\ntype = "otlp"\nendpoint = "http://127.0.0.1:{receiver.server_address[1]}"\n'
            'export_interval_ms = 1000\n')
    passes = [("JSON lines", base)] + ([("JSON lines + OTLP", base + otlp)] if args.otlp else [])
    results = []
    for count in counts:
        share = args.events // count
        payloads = [request_lines(f"worker-{i}", share) for i in range(count)]
        total = share * count
        for label, text in passes:
            config = BENCH / "serve-capacity.toml"
            config.write_text(text)
            runs = [one_run(binary, config, payloads) for _ in range(args.runs)]
            for _, _, events in runs:
                assert events == total, f"{count} connections: {events} of {total} events arrived"
            results.append((count, label, total, min(w for w, _, _ in runs), min(c for _, c, _ in runs)))
    receiver.shutdown()
    print(f"{args.events:,} request events per run over the connections, best of {args.runs}, "
          "none lost (--overload block)\n")
    print("| connections | outputs | wall | serve CPU | events per second | events per serve CPU-second |")
    print("|---:|---|---:|---:|---:|---:|")
    for count, label, total, wall, cpu in results:
        print(f"| {count} | {label} | {wall:.2f} s | {cpu:.2f} s | {total / wall:,.0f} | {total / cpu:,.0f} |")


if __name__ == "__main__":
    main()
