//! The pipeline: loads plugins, creates recorder instances per node and role, and drives
//! every event record through routing, the sandbox, validation, enrichment and the sinks.
//!
//! One recorder instance exists per (plugin, recorder, node), created when the node first
//! appears, like locust-telemetry's recorders that live in each Locust process. Each is a
//! [`RecorderTask`] with a queue of its own, run by the pipeline's [`RecorderPool`] of a fixed
//! number of threads; this module hands it batches and emits the results in hand-over order. A recorder that faults loses the batch it was handling and is re-instantiated after
//! its backoff; after `max_faults` faults it is disabled for the rest of the run. Other
//! recorders never notice.

mod counter_metrics;
pub mod counters;
mod emit;
pub mod enrich;
mod loading;
pub mod metrics;
pub mod plugin_metrics;
pub mod recorder_task;
pub mod request_metrics;
pub mod route;
pub mod validate;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

pub use counters::{PluginCounters, SourceCounters, Summary, Totals};
use emit::{Emitted, Emitter};
use enrich::{Level, Origin, RunContext, SELF_PLUGIN_ID};
pub use loading::{LoadedPlugins, check_plugin_files, load_plugins};
use metrics::RunMetrics;
use plugin_metrics::PluginMetrics;
use recorder_task::{Done, Job, Outcome, RecorderPool, RecorderTask};
use request_metrics::RequestMetrics;
use route::{BatchBuilder, EndpointInterner, TickClock};
use validate::{PluginSchemas, Validator};

use crate::bindings::types as wit;
use crate::config::{Config, Limits, RoleName};
use crate::plugin::{LoadedPlugin, PluginError, RecorderManifest};
use crate::sandbox::{RecorderBackend, Sandbox};
use crate::sinks::Outputs;
use crate::sources::ingest::{EventBody, EventRecord};
use crate::sources::wire::Wants;

