"""The dashboard checker (tests/live/dashboards.py) on small hand-made dashboards and lines:
each test names a mistake the checker must report, or a correct query it must let pass. The
last tests hold the shipped files to the checker's model: examples/grafana/'s dashboards pass
on lines of every kind the locust-telemetry envelope writes, and promtail.yaml and
config.alloy give exactly the labels the checker derives. No Locust, Grafana or Loki needed.
"""
import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dashboards as d  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "examples" / "grafana"
STATS = "locust.tl.request.metric.stats"


def line(telemetry_name, node="master", run_id="3f2a9c1d", **fields):
    source = {"master": "MasterRunner", "local": "LocalRunner"}.get(node, "WorkerRunner")
    kind = "event" if ".event." in telemetry_name else "metrics"
    return {"time": "2026-12-02T04:00:00.123Z", "level": "INFO",
            "name": "swarmtel.locust-telemetry", "message": f"Recording telemetry {kind}: {telemetry_name}",
            "telemetry": {"telemetry_type": kind, "telemetry_name": telemetry_name, "source": source,
                          "source_id": node, "run_id": run_id, "testplan": "demo", **fields}}


def stats(stats_type, **fields):
    return line(STATS, stats_type=stats_type, **fields)


def dashboard(*panels, variables=(), annotations=()):
    return {"title": "t", "panels": list(panels), "templating": {"list": list(variables)},
            "annotations": {"list": list(annotations)}}


def panel(title, *exprs, **extra):
    targets = [{"refId": chr(ord("A") + i), "expr": e} for i, e in enumerate(exprs)]
    return {"type": "timeseries", "title": title, "datasource": {"type": "loki", "uid": "${DS_LOKI}"},
            "targets": targets, **extra}


def only(problems):
    assert len(problems) == 1, problems
    return problems[0]


LINES = [
    line("locust.tl.event.test.start"),
    stats("current", user_count=10, num_requests=717, percentile_95=23),
    stats("final", user_count=10, num_requests=5163, percentile_95=21),
    stats("endpoint", status="success", method="GET", name="/items", num_requests=1652,
          avg_response_time=10.1),
    stats("endpoint", status="error", method="GET", name="/flaky", error="HTTPError(500)",
          occurrences=58, percentile_95="", percentile_99=""),
    line("locust.tl.system.metric.cpu", value=0.3, unit="percent"),
    line("locust.tl.system.metric.cpu", "worker-0", value=33.6, unit="percent"),
    line("locust.tl.system.metric.network", "worker-0", value=6498779847, unit="MiB",
         direction="recv"),
]


# --- finding queries and reading selectors ---------------------------------------------------


def test_stream_labels_reads_matchers_and_skips_strings_and_variables():
    expr = ('sum by (run_id) (max_over_time({telemetry_name="a,b}", source_id=~"worker-.*", '
            'run_id=~"${run_id}"} | json | line_format "{{.x}} }" | unwrap telemetry_value '
            '[${__interval}]))')
    assert d.stream_labels(expr) == {"telemetry_name": ("=", "a,b}"),
                                     "source_id": ("=~", "worker-.*"),
                                     "run_id": ("=~", "${run_id}")}
    assert d.stream_labels('{a=`raw\\d`, b!="x\\"y"}') == {"a": ("=", "raw\\d"),
                                                           "b": ("!=", 'x"y')}
    assert d.stream_labels("{a!~\"x\"} |= \"{not a selector}\"") == {"a": ("!~", "x")}


def test_nested_panels_in_rows_are_found():
    inner = panel("Inner", '{telemetry_name="x"}')
    deeper = panel("Deeper", '{telemetry_name="y"}')
    row = {"type": "row", "title": "Collapsed row", "collapsed": True,
           "panels": [inner, {"type": "row", "title": "Sub", "panels": [deeper]}]}
    queries = d.dashboard_queries(dashboard(panel("Top", '{telemetry_name="z"}'), row))
    assert [q.where for q in queries] == [
        "panel 'Top' target A",
        "panel 'Collapsed row' > 'Inner' target A",
        "panel 'Collapsed row' > 'Sub' > 'Deeper' target A",
    ]
    assert queries[1].panel is inner
    # ... and a mistake in one of them is reported.
    problem = only(d.check([dashboard(row)], [line("x"), line("z")]))
    assert "'Deeper'" in problem and 'telemetry_name="y"' in problem


