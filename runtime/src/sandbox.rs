//! Sandbox: the wasmtime engine, and recorder instances that each live in their own `Store`.
//!
//! A guest gets no files, network, environment, arguments or inherited stdio: its WASI context
//! is empty, its stdout and stderr are captured into a bounded buffer. Every call runs under an
//! epoch deadline and a memory cap. A call that traps, overruns its deadline or hits the memory
//! cap drops the instance (wasmtime forbids re-entering a trapped store); the next call
//! instantiates it again from the shared `InstancePre`. Counting faults and disabling a
//! recorder is the pipeline's policy, not this module's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{PluginInstance, PluginPre, host, types as wit};
use crate::cache::{CacheOutcome, CompileCache};
use crate::config::{Capabilities, Limits};
use crate::guest_text::shown;

/// How often the epoch advances; deadlines are whole epochs.
const EPOCH_PERIOD: Duration = Duration::from_millis(2);

/// Most diagnostic lines (host `log` calls) one instance may print before the rest are only
/// counted.
const MAX_LOG_LINES: u32 = 200;

/// The engine could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the wasm engine: {0}")]
pub struct EngineError(String);

/// Components at least this big have their compiling announced on stderr (a Rust recorder
/// is a few hundred KB and compiles in well under a second; a Python one is about 18 MB).
pub const ANNOUNCED_COMPILE_BYTES: usize = 4 * 1024 * 1024;

/// The shared engine, linker, epoch clock and (optional) compile cache.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<GuestState>,
    fuel: bool,
    cache: Option<CompileCache>,
    cache_stats: Mutex<CacheStats>,
    _epoch: EpochTicker,
}

/// What the compile cache did in this run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components loaded from a valid entry.
    pub hits: u64,
    /// Components compiled (no entry yet).
    pub compiled: u64,
    /// Entries thrown away (failed integrity check or did not load) and recompiled.
    pub rejected: u64,
}

impl Sandbox {
    /// One engine for the whole run: components, epoch interruption, no fuel metering.
    pub fn new() -> Result<Self, EngineError> {
        Self::with_fuel(false)
    }

