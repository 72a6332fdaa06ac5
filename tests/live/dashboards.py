"""Checks Grafana dashboards for Loki against real telemetry lines, without Grafana or Loki.

A dashboard is wrong in ways no JSON schema sees: a panel selects a stream label nobody sets
(locust-telemetry's `container="locust-master"` comes from Docker, not from the line), or reads
a field (`telemetry_stats_type`, `unwrap telemetry_value`, an extractFields path
`telemetry.num_requests`) that no line of that stream carries. This module finds every Loki
query of a dashboard and checks it against lines as the JSON-lines output writes them, with
the stream labels the Promtail/Alloy files in `examples/grafana/` give them:

    python3 tests/live/dashboards.py examples/grafana/dashboards/*.json telemetry.ndjson

prints one problem a line and exits 1 if there is any. Stdlib only, Python 3.9+.

The model, kept deliberately small:

- Stream labels come from the line (`stream_labels_of`): `run_id`, `testplan`,
  `telemetry_type`, `telemetry_name` and `source_id` from `telemetry.*`, as
  `examples/grafana/promtail.yaml` extracts them; a line without a run id is dropped, as
  Promtail drops it. `locust_telemetry_docker_labels` is locust-telemetry's own example setup
  instead (a Docker `container` label, no `source_id`), for checking its dashboards.
- A matcher whose value holds a Grafana variable (`$run_id`, `${testplan}`, `[[x]]`) matches
  anything; `=~`/`!~` are full matches, as in Loki.
- `| json` labels are Loki's: nested keys joined with `_`, other characters than
  `[A-Za-z0-9_]` made `_`, null and arrays give no label, and a key that collides with a
  stream label is named `<key>_extracted` (`telemetry.name` is `telemetry_name_extracted`,
  because `telemetry_name` is a stream label).
- A field is named by its flattened key: `telemetry_num_requests` for
  `telemetry.num_requests`, `telemetry_name` for `telemetry.name` (whether a query calls it
  `telemetry_name_extracted` or a transformation's JSON path `telemetry.name`).
- Label filters after the parser (`| telemetry_stats_type="final"`, `| a > 1 and b=~"x.*"`)
  narrow the lines a field must be found in; line filters (`|= "..."`) are not evaluated.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

#: The stream labels `examples/grafana/promtail.yaml` (and `alloy.river`) set from a line.
PROMTAIL_LABELS = ("run_id", "testplan", "telemetry_type", "telemetry_name", "source_id")

Matcher = Tuple[str, str]  # (op, value): op is one of =, !=, =~, !~
Labeler = Callable[[dict], Optional[Dict[str, str]]]


@dataclass
class Query:
    """One Loki query of a dashboard."""

    dashboard: str
    #: Where it is, for messages: "panel 'Total requests' target A", "variable run_id", ...
    where: str
    #: "target", "annotation" or "variable".
    kind: str
    #: The LogQL expression; for a variable, its stream selector ("" for every stream).
    expr: str
    ref_id: Optional[str] = None
    #: The panel a target belongs to (its fieldConfig, transformations and options).
    panel: Optional[dict] = dc_field(default=None, repr=False)
    #: For a label-values variable, the label whose values it lists.
    label: Optional[str] = None
    legend: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Finding queries


def _load(dashboard: Union[str, Path, dict]) -> Tuple[str, dict]:
    if isinstance(dashboard, dict):
        data = dashboard.get("dashboard", dashboard)
        return str(data.get("title") or data.get("uid") or "<dashboard>"), data
    path = Path(dashboard)
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(path), data.get("dashboard", data)  # an API export wraps it in "dashboard"


def _is_loki(datasource) -> bool:
    """A datasource reference that may be Loki: none (the panel's or the default), a name or
    uid (often a variable such as `${DS_LOKI}`), or one whose `type` is `loki`. Only a `type`
    that says otherwise rules a query out."""
    if isinstance(datasource, dict) and datasource.get("type") is not None:
        return datasource["type"] == "loki"
    return True


def _panels(panels: Iterable[dict], trail: str = "") -> Iterable[Tuple[str, dict]]:
    for panel in panels or []:
        title = panel.get("title") or f"#{panel.get('id', '?')}"
        where = f"{trail}{title!r}"
        yield where, panel
        # Rows keep their panels in "panels" when collapsed; library panels may nest too.
        yield from _panels(panel.get("panels") or [], f"{where} > ")


_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((.*)\)\s*$", re.S)
_LABEL_NAMES = re.compile(r"^\s*label_names\s*\((.*)\)\s*$", re.S)


def _variable_query(query) -> Optional[Tuple[str, Optional[str]]]:
    """(stream selector, label or None) of a Loki variable query, or None if it is none."""
    if isinstance(query, dict):
        kind = query.get("type")
        stream = query.get("stream") or ""
        if kind in (1, "1", "labelValues", "LabelValues"):
            return stream, query.get("label") or None
        if kind in (0, "0", "labelNames", "LabelNames"):
            return stream, None
        return None
    if not isinstance(query, str) or not query.strip():
        return None
    match = _LABEL_VALUES.match(query)
    if match:
        inner = match.group(1).strip()
        if inner.startswith("{"):
            end = _selector_end(inner, 0)
            stream, rest = inner[: end + 1], inner[end + 1:]
            label = rest.strip().lstrip(",").strip()
            return stream, label or None
        return "", inner or None
    match = _LABEL_NAMES.match(query)
    if match:
        return match.group(1).strip(), None
    return None


def dashboard_queries(path: Union[str, Path, dict]) -> List[Query]:
    """Every Loki query of a dashboard: panel targets' `expr` (in rows and nested panels too),
    annotations' `expr`, and query variables' `query` (and `definition` when it says something
    else). `path` may also be an already parsed dashboard."""
    name, dashboard = _load(path)
    queries: List[Query] = []
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") != "query" or not _is_loki(variable.get("datasource")):
            continue
        seen = set()
        for source in ("query", "definition"):
            parsed = _variable_query(variable.get(source))
            if parsed is None:
                continue
            stream, label = parsed
            try:
                key = (json.dumps(stream_selectors(stream), sort_keys=True), label)
            except ValueError:
                key = (stream, label)
            if key in seen:
                continue
            seen.add(key)
            suffix = "" if source == "query" else " (definition)"
            queries.append(Query(name, f"variable {variable.get('name')}{suffix}", "variable",
                                 stream, label=label))
    for annotation in (dashboard.get("annotations") or {}).get("list") or []:
        expr = annotation.get("expr") or (annotation.get("target") or {}).get("expr")
        if expr and _is_loki(annotation.get("datasource")):
            queries.append(Query(name, f"annotation {annotation.get('name')!r}", "annotation",
                                 expr))
    for where, panel in _panels(dashboard.get("panels") or []):
        panel_ds = panel.get("datasource")
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if not expr or target.get("hide") is True:
                continue
            if not _is_loki(target.get("datasource", panel_ds)):
                continue
            ref = target.get("refId")
            queries.append(Query(name, f"panel {where} target {ref}", "target", expr,
                                 ref_id=ref, panel=panel, legend=target.get("legendFormat")))
    return queries


# ---------------------------------------------------------------------------------------------
# LogQL, as far as checking needs


_VARIABLE = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]")


def _has_variable(value: str) -> bool:
    return bool(_VARIABLE.search(value))


def _read_string(text: str, start: int) -> Tuple[str, int]:
    """The LogQL string literal at text[start] ("..." with escapes, or `...`) and the index
    after it."""
    quote = text[start]
    i = start + 1
    if quote == "`":
        end = text.find("`", i)
        end = len(text) if end < 0 else end
        return text[i:end], end + 1
    out = []
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out), i + 1


def _selector_end(text: str, start: int) -> int:
    """Index of the `}` closing the selector that opens at text[start]."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if c in "\"`":
            _, i = _read_string(text, i)
            continue
        if c == "}":
            return i
        i += 1
    return len(text) - 1


def _selector_spans(expr: str) -> List[Tuple[int, int]]:
    """(start, end) of every `{...}` stream selector, skipping strings and `${var}`."""
    spans = []
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"`":
            _, i = _read_string(expr, i)
            continue
        if c == "{" and not (i > 0 and expr[i - 1] == "$"):
            end = _selector_end(expr, i)
            spans.append((i, end))
            i = end + 1
            continue
        if c == "$" and i + 1 < len(expr) and expr[i + 1] == "{":
            close = expr.find("}", i)
            i = len(expr) if close < 0 else close + 1
            continue
        i += 1
    return spans


_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*")


def _parse_matchers(body: str) -> Dict[str, Matcher]:
    matchers: Dict[str, Matcher] = {}
    i = 0
    while i < len(body):
        if body[i] in ", \t\r\n":
            i += 1
            continue
        match = _MATCHER.match(body, i)
        if not match or match.end() >= len(body) or body[match.end()] not in "\"`":
            raise ValueError(f"cannot read the stream selector {{{body}}}")
        value, i = _read_string(body, match.end())
        matchers[match.group(1)] = (match.group(2), value)
    return matchers


def stream_selectors(expr: str) -> List[Dict[str, Matcher]]:
    """Each `{...}` stream selector of a query, as {label: (op, value)}."""
    return [_parse_matchers(expr[s + 1:e]) for s, e in _selector_spans(expr)]


def stream_labels(expr: str) -> Dict[str, Matcher]:
    """The labels of the query's stream selector(s), {label: (op, value)}; with several
    selectors (a binary metric query), their union, the first selector winning a clash
    (`stream_selectors` keeps them apart)."""
    merged: Dict[str, Matcher] = {}
    for selector in stream_selectors(expr):
        for label, matcher in selector.items():
            merged.setdefault(label, matcher)
    return merged


def _pipeline_stages(expr: str) -> List[Tuple[str, str]]:
    """(kind, text) of each stage after each selector: kind is the first word (`json`,
    `line_format`, `unwrap`, ...), "filter" for a label filter, "line" for a line filter.
    A stage ends at a top-level `|`, `[` (a range) or an unmatched `)`."""
    stages = []
    for _, end in _selector_spans(expr):
        i = end + 1
        current = []
        depth = 0
        while i <= len(expr):
            c = expr[i] if i < len(expr) else None
            if c is not None and c in "\"`":
                _, j = _read_string(expr, i)
                current.append(expr[i:j])
                i = j
                continue
            stop = c is None or (depth == 0 and (c == "[" or c == ")"))
            if stop or (c == "|" and depth == 0):
                text = "".join(current).strip()
                if text:
                    stages.append(_classify(text))
                current = []
                if stop:
                    break
                i += 1
                continue
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            current.append(c)
            i += 1
    return stages


_STAGE_WORDS = {"json", "logfmt", "regexp", "pattern", "unpack", "line_format", "label_format",
                "unwrap", "keep", "drop", "decolorize", "distinct"}


def _classify(text: str) -> Tuple[str, str]:
    if text[0] in "=~>":  # the `|` of `|=`, `|~`, `|>` was the separator
        return "line", text
    word = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text)
    if word and word.group(0) in _STAGE_WORDS:
        return word.group(0), text[word.end():].strip()
    return "filter", text


