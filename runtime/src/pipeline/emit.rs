//! Emitting: where a recorder's results go once its call returns. Valid items are enriched
//! and written to the sinks, rejected ones to the dead-letter output, and the runtime's own
//! records (faults, rejections, restarts) are written beside them.

use serde_json::Value;

use super::RunError;
use super::enrich::{self, Level, Origin, RunContext, SELF_PLUGIN_ID};
use super::validate::{ValidItem, Validator};
use crate::bindings::types as wit;
use crate::sinks::json_lines::JsonLinesSink;

/// Validation, enrichment and output: where recorder results go.
pub(super) struct Emitter {
    pub(super) validator: Validator,
    pub(super) output: JsonLinesSink,
    pub(super) output_path: String,
    pub(super) dead_letter: JsonLinesSink,
    pub(super) dead_letter_path: String,
}

impl Emitter {
    /// Flushes both outputs.
    pub(super) fn flush(&mut self) -> Result<(), RunError> {
        self.output.flush().map_err(|source| RunError::Output {
            path: self.output_path.clone(),
            source,
        })?;
        self.dead_letter.flush().map_err(|source| RunError::Output {
            path: self.dead_letter_path.clone(),
            source,
        })
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
        let line = enrich::telemetry_line(run, &origin, &item, level);
        self.output.write(&line).map_err(|source| RunError::Output {
            path: self.output_path.clone(),
            source,
        })
    }
}
