"""Checks Grafana dashboards for Prometheus against a real scrape, without Grafana or Prometheus.

A Prometheus dashboard goes wrong where no JSON schema looks: a panel names a series nobody
exports (locust-telemetry's `locust_tl_request_metric_success_milliseconds_count`, where
swarmtel exports `..._seconds_count`), selects a label value no series has
(`event="locust.tl.event.test.stop"` in a run that never stopped), or groups by a label the
series do not carry (`sum by (le)` over a `_sum`). This module finds every PromQL query of a
dashboard and checks it against an exposition as `swarmtel`'s `prometheus` output serves it:

    curl -s http://127.0.0.1:9464/metrics > metrics.txt
    python3 tests/live/promdashboards.py examples/grafana/dashboards/locust-telemetry-otel.json metrics.txt

prints one problem a line and exits 1 if there is any. Stdlib only, Python 3.9+.

The model, kept deliberately small:

- Queries are panel targets' `expr` (rows and nested panels too), annotations' `expr`, and
  query variables (`label_values(metric{...}, label)`, `label_values(label)`,
  `label_names(...)`, `query_result(expr)`, `metrics(regex)`) whose datasource may be
  Prometheus: none, a name or uid (often `${DS_PROMETHEUS}`), or a `type` of `prometheus`.
- Every metric a query names must have a sample in the exposition whose labels satisfy the
  selector's matchers. A value holding a Grafana variable (`$run_id`, `${x:regex}`,
  `[[x]]`) matches anything; `=~`/`!~` are full matches, as in Prometheus.
- Every label a query names in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`,
  `group_left (...)`/`group_right (...)` or `label_values(..., label)` must be on a sample the
  query selects. `by`/`without` of an aggregation are held to the selectors inside that
  aggregation; the others to every selector of the query. `le` counts only on `_bucket`
  samples (a histogram's `_sum` and `_count` have none).
- Nothing is evaluated: an `or vector(0)` branch, an empty result of a binary operation, or a
  label lost to an inner aggregation are not seen.
"""
from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from dashboards import _load, _panels  # reading a dashboard and its panels, as for Loki

Matcher = Tuple[str, str]  # (op, value): op is one of =, !=, =~, !~
Sample = Tuple[str, Dict[str, str]]

# ---------------------------------------------------------------------------------------------
# Finding queries


def _is_prometheus(datasource) -> bool:
    """A datasource reference that may be Prometheus: none (the panel's or the default), a
    name or uid (often a variable such as `${DS_PROMETHEUS}`), or one whose `type` is
    `prometheus`. Only a `type` that says otherwise rules a query out (`datasource` is
    Grafana's "Mixed", whose targets say their own)."""
    if isinstance(datasource, dict) and datasource.get("type") is not None:
        return datasource["type"] in ("prometheus", "datasource")
    return True


def _variable_exprs(variable: dict) -> List[str]:
    exprs = []
    for source in ("query", "definition"):
        value = variable.get(source)
        if isinstance(value, dict):  # Grafana's Prometheus variable editor
            text = value.get("query")
            if not text and value.get("label"):
                metric = value.get("metric") or ""
                text = f"label_values({metric}, {value['label']})" if metric else \
                    f"label_values({value['label']})"
            value = text
        if isinstance(value, str) and value.strip():
            exprs.append(value.strip())
    unique = []
    for expr in exprs:
        if re.sub(r"\s+", "", expr) not in {re.sub(r"\s+", "", e) for e in unique}:
            unique.append(expr)
    return unique