def test_variables_annotations_and_other_datasources():
    variables = [
        {"type": "datasource", "name": "DS_LOKI", "query": "loki"},
        {"type": "query", "name": "run_id", "datasource": {"type": "loki", "uid": "${DS_LOKI}"},
         "query": {"type": 1, "label": "run_id", "stream": '{telemetry_name="locust.tl.event.test.start"}'},
         "definition": 'label_values({telemetry_name="locust.tl.event.test.start"}, run_id)'},
        {"type": "query", "name": "prom", "datasource": {"type": "prometheus"}, "query": "label_values(up, job)"},
        {"type": "query", "name": "old", "query": "label_values(testplan)"},
    ]
    annotations = [{"name": "Start", "datasource": {"type": "loki"}, "expr": '{telemetry_name="s"}'},
                   {"name": "builtin", "datasource": {"type": "grafana"}, "builtIn": 1}]
    prom = panel("Prom", "up")
    prom["targets"][0]["datasource"] = {"type": "prometheus"}
    queries = d.dashboard_queries(dashboard(prom, variables=variables, annotations=annotations))
    found = [(q.kind, q.where, q.expr, q.label) for q in queries]
    assert found == [
        ("variable", "variable run_id", '{telemetry_name="locust.tl.event.test.start"}', "run_id"),
        ("variable", "variable old", "", "testplan"),
        ("annotation", "annotation 'Start'", '{telemetry_name="s"}', None),
    ]


def test_a_file_path_is_read(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(dashboard(panel("P", '{telemetry_name="nope"}'))))
    assert [q.where for q in d.dashboard_queries(path)] == ["panel 'P' target A"]
    assert str(path) in only(d.check([path], LINES))


# --- selectors against lines ------------------------------------------------------------------


def test_a_label_no_line_has_is_reported():
    query = '{container="locust-master", telemetry_name="locust.tl.request.metric.stats"} | json'
    problem = only(d.check([dashboard(panel("Total", query))], LINES))
    assert "'Total' target A" in problem
    assert 'no line has container="locust-master"' in problem


def test_locust_telemetry_docker_labels_give_the_container_label():
    query = '{container="locust-worker", telemetry_name="locust.tl.system.metric.cpu"}'
    assert d.check([dashboard(panel("W", query))], LINES,
                   labeler=d.locust_telemetry_docker_labels) == []
    assert d.check([dashboard(panel("W", query))], LINES) != []


def test_regex_selectors_are_full_matches():
    def problems(selector):
        return d.check([dashboard(panel("P", "{" + selector + "}"))], LINES)

    assert problems('telemetry_name="locust.tl.system.metric.cpu", source_id=~"worker-.*"') == []
    assert problems('telemetry_name="locust.tl.system.metric.cpu", source_id=~"master|local"') == []
    assert problems('telemetry_name=~"locust\\\\.tl\\\\.system.*"') == []
    # Not a substring search: "worker" alone matches no "worker-0".
    assert 'no line has source_id=~"worker"' in only(
        problems('source_id=~"worker", telemetry_name=~"locust.*"'))
    assert problems('source_id!~"master|worker-.*", telemetry_name=~"locust.*"') != []
    assert problems('source_id!~"master", telemetry_name=~"locust.*"') == []
    # Both halves of a requirement must hold on the same line.
    problem = only(problems('telemetry_name="locust.tl.event.test.start", source_id="worker-0"'))
    assert "all of them at once" in problem


def test_grafana_variables_match_anything_but_literals_do_not():
    ok = '{telemetry_name="locust.tl.event.test.start", testplan=~"$testplan", run_id=~"${run_id:regex}"}'
    assert d.check([dashboard(panel("P", ok))], LINES) == []
    bad = '{telemetry_name="locust.tl.event.test.start", run_id="deadbeef"}'
    assert 'run_id="deadbeef"' in only(d.check([dashboard(panel("P", bad))], LINES))


def test_lines_without_a_run_id_are_dropped_as_promtail_drops_them():
    no_run = line("locust.tl.event.test.start", run_id="")
    not_telemetry = {"time": "t", "level": "INFO", "name": "x", "message": "m", "run_id": "484247e7"}
    assert d.stream_labels_of(no_run) is None and d.stream_labels_of(not_telemetry) is None
    query = '{telemetry_name="locust.tl.event.test.start"}'
    assert d.check([dashboard(panel("P", query))], [no_run, not_telemetry]) != []
    assert d.stream_labels_of(LINES[0]) == {"run_id": "3f2a9c1d", "testplan": "demo",
                                            "telemetry_type": "event",
                                            "telemetry_name": "locust.tl.event.test.start",
                                            "source_id": "master"}


