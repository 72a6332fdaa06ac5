//! `swarmtel serve`: the live source. Accepts bridge connections (Unix socket or TCP), checks
//! each one's hello, and feeds its event lines to the pipeline.
//!
//! Threads: the network side is one tokio (current-thread) runtime on the calling thread; the
//! pipeline runs on a thread of its own, fed by one bounded queue of line chunks; each
//! recorder instance runs on its own task thread behind the pipeline (see [`crate::pipeline`]).
//!
//! Back-pressure: when the queue is full, a connection either waits (`Overload::Block`, so
//! TCP flow control pushes back on the client) or drops the chunk and counts its lines
//! (`Overload::Drop`).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::config::RoleName;
use crate::enrich::RunContext;
use crate::ingest::{self, DecodeError};
use crate::pipeline::{Pipeline, ProcessError, RunError, RunHandle, Summary};
use crate::wire::{self, Endpoint, EndpointError, HelloReply, Peer, Refusal};

/// Bad frames reported per connection before the rest are only counted.
pub const BAD_FRAMES_REPORTED: u64 = 10;

/// How much a connection reads at a time; also the most a queued chunk holds beyond one line.
const READ_CHUNK: usize = 64 * 1024;

/// What a connection does when the pipeline's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Overload {
    /// Stop reading the connection until there is room; the client's buffer absorbs the wait.
    Block,
    /// Drop what cannot be queued and count it.
    Drop,
}

/// How the server shows its progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusMode {
    /// A live status line on a terminal, a log line every 10 s otherwise.
    Auto,
    /// Always the live status line.
    Line,
    /// Always the periodic log line.
    Log,
    /// Neither (connections and errors are still logged).
    Off,
}

/// Settings for one `serve` run.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: Vec<Endpoint>,
    /// The shared secret every connection must present, if any.
    pub token: Option<String>,
    /// The policy when the pipeline cannot keep up.
    pub overload: Overload,
    /// How long open connections may go on after a shutdown signal before they are closed.
    pub drain_timeout: Duration,
    /// Line chunks the pipeline's queue holds (each at most 64 KiB plus one line).
    pub queue_depth: usize,
    /// Progress display.
    pub status: StatusMode,
    /// How long a client has to send its hello.
    pub hello_timeout: Duration,
    /// Most connections open at once; more are refused (each open connection holds up to
    /// 64 KiB plus one 1 MiB line of buffer).
    pub max_connections: usize,
}

/// Why `serve` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// An endpoint is malformed or does not resolve.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Listening beyond this machine without a token.
    #[error(
        "{endpoint} is reachable from other machines: set a token (--token or SWARMTEL_TOKEN) that every connection must present"
    )]
    TokenRequired {
        /// The endpoint.
        endpoint: Endpoint,
    },
    /// Another server already listens on the socket.
    #[error("{0}: another swarmtel serve is listening there")]
    InUse(Endpoint),
    /// The socket's folder or path cannot be used safely.
    #[error("{path}: {reason}")]
    UnsafeSocketPath {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Binding failed.
    #[error("cannot listen on {endpoint}: {source}")]
    Bind {
        /// The endpoint.
        endpoint: Endpoint,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime's I/O driver could not start.
    #[error("cannot start the network runtime: {0}")]
    Runtime(std::io::Error),
    /// The pipeline failed (an output cannot be written, a required plugin failed).
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Connection counters, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionTotals {
    /// Connections accepted, by role (master, worker, standalone).
    pub accepted: [u64; 3],
    /// Connections refused at hello.
    pub refused: u64,
    /// Frames that did not parse or named another node.
    pub bad_frames: u64,
    /// Events the bridges said they dropped (from hello and bye frames).
    pub dropped_by_clients: u64,
    /// Event lines dropped here under `Overload::Drop`.
    pub dropped_here: u64,
    /// Event lines a bye frame counted that never arrived.
    pub lost_in_transit: u64,
    /// Over-long lines skipped.
    pub overlong: u64,
}

impl ConnectionTotals {
    /// The totals as text for stderr.
    pub fn render(&self) -> String {
        let [master, worker, standalone] = self.accepted;
        format!(
            "swarmtel serve: {} connections ({master} master, {worker} worker, {standalone} standalone), {} refused; {} bad frames, {} over-long lines; events dropped: {} by bridges, {} here, {} lost in transit\n",
            master + worker + standalone,
            self.refused,
            self.bad_frames,
            self.overlong,
            self.dropped_by_clients,
            self.dropped_here,
            self.lost_in_transit,
        )
    }
}

/// What a `serve` run ends with.
#[derive(Debug, Clone)]
pub struct ServeReport {
    /// The pipeline's summary.
    pub summary: Summary,
    /// The connections' counters.
    pub connections: ConnectionTotals,
}

/// Counters shared between the network side, the pipeline thread and the status display.
#[derive(Default)]
struct Live {
    open: [AtomicU64; 3],
    events: AtomicU64,
    telemetry_out: AtomicU64,
    rejected: AtomicU64,
    faults: AtomicU64,
    bad_frames: AtomicU64,
    dropped: AtomicU64,
}

fn role_index(role: RoleName) -> usize {
    match role {
        RoleName::Master => 0,
        RoleName::Worker => 1,
        RoleName::Standalone => 2,
    }
}

/// What connections hand the pipeline thread.
enum Inbound {
    Open {
        conn: u64,
        peer: Box<Peer>,
    },
    /// Whole lines, each ending in `\n`.
    Lines {
        conn: u64,
        lines: Vec<u8>,
    },
    /// A line longer than the frame cap was skipped.
    Overlong {
        conn: u64,
        bytes: usize,
    },
    Close {
        conn: u64,
        dropped_here: u64,
        reason: Option<String>,
    },
    /// Nothing new: emit finished results and flush the outputs.
    Idle,
}

/// Runs the server until SIGINT or SIGTERM, then drains: stops accepting, lets open
/// connections finish (up to the drain timeout, or a second signal), finishes the recorders
/// and flushes.
pub fn serve(pipeline: Pipeline, options: ServeOptions) -> Result<ServeReport, ServeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async {
        let signals = count_signals().map_err(ServeError::Runtime)?;
        let after = |wanted: u32| {
            let mut signals = signals.clone();
            async move {
                let _ = signals.wait_for(|count| *count >= wanted).await;
            }
        };
        run(pipeline, options, after(1), after(2)).await
    })
}

