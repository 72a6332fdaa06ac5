//! locust-telemetry 2.1.2 as a sandboxed swarmtel plugin: the records of its JSON recorder,
//! record for record and field for field, and the metrics of its OTel recorder under their
//! names, from swarmtel's event stream. With a JSON-lines output set to
//! `envelope = "locust-telemetry"`, the lines are the ones its Grafana dashboards and Promtail
//! rules read (see `docs/migrating-from-locust-telemetry.md`).
//!
//! One recorder, `locust_telemetry`, on every node:
//! - master (and a standalone `locust`, where 2.1.2 records nothing): the test start, stop,
//!   spawn-complete and CPU-warning events; `locust.tl.request.metric.stats` rows, `current`
//!   every interval from test start to stop, `final` and one `endpoint` row per endpoint and
//!   per error at test stop;
//! - every node: `locust.tl.system.metric.cpu|mem|network` every interval from test start to
//!   stop, from the bridge's process samples.
//!
//! Where 2.1.2 has a bug its dashboards rely on, this plugin copies it: network values are the
//! host's cumulative byte counters labelled `MiB`; `success` endpoint rows include endpoints
//! that failed; workers never record CPU warnings.

mod stats_row;

use serde_json::{Map, Value};
use swarmtel_guest::{
    AttributeValue, EventKind, Metric, OptionSpec, Output, Plugin, PluginInfo, ProcessSample,
    Recorder, RecorderContext, RecorderSpec, Request, ResponseTimes, Role, StatsSnapshot,
    TelemetryData, Timestamp, export_plugin,
};

pub use stats_row::{entry_fields, error_fields, percentile, proper_round, python_float_repr_len};

/// The option holding the interval, locust-telemetry's `--lt-stats-recorder-interval`.
pub const INTERVAL_OPTION: &str = "stats-recorder-interval";
/// The option choosing the recorders, locust-telemetry's `--enable-telemetry-recorder`.
pub const RECORDERS_OPTION: &str = "enable-telemetry-recorder";
/// locust-telemetry's default interval, in seconds.
pub const DEFAULT_INTERVAL_SECONDS: i64 = 3;
/// The longest interval accepted: one day.
pub const MAX_INTERVAL_SECONDS: i64 = 86_400;
/// How early a sample or snapshot may come and still count for its interval: the bridge's
/// timers and locust-telemetry's drift by a few milliseconds a tick.
const EARLY_SECONDS: f64 = 0.25;
/// locust-telemetry moves the test stop's `end_time` 1 s later, for Grafana's links.
const END_TIME_BUFFER_SECONDS: f64 = 1.0;
/// The status code locust-telemetry's OTel recorder gives a request without a response.
const NO_RESPONSE_STATUS: u16 = 500;

/// locust-telemetry's record names.
pub mod names {
    /// The test started (master).
    pub const TEST_START: &str = "locust.tl.event.test.start";
    /// The test stopped (master), with `end_time`.
    pub const TEST_STOP: &str = "locust.tl.event.test.stop";
    /// Every user spawned (master), with `user_count`.
    pub const SPAWN_COMPLETE: &str = "locust.tl.event.spawn.complete";
    /// Locust warned about its CPU use (master), with `value` and `unit`.
    pub const CPU_WARNING: &str = "locust.tl.event.cpu.warning";
    /// The process's CPU use.
    pub const CPU: &str = "locust.tl.system.metric.cpu";
    /// The process's memory use.
    pub const MEMORY: &str = "locust.tl.system.metric.mem";
    /// The host's network counters.
    pub const NETWORK: &str = "locust.tl.system.metric.network";
    /// Locust's request statistics (master).
    pub const REQUEST_STATS: &str = "locust.tl.request.metric.stats";
    /// The OTel counter of test events.
    pub const TEST_EVENTS: &str = "locust.tl.event.test.events";
    /// The OTel gauge of running users.
    pub const USER_COUNT: &str = "locust.tl.user.metric.count";
    /// The OTel histogram of successful requests.
    pub const REQUEST_SUCCESS: &str = "locust.tl.request.metric.success";
    /// The OTel histogram of failed requests.
    pub const REQUEST_ERROR: &str = "locust.tl.request.metric.error";
}

