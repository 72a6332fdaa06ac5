//! Test guest: reports metric points through the SDK, as its `mode` option says, so tests can
//! show what the host exports and what it refuses.
//!
//! - `requests` (default): per request batch, adds to the counter `maker.requests` per
//!   endpoint, method, status code and failure (`endpoint`, `method`, `status`, `failed`),
//!   reports the batch's response times to `maker.duration` per endpoint, adds the response
//!   lengths to `maker.response.size` (unit `By`) per endpoint, and sets the gauge
//!   `maker.endpoints` (`node` attribute) to the endpoints it has seen.
//! - `bad`: at test start, one valid counter `maker.valid` (+1) and one point of each kind of
//!   invalid point: a bad name, a name of the runtime's own, a built-in metric's name, a
//!   reserved attribute key, too many attributes, two keys that are one in Prometheus, a
//!   control character in a value, a NaN gauge, too many buckets, `maker.valid` again as a
//!   gauge.
//! - `series-flood`: at test start, `count` points of the counter `maker.flood`, each its own
//!   series (attribute `i`).
//! - `call-flood`: at test start, `count` points of the counter `maker.calls`, each its own
//!   series (the SDK merges points of one series, so only distinct ones reach the host).
//! - `huge-point`: at test start, one point whose attribute value is `count` MB.

use std::collections::{BTreeMap, BTreeSet};

use swarmtel_guest::{
    AttributeValue, EventKind, Metric, OptionSpec, Output, Plugin, PluginInfo, Recorder,
    RecorderContext, RecorderSpec, Requests, ResponseTimes, Role, Timestamp, export_plugin,
};

/// The plugin.
pub struct MetricsMaker;

impl Plugin for MetricsMaker {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "metrics-maker",
            "0.1.0",
            "Reports metric points, well or badly",
        )
        .option(OptionSpec::text("mode").default_text("requests"))
        .option(OptionSpec::integer("count").default_integer(0))
        .recorder(
            RecorderSpec::new("maker")
                .roles([Role::Master, Role::Worker, Role::Standalone])
                .events([EventKind::Request, EventKind::TestStart]),
        )
    }

    fn create_recorder(ctx: &RecorderContext) -> Result<Box<dyn Recorder>, String> {
        Ok(Box::new(Maker {
            mode: ctx.options().text("mode").unwrap_or("requests").to_owned(),
            count: ctx.options().integer("count").unwrap_or(0).max(0) as u64,
            node: ctx.node().to_owned(),
            endpoints: BTreeSet::new(),
        }))
    }
}

struct Maker {
    mode: String,
    count: u64,
    node: String,
    endpoints: BTreeSet<String>,
}

impl Recorder for Maker {
    fn on_requests(&mut self, requests: &Requests<'_>, out: &mut Output) {
        if self.mode != "requests" {
            return;
        }
        let counter = Metric::new("maker.requests")
            .unit("1")
            .description("Requests seen by the metrics maker");
        let duration = Metric::new("maker.duration").description("Response times per endpoint");
        // One point per series and batch: a batch may hold thousands of requests.
        let mut counts: BTreeMap<(&str, &str, u16, bool), u64> = BTreeMap::new();
        let mut times: BTreeMap<&str, ResponseTimes> = BTreeMap::new();
        let mut bytes: BTreeMap<&str, u64> = BTreeMap::new();
        for request in requests.iter() {
            *bytes.entry(request.name).or_insert(0) += request.response_length;
            *counts
                .entry((
                    request.name,
                    request.request_type,
                    request.status_code.unwrap_or(0),
                    request.failed(),
                ))
                .or_insert(0) += 1;
            times
                .entry(request.name)
                .or_default()
                .observe(request.response_time_ms);
            self.endpoints.insert(request.name.to_owned());
        }
        for ((endpoint, method, status, failed), count) in counts {
            out.add_counter(
                &counter,
                count,
                &[
                    ("endpoint", endpoint.into()),
                    ("method", method.into()),
                    ("status", status.into()),
                    ("failed", failed.into()),
                ],
            );
        }
        let size = Metric::new("maker.response.size")
            .unit("By")
            .description("Response bytes per endpoint");
        for (endpoint, bytes) in bytes {
            out.add_counter(&size, bytes, &[("endpoint", endpoint.into())]);
        }
        for (endpoint, times) in &times {
            out.record_response_times(&duration, times, &[("endpoint", (*endpoint).into())]);
        }
        out.set_gauge(
            &Metric::new("maker.endpoints"),
            self.endpoints.len() as f64,
            &[("node", self.node.as_str().into())],
        );
    }

    fn on_test_start(&mut self, _time: Timestamp, out: &mut Output) {
        match self.mode.as_str() {
            "bad" => bad_points(out),
            "series-flood" => {
                let flood = Metric::new("maker.flood");
                for i in 0..self.count {
                    out.add_counter(&flood, 1, &[("i", (i as i64).into())]);
                }
            }
            "call-flood" => {
                let calls = Metric::new("maker.calls");
                for i in 0..self.count {
                    out.add_counter(&calls, 1, &[("i", (i as i64).into())]);
                }
            }
            "huge-point" => {
                let value = "x".repeat(self.count as usize * 1_000_000);
                out.add_counter(&Metric::new("maker.huge"), 1, &[("big", value.into())]);
            }
            _ => {}
        }
    }
}

fn bad_points(out: &mut Output) {
    let valid = Metric::new("maker.valid");
    out.add_counter(&valid, 1, &[]);
    out.add_counter(&Metric::new("Maker-Bad"), 1, &[]);
    out.add_counter(&Metric::new("swarmtel.forged"), 1, &[]);
    out.set_gauge(&Metric::new("locust.users.count"), 1e9, &[]);
    out.add_counter(&valid, 1, &[("run_id", "forged".into())]);
    let many: Vec<(String, AttributeValue)> = (0..17)
        .map(|i| (format!("k{i}"), AttributeValue::from(1i64)))
        .collect();
    let many: Vec<(&str, AttributeValue)> = many
        .iter()
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect();
    out.add_counter(&valid, 1, &many);
    out.add_counter(&valid, 1, &[("a.b", "1".into()), ("a_b", "2".into())]);
    out.add_counter(&valid, 1, &[("text", "line\nbreak".into())]);
    out.set_gauge(&Metric::new("maker.nan"), f64::NAN, &[]);
    let mut times = ResponseTimes::new();
    // 1,100 distinct rounded times: whole seconds past 10 s.
    for second in 10..1_110 {
        times.observe(f64::from(second) * 1_000.0);
    }
    out.record_response_times(&Metric::new("maker.buckets"), &times, &[]);
    out.set_gauge(&valid, 1.0, &[]);
}

export_plugin!(MetricsMaker);