/// Counts SIGINT and SIGTERM from now on (the process no longer dies of them).
fn count_signals() -> std::io::Result<watch::Receiver<u32>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (sender, receiver) = watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            sender.send_modify(|count| *count += 1);
        }
    });
    Ok(receiver)
}

async fn run(
    pipeline: Pipeline,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
    drain_now: impl std::future::Future<Output = ()>,
) -> Result<ServeReport, ServeError> {
    let mut listeners = Vec::new();
    for endpoint in &options.listen {
        listeners.push(Listener::bind(endpoint, options.token.is_some())?);
    }
    let default_run = pipeline.run_context().clone();
    let names: Vec<String> = listeners.iter().map(Listener::describe).collect();
    eprintln!(
        "swarmtel: serving on {}; run {}, testplan {}; SIGINT or SIGTERM to finish",
        names.join(", "),
        default_run.run_id,
        default_run.testplan
    );

    let live = Arc::new(Live::default());
    let (sender, receiver) = mpsc::channel::<Inbound>(options.queue_depth.max(1));
    let pipeline_thread = {
        let live = live.clone();
        std::thread::Builder::new()
            .name("swarmtel-pipeline".into())
            .spawn(move || pipeline_loop(pipeline, receiver, &live))
            .expect("cannot start the pipeline thread")
    };

    let shared = Arc::new(Shared {
        sender: sender.clone(),
        token: options.token.clone(),
        hello_timeout: options.hello_timeout,
        overload: options.overload,
        default_run,
        live: live.clone(),
    });
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let status = Status::new(options.status, live.clone());
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut idle_tick = tokio::time::interval(Duration::from_millis(200));
    let mut next_conn = 0u64;
    let refused = Arc::new(AtomicU64::new(0));
    // Connections whose task has not ended (JoinSet::len lags until a task is joined).
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::pin!(shutdown);

    // Serve until the shutdown signal, or until the pipeline thread stops on its own (an
    // output failed).
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = accept_any(&listeners) => {
                let (stream, peer_name) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        eprintln!("swarmtel: accept failed: {error}");
                        continue;
                    }
                };
                next_conn += 1;
                let shared = shared.clone();
                let closing = closing_rx.clone();
                let refused = Arc::clone(&refused);
                if active.load(Ordering::Relaxed) >= options.max_connections {
                    let refusal = Refusal::TooManyConnections(options.max_connections);
                    // Answered without reading a hello; the task is not kept.
                    tokio::spawn(async move {
                        match stream {
                            Stream::Unix(mut stream) => refuse(&mut stream, next_conn, &peer_name, &refusal, &refused).await,
                            Stream::Tcp(mut stream) => refuse(&mut stream, next_conn, &peer_name, &refusal, &refused).await,
                        }
                    });
                    continue;
                }
                let guard = ActiveGuard::enter(&active);
                connections.spawn(async move {
                    let _guard = guard;
                    match stream {
                        Stream::Unix(stream) => connection(stream, next_conn, peer_name, shared, closing, refused).await,
                        Stream::Tcp(stream) => connection(stream, next_conn, peer_name, shared, closing, refused).await,
                    }
                });
            }
            _ = status_tick.tick() => status.show(),
            _ = idle_tick.tick() => {
                // The pipeline is busy when the queue is full; it polls on its own then.
                let _ = sender.try_send(Inbound::Idle);
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
        if sender.is_closed() {
            break;
        }
    }

    // Drain: stop accepting, let connections end on their own until the deadline.
    for listener in &listeners {
        listener.close();
    }
    drop(listeners);
    let open = connections.len();
    if open > 0 && !sender.is_closed() {
        eprintln!(
            "{}swarmtel: shutting down: no new connections; waiting up to {} for {open} open connection(s) to finish",
            status.clear_code(),
            humantime::format_duration(options.drain_timeout)
        );
        let deadline = tokio::time::sleep(options.drain_timeout);
        tokio::pin!(deadline);
        tokio::pin!(drain_now);
        loop {
            tokio::select! {
                joined = connections.join_next() => if joined.is_none() { break },
                () = &mut deadline => break,
                () = &mut drain_now => break,
                _ = status_tick.tick() => status.show(),
            }
        }
        let _ = closing_tx.send(true);
        if !connections.is_empty() {
            eprintln!(
                "{}swarmtel: closing {} connection(s) still open at the drain deadline",
                status.clear_code(),
                connections.len()
            );
            // Connections see `closing` and hand over what they have read; give them a
            // moment, then abort whatever is stuck behind a full queue.
            let grace = tokio::time::sleep(Duration::from_secs(1));
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    joined = connections.join_next() => if joined.is_none() { break },
                    () = &mut grace => { connections.abort_all(); }
                }
            }
        }
    }
    status.finish();
    drop(shared);
    drop(sender);
    let refused = refused.load(Ordering::Relaxed);
    let result = tokio::task::spawn_blocking(move || pipeline_thread.join())
        .await
        .expect("the join task does not panic");
    let mut report = match result {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    report.connections.refused = refused;
    Ok(report)
}

