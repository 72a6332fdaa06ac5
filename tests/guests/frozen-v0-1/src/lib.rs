//! Test guest: a plugin built against the frozen contract in `wit/0.1.0/` with plain
//! `wit-bindgen` (the SDK speaks the newest version), so tests show that a runtime speaking a
//! newer version still loads and runs it: options in, requests and stats snapshots through
//! 0.1.0's types, diagnostics and telemetry out.
//!
//! Recorder `counter` (every role) counts requests, failures and URLs, keeps the first
//! exception text and the keys of the last stats snapshot's `Aggregated` histogram, and logs
//! them as `COUNTS` at test stop, with its `greeting` option.

wit_bindgen::generate!({
    path: "../../../wit/0.1.0",
    world: "recorder-plugin",
});

use std::cell::RefCell;

use exports::swarmtel::telemetry::plugin::{self, Guest, GuestRecorder};
use swarmtel::telemetry::host::{self, LogLevel};
use swarmtel::telemetry::types::{
    Event, EventBatch, EventKind, OptionSpec, OptionType, OptionValue, PluginInfo, RecorderConfig,
    RecorderSpec, RequestExtras, Role, Telemetry, TelemetryType,
};

#[allow(dead_code)]
struct Frozen;

#[derive(Default)]
struct Counts {
    greeting: String,
    requests: u64,
    failures: u64,
    urls: u64,
    first_exception: Option<String>,
    stats_keys: Vec<u32>,
}

#[allow(dead_code)]
struct Counter(RefCell<Counts>);

impl Guest for Frozen {
    type Recorder = Counter;

    fn describe() -> PluginInfo {
        PluginInfo {
            id: "frozen-v0-1".into(),
            version: "0.1.0".into(),
            description: "Built against swarmtel:telemetry@0.1.0".into(),
            options: vec![OptionSpec {
                name: "greeting".into(),
                option_type: OptionType::Text,
                default: Some(OptionValue::Text("hello".into())),
                help: "Logged back at test stop".into(),
                env_var: None,
            }],
            recorders: vec![RecorderSpec {
                name: "counter".into(),
                roles: vec![Role::Master, Role::Worker, Role::Standalone],
                events: vec![
                    EventKind::Request,
                    EventKind::StatsSnapshot,
                    EventKind::TestStop,
                ],
                tick_interval_ms: None,
                request_extras: RequestExtras::URL,
            }],
            schemas: Vec::new(),
        }
    }

    fn create_recorder(config: RecorderConfig) -> Result<plugin::Recorder, String> {
        let greeting = config
            .options
            .iter()
            .find_map(|option| match (&*option.name, &option.value) {
                ("greeting", OptionValue::Text(text)) => Some(text.clone()),
                _ => None,
            })
            .ok_or("no greeting")?;
        host::log(
            LogLevel::Info,
            &format!("frozen counter on {}", config.node),
        );
        Ok(plugin::Recorder::new(Counter(RefCell::new(Counts {
            greeting,
            ..Counts::default()
        }))))
    }
}

impl GuestRecorder for Counter {
    fn handle(&self, batch: EventBatch) -> Vec<Telemetry> {
        let mut counts = self.0.borrow_mut();
        let requests = &batch.requests;
        counts.requests += requests.endpoint.len() as u64;
        counts.failures += requests.failures.len() as u64;
        counts.urls += requests
            .details
            .iter()
            .filter(|detail| detail.url.is_some())
            .count() as u64;
        if counts.first_exception.is_none() {
            counts.first_exception = requests
                .failures
                .first()
                .map(|failure| failure.exception.clone());
        }
        let mut out = Vec::new();
        for timed in batch.events {
            match timed.event {
                Event::StatsSnapshot(snapshot) => {
                    counts.stats_keys = snapshot
                        .total
                        .response_times
                        .iter()
                        .map(|&(ms, _)| ms)
                        .collect();
                }
                Event::TestStop => out.push(Telemetry {
                    telemetry_type: TelemetryType::Metric,
                    name: "COUNTS".into(),
                    message: counts.greeting.clone(),
                    fields: format!(
                        "{{\"requests\":{},\"failures\":{},\"urls\":{},\"first_exception\":{:?},\"stats_keys\":{:?}}}",
                        counts.requests,
                        counts.failures,
                        counts.urls,
                        counts.first_exception.clone().unwrap_or_default(),
                        counts.stats_keys
                    ),
                }),
                _ => {}
            }
        }
        out
    }

    fn finish(&self) -> Vec<Telemetry> {
        Vec::new()
    }
}

// The component ABI symbol names only link for wasm.
#[cfg(target_arch = "wasm32")]
export!(Frozen);
