//! Routing: builds each recorder's batches from the events it subscribed to.
//!
//! Requests go into columns (endpoint names interned once per run, sent once per batch as a
//! dictionary); any other event ends its batch, so a batch is always "requests, then events".
//! Ticks are generated from event time, so a replay produces the same ticks every time.

use std::collections::HashMap;

use crate::bindings::types as wit;
use crate::sources::ingest::RequestRecord;

/// Every endpoint seen in the run, numbered densely in order of first sight.
#[derive(Debug, Default)]
pub struct EndpointInterner {
    /// request type → name → id: two lookups by `&str`, no allocation for known endpoints.
    ids: HashMap<String, HashMap<String, u32>>,
    endpoints: Vec<wit::Endpoint>,
}

impl EndpointInterner {
    /// The id of an endpoint, numbering it if new.
    #[inline]
    pub fn intern(&mut self, request_type: &str, name: &str) -> u32 {
        if let Some(id) = self.ids.get(request_type).and_then(|names| names.get(name)) {
            return *id;
        }
        let id = self.endpoints.len() as u32;
        self.endpoints.push(wit::Endpoint {
            request_type: request_type.to_owned(),
            name: name.to_owned(),
        });
        self.ids
            .entry(request_type.to_owned())
            .or_default()
            .insert(name.to_owned(), id);
        id
    }

    /// The endpoint behind an id.
    pub fn get(&self, id: u32) -> &wit::Endpoint {
        &self.endpoints[id as usize]
    }

    /// How many endpoints are known.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

/// One recorder's batch under construction. Buffers are reused from batch to batch, so the
/// steady state allocates nothing but failure texts.
pub struct BatchBuilder {
    batch: wit::EventBatch,
    /// Per run-wide endpoint id: its index in this batch's dictionary plus one (0: absent).
    local_of: Vec<u32>,
    /// Run-wide ids present in this batch's dictionary.
    used_globals: Vec<u32>,
    /// Host ticks among the batch's events (not events of the stream).
    ticks: usize,
    extras: wit::RequestExtras,
    last_time: f64,
}

impl BatchBuilder {
    /// An empty builder; `extras` are the per-request details the recorder wants.
    pub fn new(extras: wit::RequestExtras) -> Self {
        Self {
            batch: Self::empty_batch(),
            local_of: Vec::new(),
            used_globals: Vec::new(),
            ticks: 0,
            extras,
            last_time: f64::NEG_INFINITY,
        }
    }

    /// The per-request details this builder adds.
    pub fn request_extras(&self) -> wit::RequestExtras {
        self.extras
    }