/// Counts a connection as active from accept until its task ends.
struct ActiveGuard(Arc<std::sync::atomic::AtomicUsize>);

impl ActiveGuard {
    fn enter(active: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        Self(active.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every connection task needs.
struct Shared {
    sender: mpsc::Sender<Inbound>,
    token: Option<String>,
    hello_timeout: Duration,
    overload: Overload,
    default_run: RunContext,
    live: Arc<Live>,
}

/// One connection: hello, then event lines in chunks to the pipeline, until the client
/// closes (or the drain deadline passes).
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    conn: u64,
    peer_name: String,
    shared: Arc<Shared>,
    mut closing: watch::Receiver<bool>,
    refused: Arc<AtomicU64>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let hello =
        tokio::time::timeout(shared.hello_timeout, read_line(&mut reader, &mut buffer)).await;
    let line = match hello {
        Ok(Ok(Some(end))) => end,
        Ok(Ok(None)) => return, // closed before saying anything: a port probe
        Ok(Err(error)) => {
            refuse(
                &mut writer,
                conn,
                &peer_name,
                &Refusal::NotHello(error),
                &refused,
            )
            .await;
            return;
        }
        Err(_) => {
            let refusal = Refusal::Timeout(shared.hello_timeout);
            refuse(&mut writer, conn, &peer_name, &refusal, &refused).await;
            return;
        }
    };
    let peer = match wire::accept_hello(&buffer[..line], shared.token.as_deref()) {
        Ok(peer) => peer,
        Err(refusal) => {
            refuse(&mut writer, conn, &peer_name, &refusal, &refused).await;
            return;
        }
    };
    buffer.drain(..=line);
    let run_id = peer
        .run_id
        .clone()
        .unwrap_or_else(|| shared.default_run.run_id.clone());
    let testplan = peer
        .testplan
        .clone()
        .unwrap_or_else(|| shared.default_run.testplan.clone());
    if writer
        .write_all(&HelloReply::accepted(&run_id, &testplan).to_line())
        .await
        .is_err()
    {
        return;
    }
    eprintln!(
        "swarmtel: connection {conn} from {peer_name}: {} {} ({}), run {run_id}",
        peer.role.as_str(),
        peer.node.escape_debug(),
        peer.client.escape_debug(),
    );
    let role = peer.role;
    shared.live.open[role_index(role)].fetch_add(1, Ordering::Relaxed);
    if shared
        .sender
        .send(Inbound::Open {
            conn,
            peer: Box::new(peer),
        })
        .await
        .is_err()
    {
        return;
    }
    let mut dropped_here = 0u64;
    let mut skipping = false;
    let reason = loop {
        if buffer.capacity() - buffer.len() < READ_CHUNK / 4 {
            buffer.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            read = reader.read_buf(&mut buffer) => read,
            _ = closing.wait_for(|closing| *closing) => break Some("closed at the drain deadline".to_owned()),
        };
        let end_of_stream = match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => break Some(error.to_string()),
        };
        if skipping {
            match buffer.iter().position(|b| *b == b'\n') {
                Some(newline) => {
                    buffer.drain(..=newline);
                    skipping = false;
                }
                None => {
                    buffer.clear();
                    if end_of_stream {
                        break None;
                    }
                    continue;
                }
            }
        }
        // Whole lines go to the pipeline; a partial last line waits for more (or, at the end
        // of the stream, goes as it is).
        let cut = if end_of_stream {
            buffer.len()
        } else {
            buffer
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
        };
        if cut > 0 {
            let rest = buffer.split_off(cut);
            let lines = std::mem::replace(&mut buffer, rest);
            let count = bytecount_lines(&lines);
            let chunk = Inbound::Lines { conn, lines };
            match shared.overload {
                Overload::Block => {
                    if shared.sender.send(chunk).await.is_err() {
                        break Some("server stopping".to_owned());
                    }
                }
                Overload::Drop => match shared.sender.try_send(chunk) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(Inbound::Lines { lines, .. })) => {
                        if dropped_here == 0 {
                            eprintln!(
                                "swarmtel: connection {conn}: the pipeline is behind; dropping and counting this connection's events (--overload drop)"
                            );
                        }
                        // Events are dropped; a bye frame is not (it carries the accounting).
                        let bye = trailing_bye(&lines);
                        let dropped = count - u64::from(bye.is_some());
                        dropped_here += dropped;
                        shared.live.dropped.fetch_add(dropped, Ordering::Relaxed);
                        if let Some(bye) = bye {
                            let lines = lines[bye..].to_vec();
                            if shared
                                .sender
                                .send(Inbound::Lines { conn, lines })
                                .await
                                .is_err()
                            {
                                break Some("server stopping".to_owned());
                            }
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        unreachable!("only lines are sent here")
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        break Some("server stopping".to_owned());
                    }
                },
            }
        }
        if end_of_stream {
            break None;
        }
        if buffer.len() > wire::MAX_FRAME_BYTES {
            let bytes = buffer.len();
            buffer.clear();
            skipping = true;
            if shared
                .sender
                .send(Inbound::Overlong { conn, bytes })
                .await
                .is_err()
            {
                break Some("server stopping".to_owned());
            }
        }
    };
    shared.live.open[role_index(role)].fetch_sub(1, Ordering::Relaxed);
    let _ = shared
        .sender
        .send(Inbound::Close {
            conn,
            dropped_here,
            reason,
        })
        .await;
}

