//! Ingest: decodes the NDJSON event stream into typed event records.
//!
//! One JSON object per line: `event` (the Locust hook's name), `role`, `node`, `time` (Unix
//! seconds), then the hook's arguments under Locust's own names. The format is documented in
//! `schemas/event-stream.schema.json`. Keys this decoder does not know are ignored, so a newer
//! bridge can add arguments; a known key with the wrong type, or a missing required argument,
//! makes the line an error that names the key.
//!
//! Decoding borrows strings from the line wherever JSON allows, so a request record costs no
//! allocation; only rare events (stats snapshots, errors) build owned values.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::bindings::types as wit;
use crate::config::RoleName;

mod request_scan;

/// The latest event time accepted: 9999-12-31T23:59:59Z. Later times cannot be written as
/// RFC 3339, so a line carrying one is a bad line, never a panic downstream.
pub const MAX_UNIX_SECONDS: f64 = 253_402_300_799.0;

/// Most characters in a node name, run id or test plan.
pub const MAX_LABEL_CHARS: usize = 128;

/// A node name, run id or test plan: at most [`MAX_LABEL_CHARS`] characters, none of them
/// control characters (they end up in logs and on every telemetry line).
pub fn check_label(value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_LABEL_CHARS {
        return Err(format!("longer than {MAX_LABEL_CHARS} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("`{}` has control characters", value.escape_debug()));
    }
    Ok(())
}

/// Whether `seconds` is an event time this runtime can carry: finite, from 1970 to 9999.
pub fn time_in_range(seconds: f64) -> bool {
    (0.0..=MAX_UNIX_SECONDS).contains(&seconds)
}

/// One decoded line of the event stream.
#[derive(Debug)]
pub struct EventRecord<'a> {
    /// The node that fired it: `master`, `worker-<n>` or `local`.
    pub node: Cow<'a, str>,
    /// The node's role.
    pub role: RoleName,
    /// When it fired, in Unix seconds.
    pub time: f64,
    /// What fired.
    pub body: EventBody<'a>,
    /// On a `test_start`: the test's id, when the sender gave one (see [`check_test_id`]).
    pub test_id: Option<Cow<'a, str>>,
}

/// Most characters in a test id.
pub const MAX_TEST_ID_CHARS: usize = 64;

/// A test id: 1 to [`MAX_TEST_ID_CHARS`] ASCII letters, digits, `.`, `_` or `-`. It becomes
/// the run id of every line of its test in the locust-telemetry envelope, and a Loki label.
pub fn check_test_id(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_TEST_ID_CHARS {
        return Err(format!(
            "must be 1 to {MAX_TEST_ID_CHARS} characters, got {}",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{}` may hold only ASCII letters, digits, `.`, `_` and `-`, not `{}`",
            value.escape_debug(),
            bad.escape_debug()
        ));
    }
    Ok(())
}

/// The event itself: a request (the volume, kept borrowed) or any other event.
#[derive(Debug)]
pub enum EventBody<'a> {
    /// Locust `request`.
    Request(RequestRecord<'a>),
    /// Every other hook, and the stats snapshot.
    Other(wit::Event),
}

impl EventBody<'_> {
    /// The subscription kind of this event.
    pub fn kind(&self) -> wit::EventKind {
        match self {
            EventBody::Request(_) => wit::EventKind::Request,
            EventBody::Other(event) => event_kind(event),
        }
    }
}

/// The kind of a non-request event.
pub fn event_kind(event: &wit::Event) -> wit::EventKind {
    use wit::{Event as E, EventKind as K};
    match event {
        E::TestStart => K::TestStart,
        E::TestStopping => K::TestStopping,
        E::TestStop => K::TestStop,
        E::SpawningComplete(_) => K::SpawningComplete,
        E::UserError(_) => K::UserError,
        E::CpuWarning(_) => K::CpuWarning,
        E::UsageMonitor(_) => K::UsageMonitor,
        E::WorkerConnect(_) => K::WorkerConnect,
        E::WorkerReport(_) => K::WorkerReport,
        E::HeartbeatSent(_) => K::HeartbeatSent,
        E::HeartbeatReceived(_) => K::HeartbeatReceived,
        E::ResetStats => K::ResetStats,
        E::Quitting => K::Quitting,
        E::Quit(_) => K::Quit,
        E::StatsSnapshot(_) => K::StatsSnapshot,
        E::Tick => K::Tick,
        E::ProcessSample(_) => K::ProcessSample,
    }
}

/// One Locust `request` event.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    /// `request_type`, such as `GET`.
    pub request_type: Cow<'a, str>,
    /// `name`.
    pub name: Cow<'a, str>,
    /// `response_time`, in milliseconds.
    pub response_time_ms: f64,
    /// `response_length`, in bytes (0 when Locust reported none).
    pub response_length: u64,
    /// `start_time`, in Unix seconds (the event's `time` when absent).
    pub start_time: f64,
    /// `status_code`, 0 when unknown.
    pub status_code: u16,
    /// `exception` text when the request failed.
    pub exception: Option<Cow<'a, str>>,
    /// The exception's class name (`exception_type`), such as `ConnectionError`, when the
    /// request failed and the sender knew it (the bridge sends it; older captures lack it).
    pub exception_type: Option<Cow<'a, str>>,
    /// `url`, when known.
    pub url: Option<Cow<'a, str>>,
    /// `context`, as raw JSON, when present and not empty.
    pub context: Option<&'a RawValue>,
}

/// A line that could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or a known key with the wrong type.
    #[error("{0}")]
    Json(String),
    /// `event` names no hook this runtime knows.
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
    /// `role` is not master, worker or standalone.
    #[error("unknown role `{0}` (expected master, worker or standalone)")]
    UnknownRole(String),
    /// An argument the event needs is missing.
    #[error("event `{event}` needs `{field}`")]
    MissingField {
        /// The event.
        event: String,
        /// The missing argument.
        field: &'static str,
    },
    /// A value is out of range.
    #[error("`{field}`: {message}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct RawLine<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    node: Cow<'a, str>,
    time: f64,
    #[serde(borrow, default)]
    request_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    response_time: Option<f64>,
    #[serde(default)]
    response_length: Option<u64>,
    #[serde(borrow, default)]
    exception: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    exception_type: Option<Cow<'a, str>>,
    #[serde(default)]
    start_time: Option<f64>,
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
    #[serde(default)]
    status_code: Option<u16>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(default)]
    user_count: Option<u32>,
    #[serde(borrow, default)]
    user_instance: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tb: Option<Cow<'a, str>>,
    #[serde(default)]
    cpu_usage: Option<f64>,
    #[serde(default)]
    memory_usage: Option<u64>,
    #[serde(borrow, default)]
    client_id: Option<Cow<'a, str>>,
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(borrow, default)]
    test_id: Option<Cow<'a, str>>,
    #[serde(default)]
    entries: Option<Vec<RawStats>>,
    /// Boxed: a stats row is large.
    #[serde(default)]
    total: Option<Box<RawStats>>,
    #[serde(default)]
    errors: Option<Vec<RawError>>,
    #[serde(default)]
    cpu_percent: Option<f64>,
    #[serde(default)]
    memory_bytes: Option<u64>,
    #[serde(default)]
    network_sent_bytes: Option<u64>,
    #[serde(default)]
    network_recv_bytes: Option<u64>,
}

/// Locust's rounded response-time histogram, as the bridge writes it (`[[ms, count], ...]`)
/// or as Locust serialises a `StatsEntry` (`{"ms": count, ...}`, keys as JSON strings), in
/// ascending order of milliseconds.
fn response_times<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(f64, u64)>, D::Error> {
    struct Histogram;

    impl<'de> serde::de::Visitor<'de> for Histogram {
        type Value = Vec<(f64, u64)>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("[[ms, count], ...] or {\"ms\": count, ...}")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(pair) = seq.next_element::<(f64, u64)>()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
            while let Some((key, count)) = map.next_entry::<Cow<'de, str>, u64>()? {
                let ms: f64 = key.trim().parse().map_err(|_| {
                    serde::de::Error::custom(format!(
                        "response_times key {key:?} is not a number of milliseconds"
                    ))
                })?;
                if !ms.is_finite() {
                    return Err(serde::de::Error::custom(format!(
                        "response_times key {key:?} is not a finite number"
                    )));
                }
                pairs.push((ms, count));
            }
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            Ok(pairs)
        }
    }

    deserializer.deserialize_any(Histogram)
}

/// One row of Locust's error table as the bridge writes it.
#[derive(Deserialize)]
struct RawError {
    #[serde(default, alias = "method")]
    request_type: String,
    name: String,
    error: String,
    occurrences: u64,
    #[serde(default)]
    first_seen: Option<f64>,
    #[serde(default)]
    last_seen: Option<f64>,
}

impl From<RawError> for wit::ErrorStats {
    fn from(raw: RawError) -> Self {
        wit::ErrorStats {
            request_type: raw.request_type,
            name: raw.name,
            error: raw.error,
            occurrences: raw.occurrences,
            first_seen: raw.first_seen,
            last_seen: raw.last_seen,
        }
    }
}

/// One `StatsEntry` as the bridge writes it.
#[derive(Deserialize)]
struct RawStats {
    #[serde(default, alias = "method")]
    request_type: String,
    name: String,
    num_requests: u64,
    num_failures: u64,
    total_response_time: f64,
    #[serde(default)]
    min_response_time: Option<f64>,
    max_response_time: f64,
    #[serde(default)]
    total_content_length: u64,
    #[serde(default, deserialize_with = "response_times")]
    response_times: Vec<(f64, u64)>,
    #[serde(default)]
    current_rps: f64,
    #[serde(default)]
    current_fail_per_sec: f64,
    #[serde(default)]
    start_time: Option<f64>,
    #[serde(default)]
    last_request_timestamp: Option<f64>,
}

impl From<RawStats> for wit::EndpointStats {
    fn from(raw: RawStats) -> Self {
        wit::EndpointStats {
            request_type: raw.request_type,
            name: raw.name,
            num_requests: raw.num_requests,
            num_failures: raw.num_failures,
            total_response_time_ms: raw.total_response_time,
            min_response_time_ms: raw.min_response_time.unwrap_or(0.0),
            max_response_time_ms: raw.max_response_time,
            total_content_length: raw.total_content_length,
            // Kept as sent: whole milliseconds, or fractional ones from a custom rounding.
            response_times: raw.response_times,
            current_rps: raw.current_rps,
            current_fail_per_sec: raw.current_fail_per_sec,
            start_time: raw.start_time,
            last_request_time: raw.last_request_timestamp,
        }
    }
}

/// The fields of a request line: read by the fast path, or taken from serde's [`RawLine`].
#[derive(Default)]
struct RequestLine<'a> {
    role: Cow<'a, str>,
    node: Cow<'a, str>,
    time: f64,
    request_type: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    response_time: Option<f64>,
    response_length: Option<u64>,
    exception: Option<Cow<'a, str>>,
    exception_type: Option<Cow<'a, str>>,
    start_time: Option<f64>,
    url: Option<Cow<'a, str>>,
    status_code: Option<u16>,
    context: Option<&'a RawValue>,
}

impl<'a> From<RawLine<'a>> for RequestLine<'a> {
    fn from(raw: RawLine<'a>) -> Self {
        Self {
            role: raw.role,
            node: raw.node,
            time: raw.time,
            request_type: raw.request_type,
            name: raw.name,
            response_time: raw.response_time,
            response_length: raw.response_length,
            exception: raw.exception,
            exception_type: raw.exception_type,
            start_time: raw.start_time,
            url: raw.url,
            status_code: raw.status_code,
            context: raw.context,
        }
    }
}

/// Decodes one line (without its newline).
pub fn decode_line(line: &str) -> Result<EventRecord<'_>, DecodeError> {
    if let Some(request) = request_scan::scan(line) {
        return request_record(request);
    }
    let raw: RawLine<'_> =
        serde_json::from_str(line).map_err(|error| DecodeError::Json(error.to_string()))?;
    if raw.event == "request" {
        return request_record(RequestLine::from(raw));
    }
    let role = check_header(&raw.role, &raw.node, raw.time)?;
    let event_name = raw.event.clone();
    let missing = |field: &'static str| DecodeError::MissingField {
        event: event_name.to_string(),
        field,
    };
    let time = raw.time;
    let event = match &*raw.event {
        "test_start" => wit::Event::TestStart,
        "test_stopping" => wit::Event::TestStopping,
        "test_stop" => wit::Event::TestStop,
        "spawning_complete" => {
            wit::Event::SpawningComplete(raw.user_count.ok_or_else(|| missing("user_count"))?)
        }
        "user_error" => wit::Event::UserError(wit::UserError {
            user_instance: raw.user_instance.unwrap_or_default().into_owned(),
            exception: raw
                .exception
                .ok_or_else(|| missing("exception"))?
                .into_owned(),
            traceback: raw.tb.unwrap_or_default().into_owned(),
        }),
        "cpu_warning" => wit::Event::CpuWarning(raw.cpu_usage.ok_or_else(|| missing("cpu_usage"))?),
        "usage_monitor" => wit::Event::UsageMonitor(wit::Usage {
            cpu_usage: raw.cpu_usage.ok_or_else(|| missing("cpu_usage"))?,
            memory_usage: raw.memory_usage.ok_or_else(|| missing("memory_usage"))?,
        }),
        "worker_connect" => wit::Event::WorkerConnect(
            raw.client_id
                .ok_or_else(|| missing("client_id"))?
                .into_owned(),
        ),
        "worker_report" => wit::Event::WorkerReport(wit::WorkerReport {
            client_id: raw
                .client_id
                .ok_or_else(|| missing("client_id"))?
                .into_owned(),
            user_count: raw.user_count.unwrap_or(0),
        }),
        "heartbeat_sent" | "heartbeat_received" => {
            let heartbeat = wit::Heartbeat {
                client_id: raw
                    .client_id
                    .ok_or_else(|| missing("client_id"))?
                    .into_owned(),
                timestamp: raw.timestamp.unwrap_or(time),
            };
            if raw.event == "heartbeat_sent" {
                wit::Event::HeartbeatSent(heartbeat)
            } else {
                wit::Event::HeartbeatReceived(heartbeat)
            }
        }
        "reset_stats" => wit::Event::ResetStats,
        "quitting" => wit::Event::Quitting,
        "quit" => wit::Event::Quit(raw.exit_code.unwrap_or(0)),
        "stats" => wit::Event::StatsSnapshot(wit::StatsSnapshot {
            user_count: raw.user_count.unwrap_or(0),
            entries: raw
                .entries
                .ok_or_else(|| missing("entries"))?
                .into_iter()
                .map(Into::into)
                .collect(),
            total: (*raw.total.ok_or_else(|| missing("total"))?).into(),
            errors: raw
                .errors
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
        }),
        "process_sample" => wit::Event::ProcessSample(wit::ProcessSample {
            cpu_percent: raw.cpu_percent.ok_or_else(|| missing("cpu_percent"))?,
            memory_bytes: raw.memory_bytes.ok_or_else(|| missing("memory_bytes"))?,
            network_sent_bytes: raw.network_sent_bytes.unwrap_or(0),
            network_recv_bytes: raw.network_recv_bytes.unwrap_or(0),
        }),
        unknown => return Err(DecodeError::UnknownEvent(unknown.to_owned())),
    };
    let test_id = match (&event, raw.test_id) {
        (wit::Event::TestStart, Some(test_id)) => {
            check_test_id(&test_id).map_err(|message| DecodeError::Invalid {
                field: "test_id",
                message,
            })?;
            Some(test_id)
        }
        _ => None,
    };
    Ok(EventRecord {
        node: raw.node,
        role,
        time,
        body: EventBody::Other(event),
        test_id,
    })
}

/// What every line carries: a known role, a node name (a label) and an event time in range.
fn check_header(role: &str, node: &str, time: f64) -> Result<RoleName, DecodeError> {
    let role = RoleName::parse(role).ok_or_else(|| DecodeError::UnknownRole(role.to_owned()))?;
    if node.is_empty() {
        return Err(DecodeError::Invalid {
            field: "node",
            message: "must not be empty".into(),
        });
    }
    check_label(node).map_err(|message| DecodeError::Invalid {
        field: "node",
        message,
    })?;
    if !time_in_range(time) {
        return Err(DecodeError::Invalid {
            field: "time",
            message: format!(
                "must be Unix seconds from 0 to {MAX_UNIX_SECONDS} (year 9999), got {time}"
            ),
        });
    }
    Ok(role)
}

/// A request line's record, or what is wrong with it.
fn request_record(line: RequestLine<'_>) -> Result<EventRecord<'_>, DecodeError> {
    let role = check_header(&line.role, &line.node, line.time)?;
    let missing = |field: &'static str| DecodeError::MissingField {
        event: "request".into(),
        field,
    };
    let response_time_ms = line.response_time.ok_or_else(|| missing("response_time"))?;
    if !response_time_ms.is_finite() || response_time_ms < 0.0 {
        return Err(DecodeError::Invalid {
            field: "response_time",
            message: format!("must be milliseconds >= 0, got {response_time_ms}"),
        });
    }
    let context = line.context.filter(|raw| {
        let text = raw.get().trim();
        text != "{}" && text != "null"
    });
    let request = RequestRecord {
        request_type: line.request_type.ok_or_else(|| missing("request_type"))?,
        name: line.name.ok_or_else(|| missing("name"))?,
        response_time_ms,
        response_length: line.response_length.unwrap_or(0),
        start_time: line.start_time.unwrap_or(line.time),
        status_code: line.status_code.unwrap_or(0),
        exception: line.exception,
        exception_type: line.exception_type,
        url: line.url,
        context,
    };
    Ok(EventRecord {
        node: line.node,
        role,
        time: line.time,
        body: EventBody::Request(request),
        test_id: None,
    })
}

/// Size of the blocks the reader thread hands over.
const CHUNK_BYTES: usize = 256 * 1024;

/// The longest line the reader accepts; a longer one is skipped and reported, so one endless
/// line cannot grow memory without bound.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// The reader thread: reads `input` into blocks, sends whole lines, keeps a partial last line
/// at the front of the next block, and skips (and reports) a line longer than
/// [`MAX_LINE_BYTES`]. Every byte is read into a block once; only a partial last line is
/// copied again (once, into the next block), so neither small reads nor long lines cost
/// more than the bytes themselves.
fn read_blocks(
    mut input: Box<dyn std::io::Read + Send>,
    sender: &std::sync::mpsc::SyncSender<std::io::Result<Piece>>,
    spares: &std::sync::mpsc::Receiver<Vec<u8>>,
) {
    // Bytes of an overlong line skipped so far, while skipping it.
    let mut skipping: Option<u64> = None;
    // The block being filled: `block[..filled]` is the start of a line not yet whole (or
    // nothing). A recycled block keeps its length, so making room zeroes nothing.
    let mut block: Vec<u8> = Vec::new();
    let mut filled = 0;
    loop {
        if block.len() < filled + CHUNK_BYTES {
            block.resize(filled + CHUNK_BYTES, 0);
        }
        let kept = filled;
        let read = match input.read(&mut block[kept..kept + CHUNK_BYTES]) {
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                let _ = sender.send(Err(error));
                return;
            }
        };
        if read == 0 {
            let last = match skipping {
                Some(skipped) => Some(Piece::Overlong(skipped)),
                None if kept > 0 => Some(Piece::Lines(Block::new(block, 0, kept))),
                None => None,
            };
            if let Some(last) = last {
                let _ = sender.send(Ok(last));
            }
            return;
        }
        filled = kept + read;
        // Where this block's lines begin: after an overlong line that ends here.
        let mut start = 0;
        if let Some(skipped) = skipping {
            // (Nothing is kept while skipping: `kept` is 0.)
            match memchr::memchr(b'\n', &block[..filled]) {
                None => {
                    skipping = Some(skipped + read as u64);
                    filled = 0;
                    continue;
                }
                Some(end) => {
                    skipping = None;
                    if sender
                        .send(Ok(Piece::Overlong(skipped + end as u64)))
                        .is_err()
                    {
                        return;
                    }
                    start = end + 1;
                }
            }
        }
        // The kept line may end here longer than the limit: it is skipped as well.
        let kept_end = (kept > 0)
            .then(|| memchr::memchr(b'\n', &block[kept..filled]))
            .flatten()
            .map(|end| kept + end);
        if let Some(end) = kept_end.filter(|&end| end > MAX_LINE_BYTES) {
            if sender.send(Ok(Piece::Overlong(end as u64))).is_err() {
                return;
            }
            start = end + 1;
        }
        // Hand over whole lines; keep a partial last line for the next block. Only the new
        // bytes are scanned, so a long line costs no rescans.
        match memchr::memrchr(b'\n', &block[kept..filled]) {
            Some(end) if kept + end + 1 > start => {
                let end = kept + end;
                let mut next = spares.try_recv().unwrap_or_default();
                let rest = filled - (end + 1);
                if next.len() < rest + CHUNK_BYTES {
                    next.resize(rest + CHUNK_BYTES, 0);
                }
                next[..rest].copy_from_slice(&block[end + 1..filled]);
                filled = rest;
                let lines = std::mem::replace(&mut block, next);
                if sender
                    .send(Ok(Piece::Lines(Block::new(lines, start, end))))
                    .is_err()
                {
                    return;
                }
            }
            _ if start > 0 => {
                // Only the end of an overlong line here, and the start of the next one.
                block.copy_within(start..filled, 0);
                filled -= start;
            }
            _ => {}
        }
        if filled > MAX_LINE_BYTES {
            skipping = Some(filled as u64);
            filled = 0;
        }
    }
}

/// Whole lines the reader thread read (the last without its newline), in the buffer it read
/// them into; [`ChunkReader::recycle`] hands the buffer back.
pub struct Block {
    buffer: Vec<u8>,
    start: usize,
    end: usize,
}

impl Block {
    fn new(buffer: Vec<u8>, start: usize, end: usize) -> Self {
        Self { buffer, start, end }
    }

    /// The lines.
    pub fn lines(&self) -> &[u8] {
        &self.buffer[self.start..self.end]
    }
}

/// What [`ChunkReader::next_chunk`] yields.
pub enum Chunk {
    /// Whole lines (the last without its trailing newline).
    Data(Block),
    /// One line longer than [`MAX_LINE_BYTES`], skipped; its length in bytes.
    Overlong(u64),
    /// The stream ended.
    End,
    /// The stop flag was set while waiting.
    Stopped,
    /// Reading failed.
    Failed(std::io::Error),
    /// Nothing arrived within the wait of [`ChunkReader::next_chunk_within`].
    Idle,
}

/// What the reader thread sends.
enum Piece {
    Lines(Block),
    Overlong(u64),
}

/// Reads a stream on its own thread in blocks of whole lines, so the pipeline can stop on a
/// signal even while the input is idle, and reading overlaps processing. A block is the
/// buffer the bytes were read into (no second copy); [`ChunkReader::recycle`] hands it back
/// to be read into again.
pub struct ChunkReader {
    receiver: std::sync::mpsc::Receiver<std::io::Result<Piece>>,
    spare: std::sync::mpsc::SyncSender<Vec<u8>>,
}

/// Blocks in flight between the reader thread and the pipeline, and back: with the two being
/// worked on, at most 10 blocks of about [`CHUNK_BYTES`] (2.5 MiB), and while a line near
/// [`MAX_LINE_BYTES`] is read, one of up to that plus a block.
const BLOCKS_IN_FLIGHT: usize = 4;

impl ChunkReader {
    /// Starts reading `input` on a background thread.
    pub fn spawn(input: Box<dyn std::io::Read + Send>) -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel(BLOCKS_IN_FLIGHT);
        let (spare, spares) = std::sync::mpsc::sync_channel(BLOCKS_IN_FLIGHT);
        std::thread::Builder::new()
            .name("swarmtel-read".into())
            .spawn(move || read_blocks(input, &sender, &spares))
            .expect("spawn reader thread");
        Self { receiver, spare }
    }

    /// Gives a block of [`Chunk::Data`] back, to be read into again; one grown by a long line
    /// is freed instead, so the blocks in flight stay near [`CHUNK_BYTES`] each.
    pub fn recycle(&self, block: Block) {
        if block.buffer.len() <= 2 * CHUNK_BYTES {
            let _ = self.spare.try_send(block.buffer);
        }
    }

    /// The next block, waiting until one is ready, the stream ends, or `stop` is set.
    pub fn next_chunk(&self, stop: &std::sync::atomic::AtomicBool) -> Chunk {
        loop {
            match self.next_chunk_within(stop, std::time::Duration::from_secs(3600)) {
                Chunk::Idle => continue,
                other => return other,
            }
        }
    }

    /// Like [`ChunkReader::next_chunk`], but gives up after `wait` with [`Chunk::Idle`].
    pub fn next_chunk_within(
        &self,
        stop: &std::sync::atomic::AtomicBool,
        wait: std::time::Duration,
    ) -> Chunk {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Chunk::Stopped;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Chunk::Idle;
            }
            match self
                .receiver
                .recv_timeout(left.min(std::time::Duration::from_millis(50)))
            {
                Ok(Ok(Piece::Lines(block))) => return Chunk::Data(block),
                Ok(Ok(Piece::Overlong(bytes))) => return Chunk::Overlong(bytes),
                Ok(Err(error)) => return Chunk::Failed(error),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Chunk::End,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_request_without_copying_plain_strings() {
        let line = r#"{"event":"request","role":"worker","node":"worker-0","time":1700000000.5,"request_type":"GET","name":"/items","response_time":12.5,"response_length":512,"exception":null,"start_time":1700000000.49,"url":"http://x/items","status_code":200,"context":{},"extra_key":1}"#;
        let record = decode_line(line).unwrap();
        assert_eq!(record.node, "worker-0");
        assert!(matches!(record.node, Cow::Borrowed(_)));
        assert_eq!(record.role, RoleName::Worker);
        let EventBody::Request(request) = record.body else {
            panic!("not a request")
        };
        assert_eq!(request.name, "/items");
        assert_eq!(request.response_time_ms, 12.5);
        assert_eq!(request.status_code, 200);
        assert!(request.exception.is_none());
        assert!(request.context.is_none(), "empty context is dropped");
    }

    #[test]
    fn decodes_every_hook() {
        let lines = [
            (
                r#"{"event":"test_start","role":"master","node":"master","time":1}"#,
                wit::EventKind::TestStart,
            ),
            (
                r#"{"event":"test_stopping","role":"master","node":"master","time":1}"#,
                wit::EventKind::TestStopping,
            ),
            (
                r#"{"event":"test_stop","role":"master","node":"master","time":1}"#,
                wit::EventKind::TestStop,
            ),
            (
                r#"{"event":"spawning_complete","role":"master","node":"master","time":1,"user_count":3}"#,
                wit::EventKind::SpawningComplete,
            ),
            (
                r#"{"event":"user_error","role":"worker","node":"worker-0","time":1,"user_instance":"U","exception":"boom","tb":"..."}"#,
                wit::EventKind::UserError,
            ),
            (
                r#"{"event":"cpu_warning","role":"worker","node":"worker-0","time":1,"cpu_usage":95.0}"#,
                wit::EventKind::CpuWarning,
            ),
            (
                r#"{"event":"usage_monitor","role":"worker","node":"worker-0","time":1,"cpu_usage":5.0,"memory_usage":1000}"#,
                wit::EventKind::UsageMonitor,
            ),
            (
                r#"{"event":"worker_connect","role":"master","node":"master","time":1,"client_id":"c"}"#,
                wit::EventKind::WorkerConnect,
            ),
            (
                r#"{"event":"worker_report","role":"master","node":"master","time":1,"client_id":"c","user_count":2}"#,
                wit::EventKind::WorkerReport,
            ),
            (
                r#"{"event":"heartbeat_sent","role":"master","node":"master","time":1,"client_id":"c","timestamp":1}"#,
                wit::EventKind::HeartbeatSent,
            ),
            (
                r#"{"event":"heartbeat_received","role":"worker","node":"worker-0","time":1,"client_id":"c","timestamp":1}"#,
                wit::EventKind::HeartbeatReceived,
            ),
            (
                r#"{"event":"reset_stats","role":"master","node":"master","time":1}"#,
                wit::EventKind::ResetStats,
            ),
            (
                r#"{"event":"quitting","role":"master","node":"master","time":1}"#,
                wit::EventKind::Quitting,
            ),
            (
                r#"{"event":"quit","role":"master","node":"master","time":1,"exit_code":1}"#,
                wit::EventKind::Quit,
            ),
            (
                r#"{"event":"stats","role":"master","node":"master","time":1,"user_count":2,"entries":[],"total":{"request_type":"","name":"Aggregated","num_requests":0,"num_failures":0,"total_response_time":0,"max_response_time":0,"response_times":[[1.0,2]]}}"#,
                wit::EventKind::StatsSnapshot,
            ),
        ];
        for (line, kind) in lines {
            let record = decode_line(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(record.body.kind(), kind, "{line}");
        }
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            ("not json", "expected"),
            (
                r#"{"event":"request","role":"worker","node":"w","time":1,"name":"/","response_time":1}"#,
                "event `request` needs `request_type`",
            ),
            (
                r#"{"event":"teleport","role":"worker","node":"w","time":1}"#,
                "unknown event `teleport`",
            ),
            (
                r#"{"event":"test_start","role":"boss","node":"w","time":1}"#,
                "unknown role `boss`",
            ),
            (
                r#"{"event":"test_start","role":"master","node":"m"}"#,
                "missing field `time`",
            ),
            (
                r#"{"event":"test_start","role":"master","node":"m","time":"now"}"#,
                "invalid type",
            ),
            (
                r#"{"event":"request","role":"worker","node":"w","time":1,"request_type":"GET","name":"/","response_time":-4}"#,
                "`response_time`",
            ),
            (
                r#"{"event":"test_start","role":"master","node":"","time":1}"#,
                "`node`",
            ),
            (
                r#"{"event":"test_start","role":"master","node":"m\u0000","time":1}"#,
                "`node`: `m\\0` has control characters",
            ),
            (
                r#"{"event":"test_start","role":"master","node":"m","time":1e12}"#,
                "`time`: must be Unix seconds from 0 to 253402300799 (year 9999), got 1000000000000",
            ),
            (
                r#"{"event":"test_start","role":"master","node":"m","time":1e300}"#,
                "`time`",
            ),
            (
                r#"{"event":"test_start","role":"master","node":"m","time":-0.5}"#,
                "`time`",
            ),
        ];
        for (line, expected) in cases {
            let error = decode_line(line).unwrap_err().to_string();
            assert!(error.contains(expected), "{line}: {error}");
        }
    }

    fn repo_file(path: &str) -> String {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::read_to_string(root.join(path)).unwrap()
    }

    #[test]
    fn the_sample_capture_matches_the_documented_schema_and_decodes() {
        let schema: serde_json::Value =
            serde_json::from_str(&repo_file("schemas/event-stream.schema.json")).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let sample = repo_file("examples/locust-run.ndjson");
        let synthetic =
            String::from_utf8(crate::sources::synthetic::request_stream(2, 50)).unwrap();
        let mut lines = 0;
        for line in sample.lines().chain(synthetic.lines()) {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Err(error) = validator.validate(&value) {
                panic!("{line}: {error}");
            }
            decode_line(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            lines += 1;
        }
        assert!(lines > 5_000);
    }

    #[test]
    fn a_test_start_carries_its_test_id_and_a_bad_one_is_refused_by_name() {
        let line = |test_id: &str| {
            format!(
                r#"{{"event":"test_start","role":"master","node":"master","time":5,"test_id":{test_id}}}"#
            )
        };
        let good = line(r#""3f2a9c1d""#);
        let record = decode_line(&good).unwrap();
        assert_eq!(record.test_id.as_deref(), Some("3f2a9c1d"));
        // Without one (older bridges, captures): none.
        let plain = r#"{"event":"test_start","role":"master","node":"master","time":5}"#;
        assert_eq!(decode_line(plain).unwrap().test_id, None);
        // Only a test_start carries one.
        let stop =
            r#"{"event":"test_stop","role":"master","node":"master","time":5,"test_id":"x"}"#;
        assert_eq!(decode_line(stop).unwrap().test_id, None);
        let longest = format!(r#""{}""#, "a".repeat(MAX_TEST_ID_CHARS));
        assert!(decode_line(&line(&longest)).is_ok());
        for bad in [
            r#""""#.to_owned(),
            format!(r#""{}""#, "a".repeat(MAX_TEST_ID_CHARS + 1)),
            r#""a b""#.to_owned(),
            r#""\u001b[31m""#.to_owned(),
            r#""ü""#.to_owned(),
        ] {
            match decode_line(&line(&bad)) {
                Err(DecodeError::Invalid { field, .. }) => assert_eq!(field, "test_id", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(decode_line(&line("7")), Err(DecodeError::Json(_))));
    }

    #[test]
    fn stats_keep_fractional_keys_times_and_errors_and_process_samples_decode() {
        let schema: serde_json::Value =
            serde_json::from_str(&repo_file("schemas/event-stream.schema.json")).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let stats = r#"{"event":"stats","role":"master","node":"master","time":5,"user_count":2,"entries":[],"total":{"request_type":"","name":"Aggregated","num_requests":3,"num_failures":1,"total_response_time":4.5,"max_response_time":2,"response_times":[[0.5,1],[1.25,1],[2,1]],"start_time":1.5,"last_request_timestamp":4.75},"errors":[{"method":"GET","name":"/b","error":"boom","occurrences":2,"first_seen":2,"last_seen":4},{"request_type":"POST","name":"/c","error":"bad","occurrences":1}]}"#;
        let sample = r#"{"event":"process_sample","role":"worker","node":"w","time":6,"cpu_percent":12.5,"memory_bytes":1048576,"network_sent_bytes":10,"network_recv_bytes":20}"#;
        for line in [stats, sample] {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(validator.is_valid(&value), "{line}");
        }
        let EventBody::Other(wit::Event::StatsSnapshot(snapshot)) =
            decode_line(stats).unwrap().body
        else {
            panic!("a stats snapshot");
        };
        assert_eq!(
            snapshot.total.response_times,
            [(0.5, 1), (1.25, 1), (2.0, 1)]
        );
        assert_eq!(snapshot.total.start_time, Some(1.5));
        assert_eq!(snapshot.total.last_request_time, Some(4.75));
        assert_eq!(
            snapshot.errors,
            [
                wit::ErrorStats {
                    request_type: "GET".into(),
                    name: "/b".into(),
                    error: "boom".into(),
                    occurrences: 2,
                    first_seen: Some(2.0),
                    last_seen: Some(4.0),
                },
                wit::ErrorStats {
                    request_type: "POST".into(),
                    name: "/c".into(),
                    error: "bad".into(),
                    occurrences: 1,
                    first_seen: None,
                    last_seen: None,
                },
            ]
        );
        let record = decode_line(sample).unwrap();
        assert_eq!(record.body.kind(), wit::EventKind::ProcessSample);
        assert!(matches!(
            record.body,
            EventBody::Other(wit::Event::ProcessSample(wit::ProcessSample {
                cpu_percent: 12.5,
                memory_bytes: 1_048_576,
                network_sent_bytes: 10,
                network_recv_bytes: 20,
            }))
        ));
        // Without the optional parts: none, and no errors.
        let old = r#"{"event":"stats","role":"master","node":"m","time":1,"entries":[],"total":{"name":"Aggregated","num_requests":0,"num_failures":0,"total_response_time":0,"max_response_time":0}}"#;
        let EventBody::Other(wit::Event::StatsSnapshot(snapshot)) = decode_line(old).unwrap().body
        else {
            panic!("a stats snapshot");
        };
        assert_eq!(
            (snapshot.total.start_time, snapshot.errors.len()),
            (None, 0)
        );
        let error = decode_line(
            r#"{"event":"process_sample","role":"worker","node":"w","time":1,"cpu_percent":1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("memory_bytes"), "{error}");
    }

    #[test]
    fn a_stats_snapshot_in_locusts_own_serialisation_decodes() {
        // `RequestStats.get("/items", "GET").serialize()` from Locust 2.x after 12.5, 145, 3
        // and 3 ms: response times as a {ms: count} object, `method` for the request type.
        let entry = r#"{"name": "/items", "method": "GET", "last_request_timestamp": 1796174503.9271884, "start_time": 1796174503.9271548, "num_requests": 4, "num_none_requests": 0, "num_failures": 1, "total_response_time": 163.5, "max_response_time": 145, "min_response_time": 3, "total_content_length": 40, "response_times": {"12": 1, "140": 1, "3": 2}, "num_reqs_per_sec": {"1796174503": 4}, "num_fail_per_sec": {"1796174503": 1}}"#;
        let total = entry.replace(
            "\"/items\", \"method\": \"GET\"",
            "\"Aggregated\", \"method\": \"\"",
        );
        let line = format!(
            r#"{{"event":"stats","role":"master","node":"master","time":5,"user_count":1,"entries":[{entry}],"total":{total}}}"#
        );
        let schema: serde_json::Value =
            serde_json::from_str(&repo_file("schemas/event-stream.schema.json")).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(
            validator.is_valid(&value),
            "the schema takes Locust's shape too"
        );
        let EventBody::Other(wit::Event::StatsSnapshot(snapshot)) =
            decode_line(&line).unwrap().body
        else {
            panic!("a stats snapshot");
        };
        let items = &snapshot.entries[0];
        assert_eq!(
            (items.request_type.as_str(), items.name.as_str()),
            ("GET", "/items")
        );
        assert_eq!((items.num_requests, items.num_failures), (4, 1));
        assert_eq!(items.response_times, [(3.0, 2), (12.0, 1), (140.0, 1)]);
        assert_eq!(items.start_time, Some(1796174503.9271548));
        assert_eq!(items.last_request_time, Some(1796174503.9271884));
        assert_eq!(snapshot.total.name, "Aggregated");
        // Fractional keys (a custom rounding) are kept; a key that is not a number is a bad
        // line that says so.
        let fractional = line.replace(
            r#"{"12": 1, "140": 1, "3": 2}"#,
            r#"{"0.25": 1, "12.5": 3}"#,
        );
        let EventBody::Other(wit::Event::StatsSnapshot(snapshot)) =
            decode_line(&fractional).unwrap().body
        else {
            panic!("a stats snapshot");
        };
        assert_eq!(snapshot.entries[0].response_times, [(0.25, 1), (12.5, 3)]);
        let bad = line.replace(r#""12": 1"#, r#""fast": 1"#);
        let error = decode_line(&bad).unwrap_err().to_string();
        assert!(error.contains(r#"response_times key "fast""#), "{error}");
    }

    #[test]
    fn the_schema_refuses_what_the_decoder_refuses() {
        let schema: serde_json::Value =
            serde_json::from_str(&repo_file("schemas/event-stream.schema.json")).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        for line in [
            r#"{"event":"request","role":"worker","node":"w","time":1,"name":"/","response_time":1}"#,
            r#"{"event":"teleport","role":"worker","node":"w","time":1}"#,
            r#"{"event":"test_start","role":"boss","node":"w","time":1}"#,
            r#"{"event":"test_start","role":"master","node":"m"}"#,
            r#"{"event":"spawning_complete","role":"master","node":"m","time":1}"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(!validator.is_valid(&value), "schema accepts {line}");
            assert!(decode_line(line).is_err(), "decoder accepts {line}");
        }
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_lines_around_it_kept() {
        let mut text = b"first\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE_BYTES));
        text.extend_from_slice(b"\nlast\n");
        let reader = ChunkReader::spawn(Box::new(std::io::Cursor::new(text)));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut seen = Vec::new();
        loop {
            match reader.next_chunk(&stop) {
                Chunk::Data(block) => seen.push(String::from_utf8(block.lines().to_vec()).unwrap()),
                Chunk::Overlong(bytes) => seen.push(format!("<{bytes}>")),
                Chunk::End => break,
                _ => panic!("unexpected chunk"),
            }
        }
        assert_eq!(
            seen,
            ["first", &format!("<{}>", 3 * MAX_LINE_BYTES), "last"]
        );
    }

    #[test]
    fn chunk_reader_hands_over_whole_lines() {
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        let reader = ChunkReader::spawn(Box::new(std::io::Cursor::new(text.clone().into_bytes())));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut lines = Vec::new();
        while let Chunk::Data(block) = reader.next_chunk(&stop) {
            lines.extend(
                String::from_utf8(block.lines().to_vec())
                    .unwrap()
                    .split('\n')
                    .map(str::to_owned),
            );
        }
        assert_eq!(lines.len(), 100_000);
        assert_eq!(lines[99_999], "line 99999");
    }

    /// Hands out its bytes in reads of the sizes given, round and round.
    struct Trickle {
        data: Vec<u8>,
        position: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl std::io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let size = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            let n = size.min(buf.len()).min(self.data.len() - self.position);
            buf[..n].copy_from_slice(&self.data[self.position..self.position + n]);
            self.position += n;
            Ok(n)
        }
    }

    /// Counts the bytes handed to reads, and how many reads there were.
    struct Counting<R>(R, std::sync::Arc<std::sync::atomic::AtomicU64>);

    impl<R: std::io::Read> std::io::Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            // Each read's buffer is what the reader offers: it must not grow with the line.
            self.1
                .fetch_max(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.0.read(buf)
        }
    }

    /// Lines read a byte at a time, a long one among them, and many short ones: every line
    /// comes out, each read is offered one block. (About 1.2 million reads, a second in a
    /// debug build; the reader that copied a long partial line at every read, or zeroed a
    /// whole block for every short one, took over a minute on this input.)
    #[test]
    fn small_reads_cost_no_more_than_the_bytes() {
        let mut data = vec![b'x'; MAX_LINE_BYTES - 1];
        data.push(b'\n');
        for _ in 0..100_000 {
            data.extend_from_slice(b"y\n");
        }
        let expected_lines = 1 + 100_000;
        let largest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let input = Trickle {
            data,
            position: 0,
            sizes: vec![1],
            turn: 0,
        };
        let reader = ChunkReader::spawn(Box::new(Counting(input, largest.clone())));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut lines = 0;
        while let Chunk::Data(block) = reader.next_chunk(&stop) {
            lines += block.lines().split(|b| *b == b'\n').count();
            reader.recycle(block);
        }
        assert_eq!(lines, expected_lines);
        assert_eq!(
            largest.load(std::sync::atomic::Ordering::Relaxed),
            CHUNK_BYTES as u64
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

        /// Whatever sizes the reads come in, and with blocks recycled, the lines come out
        /// whole and in order, an overlong one reported in its place.
        #[test]
        fn chunk_reader_keeps_lines_whole_across_reads_and_recycled_blocks(
            lengths in proptest::collection::vec(0usize..3_000, 1..400),
            sizes in proptest::collection::vec(1usize..300_000, 1..6),
            overlong_at in proptest::option::of(0usize..400),
        ) {
            let mut expected = Vec::new();
            let mut data = Vec::new();
            for (index, length) in lengths.iter().enumerate() {
                if Some(index) == overlong_at {
                    data.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
                    data.push(b'\n');
                    expected.push(format!("overlong {}", MAX_LINE_BYTES + 10));
                }
                let line: String = format!("{index}:") + &"y".repeat(*length);
                data.extend_from_slice(line.as_bytes());
                data.push(b'\n');
                expected.push(line);
            }
            let input = Trickle { data, position: 0, sizes, turn: 0 };
            let reader = ChunkReader::spawn(Box::new(input));
            let stop = std::sync::atomic::AtomicBool::new(false);
            let mut seen = Vec::new();
            loop {
                match reader.next_chunk(&stop) {
                    Chunk::Data(block) => {
                        let text = String::from_utf8(block.lines().to_vec()).unwrap();
                        seen.extend(text.split('\n').map(str::to_owned));
                        reader.recycle(block);
                    }
                    Chunk::Overlong(bytes) => seen.push(format!("overlong {bytes}")),
                    Chunk::End => break,
                    _ => panic!("unexpected chunk"),
                }
            }
            let first_difference = seen.iter().zip(&expected).position(|(a, b)| a != b);
            proptest::prop_assert!(
                seen == expected,
                "{} lines seen, {} expected; first difference at {:?}: {:?} against {:?}",
                seen.len(),
                expected.len(),
                first_difference,
                first_difference.map(|i| seen[i].chars().take(40).collect::<String>()),
                first_difference.map(|i| expected[i].chars().take(40).collect::<String>()),
            );
        }
    }

    mod fuzz {
        //! Property tests: the decoder never panics, whatever the line, and what it accepts
        //! is sane. Bounded so CI runs them in seconds.

        use super::*;
        use proptest::prelude::*;

        const EVENTS: [&str; 19] = [
            "test_start",
            "test_stopping",
            "test_stop",
            "spawning_complete",
            "request",
            "user_error",
            "cpu_warning",
            "usage_monitor",
            "worker_connect",
            "worker_report",
            "heartbeat_sent",
            "heartbeat_received",
            "reset_stats",
            "quitting",
            "quit",
            "stats",
            "tick",
            "process_sample",
            "bogus",
        ];
        const KEYS: [&str; 26] = [
            "event",
            "role",
            "node",
            "time",
            "request_type",
            "name",
            "response_time",
            "response_length",
            "exception",
            "start_time",
            "url",
            "status_code",
            "context",
            "user_count",
            "user_instance",
            "tb",
            "cpu_usage",
            "memory_usage",
            "client_id",
            "timestamp",
            "exit_code",
            "entries",
            "total",
            "response_times",
            "num_requests",
            "x",
        ];

        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(Into::into),
                any::<i64>().prop_map(Into::into),
                any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)),
                ".{0,12}".prop_map(Into::into),
                proptest::sample::select(&EVENTS[..]).prop_map(Into::into),
                proptest::sample::select(&["master", "worker", "standalone", ""][..])
                    .prop_map(Into::into),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Into::into),
                    proptest::collection::btree_map(
                        proptest::sample::select(&KEYS[..]).prop_map(str::to_owned),
                        inner,
                        0..5
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn event_line() -> impl Strategy<Value = String> {
            (
                proptest::sample::select(&EVENTS[..]),
                proptest::sample::select(&["master", "worker", "standalone", "boss"][..]),
                proptest::collection::btree_map(
                    proptest::sample::select(&KEYS[4..]).prop_map(str::to_owned),
                    json_value(),
                    0..8,
                ),
                prop_oneof![any::<f64>(), 0.0..2e9f64],
            )
                .prop_map(|(event, role, args, time)| {
                    let mut object: serde_json::Map<String, serde_json::Value> =
                        args.into_iter().collect();
                    object.insert("event".into(), event.into());
                    object.insert("role".into(), role.into());
                    object.insert("node".into(), "worker-0".into());
                    if let Some(time) = serde_json::Number::from_f64(time) {
                        object.insert("time".into(), serde_json::Value::Number(time));
                    }
                    serde_json::Value::Object(object).to_string()
                })
        }

        fn check(line: &str) {
            if let Ok(record) = decode_line(line) {
                assert!(record.time.is_finite() && record.time >= 0.0, "{line}");
                assert!(!record.node.is_empty(), "{line}");
                if let EventBody::Request(request) = &record.body {
                    assert!(request.response_time_ms >= 0.0, "{line}");
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_text_never_panics(line in ".{0,300}") {
                check(&line);
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                if let Ok(line) = std::str::from_utf8(&bytes) {
                    check(line);
                }
            }

            #[test]
            fn event_shaped_json_never_panics(line in event_line()) {
                check(&line);
            }

            #[test]
            fn cut_real_lines_never_panic(cut in 0usize..400, index in 0usize..5_436) {
                let sample = repo_file("examples/locust-run.ndjson");
                let line = sample.lines().nth(index).unwrap_or("");
                let mut end = cut.min(line.len());
                while !line.is_char_boundary(end) {
                    end -= 1;
                }
                check(&line[..end]);
            }
        }
    }
}