def prometheus_queries(path: Union[str, Path, dict]) -> List[Tuple[str, str]]:
    """(where, expr) of every Prometheus query of a dashboard: query variables' `query` (and
    their `definition` when it says something else), annotations' `expr`, and panel targets'
    `expr`, in rows and nested panels too. `path` may also be an already parsed dashboard."""
    _, dashboard = _load(path)
    queries: List[Tuple[str, str]] = []
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") != "query" or not _is_prometheus(variable.get("datasource")):
            continue
        for n, expr in enumerate(_variable_exprs(variable)):
            suffix = "" if n == 0 else " (definition)"
            queries.append((f"variable {variable.get('name')}{suffix}", expr))
    for annotation in (dashboard.get("annotations") or {}).get("list") or []:
        expr = annotation.get("expr") or (annotation.get("target") or {}).get("expr")
        if expr and _is_prometheus(annotation.get("datasource")):
            queries.append((f"annotation {annotation.get('name')!r}", expr))
    for where, panel in _panels(dashboard.get("panels") or []):
        panel_ds = panel.get("datasource")
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                continue
            if not _is_prometheus(target.get("datasource") or panel_ds):
                continue
            queries.append((f"panel {where} target {target.get('refId')}", expr))
    return queries


# ---------------------------------------------------------------------------------------------
# PromQL, as far as checking needs

_VARIABLE = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\]")

#: Words that are never metric names where they stand (keywords are case-insensitive in
#: PromQL). Functions and aggregators are known by the `(` after them, so they need no list.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                   "v": "\v", "\\": "\\", "'": "'", '"': '"'}


def _has_variable(value: str) -> bool:
    return bool(_VARIABLE.search(value))


def _read_string(text: str, start: int) -> Tuple[str, int]:
    """The PromQL string literal at text[start] ("..." or '...' with Go's escapes, `...` raw)
    and the index after it. An escape PromQL refuses (`"\\."` written as `"\\."` in the
    dashboard's PromQL, i.e. a lone backslash before a dot) raises ValueError."""
    quote = text[start]
    i = start + 1
    if quote == "`":
        end = text.find("`", i)
        if end < 0:
            raise ValueError(f"unterminated string at {start}")
        return text[i:end], end + 1
    out = []
    while i < len(text) and text[i] != quote:
        c = text[i]
        if c == "\n":
            raise ValueError(f"newline in the string at {start}")
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif nxt in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[nxt]
            digits = text[i + 2:i + 2 + width]
            if not re.fullmatch(r"[0-9A-Fa-f]{%d}" % width, digits):
                raise ValueError(f"bad escape \\{nxt}{digits} in a string")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        elif nxt and nxt in "01234567":
            digits = text[i + 1:i + 4]
            if not re.fullmatch(r"[0-7]{3}", digits):
                raise ValueError(f"bad escape \\{digits} in a string")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise ValueError(f"unknown escape sequence \\{nxt} in a string (PromQL wants \\\\{nxt})")
    if i >= len(text):
        raise ValueError(f"unterminated string at {start}")
    return "".join(out), i + 1


@dataclass
class _Token:
    kind: str  # ident, string, number, var, range, matchers, (, ), ",", op
    text: str
    start: int
    end: int
    matchers: Optional[Dict[str, Matcher]] = None
    quoted_name: Optional[str] = None


def _parse_matchers(body: str) -> Tuple[Dict[str, Matcher], Optional[str]]:
    """{label: (op, value)} of the inside of `{...}`, and a quoted metric name if it has one
    (`{"my.metric", a="b"}`, Prometheus 3)."""
    matchers: Dict[str, Matcher] = {}
    name = None
    i = 0
    while i < len(body):
        if body[i] in ", \t\r\n":
            i += 1
            continue
        if body[i] in "\"'`":
            label, i = _read_string(body, i)
        else:
            match = _IDENT.match(body, i)
            if not match:
                raise ValueError(f"cannot read the selector {{{body}}}")
            label, i = match.group(0), match.end()
        while i < len(body) and body[i] in " \t\r\n":
            i += 1
        op = re.match(r"=~|!~|!=|=", body[i:])
        if not op:
            if name is None and label and body[i:i + 1] in (",", ""):
                name = label  # a quoted metric name
                continue
            raise ValueError(f"cannot read the selector {{{body}}}")
        i += len(op.group(0))
        while i < len(body) and body[i] in " \t\r\n":
            i += 1
        if i >= len(body) or body[i] not in "\"'`":
            raise ValueError(f"cannot read the selector {{{body}}}")
        value, i = _read_string(body, i)
        matchers[label] = (op.group(0), value)
    return matchers, name