/// Where the chunk's last line starts, when that line is a bye frame.
fn trailing_bye(lines: &[u8]) -> Option<usize> {
    let body = lines.strip_suffix(b"\n").unwrap_or(lines);
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    std::str::from_utf8(&body[start..])
        .ok()
        .and_then(wire::parse_bye)
        .map(|_| start)
}

fn bytecount_lines(lines: &[u8]) -> u64 {
    let newlines = lines.iter().filter(|b| **b == b'\n').count() as u64;
    newlines + u64::from(lines.last().is_some_and(|b| *b != b'\n'))
}

/// Reads until the first newline; returns its index, `None` at a clean end of stream before
/// any byte, or why the line is unusable.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut Vec<u8>,
) -> Result<Option<usize>, String> {
    loop {
        if let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
            return Ok(Some(newline));
        }
        if buffer.len() > wire::MAX_FRAME_BYTES {
            return Err(format!(
                "no newline in the first {} bytes",
                wire::MAX_FRAME_BYTES
            ));
        }
        buffer.reserve(READ_CHUNK);
        match reader.read_buf(buffer).await {
            Ok(0) if buffer.is_empty() => return Ok(None),
            Ok(0) => return Err("connection closed in the middle of the hello".to_owned()),
            Ok(_) => {}
            Err(error) => return Err(error.to_string()),
        }
    }
}