/// The plugin: one recorder on every node.
pub struct LocustTelemetryPlugin;

impl Plugin for LocustTelemetryPlugin {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "locust-telemetry",
            env!("CARGO_PKG_VERSION"),
            "locust-telemetry 2.1.2's JSON records and OTel metrics, from Locust's own numbers",
        )
        .option(
            OptionSpec::integer(INTERVAL_OPTION)
                .default_integer(DEFAULT_INTERVAL_SECONDS)
                .env_var("LOCUST_TELEMETRY_STATS_RECORDER_INTERVAL")
                .help("Seconds between request-stats and system-metric records (locust-telemetry's --lt-stats-recorder-interval); the bridge's --swarmtel-stats-interval and --swarmtel-sample-interval must not be longer"),
        )
        .option(
            OptionSpec::text(RECORDERS_OPTION)
                .default_text("json")
                .env_var("LOCUST_ENABLE_TELEMETRY_RECORDER")
                .help("Which of locust-telemetry's recorders to run: json, otel, or both as json,otel (locust-telemetry's --enable-telemetry-recorder)"),
        )
        .recorder(
            RecorderSpec::new("locust_telemetry")
                .roles([Role::Master, Role::Worker, Role::Standalone])
                .events([
                    EventKind::TestStart,
                    EventKind::TestStop,
                    EventKind::SpawningComplete,
                    EventKind::CpuWarning,
                    EventKind::StatsSnapshot,
                    EventKind::ProcessSample,
                    EventKind::Request,
                ]),
        )
    }

    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        if ctx.recorder() != "locust_telemetry" {
            return Err(format!("no recorder named {}", ctx.recorder()));
        }
        let interval = ctx
            .options()
            .integer(INTERVAL_OPTION)
            .unwrap_or(DEFAULT_INTERVAL_SECONDS);
        if !(1..=MAX_INTERVAL_SECONDS).contains(&interval) {
            return Err(format!(
                "{INTERVAL_OPTION} must be 1 to {MAX_INTERVAL_SECONDS} seconds, got {interval}"
            ));
        }
        let (json, otel) = recorders(ctx.options().text(RECORDERS_OPTION).unwrap_or("json"))?;
        Ok(Box::new(LocustTelemetryRecorder::new(
            ctx.role(),
            ctx.node(),
            interval as f64,
            json,
            otel,
        )))
    }
}

/// Which recorders a `json,otel` list turns on; an unknown name is refused.
fn recorders(list: &str) -> Result<(bool, bool), String> {
    let (mut json, mut otel) = (false, false);
    for name in list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        match name {
            "json" => json = true,
            "otel" => otel = true,
            other => {
                return Err(format!(
                    "{RECORDERS_OPTION}: unknown recorder `{}`; choose json, otel or json,otel",
                    other.escape_debug()
                ));
            }
        }
    }
    Ok((json, otel))
}

/// When a periodic record is next due, in event time.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    interval: f64,
    next: Option<f64>,
}

impl Schedule {
    fn new(interval: f64) -> Self {
        Self {
            interval,
            next: None,
        }
    }

    /// Starts at `time`: the first record is due at once, as locust-telemetry's loops record
    /// before they first sleep.
    fn start(&mut self, time: f64) {
        self.next = Some(time);
    }

    fn stop(&mut self) {
        self.next = None;
    }

    /// Whether a record is due at `time`; if so, the next one is an interval later (or an
    /// interval after `time`, when the stream fell behind).
    fn take(&mut self, time: f64) -> bool {
        let Some(next) = self.next else {
            return false;
        };
        if time < next - EARLY_SECONDS {
            return false;
        }
        let following = next + self.interval;
        self.next = Some(if following <= time - EARLY_SECONDS {
            time + self.interval
        } else {
            following
        });
        true
    }
}

/// The OTel twin's instruments.
struct Instruments {
    test_events: Metric,
    user_count: Metric,
    cpu: Metric,
    memory: Metric,
    network: Metric,
    success: Metric,
    error: Metric,
}

