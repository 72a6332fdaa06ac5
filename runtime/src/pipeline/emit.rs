//! Emitting: where a recorder's results go once its call returns. Valid items are enriched
//! and written to the sinks, rejected ones to the dead-letter output, and the runtime's own
//! records (faults, rejections, restarts) are written beside them.

use serde_json::Value;

use super::RunError;
use super::counters::PluginCounters;
use super::enrich::{self, Level, Origin, RunContext, SELF_PLUGIN_ID};
use super::validate::{PluginSchemas, Rejection, ValidItem, Validator};
use crate::bindings::types as wit;
use crate::config::Limits;
use crate::sinks::{Outputs, Record, SinkError};

/// Validation, enrichment and output: where recorder results go.
pub(super) struct Emitter {
    pub(super) validator: Validator,
    pub(super) outputs: Outputs,
}

/// What became of one call's items.
pub(super) struct Emitted {
    /// Items rejected (each counted under its reason in the plugin's counters).
    pub(super) rejected: u64,
    /// Whether validating them used up the call's validation time.
    pub(super) over_budget: bool,
}

impl From<SinkError> for RunError {
    fn from(error: SinkError) -> Self {
        RunError::Output {
            path: error.output,
            source: error.source,
        }
    }
}

impl Emitter {
    /// Flushes every output.
    pub(super) fn flush(&mut self) -> Result<(), RunError> {
        Ok(self.outputs.flush()?)
    }

    /// Validates one call's items: valid ones go to the outputs, rejected ones to the dead
    /// letter output (the first past a per-call cap with a line of its own, the rest on one
    /// line together), and the plugin's counters count both.
    pub(super) fn emit_items(
        &mut self,
        items: Vec<wit::Telemetry>,
        schemas: &PluginSchemas,
        limits: &Limits,
        run: &RunContext,
        origin: &Origin<'_>,
        counters: &mut PluginCounters,
    ) -> Result<Emitted, RunError> {
        let Emitter { validator, outputs } = self;
        // The first write that fails.
        let mut failure: Option<SinkError> = None;
        let mut emitted = Emitted {
            rejected: 0,
            over_budget: false,
        };
        // Items past the per-call caps: the first gets its own dead letter, the rest one
        // line together.
        let mut over_cap: Option<(&'static str, u64)> = None;
        validator.check_call(items, schemas, limits, |outcome| {
            if failure.is_some() {
                return;
            }
            let written = match outcome {
                Ok(item) => {
                    counters.telemetry_out += 1;
                    outputs.write(&Record {
                        run,
                        origin,
                        item: &item,
                        level: Level::Info,
                    })
                }
                Err(rejected) => {
                    emitted.rejected += 1;
                    emitted.over_budget |=
                        matches!(rejected.reason, Rejection::ValidationBudget { .. });
                    let label = rejected.reason.label();
                    *counters.rejected.entry(label).or_insert(0) += 1;
                    let past_cap = matches!(
                        rejected.reason,
                        Rejection::TooManyItems { .. }
                            | Rejection::CallTooLarge { .. }
                            | Rejection::ValidationBudget { .. }
                    );
                    match &mut over_cap {
                        Some((_, more)) if past_cap => {
                            *more += 1;
                            Ok(())
                        }
                        _ => {
                            if past_cap {
                                over_cap = Some((label, 0));
                            }
                            outputs.write_dead_letter(&enrich::dead_letter_line(
                                run, origin, &rejected,
                            ))
                        }
                    }
                }
            };
            if let Err(error) = written {
                failure = Some(error);
            }
        });
        if failure.is_none()
            && let Some((label, more)) = over_cap.filter(|(_, more)| *more > 0)
        {
            failure = outputs
                .write_dead_letter(&enrich::over_cap_line(run, origin, label, more))
                .err();
        }
        match failure {
            Some(error) => Err(error.into()),
            None => Ok(emitted),
        }
    }

    /// Writes one of the runtime's own telemetry records.
    // One argument per field of the record it writes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn self_telemetry(
        &mut self,
        run: &RunContext,
        level: Level,
        telemetry_type: wit::TelemetryType,
        name: &str,
        message: String,
        fields: Value,
        origin: Origin<'_>,
    ) -> Result<(), RunError> {
        let Value::Object(fields) = fields else {
            unreachable!("self-telemetry fields are objects")
        };
        let item = ValidItem {
            telemetry_type,
            name: name.to_owned(),
            message,
            fields,
        };
        let origin = Origin {
            plugin: SELF_PLUGIN_ID,
            ..origin
        };
        Ok(self.outputs.write(&Record {
            run,
            origin: &origin,
            item: &item,
            level,
        })?)
    }
}
