//! `swarmtel serve`: the live source. Accepts bridge connections (Unix socket or TCP), checks
//! each one's hello, and feeds its event lines to the pipeline.
//!
//! - [`listen`]: the sockets, and who may connect;
//! - [`connection`]: one task per connection: hello, then chunks of whole lines;
//! - [`intake`]: the pipeline thread: decodes, processes and accounts per connection;
//! - [`status`]: the live status line or periodic log.
//!
//! Threads: the network side is one tokio (current-thread) runtime on the calling thread; the
//! pipeline runs on a thread of its own; each recorder instance runs on its own task thread
//! behind the pipeline (see [`crate::pipeline`]).
//!
//! Back-pressure: read lines wait for the pipeline under one byte budget shared by all
//! connections (`queue_bytes`). When it is spent, a connection either waits
//! (`Overload::Block`, so TCP flow control pushes back on the client) or drops the chunk and
//! counts its lines (`Overload::Drop`).

mod connection;
mod intake;
mod listen;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::RoleName;
use crate::pipeline::enrich::RunContext;
use crate::pipeline::{Pipeline, RunError, Summary};
use crate::sources::wire::Refusal;
use crate::sources::wire::{Endpoint, EndpointError, Wants};
use connection::{ActiveGuard, AwaitingHelloGuard, BUDGET_UNIT, Shared};
use listen::{Listener, Stream, accept_any};
use status::{Live, Status};

/// Most connections that may be waiting to send their hello at once; past it, the one that has
/// waited longest is closed to make room, so peers that open connections and say nothing (or
/// dribble a hello out) cannot keep bridges out.
pub const MAX_AWAITING_HELLO: usize = 32;

/// Most connections from one TCP address that may be waiting to send their hello; past it,
/// that address's longest-waiting one is closed, so one address cannot push others out.
pub const MAX_AWAITING_HELLO_PER_PEER: usize = 8;

/// Bad frames reported per connection before the rest are only counted.
pub const BAD_FRAMES_REPORTED: u64 = 10;

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
    /// Bytes of read lines queued in front of the recorders, across all connections.
    pub queue_bytes: usize,
    /// Progress display.
    pub status: StatusMode,
    /// How long a client has to send its hello.
    pub hello_timeout: Duration,
    /// Most connections open at once; more are refused (each open connection holds up to
    /// 64 KiB plus one 1 MiB line of read buffer, outside the queue).
    pub max_connections: usize,
}

/// The pipeline `serve` runs, still to be built: its plugins load (and compile, on a cold
/// cache) on the pipeline thread while connections are already accepted, so a bridge is
/// answered within a second and its lines wait in the queue until the plugins are ready.
pub struct PendingPipeline {
    /// The run's default id and test plan, for hellos that name none; the pipeline `build`
    /// makes must use the same.
    pub run: RunContext,
    /// Loads the plugins and builds the pipeline.
    pub build: Box<dyn FnOnce() -> Result<Pipeline, RunError> + Send>,
}

impl PendingPipeline {
    /// A pipeline that is built already (tests, and callers that loaded it themselves).
    pub fn ready(pipeline: Pipeline) -> Self {
        Self {
            run: pipeline.run_context().clone(),
            build: Box::new(move || Ok(pipeline)),
        }
    }
}

/// What each role needs sent, by [`status::role_index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoleWants([Wants; 3]);

impl RoleWants {
    fn of(pipeline: &Pipeline) -> Self {
        Self(
            [RoleName::Master, RoleName::Worker, RoleName::Standalone]
                .map(|role| pipeline.wants(role)),
        )
    }

    /// What connections of `role` need sent.
    pub(crate) fn get(&self, role: RoleName) -> Wants {
        self.0[status::role_index(role)]
    }
}

/// Whether the pipeline's plugins are loaded, as connections see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Still loading: lines are held.
    Loading,
    /// Loaded: lines are processed; what each role's connections need sent.
    Ready(RoleWants),
    /// Loading failed with this error: the server stops.
    Failed(String),
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

pub use crate::pipeline::counters::ConnectionTotals;

/// What a `serve` run ends with.
#[derive(Debug, Clone)]
pub struct ServeReport {
    /// The pipeline's summary.
    pub summary: Summary,
    /// The connections' counters.
    pub connections: ConnectionTotals,
}