impl Instruments {
    fn new() -> Self {
        Self {
            test_events: Metric::new(names::TEST_EVENTS)
                .unit("1")
                .description("Locust test events (start, stop, spawn complete, CPU warning)"),
            user_count: Metric::new(names::USER_COUNT)
                .unit("1")
                .description("Users running"),
            cpu: Metric::new(names::CPU)
                .unit("%")
                .description("CPU use of the Locust process"),
            memory: Metric::new(names::MEMORY)
                .unit("By")
                .description("Resident memory of the Locust process"),
            network: Metric::new(names::NETWORK)
                .unit("By")
                .description("Bytes the host's network interfaces sent or received"),
            success: Metric::new(names::REQUEST_SUCCESS)
                .unit("ms")
                .description("Response times of successful requests"),
            error: Metric::new(names::REQUEST_ERROR)
                .unit("ms")
                .description("Response times of failed requests"),
        }
    }
}

/// The recorder of one node.
pub struct LocustTelemetryRecorder {
    /// Records the master's events and request stats (master and standalone).
    aggregates: bool,
    source: &'static str,
    node: String,
    json: bool,
    otel: bool,
    /// Between test start and test stop.
    running: bool,
    stats: Schedule,
    system: Schedule,
    /// CPU samples since the last system record: their sum and count, so a record covers its
    /// whole interval whatever the sample interval.
    cpu_sum: f64,
    cpu_samples: u32,
    /// The latest stats snapshot.
    last_snapshot: Option<StatsSnapshot>,
    /// The test stopped and its final rows wait for the snapshot the bridge takes in the same
    /// `test_stop` handler as 2.1.2 takes its own (so its user count is 2.1.2's too).
    final_pending: bool,
    instruments: Instruments,
    /// OTel response times per (failed, endpoint, status code) since the last report.
    request_times: std::collections::BTreeMap<(bool, usize, u16), ResponseTimes>,
    /// Endpoint names by the SDK's endpoint index.
    endpoint_names: Vec<String>,
}

impl LocustTelemetryRecorder {
    /// A recorder for a node of `role`, recording every `interval` seconds.
    pub fn new(role: Role, node: &str, interval: f64, json: bool, otel: bool) -> Self {
        Self {
            aggregates: matches!(role, Role::Master | Role::Standalone),
            source: match role {
                Role::Master => "MasterRunner",
                Role::Worker => "WorkerRunner",
                Role::Standalone => "LocalRunner",
            },
            node: node.to_owned(),
            json,
            otel,
            running: false,
            stats: Schedule::new(interval),
            system: Schedule::new(interval),
            cpu_sum: 0.0,
            cpu_samples: 0,
            last_snapshot: None,
            final_pending: false,
            instruments: Instruments::new(),
            request_times: Default::default(),
            endpoint_names: Vec::new(),
        }
    }

