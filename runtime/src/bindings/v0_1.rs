//! Contract version 0.1.0, frozen in `wit/0.1.0/`: its bindings, and the conversions between
//! its types and the host's (the newest version's). Plugins built against 0.1.0 keep loading:
//! batches are copied into 0.1.0's shape before the call (failures lose their exception
//! class, fractional stats keys are rounded, process samples are never subscribable), and
//! what such a plugin returns is telemetry without metric points.

// Generated bindings carry the WIT doc comments where wasmtime copies them, not everywhere.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit/0.1.0",
    world: "recorder-plugin",
});

use self::swarmtel::telemetry::types as old;
use super::types as new;

/// The version of this module's contract.
pub const VERSION: &str = "0.1.0";

/// The host's batch in 0.1.0's shape (a copy: the host keeps its batch for other recorders).
pub(super) fn batch(batch: &new::EventBatch) -> old::EventBatch {
    let requests = &batch.requests;
    old::EventBatch {
        requests: old::RequestColumns {
            endpoints: requests
                .endpoints
                .iter()
                .map(|endpoint| old::Endpoint {
                    request_type: endpoint.request_type.clone(),
                    name: endpoint.name.clone(),
                })
                .collect(),
            endpoint: requests.endpoint.clone(),
            start_time: requests.start_time.clone(),
            response_time_ms: requests.response_time_ms.clone(),
            response_length: requests.response_length.clone(),
            status_code: requests.status_code.clone(),
            failures: requests
                .failures
                .iter()
                .map(|failure| old::RequestFailure {
                    index: failure.index,
                    exception: failure.exception.clone(),
                })
                .collect(),
            details: requests
                .details
                .iter()
                .map(|detail| old::RequestDetail {
                    index: detail.index,
                    url: detail.url.clone(),
                    context: detail.context.clone(),
                })
                .collect(),
        },
        events: batch
            .events
            .iter()
            .filter_map(|timed| {
                Some(old::TimedEvent {
                    time: timed.time,
                    event: event(&timed.event)?,
                })
            })
            .collect(),
    }
}

/// An event in 0.1.0's shape; `None` for events 0.1.0 does not have.
fn event(event: &new::Event) -> Option<old::Event> {
    Some(match event {
        new::Event::TestStart => old::Event::TestStart,
        new::Event::TestStopping => old::Event::TestStopping,
        new::Event::TestStop => old::Event::TestStop,
        new::Event::SpawningComplete(users) => old::Event::SpawningComplete(*users),
        new::Event::UserError(error) => old::Event::UserError(old::UserError {
            user_instance: error.user_instance.clone(),
            exception: error.exception.clone(),
            traceback: error.traceback.clone(),
        }),
        new::Event::CpuWarning(percent) => old::Event::CpuWarning(*percent),
        new::Event::UsageMonitor(usage) => old::Event::UsageMonitor(old::Usage {
            cpu_usage: usage.cpu_usage,
            memory_usage: usage.memory_usage,
        }),
        new::Event::WorkerConnect(client) => old::Event::WorkerConnect(client.clone()),
        new::Event::WorkerReport(report) => old::Event::WorkerReport(old::WorkerReport {
            client_id: report.client_id.clone(),
            user_count: report.user_count,
        }),
        new::Event::HeartbeatSent(beat) => old::Event::HeartbeatSent(heartbeat(beat)),
        new::Event::HeartbeatReceived(beat) => old::Event::HeartbeatReceived(heartbeat(beat)),
        new::Event::ResetStats => old::Event::ResetStats,
        new::Event::Quitting => old::Event::Quitting,
        new::Event::Quit(code) => old::Event::Quit(*code),
        new::Event::StatsSnapshot(snapshot) => old::Event::StatsSnapshot(old::StatsSnapshot {
            user_count: snapshot.user_count,
            entries: snapshot.entries.iter().map(endpoint_stats).collect(),
            total: endpoint_stats(&snapshot.total),
        }),
        new::Event::Tick => old::Event::Tick,
        new::Event::ProcessSample(_) => return None,
    })
}

