//! The request path, wasm against native.
//!
//! * `batch/{wasm,native}/N`: one `RecorderBackend::handle` call on a batch of N request
//!   events, reported per event: the cost of crossing into the sandbox plus recording.
//!   `batch/wasm_noop/N` sends the same batch to a guest that ignores requests: crossing only.
//! * `replay/{wasm,native}`: a generated stream through the whole `Pipeline` (decode, route,
//!   record, validate, enrich, write to `io::sink`); only the recorder backend differs.
//! * `stages/...`: where replay time goes: decode only, and the pipeline with a recorder
//!   that does nothing.
//! * `polyglot/{rust,python,js_quickjs,js_spidermonkey}/1024`: the same request-stats
//!   recorder written in each language (built by `scripts/build-polyglot.sh`), one call on a
//!   batch of 1024.
//!
//! The native backend runs the request-stats guest's logic (`RequestStatsRecorder` plus the
//! guest SDK's endpoint table) with the same `request_stats::aggregate` code, so the
//! difference is the sandbox. Before measuring, both replays are run once into memory and
//! their outputs compared byte for byte.
//!
//! Guests are built from source by `scripts/build-guests.sh`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use request_stats::aggregate::RequestStats;
use swarmtel::bindings::types as wit;
use swarmtel::config::{Config, Limits, RoleName};
use swarmtel::pipeline::route::{BatchBuilder, EndpointInterner};
use swarmtel::pipeline::{BackendFactory, Pipeline};
use swarmtel::plugin::{self, LoadedPlugin, RecorderManifest};
use swarmtel::sandbox::{Fault, RecorderBackend, Sandbox, WasmRecorder};
use swarmtel::sinks::Outputs;
use swarmtel::sources::ingest::{self, EventBody};

/// Batch sizes of the per-event benchmark.
const BATCH_SIZES: [usize; 4] = [1, 64, 256, 1024];
/// Workers and request events of the replay stream.
const REPLAY_WORKERS: usize = 4;
const REPLAY_REQUESTS: usize = 200_000;

// ---------------------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------------------

/// Builds the guests and returns the folder holding `request_stats.wasm`.
fn build_guests() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(root.join("scripts/build-guests.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/build-guests.sh");
    assert!(
        output.status.success(),
        "scripts/build-guests.sh failed: {}",
        output.status
    );
    let dir = PathBuf::from(String::from_utf8(output.stdout).expect("UTF-8 path").trim());
    assert!(
        dir.join("request_stats.wasm").is_file(),
        "no request_stats.wasm in {}",
        dir.display()
    );
    dir
}

/// The config of a replay: the request-stats plugin with default options and limits.
fn bench_config(guests: &Path) -> Config {
    let plugin = guests.join("request_stats.wasm");
    let text = format!(
        "[run]\ntestplan = \"bench\"\nrun_id = \"bench\"\n\n[[plugins]]\npath = {:?}\n",
        plugin.display().to_string()
    );
    Config::parse(&text, &guests.join("bench.toml"), guests).expect("bench config")
}

