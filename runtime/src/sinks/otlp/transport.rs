//! The OTLP/HTTP transport: one thread that POSTs encoded export requests to the receiver
//! (HTTP/1.1 through hyper), retries what the receiver asks to be retried, and keeps what
//! waits in a queue of bounded size.
//!
//! - A response of 429, 502, 503 or 504, a refused or broken connection and a timeout are
//!   retried after a backoff: 250 ms, doubling up to 30 s, or the receiver's `Retry-After`
//!   (at most 30 s). Any other status drops the request, counted as failed.
//! - Logs wait in order; past the queue's byte budget the oldest are dropped and their
//!   records counted. Metrics are cumulative, so a newer export replaces one still waiting
//!   (or being retried): nothing is lost by that.
//! - At the end, what is queued is sent until the drain deadline; what is left then is
//!   dropped and counted.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// The longest wait between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait after a failed try.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The most of a response body read (and then ignored).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Which OTLP signal a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `/v1/metrics`.
    Metrics,
    /// `/v1/logs`.
    Logs,
}

impl Signal {
    /// The path OTLP/HTTP gives the signal.
    pub fn path(self) -> &'static str {
        match self {
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }
}

/// One encoded export request.
#[derive(Debug)]
pub struct Export {
    /// What it carries.
    pub signal: Signal,
    /// The protobuf body, compressed as the settings say.
    pub body: Bytes,
    /// Log records in it (0 for metrics): what is lost if it is dropped.
    pub records: u64,
}

/// What the transport did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Requests the receiver accepted.
    pub sent: u64,
    /// Tries that were retried.
    pub retries: u64,
    /// Requests the receiver refused for good (a status other than the retried ones).
    pub failed: u64,
    /// Log records dropped: queue full, refused, or still queued when the run ended.
    pub dropped_records: u64,
    /// Metrics exports still waiting when the run ended (a later one replaced none).
    pub dropped_metrics: u64,
}

/// How to reach the receiver.
#[derive(Debug, Clone)]
pub struct Target {
    /// `HOST:PORT`.
    pub authority: String,
    /// The path before `/v1/...`.
    pub prefix: String,
    /// Extra headers (from the config).
    pub headers: Vec<(String, String)>,
    /// Whether bodies are gzip-compressed.
    pub gzip: bool,
    /// How long one try may take.
    pub timeout: Duration,
}

#[derive(Default)]
struct State {
    metrics: Option<Export>,
    logs: VecDeque<Export>,
    queued_bytes: usize,
    budget: usize,
    /// Set by `close`: send what is queued until then, then stop.
    deadline: Option<Instant>,
    stats: TransportStats,
    /// The latest failure, for the end-of-run report.
    last_error: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Told when the end comes, so a request in flight stops waiting at the deadline.
    closing: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The sending thread and its queue.
pub struct Transport {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Transport {
    /// Starts the thread; `budget` bytes of requests may wait.
    pub fn start(target: Target, budget: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                budget,
                ..State::default()
            }),
            wake: Condvar::new(),
            closing: tokio::sync::Notify::new(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("swarmtel-otlp".into())
            .spawn(move || run(&thread_shared, &target, &runtime))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues a request. A metrics export replaces the one waiting; logs past the budget
    /// push out the oldest.
    pub fn send(&self, export: Export) {
        let mut state = self.shared.lock();
        match export.signal {
            Signal::Metrics => {
                if let Some(old) = state.metrics.take() {
                    state.queued_bytes -= old.body.len();
                }
                state.queued_bytes += export.body.len();
                state.metrics = Some(export);
            }
            Signal::Logs => {
                while state.queued_bytes + export.body.len() > state.budget {
                    let Some(oldest) = state.logs.pop_front() else {
                        break;
                    };
                    state.queued_bytes -= oldest.body.len();
                    state.stats.dropped_records += oldest.records;
                }
                if state.queued_bytes + export.body.len() > state.budget {
                    // Larger than the whole budget on its own.
                    state.stats.dropped_records += export.records;
                } else {
                    state.queued_bytes += export.body.len();
                    state.logs.push_back(export);
                }
            }
        }
        drop(state);
        self.shared.wake.notify_all();
    }

    /// What it did so far.
    pub fn stats(&self) -> TransportStats {
        self.shared.lock().stats
    }

    /// The latest failure, if any.
    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().last_error.clone()
    }

