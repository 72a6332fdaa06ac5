//! The OTLP/HTTP transport: one thread that POSTs encoded export requests to the receiver
//! (HTTP/1.1 through hyper), retries what the receiver asks to be retried, and keeps what
//! waits in a queue of bounded size.
//!
//! - A response of 429, 502, 503 or 504, a refused or broken connection and a timeout are
//!   retried after a backoff: 250 ms, doubling up to 30 s, or the receiver's `Retry-After`
//!   (at most 30 s). Any other status drops the request, counted as failed. Each signal
//!   keeps its own backoff: a failing `/v1/metrics` neither holds up logs nor gets tried
//!   sooner because a newer metrics export replaced the one waiting.
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
    /// Metric data points the receiver accepted the request of but rejected itself.
    pub rejected_points: u64,
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

/// When a signal may be tried next, after failed tries.
#[derive(Default, Clone, Copy)]
struct Backoff {
    /// Not before this instant.
    not_before: Option<Instant>,
    /// The wait after the next failure ([`FIRST_BACKOFF`] when zero).
    next: Duration,
}

impl Backoff {
    fn ready(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|at| now >= at)
    }
}

#[derive(Default)]
struct State {
    /// The latest metrics export not sent yet (at most one: they are cumulative).
    metrics: Option<Export>,
    /// Per signal (metrics, logs): when it may be tried next.
    backoff: [Backoff; 2],
    /// The signal of the latest try, so that neither holds up the other.
    last: Option<Signal>,
    logs: VecDeque<Export>,
    /// Bytes of the waiting logs (the budget is theirs; the one metrics export is apart).
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
            Signal::Metrics => state.metrics = Some(export),
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
            // The end gets one try per signal at once, whatever the backoff: the receiver
            // may be back, and the last export is the one that counts.
            state.backoff = Default::default();
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

impl State {
    /// The next export to try now: the metrics first (one small export that makes good every
    /// earlier one), then the oldest logs, each only once its signal's backoff is over.
    /// After a metrics try, ready logs go first: metrics posts slower than the export
    /// interval would otherwise hold up the logs for good.
    fn take_ready(&mut self, now: Instant) -> Option<Export> {
        let metrics_ready = self.metrics.is_some() && self.backoff[0].ready(now);
        let logs_ready = !self.logs.is_empty() && self.backoff[1].ready(now);
        let export = if metrics_ready && !(logs_ready && self.last == Some(Signal::Metrics)) {
            self.metrics.take()?
        } else if logs_ready {
            let export = self.logs.pop_front()?;
            self.queued_bytes -= export.body.len();
            export
        } else {
            return None;
        };
        self.last = Some(export.signal);
        Some(export)
    }