def test_a_selector_loki_refuses_is_reported():
    problem = only(d.check([dashboard(panel("P", '{source_id=~".*"}'))], LINES))
    assert "Loki refuses" in problem


def test_variable_listing_a_label_no_line_has_is_reported():
    variable = {"type": "query", "name": "node", "query": "label_values({telemetry_name=~\"locust.*\"}, container)"}
    assert "'container'" in only(d.check([dashboard(variables=[variable])], LINES))
    variable["query"] = 'label_values({telemetry_name="locust.tl.event.test.start"}, run_id)'
    assert d.check([dashboard(variables=[variable])], LINES) == []
    variable["query"] = 'label_values({telemetry_name="locust.tl.event.nothing"}, run_id)'
    assert "no line matches" in only(d.check([dashboard(variables=[variable])], LINES))


# --- fields after | json ----------------------------------------------------------------------


def test_json_fields_finds_filters_unwrap_templates_grouping_and_panel_fields():
    expr = ('max_over_time({telemetry_name="s", run_id=~"$run_id"} | json '
            '| telemetry_stats_type="current" and telemetry_num_requests > 0 '
            '| line_format "{{.telemetry_method}} {{ .telemetry_name_extracted }}" '
            '| unwrap telemetry_percentile_95 | __error__="" [$__interval]) '
            'by (run_id, telemetry_status)')
    assert d.json_fields(expr) == {"telemetry_stats_type", "telemetry_num_requests",
                                   "telemetry_method", "telemetry_name",
                                   "telemetry_percentile_95", "telemetry_status"}
    the_panel = {
        "transformations": [
            {"id": "extractFields", "options": {"source": "Line", "jsonPaths": [
                {"alias": "Hits", "path": "telemetry.num_failures"}, {"alias": "At", "path": "time"}]}},
            {"id": "organize", "options": {"renameByName": {"telemetry_avg_response_time": "Avg"}}},
        ],
        "fieldConfig": {"defaults": {}, "overrides": [
            {"matcher": {"id": "byName", "options": "telemetry_user_count"}, "properties": []}]},
    }
    assert d.json_fields('{telemetry_name="s"} | json', the_panel) == {
        "telemetry_num_failures", "time", "telemetry_avg_response_time", "telemetry_user_count"}
    # Stream labels are not fields: telemetry_name after | json is the stream label.
    assert d.json_fields('{telemetry_name="s"} | json | telemetry_name="s" | telemetry_type="x"') == set()


def test_a_json_field_present_passes():
    expr = ('{telemetry_name="locust.tl.request.metric.stats"} | json '
            '| telemetry_stats_type="final" | unwrap telemetry_num_requests')
    assert d.check([dashboard(panel("P", expr))], LINES) == []


def test_an_absent_json_field_is_reported():
    expr = ('{telemetry_name="locust.tl.request.metric.stats"} | json '
            '| telemetry_stats_type="final" | unwrap telemetry_total_rps')
    problem = only(d.check([dashboard(panel("RPS", expr))], LINES))
    assert "'RPS' target A" in problem and "telemetry.total_rps" in problem


def test_a_field_only_on_lines_the_filters_exclude_is_reported():
    # status exists on endpoint rows, not on the final row this query keeps.
    expr = ('{telemetry_name="locust.tl.request.metric.stats"} | json '
            '| telemetry_stats_type="final" | line_format "{{.telemetry_status}}"')
    assert "telemetry.status" in only(d.check([dashboard(panel("P", expr))], LINES))
    # A filter nothing passes is a problem of its own.
    expr = '{telemetry_name="locust.tl.request.metric.stats"} | json | telemetry_stats_type="totals"'
    assert 'none passes | telemetry_stats_type="totals"' in only(
        d.check([dashboard(panel("P", expr))], LINES))
    # Numeric comparisons and or/and are evaluated.
    ok = ('{telemetry_name="locust.tl.request.metric.stats"} | json '
          '| telemetry_num_requests >= 5000 and (telemetry_stats_type="x" or telemetry_stats_type="final")')
    assert d.check([dashboard(panel("P", ok))], LINES) == []
    none = '{telemetry_name="locust.tl.request.metric.stats"} | json | telemetry_num_requests > 6000'
    assert "none passes" in only(d.check([dashboard(panel("P", none))], LINES))


