//! Validation: every telemetry item a guest returns is checked before it can reach an output.
//!
//! In order: the call's item count and byte caps, the item's byte cap, `fields` parses as a
//! JSON object, no host-owned key, the envelope schema (`schemas/telemetry.schema.json`), then
//! the plugin's own JSON Schema for that telemetry name if it declared one. Schemas are
//! compiled once, with remote and file references disabled. `fields` is parsed exactly once.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::bindings::types as wit;
use crate::config::Limits;

/// The envelope schema every item must satisfy.
pub const ENVELOPE_SCHEMA: &str = include_str!("../../schemas/telemetry.schema.json");

/// Field names the host writes itself; a guest field with one of these names is rejected.
pub const HOST_OWNED_KEYS: [&str; 8] = [
    "time",
    "run_id",
    "testplan",
    "source",
    "source_id",
    "plugin",
    "telemetry_type",
    "telemetry_name",
];

/// Why an item was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// The call returned more items than `max_items_per_call`.
    #[error("more than {limit} items in one call")]
    TooManyItems {
        /// The limit.
        limit: usize,
    },
    /// The call's items together exceed `max_call_bytes`.
    #[error("the call's telemetry exceeds {limit} bytes")]
    CallTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The item exceeds `max_item_bytes`.
    #[error("item of {bytes} bytes exceeds {limit} bytes")]
    ItemTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// `fields` is not JSON.
    #[error("fields are not valid JSON: {0}")]
    FieldsNotJson(String),
    /// `fields` is JSON but not an object.
    #[error("fields must be a JSON object, got {0}")]
    FieldsNotObject(&'static str),
    /// A field has a host-owned name.
    #[error("field `{0}` is owned by the host and cannot be set by a plugin")]
    HostOwnedKey(String),
    /// The envelope schema refused it.
    #[error("envelope: {0}")]
    Envelope(String),
    /// The plugin's own schema for this name refused it.
    #[error("schema for `{name}`: {message}")]
    Schema {
        /// The telemetry name.
        name: String,
        /// The validator's message with the failing location.
        message: String,
    },
}

impl Rejection {
    /// A short, stable label for counters.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::TooManyItems { .. } => "too_many_items",
            Rejection::CallTooLarge { .. } => "call_too_large",
            Rejection::ItemTooLarge { .. } => "item_too_large",
            Rejection::FieldsNotJson(_) => "fields_not_json",
            Rejection::FieldsNotObject(_) => "fields_not_object",
            Rejection::HostOwnedKey(_) => "host_owned_key",
            Rejection::Envelope(_) => "envelope",
            Rejection::Schema { .. } => "schema",
        }
    }
}

/// An item that passed validation, with its fields parsed.
#[derive(Debug, Clone)]
pub struct ValidItem {
    /// Event or metric.
    pub telemetry_type: wit::TelemetryType,
    /// The telemetry name.
    pub name: String,
    /// The message.
    pub message: String,
    /// The recorder's fields.
    pub fields: Map<String, Value>,
}

/// A rejected item, kept for the dead-letter output.
#[derive(Debug, Clone)]
pub struct RejectedItem {
    /// Why.
    pub reason: Rejection,
    /// The item as the guest returned it.
    pub item: wit::Telemetry,
}

/// A plugin's declared schema could not be compiled.
#[derive(Debug, Clone, thiserror::Error)]
#[error("schema for `{name}`: {message}")]
pub struct SchemaError {
    /// The telemetry name.
    pub name: String,
    /// Why it does not compile.
    pub message: String,
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .build(schema)
        .map_err(|error| error.to_string())
}

/// The compiled schemas of one plugin, by telemetry name.
#[derive(Default)]
pub struct PluginSchemas {
    by_name: HashMap<String, jsonschema::Validator>,
}

impl PluginSchemas {
    /// Compiles the schemas a plugin declared.
    pub fn compile(schemas: &[wit::TelemetrySchema]) -> Result<Self, SchemaError> {
        let mut by_name = HashMap::new();
        for declared in schemas {
            let error = |message: String| SchemaError {
                name: declared.name.clone(),
                message,
            };
            let schema: Value = serde_json::from_str(&declared.schema)
                .map_err(|e| error(format!("not JSON: {e}")))?;
            let validator = compile(&schema).map_err(error)?;
            if by_name.insert(declared.name.clone(), validator).is_some() {
                return Err(error("declared twice".into()));
            }
        }
        Ok(Self { by_name })
    }
}