    /// The earliest instant a waiting export's backoff ends.
    fn next_ready(&self) -> Option<Instant> {
        let metrics = self.metrics.as_ref().and(self.backoff[0].not_before);
        let logs = (!self.logs.is_empty())
            .then_some(self.backoff[1].not_before)
            .flatten();
        metrics.into_iter().chain(logs).min()
    }
}

fn slot(signal: Signal) -> usize {
    match signal {
        Signal::Metrics => 0,
        Signal::Logs => 1,
    }
}

/// The thread: sends what is ready (metrics first, then the oldest logs), one try at a
/// time, and sleeps until a new export, the end of a backoff, or the end of the run.
fn run(shared: &Shared, target: &Target, runtime: &tokio::runtime::Runtime) {
    loop {
        let export = {
            let mut state = shared.lock();
            loop {
                let now = Instant::now();
                if state.deadline.is_some_and(|deadline| now >= deadline) {
                    drop_everything(&mut state);
                    return;
                }
                if let Some(export) = state.take_ready(now) {
                    break export;
                }
                if state.deadline.is_some() && state.metrics.is_none() && state.logs.is_empty() {
                    return;
                }
                // Closing, and nothing waiting can be tried before the deadline.
                if let (Some(deadline), Some(next)) = (state.deadline, state.next_ready())
                    && next >= deadline
                {
                    drop_everything(&mut state);
                    return;
                }
                let wake_at = state.next_ready().into_iter().chain(state.deadline).min();
                state = match wake_at {
                    Some(at) => {
                        let wait = at
                            .saturating_duration_since(now)
                            .max(Duration::from_millis(1));
                        shared
                            .wake
                            .wait_timeout(state, wait)
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .0
                    }
                    None => shared
                        .wake
                        .wait(state)
                        .unwrap_or_else(|poisoned| poisoned.into_inner()),
                };
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

/// How long to wait before the next try: the backoff, or longer if the receiver asks, at
/// most [`MAX_BACKOFF`].
fn next_wait(retry_after: Option<Duration>, backoff: Duration) -> Duration {
    retry_after
        .map_or(backoff, |asked| asked.max(backoff))
        .min(MAX_BACKOFF)
}

/// How a try ended.
enum Outcome {
    /// Accepted; with the items the receiver said it rejected (OTLP partial success).
    Accepted { rejected: u64 },
    /// Worth another try: after this long at least (the receiver's `Retry-After`).
    Retry {
        /// The receiver's `Retry-After`.
        after: Option<Duration>,
        /// The status, for the end-of-run report.
        why: String,
    },
    /// Refused for good, and why.
    Refused(String),
}

/// Tries one request once: accepted or refused, it is done with; worth another try, it goes
/// back to the queue (unless a newer metrics export replaced it) and its signal waits out
/// the backoff.
fn deliver(shared: &Shared, target: &Target, runtime: &tokio::runtime::Runtime, export: Export) {
    let result = runtime.block_on(attempt(shared, target, &export));
    let mut state = shared.lock();
    let retry_after = match result {
        Ok(Outcome::Accepted { rejected }) => {
            state.backoff[slot(export.signal)] = Backoff::default();
            state.stats.sent += 1;
            // The receiver's count, bounded by what the request carried.
            let rejected = match export.signal {
                Signal::Logs => rejected.min(export.records),
                Signal::Metrics => rejected,
            };
            if rejected > 0 {
                state.last_error = Some(format!("the receiver rejected {rejected} items"));
                match export.signal {
                    Signal::Logs => {
                        state.stats.dropped_records =
                            state.stats.dropped_records.saturating_add(rejected)
                    }
                    Signal::Metrics => {
                        state.stats.rejected_points =
                            state.stats.rejected_points.saturating_add(rejected)
                    }
                }
            }
            return;
        }
        Ok(Outcome::Refused(why)) => {
            state.backoff[slot(export.signal)] = Backoff::default();
            state.last_error = Some(why);
            state.stats.failed += 1;
            if export.signal == Signal::Logs {
                state.stats.dropped_records += export.records;
            }
            return;
        }
        Ok(Outcome::Retry { after, why }) => {
            state.last_error = Some(why);
            after
        }
        Err(error) => {
            state.last_error = Some(error);
            None
        }
    };
    state.stats.retries += 1;
    let backoff = &mut state.backoff[slot(export.signal)];
    let current = backoff.next.max(FIRST_BACKOFF);
    backoff.not_before = Some(Instant::now() + next_wait(retry_after, current));
    backoff.next = (current * 2).min(MAX_BACKOFF);
    match export.signal {
        // A newer export, if one came meanwhile, makes this one moot.
        Signal::Metrics => {
            if state.metrics.is_none() {
                state.metrics = Some(export);
            }
        }
        Signal::Logs => {
            state.queued_bytes += export.body.len();
            state.logs.push_front(export);
        }
    }
}

/// One try, cut short at the end-of-run deadline if that comes first (read at the start,
/// and again when the end is announced during the try).
async fn attempt(shared: &Shared, target: &Target, export: &Export) -> Result<Outcome, String> {
    let started = tokio::time::Instant::now();
    let limit = |deadline: Option<Instant>| {
        let by_timeout = started + target.timeout;
        deadline.map_or(by_timeout, |deadline| by_timeout.min(deadline.into()))
    };
    let cut_off = || Err(format!("no answer within {:?}", target.timeout));
    let request = post(target, export);
    tokio::pin!(request);
    let mut until = limit(shared.lock().deadline);
    loop {
        tokio::select! {
            result = tokio::time::timeout_at(until, &mut request) => {
                return result.unwrap_or_else(|_| cut_off());
            }
            () = shared.closing.notified() => until = limit(shared.lock().deadline),
        }
    }
}

/// One POST and what the answer means; an error text for a connection that failed.
async fn post(target: &Target, export: &Export) -> Result<Outcome, String> {
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
    let Ok(request) = request.body(Full::new(export.body.clone())) else {
        // The config's checks make this unreachable; a request that cannot be built is
        // not retried.
        return Ok(Outcome::Refused("the request cannot be built".into()));
    };
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
    // Read a bounded part of the answer: an accepted one may report a partial success.
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    Ok(match status {
        200..=299 => Outcome::Accepted {
            rejected: rejected_items(export.signal, &body),
        },
        429 | 502 | 503 | 504 => Outcome::Retry {
            after: retry_after,
            why: format!("HTTP {status}"),
        },
        other => Outcome::Refused(format!("HTTP {other} (not retried)")),
    })
}

/// What an OTLP success body says was rejected: `partial_success.rejected_log_records` or
/// `rejected_data_points` (0 when the body is empty or not protobuf).
fn rejected_items(signal: Signal, body: &[u8]) -> u64 {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
    use prost::Message;
    let rejected = match signal {
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|response| response.partial_success)
            .map(|partial| partial.rejected_log_records),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|response| response.partial_success)
            .map(|partial| partial.rejected_data_points),
    };
    rejected.map_or(0, |count| u64::try_from(count).unwrap_or(0))
}

#[cfg(test)]
impl Transport {
    /// Exports waiting (not the one in flight).
    pub(super) fn queued(&self) -> usize {
        let state = self.shared.lock();
        state.logs.len() + usize::from(state.metrics.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(bytes: usize, records: u64) -> Export {
        Export {
            signal: Signal::Logs,
            body: Bytes::from(vec![0u8; bytes]),
            records,
        }
    }

    /// A small metrics export.
    fn metrics() -> Export {
        Export {
            signal: Signal::Metrics,
            body: Bytes::from_static(b"m"),
            records: 0,
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

    /// A receiver on loopback that answers each request with `status(path)`, and counts the
    /// requests per path.
    /// Waits up to 10 s for `done`; fails with `what` past that.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn receiver(status: fn(&str) -> u16) -> (String, Arc<Mutex<Vec<String>>>) {
        receiver_with_body(status, Vec::new())
    }

    /// [`receiver`] that answers every request with `body`.
    fn receiver_with_body(
        status: fn(&str) -> u16,
        body: Vec<u8>,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let _ = reader.read_exact(&mut vec![0; length]);
                log.lock().unwrap().push(path.clone());
                let _ = write!(
                    stream,
                    "HTTP/1.1 {} X\r\nretry-after: 30\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    status(&path),
                    body.len()
                );
                let _ = stream.write_all(&body);
            }
        });
        (authority, seen)
    }

    #[test]
    fn a_partial_success_counts_at_most_what_the_request_carried() {
        use opentelemetry_proto::tonic::collector::logs::v1::{
            ExportLogsPartialSuccess, ExportLogsServiceResponse,
        };
        use prost::Message;
        let body = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: i64::MAX,
                error_message: "no".into(),
            }),
        }
        .encode_to_vec();
        let (authority, _) = receiver_with_body(|_| 200, body);
        let mut transport = Transport::start(target(authority), 1 << 20).unwrap();
        for _ in 0..3 {
            transport.send(logs(10, 7));
        }
        transport.close(Duration::from_secs(10));
        let stats = transport.stats();
        assert_eq!((stats.sent, stats.dropped_records), (3, 21));
    }

