"""docs/deploy.md's files hold: the collector config parses and wires an OTLP/HTTP receiver on
the port the swarmtel config sends to, through a metrics and a logs pipeline, to exporters it
defines; the swarmtel config passes `swarmtel check`; and what the runtime exports over OTLP
becomes, by the collector's Prometheus naming rules, exactly the families (and labels) of the
runtime's own Prometheus output, so one dashboard serves both paths.
"""
import json
import re
import signal
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import yaml

from test_live_locust import GUESTS, ROOT, free_port, swarmtel_bin  # noqa: F401 (fixture)
from test_otlp import STREAM, Receiver, attributes

DEPLOY = ROOT / "docs" / "deploy"


def test_the_collector_config_wires_what_swarmtel_sends(swarmtel_bin):
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    swarmtel = tomllib.loads((DEPLOY / "swarmtel.toml").read_text())
    otlp = [o for o in swarmtel["outputs"] if o["type"] == "otlp"]
    assert len(otlp) == 1
    sent_port = int(re.fullmatch(r"http://[^/:]+:(\d+)", otlp[0]["endpoint"]).group(1))
    listen = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert int(listen.rsplit(":", 1)[1]) == sent_port
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"metrics", "logs"}
    for name, pipeline in pipelines.items():
        assert pipeline["receivers"] == ["otlp"], name
        assert pipeline["processors"][0] == "memory_limiter", "refuse before memory runs out"
        for kind in ("processors", "exporters"):
            for component in pipeline[kind]:
                assert component in collector[kind], (name, component)
    remote_write = collector["exporters"]["prometheusremotewrite"]
    assert remote_write["resource_to_telemetry_conversion"]["enabled"] is True

    check = subprocess.run([swarmtel_bin, "check", "--config", str(DEPLOY / "swarmtel.toml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "otlp http://otel-gateway:4318" in check.stdout, check.stdout


# The collector translator's words for the UCUM units used here; `1` and annotations such as
# `{order}` add nothing.
UNIT_WORDS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}


def collector_prometheus_name(metric):
    """The Prometheus name the collector's translator gives an OTLP metric: dots become `_`,
    the unit's word is appended (`s` → `_seconds`, `By` → `_bytes`), a monotonic sum appends
    `_total`."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", metric.name)
    unit = UNIT_WORDS[re.sub(r"\{[^}]*\}", "", metric.unit) or "1"]
    if unit:
        name += "_" + unit
    if metric.WhichOneof("data") == "sum" and metric.sum.is_monotonic:
        name += "_total"
    return name


def test_otlp_through_a_collector_names_what_the_prometheus_output_names(tmp_path, swarmtel_bin):
    scrape_port = free_port()
    receiver = Receiver()
    config = tmp_path / "swarmtel.toml"
    config.write_text(
        '[run]\ntestplan = "deploy"\nrun_id = "run-deploy"\n'
        f'[[outputs]]\ntype = "otlp"\nendpoint = "http://127.0.0.1:{receiver.port}"\n'
        f'[[outputs]]\ntype = "prometheus"\nlisten = "127.0.0.1:{scrape_port}"\nlinger_seconds = 30\n'
        # A plugin's own metric points (units, typed attributes) follow the same rules.
        f'[[plugins]]\npath = "{GUESTS / "metrics_maker.wasm"}"\n'
    )
    proc = subprocess.Popen([swarmtel_bin, "replay", "--config", str(config), str(STREAM)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            if "serving the final metrics" in line:
                break
            assert time.monotonic() < deadline
        with urllib.request.urlopen(f"http://127.0.0.1:{scrape_port}/metrics", timeout=5) as response:
            exposition = response.read().decode()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        receiver.close()
    families = {}
    for line in exposition.splitlines():
        match = re.match(r"# TYPE (\S+) (\S+)", line)
        if match:
            families[match.group(1)] = match.group(2)
    samples = [line for line in exposition.splitlines() if line and not line.startswith("#")]

    exported = receiver.metrics[-1]
    seen = set()
    for resource_metrics in exported.resource_metrics:
        resource = attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                name = collector_prometheus_name(metric)
                family = name.removesuffix("_total")
                assert family in families, (metric.name, name, sorted(families))
                kind = metric.WhichOneof("data")
                assert families[family] == {"sum": "counter", "gauge": "gauge", "histogram": "histogram"}[kind]
                seen.add(family)
                # The labels the collector makes (attributes, and run_id/testplan from the
                # resource) are those of the Prometheus output's series.
                for point in getattr(metric, kind).data_points:
                    labels = {re.sub(r"[^a-zA-Z0-9_]", "_", k): str(v).lower() if isinstance(v, bool) else v
                              for k, v in attributes(point.attributes).items()}
                    if "run_id" in resource:
                        labels.update(run_id=resource["run_id"], testplan=resource["testplan"])
                    suffix = {"sum": "_total", "gauge": "", "histogram": "_count"}[kind]
                    wanted = [f'{k}="{v}"' for k, v in labels.items()]
                    assert any(s.startswith(family + suffix + ("{" if labels else " ")) and all(w in s for w in wanted)
                               for s in samples), (family, labels)
    assert {"locust_client_duration_seconds", "locust_client_duration_percentile_seconds",
            "locust_users_count", "swarmtel_events", "maker_requests", "maker_duration_seconds",
            "maker_response_size_bytes", "maker_endpoints"} <= seen
    assert seen == set(families), set(families) - seen