async fn refuse<W: AsyncWrite + Unpin>(
    writer: &mut W,
    conn: u64,
    peer_name: &str,
    refusal: &Refusal,
    refused: &AtomicU64,
) {
    refused.fetch_add(1, Ordering::Relaxed);
    eprintln!("swarmtel: connection {conn} from {peer_name} refused: {refusal}");
    let _ = writer
        .write_all(&HelloReply::refused(refusal).to_line())
        .await;
    let _ = writer.shutdown().await;
}

/// A connection's state on the pipeline thread.
struct ConnectionState {
    peer: Box<Peer>,
    run: RunHandle,
    /// Lines read, for error messages.
    line: u64,
    received: u64,
    bad_frames: u64,
    bye: Option<wire::Bye>,
}

/// The pipeline thread: decodes each connection's lines and processes them, in order per
/// connection, until every sender is gone; then finishes the run.
fn pipeline_loop(
    mut pipeline: Pipeline,
    mut receiver: mpsc::Receiver<Inbound>,
    live: &Live,
) -> Result<ServeReport, ServeError> {
    let mut states: HashMap<u64, ConnectionState> = HashMap::new();
    let mut totals = ConnectionTotals::default();
    let mut last_poll = Instant::now();
    let mut failure: Option<RunError> = None;
    while let Some(message) = receiver.blocking_recv() {
        let result = handle_inbound(&mut pipeline, &mut states, &mut totals, message);
        if last_poll.elapsed() >= Duration::from_millis(200) || result.is_err() {
            last_poll = Instant::now();
            if let Err(error) = pipeline.poll() {
                failure.get_or_insert(error);
            }
        }
        if let Err(error) = result {
            failure.get_or_insert(error);
        }
        if failure.is_some() || pipeline.has_required_failure() {
            break;
        }
        let now = pipeline.totals();
        live.events.store(now.events, Ordering::Relaxed);
        live.telemetry_out
            .store(now.telemetry_out, Ordering::Relaxed);
        live.rejected.store(now.rejected, Ordering::Relaxed);
        live.faults.store(now.faults, Ordering::Relaxed);
        live.bad_frames.store(totals.bad_frames, Ordering::Relaxed);
    }
    // Whatever is still queued when the run must stop is not processed: say how much.
    receiver.close();
    let mut unprocessed = 0u64;
    while let Ok(message) = receiver.try_recv() {
        if let Inbound::Lines { lines, .. } = message {
            unprocessed += bytecount_lines(&lines);
        }
    }
    if unprocessed > 0 {
        eprintln!("swarmtel: {unprocessed} queued event lines not processed: the run stopped");
    }
    for (conn, state) in states.drain() {
        close_connection(
            conn,
            state,
            &mut totals,
            0,
            Some("server stopped".to_owned()),
        );
    }
    if let Some(error) = failure {
        // Keep what was delivered: finish and flush before reporting.
        let _ = pipeline.finish();
        return Err(error.into());
    }
    let summary = pipeline.finish()?;
    if let Some(error) = pipeline.required_failure() {
        eprint!("{}", summary.render());
        eprint!("{}", totals.render());
        return Err(error.into());
    }
    Ok(ServeReport {
        summary,
        connections: totals,
    })
}