/// Validates telemetry against the envelope and plugin schemas.
pub struct Validator {
    envelope: jsonschema::Validator,
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    /// Compiles the envelope schema.
    pub fn new() -> Self {
        let schema: Value = serde_json::from_str(ENVELOPE_SCHEMA).expect("envelope schema is JSON");
        let envelope = compile(&schema).expect("envelope schema compiles");
        Self { envelope }
    }

    /// Checks the items of one call, in order; each comes back valid or rejected.
    pub fn check_call(
        &self,
        items: Vec<wit::Telemetry>,
        schemas: &PluginSchemas,
        limits: &Limits,
        mut each: impl FnMut(Result<ValidItem, Box<RejectedItem>>),
    ) {
        let mut call_bytes = 0usize;
        for (index, item) in items.into_iter().enumerate() {
            let bytes = item.name.len() + item.message.len() + item.fields.len();
            call_bytes = call_bytes.saturating_add(bytes);
            let early = if index >= limits.max_items_per_call {
                Some(Rejection::TooManyItems {
                    limit: limits.max_items_per_call,
                })
            } else if bytes > limits.max_item_bytes {
                Some(Rejection::ItemTooLarge {
                    bytes,
                    limit: limits.max_item_bytes,
                })
            } else if call_bytes > limits.max_call_bytes {
                Some(Rejection::CallTooLarge {
                    limit: limits.max_call_bytes,
                })
            } else {
                None
            };
            each(match early {
                Some(reason) => Err(Box::new(RejectedItem { reason, item })),
                None => self.check_item(item, schemas),
            });
        }
    }

    /// Checks one item (without the size caps).
    pub fn check_item(
        &self,
        item: wit::Telemetry,
        schemas: &PluginSchemas,
    ) -> Result<ValidItem, Box<RejectedItem>> {
        let fields = match parse_fields(&item.fields) {
            Ok(fields) => fields,
            Err(reason) => return Err(Box::new(RejectedItem { reason, item })),
        };
        if let Some(key) = HOST_OWNED_KEYS
            .iter()
            .find(|key| fields.contains_key(**key))
        {
            return Err(Box::new(RejectedItem {
                reason: Rejection::HostOwnedKey((*key).to_owned()),
                item,
            }));
        }
        let envelope = Value::Object(Map::from_iter([
            (
                "telemetry_type".to_owned(),
                Value::from(type_name(item.telemetry_type)),
            ),
            ("telemetry_name".to_owned(), Value::from(item.name.as_str())),
            ("message".to_owned(), Value::from(item.message.as_str())),
            ("fields".to_owned(), Value::Object(fields)),
        ]));
        if let Err(error) = self.envelope.validate(&envelope) {
            let reason = Rejection::Envelope(describe_error(&error));
            return Err(Box::new(RejectedItem { reason, item }));
        }
        let Value::Object(mut envelope) = envelope else {
            unreachable!("built as an object")
        };
        let fields_value = envelope.remove("fields").expect("built with fields");
        if let Some(validator) = schemas.by_name.get(&item.name)
            && let Err(error) = validator.validate(&fields_value)
        {
            let reason = Rejection::Schema {
                name: item.name.clone(),
                message: describe_error(&error),
            };
            return Err(Box::new(RejectedItem { reason, item }));
        }
        let Value::Object(fields) = fields_value else {
            unreachable!("checked to be an object")
        };
        Ok(ValidItem {
            telemetry_type: item.telemetry_type,
            name: item.name,
            message: item.message,
            fields,
        })
    }
}

/// `event` or `metric`.
pub fn type_name(telemetry_type: wit::TelemetryType) -> &'static str {
    match telemetry_type {
        wit::TelemetryType::Event => "event",
        wit::TelemetryType::Metric => "metric",
    }
}