def test_null_is_no_field_as_loki_sees_it():
    lines = [stats("current", percentile_95=None)]
    expr = '{telemetry_name="locust.tl.request.metric.stats"} | json | unwrap telemetry_percentile_95'
    assert "telemetry.percentile_95" in only(d.check([dashboard(panel("P", expr))], lines))
    lines = [stats("current", percentile_95="")]  # an empty string is there
    assert d.check([dashboard(panel("P", expr))], lines) == []


def test_a_name_colliding_with_a_stream_label_is_read_as_extracted():
    good = ('last_over_time({telemetry_name="locust.tl.request.metric.stats"} | json '
            '| telemetry_status="success" | unwrap telemetry_avg_response_time [1h]) '
            'by (telemetry_name_extracted)')
    assert d.check([dashboard(panel("P", good))], LINES) == []
    # telemetry.name only exists on stats rows: grouping CPU lines by it is reported.
    bad = ('max_over_time({telemetry_name="locust.tl.system.metric.cpu"} | json '
           '| unwrap telemetry_value [1m]) by (telemetry_name_extracted)')
    assert "telemetry.name" in only(d.check([dashboard(panel("P", bad))], LINES))


def test_fields_read_without_json_are_reported():
    expr = '{telemetry_name="locust.tl.system.metric.cpu"} | logfmt | unwrap telemetry_value [1m]'
    assert "no | json" in only(d.check([dashboard(panel("P", expr))], LINES))


def test_panel_transformations_are_checked_against_their_queries():
    start = '{telemetry_name="locust.tl.event.test.start"} | json'
    stop_lines = LINES + [line("locust.tl.event.test.stop", end_time="2026-12-02T04:00:10.084Z")]
    stop = '{telemetry_name="locust.tl.event.test.stop"} | json'

    def runs(path, ref=None):
        extract = {"id": "extractFields", "options": {"source": "Line", "jsonPaths": [
            {"alias": "Run", "path": "telemetry.run_id"}, {"alias": "End", "path": path}]}}
        if ref:
            extract["filter"] = {"id": "byRefId", "options": ref}
        return dashboard(panel("Runs", start, stop, transformations=[extract]))

    # end_time is on the stop line (target B): fine for the panel, and for B alone.
    assert d.check([runs("telemetry.end_time")], stop_lines) == []
    assert d.check([runs("telemetry.end_time", "B")], stop_lines) == []
    assert d.check([runs("telemetry.end_time", "/^(?:B)$/")], stop_lines) == []
    # ... but not when the transformation only reads target A's frames.
    assert "telemetry.end_time" in only(d.check([runs("telemetry.end_time", "A")], stop_lines))
    assert "telemetry.ends" in only(d.check([runs("telemetry.ends")], stop_lines))
    # Overrides that name a field are checked too.
    overridden = panel("P", '{telemetry_name="locust.tl.system.metric.cpu"} | json', fieldConfig={
        "defaults": {}, "overrides": [{"matcher": {"id": "byName", "options": "telemetry_bogus"},
                                       "properties": []}]})
    assert "telemetry.bogus" in only(d.check([dashboard(overridden)], LINES))