def _closing(text: str, start: int, open_: str, close: str) -> int:
    """Index of the `close` that balances text[start] == open_, skipping strings."""
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            _, i = _read_string(text, i)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced {open_} at {start}")


def _tokens(expr: str) -> List[_Token]:
    tokens: List[_Token] = []
    i = 0
    n = len(expr)
    while i < n:
        c = expr[i]
        start = i
        if c.isspace():
            i += 1
        elif c == "#":  # a comment, to the end of the line
            end = expr.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'`":
            value, i = _read_string(expr, i)
            tokens.append(_Token("string", value, start, i))
        elif c == "$":
            if expr.startswith("${", i):
                close = expr.find("}", i)
                i = n if close < 0 else close + 1
            else:
                match = re.compile(r"\$[A-Za-z0-9_]*").match(expr, i)
                i = match.end()
            tokens.append(_Token("var", expr[start:i], start, i))
        elif c == "[":
            if expr.startswith("[[", i) and tokens and tokens[-1].end == i and \
                    tokens[-1].kind == "ident":
                close = expr.find("]]", i)  # a legacy variable glued to a name
                i = n if close < 0 else close + 2
                tokens.append(_Token("var", expr[start:i], start, i))
                continue
            i = _closing(expr, i, "[", "]") + 1  # a range, a subquery, or [[var]]
            tokens.append(_Token("range", expr[start:i], start, i))
        elif c == "{":
            close = _closing(expr, i, "{", "}")
            matchers, name = _parse_matchers(expr[i + 1:close])
            i = close + 1
            tokens.append(_Token("matchers", expr[start:i], start, i, matchers, name))
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            match = re.compile(r"0[xX][0-9A-Fa-f]+|[0-9.]+(?:[eE][+-]?[0-9]+)?[A-Za-z0-9_.]*").match(expr, i)
            i = match.end()
            tokens.append(_Token("number", expr[start:i], start, i))
        elif _IDENT.match(expr, i):
            match = _IDENT.match(expr, i)
            i = match.end()
            tokens.append(_Token("ident", match.group(0), start, i))
        elif c in "(),":
            i += 1
            tokens.append(_Token(c, c, start, i))
        elif c in "})]":
            raise ValueError(f"unbalanced {c} at {i}")
        else:
            i += 1
            tokens.append(_Token("op", c, start, i))
    return tokens


@dataclass
class Parsed:
    """What a query reads: its selectors, and the labels its clauses name."""

    #: (metric name, {label: (op, value)}); the name is "" for a selector without one, which
    #: then says what it selects with `__name__` or its other matchers.
    selectors: List[Tuple[str, Dict[str, Matcher]]] = dc_field(default_factory=list)
    #: (label, clause, indices of the selectors it must be found on, None for any sample).
    labels: List[Tuple[str, str, Optional[List[int]]]] = dc_field(default_factory=list)


def _split_args(text: str) -> List[str]:
    """The top-level comma-separated arguments of a function's inside."""
    args, depth, current, i = [], 0, [], 0
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            _, j = _read_string(text, i)
            current.append(text[i:j])
            i = j
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            args.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    args.append("".join(current))
    return [a.strip() for a in args]


_GRAFANA_CALL = re.compile(r"^\s*(label_values|label_names|query_result|metrics)\s*\((.*)\)\s*$", re.S)