fn parse_fields(text: &str) -> Result<Map<String, Value>, Rejection> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Rejection::FieldsNotObject(match other {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => unreachable!(),
        })),
        Err(error) => Err(Rejection::FieldsNotJson(error.to_string())),
    }
}

fn describe_error(error: &jsonschema::ValidationError<'_>) -> String {
    let path = error.instance_path().to_string();
    let location = if path.is_empty() {
        "/".to_owned()
    } else {
        path
    };
    format!("at {location}: {}", error.masked())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, fields: &str) -> wit::Telemetry {
        wit::Telemetry {
            telemetry_type: wit::TelemetryType::Metric,
            name: name.into(),
            message: "m".into(),
            fields: fields.into(),
        }
    }

    fn schemas() -> PluginSchemas {
        PluginSchemas::compile(&[wit::TelemetrySchema {
            name: "stats".into(),
            schema: r#"{"type":"object","required":["count"],"properties":{"count":{"type":"integer"}}}"#.into(),
        }])
        .unwrap()
    }

    fn reason(item: wit::Telemetry) -> Rejection {
        Validator::new()
            .check_item(item, &schemas())
            .unwrap_err()
            .reason
    }

    #[test]
    fn valid_items_pass_with_parsed_fields() {
        let valid = Validator::new()
            .check_item(item("stats", r#"{"count":3}"#), &schemas())
            .unwrap();
        assert_eq!(valid.fields["count"], 3);
        let no_fields = Validator::new()
            .check_item(item("OTHER", ""), &schemas())
            .unwrap();
        assert!(no_fields.fields.is_empty());
    }

    #[test]
    fn each_rule_rejects_with_its_reason() {
        assert!(matches!(
            reason(item("a", "{nope")),
            Rejection::FieldsNotJson(_)
        ));
        assert_eq!(
            reason(item("a", "[1]")),
            Rejection::FieldsNotObject("an array")
        );
        assert_eq!(
            reason(item("a", r#"{"run_id":"x"}"#)),
            Rejection::HostOwnedKey("run_id".into())
        );
        assert!(matches!(
            reason(item("9bad name", "{}")),
            Rejection::Envelope(_)
        ));
        let Rejection::Schema { name, message } = reason(item("stats", r#"{"count":"3"}"#)) else {
            panic!("expected a schema rejection")
        };
        assert_eq!(name, "stats");
        assert!(message.contains("/count"), "{message}");
    }

    #[test]
    fn every_host_owned_key_is_refused() {
        for key in HOST_OWNED_KEYS {
            let fields = format!(r#"{{"{key}":"x"}}"#);
            assert_eq!(
                reason(item("a", &fields)),
                Rejection::HostOwnedKey(key.into())
            );
        }
    }

    #[test]
    fn call_caps_reject_the_excess_only() {
        let limits = Limits {
            max_items_per_call: 2,
            max_item_bytes: 40,
            max_call_bytes: 1_000,
            ..Limits::default()
        };
        let items = vec![
            item("a", "{}"),
            item("b", &format!(r#"{{"x":"{}"}}"#, "y".repeat(50))),
            item("c", "{}"),
        ];
        let mut outcomes = Vec::new();
        Validator::new().check_call(items, &PluginSchemas::default(), &limits, |r| {
            outcomes.push(r.map(|v| v.name).map_err(|r| r.reason.label()))
        });
        assert_eq!(
            outcomes,
            vec![
                Ok("a".to_owned()),
                Err("item_too_large"),
                Err("too_many_items")
            ]
        );
    }

    #[test]
    fn call_byte_cap_rejects_items_past_it() {
        let limits = Limits {
            max_call_bytes: 10,
            ..Limits::default()
        };
        let mut outcomes = Vec::new();
        Validator::new().check_call(
            vec![item("abc", "{}"), item("defgh", "{}")],
            &PluginSchemas::default(),
            &limits,
            |r| outcomes.push(r.is_ok()),
        );
        assert_eq!(outcomes, vec![true, false]);
    }

    #[test]
    fn remote_references_are_not_fetched() {
        let error = PluginSchemas::compile(&[wit::TelemetrySchema {
            name: "x".into(),
            schema: r#"{"$ref":"https://example.com/s.json"}"#.into(),
        }]);
        assert!(error.is_err());
    }
}
