"""The Prometheus dashboard checker (tests/live/promdashboards.py) on small hand-made dashboards
and expositions: each test names a mistake the checker must report, or a correct query it must
let pass. The last tests hold the shipped OTel dashboard to a real scrape of swarmtel's
prometheus output (tests/live/data/swarmtel-otel-metrics.txt: master + 1 worker,
enable-telemetry-recorder = "json,otel", mid-run), and show that locust-telemetry 2.1.2's own
otel-dashboard.json does not fit it. No Locust, Grafana or Prometheus needed.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import promdashboards as p  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OURS = ROOT / "examples" / "grafana" / "dashboards" / "locust-telemetry-otel.json"
CAPTURE = Path(__file__).resolve().parent / "data" / "swarmtel-otel-metrics.txt"
MIRROR = Path("/work/.mirror/platform-crew+locust-telemetry/repo")
THEIRS = "examples/local/grafana/dashboards/otel-dashboard.json"

EXPOSITION = """\
# HELP req_seconds Response times
# TYPE req_seconds histogram
# UNIT req_seconds seconds
req_seconds_bucket{le="0.1",run_id="r1",endpoint="/items",source_id="worker-0"} 3
req_seconds_bucket{le="+Inf",run_id="r1",endpoint="/items",source_id="worker-0"} 4
req_seconds_sum{run_id="r1",endpoint="/items",source_id="worker-0"} 0.25
req_seconds_count{run_id="r1",endpoint="/items",source_id="worker-0"} 4
# TYPE events counter
events_total{run_id="r1",event="locust.tl.event.test.start",source_id="master"} 1
events_total{run_id="r1",event="locust.tl.event.spawn.complete",source_id="master"} 1
# TYPE cpu_percent gauge
cpu_percent{run_id="r1",source_id="master"} 5.0
cpu_percent{run_id="r1",source_id="worker-0"} 2.5
cpu_percent{run_id="r2",source_id="master"} 7.0
# TYPE empty_family counter
# EOF
"""


def dashboard(*panels, variables=(), annotations=()):
    return {"title": "t", "panels": list(panels), "templating": {"list": list(variables)},
            "annotations": {"list": list(annotations)}}


def panel(title, *exprs, **extra):
    targets = [{"refId": chr(ord("A") + i), "expr": e} for i, e in enumerate(exprs)]
    return {"type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
            "targets": targets, **extra}


def problems_of(*exprs, exposition=EXPOSITION):
    return p.check([dashboard(panel("P", *exprs))], exposition)


def only(problems):
    assert len(problems) == 1, problems
    return problems[0]


# --- the exposition ----------------------------------------------------------------------------


def test_parse_exposition_reads_labels_escapes_and_skips_comments():
    text = (
        '# HELP a A metric, with "quotes"\n'
        "# TYPE a gauge\n"
        "a 1\n"
        'b{x="a\\"b",y="back\\\\slash",z="new\\nline", empty=""} 2 1700000000000\n'
        'c_bucket{le="+Inf" , k="v",} +Inf\n'
        '{"dotted.name", k="v"} NaN\n'
        "\n"
        "# EOF\n"
    )
    assert p.parse_exposition(text) == [
        ("a", {}),
        ("b", {"x": 'a"b', "y": "back\\slash", "z": "new\nline", "empty": ""}),
        ("c_bucket", {"le": "+Inf", "k": "v"}),
        ("dotted.name", {"k": "v"}),
    ]
    with pytest.raises(ValueError, match="line 2"):
        p.parse_exposition('ok 1\nbroken{a="x} 1\n')


# --- reading PromQL ----------------------------------------------------------------------------


def test_functions_keywords_and_variables_are_not_metric_names():
    expr = ('histogram_quantile(0.95, sum by (le) (rate(req_seconds_bucket{run_id=~"$run_id"}'
            '[$__rate_interval]))) * 1000 or vector(0) # a comment naming not_a_metric\n'
            '+ on (run_id) group_left (source_id) max without (endpoint) (deriv(cpu_percent[5m] offset 1m))'
            ' and bool topk(3, count_over_time(events_total{event!~"x|y"}[${__range}] @ start()))'
            ' unless absent(label_replace(up{job="a,b}"}, "dst", "$1", "src", "(.*)"))')
    assert p.selectors(expr) == [
        ("req_seconds_bucket", {"run_id": ("=~", "$run_id")}),
        ("cpu_percent", {}),
        ("events_total", {"event": ("!~", "x|y")}),
        ("up", {"job": ("=", "a,b}")}),
    ]
    assert p.grouping_labels(expr) == [("le", "by"), ("run_id", "on"), ("source_id", "group_left"),
                                       ("endpoint", "without")]
    # Aggregations are not metrics, before or after their clause, in any case.
    assert p.selectors("SUM BY (a) (x) + count(y) by (b)") == [("x", {}), ("y", {})]
    # A name made with a variable is nobody's to check; a selector without a name is kept.
    assert p.selectors('foo_$suffix{a="b"} + ${metric}{c="d"} + {__name__=~"req_.*", e="f"}') == [
        ("", {"__name__": ("=~", "req_.*"), "e": ("=", "f")})]
    assert p.selectors('{__name__="cpu_percent"}') == [("cpu_percent", {})]


def test_the_checker_passes_functions_when_only_the_metrics_exist():
    expr = ('histogram_quantile(0.99, sum by (le, endpoint) (rate(req_seconds_bucket[$__rate_interval])))'
            ' or vector(1) # avoid division by zero\n'
            '/ scalar(sum(increase(req_seconds_count[5m]))) + time() - timestamp(cpu_percent)')
    assert problems_of(expr) == []


def test_promql_strings_are_decoded_and_bad_escapes_reported():
    assert p.selectors(r'x{a="l\\.t\"q", b=`raw\.`, c=' + "'s\\'q'}") == [
        ("x", {"a": ("=", 'l\\.t"q'), "b": ("=", "raw\\."), "c": ("=", "s'q")})]
    problem = only(problems_of(r'events_total{event=~"locust\.tl.*"}'))
    assert "cannot read the query" in problem and "escape" in problem


# --- metrics and matchers ----------------------------------------------------------------------


def test_a_missing_metric_is_reported_with_the_nearest_name():
    problem = only(problems_of("sum(rate(req_milliseconds_count[5m]))"))
    assert "'P' target A" in problem and "no series named req_milliseconds_count" in problem
    assert "req_seconds_count" in problem
    # A family with HELP/TYPE but no sample is as good as missing.
    assert "no series named empty_family_total" in only(problems_of("empty_family_total"))
    # Each selector is checked, not only the first.
    assert "nope" in only(problems_of("cpu_percent / nope"))


def test_a_matcher_no_sample_satisfies_is_reported():
    problem = only(problems_of('events_total{event="locust.tl.event.test.stop"}'))
    assert 'event="locust.tl.event.test.stop"' in problem and "no sample matches" in problem
    assert problems_of('events_total{event="locust.tl.event.test.start"}') == []
    # Both matchers must hold on one sample.
    assert problems_of('cpu_percent{run_id="r1", source_id="worker-0"}') == []
    problem = only(problems_of('cpu_percent{run_id="r2", source_id="worker-0"}'))
    assert "all of them at once" in problem
    # A label no sample has is the empty value: = "" matches, != "" does not.
    assert problems_of('cpu_percent{absent=""}') == []
    assert "absent" in only(problems_of('cpu_percent{absent!=""}'))


def test_regex_matchers_are_full_matches():
    assert problems_of('cpu_percent{source_id=~"worker-.*"}') == []
    assert problems_of('cpu_percent{source_id=~"master|local"}') == []
    assert 'source_id=~"worker"' in only(problems_of('cpu_percent{source_id=~"worker"}'))
    assert problems_of('cpu_percent{source_id!~"master|worker-.*"}') != []
    assert problems_of('cpu_percent{source_id!~"master"}') == []
    assert problems_of('cpu_percent{source_id!="master"}') == []
    assert problems_of('events_total{event=~"locust\\\\.tl\\\\.event\\\\.test\\\\.(start|stop)"}') == []
    assert problems_of('events_total{event=~"locust\\\\.tl\\\\.event\\\\.test\\\\.stop"}') != []
    # A selector without a name: __name__ is matched too, and it must not match everything.
    assert problems_of('sum(rate({__name__=~"req_seconds_(count|sum)", run_id="r1"}[5m]))') == []
    assert "req_x" in only(problems_of('{__name__=~"req_x"}'))
    assert "Prometheus refuses" in only(problems_of('{source_id=~".*"}'))


def test_grafana_variables_match_anything_but_literals_do_not():
    ok = 'cpu_percent{run_id=~"$run_id", source_id=~"${node:regex}", x="[[legacy]]", y!="$y"}'
    assert problems_of(ok) == []
    assert 'run_id="deadbeef"' in only(problems_of('cpu_percent{run_id="deadbeef"}'))


# --- labels the query names ---------------------------------------------------------------------


def test_a_label_in_by_that_no_sample_has_is_reported():
    problem = only(problems_of("sum by (status_code) (rate(req_seconds_count[5m]))"))
    assert "by(status_code)" in problem and "req_seconds_count" in problem
    assert problems_of("sum by (endpoint, source_id) (rate(req_seconds_count[5m]))") == []
    # without(), on(), ignoring() and group_left() are held to the same rule.
    assert "without(nope)" in only(problems_of("sum without (nope) (cpu_percent)"))
    assert "on(nope)" in only(problems_of("cpu_percent * on (nope) cpu_percent"))
    assert "ignoring(nope)" in only(problems_of("cpu_percent / ignoring (nope) cpu_percent"))
    assert "group_left(nope)" in only(
        problems_of("cpu_percent * on (run_id) group_left (nope) events_total"))
    # by() after the aggregation's argument is read too.
    assert "by(nope)" in only(problems_of("sum(cpu_percent) by (nope)"))


def test_by_is_held_to_the_selectors_its_aggregation_reads():
    # endpoint exists, but on req_seconds_count, not on cpu_percent which this sum reads.
    problem = only(problems_of("sum by (endpoint) (cpu_percent) / on () group_left sum(req_seconds_count)"))
    assert "by(endpoint)" in problem and "cpu_percent" in problem
    assert problems_of("sum by (endpoint) (req_seconds_count) / on () group_left sum(cpu_percent)") == []


def test_le_counts_only_on_bucket_series():
    assert problems_of("histogram_quantile(0.5, sum by (le) (rate(req_seconds_bucket[5m])))") == []
    problem = only(problems_of("histogram_quantile(0.5, sum by (le) (rate(req_seconds_sum[5m])))"))
    assert "by(le)" in problem and "_bucket" in problem
    fake = EXPOSITION + 'odd_gauge{le="1"} 1\n'
    assert "by(le)" in only(problems_of("sum by (le) (odd_gauge)", exposition=fake))


# --- variables, rows and datasources -------------------------------------------------------------


def variable(name, query, **extra):
    return {"type": "query", "name": name,
            "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, "query": query, **extra}


def test_label_values_variables_are_checked():
    def check(*variables):
        return p.check([dashboard(variables=list(variables))], EXPOSITION)

    good = variable("run_id", {"qryType": 1, "query": 'label_values(events_total{event=~".*start"}, run_id)',
                               "refId": "PrometheusVariableQueryEditor-VariableQuery"},
                    definition='label_values(events_total{event=~".*start"},run_id)')
    assert check(good) == []
    assert p.prometheus_queries(dashboard(variables=[good])) == [
        ("variable run_id", 'label_values(events_total{event=~".*start"}, run_id)')]
    # The label it lists must be on the series it reads.
    problem = only(check(variable("testplan", "label_values(events_total, testplan)")))
    assert "variable testplan" in problem and "label_values(testplan)" in problem
    # ... and the series must exist and match.
    assert "no series named runs_total" in only(check(variable("x", "label_values(runs_total, run_id)")))
    assert 'event="stop"' in only(check(variable("x", 'label_values(events_total{event="stop"}, run_id)')))
    # label_values(label) reads any series; a differing definition is checked on its own.
    assert check(variable("x", "label_values(endpoint)")) == []
    assert "label_values(nope)" in only(check(variable("x", "label_values(nope)")))
    both = variable("x", "label_values(events_total, run_id)", definition="label_values(cpu_percent, event)")
    assert "variable x (definition)" in only(check(both))
    # query_result(), metrics() and the editor's structured form.
    assert check(variable("x", "query_result(sum by (source_id) (cpu_percent))")) == []
    assert "by(nope)" in only(check(variable("x", "query_result(sum by (nope) (cpu_percent))")))
    assert check(variable("x", "metrics(req_seconds_.*)")) == []
    assert "req_minutes" in only(check(variable("x", "metrics(req_minutes_.*)")))
    assert check(variable("x", {"qryType": 1, "label": "run_id", "metric": "events_total"})) == []


def test_nested_rows_annotations_and_other_datasources():
    inner = panel("Inner", "cpu_percent")
    deeper = panel("Deeper", "missing_metric")
    row = {"type": "row", "title": "Collapsed row", "collapsed": True,
           "panels": [inner, {"type": "row", "title": "Sub", "panels": [deeper]}]}
    loki = panel("Logs", '{telemetry_name="x"}')
    loki["datasource"] = {"type": "loki", "uid": "${DS_LOKI}"}
    mixed = panel("Mixed", "cpu_percent", "events_total")
    mixed["datasource"] = {"type": "datasource", "uid": "-- Mixed --"}
    mixed["targets"][1]["datasource"] = {"type": "loki"}
    untyped = {"type": "stat", "title": "Untyped", "targets": [{"refId": "A", "expr": "cpu_percent"},
                                                              {"refId": "B", "expr": ""}]}
    annotations = [{"name": "Starts", "datasource": {"type": "prometheus"}, "expr": "events_total"},
                   {"name": "Builtin", "datasource": {"type": "grafana"}, "builtIn": 1},
                   {"name": "Loki", "datasource": {"type": "loki"}, "expr": '{a="b"}'}]
    variables = [{"type": "datasource", "name": "DS_PROMETHEUS", "query": "prometheus"},
                 {"type": "query", "name": "lk", "datasource": {"type": "loki"},
                  "query": "label_values({a=\"b\"}, c)"}]
    board = dashboard(panel("Top", "events_total"), row, loki, mixed, untyped,
                      variables=variables, annotations=annotations)
    assert [where for where, _ in p.prometheus_queries(board)] == [
        "annotation 'Starts'",
        "panel 'Top' target A",
        "panel 'Collapsed row' > 'Inner' target A",
        "panel 'Collapsed row' > 'Sub' > 'Deeper' target A",
        "panel 'Mixed' target A",
        "panel 'Untyped' target A",
    ]
    problem = only(p.check([board], EXPOSITION))
    assert "'Collapsed row' > 'Sub' > 'Deeper' target A" in problem and "missing_metric" in problem


def test_a_file_path_is_read_and_main_prints_problems(tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(dashboard(panel("G", "cpu_percent"))))
    bad.write_text(json.dumps({"dashboard": dashboard(panel("B", "sum by (nope) (cpu_percent)"))}))
    exposition = tmp_path / "metrics.txt"
    exposition.write_text(EXPOSITION)
    assert p.main([str(good), str(exposition)]) == 0
    assert p.main([str(good), str(bad), str(exposition)]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "by(nope)" in out and str(bad) in out
    broken = tmp_path / "broken.txt"
    broken.write_text('x{a="1} 1\n')
    assert p.main([str(good), str(broken)]) == 2


# --- the shipped dashboard and a real scrape ------------------------------------------------------


def test_the_capture_has_the_plugin_families_under_swarmtels_names():
    names = {name for name, _ in p.parse_exposition(CAPTURE.read_text())}
    for family in ("locust_tl_request_metric_success_seconds_bucket",
                   "locust_tl_request_metric_error_seconds_count",
                   "locust_tl_user_metric_count", "locust_tl_system_metric_cpu_percent",
                   "locust_tl_system_metric_mem_bytes", "locust_tl_system_metric_network_bytes",
                   "locust_tl_event_test_events_total", "locust_client_duration_seconds_bucket"):
        assert family in names
    assert not any("milliseconds" in n or n.endswith("_ratio") for n in names)


def test_the_shipped_otel_dashboard_passes_on_a_real_scrape():
    assert p.check([OURS], CAPTURE.read_text()) == []


def test_the_shipped_otel_dashboard_reads_only_the_plugins_series_of_the_chosen_runs():
    board = json.loads(OURS.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["testplan"]["query"]["query"] == \
        "label_values(locust_tl_event_test_events_total, testplan)"
    assert variables["run_id"]["query"]["query"] == \
        'label_values(locust_tl_event_test_events_total{testplan=~"$testplan"}, run_id)'
    queries = p.prometheus_queries(OURS)
    panels = [(where, expr) for where, expr in queries if where.startswith("panel ")]
    assert len(panels) > 30
    for where, expr in panels:
        for name, matchers in p.selectors(expr):
            assert name.startswith("locust_tl_"), (where, name)
            assert matchers.get("testplan") == ("=~", "$testplan"), where
            if "'Test runs'" not in where and "'Runs in progress'" not in where:
                assert matchers.get("run_id") == ("=~", "$run_id"), where
    # Every panel and target says its datasource, so the Loki checker leaves them alone.
    for _, panel_ in p._panels(board["panels"]):
        if panel_["type"] != "row":
            assert panel_["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
            assert all(t["datasource"] == panel_["datasource"] for t in panel_["targets"])


def test_the_shipped_otel_dashboard_shows_latency_in_seconds():
    board = json.loads(OURS.read_text())
    timed = 0
    for _, panel_ in p._panels(board["panels"]):
        exprs = " ".join(t["expr"] for t in panel_.get("targets") or [])
        if "_seconds_sum" in exprs or "_seconds_bucket" in exprs:
            timed += 1
            if panel_["type"] == "table":
                units = {o["matcher"]["options"]: o["properties"][0]["value"]
                         for o in panel_["fieldConfig"]["overrides"]}
                assert set(units.values()) == {"s"}, units
            else:
                assert panel_["fieldConfig"]["defaults"]["unit"] == "s", panel_["title"]
            assert "* 1000" not in exprs and "/ 1000" not in exprs
    assert timed >= 8


def their_dashboard():
    if not MIRROR.exists() or shutil.which("git") is None:
        pytest.skip(f"no locust-telemetry mirror at {MIRROR}")
    shown = subprocess.run(["git", "--git-dir", str(MIRROR), "show", f"HEAD:{THEIRS}"],
                           capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip(f"{THEIRS} not in the mirror: {shown.stderr.strip()}")
    return json.loads(shown.stdout)


def test_their_otel_dashboard_fails_on_the_same_scrape():
    theirs = their_dashboard()
    problems = p.check([theirs], CAPTURE.read_text())
    text = "\n".join(problems)
    for name in ("locust_tl_request_metric_success_milliseconds_bucket",
                 "locust_tl_request_metric_success_milliseconds_count",
                 "locust_tl_request_metric_error_milliseconds_sum",
                 "locust_tl_user_metric_count_ratio"):
        assert f"no series named {name}" in text, name
    assert "(the exposition has locust_tl_request_metric_success_seconds_bucket)" in text
    # What the two names do not explain: a run that has not stopped has no stop event, and
    # this run had no CPU warning.
    rest = [x for x in problems if "_milliseconds_" not in x and "_count_ratio" not in x]
    assert len(rest) == 2 and all("no sample matches" in x for x in rest), rest
    # Its variables and system panels fit swarmtel's series as they are.
    assert not any("variable" in x or "_system_metric_" in x for x in problems)