    /// Appends one request; `endpoint` is its run-wide id in `interner`.
    #[inline]
    pub fn push_request(
        &mut self,
        endpoint: u32,
        interner: &EndpointInterner,
        request: &RequestRecord<'_>,
        time: f64,
    ) {
        let global = endpoint as usize;
        if self.local_of.len() <= global {
            self.local_of.resize(interner.len().max(global + 1), 0);
        }
        let columns = &mut self.batch.requests;
        let local = match self.local_of[global] {
            0 => {
                columns.endpoints.push(interner.get(endpoint).clone());
                let local = columns.endpoints.len() as u32;
                self.local_of[global] = local;
                self.used_globals.push(endpoint);
                local - 1
            }
            plus_one => plus_one - 1,
        };
        let index = columns.endpoint.len() as u32;
        columns.endpoint.push(local);
        columns.start_time.push(request.start_time);
        columns.response_time_ms.push(request.response_time_ms);
        columns.response_length.push(request.response_length);
        columns.status_code.push(request.status_code);
        if let Some(exception) = &request.exception {
            columns.failures.push(wit::RequestFailure {
                index,
                exception: exception.to_string(),
                exception_type: request
                    .exception_type
                    .as_deref()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        if self.extras != wit::RequestExtras::empty() {
            let url = self
                .extras
                .contains(wit::RequestExtras::URL)
                .then(|| request.url.as_ref().map(|u| u.to_string()))
                .flatten();
            let context = self
                .extras
                .contains(wit::RequestExtras::CONTEXT)
                .then(|| request.context.map(|c| c.get().to_owned()))
                .flatten();
            if url.is_some() || context.is_some() {
                columns.details.push(wit::RequestDetail {
                    index,
                    url,
                    context,
                });
            }
        }
        self.last_time = self.last_time.max(time);
    }

    /// Appends a non-request event; the caller then delivers the batch.
    pub fn push_event(&mut self, time: f64, event: wit::Event) {
        if matches!(event, wit::Event::Tick) {
            self.ticks += 1;
        }
        self.batch.events.push(wit::TimedEvent { time, event });
        self.last_time = self.last_time.max(time);
    }

    /// Requests in the batch.
    pub fn request_count(&self) -> usize {
        self.batch.requests.endpoint.len()
    }

    /// Whether the batch already holds a non-request event (so a request must start a new one).
    pub fn has_events(&self) -> bool {
        !self.batch.events.is_empty()
    }

    /// Requests plus events in the batch.
    pub fn len(&self) -> usize {
        self.request_count() + self.batch.events.len()
    }

    /// Events of the stream in the batch: requests and events, without the host's ticks.
    pub fn stream_event_count(&self) -> usize {
        self.len() - self.ticks
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Time of the latest event in the batch.
    pub fn last_time(&self) -> f64 {
        self.last_time
    }

    /// The batch as built so far.
    pub fn batch(&self) -> &wit::EventBatch {
        &self.batch
    }

    /// A batch with nothing in it.
    pub fn empty_batch() -> wit::EventBatch {
        wit::EventBatch {
            requests: wit::RequestColumns {
                endpoints: Vec::new(),
                endpoint: Vec::new(),
                start_time: Vec::new(),
                response_time_ms: Vec::new(),
                response_length: Vec::new(),
                status_code: Vec::new(),
                failures: Vec::new(),
                details: Vec::new(),
            },
            events: Vec::new(),
        }
    }

    /// Empties a batch, keeping its buffers' capacity for reuse.
    pub fn recycle(batch: &mut wit::EventBatch) {
        let columns = &mut batch.requests;
        columns.endpoints.clear();
        columns.endpoint.clear();
        columns.start_time.clear();
        columns.response_time_ms.clear();
        columns.response_length.clear();
        columns.status_code.clear();
        columns.failures.clear();
        columns.details.clear();
        batch.events.clear();
    }

    /// Hands over the batch built so far and starts the next in `empty` (an empty batch,
    /// ideally a recycled one).
    pub fn take_batch(&mut self, empty: wit::EventBatch) -> wit::EventBatch {
        let batch = std::mem::replace(&mut self.batch, empty);
        self.reset();
        batch
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        Self::recycle(&mut self.batch);
        self.reset();
    }

    fn reset(&mut self) {
        // Reset only the dictionary entries this batch used.
        for global in self.used_globals.drain(..) {
            self.local_of[global as usize] = 0;
        }
        self.ticks = 0;
        self.last_time = f64::NEG_INFINITY;
    }
}

/// A recorder's tick schedule in event time: ticks fall on multiples of the interval.
#[derive(Debug, Clone)]
pub struct TickClock {
    interval_seconds: f64,
    next: Option<f64>,
}

/// At most this many ticks are delivered for one gap in the stream; a longer silence skips
/// ahead instead of flooding the recorder with empty ticks.
const MAX_TICKS_PER_GAP: u32 = 100;

impl TickClock {
    /// A clock ticking every `interval_ms` of event time.
    pub fn new(interval_ms: u32) -> Self {
        Self {
            interval_seconds: f64::from(interval_ms) / 1_000.0,
            next: None,
        }
    }

    /// The ticks due before an event at `time`, in order.
    pub fn due(&mut self, time: f64) -> Vec<f64> {
        let interval = self.interval_seconds;
        let next = *self
            .next
            .get_or_insert_with(|| ((time / interval).floor() + 1.0) * interval);
        if time < next {
            return Vec::new();
        }
        let mut ticks = Vec::new();
        let mut tick = next;
        while tick <= time && ticks.len() < MAX_TICKS_PER_GAP as usize {
            ticks.push(tick);
            tick += interval;
        }
        if tick <= time {
            tick = ((time / interval).floor() + 1.0) * interval;
        }
        self.next = Some(tick);
        ticks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn request(name: &str, failed: bool) -> RequestRecord<'_> {
        RequestRecord {
            request_type: Cow::Borrowed("GET"),
            name: Cow::Borrowed(name),
            response_time_ms: 5.0,
            response_length: 10,
            start_time: 1.0,
            status_code: 200,
            exception: failed.then_some(Cow::Borrowed("boom")),
            exception_type: failed.then_some(Cow::Borrowed("RuntimeError")),
            url: Some(Cow::Borrowed("http://x")),
            context: None,
        }
    }

    #[test]
    fn interner_numbers_endpoints_once() {
        let mut interner = EndpointInterner::default();
        assert_eq!(interner.intern("GET", "/a"), 0);
        assert_eq!(interner.intern("POST", "/a"), 1);
        assert_eq!(interner.intern("GET", "/a"), 0);
        assert_eq!(interner.len(), 2);
    }

    #[test]
    fn batch_sends_each_endpoint_once_and_resets_between_batches() {
        let mut interner = EndpointInterner::default();
        let a = interner.intern("GET", "/a");
        let b = interner.intern("GET", "/b");
        let mut builder = BatchBuilder::new(wit::RequestExtras::empty());
        builder.push_request(b, &interner, &request("/b", false), 1.0);
        builder.push_request(a, &interner, &request("/a", true), 2.0);
        builder.push_request(b, &interner, &request("/b", false), 3.0);
        let columns = &builder.batch().requests;
        assert_eq!(columns.endpoints.len(), 2);
        assert_eq!(columns.endpoints[0].name, "/b");
        assert_eq!(columns.endpoint, vec![0, 1, 0]);
        assert_eq!(columns.failures.len(), 1);
        assert_eq!(columns.failures[0].index, 1);
        assert!(columns.details.is_empty(), "no extras asked for");
        assert_eq!(builder.last_time(), 3.0);
        builder.clear();
        builder.push_request(a, &interner, &request("/a", false), 4.0);
        let columns = &builder.batch().requests;
        assert_eq!(columns.endpoints.len(), 1);
        assert_eq!(columns.endpoints[0].name, "/a");
        assert_eq!(columns.endpoint, vec![0]);
    }

    #[test]
    fn details_only_when_asked_for() {
        let mut interner = EndpointInterner::default();
        let a = interner.intern("GET", "/a");
        let mut builder = BatchBuilder::new(wit::RequestExtras::URL);
        builder.push_request(a, &interner, &request("/a", false), 1.0);
        let details = &builder.batch().requests.details;
        assert_eq!(details.len(), 1);
        assert_eq!(details[0].url.as_deref(), Some("http://x"));
        assert_eq!(details[0].context, None);
    }

    #[test]
    fn ticks_fall_on_interval_multiples_and_skip_long_gaps() {
        let mut clock = TickClock::new(5_000);
        assert!(clock.due(101.0).is_empty());
        assert!(clock.due(104.9).is_empty());
        assert_eq!(clock.due(111.0), vec![105.0, 110.0]);
        assert!(clock.due(112.0).is_empty());
        let ticks = clock.due(10_000.0);
        assert_eq!(ticks.len(), 100);
        assert_eq!(clock.due(10_004.0), Vec::<f64>::new());
        assert_eq!(clock.due(10_005.0), vec![10_005.0]);
    }
}