fn handle_inbound(
    pipeline: &mut Pipeline,
    states: &mut HashMap<u64, ConnectionState>,
    totals: &mut ConnectionTotals,
    message: Inbound,
) -> Result<(), RunError> {
    match message {
        Inbound::Open { conn, peer } => {
            let run = pipeline.add_run(RunContext {
                run_id: peer
                    .run_id
                    .clone()
                    .unwrap_or_else(|| pipeline.run_context().run_id.clone()),
                testplan: peer
                    .testplan
                    .clone()
                    .unwrap_or_else(|| pipeline.run_context().testplan.clone()),
            });
            totals.accepted[role_index(peer.role)] += 1;
            totals.dropped_by_clients += peer.dropped_before;
            states.insert(
                conn,
                ConnectionState {
                    peer,
                    run,
                    line: 1, // the hello
                    received: 0,
                    bad_frames: 0,
                    bye: None,
                },
            );
        }
        Inbound::Lines { conn, lines } => {
            let Some(state) = states.get_mut(&conn) else {
                return Ok(());
            };
            for raw in lines.split(|b| *b == b'\n') {
                if raw.is_empty() {
                    continue;
                }
                state.line += 1;
                pipeline.count_lines(1);
                let result = if raw.len() > wire::MAX_FRAME_BYTES {
                    totals.overlong += 1;
                    Err(FrameError::Bad(overlong_message(raw.len())))
                } else {
                    process_frame(pipeline, state, raw)
                };
                if let Err(error) = result {
                    match error {
                        FrameError::Bad(message) => {
                            state.bad_frames += 1;
                            totals.bad_frames += 1;
                            pipeline.count_bad_line();
                            report_bad_frame(conn, state, &message);
                        }
                        FrameError::Run(error) => return Err(error),
                    }
                }
            }
        }
        Inbound::Overlong { conn, bytes } => {
            totals.overlong += 1;
            if let Some(state) = states.get_mut(&conn) {
                state.line += 1;
                state.bad_frames += 1;
                totals.bad_frames += 1;
                pipeline.count_bad_line();
                report_bad_frame(conn, state, &overlong_message(bytes));
            }
        }
        Inbound::Close {
            conn,
            dropped_here,
            reason,
        } => {
            if let Some(state) = states.remove(&conn) {
                close_connection(conn, state, totals, dropped_here, reason);
            }
        }
        Inbound::Idle => pipeline.poll()?,
    }
    Ok(())
}

fn overlong_message(bytes: usize) -> String {
    format!(
        "line of {bytes} bytes or more is longer than the {} byte limit",
        wire::MAX_FRAME_BYTES
    )
}

enum FrameError {
    Bad(String),
    Run(RunError),
}

fn process_frame(
    pipeline: &mut Pipeline,
    state: &mut ConnectionState,
    raw: &[u8],
) -> Result<(), FrameError> {
    let line = std::str::from_utf8(raw)
        .map_err(|error| {
            FrameError::Bad(DecodeError::Json(format!("not UTF-8: {error}")).to_string())
        })?
        .trim_end_matches('\r');
    if line.trim().is_empty() {
        return Ok(());
    }
    if let Some(bye) = wire::parse_bye(line) {
        state.bye = Some(bye);
        return Ok(());
    }
    let record = ingest::decode_line(line).map_err(|error| FrameError::Bad(error.to_string()))?;
    if record.node != state.peer.node || record.role != state.peer.role {
        return Err(FrameError::Bad(format!(
            "event from {} {} on the connection of {} {}",
            record.role.as_str(),
            record.node.escape_debug(),
            state.peer.role.as_str(),
            state.peer.node.escape_debug()
        )));
    }
    state.received += 1;
    match pipeline.process_in_run(state.run, &record) {
        Ok(()) => Ok(()),
        Err(ProcessError::BadRecord(message)) => Err(FrameError::Bad(message)),
        Err(ProcessError::Run(error)) => Err(FrameError::Run(error)),
    }
}

fn report_bad_frame(conn: u64, state: &ConnectionState, message: &str) {
    if state.bad_frames <= BAD_FRAMES_REPORTED {
        eprintln!(
            "swarmtel: connection {conn} ({}) line {}: {message}; frame skipped{}",
            state.peer.node.escape_debug(),
            state.line,
            if state.bad_frames == BAD_FRAMES_REPORTED {
                "; further bad frames on this connection are counted, not shown"
            } else {
                ""
            }
        );
    }
}

fn close_connection(
    conn: u64,
    state: ConnectionState,
    totals: &mut ConnectionTotals,
    dropped_here: u64,
    reason: Option<String>,
) {
    totals.dropped_here += dropped_here;
    let mut notes = Vec::new();
    if let Some(bye) = state.bye {
        // The bye's count is the client's lifetime total; hello counted what came before.
        totals.dropped_by_clients += bye.dropped.saturating_sub(state.peer.dropped_before);
        let arrived = state.received + state.bad_frames + dropped_here;
        if bye.sent > arrived {
            let lost = bye.sent - arrived;
            totals.lost_in_transit += lost;
            notes.push(format!("{lost} sent events never arrived"));
        }
        if bye.dropped > 0 {
            notes.push(format!("the bridge dropped {} events", bye.dropped));
        }
    }
    if dropped_here > 0 {
        notes.push(format!("{dropped_here} events dropped here"));
    }
    if let Some(reason) = reason {
        notes.push(reason);
    }
    eprintln!(
        "swarmtel: connection {conn} ({}) closed: {} events, {} bad frames{}",
        state.peer.node.escape_debug(),
        state.received,
        state.bad_frames,
        if notes.is_empty() {
            String::new()
        } else {
            format!("; {}", notes.join("; "))
        }
    );
}

