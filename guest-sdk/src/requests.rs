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
        let columns = self.columns;
        let rows = self
            .ids
            .iter()
            .zip(&columns.start_time)
            .zip(&columns.response_time_ms)
            .zip(&columns.response_length)
            .zip(&columns.status_code);
        RequestIter {
            rows,
            table: self.table,
            index: 0,
            failures: &columns.failures,
            details: &columns.details,
        }
    }
}

/// The per-request columns, walked together: one bounds check per row, not one per column.
type Rows<'a> = std::iter::Zip<
    std::iter::Zip<
        std::iter::Zip<
            std::iter::Zip<std::slice::Iter<'a, EndpointId>, std::slice::Iter<'a, Timestamp>>,
            std::slice::Iter<'a, f64>,
        >,
        std::slice::Iter<'a, u64>,
    >,
    std::slice::Iter<'a, u16>,
>;

/// Iterator over the requests of a batch; see [`Requests::iter`]. The host sends columns of
/// one length; were one shorter, the iteration would end with it.
#[derive(Debug)]
pub struct RequestIter<'a> {
    rows: Rows<'a>,
    table: &'a EndpointTable,
    /// The index of the next row in the batch.
    index: u32,
    /// The failures not reached yet, ascending by index.
    failures: &'a [wit::RequestFailure],
    /// The details not reached yet, ascending by index.
    details: &'a [wit::RequestDetail],
}

impl<'a> Iterator for RequestIter<'a> {
    type Item = Request<'a>;

    #[inline]
    fn next(&mut self) -> Option<Request<'a>> {
        let ((((&id, &start_time), &response_time_ms), &response_length), &status_code) =
            self.rows.next()?;
        let index = self.index;
        self.index += 1;
        let (exception, exception_type) = match self.failures.split_first() {
            Some((failure, rest)) if failure.index == index => {
                self.failures = rest;
                (
                    Some(failure.exception.as_str()),
                    Some(failure.exception_type.as_str()).filter(|name| !name.is_empty()),
                )
            }
            _ => (None, None),
        };
        let (url, context) = match self.details.split_first() {
            Some((detail, rest)) if detail.index == index => {
                self.details = rest;
                (detail.url.as_deref(), detail.context.as_deref())
            }
            _ => (None, None),
        };
        let endpoint = self.table.get(id);
        Some(Request {
            endpoint: id,
            request_type: &endpoint.request_type,
            name: &endpoint.name,
            start_time,
            response_time_ms,
            response_length,
            status_code: (status_code != 0).then_some(status_code),
            exception,
            exception_type,
            url,
            context,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.rows.size_hint()
    }
}

impl ExactSizeIterator for RequestIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(request_type: &str, name: &str) -> Endpoint {
        Endpoint {
            request_type: request_type.into(),
            name: name.into(),
        }
    }

    fn failure(index: u32, exception: &str, exception_type: &str) -> wit::RequestFailure {
        wit::RequestFailure {
            index,
            exception: exception.into(),
            exception_type: exception_type.into(),
        }
    }

    /// Three requests on two endpoints; the second failed (class known), the third failed
    /// (class unknown) and has details.
    fn columns() -> wit::RequestColumns {
        wit::RequestColumns {
            endpoints: vec![endpoint("GET", "/a"), endpoint("POST", "/b")],
            endpoint: vec![0, 1, 0],
            start_time: vec![10.0, 11.0, 12.0],
            response_time_ms: vec![1.5, 2.5, 3.5],
            response_length: vec![100, 200, 300],
            status_code: vec![200, 0, 500],
            failures: vec![failure(1, "boom", "ConnectionError"), failure(2, "bad", "")],
            details: vec![wit::RequestDetail {
                index: 2,
                url: Some("http://h/a".into()),
                context: None,
            }],
        }
    }

    fn table_and_ids(columns: &wit::RequestColumns) -> (EndpointTable, Vec<EndpointId>) {
        let mut table = EndpointTable::default();
        let local: Vec<EndpointId> = columns.endpoints.iter().map(|e| table.intern(e)).collect();
        let ids = columns
            .endpoint
            .iter()
            .map(|&i| local[i as usize])
            .collect();
        (table, ids)
    }

    #[test]
    fn each_row_gets_its_columns_failure_and_details() {
        let columns = columns();
        let (table, ids) = table_and_ids(&columns);
        let requests = Requests::new(&columns, &ids, &table);
        let rows: Vec<Request<'_>> = requests.iter().collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(requests.iter().len(), 3);

        assert_eq!((rows[0].request_type, rows[0].name), ("GET", "/a"));
        assert_eq!(rows[0].start_time, 10.0);
        assert_eq!(rows[0].response_time_ms, 1.5);
        assert_eq!(rows[0].response_length, 100);
        assert_eq!(rows[0].status_code, Some(200));
        assert!(!rows[0].failed());
        assert_eq!((rows[0].url, rows[0].context), (None, None));

        assert_eq!((rows[1].request_type, rows[1].name), ("POST", "/b"));
        assert_eq!(rows[1].status_code, None, "0 means no status code");
        assert_eq!(rows[1].exception, Some("boom"));
        assert_eq!(rows[1].exception_type, Some("ConnectionError"));
        assert_eq!(rows[1].url, None);

        assert_eq!(rows[2].endpoint, rows[0].endpoint);
        assert_eq!(rows[2].exception, Some("bad"));
        assert_eq!(rows[2].exception_type, None, "an empty class is no class");
        assert_eq!(rows[2].url, Some("http://h/a"));
        assert_eq!(rows[2].status_code, Some(500));
    }

    #[test]
    fn a_short_column_ends_the_rows_without_shifting_them() {
        let mut columns = columns();
        columns.response_length.truncate(2);
        let (table, ids) = table_and_ids(&columns);
        let requests = Requests::new(&columns, &ids, &table);
        let rows: Vec<Request<'_>> = requests.iter().collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].response_length, 200);
        assert_eq!(rows[1].exception, Some("boom"));
    }
}