    #[test]
    fn the_wait_is_the_backoff_or_longer_if_asked_and_at_most_30_s() {
        let backoff = Duration::from_millis(500);
        assert_eq!(next_wait(None, backoff), backoff);
        assert_eq!(next_wait(Some(Duration::ZERO), backoff), backoff);
        assert_eq!(
            next_wait(Some(Duration::from_secs(7)), backoff),
            Duration::from_secs(7)
        );
        assert_eq!(
            next_wait(Some(Duration::from_secs(3600)), backoff),
            MAX_BACKOFF
        );
        assert_eq!(next_wait(None, Duration::from_secs(60)), MAX_BACKOFF);
    }

    #[test]
    fn a_try_ends_at_its_timeout_and_every_queued_one_at_the_drain_deadline() {
        let (_listener, authority) = silent_receiver();
        let mut target = target(authority);
        target.timeout = Duration::from_millis(200);
        let mut transport = Transport::start(target, 1 << 20).unwrap();
        transport.send(logs(10, 1));
        wait_until("no timeout", || transport.stats().retries > 0);
        assert!(
            transport
                .last_error()
                .unwrap()
                .starts_with("no answer within")
        );
        // Two more wait; the end gives them 300 ms in all, not 200 ms each after it.
        transport.send(logs(10, 2));
        transport.send(logs(10, 4));
        let closing = Instant::now();
        transport.close(Duration::from_millis(300));
        assert!(
            closing.elapsed() < Duration::from_secs(2),
            "{:?}",
            closing.elapsed()
        );
        assert_eq!(transport.stats().dropped_records, 1 + 2 + 4);
    }

    #[test]
    fn metrics_go_out_while_logs_are_refused_with_503() {
        let (authority, seen) = receiver(|path| if path == "/v1/logs" { 503 } else { 200 });
        let mut transport = Transport::start(target(authority), 1 << 20).unwrap();
        transport.send(logs(10, 3));
        wait_until("no retry", || transport.stats().retries > 0);
        transport.send(metrics());
        wait_until("metrics wait behind logs", || transport.stats().sent > 0);
        transport.close(Duration::ZERO);
        let stats = transport.stats();
        assert_eq!((stats.sent, stats.dropped_records), (1, 3));
        assert_eq!(transport.last_error().as_deref(), Some("HTTP 503"));
        assert!(
            seen.lock()
                .unwrap()
                .iter()
                .any(|path| path == "/v1/metrics")
        );
    }

