//! A per-event view over the columnar request batches the host sends.

use std::collections::BTreeMap;

use crate::__private::bindings::swarmtel::telemetry::types as wit;
use crate::Timestamp;

/// An endpoint: Locust's request type and name.
pub use wit::Endpoint;

/// A recorder's own stable number for an endpoint, dense from 0 in order of first sight, so
/// recorders can keep per-endpoint state in a `Vec` indexed by `id.index()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(u32);

impl EndpointId {
    /// The id as a `Vec` index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Every endpoint a recorder instance has seen, numbered in order of first sight.
/// A `BTreeMap`, not a `HashMap`: hashing's random seed would need the random capability.
#[derive(Debug, Default)]
pub(crate) struct EndpointTable {
    /// request type → name → id: looked up by `&str`, so known endpoints cost no allocation.
    by_key: BTreeMap<String, BTreeMap<String, EndpointId>>,
    endpoints: Vec<Endpoint>,
}

impl EndpointTable {
    pub(crate) fn intern(&mut self, endpoint: &Endpoint) -> EndpointId {
        if let Some(id) = self
            .by_key
            .get(&endpoint.request_type)
            .and_then(|names| names.get(&endpoint.name))
        {
            return *id;
        }
        let id = EndpointId(self.endpoints.len() as u32);
        self.endpoints.push(endpoint.clone());
        self.by_key
            .entry(endpoint.request_type.clone())
            .or_default()
            .insert(endpoint.name.clone(), id);
        id
    }

    pub(crate) fn get(&self, id: EndpointId) -> &Endpoint {
        &self.endpoints[id.index()]
    }

    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }
}

/// One request event, as Locust's `request` hook reports it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The recorder's stable id of the endpoint.
    pub endpoint: EndpointId,
    /// Locust's `request_type`, such as `GET`.
    pub request_type: &'a str,
    /// Locust's `name`.
    pub name: &'a str,
    /// When the request started.
    pub start_time: Timestamp,
    /// Response time in milliseconds.
    pub response_time_ms: f64,
    /// Response length in bytes.
    pub response_length: u64,
    /// HTTP status code, when known.
    pub status_code: Option<u16>,
    /// Locust's exception text when the request failed.
    pub exception: Option<&'a str>,
    /// The exception's class name, such as `ConnectionError`, when the request failed and
    /// the bridge knew it.
    pub exception_type: Option<&'a str>,
    /// The full URL, when the recorder asked for it and it is known.
    pub url: Option<&'a str>,
    /// The request context as JSON object text, when asked for and not empty.
    pub context: Option<&'a str>,
}

impl Request<'_> {
    /// Whether Locust counted the request as a failure.
    pub fn failed(&self) -> bool {
        self.exception.is_some()
    }
}

/// The request events of one batch: iterate per event, or read the columns directly.
#[derive(Debug)]
pub struct Requests<'a> {
    columns: &'a wit::RequestColumns,
    ids: &'a [EndpointId],
    table: &'a EndpointTable,
}

impl<'a> Requests<'a> {
    pub(crate) fn new(
        columns: &'a wit::RequestColumns,
        ids: &'a [EndpointId],
        table: &'a EndpointTable,
    ) -> Self {
        Self {
            columns,
            ids,
            table,
        }
    }

    /// How many requests the batch holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the batch holds no request.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Per request: the endpoint id.
    pub fn endpoint_ids(&self) -> &'a [EndpointId] {
        self.ids
    }

    /// Per request: response time in milliseconds.
    pub fn response_times_ms(&self) -> &'a [f64] {
        &self.columns.response_time_ms
    }

    /// Per request: response length in bytes.
    pub fn response_lengths(&self) -> &'a [u64] {
        &self.columns.response_length
    }

    /// Per request: start time.
    pub fn start_times(&self) -> &'a [Timestamp] {
        &self.columns.start_time
    }

    /// Per request: HTTP status code, 0 where unknown.
    pub fn status_codes(&self) -> &'a [u16] {
        &self.columns.status_code
    }

    /// The failed requests: (index in this batch, exception text), ascending.
    pub fn failures(&self) -> impl Iterator<Item = (usize, &'a str)> + 'a {
        self.columns
            .failures
            .iter()
            .map(|failure| (failure.index as usize, failure.exception.as_str()))
    }

    /// The endpoint behind an id.
    pub fn endpoint(&self, id: EndpointId) -> &'a Endpoint {
        self.table.get(id)
    }

    /// How many distinct endpoints this recorder has seen so far (ids are below this).
    pub fn endpoint_count(&self) -> usize {
        self.table.len()
    }

    /// Every endpoint this recorder has seen so far, in id order.
    pub fn endpoints(&self) -> impl Iterator<Item = (EndpointId, &'a Endpoint)> + 'a {
        self.table
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| (EndpointId(index as u32), endpoint))
    }

    /// Every request of the batch, in order.
    pub fn iter(&self) -> RequestIter<'a> {
        RequestIter {
            columns: self.columns,
            ids: self.ids,
            table: self.table,
            next: 0,
            next_failure: 0,
            next_detail: 0,
        }
    }
}

/// Iterator over the requests of a batch; see [`Requests::iter`].
#[derive(Debug)]
pub struct RequestIter<'a> {
    columns: &'a wit::RequestColumns,
    ids: &'a [EndpointId],
    table: &'a EndpointTable,
    next: usize,
    next_failure: usize,
    next_detail: usize,
}

impl<'a> Iterator for RequestIter<'a> {
    type Item = Request<'a>;

    fn next(&mut self) -> Option<Request<'a>> {
        let index = self.next;
        let id = *self.ids.get(index)?;
        self.next += 1;
        let columns = self.columns;
        let (exception, exception_type) = match columns.failures.get(self.next_failure) {
            Some(failure) if failure.index as usize == index => {
                self.next_failure += 1;
                (
                    Some(failure.exception.as_str()),
                    Some(failure.exception_type.as_str()).filter(|name| !name.is_empty()),
                )
            }
            _ => (None, None),
        };
        let (url, context) = match columns.details.get(self.next_detail) {
            Some(detail) if detail.index as usize == index => {
                self.next_detail += 1;
                (detail.url.as_deref(), detail.context.as_deref())
            }
            _ => (None, None),
        };
        let endpoint = self.table.get(id);
        let status_code = columns.status_code.get(index).copied().unwrap_or(0);
        Some(Request {
            endpoint: id,
            request_type: &endpoint.request_type,
            name: &endpoint.name,
            start_time: columns.start_time.get(index).copied().unwrap_or(0.0),
            response_time_ms: columns.response_time_ms.get(index).copied().unwrap_or(0.0),
            response_length: columns.response_length.get(index).copied().unwrap_or(0),
            status_code: (status_code != 0).then_some(status_code),
            exception,
            exception_type,
            url,
            context,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.ids.len() - self.next;
        (left, Some(left))
    }
}