fn heartbeat(beat: &new::Heartbeat) -> old::Heartbeat {
    old::Heartbeat {
        client_id: beat.client_id.clone(),
        timestamp: beat.timestamp,
    }
}

fn endpoint_stats(entry: &new::EndpointStats) -> old::EndpointStats {
    old::EndpointStats {
        request_type: entry.request_type.clone(),
        name: entry.name.clone(),
        num_requests: entry.num_requests,
        num_failures: entry.num_failures,
        total_response_time_ms: entry.total_response_time_ms,
        min_response_time_ms: entry.min_response_time_ms,
        max_response_time_ms: entry.max_response_time_ms,
        total_content_length: entry.total_content_length,
        response_times: whole_milliseconds(&entry.response_times),
        current_rps: entry.current_rps,
        current_fail_per_sec: entry.current_fail_per_sec,
    }
}

/// A histogram in 0.1.0's whole milliseconds: a fractional key (a custom rounding function)
/// goes to its nearest one (`as` saturates, so no key wraps), and keys that meet there add up,
/// so each key appears once, ascending, as Locust's own histogram has it.
fn whole_milliseconds(response_times: &[(f64, u64)]) -> Vec<(u32, u64)> {
    let mut whole: Vec<(u32, u64)> = Vec::with_capacity(response_times.len());
    for &(ms, count) in response_times {
        let ms = ms.round() as u32;
        match whole.binary_search_by_key(&ms, |&(known, _)| known) {
            Ok(at) => whole[at].1 = whole[at].1.saturating_add(count),
            Err(at) => whole.insert(at, (ms, count)),
        }
    }
    whole
}

/// The host's recorder config in 0.1.0's shape.
pub(super) fn recorder_config(config: &new::RecorderConfig) -> old::RecorderConfig {
    old::RecorderConfig {
        recorder: config.recorder.clone(),
        role: match config.role {
            new::Role::Master => old::Role::Master,
            new::Role::Worker => old::Role::Worker,
            new::Role::Standalone => old::Role::Standalone,
        },
        node: config.node.clone(),
        options: config
            .options
            .iter()
            .map(|setting| old::OptionSetting {
                name: setting.name.clone(),
                value: match &setting.value {
                    new::OptionValue::Text(text) => old::OptionValue::Text(text.clone()),
                    new::OptionValue::Integer(number) => old::OptionValue::Integer(*number),
                    new::OptionValue::Float(number) => old::OptionValue::Float(*number),
                    new::OptionValue::Boolean(flag) => old::OptionValue::Boolean(*flag),
                },
            })
            .collect(),
    }
}

/// A 0.1.0 plugin's description in the host's types.
pub(super) fn plugin_info(info: old::PluginInfo) -> new::PluginInfo {
    new::PluginInfo {
        id: info.id,
        version: info.version,
        description: info.description,
        options: info
            .options
            .into_iter()
            .map(|option| new::OptionSpec {
                name: option.name,
                option_type: match option.option_type {
                    old::OptionType::Text => new::OptionType::Text,
                    old::OptionType::Integer => new::OptionType::Integer,
                    old::OptionType::Float => new::OptionType::Float,
                    old::OptionType::Boolean => new::OptionType::Boolean,
                },
                default: option.default.map(option_value),
                help: option.help,
                env_var: option.env_var,
            })
            .collect(),
        recorders: info
            .recorders
            .into_iter()
            .map(|recorder| {
                let mut extras = new::RequestExtras::empty();
                if recorder.request_extras.contains(old::RequestExtras::URL) {
                    extras |= new::RequestExtras::URL;
                }
                if recorder
                    .request_extras
                    .contains(old::RequestExtras::CONTEXT)
                {
                    extras |= new::RequestExtras::CONTEXT;
                }
                new::RecorderSpec {
                    name: recorder.name,
                    roles: recorder
                        .roles
                        .into_iter()
                        .map(|role| match role {
                            old::Role::Master => new::Role::Master,
                            old::Role::Worker => new::Role::Worker,
                            old::Role::Standalone => new::Role::Standalone,
                        })
                        .collect(),
                    events: recorder.events.into_iter().map(event_kind).collect(),
                    tick_interval_ms: recorder.tick_interval_ms,
                    request_extras: extras,
                }
            })
            .collect(),
        schemas: info
            .schemas
            .into_iter()
            .map(|schema| new::TelemetrySchema {
                name: schema.name,
                schema: schema.schema,
            })
            .collect(),
    }
}