/// The run could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine could not be set up.
    #[error(transparent)]
    Engine(#[from] crate::sandbox::EngineError),
    /// A plugin could not be loaded or configured.
    #[error(transparent)]
    Plugin(Box<PluginError>),
    /// The recorder threads could not be started.
    #[error("cannot start the recorder threads: {0}")]
    Threads(std::io::Error),
    /// An output could not be opened or written.
    #[error("output {path}: {source}")]
    Output {
        /// The output path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The event stream could not be read.
    #[error("event stream {source_name}: {source}")]
    Input {
        /// The stream's name.
        source_name: String,
        /// Why.
        source: std::io::Error,
    },
    /// A plugin marked `required` could not be loaded or ended disabled.
    #[error("required plugin {id} failed: {reason}")]
    RequiredPluginFailed {
        /// The plugin id (or file, when it never described itself).
        id: String,
        /// What happened.
        reason: String,
    },
    /// A bad line, with `--strict`.
    #[error("{source_name}:{line}: {error}")]
    BadLine {
        /// The stream's name.
        source_name: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        error: String,
    },
}

impl From<PluginError> for RunError {
    fn from(error: PluginError) -> Self {
        RunError::Plugin(Box::new(error))
    }
}

/// Why one event record could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The record itself is wrong (a node changing role): report it, skip it, go on.
    #[error("{0}")]
    BadRecord(String),
    /// The run cannot go on (an output cannot be written).
    #[error(transparent)]
    Run(#[from] RunError),
}

/// A plugin in the running pipeline.
struct PluginSlot {
    loaded: Arc<LoadedPlugin>,
    schemas: Arc<PluginSchemas>,
}

/// A run registered with [`Pipeline::add_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunHandle(usize);

impl RunHandle {
    /// The pipeline's own run (from the config, or generated).
    pub const DEFAULT: RunHandle = RunHandle(0);
}

/// Makes recorder backends; the wasm sandbox in production, native code in benchmarks.
pub type BackendFactory =
    dyn Fn(&LoadedPlugin, &RecorderManifest, RoleName, &str) -> Box<dyn RecorderBackend> + Send;

/// One recorder instance serving one node: its batch under construction here, its calls on
/// its own task.
struct RecorderSlot {
    plugin: usize,
    recorder: usize,
    node: usize,
    task: RecorderTask,
    builder: BatchBuilder,
    /// Batches handed back by the task, for reuse.
    spare: Vec<wit::EventBatch>,
    events: crate::plugin::EventMask,
    tick: Option<TickClock>,
    /// The task reported the recorder disabled (events for it are no longer batched).
    disabled: bool,
    /// The task's latest count of the guest's dropped stdio bytes.
    stdio_dropped_bytes: u64,
    /// Its node ended ([`Pipeline::finish_node`]): finished, task stopped.
    retired: bool,
    /// Calls whose telemetry used up the validation time; `max_faults` of them disable it.
    validation_overruns: u32,
}

/// The origin of a record of the runtime's own that belongs to no node (`recorder` names
/// what wrote it: `loader`, `summary`).
fn runtime_origin(recorder: &'static str, time: f64) -> Origin<'static> {
    Origin {
        plugin: SELF_PLUGIN_ID,
        recorder,
        role: RoleName::Standalone,
        node: "swarmtel",
        time,
        test: None,
    }
}

/// An event time for the runtime's own records: `time`, or now when no event carried one.
fn time_or_now(time: f64) -> f64 {
    if time.is_finite() {
        time
    } else {
        enrich::now_unix_seconds()
    }
}

/// The runs of the nodes a pipeline has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunsOfNodes {
    None,
    One(usize),
    Several,
}

/// Nodes refused at the instance cap that are reported one by one (stderr and
/// `NODE_REFUSED`); later ones are only counted.
const REFUSED_NODES_REPORTED: usize = 100;

/// Most batches handed to tasks and not yet emitted; past it the pipeline waits for the
/// oldest, so a recorder that cannot keep up slows intake instead of growing memory.
const MAX_PENDING: usize = 256;

struct Node {
    name: String,
    role: RoleName,
    /// Index into [`Pipeline::runs`].
    run: usize,
    slots: Vec<usize>,
    last_time: f64,
    /// When its latest event arrived, by the host's clock (for `node_idle_seconds`).
    last_seen: std::time::Instant,
    /// Finished and freed; the index is free for another node.
    retired: bool,
    /// The test id its latest `test_start` carried (see [`enrich::Origin::test`]).
    test: Option<Arc<str>>,
}

/// A job handed to a slot's task, waiting for its result.
struct Pending {
    slot: usize,
    /// The test its node was in when the job was handed over.
    test: Option<Arc<str>>,
}

/// The whole runtime for one run.
pub struct Pipeline {
    plugins: Vec<PluginSlot>,
    slots: Vec<RecorderSlot>,
    nodes: Vec<Node>,
    /// Nodes by name, then (run, node index): the same node name in another run is another
    /// node.
    node_ids: HashMap<String, Vec<(usize, usize)>>,
    /// The runs seen; the first is the pipeline's own (from the config, or generated).
    runs: Vec<RunContext>,
    /// Their indices in `runs`, so a connection finds its run in constant time.
    run_index: HashMap<RunContext, usize>,
    interner: EndpointInterner,
    /// Locust's request statistics over every node of each run.
    request_metrics: RequestMetrics,
    /// Plugins' metric points, merged into series per run.
    plugin_metrics: PluginMetrics,
    /// The last metrics handed to the outputs, and the two snapshots they were made of.
    published_metrics: PublishedMetrics,
    emitter: Emitter,
    batch_size: usize,
    factory: Box<BackendFactory>,
    summary: Summary,
    /// Set when a `required` plugin ends disabled: the run stops.
    required_failure: Option<RunError>,
    /// Slots of the batches handed to tasks, oldest first; results are emitted in this order.
    pending: std::collections::VecDeque<Pending>,
    /// Indices of retired slots and nodes, reused before the vectors grow: a long `serve`
    /// with nodes coming and going keeps flat memory.
    free_slots: Vec<usize>,
    free_nodes: Vec<usize>,
    /// Recorder slots not retired.
    live_instances: usize,
    /// The latest event time seen, over every node (retired ones too).
    latest_time: f64,
    /// Which runs the nodes seen so far belong to (retired ones too).
    runs_of_nodes: RunsOfNodes,
    max_live_instances: usize,
    node_idle: Option<std::time::Duration>,
    /// Node names refused at the instance cap, reported once each (up to
    /// [`REFUSED_NODES_REPORTED`]).
    refused_nodes: std::collections::HashSet<(usize, String)>,
    /// The threads that run every recorder task. Declared after `slots`, so the tasks are
    /// stopped before the pool.
    pool: RecorderPool,
}

/// Generates a run id: time-ordered and unique enough across machines.
pub fn generate_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Pipeline {
    /// Builds the pipeline for a config: loads the plugins into `sandbox`, opens nothing.
    pub fn new(
        sandbox: Arc<Sandbox>,
        config: &Config,
        outputs: Outputs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, RunError> {
        let LoadedPlugins { loaded, failed } = load_plugins(&sandbox, config, env)?;
        loading::warn_about_filters(config, &loaded);
        let factory = Box::new(
            move |plugin: &LoadedPlugin, recorder: &RecorderManifest, role, node: &str| {
                Box::new(plugin.wasm_recorder(&sandbox, recorder, role, node))
                    as Box<dyn RecorderBackend>
            },
        );
        let mut pipeline = Self::with_backends(config, loaded, outputs, factory)?;
        for (path, error) in failed {
            pipeline.report_failed_plugin(&path, &error)?;
        }
        Ok(pipeline)
    }

    /// Records a plugin that was skipped because it faulted while loading: in the summary and
    /// as a `PLUGIN_DISABLED` self-telemetry record.
    fn report_failed_plugin(&mut self, path: &Path, error: &PluginError) -> Result<(), RunError> {
        let file = path.display().to_string();
        let (stage, kind, message) = match error {
            PluginError::Faulted { stage, fault, .. } => {
                (stage.clone(), fault.kind.as_str(), fault.message.clone())
            }
            other => ("load".to_owned(), other.kind_label(), other.to_string()),
        };
        self.summary
            .failed_plugins
            .push((file.clone(), error.to_string()));
        let origin = runtime_origin("loader", enrich::now_unix_seconds());
        self.emitter.self_telemetry(
            &self.runs[0],
            Level::Error,
            wit::TelemetryType::Event,
            "PLUGIN_DISABLED",
            format!(
                "plugin {file} not loaded: {stage} failed ({kind}); the run goes on without it"
            ),
            json!({
                "subject_plugin": file,
                "stage": stage,
                "fault_kind": kind,
                "fault_message": message,
            }),
            origin,
        )
    }

    /// Builds the pipeline with recorder backends from `factory` (benchmarks use this to run
    /// native recorders through the same routing, validation and output).
    pub fn with_backends(
        config: &Config,
        plugins: Vec<LoadedPlugin>,
        outputs: Outputs,
        factory: Box<BackendFactory>,
    ) -> Result<Self, RunError> {
        let mut slots = Vec::new();
        for loaded in plugins {
            slots.push(PluginSlot {
                schemas: loaded.schemas.clone(),
                loaded: Arc::new(loaded),
            });
        }
        let run = RunContext {
            run_id: config.run.run_id.clone().unwrap_or_else(generate_run_id),
            testplan: config.run.testplan.clone(),
        };
        let summary = Summary {
            plugins: slots
                .iter()
                .map(|p| (p.loaded.id().to_owned(), PluginCounters::default()))
                .collect(),
            ..Summary::default()
        };
        Ok(Self {
            plugins: slots,
            slots: Vec::new(),
            nodes: Vec::new(),
            node_ids: HashMap::new(),
            interner: EndpointInterner::default(),
            request_metrics: RequestMetrics::new(config.request_metrics.clone()),
            plugin_metrics: PluginMetrics::new(),
            published_metrics: PublishedMetrics::default(),
            run_index: HashMap::from([(run.clone(), 0)]),
            runs: vec![run],
            emitter: Emitter {
                validator: Validator::new(),
                outputs,
            },
            batch_size: config.run.batch_size,
            factory,
            summary,
            required_failure: None,
            pending: std::collections::VecDeque::new(),
            free_slots: Vec::new(),
            free_nodes: Vec::new(),
            live_instances: 0,
            latest_time: f64::NEG_INFINITY,
            runs_of_nodes: RunsOfNodes::None,
            max_live_instances: config.run.max_live_instances,
            node_idle: (config.run.node_idle_seconds > 0)
                .then(|| std::time::Duration::from_secs(config.run.node_idle_seconds)),
            refused_nodes: std::collections::HashSet::new(),
            pool: RecorderPool::new(crate::pipeline::recorder_task::default_pool_threads())
                .map_err(RunError::Threads)?,
        })
    }

    /// What a source of `role` needs to send ([`Wants`]): requests when some recorder of
    /// the role subscribes to them or the request metrics are on (they feed the metrics
    /// outputs and the `REQUEST_SUMMARY` records every output gets), and the request extras
    /// those recorders asked for.
    pub fn wants(&self, role: RoleName) -> Wants {
        let mut wants = Wants {
            requests: self.request_metrics.enabled(),
            ..Wants::default()
        };
        let recorders = self
            .plugins
            .iter()
            .filter(|plugin| plugin.loaded.roles.contains(&role))
            .flat_map(|plugin| &plugin.loaded.recorders)
            .filter(|recorder| recorder.roles.contains(&role));
        for recorder in recorders {
            if recorder.events.contains(wit::EventKind::Request) {
                wants.requests = true;
                wants.url |= recorder.request_extras.contains(wit::RequestExtras::URL);
                wants.context |= recorder
                    .request_extras
                    .contains(wit::RequestExtras::CONTEXT);
            }
        }
        wants
    }

    /// The run's id and test plan.
    pub fn run_context(&self) -> &RunContext {
        &self.runs[0]
    }

    /// Registers a run (a live connection's run id and test plan) and returns its handle for
    /// [`Pipeline::process_in_run`]. Registering the same run twice gives the same handle.
    pub fn add_run(&mut self, run: RunContext) -> RunHandle {
        if let Some(index) = self.run_index.get(&run) {
            return RunHandle(*index);
        }
        self.runs.push(run.clone());
        self.run_index.insert(run, self.runs.len() - 1);
        RunHandle(self.runs.len() - 1)
    }

    /// Emits the results recorders have finished, without waiting, and flushes the outputs:
    /// a live source calls this when it is idle, so telemetry does not wait for the next
    /// event.
    pub fn poll(&mut self) -> Result<(), RunError> {
        self.emit_done(false)?;
        self.flush_outputs()
    }

    /// Flushes the outputs, then publishes the counters to those that show them.
    fn flush_outputs(&mut self) -> Result<(), RunError> {
        self.emitter.flush()?;
        self.publish_counters();
        Ok(())
    }

    /// Hands the counters so far to the outputs that show them (the Prometheus endpoint). A
    /// source that reads for long without polling calls this now and then.
    pub fn publish_counters(&mut self) {
        self.emitter
            .outputs
            .records_written(&mut self.summary.outputs);
        let metrics = self.published_metrics.combine(
            self.request_metrics.snapshot(&self.runs),
            self.plugin_metrics.snapshot(&self.runs),
        );
        self.summary.requests_not_aggregated = self.request_metrics.not_aggregated();
        self.emitter
            .outputs
            .publish_counters(&self.summary, self.live_instances as u64, &metrics);
    }

    /// Makes everything processed so far visible: partly filled batches go to their
    /// recorders, every outstanding call is waited for and its telemetry written, and the
    /// outputs are flushed. A live source acknowledges lines to its clients only after this,
    /// so an acknowledged line's telemetry is on disk (for recorders that write per batch).
    pub fn checkpoint(&mut self) -> Result<(), RunError> {
        for slot_index in 0..self.slots.len() {
            if !self.slots[slot_index].retired {
                self.flush(slot_index)?;
            }
        }
        self.emit_done(true)?;
        self.flush_outputs()
    }

    /// Takes a live source's own counters, for the metrics outputs (published at the next
    /// flush).
    pub fn set_source_counters(&mut self, counters: SourceCounters) {
        self.summary.source = Some(counters);
    }

    /// The runtime's own counters so far: what the summary will say at the end.
    pub fn counters(&self) -> &Summary {
        &self.summary
    }

    /// Totals across plugins so far, for a live status line.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals {
            events: self.summary.events,
            ..Totals::default()
        };
        for (_, counters) in &self.summary.plugins {
            totals.telemetry_out += counters.telemetry_out;
            totals.rejected += counters.rejected_total();
            totals.faults += counters.faults_total();
        }
        totals
    }

    /// Counts a line a live source skipped as bad (the source reports it).
    pub fn count_bad_line(&mut self) {
        self.summary.bad_lines += 1;
    }

    /// Marks the run as stopped early on a signal (for the summary).
    pub fn mark_interrupted(&mut self) {
        self.summary.interrupted = true;
    }

    /// Sets the lines the pipeline's one source has read so far (good, bad and blank).
    pub fn set_lines_read(&mut self, lines: u64) {
        self.summary.lines = lines;
    }

    /// Counts lines a source read (good, bad and blank), for sources that add them up.
    pub fn count_lines(&mut self, lines: u64) {
        self.summary.lines += lines;
    }

    /// The error to end the run with when a `required` plugin ended disabled.
    pub fn required_failure(&mut self) -> Option<RunError> {
        self.required_failure.take()
    }

    /// Whether a `required` plugin ended disabled (the run should stop).
    pub fn has_required_failure(&self) -> bool {
        self.required_failure.is_some()
    }

    /// Ends a node whose Locust process has quit: its recorders get what is batched and
    /// their `finish` call (their telemetry is written now), then their instances and threads
    /// are freed. A later event from the same run and node name starts new instances. A
    /// long-lived `serve` calls this so finished runs do not pile up.
    pub fn finish_node(&mut self, run: RunHandle, name: &str) -> Result<(), RunError> {
        let Some(index) = self.node_index(run.0, name) else {
            return Ok(());
        };
        self.retire_node(index)
    }

    fn node_index(&self, run: usize, name: &str) -> Option<usize> {
        self.node_ids.get(name).and_then(|runs| {
            runs.iter()
                .find(|(node_run, _)| *node_run == run)
                .map(|(_, index)| *index)
        })
    }

    /// Finishes a node's recorders (their telemetry is written now) and frees them: their
    /// tasks are stopped, and the slot and node indices go back for reuse.
    fn retire_node(&mut self, index: usize) -> Result<(), RunError> {
        let slots = std::mem::take(&mut self.nodes[index].slots);
        let time = self.nodes[index].last_time;
        for &slot in &slots {
            self.flush(slot)?;
            self.submit(slot, Job::Finish { time })?;
        }
        self.emit_done(true)?;
        for &slot_index in &slots {
            let slot = &mut self.slots[slot_index];
            slot.retired = true;
            slot.task.stop();
            // Drop the batch buffers too: they are most of a slot's memory.
            slot.spare = Vec::new();
            slot.builder = BatchBuilder::new(slot.builder.request_extras());
            slot.stdio_dropped_bytes = 0;
            self.free_slots.push(slot_index);
        }
        self.live_instances -= slots.len();
        let node = &mut self.nodes[index];
        node.retired = true;
        let name = std::mem::take(&mut node.name);
        if let Some(runs) = self.node_ids.get_mut(&name) {
            runs.retain(|(_, node)| *node != index);
            if runs.is_empty() {
                self.node_ids.remove(&name);
            }
        }
        self.free_nodes.push(index);
        Ok(())
    }

    /// Retires every node that sent no event for `node_idle_seconds` (by the host's clock),
    /// as if it had quit, and reports each one. A live source calls this now and then.
    pub fn retire_idle_nodes(&mut self, now: std::time::Instant) -> Result<(), RunError> {
        let Some(idle) = self.node_idle else {
            return Ok(());
        };
        let idle_nodes: Vec<usize> = (0..self.nodes.len())
            .filter(|&index| {
                let node = &self.nodes[index];
                !node.retired && now.saturating_duration_since(node.last_seen) >= idle
            })
            .collect();
        for index in idle_nodes {
            let node = &self.nodes[index];
            let (name, role, run, time) = (node.name.clone(), node.role, node.run, node.last_time);
            self.retire_node(index)?;
            self.summary.nodes_retired_idle += 1;
            crate::diag!(
                "swarmtel: node {name} sent nothing for {} s (node_idle_seconds): its recorders were finished and freed",
                idle.as_secs()
            );
            let origin = Origin {
                plugin: SELF_PLUGIN_ID,
                recorder: "nodes",
                role,
                node: &name,
                time: time_or_now(time),
                test: None,
            };
            self.emitter.self_telemetry(
                &self.runs[run],
                Level::Warning,
                wit::TelemetryType::Event,
                "NODE_IDLE_RETIRED",
                format!(
                    "node {name} sent no event for {} s: its recorders were finished and freed",
                    idle.as_secs()
                ),
                json!({ "idle_seconds": idle.as_secs(), "limit": "node_idle_seconds" }),
                origin,
            )?;
        }
        Ok(())
    }

    /// The run whose context the runtime's own summary records carry: the one every node
    /// belongs to, or the pipeline's own when nodes of several runs (or none) were seen.
    fn summary_run(&self) -> usize {
        match self.runs_of_nodes {
            RunsOfNodes::One(run) => run,
            RunsOfNodes::None | RunsOfNodes::Several => 0,
        }
    }

    /// Routes one event record to the recorders that want it. Recorder faults are handled,
    /// not returned; an `Err` is either a problem with the record itself or an output that
    /// cannot be written.
    pub fn process(&mut self, record: &EventRecord<'_>) -> Result<(), ProcessError> {
        self.process_in_run(RunHandle::DEFAULT, record)
    }

    /// Like [`Pipeline::process`], for a record of the run `run` (from [`Pipeline::add_run`]).
    pub fn process_in_run(
        &mut self,
        run: RunHandle,
        record: &EventRecord<'_>,
    ) -> Result<(), ProcessError> {
        let node = self.node_for(run.0, &record.node, record.role)?;
        if matches!(record.body, EventBody::Other(wit::Event::TestStart)) {
            // What the node's recorders hold from before this test (requests in a batch not
            // yet handed over, ticks due by now) goes out under the last test's id; then the
            // node is in the new test, with its id or, when the line has none, without one.
            for position in 0..self.nodes[node].slots.len() {
                let slot_index = self.nodes[node].slots[position];
                self.deliver_ticks(slot_index, record.time)?;
                self.flush(slot_index)?;
            }
            self.nodes[node].test = record.test_id.as_deref().map(Arc::from);
        }
        self.summary.events += 1;
        self.nodes[node].last_time = self.nodes[node].last_time.max(record.time);
        self.latest_time = self.latest_time.max(record.time);
        let kind = record.body.kind();
        let endpoint = match &record.body {
            EventBody::Request(request) => {
                let endpoint = self.interner.intern(&request.request_type, &request.name);
                self.request_metrics
                    .record_request(run.0, endpoint, request, record.time);
                Some(endpoint)
            }
            EventBody::Other(event) => {
                self.request_metrics
                    .record_event(run.0, record.role, event, record.time);
                None
            }
        };
        for position in 0..self.nodes[node].slots.len() {
            let slot_index = self.nodes[node].slots[position];
            self.deliver_ticks(slot_index, record.time)?;
            let slot = &mut self.slots[slot_index];
            if !slot.events.contains(kind) {
                continue;
            }
            if slot.disabled {
                // Lost to this recorder, counted. (Batches in a restart backoff are skipped,
                // and counted, by the recorder's task.)
                self.summary.plugins[slot.plugin].1.events_lost += 1;
                continue;
            }
            match (&record.body, endpoint) {
                (EventBody::Request(request), Some(endpoint)) => {
                    // Every non-request event is delivered at once, so a batch being filled
                    // holds requests only: "requests, then events" holds by construction.
                    debug_assert!(!slot.builder.has_events());
                    slot.builder
                        .push_request(endpoint, &self.interner, request, record.time);
                    if slot.builder.request_count() >= self.batch_size {
                        self.flush(slot_index)?;
                    }
                }
                (EventBody::Other(event), _) => {
                    slot.builder.push_event(record.time, event.clone());
                    self.flush(slot_index)?;
                }
                (EventBody::Request(_), None) => unreachable!("requests are interned"),
            }
        }
        Ok(())
    }

    fn deliver_ticks(&mut self, slot_index: usize, time: f64) -> Result<(), RunError> {
        let slot = &mut self.slots[slot_index];
        if slot.disabled {
            return Ok(());
        }
        let Some(clock) = slot.tick.as_mut() else {
            return Ok(());
        };
        for tick in clock.due(time) {
            self.slots[slot_index]
                .builder
                .push_event(tick, wit::Event::Tick);
            self.flush(slot_index)?;
        }
        Ok(())
    }

    fn node_for(&mut self, run: usize, name: &str, role: RoleName) -> Result<usize, ProcessError> {
        if let Some(index) = self.node_index(run, name) {
            let node = &mut self.nodes[index];
            if node.role != role {
                return Err(ProcessError::BadRecord(format!(
                    "node `{name}` was {} and is now {}; a node keeps its role",
                    node.role.as_str(),
                    role.as_str()
                )));
            }
            node.last_seen = std::time::Instant::now();
            return Ok(index);
        }
        let wanted: Vec<(usize, usize)> = self
            .plugins
            .iter()
            .enumerate()
            .filter(|(_, plugin)| plugin.loaded.roles.contains(&role))
            .flat_map(|(plugin_index, plugin)| {
                plugin
                    .loaded
                    .recorders
                    .iter()
                    .enumerate()
                    .filter(|(_, recorder)| recorder.roles.contains(&role))
                    .map(move |(recorder_index, _)| (plugin_index, recorder_index))
            })
            .collect();
        if self.live_instances + wanted.len() > self.max_live_instances {
            return Err(match self.refuse_node(run, name, role) {
                Ok(message) => ProcessError::BadRecord(message),
                Err(error) => ProcessError::Run(error),
            });
        }
        let index = self.free_nodes.pop().unwrap_or(self.nodes.len());
        let mut slots = Vec::with_capacity(wanted.len());
        for (plugin_index, recorder_index) in wanted {
            let plugin = &self.plugins[plugin_index];
            let recorder = &plugin.loaded.recorders[recorder_index];
            let backend = (self.factory)(&plugin.loaded, recorder, role, name);
            let slot = RecorderSlot {
                plugin: plugin_index,
                recorder: recorder_index,
                node: index,
                task: self.pool.spawn(backend, plugin.loaded.limits),
                builder: BatchBuilder::new(recorder.request_extras),
                spare: Vec::new(),
                events: recorder.events,
                tick: recorder.tick_interval_ms.map(TickClock::new),
                disabled: false,
                stdio_dropped_bytes: 0,
                retired: false,
                validation_overruns: 0,
            };
            match self.free_slots.pop() {
                Some(free) => {
                    self.slots[free] = slot;
                    slots.push(free);
                }
                None => {
                    slots.push(self.slots.len());
                    self.slots.push(slot);
                }
            }
        }
        self.live_instances += slots.len();
        let node = Node {
            name: name.to_owned(),
            role,
            run,
            slots,
            last_time: f64::NEG_INFINITY,
            last_seen: std::time::Instant::now(),
            retired: false,
            test: None,
        };
        if index == self.nodes.len() {
            self.nodes.push(node);
        } else {
            self.nodes[index] = node;
        }
        self.node_ids
            .entry(name.to_owned())
            .or_default()
            .push((run, index));
        self.summary.nodes += 1;
        self.runs_of_nodes = match self.runs_of_nodes {
            RunsOfNodes::None => RunsOfNodes::One(run),
            RunsOfNodes::One(seen) if seen == run => RunsOfNodes::One(run),
            _ => RunsOfNodes::Several,
        };
        Ok(index)
    }

    /// Counts an event refused because its node's recorders would pass `max_live_instances`,
    /// and reports the node the first time (for at most [`REFUSED_NODES_REPORTED`] nodes).
    /// Returns the event's error message.
    fn refuse_node(&mut self, run: usize, name: &str, role: RoleName) -> Result<String, RunError> {
        self.summary.events_refused_instance_cap += 1;
        let message = format!(
            "node `{name}` refused: its recorders would pass the cap of {} live recorder instances (max_live_instances)",
            self.max_live_instances
        );
        if self.refused_nodes.len() < REFUSED_NODES_REPORTED
            && self.refused_nodes.insert((run, name.to_owned()))
        {
            crate::diag!("swarmtel: {message}");
            let origin = Origin {
                plugin: SELF_PLUGIN_ID,
                recorder: "nodes",
                role,
                node: name,
                time: enrich::now_unix_seconds(),
                test: None,
            };
            self.emitter.self_telemetry(
                &self.runs[run],
                Level::Error,
                wit::TelemetryType::Event,
                "NODE_REFUSED",
                message.clone(),
                json!({
                    "limit": "max_live_instances",
                    "max_live_instances": self.max_live_instances,
                    "live_instances": self.live_instances,
                }),
                origin,
            )?;
        }
        Ok(message)
    }

    /// Hands a slot's batch, if it has one, to the slot's task.
    fn flush(&mut self, slot_index: usize) -> Result<(), RunError> {
        let slot = &mut self.slots[slot_index];
        if slot.builder.is_empty() {
            return Ok(());
        }
        let time = slot.builder.last_time();
        let delivered = slot.builder.stream_event_count() as u64;
        let spare = slot.spare.pop().unwrap_or_else(BatchBuilder::empty_batch);
        let batch = slot.builder.take_batch(spare);
        self.submit(
            slot_index,
            Job::Handle {
                batch,
                time,
                delivered,
            },
        )
    }

    /// Hands a job to a slot's task, then emits whatever results are ready (waiting for the
    /// oldest when too many are outstanding).
    fn submit(&mut self, slot_index: usize, job: Job) -> Result<(), RunError> {
        self.slots[slot_index].task.submit(job);
        let test = self.nodes[self.slots[slot_index].node].test.clone();
        self.pending.push_back(Pending {
            slot: slot_index,
            test,
        });
        self.emit_done(false)?;
        while self.pending.len() > MAX_PENDING {
            self.emit_one(true)?;
        }
        Ok(())
    }

    /// Emits finished results in hand-over order: those ready, or (`wait`) all outstanding.
    fn emit_done(&mut self, wait: bool) -> Result<(), RunError> {
        while !self.pending.is_empty() {
            if !self.emit_one(wait)? {
                break;
            }
        }
        Ok(())
    }

    /// Emits the oldest outstanding result; returns false when it is not ready and `wait` is
    /// off.
    fn emit_one(&mut self, wait: bool) -> Result<bool, RunError> {
        let Some(&Pending {
            slot: slot_index, ..
        }) = self.pending.front()
        else {
            return Ok(false);
        };
        let task = &self.slots[slot_index].task;
        let done = if wait {
            task.wait_done()
        } else {
            match task.try_done() {
                Some(done) => done,
                None => return Ok(false),
            }
        };
        let test = self.pending.pop_front().and_then(|pending| pending.test);
        self.handle_done(slot_index, done, test)?;
        Ok(true)
    }

    /// Handles one finished call: telemetry to validation and output, a fault to the summary
    /// and self-telemetry.
    fn handle_done(
        &mut self,
        slot_index: usize,
        done: Done,
        test: Option<Arc<str>>,
    ) -> Result<(), RunError> {
        let Done {
            outcome,
            time,
            delivered,
            batch,
            stdio_dropped_bytes,
        } = done;
        let slot = &mut self.slots[slot_index];
        // A running total over the slot's instances: count what it grew by, now.
        let stdio_grown = stdio_dropped_bytes.saturating_sub(slot.stdio_dropped_bytes);
        slot.stdio_dropped_bytes = stdio_dropped_bytes;
        if let Some(mut batch) = batch {
            BatchBuilder::recycle(&mut batch);
            slot.spare.push(batch);
        }
        let plugin = &self.plugins[slot.plugin];
        let counters = &mut self.summary.plugins[slot.plugin].1;
        counters.stdio_dropped_bytes += stdio_grown;
        let node = &self.nodes[slot.node];
        let recorder = &plugin.loaded.recorders[slot.recorder];
        let origin = Origin {
            plugin: &plugin.loaded.info.id,
            recorder: &recorder.name,
            role: node.role,
            node: &node.name,
            time,
            test: test.as_deref(),
        };
        match outcome {
            Outcome::Skipped => {
                // Disabled, or waiting out its restart backoff: lost to it, counted.
                counters.events_lost += delivered;
            }
            Outcome::Items { items, restarted } => {
                let wit::RecorderOutput {
                    telemetry: items,
                    metrics: points,
                } = items;
                counters.events_in += delivered;
                if restarted {
                    counters.restarts += 1;
                    self.emitter.self_telemetry(
                        &self.runs[node.run],
                        Level::Info,
                        wit::TelemetryType::Event,
                        "PLUGIN_RESTARTED",
                        format!(
                            "plugin {} recorder {} restarted after a fault",
                            origin.plugin, origin.recorder
                        ),
                        json!({
                            "subject_plugin": origin.plugin,
                            "recorder": origin.recorder,
                        }),
                        origin,
                    )?;
                }
                let limits: Limits = plugin.loaded.limits;
                let Emitted {
                    rejected: rejected_here,
                    over_budget,
                } = self.emitter.emit_items(
                    items,
                    &plugin.schemas,
                    &limits,
                    &self.runs[node.run],
                    &origin,
                    counters,
                )?;
                if rejected_here > 0 {
                    self.emitter.self_telemetry(
                        &self.runs[node.run],
                        Level::Warning,
                        wit::TelemetryType::Event,
                        "TELEMETRY_REJECTED",
                        format!(
                            "{rejected_here} telemetry items from plugin {} rejected; see the dead-letter output",
                            origin.plugin
                        ),
                        json!({
                            "subject_plugin": origin.plugin,
                            "recorder": origin.recorder,
                            "rejected": rejected_here,
                        }),
                        origin,
                    )?;
                }
                if !points.is_empty() {
                    let rejections =
                        self.plugin_metrics
                            .record(slot.plugin, node.run, time, points, &limits);
                    if let Some(first) = rejections.first() {
                        for rejection in &rejections {
                            *counters.rejected.entry(rejection.reason).or_insert(0) += 1;
                        }
                        self.emitter.self_telemetry(
                            &self.runs[node.run],
                            Level::Warning,
                            wit::TelemetryType::Event,
                            "METRICS_REJECTED",
                            format!(
                                "{} metric points from plugin {} rejected; the first: {}",
                                rejections.len(),
                                origin.plugin,
                                first.message
                            ),
                            json!({
                                "subject_plugin": origin.plugin,
                                "recorder": origin.recorder,
                                "rejected": rejections.len(),
                                "reason": first.reason,
                            }),
                            origin,
                        )?;
                    }
                }
                if over_budget {
                    slot.validation_overruns += 1;
                    if slot.validation_overruns >= limits.max_faults && !slot.disabled {
                        // Telemetry that costs more to validate than the plugin's own call
                        // time, call after call: the recorder goes, like one that faults.
                        slot.disabled = true;
                        counters.disabled += 1;
                        let message = format!(
                            "plugin {} recorder {} on {} disabled: {} calls used up their validation time ({} ms, cpu_ms_per_call)",
                            origin.plugin,
                            origin.recorder,
                            origin.node,
                            slot.validation_overruns,
                            limits.cpu_ms_per_call
                        );
                        crate::diag!("swarmtel: {message}");
                        if plugin.loaded.required && self.required_failure.is_none() {
                            self.required_failure = Some(RunError::RequiredPluginFailed {
                                id: origin.plugin.to_owned(),
                                reason: message.clone(),
                            });
                        }
                        self.emitter.self_telemetry(
                            &self.runs[node.run],
                            Level::Error,
                            wit::TelemetryType::Event,
                            "PLUGIN_DISABLED",
                            message,
                            json!({
                                "subject_plugin": origin.plugin,
                                "recorder": origin.recorder,
                                "fault_kind": "validation_budget",
                                "calls_over_budget": slot.validation_overruns,
                            }),
                            origin,
                        )?;
                    }
                }
            }
            Outcome::Fault {
                fault,
                faults,
                disabled: disable,
                backoff_ms,
            } => {
                let limits = plugin.loaded.limits;
                counters.events_lost += delivered;
                *counters.faults.entry(fault.kind.as_str()).or_insert(0) += 1;
                crate::diag!(
                    "swarmtel: plugin {} recorder {} on {}: {fault}; {} events lost{}",
                    origin.plugin,
                    origin.recorder,
                    origin.node,
                    delivered,
                    if disable {
                        format!(
                            "; disabled after {faults} faults in {}s",
                            limits.fault_window_seconds
                        )
                    } else {
                        format!("; restarting after {backoff_ms} ms of event time")
                    }
                );
                if disable {
                    slot.disabled = true;
                    counters.disabled += 1;
                    if plugin.loaded.required && self.required_failure.is_none() {
                        self.required_failure = Some(RunError::RequiredPluginFailed {
                            id: origin.plugin.to_owned(),
                            reason: format!(
                                "recorder {} on {} disabled after {faults} faults; last: {fault}",
                                origin.recorder, origin.node
                            ),
                        });
                    }
                }
                self.emitter.self_telemetry(
                    &self.runs[node.run],
                    Level::Warning,
                    wit::TelemetryType::Event,
                    "PLUGIN_FAULT",
                    format!(
                        "plugin {} recorder {} faulted: {fault}",
                        origin.plugin, origin.recorder
                    ),
                    json!({
                        "subject_plugin": origin.plugin,
                        "recorder": origin.recorder,
                        "fault_kind": fault.kind.as_str(),
                        "fault_message": fault.message,
                        "faults": faults,
                        "events_lost": delivered,
                        "restart_backoff_ms": if disable { 0 } else { backoff_ms },
                    }),
                    origin,
                )?;
                if disable {
                    self.emitter.self_telemetry(
                        &self.runs[node.run],
                        Level::Error,
                        wit::TelemetryType::Event,
                        "PLUGIN_DISABLED",
                        format!(
                            "plugin {} recorder {} disabled after {faults} faults",
                            origin.plugin, origin.recorder
                        ),
                        json!({
                            "subject_plugin": origin.plugin,
                            "recorder": origin.recorder,
                            "faults": faults,
                        }),
                        origin,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Writes one of the runtime's own records for the whole run (a source's own summary,
    /// say), stamped with the run the nodes belong to and the latest event time.
    pub fn record_run_summary(
        &mut self,
        name: &str,
        message: String,
        fields: Value,
    ) -> Result<(), RunError> {
        let origin = runtime_origin("summary", time_or_now(self.latest_time));
        let run = self.summary_run();
        self.emitter.self_telemetry(
            &self.runs[run],
            Level::Info,
            wit::TelemetryType::Metric,
            name,
            message,
            fields,
            origin,
        )
    }

    /// Ends the run: delivers pending batches, calls every recorder's `finish`, writes the
    /// summary records and flushes the outputs.
    pub fn finish(&mut self) -> Result<Summary, RunError> {
        let summary_run = self.summary_run();
        for slot_index in 0..self.slots.len() {
            if self.slots[slot_index].retired {
                continue;
            }
            self.flush(slot_index)?;
            let time = self.nodes[self.slots[slot_index].node].last_time;
            self.submit(slot_index, Job::Finish { time })?;
        }
        self.emit_done(true)?;
        let time = time_or_now(self.latest_time);
        for index in 0..self.plugins.len() {
            let id = self.plugins[index].loaded.id().to_owned();
            let counters = self.summary.plugins[index].1.clone();
            let origin = runtime_origin("summary", time);
            self.emitter.self_telemetry(
                &self.runs[summary_run],
                Level::Info,
                wit::TelemetryType::Metric,
                "PLUGIN_SUMMARY",
                format!(
                    "plugin {id}: {} events in, {} telemetry out, {} rejected, {} faults",
                    counters.events_in,
                    counters.telemetry_out,
                    counters.rejected_total(),
                    counters.faults_total()
                ),
                Value::Object(counters.summary_fields(&id)),
                origin,
            )?;
        }
        for (run, message, fields) in self.request_metrics.summaries() {
            let origin = runtime_origin("summary", time);
            self.emitter.self_telemetry(
                &self.runs[run],
                Level::Info,
                wit::TelemetryType::Metric,
                "REQUEST_SUMMARY",
                message,
                fields,
                origin,
            )?;
        }
        self.flush_outputs()?;
        self.emitter.outputs.finish();
        // What remote outputs could not deliver is known once they have drained: published
        // again for the endpoints that linger.
        self.publish_counters();
        Ok(self.summary.clone())
    }
}

/// The metrics last handed to the outputs: the built-in request metrics and the plugins'
/// points of every run in one list, rebuilt only when either changed.
#[derive(Default)]
struct PublishedMetrics {
    request: Arc<Vec<RunMetrics>>,
    plugins: Arc<Vec<RunMetrics>>,
    combined: Arc<Vec<RunMetrics>>,
}

impl PublishedMetrics {
    fn combine(
        &mut self,
        request: Arc<Vec<RunMetrics>>,
        plugins: Arc<Vec<RunMetrics>>,
    ) -> Arc<Vec<RunMetrics>> {
        if plugins.is_empty() {
            return request;
        }
        if !Arc::ptr_eq(&request, &self.request) || !Arc::ptr_eq(&plugins, &self.plugins) {
            // Each keeps its own start time (the request metrics' moves at a stats reset);
            // the outputs put a run's entries under one resource.
            self.combined = Arc::new(request.iter().chain(plugins.iter()).cloned().collect());
            self.request = request;
            self.plugins = plugins;
        }
        self.combined.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique() {
        assert_ne!(generate_run_id(), generate_run_id());
    }
}