def parse(expr: str) -> Parsed:
    """The selectors and grouping labels of a PromQL query, or of a Grafana variable query
    (`label_values(...)`, `label_names(...)`, `query_result(...)`, `metrics(...)`). Raises
    ValueError on what it cannot read."""
    call = _GRAFANA_CALL.match(expr)
    if call:
        function, inner = call.group(1), call.group(2).strip()
        if function == "query_result":
            return parse(inner)
        if function == "metrics":
            return Parsed([("", {"__name__": ("=~", inner)})] if inner else [("", {})], [])
        if function == "label_names":
            return parse(inner) if inner else Parsed()
        args = _split_args(inner)
        if len(args) == 1:  # label_values(label): any series
            if not _IDENT.fullmatch(args[0]):
                raise ValueError(f"cannot read the label of {expr.strip()}")
            return Parsed([], [(args[0], "label_values", None)])
        label = args[-1]
        if not _IDENT.fullmatch(label):
            raise ValueError(f"cannot read the label of {expr.strip()}")
        parsed = parse(",".join(args[:-1]))
        parsed.labels.append((label, "label_values", list(range(len(parsed.selectors)))))
        return parsed
    return _parse_promql(expr)


def _parse_promql(expr: str) -> Parsed:
    tokens = _tokens(expr)
    # Matching parentheses, by token index.
    pair: Dict[int, int] = {}
    stack: List[int] = []
    for index, token in enumerate(tokens):
        if token.kind == "(":
            stack.append(index)
        elif token.kind == ")":
            if not stack:
                raise ValueError(f"unbalanced ) at {token.start}")
            pair[stack.pop()] = index
    if stack:
        raise ValueError(f"unbalanced ( at {tokens[stack[-1]].start}")
    opening = {close: open_ for open_, close in pair.items()}

    selectors: List[Tuple[str, Dict[str, Matcher]]] = []
    where: List[int] = []  # token index of each selector
    pending: List[Tuple[str, str, int, Optional[Tuple[int, int]]]] = []
    glued = set()
    for index in range(len(tokens) - 1):
        a, b = tokens[index], tokens[index + 1]
        if a.end == b.start and {a.kind, b.kind} == {"ident", "var"}:
            glued.update((index, index + 1))

    index = 0
    while index < len(tokens):
        token = tokens[index]
        nxt = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.kind == "ident":
            word = token.text.lower()
            if word in _GROUPING:
                if nxt is None or nxt.kind != "(":
                    index += 1  # group_left without a list
                    continue
                close = pair[index + 1]
                names = []
                for inner in tokens[index + 2:close]:
                    if inner.kind == "ident":
                        names.append(inner.text)
                    elif inner.kind == "string":
                        names.append(inner.text)
                    elif inner.kind != ",":
                        raise ValueError(f"cannot read {token.text}(...) at {token.start}")
                scope = None
                if word in ("by", "without"):
                    before = tokens[index - 1] if index > 0 else None
                    if before is not None and before.kind == ")":
                        scope = (opening[index - 1], index - 1)  # sum(...) by (x)
                    elif close + 1 < len(tokens) and tokens[close + 1].kind == "(":
                        scope = (close + 1, pair[close + 1])  # sum by (x) (...)
                for name in names:
                    pending.append((name, word, index, scope))
                index = close + 1
                continue
            if nxt is not None and (nxt.kind == "(" or (
                    nxt.kind == "ident" and nxt.text.lower() in ("by", "without"))):
                index += 1  # a function or an aggregation (`sum by (x) (...)`)
                continue
            if word in _KEYWORDS or index in glued:
                index += 1  # a keyword, or a name made with a variable (`foo_$x`)
                continue
            matchers: Dict[str, Matcher] = {}
            if nxt is not None and nxt.kind == "matchers":
                matchers = dict(nxt.matchers or {})
                index += 1
            selectors.append((token.text, matchers))
            where.append(index)
            index += 1
            continue
        if token.kind == "matchers":
            if index > 0 and tokens[index - 1].kind == "var":
                index += 1  # the matchers of a name made with a variable (`${metric}{a="b"}`)
                continue
            matchers = dict(token.matchers or {})
            name = token.quoted_name or ""
            if not name and matchers.get("__name__", ("", ""))[0] == "=" and \
                    not _has_variable(matchers["__name__"][1]):
                name = matchers.pop("__name__")[1]
            selectors.append((name, matchers))
            where.append(index)
        index += 1

    labels: List[Tuple[str, str, Optional[List[int]]]] = []
    for name, clause, _, scope in pending:
        if scope is None:
            inside = list(range(len(selectors)))
        else:
            inside = [n for n, at in enumerate(where) if scope[0] < at < scope[1]]
        labels.append((name, clause, inside))
    return Parsed(selectors, labels)