    #[test]
    fn a_failing_metrics_path_keeps_its_backoff_and_holds_up_no_logs() {
        let (authority, seen) = receiver(|path| if path == "/v1/metrics" { 503 } else { 200 });
        let mut transport = Transport::start(target(authority), 1 << 20).unwrap();
        // A new metrics export and a logs export every 20 ms for a second, as a busy run
        // publishes them, while /v1/metrics answers 503.
        let start = Instant::now();
        let mut logs_sent = 0;
        while start.elapsed() < Duration::from_secs(1) {
            transport.send(metrics());
            transport.send(logs(10, 1));
            logs_sent += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        transport.close(Duration::from_secs(5));
        let stats = transport.stats();
        let paths = seen.lock().unwrap().clone();
        let metrics_tries = paths.iter().filter(|path| *path == "/v1/metrics").count();
        // Backoff 250 ms, then 500 ms, ...: a newer export does not reset it. Within the
        // second and the drain, a handful of tries, not one per export.
        assert!(
            (2..=8).contains(&metrics_tries),
            "{metrics_tries} metrics tries"
        );
        assert_eq!(
            (stats.sent, stats.dropped_records),
            (logs_sent, 0),
            "every logs export delivered while metrics waited"
        );
        assert_eq!(stats.dropped_metrics, 1);
    }

    #[test]
    fn the_end_gets_one_try_whatever_the_backoff() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static TRIES: AtomicUsize = AtomicUsize::new(0);
        // 503 with Retry-After: 30 once, then the receiver is back.
        let (authority, _) = receiver(|_| {
            if TRIES.fetch_add(1, Ordering::SeqCst) == 0 {
                503
            } else {
                200
            }
        });
        let mut transport = Transport::start(target(authority), 1 << 20).unwrap();
        transport.send(metrics());
        wait_until("no retry", || transport.stats().retries > 0);
        // The last export comes while the first waits out its 30 s; the end does not wait.
        transport.send(metrics());
        transport.send(logs(10, 2));
        let closing = Instant::now();
        transport.close(Duration::from_secs(3));
        let stats = transport.stats();
        assert_eq!(
            (stats.sent, stats.dropped_metrics, stats.dropped_records),
            (2, 0, 0)
        );
        assert!(
            closing.elapsed() < Duration::from_secs(2),
            "{:?}",
            closing.elapsed()
        );
        // With nothing that can be tried before the deadline, the end comes at once.
        let (authority, _) = receiver(|_| 503);
        let mut transport = Transport::start(target(authority), 1 << 20).unwrap();
        transport.send(metrics());
        wait_until("no retry", || transport.stats().retries > 0);
        let closing = Instant::now();
        transport.close(Duration::from_secs(5));
        let stats = transport.stats();
        // Its one try at the end failed too, and 30 s is past the deadline.
        assert_eq!(
            (stats.sent, stats.retries, stats.dropped_metrics),
            (0, 2, 1)
        );
        assert!(
            closing.elapsed() < Duration::from_secs(2),
            "{:?}",
            closing.elapsed()
        );
    }

    #[test]
    fn after_a_metrics_try_ready_logs_go_first() {
        let mut state = State {
            budget: 1 << 20,
            ..State::default()
        };
        let now = Instant::now();
        state.metrics = Some(metrics());
        state.logs.push_back(logs(10, 1));
        state.queued_bytes = 10;
        let order: Vec<Signal> = std::iter::from_fn(|| {
            let export = state.take_ready(now)?;
            // A newer metrics export is always waiting, as with posts slower than the interval.
            if export.signal == Signal::Metrics {
                state.logs.push_back(logs(10, 1));
                state.queued_bytes += 10;
            }
            state.metrics = Some(metrics());
            Some(export.signal)
        })
        .take(6)
        .collect();
        use Signal::{Logs, Metrics};
        assert_eq!(order, [Metrics, Logs, Metrics, Logs, Metrics, Logs]);
    }

    #[test]
    fn a_refusal_other_than_the_retried_statuses_is_final() {
        let (authority, seen) = receiver(|_| 400);
        let mut transport = Transport::start(target(authority), 1 << 20).unwrap();
        transport.send(logs(10, 5));
        transport.close(Duration::from_secs(10));
        let stats = transport.stats();
        assert_eq!(
            (stats.failed, stats.retries, stats.dropped_records),
            (1, 0, 5)
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(
            transport.last_error().as_deref(),
            Some("HTTP 400 (not retried)")
        );
    }
}