/// Runs the server until SIGINT or SIGTERM, then drains: stops accepting, lets open
/// connections finish (up to the drain timeout, or a second signal), finishes the recorders
/// and flushes.
pub fn serve(pipeline: PendingPipeline, options: ServeOptions) -> Result<ServeReport, ServeError> {
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

/// Builds the pipeline (loads the plugins) on the pipeline thread and tells the connections
/// how it went; says on stderr how long it took when that was long enough to notice.
fn build_pipeline(
    build: Box<dyn FnOnce() -> Result<Pipeline, RunError> + Send>,
    readiness: &watch::Sender<Readiness>,
) -> Result<Pipeline, ServeError> {
    let started = std::time::Instant::now();
    match build() {
        Ok(pipeline) => {
            let took = started.elapsed();
            if took >= PLUGINS_SLOW {
                crate::diag!(
                    "swarmtel: plugins ready after {:.1} s; held lines are processed now",
                    took.as_secs_f64()
                );
            }
            readiness.send_replace(Readiness::Ready(RoleWants::of(&pipeline)));
            Ok(pipeline)
        }
        Err(error) => {
            readiness.send_replace(Readiness::Failed(error.to_string()));
            Err(error.into())
        }
    }
}

/// Loading the plugins for longer than this is reported when it ends.
const PLUGINS_SLOW: Duration = Duration::from_secs(1);

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
    pipeline: PendingPipeline,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
    drain_now: impl std::future::Future<Output = ()>,
) -> Result<ServeReport, ServeError> {
    let mut listeners = Vec::new();
    for endpoint in &options.listen {
        listeners.push(Listener::bind(endpoint, options.token.is_some())?);
    }
    let default_run = pipeline.run.clone();
    let names: Vec<String> = listeners.iter().map(Listener::describe).collect();
    crate::diag!(
        "swarmtel: serving on {}; run {}, testplan {}; SIGINT or SIGTERM to finish",
        names.join(", "),
        default_run.run_id.escape_debug(),
        default_run.testplan.escape_debug()
    );

    let live = Arc::new(Live::default());
    let (sender, receiver) = mpsc::unbounded_channel();
    let (readiness_tx, readiness) = watch::channel(Readiness::Loading);
    let budget_units = (options.queue_bytes / BUDGET_UNIT).clamp(1, Semaphore::MAX_PERMITS);
    let budget = Arc::new(Semaphore::new(budget_units));
    let pipeline_thread = {
        let live = live.clone();
        let queue = intake::Queue {
            budget: budget.clone(),
            units: budget_units,
        };
        std::thread::Builder::new()
            .name("swarmtel-pipeline".into())
            .spawn(move || {
                let pipeline = build_pipeline(pipeline.build, &readiness_tx)?;
                intake::run(pipeline, receiver, &live, &queue)
            })
            .expect("cannot start the pipeline thread")
    };
    let shared = Arc::new(Shared {
        sender: sender.clone(),
        budget,
        budget_units,
        token: options.token.clone(),
        hello_timeout: options.hello_timeout,
        overload: options.overload,
        default_run,
        live: live.clone(),
        refused: Default::default(),
        connected: Default::default(),
        active: Default::default(),
        awaiting_hello: Default::default(),
        evicted: Default::default(),
        readiness,
    });
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let status = Status::new(options.status, live.clone());
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut idle_tick = tokio::time::interval(Duration::from_millis(200));
    let mut next_conn = 0u64;
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
                        // Out of file descriptors, say: do not spin on it.
                        crate::diag!("swarmtel: accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                next_conn += 1;
                let conn = next_conn;
                let shared = shared.clone();
                let peer_ip = match &stream {
                    Stream::Tcp(s) => s.peer_addr().ok().map(|address| address.ip()),
                    Stream::Unix(_) => None,
                };
                let admitted = if shared.active.load(Ordering::Relaxed) >= options.max_connections {
                    Err(Refusal::TooManyConnections(options.max_connections))
                } else {
                    AwaitingHelloGuard::enter(&shared, conn, peer_ip)
                };
                let awaiting_hello = match admitted {
                    Ok(awaiting_hello) => awaiting_hello,
                    Err(refusal) => {
                        // Not kept in the set: it only answers and ends.
                        tokio::spawn(async move {
                            match stream {
                                Stream::Unix(s) => connection::refuse_over_cap(s, conn, peer_name, shared, refusal).await,
                                Stream::Tcp(s) => connection::refuse_over_cap(s, conn, peer_name, shared, refusal).await,
                            }
                        });
                        continue;
                    }
                };
                let guard = ActiveGuard::enter(&shared);
                let closing = closing_rx.clone();
                connections.spawn(async move {
                    let _guard = guard;
                    match stream {
                        Stream::Unix(s) => connection::serve(s, conn, peer_name, shared, closing, awaiting_hello).await,
                        Stream::Tcp(s) => connection::serve(s, conn, peer_name, shared, closing, awaiting_hello).await,
                    }
                });
            }
            _ = status_tick.tick() => status.show(),
            _ = idle_tick.tick() => {
                let _ = sender.send(intake::Inbound::Idle);
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
        crate::diag!(
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
    }
    // Connections still open stop reading, count what they could not queue, and end.
    let _ = closing_tx.send(true);
    if !connections.is_empty() {
        crate::diag!(
            "{}swarmtel: closing {} connection(s) still open at the drain deadline",
            status.clear_code(),
            connections.len()
        );
        while connections.join_next().await.is_some() {}
    }
    status.finish();
    let refused = shared.refused.load(Ordering::Relaxed);
    let evicted = shared.evicted.load(Ordering::Relaxed);
    drop(shared);
    drop(sender);
    let result = tokio::task::spawn_blocking(move || pipeline_thread.join())
        .await
        .expect("the join task does not panic");
    let mut report = match result {
        Ok(result) => result?,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    report.connections.refused = refused;
    report.connections.evicted_before_hello = evicted;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_render_every_counter() {
        let totals = ConnectionTotals {
            accepted: [1, 2, 0],
            refused: 3,
            evicted_before_hello: 9,
            bad_frames: 4,
            dropped_by_clients: 5,
            dropped_here: 6,
            lost_in_transit: 7,
            overlong: 8,
            duplicates_skipped: 0,
        };
        assert_eq!(
            totals.render(),
            "swarmtel serve: 3 connections (1 master, 2 worker, 0 standalone), 3 refused, 9 closed before their hello to make room; 4 bad frames, 8 over-long lines; events dropped: 5 by bridges, 6 here, 7 lost in transit\n"
        );
    }
}