def test_main_prints_problems_and_exits_1(tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(dashboard(panel("G", '{telemetry_name="locust.tl.event.test.start"}'))))
    bad.write_text(json.dumps(dashboard(panel("B", '{container="locust-master", telemetry_name="x"}'))))
    lines = tmp_path / "lines.ndjson"
    lines.write_text("not json\n" + "\n".join(json.dumps(x) for x in LINES) + "\n")
    assert d.main([str(good), str(lines)]) == 0
    assert d.main([str(good), str(bad), str(lines)]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "container" in out and str(bad) in out


# --- the shipped files --------------------------------------------------------------------------


def every_kind_of_line(source="master", workers=("worker-0",)):
    """One line of each record locust-telemetry's JSON recorder (and swarmtel's envelope)
    writes, with the field types seen in a real locust-telemetry 2.1.2 run."""
    totals = dict(method="", name="Aggregated", num_requests=5163, num_failures=58,
                  min_response_time=1.0, max_response_time=84.0, current_rps=371.3,
                  current_fail_per_sec=4.2, avg_response_time=6.27, median_response_time=2,
                  total_rps=368.2, total_fail_per_sec=4.13, avg_content_length=158.4,
                  percentile_95=21, percentile_99=30)
    endpoint = dict(totals, method="GET", name="/items")
    lines = [
        line("locust.tl.event.test.start", source),
        line("locust.tl.event.spawn.complete", source, user_count=10),
        line(STATS, source, stats_type="current", user_count=10, **totals),
        line("locust.tl.event.test.stop", source, end_time="2026-12-02T04:00:10.084Z"),
        line(STATS, source, stats_type="final", user_count=10, **totals),
        line(STATS, source, stats_type="endpoint", status="error", method="GET", name="/flaky",
             error="HTTPError('500 Server Error')", occurrences=58, first_seen=1796183994.39,
             last_seen=1796184008.0, percentile_95="", percentile_99=""),
        line(STATS, source, stats_type="endpoint", status="success", **endpoint),
    ]
    for node in (source,) + tuple(workers):
        lines += [line("locust.tl.system.metric.cpu", node, value=12.5, unit="percent"),
                  line("locust.tl.system.metric.mem", node, value=67.2, unit="MiB"),
                  line("locust.tl.system.metric.network", node, value=6498778463, unit="MiB",
                       direction="sent"),
                  line("locust.tl.system.metric.network", node, value=9098193207, unit="MiB",
                       direction="recv")]
    return lines


# The Loki dashboards (the OTel one reads Prometheus: tests/live/promdashboards.py checks it).
SHIPPED = sorted(p for p in (GRAFANA / "dashboards").glob("*.json") if "otel" not in p.name)


def test_the_shipped_dashboards_pass_on_a_distributed_run():
    assert [p.name for p in SHIPPED] == ["locust-telemetry.json", "test-runs.json"]
    assert d.check(SHIPPED, every_kind_of_line()) == []


def test_the_shipped_dashboards_pass_on_a_standalone_run_but_for_the_worker_count():
    problems = d.check(SHIPPED, every_kind_of_line("local", workers=()))
    assert len(problems) == 1 and "'Workers'" in problems[0], problems


def test_the_shipped_dashboards_select_nodes_by_source_id_only():
    for query in (q for path in SHIPPED for q in d.dashboard_queries(path)):
        labels = set(d.stream_labels(query.expr))
        assert "container" not in labels, query.where
        assert labels <= set(d.PROMTAIL_LABELS), (query.where, labels)
        if query.kind != "variable":
            assert "source_id" in labels, query.where
    run_id = [q for q in d.dashboard_queries(GRAFANA / "dashboards" / "locust-telemetry.json")
              if q.where == "variable run_id"]
    assert len(run_id) == 1 and run_id[0].label == "run_id"
    assert d.stream_labels(run_id[0].expr)["telemetry_name"] == ("=", "locust.tl.event.test.start")


def test_promtail_and_alloy_give_the_labels_the_checker_derives():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((GRAFANA / "promtail.yaml").read_text())
    stages = config["scrape_configs"][0]["pipeline_stages"]
    expressions = next(s["json"]["expressions"] for s in stages if "json" in s)
    labels = next(s["labels"] for s in stages if "labels" in s)
    timestamp = next(s["timestamp"] for s in stages if "timestamp" in s)
    assert set(labels) == set(d.PROMTAIL_LABELS)
    assert {k: expressions[k] for k in labels} == {k: f"telemetry.{k}" for k in d.PROMTAIL_LABELS}
    assert expressions[timestamp["source"]] == "time"  # top level, not telemetry.time
    assert any(s.get("match", {}).get("action") == "drop" and 'run_id=""' in s["match"]["selector"]
               for s in stages)

    alloy = (GRAFANA / "config.alloy").read_text()
    json_block = re.search(r"stage\.json \{(.*?)\n  \}", alloy, re.S).group(1)
    pairs = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', json_block))
    assert {k: pairs[k] for k in d.PROMTAIL_LABELS} == {k: f"telemetry.{k}" for k in d.PROMTAIL_LABELS}
    assert pairs["time"] == "time"
    label_block = re.search(r"stage\.labels \{(.*?)\n  \}", alloy, re.S).group(1)
    assert set(re.findall(r"(\w+)\s*=\s*\"\"", label_block)) == set(d.PROMTAIL_LABELS)
    assert re.search(r'stage\.timestamp \{\s*source = "time"', alloy)
    assert re.search(r'selector\s*=\s*"\{job=\\"swarmtel\\", run_id=\\"\\"\}"', alloy)