def _json_params(stages: List[Tuple[str, str]]) -> Optional[Dict[str, str]]:
    """None if the query has no `| json`; {} for a plain `| json`; {label: flattened path}
    for `| json a="telemetry.b", ...`."""
    params: Optional[Dict[str, str]] = None
    for kind, text in stages:
        if kind != "json":
            continue
        params = params or {}
        for match in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*", text):
            start = match.end()
            if start < len(text) and text[start] in "\"`":
                path, _ = _read_string(text, start)
                params[match.group(1)] = _flat_path(path)
            else:
                params[match.group(1)] = match.group(1)
    return params


def _flat_path(path: str) -> str:
    """A JSON path (`telemetry.num_requests`, `telemetry["a"]`) as Loki's flattened key."""
    parts = re.findall(r'[^.\[\]"\']+', path)
    return "_".join(_sanitize(p) for p in parts)


def _sanitize(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", key)


def _identifiers(text: str) -> Set[str]:
    """Label names a piece of LogQL refers to: identifiers outside strings and `{{.name}}` /
    `{{ name }}` template references inside them."""
    names: Set[str] = set()
    i = 0
    plain = []
    while i < len(text):
        if text[i] in "\"`":
            value, i = _read_string(text, i)
            for template in re.findall(r"\{\{(.*?)\}\}", value, re.S):
                names.update(re.findall(r"\.?\b([A-Za-z_][A-Za-z0-9_]*)\b", template))
            plain.append(" ")
            continue
        plain.append(text[i])
        i += 1
    names.update(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\b", "".join(plain)))
    return names


def _field_of(name: str, stream: Set[str], params: Optional[Dict[str, str]]) -> Optional[str]:
    """The flattened line key a label name refers to after the parser, or None when it is a
    stream label or not a telemetry field."""
    if params:
        return params.get(name)
    if name.endswith("_extracted") and name[: -len("_extracted")] in stream:
        return name[: -len("_extracted")]
    if name in stream or not name.startswith("telemetry_"):
        return None
    return name


def _expr_fields(expr: str, legend: Optional[str] = None) -> Set[str]:
    stages = _pipeline_stages(expr)
    params = _json_params(stages)
    stream = set(PROMTAIL_LABELS) | set(stream_labels(expr))
    names: Set[str] = set()
    for kind, text in stages:
        if kind in ("filter", "unwrap", "line_format", "label_format"):
            names |= _identifiers(text)
    # Grouping (`by (...)` / `without (...)`) and the legend name labels too.
    outside = expr
    for start, end in reversed(_selector_spans(expr)):
        outside = outside[:start] + " " + outside[end + 1:]
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", outside):
        names |= set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", group))
    if legend:
        names |= set(re.findall(r"\{\{\s*\.?([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend))
    fields = {_field_of(n, stream, params) for n in names}
    if params:
        fields |= set(params.values())
    fields.discard(None)
    return {f for f in fields if f}


def _strings(value) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _ref_filter(transformation: dict) -> Optional[Callable[[Optional[str]], bool]]:
    spec = transformation.get("filter")
    if not isinstance(spec, dict) or spec.get("id") != "byRefId":
        return None
    option = str(spec.get("options") or "")
    if len(option) > 1 and option.startswith("/") and option.endswith("/"):
        pattern = re.compile(option[1:-1])
        return lambda ref: ref is not None and bool(pattern.search(ref))
    return lambda ref: ref == option


def _panel_fields(panel: Optional[dict], stream: Set[str]) -> List[Tuple[str, Optional[Callable]]]:
    """(field, refId filter or None) for every field the panel's transformations, fieldConfig
    and options name: extractFields JSON paths, and `telemetry_<field>` label names."""
    if not panel:
        return []
    found: List[Tuple[str, Optional[Callable]]] = []
    for transformation in panel.get("transformations") or []:
        refs = _ref_filter(transformation)
        options = transformation.get("options") or {}
        for item in options.get("jsonPaths") or []:
            if isinstance(item, dict) and item.get("path"):
                found.append((_flat_path(item["path"]), refs))
        for text in _strings(options):
            for name in re.findall(r"\btelemetry_[A-Za-z0-9_]+", text):
                flat = _field_of(name, stream, None)
                if flat:
                    found.append((flat, refs))
    for text in _strings([panel.get("fieldConfig") or {}, panel.get("options") or {}]):
        for name in re.findall(r"\btelemetry_[A-Za-z0-9_]+", text):
            flat = _field_of(name, stream, None)
            if flat:
                found.append((flat, None))
    return found


def json_fields(expr: str, panel: Optional[dict] = None) -> Set[str]:
    """Every field the query or its panel reads from the line after the parser, as its
    flattened key (`telemetry_num_requests`): label filters, `unwrap`, `line_format` and
    `label_format` templates, `by (...)`, and the panel's transformations (extractFields
    JSON paths included), fieldConfig (overrides) and options. A stream label
    (`telemetry_name`) is not a field; `telemetry_name_extracted` is `telemetry_name`."""
    stream = set(PROMTAIL_LABELS) | set(stream_labels(expr))
    fields = _expr_fields(expr)
    fields |= {f for f, _ in _panel_fields(panel, stream)}
    return fields


# ---------------------------------------------------------------------------------------------
# Lines, labels and matching


def stream_labels_of(line: dict) -> Optional[Dict[str, str]]:
    """The stream labels promtail.yaml gives a line, or None when it drops it (no run id)."""
    telemetry = line.get("telemetry")
    if not isinstance(telemetry, dict):
        return None
    labels = {}
    for name in PROMTAIL_LABELS:
        value = telemetry.get(name)
        if value is not None and not isinstance(value, (dict, list)) and str(value) != "":
            labels[name] = _label_text(value)
    return labels if labels.get("run_id") else None


def locust_telemetry_docker_labels(line: dict) -> Optional[Dict[str, str]]:
    """The labels of locust-telemetry's example setup (Docker discovery plus its
    promtail/config.yaml): `container` is `locust-master` or `locust-worker`, from the
    container's name (here from `source_id`), and the json stage gives run_id, testplan,
    telemetry_type, telemetry_name (its `recorder` label reads a key no line has)."""
    labels = stream_labels_of(line)
    if labels is None:
        return None
    source = labels.pop("source_id", "")
    labels["container"] = "locust-master" if source == "master" else (
        "locust-worker" if source.startswith("worker-") else "")
    if not labels["container"]:
        del labels["container"]
    return labels


def _label_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def flatten(line: dict) -> Dict[str, str]:
    """The line as Loki's `| json` sees it: {flattened key: value text}; null values and
    arrays give no key."""
    out: Dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}_{_sanitize(str(key))}" if prefix else _sanitize(str(key)), item)
        elif value is None or isinstance(value, list):
            return
        else:
            out[prefix] = _label_text(value)

    walk("", line)
    return out


def _parsed_labels(line: dict, stream: Dict[str, str],
                   params: Optional[Dict[str, str]]) -> Dict[str, str]:
    """Stream labels plus what the query's parser adds, named as Loki names them."""
    labels = dict(stream)
    if params is None:
        return labels
    flat = flatten(line)
    if params:
        for name, key in params.items():
            if key in flat:
                labels[name] = flat[key]
        return labels
    for key, value in flat.items():
        labels[key + "_extracted" if key in stream else key] = value
    return labels


def _match(op: str, expected: str, actual: Optional[str]) -> bool:
    if _has_variable(expected):
        return True
    actual = actual or ""
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    try:
        found = re.fullmatch(expected, actual, re.S) is not None
    except re.error:
        return True  # a Go-only regex: not ours to judge
    return found if op == "=~" else not found


def selector_matches(selector: Dict[str, Matcher], labels: Dict[str, str]) -> bool:
    return all(_match(op, value, labels.get(name)) for name, (op, value) in selector.items())


def _empty_compatible(op: str, value: str) -> bool:
    if _has_variable(value):
        return False
    return _match(op, value, "")


# A label filter: `a = "x"`, `a=~"x"`, `a > 1.5`, joined by and / or / `,`, in parentheses.
_FILTER_TOKEN = re.compile(r'\s*(?:(\()|(\))|(,)|\b(and|or)\b|([A-Za-z_][A-Za-z0-9_]*)\s*'
                           r'(=~|!~|!=|==|>=|<=|=|>|<)\s*("(?:[^"\\]|\\.)*"|`[^`]*`|[^\s,()]+))')


def _filter_tokens(text: str) -> Optional[list]:
    tokens = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        match = _FILTER_TOKEN.match(text, i)
        if not match:
            return None
        if match.group(1):
            tokens.append("(")
        elif match.group(2):
            tokens.append(")")
        elif match.group(3):
            tokens.append("and")
        elif match.group(4):
            tokens.append(match.group(4))
        else:
            raw = match.group(7)
            quoted = raw[0] in "\"`"
            value = _read_string(raw, 0)[0] if quoted else raw
            tokens.append((match.group(5), match.group(6), value, quoted))
        i = match.end()
    return tokens


def _test(comparison, labels: Dict[str, str]) -> bool:
    name, op, value, quoted = comparison
    if name == "__error__" or _has_variable(value):
        return True
    actual = labels.get(name)
    if quoted or op in ("=~", "!~"):
        return _match("=" if op == "==" else op, value, actual)
    try:  # a number (durations and bytes are not evaluated)
        number = float(value)
    except ValueError:
        return True
    try:
        have = float(actual) if actual not in (None, "") else None
    except ValueError:
        have = None
    if have is None:
        return op == "!="
    return {"=": have == number, "==": have == number, "!=": have != number, ">": have > number,
            ">=": have >= number, "<": have < number, "<=": have <= number}[op]


def _evaluate(tokens: list, labels: Dict[str, str]) -> bool:
    position = 0

    def expression() -> bool:
        nonlocal position
        value = term()
        while position < len(tokens) and tokens[position] == "or":
            position += 1
            right = term()
            value = value or right
        return value

    def term() -> bool:
        nonlocal position
        value = factor()
        while position < len(tokens) and tokens[position] == "and":
            position += 1
            right = factor()
            value = value and right
        return value

    def factor() -> bool:
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "(":
            value = expression()
            position += 1  # ")"
            return value
        if isinstance(token, tuple):
            return _test(token, labels)
        raise ValueError(token)

    try:
        return expression()
    except (IndexError, ValueError):
        return True  # unreadable: do not narrow


def passes_filters(expr: str, line: dict, stream: Dict[str, str]) -> bool:
    """Whether the line passes the query's label filters (line filters are not evaluated)."""
    stages = _pipeline_stages(expr)
    params = _json_params(stages)
    labels = _parsed_labels(line, stream, params)
    for kind, text in stages:
        if kind != "filter":
            continue
        tokens = _filter_tokens(text)
        if tokens and not _evaluate(tokens, labels):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# The check


def _describe(selector: Dict[str, Matcher]) -> str:
    return "{" + ", ".join(f'{k}{op}"{v}"' for k, (op, v) in selector.items()) + "}"


def _why_no_match(selector: Dict[str, Matcher], labelled: List[Tuple[dict, Dict[str, str]]]) -> str:
    alone = [f'{name}{op}"{value}"' for name, (op, value) in selector.items()
             if not any(_match(op, value, labels.get(name)) for _, labels in labelled)]
    if alone:
        return "no line has " + " nor ".join(alone)
    return "no line has all of them at once"


def check(dashboards: Iterable[Union[str, Path, dict]], lines: Iterable[dict],
          labeler: Labeler = stream_labels_of) -> List[str]:
    """Problems of the dashboards' Loki queries against these output lines (dicts, as the
    JSON-lines output writes them); empty when every query finds a line and every field it
    reads. `labeler` gives a line's stream labels, None to drop it (default: promtail.yaml's)."""
    labelled = []
    for line in lines:
        labels = labeler(line)
        if labels is not None:
            labelled.append((line, labels))
    stream_names = set(PROMTAIL_LABELS)
    for _, labels in labelled:
        stream_names |= set(labels)
    problems: List[str] = []
    for dashboard in dashboards:
        queries = dashboard_queries(dashboard)
        by_panel: Dict[int, List[Tuple[Query, List[dict]]]] = {}
        for query in queries:
            prefix = f"{query.dashboard}: {query.where}"
            try:
                selectors = stream_selectors(query.expr)
            except ValueError as error:
                problems.append(f"{prefix}: {error}")
                continue
            if query.kind == "variable":
                candidates = [(line, labels) for line, labels in labelled
                              if all(selector_matches(s, labels) for s in selectors)]
                if selectors and not candidates:
                    problems.append(f"{prefix}: no line matches {query.expr}: "
                                    f"{_why_no_match(selectors[0], labelled)}")
                elif query.label and not any(labels.get(query.label) for _, labels in candidates):
                    problems.append(f"{prefix}: no line{' of ' + query.expr if query.expr else ''}"
                                    f" has the label {query.label!r} it lists")
                continue
            if not selectors:
                problems.append(f"{prefix}: no stream selector in {query.expr!r}")
                continue
            matched: List[dict] = []
            selected_any = False
            for selector in selectors:
                if all(_empty_compatible(op, v) for op, v in selector.values()):
                    problems.append(f"{prefix}: Loki refuses {_describe(selector)}: it needs a "
                                    f"matcher that does not match the empty value")
                selected = [(line, labels) for line, labels in labelled
                            if selector_matches(selector, labels)]
                if not selected:
                    problems.append(f"{prefix}: no line matches {_describe(selector)}: "
                                    f"{_why_no_match(selector, labelled)}")
                    continue
                selected_any = True
                matched += [line for line, labels in selected
                            if passes_filters(query.expr, line, labels)]
            if selected_any and not matched:
                filters = " | ".join(t for k, t in _pipeline_stages(query.expr)
                                     if k == "filter" and not t.startswith("__error__"))
                problems.append(f"{prefix}: lines match its selector but none passes | {filters}")
            if query.kind == "target":
                by_panel.setdefault(id(query.panel), []).append((query, matched))
            if not matched:
                continue
            stages = _pipeline_stages(query.expr)
            fields = _expr_fields(query.expr, query.legend)
            if fields and _json_params(stages) is None:
                problems.append(f"{prefix}: reads {', '.join(sorted(fields))} but has no | json")
                continue
            flat = [flatten(line) for line in matched]
            for name in sorted(fields):
                if not any(name in keys for keys in flat):
                    problems.append(f"{prefix}: no matching line has {_key_name(name)}")
        for entries in by_panel.values():
            panel = entries[0][0].panel
            stream = stream_names | set().union(*(stream_labels(q.expr) for q, _ in entries))
            reported = set()
            for name, refs in _panel_fields(panel, stream):
                lines_here = [line for query, matched in entries
                              if refs is None or refs(query.ref_id) for line in matched]
                if not lines_here or (name, bool(refs)) in reported:
                    continue
                if not any(name in flatten(line) for line in lines_here):
                    reported.add((name, bool(refs)))
                    where = entries[0][0].where.rsplit(" target ", 1)[0]
                    problems.append(f"{entries[0][0].dashboard}: {where}: its transformations or"
                                    f" field config read {_key_name(name)}, which no line of its"
                                    f" queries has")
    return problems


def _key_name(flat: str) -> str:
    if flat.startswith("telemetry_"):
        return f"telemetry.{flat[len('telemetry_'):]} ({flat})"
    return flat


def read_ndjson(path: Union[str, Path]) -> Tuple[List[dict], int]:
    """The JSON objects of an NDJSON file and the count of other lines (skipped)."""
    lines, skipped = [], 0
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            raw = raw.strip()
            if not raw:
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                skipped += 1
                continue
            if isinstance(value, dict):
                lines.append(value)
            else:
                skipped += 1
    return lines, skipped


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Check Grafana dashboards' Loki queries against JSON-lines telemetry.")
    parser.add_argument("dashboards", nargs="+", type=Path, help="dashboard JSON files")
    parser.add_argument("lines", type=Path, help="an NDJSON file of output lines")
    parser.add_argument("--labels", choices=("promtail", "locust-telemetry-docker"),
                        default="promtail",
                        help="how lines get stream labels: examples/grafana/promtail.yaml's "
                             "(default), or locust-telemetry's Docker example (container label)")
    args = parser.parse_args(argv)
    lines, skipped = read_ndjson(args.lines)
    if skipped:
        print(f"note: {skipped} non-JSON lines of {args.lines} skipped", file=sys.stderr)
    labeler = stream_labels_of if args.labels == "promtail" else locust_telemetry_docker_labels
    problems = check(args.dashboards, lines, labeler)
    for problem in problems:
        print(problem)
    queries = sum(len(dashboard_queries(d)) for d in args.dashboards)
    print(f"{len(problems)} problems in {queries} queries of {len(args.dashboards)} dashboards, "
          f"{len(lines)} lines", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
