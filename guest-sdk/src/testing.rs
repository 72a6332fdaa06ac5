//! Drive a recorder natively, without a host, for unit tests of plugins.
//!
//! The [`Harness`] builds the same batches the host sends and runs the same dispatch code that
//! runs inside the sandbox.

use crate::__private::bindings::swarmtel::telemetry::types as wit;
use crate::dispatch::RecorderState;
pub use crate::output::TelemetryItem;
use crate::{Event, Options, Plugin, RecorderContext, Role, Timestamp};

/// One recorder of plugin `P`, fed by hand.
pub struct Harness {
    state: RecorderState,
    batch: wit::EventBatch,
    points: Vec<MetricPoint>,
}

/// One metric point a recorder reported, as the host receives it.
pub use wit::MetricPoint;

/// A metric point's value.
pub use wit::MetricValue;

impl Harness {
    /// Creates `recorder` of plugin `P` for `role`, with every option at its default.
    pub fn new<P: Plugin>(recorder: &str, role: Role) -> Result<Self, String> {
        let defaults = P::describe()
            .into_wit()
            .options
            .into_iter()
            .filter_map(|option| option.default.map(|value| (option.name, value)));
        Self::with_options::<P>(recorder, role, Options::from_pairs(defaults))
    }

    /// Creates `recorder` of plugin `P` for `role` with the given options.
    pub fn with_options<P: Plugin>(
        recorder: &str,
        role: Role,
        options: Options,
    ) -> Result<Self, String> {
        let node = match role {
            Role::Master => "master",
            Role::Worker => "worker-0",
            Role::Standalone => "local",
        };
        let ctx = RecorderContext::new(recorder, role, node, options);
        Ok(Self {
            state: RecorderState::new(P::create_recorder(&ctx)?),
            batch: empty_batch(),
            points: Vec::new(),
        })
    }

    /// Queues one request for the next delivery; `exception` marks it failed.
    pub fn request(
        &mut self,
        request_type: &str,
        name: &str,
        response_time_ms: f64,
        response_length: u64,
        exception: Option<&str>,
    ) {
        self.request_failed_with(
            request_type,
            name,
            response_time_ms,
            response_length,
            exception.map(|text| (text, "")),
        );
    }

    /// Queues one request for the next delivery; `failure` (exception text, exception class
    /// name) marks it failed.
    pub fn request_failed_with(
        &mut self,
        request_type: &str,
        name: &str,
        response_time_ms: f64,
        response_length: u64,
        failure: Option<(&str, &str)>,
    ) {
        let exception = failure.map(|(text, _)| text);
        let columns = &mut self.batch.requests;
        let local = match columns
            .endpoints
            .iter()
            .position(|e| e.request_type == request_type && e.name == name)
        {
            Some(position) => position,
            None => {
                columns.endpoints.push(wit::Endpoint {
                    request_type: request_type.to_owned(),
                    name: name.to_owned(),
                });
                columns.endpoints.len() - 1
            }
        };
        let index = columns.endpoint.len() as u32;
        columns.endpoint.push(local as u32);
        columns.start_time.push(0.0);
        columns.response_time_ms.push(response_time_ms);
        columns.response_length.push(response_length);
        columns
            .status_code
            .push(if exception.is_some() { 500 } else { 200 });
        if let Some((exception, exception_type)) = failure {
            columns.failures.push(wit::RequestFailure {
                index,
                exception: exception.to_owned(),
                exception_type: exception_type.to_owned(),
            });
        }
    }

    /// Delivers the queued requests and then `event` at `time`; returns what was logged.
    pub fn event(&mut self, time: Timestamp, event: Event) -> Vec<TelemetryItem> {
        self.batch.events.push(wit::TimedEvent { time, event });
        self.flush()
    }

    /// Delivers the queued requests; returns what was logged.
    pub fn flush(&mut self) -> Vec<TelemetryItem> {
        let batch = std::mem::replace(&mut self.batch, empty_batch());
        let output = self.state.handle(&batch);
        self.points.extend(output.metrics);
        into_items(output.telemetry)
    }

    /// The metric points reported since the last call of this method, in order.
    pub fn take_metrics(&mut self) -> Vec<MetricPoint> {
        std::mem::take(&mut self.points)
    }

    /// Ends the stream: delivers what is queued, then calls `on_finish`.
    pub fn finish(&mut self) -> Vec<TelemetryItem> {
        let mut items = self.flush();
        let output = self.state.finish();
        self.points.extend(output.metrics);
        items.extend(into_items(output.telemetry));
        items
    }
}

fn into_items(items: Vec<wit::Telemetry>) -> Vec<TelemetryItem> {
    items.into_iter().map(TelemetryItem::from).collect()
}

fn empty_batch() -> wit::EventBatch {
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
