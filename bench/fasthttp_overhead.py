"""What telemetry costs Locust at FastHttpUser rates: requests per second and CPU per request
of one Locust test (a master and one worker, FastHttpUser, no wait time, GET / against
bench/fast_target.py on loopback), with each kind of telemetry, alternating, several rounds in
one run.

    scripts/python-env.sh && cargo build --release -p swarmtel && scripts/build-guests.sh
    target/py-venv/bin/python bench/fasthttp_overhead.py [--rounds 3] [--run-time 10] [--users 20]
        [--variants none,swarmtel,lt-otel,lt-json] [--user-class fast|http]

Variants:
- none: the locustfile without any telemetry import;
- swarmtel: `import swarmtel_locust`, the bridge starting `swarmtel serve` (release build)
  with request-stats and custom-telemetry (examples/swarmtel.toml's first two plugins);
- swarmtel-events: custom-telemetry only and `[request_metrics] enabled = false`: nothing
  takes requests, so the runtime tells the bridges not to send them and they stop listening
  (issue 12, item 2);
- lt-otel: locust-telemetry 2.1.2's OTel recorder, exporting over OTLP/gRPC to a receiver in
  this process that accepts and drops every export;
- lt-json: locust-telemetry 2.1.2's JSON recorder (periodic stats only; it logs to stderr).

rps = requests / (last request - first request), from Locust's --json-file. CPU = user +
system time of every Locust process and what they waited for (swarmtel serve included; the
target and the OTLP receiver not), per request. Each round runs every variant, in an order
rotated per round; the summary prints medians and each variant against none.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from concurrent import futures
from pathlib import Path

from bridge_overhead import rps  # requests and rps from Locust's --json-file

ROOT = Path(__file__).resolve().parents[1]
GUESTS = ROOT / "target" / "guests" / "wasm32-wasip2" / "release"

LOCUSTFILE = '''
from locust import {user_class}, constant, task
{telemetry}

class Bench({user_class}):
    wait_time = constant(0)

    @task
    def index(self):
        self.client.get("/")
'''

TELEMETRY = {
    "none": "",
    "swarmtel": "import swarmtel_locust  # noqa: F401",
    "swarmtel-events": "import swarmtel_locust  # noqa: F401",
    "lt-otel": "from locust_telemetry import entrypoint\nentrypoint.setup_telemetry()",
    "lt-json": "from locust_telemetry import entrypoint\nentrypoint.setup_telemetry()",
}


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def otlp_receiver():
    """An OTLP/gRPC metrics receiver that accepts and drops every export; its port."""
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

    class Drop(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request, context):
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Drop(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def swarmtel_config(work: Path, requests: bool) -> Path:
    """custom-telemetry (test start and stop), and with ``requests`` request-stats too;
    without, no recorder takes requests and the built-in request metrics are off, so the
    bridges do not listen to them."""
    config = work / "swarmtel.toml"
    config.write_text(
        '[run]\ntestplan = "bench"\n'
        f'[[outputs]]\ntype = "json_lines"\npath = "{work / "telemetry.ndjson"}"\n'
        f'[dead_letter]\npath = "{work / "dead.ndjson"}"\n'
        f'[[plugins]]\npath = "{GUESTS / "custom_telemetry.wasm"}"\nroles = ["master", "worker"]\n'
        '[plugins.options]\ncustom-option = "bench"\n'
        + (f'[[plugins]]\npath = "{GUESTS / "request_stats.wasm"}"\n' if requests
           else '[request_metrics]\nenabled = false\n'))
    return config


def run(variant: str, work: Path, args, host: str, otlp_port: int, index: int) -> tuple:
    locustfile = work / f"{variant.replace('-', '_')}_locustfile.py"
    json_base = work / f"run-{index}"
    port = free_port()
    common = [sys.executable, "-m", "locust", "-f", str(locustfile)]
    extra = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "SWARMTEL_"))}
    swarmtel = variant.startswith("swarmtel")
    if swarmtel:
        extra = ["--swarmtel-config", str(swarmtel_config(work, requests=variant == "swarmtel")),
                 "--swarmtel-bin", str(ROOT / "target" / "release" / "swarmtel")]
        # Both processes: the worker streams its requests to the master's runtime.
        env["LOCUST_SWARMTEL_ENDPOINT"] = f"unix:{work / 'serve.sock'}"
    if variant.startswith("lt-"):
        env["LOCUST_TESTPLAN_NAME"] = "bench"
        env["LOCUST_ENABLE_TELEMETRY_RECORDER"] = variant[3:]
        env["LOCUST_OTEL_EXPORTER_OTLP_ENDPOINT"] = f"127.0.0.1:{otlp_port}"
        env["LOCUST_OTEL_EXPORTER_OTLP_INSECURE"] = "true"
    master_log, worker_log = work / f"run-{index}-master.log", work / f"run-{index}-worker.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(master_log, "w") as mlog, open(worker_log, "w") as wlog:
        master = subprocess.Popen(
            common + ["--headless", "--master", "--expect-workers", "1", "--master-bind-port", str(port),
                      "-u", str(args.users), "-r", str(args.users), "-t", f"{args.run_time}s", "--host", host,
                      "--json-file", str(json_base), "--only-summary", *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=mlog)
        worker = subprocess.Popen(common + ["--worker", "--master-port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=wlog)
        master.wait(timeout=600)
        worker.wait(timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if master.returncode not in (0, 1):
        sys.exit(f"{variant}: locust failed ({master.returncode}); see {master_log}")
    if swarmtel:
        text = master_log.read_text()
        if "(1 master, 1 worker, 0 standalone)" not in text:
            sys.exit(f"the worker's bridge did not reach the runtime; see {master_log} and {worker_log}")
        if "0 by bridges, 0 here, 0 lost in transit" not in text:
            sys.exit(f"the swarmtel run lost events; see {master_log}")
    requests, rate = rps(Path(f"{json_base}.json"))
    return requests, rate, cpu / requests * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--run-time", type=int, default=10)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--variants", default="none,swarmtel,lt-otel,lt-json")
    parser.add_argument("--user-class", choices=("fast", "http"), default="fast")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = set(variants) - set(TELEMETRY)
    if unknown or "none" not in variants:
        sys.exit(f"variants are {sorted(TELEMETRY)}, none included; got {args.variants}")
    user_class = "FastHttpUser" if args.user_class == "fast" else "HttpUser"
    receiver, otlp_port = otlp_receiver()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for variant in variants:
            path = work / f"{variant.replace('-', '_')}_locustfile.py"
            path.write_text(LOCUSTFILE.format(user_class=user_class, telemetry=TELEMETRY[variant]))
        target = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fast_target.py"), "0"],
                                  stdout=subprocess.PIPE, text=True)
        host = "http://" + target.stdout.readline().split()[-1]
        rates = {v: [] for v in variants}
        cpu_us = {v: [] for v in variants}
        index = 0
        try:
            for round_ in range(args.rounds):
                order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
                for variant in order:
                    index += 1
                    requests, rate, cpu = run(variant, work, args, host, otlp_port, index)
                    rates[variant].append(rate)
                    cpu_us[variant].append(cpu)
                    print(f"round {round_ + 1} {variant:9s}: {requests:8d} requests, {rate:9.1f} rps, "
                          f"{cpu:6.1f} CPU-us/request", flush=True)
        finally:
            target.terminate()
            target.wait()
            receiver.stop(0)
    base_rps, base_cpu = statistics.median(rates["none"]), statistics.median(cpu_us["none"])
    print(f"\n{user_class}, {args.users} users, master + 1 worker, {args.rounds} rounds of {args.run_time} s, medians:")
    print("| telemetry | requests/s | vs none | CPU µs per request |")
    print("|---|---:|---:|---:|")
    for variant in variants:
        rate, cpu = statistics.median(rates[variant]), statistics.median(cpu_us[variant])
        delta = "" if variant == "none" else f" ({cpu - base_cpu:+.1f})"
        print(f"| {variant} | {rate:,.0f} | {rate / base_rps:.1%} | {cpu:.1f}{delta} |")


if __name__ == "__main__":
    main()
