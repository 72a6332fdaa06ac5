"""Event items and their JSON line encoding.

The encoding is exactly the one of ``examples/capture/locustfile.py`` and
``schemas/event-stream.schema.json``: ``event``, ``role``, ``node``, ``time``, then the
hook's arguments. Listeners build cheap *items* (tuples); the flusher encodes them.

Items:

* ``("request", time, request_type, name, response_time, response_length, exception,
  exception_type, start_time, url, status_code, context)`` (see :func:`request_item`)
* ``(event, time, fields)`` for every other event, ``fields`` a dict of JSON-ready values.
"""
from __future__ import annotations

import json
import math
import time as _time
import traceback
from typing import Any, Dict, Optional, Tuple

MAX_LINE = 1024 * 1024  # protocol limit, newline excluded

_dumps = json.JSONEncoder(separators=(",", ":")).encode
# json's own string encoder (the C one when available): what json.dumps uses for str.
_string = getattr(json.encoder, "c_encode_basestring_ascii", None) or json.encoder.py_encode_basestring_ascii


class LineTooLong(ValueError):
    """An encoded event line exceeds the protocol's 1 MiB limit."""


def _json_safe(obj: Any, default: Any) -> Any:
    try:
        json.dumps(obj)
        return obj
    except (TypeError, ValueError):
        return default


def request_item(request_type, name, response_time, response_length, response=None, context=None,
                 exception=None, start_time=None, url=None) -> Tuple:
    """Build the cheap tuple the ``request`` listener buffers (no JSON, no I/O)."""
    status = getattr(response, "status_code", None) if response is not None else None
    return ("request", _time.time(), request_type, name, response_time, response_length,
            str(exception) if exception is not None else None, exception_type(exception),
            start_time, url, status, context)


def exception_type(exception: Any) -> Optional[str]:
    """The class name of a request's exception, such as ``ConnectionError`` (what Locust's
    ``--otel`` puts in ``error.type``); ``None`` when there is none or it is not an exception
    (a plain failure text)."""
    if isinstance(exception, BaseException):
        return type(exception).__name__
    return None


def event_item(event: str, **fields: Any) -> Tuple[str, float, Dict[str, Any]]:
    """Build the item of a non-request event; ``fields`` must already be JSON-ready."""
    return (event, _time.time(), fields)


def _request_fields(item: Tuple) -> Dict[str, Any]:
    (_, _, request_type, name, response_time, response_length, exception, error_type,
     start_time, url, status, context) = item
    fields = {
        "request_type": request_type,
        "name": name,
        "response_time": float(response_time) if response_time is not None else None,
        "response_length": int(response_length or 0),
        "exception": exception,
    }
    if error_type is not None:
        fields["exception_type"] = error_type
    fields.update({
        "start_time": start_time,
        "url": str(url) if url is not None else None,
        "status_code": int(status) if status is not None else None,
        "context": _json_safe(context or {}, {}),
    })
    return fields


def to_record(item: Tuple, role: str, node: str) -> Dict[str, Any]:
    """The JSON object of one item, keys in the capture locustfile's order."""
    rec = {"event": item[0], "role": role, "node": node, "time": item[1]}
    if item[0] == "request":
        rec.update(_request_fields(item))
    else:
        rec.update(item[2])
    return rec


def encode_line(item: Tuple, role: str, node: str) -> bytes:
    """Encode one item as a UTF-8 JSON line ending in ``\\n``; raise :class:`LineTooLong`
    past 1 MiB."""
    if item[0] == "request":
        fast = _fast_request_line(item, role, node)
        if fast is not None:
            return fast
    line = _dumps(to_record(item, role, node)).encode("utf-8")
    if len(line) > MAX_LINE:
        raise LineTooLong(f"event line of {len(line)} bytes exceeds the 1 MiB limit")
    return line + b"\n"


_prefixes: Dict[Tuple[str, str], str] = {}


def _number(value: Any) -> Optional[str]:
    """``value`` as JSON the way ``json.dumps(float(value))`` writes it; ``None`` when it is
    not finite (the general encoder then decides)."""
    number = float(value)
    return repr(number) if math.isfinite(number) else None


def _fast_request_line(item: Tuple, role: str, node: str) -> Optional[bytes]:
    """The request line, byte for byte what :func:`to_record` + ``json.dumps`` give, built
    without the intermediate dict. Requests are most of the traffic; this keeps the bridge's
    share of Locust's CPU small. ``None`` for anything unusual (a context, non-str names,
    non-finite numbers): the general path handles those."""
    (_, time, request_type, name, response_time, response_length, exception, error_type,
     start_time, url, status, context) = item
    if context or type(request_type) is not str or type(name) is not str:
        return None
    if start_time is not None and type(start_time) is not float:
        return None
    prefix = _prefixes.get((role, node))
    if prefix is None:
        prefix = '{"event":"request","role":%s,"node":%s,"time":' % (_string(role), _string(node))
        _prefixes[(role, node)] = prefix
    numbers = [_number(time), "null" if response_time is None else _number(response_time),
               "null" if start_time is None else _number(start_time)]
    if None in numbers:
        return None
    line = '%s%s,"request_type":%s,"name":%s,"response_time":%s,"response_length":%d,' \
           '"exception":%s%s,"start_time":%s,"url":%s,"status_code":%s,"context":{}}\n' % (
               prefix, numbers[0], _string(request_type), _string(name), numbers[1],
               int(response_length or 0), "null" if exception is None else _string(exception),
               "" if error_type is None else ',"exception_type":' + _string(error_type),
               numbers[2], "null" if url is None else _string(str(url)),
               "null" if status is None else "%d" % int(status))
    encoded = line.encode("ascii")
    if len(encoded) > MAX_LINE + 1:
        raise LineTooLong(f"event line of {len(encoded) - 1} bytes exceeds the 1 MiB limit")
    return encoded