def selectors(expr: str) -> List[Tuple[str, Dict[str, Matcher]]]:
    """Every selector of a query: (metric name, {label: (op, value)}). Functions, aggregations,
    keywords, numbers, strings and Grafana variables (`$__rate_interval`) are not metrics."""
    return parse(expr).selectors


def grouping_labels(expr: str) -> List[Tuple[str, str]]:
    """(label, clause) for every label a query names in by/without/on/ignoring/group_left/
    group_right, or as the label of `label_values(...)`."""
    return [(label, clause) for label, clause, _ in parse(expr).labels]


# ---------------------------------------------------------------------------------------------
# The exposition


def _read_label_value(text: str, start: int) -> Tuple[str, int]:
    """A quoted value of the text format (escapes \\\\, \\", \\n) and the index after it."""
    if text[start] != '"':
        raise ValueError("a label value must be quoted")
    out = []
    i = start + 1
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(text[i])
        i += 1
    if i >= len(text):
        raise ValueError("unterminated label value")
    return "".join(out), i + 1


def parse_exposition(text: str) -> List[Sample]:
    """(name, {label: value}) of every sample of a Prometheus text format or OpenMetrics
    exposition; comments, HELP/TYPE/UNIT lines and `# EOF` are skipped. A line it cannot read
    raises ValueError naming the line."""
    samples: List[Sample] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            name = ""
            i = 0
            if line[0] != "{":
                match = _IDENT.match(line)
                if not match:
                    raise ValueError("no metric name")
                name, i = match.group(0), match.end()
            labels: Dict[str, str] = {}
            if i < len(line) and line[i] == "{":
                i += 1
                while True:
                    while i < len(line) and line[i] in " ,":
                        i += 1
                    if i >= len(line):
                        raise ValueError("unterminated label set")
                    if line[i] == "}":
                        i += 1
                        break
                    if line[i] == '"':
                        key, i = _read_label_value(line, i)
                    else:
                        match = _IDENT.match(line, i)
                        if not match:
                            raise ValueError("bad label name")
                        key, i = match.group(0), match.end()
                    while i < len(line) and line[i] == " ":
                        i += 1
                    if i < len(line) and line[i] == "=":
                        value, i = _read_label_value(line, i + 1)
                        labels[key] = value
                    elif not name:
                        name = key  # OpenMetrics 2 / Prometheus 3: {"quoted.name", a="b"}
                    else:
                        raise ValueError("a label without a value")
            rest = line[i:].split()
            if not name or not rest:
                raise ValueError("no metric name or no value")
            float(rest[0].replace("Inf", "inf").replace("NaN", "nan"))
        except ValueError as error:
            raise ValueError(f"exposition line {number}: {error}: {raw!r}") from None
        samples.append((name, labels))
    return samples


# ---------------------------------------------------------------------------------------------
# The check


def _match(op: str, expected: str, actual: Optional[str]) -> bool:
    if _has_variable(expected):
        return True
    actual = actual or ""  # an absent label is the empty value
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    try:
        found = re.fullmatch(expected, actual, re.S) is not None
    except re.error:
        return True  # an RE2-only regex: not ours to judge
    return found if op == "=~" else not found


def _satisfies(sample: Sample, matchers: Dict[str, Matcher]) -> bool:
    name, labels = sample
    return all(_match(op, value, name if label == "__name__" else labels.get(label))
               for label, (op, value) in matchers.items())


