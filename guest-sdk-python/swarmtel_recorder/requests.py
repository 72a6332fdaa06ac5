"""Request events: stable endpoint ids and the columnar fast path.

The host sends a batch's requests as columns, with endpoint names as a per-batch dictionary.
The SDK maps that dictionary to ids that stay the same for the recorder's whole life (dense
from 0, in order of first sight), so a recorder can keep per-endpoint state in a list.

A recorder that counts millions of requests overrides ``on_requests(self, batch)`` and works
on `RequestBatch`'s columns (plain Python lists); everyone else listens to ``request`` and gets
one call per request with Locust's keyword arguments.
"""

import json
from operator import itemgetter
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple


class Endpoint(NamedTuple):
    """An endpoint as Locust names it in its statistics."""

    #: Locust's ``request_type``, such as ``GET``.
    request_type: str
    #: Locust's ``name``, such as ``/items/[id]``.
    name: str


class EndpointTable:
    """Every endpoint one recorder has seen, numbered densely in order of first sight."""

    __slots__ = ("_ids", "endpoints")

    def __init__(self) -> None:
        self._ids: Dict[Tuple[str, str], int] = {}
        #: The endpoints, indexed by id.
        self.endpoints: List[Endpoint] = []

    def intern(self, request_type: str, name: str) -> int:
        """The id of an endpoint, numbering it if new."""
        key = (request_type, name)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self.endpoints)
            self.endpoints.append(Endpoint(request_type, name))
        return found

    def __len__(self) -> int:
        return len(self.endpoints)


class Request(NamedTuple):
    """One request, as Locust's ``request`` hook reports it (plus its stable endpoint id)."""

    endpoint_id: int
    request_type: str
    name: str
    response_time: float
    response_length: int
    exception: Optional[str]
    context: Dict[str, Any]
    url: Optional[str]
    start_time: float
    status_code: Optional[int]
    #: The exception's class name, such as ``ConnectionError``: ``""`` when not known, None
    #: when the request succeeded.
    exception_type: Optional[str] = None


class RequestBatch:
    """The requests of one batch, as columns: every list has one entry per request.

    ``response_times[i]``, ``response_lengths[i]``, ``start_times[i]`` and
    ``status_codes[i]`` belong to request ``i``, whose endpoint is
    ``endpoint_ids[i]`` (stable for the recorder's life; ``batch.endpoint(id)`` names it).
    ``failures`` lists ``(i, exception text)`` for the failed ones, and ``failure_types``
    ``(i, exception class name)``. Iterating gives `Request` tuples, which is convenient but
    slower than the columns.
    """

    __slots__ = ("_columns", "_table", "_local_ids", "_ids", "_failures", "_new_from")

    def __init__(self, columns: Any, table: EndpointTable, local_ids: List[int], new_from: int):
        self._columns = columns
        self._table = table
        self._local_ids = local_ids
        self._ids: Optional[List[int]] = None
        self._failures: Optional[List[Tuple[int, str]]] = None
        self._new_from = new_from

    def __len__(self) -> int:
        return len(self._columns.endpoint)

    @property
    def endpoint_ids(self) -> List[int]:
        """Per request: its stable endpoint id."""
        if self._ids is None:
            local = self._columns.endpoint
            ids = self._local_ids
            self._ids = list(map(ids.__getitem__, local))
        return self._ids

    @property
    def batch_endpoint_ids(self) -> List[int]:
        """The stable id of each entry of this batch's endpoint dictionary (see `local_ids`)."""
        return self._local_ids

    @property
    def local_ids(self) -> List[int]:
        """Per request: its index into `batch_endpoint_ids` (cheaper than `endpoint_ids` when
        a recorder groups by endpoint first)."""
        return self._columns.endpoint

    @property
    def response_times(self) -> List[float]:
        """Per request: Locust's ``response_time``, in milliseconds."""
        return self._columns.response_time_ms

    @property
    def response_lengths(self) -> List[int]:
        """Per request: Locust's ``response_length``, in bytes."""
        return self._columns.response_length

    @property
    def start_times(self) -> List[float]:
        """Per request: Locust's ``start_time``, Unix seconds."""
        return self._columns.start_time

    @property
    def status_codes(self) -> List[int]:
        """Per request: the HTTP status code, 0 where unknown."""
        return self._columns.status_code

    @property
    def failures(self) -> List[Tuple[int, str]]:
        """The failed requests: ``(index in this batch, exception text)``, ascending."""
        if self._failures is None:
            self._failures = [(f.index, f.exception) for f in self._columns.failures]
        return self._failures

    @property
    def failure_types(self) -> List[Tuple[int, str]]:
        """The failed requests' exception class names: ``(index in this batch, class name)``,
        ascending; the name is ``""`` when the bridge did not know it."""
        return [(f.index, f.exception_type) for f in self._columns.failures]

    @property
    def failure_count(self) -> int:
        """How many requests of the batch failed."""
        return len(self._columns.failures)

    def endpoint(self, endpoint_id: int) -> Endpoint:
        """The endpoint behind a stable id."""
        return self._table.endpoints[endpoint_id]

    @property
    def endpoints(self) -> List[Endpoint]:
        """Every endpoint the recorder has seen so far, indexed by id."""
        return self._table.endpoints

    @property
    def new_endpoints(self) -> List[Tuple[int, Endpoint]]:
        """Endpoints first seen in this batch, as ``(id, endpoint)``."""
        start = self._new_from
        return list(enumerate(self._table.endpoints[start:], start))

    def indices_by_endpoint(self) -> Dict[int, List[int]]:
        """Request indices grouped by stable endpoint id, each group in request order."""
        local = self._columns.endpoint
        ids = self._local_ids
        if len(ids) == 1:
            return {ids[0]: list(range(len(local)))} if local else {}
        groups: List[List[int]] = [[] for _ in ids]
        appends = [group.append for group in groups]
        for index, which in enumerate(local):
            appends[which](index)
        return {ids[which]: group for which, group in enumerate(groups) if group}

    @staticmethod
    def select(column: List[Any], indices: List[int]) -> List[Any]:
        """``[column[i] for i in indices]``, at C speed."""
        if len(indices) == len(column):
            return column
        if len(indices) == 1:
            return [column[indices[0]]]
        return list(itemgetter(*indices)(column)) if indices else []

    def __iter__(self) -> Iterator[Request]:
        columns = self._columns
        table = self._table.endpoints
        failures = {f.index: f for f in columns.failures}
        details = {d.index: d for d in columns.details}
        ids = self.endpoint_ids
        for index, endpoint_id in enumerate(ids):
            endpoint = table[endpoint_id]
            detail = details.get(index)
            context: Dict[str, Any] = {}
            url = None
            if detail is not None:
                url = detail.url
                if detail.context:
                    context = json.loads(detail.context)
            status = columns.status_code[index]
            failure = failures.get(index)
            yield Request(
                endpoint_id,
                endpoint.request_type,
                endpoint.name,
                columns.response_time_ms[index],
                columns.response_length[index],
                None if failure is None else failure.exception,
                context,
                url,
                columns.start_time[index],
                status or None,
                None if failure is None else failure.exception_type,
            )