/// Everything the benchmarks share: the sandbox, the compiled plugin and its config.
struct Setup {
    sandbox: Arc<Sandbox>,
    config: Config,
    plugin: LoadedPlugin,
    guests: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let guests = build_guests();
        let config = bench_config(&guests);
        let sandbox = Arc::new(Sandbox::new().expect("sandbox"));
        let entry = &config.plugins[0];
        let plugin = plugin::load_plugin(&sandbox, &config.plugin_path(entry), entry, &|_| None)
            .expect("load request-stats");
        Self {
            sandbox,
            config,
            plugin,
            guests,
        }
    }

    fn recorder(&self) -> &RecorderManifest {
        &self.plugin.recorders[0]
    }

    /// `LoadedPlugin` is not `Clone`, and `Pipeline::with_backends` takes it by value: rebuild
    /// it from its parts (`pre` is a cheap handle to the compiled, linked component).
    fn plugin_copy(&self) -> LoadedPlugin {
        self.plugin.clone()
    }

    fn wasm_factory(&self) -> Box<BackendFactory> {
        let sandbox = self.sandbox.clone();
        Box::new(
            move |plugin: &LoadedPlugin, recorder: &RecorderManifest, role, node: &str| {
                Box::new(plugin.wasm_recorder(&sandbox, recorder, role, node))
                    as Box<dyn RecorderBackend>
            },
        )
    }

    /// A started wasm recorder for role worker, node `worker-0`.
    fn wasm_recorder(&self) -> WasmRecorder {
        let config =
            plugin::recorder_config(&self.plugin, self.recorder(), RoleName::Worker, "worker-0");
        let mut recorder = WasmRecorder::new(
            self.sandbox.clone(),
            self.plugin.pre.clone(),
            self.plugin.id(),
            self.plugin.limits,
            self.plugin.capabilities,
            config,
        );
        recorder.start().expect("start wasm recorder");
        recorder
    }

    /// A started custom-telemetry recorder: it does not subscribe to requests, so the guest
    /// SDK hands them to the default `on_requests`, which does nothing with them. Its `handle`
    /// on a request batch is the cost of crossing (lowering the columns into the guest, the
    /// SDK's endpoint mapping) without recording.
    fn wasm_noop_recorder(&self) -> WasmRecorder {
        let (info, pre) =
            plugin::load_component(&self.sandbox, &self.guests.join("custom_telemetry.wasm"))
                .expect("load custom-telemetry");
        let config = wit::RecorderConfig {
            recorder: info.recorders[0].name.clone(),
            role: wit::Role::Worker,
            node: "worker-0".into(),
            options: Vec::new(),
        };
        let mut recorder = WasmRecorder::new(
            self.sandbox.clone(),
            pre,
            &info.id,
            Limits::default(),
            Default::default(),
            config,
        );
        recorder.start().expect("start custom-telemetry recorder");
        recorder
    }

    /// A pipeline over `output` whose recorders come from `factory`.
    fn pipeline(&self, factory: Box<BackendFactory>, output: Box<dyn Write + Send>) -> Pipeline {
        let outputs = Outputs::json_lines(output, Box::new(std::io::sink()));
        Pipeline::with_backends(&self.config, vec![self.plugin_copy()], outputs, factory)
            .expect("pipeline")
    }
}

/// A batch of `n` request events, built as the pipeline builds them.
fn request_batch(n: usize, extras: wit::RequestExtras) -> wit::EventBatch {
    let stream = swarmtel::sources::synthetic::request_stream(1, n);
    let text = std::str::from_utf8(&stream).expect("UTF-8");
    let mut interner = EndpointInterner::default();
    let mut builder = BatchBuilder::new(extras);
    for line in text.lines() {
        let record = ingest::decode_line(line).expect("synthetic line decodes");
        if let EventBody::Request(request) = &record.body {
            let endpoint = interner.intern(&request.request_type, &request.name);
            builder.push_request(endpoint, &interner, request, record.time);
        }
    }
    assert_eq!(builder.request_count(), n);
    builder.batch().clone()
}

/// The replay stream, shared between iterations without copying.
#[derive(Clone)]
struct SharedBytes {
    data: Arc<Vec<u8>>,
    position: usize,
}

impl SharedBytes {
    fn new(data: Vec<u8>) -> Self {
        Self {
            data: Arc::new(data),
            position: 0,
        }
    }
}

impl Read for SharedBytes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.data[self.position..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.position += n;
        Ok(n)
    }
}

/// An in-memory output for the equivalence check.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The native recorder
// ---------------------------------------------------------------------------------------

/// The request-stats guest run natively: the guest SDK's per-recorder endpoint table (a
/// `BTreeMap` keyed by (request type, name)) and `RequestStatsRecorder`'s hooks, over the same
/// `RequestStats` aggregation.
struct NativeRequestStats {
    // guest SDK: `EndpointTable` and the per-batch id buffers.
    by_key: BTreeMap<(String, String), usize>,
    endpoints: Vec<wit::Endpoint>,
    batch_endpoints: Vec<usize>,
    request_ids: Vec<usize>,
    // request-stats: `RequestStatsRecorder`.
    stats: RequestStats,
    periodic: bool,
    requests_since_report: u64,
}

impl NativeRequestStats {
    fn new(options: &[wit::OptionSetting]) -> Self {
        let periodic = options
            .iter()
            .find(|o| o.name == "periodic")
            .and_then(|o| match o.value {
                wit::OptionValue::Boolean(flag) => Some(flag),
                _ => None,
            })
            .unwrap_or(true);
        Self {
            by_key: BTreeMap::new(),
            endpoints: Vec::new(),
            batch_endpoints: Vec::new(),
            request_ids: Vec::new(),
            stats: RequestStats::default(),
            periodic,
            requests_since_report: 0,
        }
    }