# ------------------------------------------------------------------ hook arguments


def user_error_fields(user_instance, exception, tb) -> Dict[str, Any]:
    """``user_error`` arguments: the user as its class name, the traceback formatted."""
    return {
        "user_instance": type(user_instance).__name__,
        "exception": str(exception),
        "tb": "".join(traceback.format_tb(tb)) if tb is not None else "",
    }


def stats_entry(e: Any) -> Dict[str, Any]:
    """One Locust ``StatsEntry`` as in the capture locustfile's ``_entry``."""
    return {
        "request_type": e.method or "",
        "name": e.name,
        "num_requests": e.num_requests,
        "num_failures": e.num_failures,
        "total_response_time": float(e.total_response_time),
        "min_response_time": float(e.min_response_time or 0),
        "max_response_time": float(e.max_response_time),
        "total_content_length": int(e.total_content_length),
        "response_times": [[float(k), int(v)] for k, v in sorted(e.response_times.items())],
        "current_rps": float(e.current_rps),
        "current_fail_per_sec": float(e.current_fail_per_sec),
        "start_time": _optional_time(getattr(e, "start_time", None)),
        "last_request_timestamp": _optional_time(getattr(e, "last_request_timestamp", None)),
    }


def _optional_time(value: Any) -> Optional[float]:
    """A Unix time as a float, or ``None`` when Locust has none (or it is not finite)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


#: The most characters of one error text a snapshot carries; Locust's error texts are
#: ``repr(exception)``, and one huge text must not push the snapshot past the 1 MiB line.
MAX_ERROR_CHARS = 4096


def error_row(error: Any) -> Dict[str, Any]:
    """One row of Locust's error table (a ``StatsError``), as ``StatsError.to_dict()`` gives
    it: ``error`` is Locust's own ``parse_error`` text, cut at :data:`MAX_ERROR_CHARS`."""
    parse = getattr(type(error), "parse_error", None)
    text = parse(error.error) if parse is not None else str(error.error)
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + "..."
    return {
        "method": error.method or "",
        "name": error.name,
        "error": text,
        "occurrences": int(error.occurrences),
        "first_seen": _optional_time(getattr(error, "first_seen", None)),
        "last_seen": _optional_time(getattr(error, "last_seen", None)),
    }


#: The most bytes the error table may take in one snapshot line (as encoded: a non-ASCII
#: character is 6 or 12 bytes); rows past it are left out, so a flood of long distinct errors
#: cannot push the snapshot past the 1 MiB line limit and lose it.
MAX_ERROR_TABLE_BYTES = 256 * 1024


def error_rows(errors: Any) -> list:
    """Locust's error table, in its own order, up to :data:`MAX_ERROR_TABLE_BYTES`."""
    rows, size = [], 0
    for error in errors:
        row = error_row(error)
        size += len(_dumps(row)) + 1
        if size > MAX_ERROR_TABLE_BYTES:
            break
        rows.append(row)
    return rows


def stats_fields(runner: Any) -> Dict[str, Any]:
    """A ``stats`` snapshot of a runner: ``user_count``, sorted ``entries``, ``total`` and
    Locust's error table in ``errors``."""
    st = runner.stats
    entries = [stats_entry(e) for _, e in sorted(st.entries.items(), key=lambda kv: (kv[0][0], kv[0][1]))]
    errors = error_rows(st.errors.values())
    return {"user_count": int(runner.user_count), "entries": entries, "total": stats_entry(st.total),
            "errors": errors}


def process_sample_fields(process: Any, net_io_counters: Any) -> Dict[str, Any]:
    """A ``process_sample``: this process's CPU use in percent of one core since the previous
    sample (psutil's ``cpu_percent``), its resident memory, and the host's network byte
    counters, the numbers locust-telemetry's system recorder logs."""
    io = net_io_counters()
    return {
        "cpu_percent": float(process.cpu_percent()),
        "memory_bytes": int(process.memory_info().rss),
        "network_sent_bytes": int(io.bytes_sent) if io is not None else 0,
        "network_recv_bytes": int(io.bytes_recv) if io is not None else 0,
    }


def worker_report_fields(client_id, data) -> Dict[str, Any]:
    """``worker_report`` reduced to the worker's ``user_count``."""
    return {"client_id": str(client_id), "user_count": int((data or {}).get("user_count", 0))}


def stats_item(runner: Any) -> Optional[Tuple]:
    """A ``stats`` item for ``runner``, or ``None`` without a runner."""
    if runner is None:
        return None
    return event_item("stats", **stats_fields(runner))