/// A bound listener.
enum Listener {
    Unix {
        listener: tokio::net::UnixListener,
        path: PathBuf,
    },
    Tcp(tokio::net::TcpListener),
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl Listener {
    fn bind(endpoint: &Endpoint, has_token: bool) -> Result<Listener, ServeError> {
        match endpoint {
            Endpoint::Unix(path) => bind_unix(endpoint, path),
            Endpoint::Tcp(_) => {
                if !endpoint.is_local()? && !has_token {
                    return Err(ServeError::TokenRequired {
                        endpoint: endpoint.clone(),
                    });
                }
                let addresses = endpoint.resolve()?;
                let listener = std::net::TcpListener::bind(&addresses[..])
                    .and_then(|listener| {
                        listener.set_nonblocking(true)?;
                        tokio::net::TcpListener::from_std(listener)
                    })
                    .map_err(|source| ServeError::Bind {
                        endpoint: endpoint.clone(),
                        source,
                    })?;
                Ok(Listener::Tcp(listener))
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("unix:{} (owner only)", path.display()),
            Listener::Tcp(listener) => match listener.local_addr() {
                Ok(address) => format!("tcp:{address}"),
                Err(_) => "tcp:?".to_owned(),
            },
        }
    }

    /// Removes the socket file; the listener itself closes when dropped.
    fn close(&self) {
        if let Listener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn accept_any(listeners: &[Listener]) -> std::io::Result<(Stream, String)> {
    if listeners.is_empty() {
        return std::future::pending().await;
    }
    let accepts = listeners.iter().map(|listener| {
        Box::pin(async move {
            match listener {
                Listener::Unix { listener, .. } => {
                    let (stream, _) = listener.accept().await?;
                    Ok((Stream::Unix(stream), "unix socket".to_owned()))
                }
                Listener::Tcp(listener) => {
                    let (stream, address) = listener.accept().await?;
                    let _ = stream.set_nodelay(true);
                    Ok((Stream::Tcp(stream), address.to_string()))
                }
            }
        })
    });
    futures_select_all(accepts).await
}

/// The first of several futures to finish (a tiny `select_all`).
async fn futures_select_all<F, T>(futures: impl Iterator<Item = std::pin::Pin<Box<F>>>) -> T
where
    F: std::future::Future<Output = T> + ?Sized,
{
    let mut futures: Vec<_> = futures.collect();
    std::future::poll_fn(move |cx| {
        for future in &mut futures {
            if let std::task::Poll::Ready(value) = future.as_mut().poll(cx) {
                return std::task::Poll::Ready(value);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Binds a Unix socket readable and writable by its owner only. A missing folder is created
/// `0700`; a stale socket file (nobody listening) is replaced; a live one is an error.
fn bind_unix(endpoint: &Endpoint, path: &Path) -> Result<Listener, ServeError> {
    let unsafe_path = |reason: String| ServeError::UnsafeSocketPath {
        path: path.to_owned(),
        reason,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|error| unsafe_path(format!("cannot create its folder: {error}")))?;
    }
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err(unsafe_path("exists and is not a socket".to_owned()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ServeError::InUse(endpoint.clone())),
            Err(_) => std::fs::remove_file(path)
                .map_err(|error| unsafe_path(format!("stale socket cannot be removed: {error}")))?,
        }
    }
    // The socket is created with the umask's permissions; make it owner-only from the start
    // so no one can connect between bind and chmod.
    // SAFETY: umask only swaps the process's file-creation mask.
    let previous = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    let listener = bound.map_err(|source| ServeError::Bind {
        endpoint: endpoint.clone(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|error| unsafe_path(format!("cannot make the socket owner-only: {error}")))?;
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
        .map(|listener| Listener::Unix {
            listener,
            path: path.to_owned(),
        })
        .map_err(|source| ServeError::Bind {
            endpoint: endpoint.clone(),
            source,
        })
}

/// The status display on stderr.
struct Status {
    line: bool,
    log: bool,
    live: Arc<Live>,
    started: Instant,
    last: std::cell::Cell<(Instant, u64, u64)>,
    shown: std::cell::Cell<bool>,
}

impl Status {
    fn new(mode: StatusMode, live: Arc<Live>) -> Self {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        let (line, log) = match mode {
            StatusMode::Auto => (terminal, !terminal),
            StatusMode::Line => (true, false),
            StatusMode::Log => (false, true),
            StatusMode::Off => (false, false),
        };
        let now = Instant::now();
        Self {
            line,
            log,
            live,
            started: now,
            last: std::cell::Cell::new((now, 0, 0)),
            shown: std::cell::Cell::new(false),
        }
    }

    /// Called every second: redraws the line, or logs every 10 s.
    fn show(&self) {
        if !self.line && !self.log {
            return;
        }
        let now = Instant::now();
        let (then, events_then, out_then) = self.last.get();
        let elapsed = now.duration_since(then).as_secs_f64();
        if self.log && elapsed < 10.0 {
            return;
        }
        let live = &self.live;
        let events = live.events.load(Ordering::Relaxed);
        let out = live.telemetry_out.load(Ordering::Relaxed);
        let rate = |now: u64, then: u64| (now.saturating_sub(then)) as f64 / elapsed.max(0.001);
        let open: Vec<u64> = live
            .open
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        let text = format!(
            "swarmtel: {}s | connections: {} master, {} worker, {} standalone | in {:.0} events/s | out {:.0} telemetry/s | rejected {} | faults {} | bad frames {} | dropped {}",
            self.started.elapsed().as_secs(),
            open[0],
            open[1],
            open[2],
            rate(events, events_then),
            rate(out, out_then),
            live.rejected.load(Ordering::Relaxed),
            live.faults.load(Ordering::Relaxed),
            live.bad_frames.load(Ordering::Relaxed),
            live.dropped.load(Ordering::Relaxed),
        );
        self.last.set((now, events, out));
        let mut stderr = std::io::stderr().lock();
        if self.line {
            let _ = write!(stderr, "\r\x1b[2K{text}");
            self.shown.set(true);
        } else {
            let _ = writeln!(stderr, "{text}");
        }
        let _ = stderr.flush();
    }

    /// The escape that clears the status line before another message, if one is shown.
    fn clear_code(&self) -> &'static str {
        if self.shown.get() { "\r\x1b[2K" } else { "" }
    }

    /// Ends the status line so the summary starts on a line of its own.
    fn finish(&self) {
        if self.shown.get() {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_counts_include_a_partial_last_line() {
        assert_eq!(bytecount_lines(b""), 0);
        assert_eq!(bytecount_lines(b"a\nb\n"), 2);
        assert_eq!(bytecount_lines(b"a\nb"), 2);
    }

    #[test]
    fn a_trailing_bye_is_found() {
        assert_eq!(
            trailing_bye(b"{\"event\":1}\n{\"bye\":true,\"sent\":1}\n"),
            Some(13)
        );
        assert_eq!(trailing_bye(b"{\"bye\":true,\"sent\":1}"), Some(0));
        assert_eq!(
            trailing_bye(b"{\"bye\":true,\"sent\":1}\n{\"event\":1}\n"),
            None
        );
    }

    #[test]
    fn totals_render_every_counter() {
        let totals = ConnectionTotals {
            accepted: [1, 2, 0],
            refused: 3,
            bad_frames: 4,
            dropped_by_clients: 5,
            dropped_here: 6,
            lost_in_transit: 7,
            overlong: 8,
        };
        assert_eq!(
            totals.render(),
            "swarmtel serve: 3 connections (1 master, 2 worker, 0 standalone), 3 refused; 4 bad frames, 8 over-long lines; events dropped: 5 by bridges, 6 here, 7 lost in transit\n"
        );
    }

    #[tokio::test]
    async fn read_line_finds_the_hello_and_refuses_overlong_ones() {
        let mut buffer = Vec::new();
        let mut input: &[u8] = b"{\"hello\":1}\nrest";
        assert_eq!(read_line(&mut input, &mut buffer).await, Ok(Some(11)));
        let mut empty: &[u8] = b"";
        assert_eq!(read_line(&mut empty, &mut Vec::new()).await, Ok(None));
        let mut cut: &[u8] = b"{\"hel";
        assert!(read_line(&mut cut, &mut Vec::new()).await.is_err());
        let long = vec![b'x'; wire::MAX_FRAME_BYTES + 2];
        let mut long_input: &[u8] = &long;
        assert!(
            read_line(&mut long_input, &mut Vec::new())
                .await
                .unwrap_err()
                .contains("no newline")
        );
    }
}