    fn intern(&mut self, endpoint: &wit::Endpoint) -> usize {
        let key = (endpoint.request_type.clone(), endpoint.name.clone());
        if let Some(id) = self.by_key.get(&key) {
            return *id;
        }
        let id = self.endpoints.len();
        self.endpoints.push(endpoint.clone());
        self.by_key.insert(key, id);
        id
    }

    fn on_requests(&mut self, columns: &wit::RequestColumns) {
        let ids = &self.request_ids;
        for &id in ids {
            if id >= self.stats.endpoint_count() {
                let endpoint = &self.endpoints[id];
                self.stats
                    .ensure_endpoint(id, &endpoint.request_type, &endpoint.name);
            }
        }
        for ((&id, &time), &length) in ids
            .iter()
            .zip(&columns.response_time_ms)
            .zip(&columns.response_length)
        {
            self.stats.record(id, time, length);
        }
        for failure in &columns.failures {
            self.stats.record_failure(ids[failure.index as usize]);
        }
        self.requests_since_report += ids.len() as u64;
    }

    fn report(&mut self, is_final: bool, out: &mut Vec<wit::Telemetry>) {
        for (message, fields) in self.stats.report(is_final) {
            out.push(wit::Telemetry {
                telemetry_type: wit::TelemetryType::Metric,
                name: request_stats::TELEMETRY_NAME.to_owned(),
                message,
                fields: serde_json::to_string(&fields).expect("fields serialize"),
            });
        }
        self.requests_since_report = 0;
    }
}

impl RecorderBackend for NativeRequestStats {
    fn handle(&mut self, batch: &wit::EventBatch) -> Result<wit::RecorderOutput, Fault> {
        let mut out = Vec::new();
        let columns = &batch.requests;
        if !columns.endpoint.is_empty() {
            self.batch_endpoints.clear();
            for endpoint in &columns.endpoints {
                let id = self.intern(endpoint);
                self.batch_endpoints.push(id);
            }
            self.request_ids.clear();
            let batch_endpoints = &self.batch_endpoints;
            self.request_ids.extend(
                columns
                    .endpoint
                    .iter()
                    .filter_map(|&local| batch_endpoints.get(local as usize).copied()),
            );
            self.on_requests(columns);
        }
        for timed in &batch.events {
            match timed.event {
                wit::Event::Tick if self.periodic && self.requests_since_report > 0 => {
                    self.report(false, &mut out);
                }
                wit::Event::TestStop => self.report(true, &mut out),
                wit::Event::ResetStats => self.stats = RequestStats::default(),
                _ => {}
            }
        }
        Ok(telemetry_only(out))
    }

    fn finish(&mut self) -> Result<wit::RecorderOutput, Fault> {
        let mut out = Vec::new();
        if self.requests_since_report > 0 {
            self.report(true, &mut out);
        }
        Ok(telemetry_only(out))
    }
}

fn native_factory() -> Box<BackendFactory> {
    Box::new(|plugin: &LoadedPlugin, _: &RecorderManifest, _, _: &str| {
        Box::new(NativeRequestStats::new(&plugin.options)) as Box<dyn RecorderBackend>
    })
}

/// A recorder that records nothing: the pipeline's own cost.
struct NullBackend;

impl RecorderBackend for NullBackend {
    fn handle(&mut self, batch: &wit::EventBatch) -> Result<wit::RecorderOutput, Fault> {
        black_box(batch);
        Ok(telemetry_only(Vec::new()))
    }

    fn finish(&mut self) -> Result<wit::RecorderOutput, Fault> {
        Ok(telemetry_only(Vec::new()))
    }
}

/// A recorder call's output with telemetry and no metric points.
fn telemetry_only(telemetry: Vec<wit::Telemetry>) -> wit::RecorderOutput {
    wit::RecorderOutput {
        telemetry,
        metrics: Vec::new(),
    }
}

fn null_factory() -> Box<BackendFactory> {
    Box::new(|_: &LoadedPlugin, _: &RecorderManifest, _, _: &str| {
        Box::new(NullBackend) as Box<dyn RecorderBackend>
    })
}

// ---------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------

