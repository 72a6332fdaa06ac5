//! Turns the host's batches into calls of the author's [`Recorder`] hooks.

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::__private::bindings::exports::swarmtel::telemetry::plugin;
use crate::__private::bindings::swarmtel::telemetry::types as wit;
use crate::requests::{EndpointId, EndpointTable, Requests};
use crate::{Output, Plugin, Recorder, RecorderContext};

/// A recorder with the state the SDK keeps for it between calls.
pub(crate) struct RecorderState {
    recorder: Box<dyn Recorder>,
    endpoints: EndpointTable,
    /// This batch's endpoint dictionary, mapped to stable ids.
    batch_endpoints: Vec<EndpointId>,
    /// Per request of this batch: its stable endpoint id. Reused between batches.
    request_ids: Vec<EndpointId>,
    out: Output,
}

impl RecorderState {
    pub(crate) fn new(recorder: Box<dyn Recorder>) -> Self {
        Self {
            recorder,
            endpoints: EndpointTable::default(),
            batch_endpoints: Vec::new(),
            request_ids: Vec::new(),
            out: Output::default(),
        }
    }

    pub(crate) fn handle(&mut self, batch: &wit::EventBatch) -> wit::RecorderOutput {
        let columns = &batch.requests;
        if !columns.endpoint.is_empty() {
            self.batch_endpoints.clear();
            for endpoint in &columns.endpoints {
                self.batch_endpoints.push(self.endpoints.intern(endpoint));
            }
            self.request_ids.clear();
            self.request_ids.reserve(columns.endpoint.len());
            // An index outside the dictionary is a host bug: the batch ends before it, so each
            // request kept still lines up with its row in the other columns.
            let batch_endpoints = &self.batch_endpoints;
            self.request_ids.extend(
                columns
                    .endpoint
                    .iter()
                    .map_while(|&local| batch_endpoints.get(local as usize).copied()),
            );
            let requests = Requests::new(columns, &self.request_ids, &self.endpoints);
            self.recorder.on_requests(&requests, &mut self.out);
        }
        for timed in &batch.events {
            dispatch_event(self.recorder.as_mut(), timed, &mut self.out);
        }
        self.out.take()
    }

    pub(crate) fn finish(&mut self) -> wit::RecorderOutput {
        self.recorder.on_finish(&mut self.out);
        self.out.take()
    }
}

fn dispatch_event(recorder: &mut dyn Recorder, timed: &wit::TimedEvent, out: &mut Output) {
    use wit::Event;
    let time = timed.time;
    match &timed.event {
        Event::TestStart => recorder.on_test_start(time, out),
        Event::TestStopping => recorder.on_test_stopping(time, out),
        Event::TestStop => recorder.on_test_stop(time, out),
        Event::SpawningComplete(users) => recorder.on_spawning_complete(time, *users, out),
        Event::UserError(error) => recorder.on_user_error(time, error, out),
        Event::CpuWarning(cpu) => recorder.on_cpu_warning(time, *cpu, out),
        Event::UsageMonitor(usage) => recorder.on_usage_monitor(time, usage, out),
        Event::WorkerConnect(client_id) => recorder.on_worker_connect(time, client_id, out),
        Event::WorkerReport(report) => recorder.on_worker_report(time, report, out),
        Event::HeartbeatSent(heartbeat) => recorder.on_heartbeat_sent(time, heartbeat, out),
        Event::HeartbeatReceived(heartbeat) => recorder.on_heartbeat_received(time, heartbeat, out),
        Event::ResetStats => recorder.on_reset_stats(time, out),
        Event::Quitting => recorder.on_quitting(time, out),
        Event::Quit(code) => recorder.on_quit(time, *code, out),
        Event::StatsSnapshot(snapshot) => recorder.on_stats_snapshot(time, snapshot, out),
        Event::Tick => recorder.on_tick(time, out),
        Event::ProcessSample(sample) => recorder.on_process_sample(time, sample, out),
    }
}

/// The component implementation [`export_plugin!`](crate::export_plugin) exports for a
/// [`Plugin`] type.
pub struct PluginExport<P>(PhantomData<P>);

/// A recorder resource handed to the host.
pub struct RecorderResource(RefCell<RecorderState>);

impl<P: Plugin> plugin::Guest for PluginExport<P> {
    type Recorder = RecorderResource;

    fn describe() -> wit::PluginInfo {
        P::describe().into_wit()
    }

    fn create_recorder(config: wit::RecorderConfig) -> Result<plugin::Recorder, String> {
        let ctx = RecorderContext::from_wit(config);
        let recorder = P::create_recorder(&ctx)?;
        Ok(plugin::Recorder::new(RecorderResource(RefCell::new(
            RecorderState::new(recorder),
        ))))
    }
}

impl plugin::GuestRecorder for RecorderResource {
    fn handle(&self, batch: wit::EventBatch) -> wit::RecorderOutput {
        self.0.borrow_mut().handle(&batch)
    }

    fn finish(&self) -> wit::RecorderOutput {
        self.0.borrow_mut().finish()
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::Request;

    /// Keeps (name, response time) of every request it is handed.
    struct Seen(Rc<RefCell<Vec<(String, f64)>>>);

    impl Recorder for Seen {
        fn on_request(&mut self, request: &Request<'_>, _out: &mut Output) {
            let row = (request.name.to_owned(), request.response_time_ms);
            self.0.borrow_mut().push(row);
        }
    }

    #[test]
    fn an_endpoint_index_outside_the_dictionary_ends_the_batch_there() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut state = RecorderState::new(Box::new(Seen(seen.clone())));
        let batch = wit::EventBatch {
            requests: wit::RequestColumns {
                endpoints: vec![wit::Endpoint {
                    request_type: "GET".into(),
                    name: "/a".into(),
                }],
                endpoint: vec![0, 7, 0],
                start_time: vec![1.0, 2.0, 3.0],
                response_time_ms: vec![10.0, 20.0, 30.0],
                response_length: vec![0, 0, 0],
                status_code: vec![200, 200, 200],
                failures: Vec::new(),
                details: Vec::new(),
            },
            events: Vec::new(),
        };
        state.handle(&batch);
        assert_eq!(*seen.borrow(), vec![("/a".to_owned(), 10.0)]);
    }
}