    /// Sends what is queued for at most `drain`, then stops the thread; what is left is
    /// dropped and counted.
    pub fn close(&mut self, drain: Duration) {
        {
            let mut state = self.shared.lock();
            state.deadline = Some(Instant::now() + drain);
        }
        self.shared.wake.notify_all();
        self.shared.closing.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Transport {
    /// Without a [`Transport::close`] (a run that failed), stops at once.
    fn drop(&mut self) {
        self.close(Duration::ZERO);
    }
}

/// The thread: takes the oldest logs first, then the metrics, and sends each until it is
/// accepted, refused, replaced or out of time.
fn run(shared: &Shared, target: &Target, runtime: &tokio::runtime::Runtime) {
    loop {
        let export = {
            let mut state = shared.lock();
            loop {
                if state
                    .deadline
                    .is_some_and(|deadline| Instant::now() >= deadline)
                {
                    drop_everything(&mut state);
                    return;
                }
                if let Some(export) = state.logs.pop_front().or_else(|| state.metrics.take()) {
                    state.queued_bytes -= export.body.len();
                    break export;
                }
                if state.deadline.is_some() {
                    return;
                }
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        };
        deliver(shared, target, runtime, export);
    }
}

fn drop_everything(state: &mut State) {
    while let Some(export) = state.logs.pop_front() {
        state.stats.dropped_records += export.records;
    }
    if state.metrics.take().is_some() {
        state.stats.dropped_metrics += 1;
    }
    state.queued_bytes = 0;
}

/// Tries one request until it is done with.
fn deliver(shared: &Shared, target: &Target, runtime: &tokio::runtime::Runtime, export: Export) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let outcome = runtime.block_on(attempt(shared, target, &export));
        let mut state = shared.lock();
        let wait = match outcome {
            Ok((status, _)) if (200..300).contains(&status) => {
                state.stats.sent += 1;
                return;
            }
            Ok((status, retry_after)) if matches!(status, 429 | 502 | 503 | 504) => {
                state.last_error = Some(format!("HTTP {status}"));
                retry_after.unwrap_or(backoff).min(MAX_BACKOFF)
            }
            Ok((status, _)) => {
                state.last_error = Some(format!("HTTP {status} (not retried)"));
                state.stats.failed += 1;
                state.stats.dropped_records += export.records;
                return;
            }
            Err(error) => {
                state.last_error = Some(error);
                backoff
            }
        };
        state.stats.retries += 1;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        // Wait, unless the end comes first; a newer metrics export makes this one moot.
        let until = Instant::now() + wait;
        loop {
            if export.signal == Signal::Metrics && state.metrics.is_some() {
                return;
            }
            if state
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                match export.signal {
                    Signal::Metrics => state.stats.dropped_metrics += 1,
                    Signal::Logs => state.stats.dropped_records += export.records,
                }
                return;
            }
            let now = Instant::now();
            if now >= until {
                break;
            }
            let limit = state
                .deadline
                .map_or(until, |deadline| deadline.min(until))
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            state = shared
                .wake
                .wait_timeout(state, limit)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// One try, cut short at the end-of-run deadline if that comes first.
async fn attempt(
    shared: &Shared,
    target: &Target,
    export: &Export,
) -> Result<(u16, Option<Duration>), String> {
    let timed_out = || Err(format!("no answer within {:?}", target.timeout));
    let request = tokio::time::timeout(target.timeout, post(target, export));
    tokio::pin!(request);
    loop {
        tokio::select! {
            result = &mut request => return result.unwrap_or_else(|_| timed_out()),
            () = shared.closing.notified() => {
                let Some(deadline) = shared.lock().deadline else {
                    continue;
                };
                return match tokio::time::timeout_at(deadline.into(), &mut request).await {
                    Ok(result) => result.unwrap_or_else(|_| timed_out()),
                    Err(_) => Err("cut off at the end of the run".into()),
                };
            }
        }
    }
}

/// One POST: the status and the `Retry-After` seconds, if any; an error text for a failed
/// connection.
async fn post(target: &Target, export: &Export) -> Result<(u16, Option<Duration>), String> {
    let stream = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|error| format!("cannot connect to {}: {error}", target.authority))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake with {}: {error}", target.authority))?;
    tokio::spawn(connection);
    let mut request = Request::post(format!("{}{}", target.prefix, export.signal.path()))
        .header(hyper::header::HOST, &target.authority)
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
    if target.gzip {
        request = request.header(hyper::header::CONTENT_ENCODING, "gzip");
    }
    for (name, value) in &target.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(export.body.clone()))
        .map_err(|error| format!("request: {error}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("sending to {}: {error}", target.authority))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read (a bounded part of) the answer so the receiver sees a clean exchange.
    let _ = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await;
    Ok((status, retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Transport {
        fn queued(&self) -> usize {
            let state = self.shared.lock();
            state.logs.len() + usize::from(state.metrics.is_some())
        }
    }

    fn logs(bytes: usize, records: u64) -> Export {
        Export {
            signal: Signal::Logs,
            body: Bytes::from(vec![0u8; bytes]),
            records,
        }
    }

    /// A receiver that takes connections and never answers.
    fn silent_receiver() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        (listener, authority)
    }

    fn target(authority: String) -> Target {
        Target {
            authority,
            prefix: String::new(),
            headers: Vec::new(),
            gzip: false,
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn past_the_byte_budget_the_oldest_logs_are_dropped_and_counted() {
        let (_listener, authority) = silent_receiver();
        let mut transport = Transport::start(target(authority), 100).unwrap();
        transport.send(logs(60, 1));
        // The first is in flight (the receiver never answers), so it left the queue.
        let start = Instant::now();
        while transport.queued() > 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "never sent");
            std::thread::sleep(Duration::from_millis(5));
        }
        transport.send(logs(60, 2));
        transport.send(logs(60, 4));
        assert_eq!(
            transport.stats().dropped_records,
            2,
            "the older of the two waiting"
        );
        transport.send(logs(101, 8));
        assert_eq!(
            transport.stats().dropped_records,
            2 + 4 + 8,
            "one larger than the whole budget is dropped, after what it pushed out"
        );
        // A newer metrics export replaces a waiting one, not counted as lost.
        let metrics = |bytes| Export {
            signal: Signal::Metrics,
            body: Bytes::from(vec![0u8; bytes]),
            records: 0,
        };
        transport.send(metrics(10));
        transport.send(metrics(20));
        assert_eq!(transport.queued(), 1);
        // The end: the request in flight is cut off at once, not after its 60 s timeout.
        let closing = Instant::now();
        transport.close(Duration::ZERO);
        assert!(
            closing.elapsed() < Duration::from_secs(5),
            "{:?}",
            closing.elapsed()
        );
        let stats = transport.stats();
        assert_eq!(stats.dropped_records, 1 + 2 + 4 + 8);
        assert_eq!(stats.dropped_metrics, 1);
        assert_eq!(stats.sent, 0);
    }

    #[test]
    fn a_huge_answer_is_read_only_up_to_its_cap() {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let sent_bytes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent_bytes.clone();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            let mut stream = stream;
            // Claims 1 GiB and sends until the client hangs up.
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n");
            let chunk = vec![b'x'; 16 * 1024];
            while stream.write_all(&chunk).is_ok() {
                counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut transport = Transport::start(target(authority), 1 << 20).unwrap();
        transport.send(logs(10, 1));
        transport.close(Duration::from_secs(20));
        assert_eq!(transport.stats().sent, 1);
        // Socket buffers hold a few MiB at most; a reader of the whole answer would take 1 GiB.
        let written = sent_bytes.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            written < 64 << 20,
            "{written} bytes were taken from the receiver"
        );
    }
}