    /// One engine for the whole run; `fuel` turns on fuel metering (it costs every guest some
    /// speed, so it is on only when some plugin sets `fuel_per_call`).
    pub fn with_fuel(fuel: bool) -> Result<Self, EngineError> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        // A guest's runaway recursion ends in a trap well before the host's stack is at risk.
        config.max_wasm_stack(512 * 1024);
        let engine = Engine::new(&config).map_err(|e| EngineError(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| EngineError(e.to_string()))?;
        crate::bindings::add_to_linker(&mut linker).map_err(|e| EngineError(e.to_string()))?;
        let epoch = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            fuel,
            cache: None,
            cache_stats: Mutex::new(CacheStats::default()),
            _epoch: epoch,
        })
    }

    /// Uses `cache` for every later [`Sandbox::compile`].
    pub fn set_cache(&mut self, cache: CompileCache) {
        self.cache = Some(cache);
    }

    /// The compile cache in use, if any.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// What the compile cache did so far.
    pub fn cache_stats(&self) -> CacheStats {
        *self.cache_stats.lock().expect("cache stats lock")
    }

    /// Whether fuel metering is on.
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles component bytes, or loads them precompiled from the cache. Compiling a big
    /// component (Python and JavaScript ones are 10 to 20 MB and take seconds) is announced on
    /// stderr with `name`, and its time when done.
    pub fn compile(&self, bytes: &[u8], name: &str) -> wasmtime::Result<Component> {
        let announce = bytes.len() >= ANNOUNCED_COMPILE_BYTES
            && !self
                .cache
                .as_ref()
                .is_some_and(|cache| cache.has_entry(&self.engine, bytes));
        let started = std::time::Instant::now();
        if announce {
            crate::diag!(
                "swarmtel: compiling {name} ({:.1} MB){}",
                bytes.len() as f64 / 1e6,
                if self.cache.is_some() {
                    ": once, then it is cached"
                } else {
                    ": the compile cache is off, so on every start"
                }
            );
        }
        let component = self.compile_quietly(bytes);
        if announce && component.is_ok() {
            crate::diag!(
                "swarmtel: compiled {name} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        component
    }

    fn compile_quietly(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(cache) = &self.cache else {
            return Component::from_binary(&self.engine, bytes);
        };
        let (component, outcome) = cache.load_or_compile(&self.engine, bytes)?;
        let mut stats = self.cache_stats.lock().expect("cache stats lock");
        match outcome {
            CacheOutcome::Hit => stats.hits += 1,
            CacheOutcome::Compiled => stats.compiled += 1,
            CacheOutcome::Rejected(reason) => {
                stats.rejected += 1;
                crate::diag!(
                    "swarmtel: warning: compile cache entry in {} discarded and recompiled: {reason}",
                    cache.dir().display()
                );
            }
        }
        Ok(component)
    }

    /// Links a compiled component, which exports the plugin interface of contract `version`,
    /// against the host once; instances are made from the result.
    pub fn prepare(&self, component: &Component, version: &str) -> wasmtime::Result<PluginPre> {
        PluginPre::new(&self.linker, component, version)
    }

    /// A fresh store for one instance of `plugin_id`, with `limits` and `capabilities`.
    pub fn new_store(
        &self,
        plugin_id: &str,
        limits: &Limits,
        capabilities: &Capabilities,
    ) -> Store<GuestState> {
        let stdio = CapturedStdio::new(limits.stdio_bytes);
        let mut wasi = WasiCtx::builder();
        wasi.stdout(stdio.clone())
            .stderr(stdio.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if !capabilities.wall_clock {
            wasi.wall_clock(FrozenClock);
        }
        if !capabilities.monotonic_clock {
            wasi.monotonic_clock(FrozenClock);
        }
        if !capabilities.random {
            wasi.secure_random(wasmtime_wasi::Deterministic::new(FIXED_RANDOM.to_vec()))
                .insecure_random(wasmtime_wasi::Deterministic::new(FIXED_RANDOM.to_vec()))
                .insecure_random_seed(0x5EED);
        }
        let wasi = wasi.build();
        let memory_bytes = usize::try_from(limits.memory_mib * 1024 * 1024).unwrap_or(usize::MAX);
        let state = GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter: GuestLimiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(memory_bytes)
                    .instances(limits.max_instances)
                    .tables(limits.max_tables)
                    .memories(limits.max_instances)
                    .table_elements(limits.max_table_elements)
                    .build(),
                memory_denied: false,
            },
            plugin_id: plugin_id.to_owned(),
            log_lines: 0,
            stdio,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Bounds what the host copies out of the guest per call (results, and data the guest
        // hands to host calls), checked before the copy.
        store.set_hostcall_fuel(limits.result_bytes());
        self.arm(&mut store, limits);
        store
    }

    /// Sets the budget of the next call: its epoch deadline, and its fuel when metered.
    pub fn arm(&self, store: &mut Store<GuestState>, limits: &Limits) {
        store.set_epoch_deadline(Self::deadline_epochs(limits));
        // A refused growth the guest handled in an earlier call says nothing about this one.
        store.data_mut().limiter.memory_denied = false;
        if self.fuel {
            store
                .set_fuel(limits.fuel_per_call.unwrap_or(u64::MAX))
                .expect("fuel metering is on");
        }
    }

    /// Number of epochs that make up `limits.cpu_ms_per_call`, at least one.
    pub fn deadline_epochs(limits: &Limits) -> u64 {
        let period_ms = EPOCH_PERIOD.as_millis() as u64;
        limits.cpu_ms_per_call.div_ceil(period_ms).max(1)
    }
}

/// What a guest without the random capability gets: the same bytes, over and over.
const FIXED_RANDOM: [u8; 8] = [0x9E, 0x37, 0x79, 0xB9, 0x7F, 0x4A, 0x7C, 0x15];

/// What a guest without a clock capability reads: always the Unix epoch, always 0 ns.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// Advances the engine's epoch on a background thread until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("swarmtel-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_PERIOD);
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Everything one guest instance's store holds.
pub struct GuestState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
    plugin_id: String,
    log_lines: u32,
    stdio: CapturedStdio,
}

impl GuestState {
    /// The captured stdout/stderr of this instance.
    pub fn stdio(&self) -> &CapturedStdio {
        &self.stdio
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl GuestState {
    /// Prints one line of the plugin's own diagnostics (`host.log`), escaped, at most
    /// [`MAX_LOG_LINES`] per instance.
    pub(crate) fn log_diagnostic(&mut self, level: host::LogLevel, message: &str) {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines <= MAX_LOG_LINES {
            crate::diag!("[plugin {}] {level:?}: {}", self.plugin_id, shown(message));
        } else if self.log_lines == MAX_LOG_LINES + 1 {
            crate::diag!(
                "[plugin {}] more diagnostics suppressed (limit {MAX_LOG_LINES} lines)",
                self.plugin_id
            );
        }
    }
}

/// `StoreLimits`, remembering whether a memory growth was refused so a fault can say so.
struct GuestLimiter {
    inner: StoreLimits,
    memory_denied: bool,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.memory_denied = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A guest's stdout and stderr, kept up to a byte cap; bytes past it are dropped and counted.
#[derive(Clone)]
pub struct CapturedStdio(Arc<Mutex<StdioBuffer>>);

#[derive(Default)]
struct StdioBuffer {
    /// Kept bytes not yet taken by [`CapturedStdio::drain`].
    pending: Vec<u8>,
    /// Bytes kept over the instance's life; the cap applies to this.
    kept_total: usize,
    capacity: usize,
    dropped: u64,
}

impl CapturedStdio {
    fn new(capacity: usize) -> Self {
        Self(Arc::new(Mutex::new(StdioBuffer {
            capacity,
            ..StdioBuffer::default()
        })))
    }

    fn write(&self, bytes: &[u8]) {
        let mut buffer = self.0.lock().expect("stdio lock");
        let room = buffer.capacity.saturating_sub(buffer.kept_total);
        let keep = bytes.len().min(room);
        buffer.pending.extend_from_slice(&bytes[..keep]);
        buffer.kept_total += keep;
        buffer.dropped += (bytes.len() - keep) as u64;
    }

    /// Takes the bytes kept since the last call, and the total dropped past the cap so far.
    pub fn drain(&self) -> (Vec<u8>, u64) {
        let mut buffer = self.0.lock().expect("stdio lock");
        (std::mem::take(&mut buffer.pending), buffer.dropped)
    }
}

impl IsTerminal for CapturedStdio {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStdio {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CapturedStdio {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.write(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl OutputStream for CapturedStdio {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        CapturedStdio::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always accept: what does not fit is dropped and counted, never an error the guest
        // could turn into a panic.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedStdio {
    async fn ready(&mut self) {}
}

/// Why a recorder call failed. The instance is gone afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The call ran past `cpu_ms_per_call`.
    Deadline,
    /// The call used up `fuel_per_call`.
    Fuel,
    /// The guest wanted more memory than `memory_mib`.
    Memory,
    /// The guest exhausted its stack.
    StackOverflow,
    /// Any other trap: a panic, `unreachable`, an out-of-bounds access.
    Trap,
    /// The component could not be instantiated.
    Instantiate,
    /// `create-recorder` returned an error.
    Refused,
    /// The call's results would take more host memory than its limit
    /// ([`Limits::result_bytes`]): refused before they were copied out of the guest.
    ResultsTooLarge,
}

impl FaultKind {
    /// The kind's name in summaries and self-telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Deadline => "deadline",
            FaultKind::Fuel => "fuel",
            FaultKind::Memory => "memory",
            FaultKind::StackOverflow => "stack_overflow",
            FaultKind::Trap => "trap",
            FaultKind::Instantiate => "instantiate",
            FaultKind::Refused => "refused",
            FaultKind::ResultsTooLarge => "results_too_large",
        }
    }
}

/// A failed recorder call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} fault: {message}", kind.as_str())]
pub struct Fault {
    /// What kind of failure.
    pub kind: FaultKind,
    /// wasmtime's or the guest's message, escaped and capped (see [`crate::guest_text`]).
    pub message: String,
}

impl Fault {
    /// A fault whose message may hold guest text: escaped and capped here, once, so every
    /// place that prints or records it is safe.
    pub fn new(kind: FaultKind, message: &str) -> Self {
        Self {
            kind,
            message: shown(message),
        }
    }
}

/// Whether wasmtime refused to copy a call's results out of the guest because they need more
/// than the store's hostcall fuel.
fn is_results_too_large(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .to_string()
            .contains("fuel allocated for hostcalls has been exhausted")
    })
}

/// Something that records batches: a sandboxed guest, or (in benchmarks) native code. It runs
/// on a recorder task's thread, hence `Send`.
pub trait RecorderBackend: Send {
    /// Handles one batch; returns the telemetry it produced.
    fn handle(&mut self, batch: &wit::EventBatch) -> Result<wit::RecorderOutput, Fault>;
    /// The stream ended; returns any last telemetry.
    fn finish(&mut self) -> Result<wit::RecorderOutput, Fault>;
    /// Bytes of the guest's stdout/stderr dropped past its cap, over all its instances.
    fn stdio_dropped_bytes(&self) -> u64 {
        0
    }
}

/// A live instance: its store, bindings and recorder resource.
struct Live {
    store: Store<GuestState>,
    instance: PluginInstance,
    recorder: ResourceAny,
}

/// One recorder of a plugin for one node, running in its own store.
pub struct WasmRecorder {
    sandbox: Arc<Sandbox>,
    pre: PluginPre,
    plugin_id: String,
    limits: Limits,
    capabilities: Capabilities,
    config: wit::RecorderConfig,
    live: Option<Live>,
    /// Dropped stdio bytes of instances already gone.
    stdio_dropped_before: u64,
    /// Dropped stdio bytes of the live instance, as last drained.
    stdio_dropped_live: u64,
}

impl WasmRecorder {
    /// A recorder that instantiates on first use (or call [`WasmRecorder::start`]).
    pub fn new(
        sandbox: Arc<Sandbox>,
        pre: PluginPre,
        plugin_id: &str,
        limits: Limits,
        capabilities: Capabilities,
        config: wit::RecorderConfig,
    ) -> Self {
        Self {
            sandbox,
            pre,
            plugin_id: plugin_id.to_owned(),
            limits,
            capabilities,
            config,
            live: None,
            stdio_dropped_before: 0,
            stdio_dropped_live: 0,
        }
    }

    /// Instantiates the component and creates the recorder now.
    pub fn start(&mut self) -> Result<(), Fault> {
        if self.live.is_none() {
            self.live = Some(self.instantiate()?);
        }
        Ok(())
    }

    fn instantiate(&mut self) -> Result<Live, Fault> {
        let mut store = self
            .sandbox
            .new_store(&self.plugin_id, &self.limits, &self.capabilities);
        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(error) => return Err(self.fault(&store, &error, FaultKind::Instantiate)),
        };
        self.sandbox.arm(&mut store, &self.limits);
        let created = match instance.create_recorder(&mut store, &self.config) {
            Ok(created) => created,
            Err(error) => return Err(self.fault(&store, &error, FaultKind::Trap)),
        };
        self.forward_stdio(&store);
        let recorder = match created {
            Ok(recorder) => recorder,
            Err(message) => {
                // The instance is gone: keep the count of what it dropped.
                self.stdio_dropped_before += self.stdio_dropped_live;
                self.stdio_dropped_live = 0;
                return Err(Fault::new(FaultKind::Refused, &message));
            }
        };
        Ok(Live {
            store,
            instance,
            recorder,
        })
    }

    fn call(
        &mut self,
        call: impl FnOnce(&mut Live) -> wasmtime::Result<wit::RecorderOutput>,
    ) -> Result<wit::RecorderOutput, Fault> {
        self.start()?;
        let live = self.live.as_mut().expect("started");
        self.sandbox.arm(&mut live.store, &self.limits);
        let result = call(live);
        let live = self.live.take().expect("started");
        match result {
            Ok(items) => {
                self.forward_stdio(&live.store);
                self.live = Some(live);
                Ok(items)
            }
            Err(error) => Err(self.fault(&live.store, &error, FaultKind::Trap)),
        }
    }

    /// Describes a failure, and accounts for the instance's captured output, which is gone
    /// with it.
    fn fault(
        &mut self,
        store: &Store<GuestState>,
        error: &wasmtime::Error,
        otherwise: FaultKind,
    ) -> Fault {
        // The guest's own words (a panic message) go to stderr with its other diagnostics,
        // never into telemetry.
        let fault = classify(store, error, otherwise);
        self.forward_stdio(store);
        self.stdio_dropped_before += self.stdio_dropped_live;
        self.stdio_dropped_live = 0;
        fault
    }

    /// Prints what the guest wrote to stdout/stderr since the last call on our stderr, as the
    /// plugin's diagnostics, and returns it.
    fn forward_stdio(&mut self, store: &Store<GuestState>) {
        let (bytes, dropped) = store.data().stdio().drain();
        self.stdio_dropped_live = dropped;
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            crate::diag!(
                "[plugin {} on {}] {}",
                self.plugin_id,
                self.config.node,
                shown(line)
            );
        }
    }
}

impl RecorderBackend for WasmRecorder {
    fn handle(&mut self, batch: &wit::EventBatch) -> Result<wit::RecorderOutput, Fault> {
        self.call(|live| live.instance.handle(&mut live.store, live.recorder, batch))
    }

    fn finish(&mut self) -> Result<wit::RecorderOutput, Fault> {
        self.call(|live| live.instance.finish(&mut live.store, live.recorder))
    }

    fn stdio_dropped_bytes(&self) -> u64 {
        self.stdio_dropped_before + self.stdio_dropped_live
    }
}

/// Names the failure: deadline, fuel, memory cap, stack, or another trap.
pub(crate) fn classify(
    store: &Store<GuestState>,
    error: &wasmtime::Error,
    otherwise: FaultKind,
) -> Fault {
    let trap = error.downcast_ref::<Trap>();
    let kind = match trap {
        Some(Trap::Interrupt) => FaultKind::Deadline,
        Some(Trap::OutOfFuel) => FaultKind::Fuel,
        Some(Trap::StackOverflow) => FaultKind::StackOverflow,
        _ if store.data().limiter.memory_denied => FaultKind::Memory,
        Some(Trap::MemoryOutOfBounds) if shadow_stack_underflow(error) => FaultKind::StackOverflow,
        Some(_) => FaultKind::Trap,
        None => otherwise,
    };
    let message = match (kind, trap) {
        (FaultKind::StackOverflow, Some(Trap::MemoryOutOfBounds)) => {
            "guest stack exhausted: its stack pointer ran below address 0 of linear memory".into()
        }
        (_, Some(trap)) => trap.to_string(),
        (_, None) if is_results_too_large(error) => {
            return Fault::new(
                FaultKind::ResultsTooLarge,
                &format!(
                    "the call's results need more than the {} bytes of host memory a call may take",
                    store.hostcall_fuel()
                ),
            );
        }
        (_, None) => error.root_cause().to_string(),
    };
    Fault::new(kind, &message)
}

/// Whether an out-of-bounds access is a guest's own stack (kept in linear memory by Rust and
/// C guests) running below address 0: the address then wraps past 4 GiB, which no ordinary
/// access into a 32-bit memory reaches.
fn shadow_stack_underflow(error: &wasmtime::Error) -> bool {
    const MARK: &str = "memory fault at wasm address 0x";
    let text = format!("{error:?}");
    let Some(start) = text.find(MARK) else {
        return false;
    };
    let hex: String = text[start + MARK.len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&hex, 16).is_ok_and(|address| address > u64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_stdio_keeps_up_to_its_cap_and_counts_the_rest() {
        let stdio = CapturedStdio::new(10);
        stdio.write(b"hello ");
        assert_eq!(stdio.drain(), (b"hello ".to_vec(), 0));
        stdio.write(b"world, and more");
        let (kept, dropped) = stdio.drain();
        assert_eq!(kept, b"worl", "the cap is over the instance's life");
        assert_eq!(dropped, 11);
        stdio.write(b"more");
        assert_eq!(stdio.drain(), (Vec::new(), 15));
    }

    #[test]
    fn captured_stdio_never_refuses_a_write() {
        let mut stream: Box<dyn OutputStream> = CapturedStdio::new(4).p2_stream();
        for _ in 0..3 {
            assert!(stream.check_write().unwrap() > 0);
            stream.write(bytes::Bytes::from_static(b"abcdef")).unwrap();
        }
    }

    #[test]
    fn a_fault_message_is_escaped_and_capped_once_for_every_use() {
        let fault = Fault::new(FaultKind::Refused, &"\u{1b}[2J".repeat(1_000_000));
        assert!(!fault.message.contains('\u{1b}'));
        assert!(fault.message.len() < 8 * 1024, "{}", fault.message.len());
        assert!(fault.message.ends_with("more bytes)"), "{}", fault.message);
    }

    #[test]
    fn deadlines_round_up_to_whole_epochs() {
        let limits = |cpu_ms_per_call| Limits {
            cpu_ms_per_call,
            ..Limits::default()
        };
        assert_eq!(Sandbox::deadline_epochs(&limits(1)), 1);
        assert_eq!(Sandbox::deadline_epochs(&limits(3)), 2);
        assert_eq!(Sandbox::deadline_epochs(&limits(200)), 100);
    }

    #[test]
    fn a_core_module_does_not_compile_as_a_component() {
        let sandbox = Sandbox::new().unwrap();
        assert!(sandbox.compile(b"\0asm\x01\0\0\0", "test").is_err());
    }
}