fn batch(c: &mut Criterion, setup: &Setup) {
    let mut group = c.benchmark_group("batch");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(50);
    for n in BATCH_SIZES {
        let batch = request_batch(n, setup.recorder().request_extras);
        group.throughput(Throughput::Elements(n as u64));
        let mut wasm = setup.wasm_recorder();
        group.bench_function(format!("wasm/{n}"), |b| {
            b.iter(|| black_box(wasm.handle(black_box(&batch)).expect("wasm handle")))
        });
        let mut native = NativeRequestStats::new(&setup.plugin.options);
        group.bench_function(format!("native/{n}"), |b| {
            b.iter(|| black_box(native.handle(black_box(&batch)).expect("native handle")))
        });
        let mut noop = setup.wasm_noop_recorder();
        group.bench_function(format!("wasm_noop/{n}"), |b| {
            b.iter(|| black_box(noop.handle(black_box(&batch)).expect("wasm handle")))
        });
    }
    group.finish();
}

fn run_replay(pipeline: Pipeline, stream: &SharedBytes) -> swarmtel::pipeline::Summary {
    let stop = AtomicBool::new(false);
    swarmtel::sources::replay::run_stream(pipeline, Box::new(stream.clone()), "bench", false, &stop)
        .expect("replay")
}

/// Replays once into memory with each backend; the outputs must be identical.
fn check_equivalence(setup: &Setup, stream: &SharedBytes) {
    let run = |factory| {
        let captured = Captured::default();
        let summary = run_replay(setup.pipeline(factory, Box::new(captured.clone())), stream);
        let counters = summary.plugin("request-stats").expect("counters").clone();
        // Requests, plus the ticks and test stops the recorder subscribed to.
        assert!(counters.events_in as usize > REPLAY_REQUESTS);
        assert_eq!(counters.events_lost, 0);
        assert_eq!(counters.faults_total() + counters.rejected_total(), 0);
        assert!(counters.telemetry_out > 0);
        let bytes = captured.0.lock().unwrap().clone();
        (counters.telemetry_out, bytes)
    };
    let (wasm_items, wasm) = run(setup.wasm_factory());
    let (native_items, native) = run(native_factory());
    assert!(
        wasm == native,
        "wasm and native replays differ ({wasm_items} vs {native_items} items)"
    );
    eprintln!(
        "replay check: wasm and native outputs identical ({wasm_items} telemetry items, {} bytes)",
        wasm.len()
    );
}

/// Process CPU time (all threads), from /proc/self/stat in clock ticks of 10 ms.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Prints CPU time against wall time over a few replays: the pipeline also runs a reader
/// thread and the epoch ticker, so wall-clock rate alone does not say "one core".
fn report_cpu(setup: &Setup, stream: &SharedBytes) {
    const RUNS: usize = 8;
    for (name, make) in [
        (
            "wasm",
            &(|| setup.wasm_factory()) as &dyn Fn() -> Box<BackendFactory>,
        ),
        ("native", &native_factory),
    ] {
        let pipelines: Vec<Pipeline> = (0..RUNS)
            .map(|_| setup.pipeline(make(), Box::new(std::io::sink())))
            .collect();
        let (Some(cpu_start), wall_start) = (process_cpu(), Instant::now()) else {
            return;
        };
        for pipeline in pipelines {
            black_box(run_replay(pipeline, stream));
        }
        let wall = wall_start.elapsed();
        let cpu = process_cpu().unwrap_or_default().saturating_sub(cpu_start);
        let events = (RUNS * REPLAY_REQUESTS) as f64;
        eprintln!(
            "replay cpu {name}: {:.2} M events/s wall, {:.2} M events per CPU-second, {:.2} cores busy",
            events / wall.as_secs_f64() / 1e6,
            events / cpu.as_secs_f64() / 1e6,
            cpu.as_secs_f64() / wall.as_secs_f64()
        );
    }
}