fn option_value(value: old::OptionValue) -> new::OptionValue {
    match value {
        old::OptionValue::Text(text) => new::OptionValue::Text(text),
        old::OptionValue::Integer(number) => new::OptionValue::Integer(number),
        old::OptionValue::Float(number) => new::OptionValue::Float(number),
        old::OptionValue::Boolean(flag) => new::OptionValue::Boolean(flag),
    }
}

fn event_kind(kind: old::EventKind) -> new::EventKind {
    match kind {
        old::EventKind::TestStart => new::EventKind::TestStart,
        old::EventKind::TestStopping => new::EventKind::TestStopping,
        old::EventKind::TestStop => new::EventKind::TestStop,
        old::EventKind::SpawningComplete => new::EventKind::SpawningComplete,
        old::EventKind::Request => new::EventKind::Request,
        old::EventKind::UserError => new::EventKind::UserError,
        old::EventKind::CpuWarning => new::EventKind::CpuWarning,
        old::EventKind::UsageMonitor => new::EventKind::UsageMonitor,
        old::EventKind::WorkerConnect => new::EventKind::WorkerConnect,
        old::EventKind::WorkerReport => new::EventKind::WorkerReport,
        old::EventKind::HeartbeatSent => new::EventKind::HeartbeatSent,
        old::EventKind::HeartbeatReceived => new::EventKind::HeartbeatReceived,
        old::EventKind::ResetStats => new::EventKind::ResetStats,
        old::EventKind::Quitting => new::EventKind::Quitting,
        old::EventKind::Quit => new::EventKind::Quit,
        old::EventKind::StatsSnapshot => new::EventKind::StatsSnapshot,
        old::EventKind::Tick => new::EventKind::Tick,
    }
}

/// What a 0.1.0 recorder returned, in the host's types: telemetry only.
pub(super) fn output(items: Vec<old::Telemetry>) -> new::RecorderOutput {
    new::RecorderOutput {
        telemetry: items
            .into_iter()
            .map(|item| new::Telemetry {
                telemetry_type: match item.telemetry_type {
                    old::TelemetryType::Event => new::TelemetryType::Event,
                    old::TelemetryType::Metric => new::TelemetryType::Metric,
                },
                name: item.name,
                message: item.message,
                fields: item.fields,
            })
            .collect(),
        metrics: Vec::new(),
    }
}

/// A diagnostic line's level in the host's types.
pub(super) fn log_level(level: self::swarmtel::telemetry::host::LogLevel) -> super::host::LogLevel {
    use self::swarmtel::telemetry::host::LogLevel as Old;
    use super::host::LogLevel as New;
    match level {
        Old::Trace => New::Trace,
        Old::Debug => New::Debug,
        Old::Info => New::Info,
        Old::Warn => New::Warn,
        Old::Error => New::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_keys_meet_at_whole_milliseconds_and_add_up() {
        assert_eq!(
            whole_milliseconds(&[(0.4, 1), (1.5, 2), (2.0, 3), (2.25, 4), (7.0, 5)]),
            [(0, 1), (2, 9), (7, 5)]
        );
        // Out of order (a stream that did not sort them) still comes out ascending.
        assert_eq!(whole_milliseconds(&[(9.0, 1), (3.0, 1)]), [(3, 1), (9, 1)]);
        assert_eq!(whole_milliseconds(&[(1e300, 1)]), [(u32::MAX, 1)]);
    }
}