def _describe(name: str, matchers: Dict[str, Matcher]) -> str:
    body = ", ".join(f'{k}{op}"{v}"' for k, (op, v) in matchers.items())
    return f"{name}{{{body}}}" if body or not name else name


def _why(matchers: Dict[str, Matcher], pool: List[Sample]) -> str:
    alone = [f'{label}{op}"{value}"' for label, (op, value) in matchers.items()
             if not any(_satisfies(s, {label: (op, value)}) for s in pool)]
    if alone:
        return "none has " + " nor ".join(alone)
    return "none has all of them at once"


def check(dashboards: Iterable[Union[str, Path, dict]], exposition_text: str) -> List[str]:
    """Problems of the dashboards' Prometheus queries against this exposition; empty when
    every selector finds a sample and every label a clause names is on the samples it is
    about."""
    samples = parse_exposition(exposition_text)
    by_name: Dict[str, List[Sample]] = {}
    for sample in samples:
        by_name.setdefault(sample[0], []).append(sample)
    problems: List[str] = []
    for dashboard in dashboards:
        title, _ = _load(dashboard)
        for where, expr in prometheus_queries(dashboard):
            prefix = f"{title}: {where}"
            try:
                parsed = parse(expr)
            except ValueError as error:
                problems.append(f"{prefix}: cannot read the query: {error}")
                continue
            selected: List[List[Sample]] = []
            for name, matchers in parsed.selectors:
                pool = by_name.get(name, []) if name else samples
                if name and not pool:
                    close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.75)
                    hint = f" (the exposition has {close[0]})" if close else ""
                    problems.append(f"{prefix}: no series named {name}{hint}")
                    selected.append([])
                    continue
                if not name and all(_match(op, v, "") and not _has_variable(v)
                                    for op, v in matchers.values()):
                    problems.append(f"{prefix}: Prometheus refuses {_describe(name, matchers)}: a "
                                    f"selector without a name needs a matcher that does not "
                                    f"match the empty value")
                hit = [s for s in pool if _satisfies(s, matchers)]
                if not hit:
                    problems.append(f"{prefix}: no sample matches {_describe(name, matchers)}: "
                                    f"of the {len(pool)} {name or 'exposition'} samples, "
                                    f"{_why(matchers, pool)}")
                selected.append(hit)
            for label, clause, scope in parsed.labels:
                if label == "__name__":
                    continue
                if scope is None:
                    pool = samples
                else:
                    pool = [s for n in scope for s in selected[n]]
                    if not pool:
                        continue  # nothing selected there: reported above, or nothing to check
                if not any(label in labels and (label != "le" or name.endswith("_bucket"))
                           for name, labels in pool):
                    names = sorted({name for name, _ in pool})
                    about = ", ".join(names) if len(names) <= 3 else f"{len(names)} series"
                    if label == "le":
                        problems.append(f"{prefix}: {clause}({label}) but no _bucket series is "
                                        f"selected (selected: {about})")
                    else:
                        problems.append(f"{prefix}: {clause}({label}) names a label no sample of "
                                        f"{about} has")
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Check Grafana dashboards' Prometheus queries against a /metrics scrape.")
    parser.add_argument("dashboards", nargs="+", type=Path, help="dashboard JSON files")
    parser.add_argument("exposition", type=Path,
                        help="a Prometheus/OpenMetrics text exposition (a saved GET /metrics)")
    args = parser.parse_args(argv)
    text = args.exposition.read_text(encoding="utf-8")
    try:
        problems = check(args.dashboards, text)
    except ValueError as error:
        print(f"{args.exposition}: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    queries = sum(len(prometheus_queries(d)) for d in args.dashboards)
    print(f"{len(problems)} problems in {queries} queries of {len(args.dashboards)} dashboards, "
          f"{len(parse_exposition(text))} samples", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