fn replay(c: &mut Criterion, setup: &Setup) {
    let stream = SharedBytes::new(swarmtel::sources::synthetic::request_stream(
        REPLAY_WORKERS,
        REPLAY_REQUESTS,
    ));
    check_equivalence(setup, &stream);

    let mut group = c.benchmark_group("replay");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(REPLAY_REQUESTS as u64));
    group.bench_function("wasm", |b| {
        b.iter_batched(
            || setup.pipeline(setup.wasm_factory(), Box::new(std::io::sink())),
            |pipeline| run_replay(pipeline, &stream),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("native", |b| {
        b.iter_batched(
            || setup.pipeline(native_factory(), Box::new(std::io::sink())),
            |pipeline| run_replay(pipeline, &stream),
            BatchSize::PerIteration,
        )
    });
    group.finish();

    // Where the time goes: decoding alone, and the pipeline around a recorder doing nothing.
    let mut group = c.benchmark_group("stages");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(REPLAY_REQUESTS as u64));
    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut decoded = 0usize;
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', &stream.data) {
                let line = &stream.data[start..end];
                start = end + 1;
                if line.is_empty() {
                    continue;
                }
                let line = std::str::from_utf8(line).expect("UTF-8");
                let record = ingest::decode_line(line).expect("decodes");
                decoded += usize::from(matches!(record.body, EventBody::Request(_)));
                black_box(record);
            }
            decoded
        })
    });
    group.bench_function("pipeline_null_recorder", |b| {
        b.iter_batched(
            || setup.pipeline(null_factory(), Box::new(std::io::sink())),
            |pipeline| run_replay(pipeline, &stream),
            BatchSize::PerIteration,
        )
    });
    group.finish();

    if benchmarking() {
        report_cpu(setup, &stream);
    }
}

/// Whether this is `cargo bench` measuring (not `cargo test --benches`, `--test` or `--list`).
fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|arg| arg == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// The request-stats recorder in Rust, Python and JavaScript (both engines): one `handle` call on a batch
/// of 1024 request events each, reported per event.
fn polyglot(c: &mut Criterion, setup: &Setup) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(root.join("scripts/build-polyglot.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/build-polyglot.sh");
    assert!(output.status.success(), "scripts/build-polyglot.sh failed");
    let paths: Vec<PathBuf> = String::from_utf8(output.stdout)
        .expect("UTF-8 paths")
        .lines()
        .map(PathBuf::from)
        .collect();
    let mut group = c.benchmark_group("polyglot");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(6))
        .sample_size(30);
    let n = 1024;
    let languages = ["rust", "python", "js_quickjs", "js_spidermonkey"];
    for (language, path) in languages.into_iter().zip(&paths) {
        // componentize-js instances keep about 24 bytes per request handed to them
        // (ComponentizeJS#350): the millions of requests of a measurement need room.
        let limits = if language == "js_spidermonkey" {
            "[plugins.limits]\nmemory_mib = 2048\n"
        } else {
            ""
        };
        let text = format!(
            "[run]\ntestplan = \"bench\"\n\n[[plugins]]\npath = {:?}\n{limits}",
            path.display().to_string()
        );
        let config = Config::parse(&text, &setup.guests.join("polyglot.toml"), &setup.guests)
            .expect("polyglot config");
        let entry = &config.plugins[0];
        let plugin = plugin::load_plugin(&setup.sandbox, path, entry, &|_| None)
            .unwrap_or_else(|error| panic!("load {}: {error}", path.display()));
        let recorder = &plugin.recorders[0];
        let batch = request_batch(n, recorder.request_extras);
        let config = plugin::recorder_config(&plugin, recorder, RoleName::Worker, "worker-0");
        let mut wasm = WasmRecorder::new(
            setup.sandbox.clone(),
            plugin.pre.clone(),
            plugin.id(),
            plugin.limits,
            plugin.capabilities,
            config,
        );
        wasm.start().expect("start recorder");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{language}/{n}"), |b| {
            b.iter(|| black_box(wasm.handle(black_box(&batch)).expect("handle")))
        });
    }
    group.finish();
}

/// Whether the command line's filter (criterion's first free argument) can select a bench
/// of `group`: building the Python and JavaScript guests takes a minute, so a run filtered
/// to other groups skips it.
fn filter_allows(group: &str) -> bool {
    let mut args = std::env::args().skip(1).filter(|arg| !arg.starts_with('-'));
    args.next().is_none_or(|filter| filter.contains(group))
}

fn benches(c: &mut Criterion) {
    let setup = Setup::new();
    batch(c, &setup);
    replay(c, &setup);
    if filter_allows("polyglot") {
        polyglot(c, &setup);
    }
}

criterion_group!(request_path, benches);
criterion_main!(request_path);