    fn node_attributes(&self) -> [(&'static str, AttributeValue); 2] {
        [
            ("source", self.source.into()),
            ("source_id", self.node.as_str().into()),
        ]
    }

    fn event(&self, name: &str, fields: Map<String, Value>, out: &mut Output) {
        if self.json {
            out.log_telemetry_with(
                TelemetryData::event(name),
                format!("Recording telemetry event: {name}"),
                Value::Object(fields),
            );
        }
        if self.otel {
            let [source, source_id] = self.node_attributes();
            out.add_counter(
                &self.instruments.test_events,
                1,
                &[("event", name.into()), source, source_id],
            );
        }
    }

    fn metric(&self, name: &str, fields: Map<String, Value>, out: &mut Output) {
        out.log_telemetry_with(
            TelemetryData::metric(name),
            format!("Recording telemetry metrics: {name}"),
            Value::Object(fields),
        );
    }

    fn stats_row(
        &self,
        stats_type: &str,
        extra: Map<String, Value>,
        row: Map<String, Value>,
        out: &mut Output,
    ) {
        let mut fields = Map::new();
        fields.insert("stats_type".into(), stats_type.into());
        fields.extend(extra);
        fields.extend(row);
        self.metric(names::REQUEST_STATS, fields, out);
    }

    fn current_row(
        &self,
        snapshot: &StatsSnapshot,
        stats_type: &str,
        user_count: u32,
        out: &mut Output,
    ) {
        let mut extra = Map::new();
        extra.insert("user_count".into(), user_count.into());
        let clock = stats_row::StatsClock::of(&snapshot.total);
        self.stats_row(stats_type, extra, entry_fields(&snapshot.total, clock), out);
    }

    /// The rows locust-telemetry flushes at test stop: `final`, then one `endpoint` row per
    /// error and per endpoint.
    fn final_rows(&self, snapshot: &StatsSnapshot, out: &mut Output) {
        self.current_row(snapshot, "final", snapshot.user_count, out);
        let clock = stats_row::StatsClock::of(&snapshot.total);
        for (status, rows) in [
            (
                "error",
                snapshot.errors.iter().map(error_fields).collect::<Vec<_>>(),
            ),
            (
                "success",
                snapshot
                    .entries
                    .iter()
                    .map(|entry| entry_fields(entry, clock))
                    .collect(),
            ),
        ] {
            for row in rows {
                let mut extra = Map::new();
                extra.insert("status".into(), status.into());
                self.stats_row("endpoint", extra, row, out);
            }
        }
    }

    /// Writes the final rows still waiting for their snapshot, from the last one seen.
    fn flush_final(&mut self, out: &mut Output) {
        if self.final_pending {
            self.final_pending = false;
            if let (true, Some(snapshot)) = (self.json, self.last_snapshot.take()) {
                self.final_rows(&snapshot, out);
            }
        }
    }

    fn system_records(&mut self, sample: &ProcessSample, out: &mut Output) {
        let cpu = if self.cpu_samples == 0 {
            sample.cpu_percent
        } else {
            self.cpu_sum / f64::from(self.cpu_samples)
        };
        self.cpu_sum = 0.0;
        self.cpu_samples = 0;
        let mib = sample.memory_bytes as f64 / (1024.0 * 1024.0);
        if self.json {
            let value = |value: Value, unit: &str| {
                let mut fields = Map::new();
                fields.insert("value".into(), value);
                fields.insert("unit".into(), unit.into());
                fields
            };
            self.metric(names::CPU, value(stats_row::float(cpu), "percent"), out);
            self.metric(names::MEMORY, value(stats_row::float(mib), "MiB"), out);
            for (direction, bytes) in [
                ("sent", sample.network_sent_bytes),
                ("recv", sample.network_recv_bytes),
            ] {
                // 2.1.2 logs the host's raw byte counter and calls it MiB; its dashboards
                // read it so.
                let mut fields = value(bytes.into(), "MiB");
                fields.insert("direction".into(), direction.into());
                self.metric(names::NETWORK, fields, out);
            }
        }
        if self.otel {
            let [source, source_id] = self.node_attributes();
            let node = [source.clone(), source_id.clone()];
            out.set_gauge(&self.instruments.cpu, cpu, &node);
            // 2.1.2's gauge says bytes and reports MiB; this one reports bytes.
            out.set_gauge(&self.instruments.memory, sample.memory_bytes as f64, &node);
            for (direction, bytes) in [
                ("sent", sample.network_sent_bytes),
                ("recv", sample.network_recv_bytes),
            ] {
                out.set_gauge(
                    &self.instruments.network,
                    bytes as f64,
                    &[
                        source.clone(),
                        source_id.clone(),
                        ("direction", direction.into()),
                    ],
                );
            }
        }
    }

    fn report_request_times(&mut self, out: &mut Output) {
        let [source, source_id] = self.node_attributes();
        for ((failed, endpoint, status), times) in &mut self.request_times {
            if times.is_empty() {
                continue;
            }
            let endpoint = &self.endpoint_names[*endpoint];
            let metric = if *failed {
                &self.instruments.error
            } else {
                &self.instruments.success
            };
            out.record_response_times(
                metric,
                times,
                &[
                    ("endpoint", endpoint.as_str().into()),
                    ("status_code", (*status).into()),
                    source.clone(),
                    source_id.clone(),
                ],
            );
            times.clear();
        }
    }
}

impl Recorder for LocustTelemetryRecorder {
    fn on_test_start(&mut self, time: Timestamp, out: &mut Output) {
        // The last test's snapshot after its stop never came (lost, or the bridge could not
        // take it): its final rows from the last snapshot seen, before this test's records.
        self.flush_final(out);
        self.cpu_sum = 0.0;
        self.cpu_samples = 0;
        self.running = true;
        self.stats.start(time);
        self.system.start(time);
        if self.aggregates {
            self.event(names::TEST_START, Map::new(), out);
        }
    }

    fn on_test_stop(&mut self, time: Timestamp, out: &mut Output) {
        if !self.running {
            return;
        }
        self.running = false;
        self.stats.stop();
        self.system.stop();
        if self.aggregates {
            let mut fields = Map::new();
            fields.insert(
                "end_time".into(),
                rfc3339_millis(time + END_TIME_BUFFER_SECONDS).into(),
            );
            self.event(names::TEST_STOP, fields, out);
            self.final_pending = true;
        }
    }

    fn on_spawning_complete(&mut self, _time: Timestamp, user_count: u32, out: &mut Output) {
        if self.aggregates {
            let mut fields = Map::new();
            fields.insert("user_count".into(), user_count.into());
            self.event(names::SPAWN_COMPLETE, fields, out);
        }
    }

    fn on_cpu_warning(&mut self, _time: Timestamp, cpu_usage: f64, out: &mut Output) {
        // 2.1.2 listens for CPU warnings on the master only, from test start to stop.
        if self.aggregates && self.running {
            let mut fields = Map::new();
            fields.insert("value".into(), stats_row::float(cpu_usage));
            fields.insert("unit".into(), "percent".into());
            self.event(names::CPU_WARNING, fields, out);
        }
    }

    fn on_stats_snapshot(&mut self, time: Timestamp, snapshot: &StatsSnapshot, out: &mut Output) {
        if !self.aggregates {
            return;
        }
        if self.otel {
            let [source, source_id] = self.node_attributes();
            out.set_gauge(
                &self.instruments.user_count,
                f64::from(snapshot.user_count),
                &[source, source_id],
            );
        }
        if self.json {
            if self.final_pending {
                self.final_pending = false;
                self.final_rows(snapshot, out);
            } else if self.running && self.stats.take(time) {
                self.current_row(snapshot, "current", snapshot.user_count, out);
            }
        }
        self.last_snapshot = Some(snapshot.clone());
    }

    fn on_process_sample(&mut self, time: Timestamp, sample: &ProcessSample, out: &mut Output) {
        if !self.running {
            return;
        }
        self.cpu_sum += sample.cpu_percent;
        self.cpu_samples += 1;
        if self.system.take(time) {
            self.system_records(sample, out);
        }
    }

    fn on_request(&mut self, request: &Request<'_>, _out: &mut Output) {
        if !self.otel {
            return;
        }
        let status = request
            .status_code
            .filter(|code| *code != 0)
            .unwrap_or(NO_RESPONSE_STATUS);
        let endpoint = request.endpoint.index();
        if endpoint >= self.endpoint_names.len() {
            self.endpoint_names.resize(endpoint + 1, String::new());
        }
        if self.endpoint_names[endpoint].is_empty() {
            self.endpoint_names[endpoint] = request.name.to_owned();
        }
        self.request_times
            .entry((request.failed(), endpoint, status))
            .or_default()
            .observe(request.response_time_ms);
    }

    fn on_requests(&mut self, requests: &swarmtel_guest::Requests<'_>, out: &mut Output) {
        if !self.otel {
            return;
        }
        for request in requests.iter() {
            self.on_request(&request, out);
        }
        self.report_request_times(out);
    }

    fn on_finish(&mut self, out: &mut Output) {
        // The stream ended before the snapshot that follows test stop: the last one seen is
        // the final one.
        self.flush_final(out);
        if self.otel {
            self.report_request_times(out);
        }
    }
}

/// Unix seconds as RFC 3339 UTC with milliseconds and `Z`, as locust-telemetry writes
/// `end_time` (`datetime.isoformat(timespec="milliseconds")`, which truncates).
pub fn rfc3339_millis(unix_seconds: f64) -> String {
    let millis_total = (unix_seconds.max(0.0) * 1000.0).floor() as i64;
    let (seconds, millis) = (millis_total.div_euclid(1000), millis_total.rem_euclid(1000));
    let (days, day_seconds) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        day_seconds / 3600,
        day_seconds % 3600 / 60,
        day_seconds % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

export_plugin!(LocustTelemetryPlugin);

#[cfg(test)]
mod tests;
