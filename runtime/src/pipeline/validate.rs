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
pub const ENVELOPE_SCHEMA: &str = include_str!("../../../schemas/telemetry.schema.json");

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
    /// The call's items had used up its validation time (`cpu_ms_per_call` of the pipeline
    /// thread's CPU time): the rest are not validated, so a costly schema cannot stall the
    /// pipeline.
    #[error("the call's validation took more than {limit_ms} ms")]
    ValidationBudget {
        /// The budget, `cpu_ms_per_call`.
        limit_ms: u64,
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
            Rejection::ValidationBudget { .. } => "validation_budget",
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

/// Caps on a plugin's JSON Schemas, checked before anything is compiled. With them,
/// compiling is bounded by the schema's size, and validating one item by the number of
/// schema nodes reachable through `$ref`s times the item's size (itself capped by
/// `max_item_bytes`); `pattern` and `patternProperties` use a linear-time regex engine.
pub mod schema_caps {
    /// Bytes of one schema's text: `schema_bytes`.
    pub const SCHEMA_BYTES: usize = 64 * 1024;
    /// Bytes of all of one plugin's schemas together: `schemas_total_bytes`.
    pub const TOTAL_BYTES: usize = 256 * 1024;
    /// Nesting depth of a schema document: `schema_depth`.
    pub const DEPTH: usize = 32;
    /// JSON values in one schema document: `schema_nodes`.
    pub const NODES: usize = 10_000;
    /// `$ref`s in one schema document: `schema_refs`.
    pub const REFS: usize = 256;
    /// `pattern`s and `patternProperties` entries over all of one plugin's schemas (each is a
    /// compiled regex kept for the run): `patterns`.
    pub const PATTERNS: usize = 64;
    /// Schema nodes reachable from the root with every `$ref` followed (what one validation
    /// may walk per value of the item): `schema_expanded_nodes`.
    pub const EXPANDED_NODES: usize = 10_000;
    /// Compiled size of one `pattern` in the regex engine (and of its lazy DFA cache):
    /// `pattern_bytes`.
    pub const PATTERN_BYTES: usize = 1024 * 1024;
}

/// The `$schema` URIs a plugin schema may name (the drafts the validator knows, without
/// fetching anything).
const KNOWN_DRAFTS: [&str; 10] = [
    "http://json-schema.org/draft-04/schema#",
    "http://json-schema.org/draft-04/schema",
    "http://json-schema.org/draft-06/schema#",
    "http://json-schema.org/draft-06/schema",
    "http://json-schema.org/draft-07/schema#",
    "http://json-schema.org/draft-07/schema",
    "https://json-schema.org/draft/2019-09/schema",
    "https://json-schema.org/draft/2019-09/schema#",
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
];

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    let patterns = jsonschema::PatternOptions::regex()
        .size_limit(schema_caps::PATTERN_BYTES)
        .dfa_size_limit(schema_caps::PATTERN_BYTES);
    jsonschema::options()
        .with_pattern_options(patterns)
        .build(schema)
        .map_err(|error| crate::guest_text::shown(&error.to_string()))
}

/// What a walk over a schema document found.
#[derive(Default)]
struct Shape {
    nodes: usize,
    refs: usize,
    /// `pattern` keys and `patternProperties` entries (regexes to compile).
    patterns: usize,
}

/// Checks a schema document's shape against [`schema_caps`] and the rules that keep it
/// inside itself: `$ref` only to `#` or a JSON pointer in the same document, no dynamic or
/// recursive references, no `$id` below the root, no `$schema` but the known drafts, and no
/// `$ref` cycle. Runs on an explicit stack, so a deep document cannot overflow ours.
fn check_shape(schema: &Value) -> Result<Shape, String> {
    let mut shape = Shape::default();
    let mut stack: Vec<(&Value, usize)> = vec![(schema, 1)];
    while let Some((value, depth)) = stack.pop() {
        shape.nodes += 1;
        if shape.nodes > schema_caps::NODES {
            return Err(format!(
                "more than {} JSON values (cap `schema_nodes`)",
                schema_caps::NODES
            ));
        }
        if depth > schema_caps::DEPTH {
            return Err(format!(
                "nested deeper than {} levels (cap `schema_depth`)",
                schema_caps::DEPTH
            ));
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match key.as_str() {
                        "$ref" => {
                            shape.refs += 1;
                            if shape.refs > schema_caps::REFS {
                                return Err(format!(
                                    "more than {} `$ref`s (cap `schema_refs`)",
                                    schema_caps::REFS
                                ));
                            }
                            match child.as_str() {
                                Some(target)
                                    if (target == "#" || target.starts_with("#/"))
                                        && !target.contains('%') => {}
                                _ => {
                                    return Err(format!(
                                        "`$ref` {} reaches outside the schema; only `#` and `#/...` pointers (without %-escapes) are allowed",
                                        crate::guest_text::capped(&child.to_string(), 200)
                                    ));
                                }
                            }
                        }
                        "pattern" if child.is_string() => shape.patterns += 1,
                        "patternProperties" => {
                            shape.patterns += child.as_object().map_or(0, serde_json::Map::len);
                        }
                        "$dynamicRef" | "$recursiveRef" => {
                            return Err(format!("`{key}` is not supported in plugin schemas"));
                        }
                        "$id" | "id" if depth > 1 && child.is_string() => {
                            return Err(format!(
                                "`{key}` below the schema's root is not supported in plugin schemas"
                            ));
                        }
                        "$schema"
                            if !child
                                .as_str()
                                .is_some_and(|uri| KNOWN_DRAFTS.contains(&uri)) =>
                        {
                            return Err(format!(
                                "`$schema` {} is not a draft this runtime knows without fetching it",
                                crate::guest_text::capped(&child.to_string(), 200)
                            ));
                        }
                        _ => {}
                    }
                    stack.push((child, depth + 1));
                }
            }
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, depth + 1))),
            _ => {}
        }
    }
    expanded_nodes(schema)?;
    Ok(shape)
}

/// Counts the schema nodes reachable from the root when every `$ref` is followed, refusing a
/// `$ref` cycle and a count over [`schema_caps::EXPANDED_NODES`]. A `$ref` to `#/a/b` costs
/// the expanded size of what it points to (definitions count only where a `$ref` uses them);
/// each target's size is computed once and remembered, and the recursion follows `$ref`s only
/// (at most [`schema_caps::REFS`] deep).
fn expanded_nodes(schema: &Value) -> Result<usize, String> {
    /// What a JSON value is, by where it stands: a schema, a map of names to schemas
    /// (`properties`), a schema or a list of schemas (`items`, `anyOf`), or plain data.
    #[derive(Clone, Copy)]
    enum Position {
        Schema,
        SchemaMap,
        Schemas,
        Data,
    }

    fn size_of<'a>(
        root: &'a Value,
        pointer: &'a str,
        known: &mut HashMap<&'a str, Option<usize>>,
    ) -> Result<usize, String> {
        match known.get(pointer) {
            Some(Some(size)) => return Ok(*size),
            Some(None) => {
                return Err(format!(
                    "`$ref` cycle through `{}`: recursive schemas are not supported in plugin schemas",
                    crate::guest_text::capped(pointer, 200)
                ));
            }
            None => {}
        }
        let target = if pointer == "#" {
            Some(root)
        } else {
            root.pointer(&pointer[1..])
        };
        let Some(target) = target else {
            return Err(format!(
                "`$ref` `{}` points at nothing",
                crate::guest_text::capped(pointer, 200)
            ));
        };
        known.insert(pointer, None);
        let mut size = 0usize;
        let mut stack = vec![(target, Position::Schema)];
        while let Some((value, position)) = stack.pop() {
            size = size.saturating_add(1);
            match (value, position) {
                (Value::Object(map), Position::Schema) => {
                    for (key, child) in map {
                        let child_position = match key.as_str() {
                            "$ref" => {
                                if let Some(next) = child.as_str() {
                                    size = size.saturating_add(size_of(root, next, known)?);
                                }
                                Position::Data
                            }
                            // Definitions are walked only where a `$ref` uses them.
                            "$defs" | "definitions" => continue,
                            "properties" | "patternProperties" | "dependentSchemas"
                            | "dependencies" => Position::SchemaMap,
                            "allOf"
                            | "anyOf"
                            | "oneOf"
                            | "prefixItems"
                            | "items"
                            | "additionalItems"
                            | "additionalProperties"
                            | "unevaluatedItems"
                            | "unevaluatedProperties"
                            | "contains"
                            | "propertyNames"
                            | "not"
                            | "if"
                            | "then"
                            | "else" => Position::Schemas,
                            // `enum`, `const`, `default`, unknown keywords: values, never
                            // evaluated as schemas.
                            _ => Position::Data,
                        };
                        stack.push((child, child_position));
                    }
                }
                (Value::Object(map), Position::SchemaMap) => {
                    // Property names are names, not keywords, whatever they spell.
                    stack.extend(map.values().map(|child| (child, Position::Schemas)));
                }
                (Value::Array(items), Position::Schemas) => {
                    stack.extend(items.iter().map(|item| (item, Position::Schema)));
                }
                (Value::Object(_), Position::Schemas) => {
                    // The same value, as the schema it is: counted there.
                    size -= 1;
                    stack.push((value, Position::Schema));
                }
                (Value::Object(map), Position::Data) => {
                    stack.extend(map.values().map(|child| (child, Position::Data)));
                }
                (Value::Array(items), _) => {
                    stack.extend(items.iter().map(|item| (item, Position::Data)));
                }
                _ => {}
            }
            if size > schema_caps::EXPANDED_NODES {
                return Err(format!(
                    "more than {} schema nodes once its `$ref`s are followed (cap `schema_expanded_nodes`)",
                    schema_caps::EXPANDED_NODES
                ));
            }
        }
        known.insert(pointer, Some(size));
        Ok(size)
    }
    size_of(schema, "#", &mut HashMap::new())
}

/// The compiled schemas of one plugin, by telemetry name.
#[derive(Default)]
pub struct PluginSchemas {
    by_name: HashMap<String, jsonschema::Validator>,
}

impl PluginSchemas {
    /// Checks the schemas a plugin declared against [`schema_caps`], then compiles them.
    pub fn compile(schemas: &[wit::TelemetrySchema]) -> Result<Self, SchemaError> {
        let mut by_name = HashMap::new();
        let mut total_bytes = 0usize;
        let mut patterns = 0usize;
        for declared in schemas {
            let error = |message: String| SchemaError {
                name: crate::guest_text::shown(&declared.name),
                message,
            };
            let bytes = declared.schema.len();
            if bytes > schema_caps::SCHEMA_BYTES {
                return Err(error(format!(
                    "{bytes} bytes, over {} (cap `schema_bytes`)",
                    schema_caps::SCHEMA_BYTES
                )));
            }
            total_bytes += bytes;
            if total_bytes > schema_caps::TOTAL_BYTES {
                return Err(error(format!(
                    "the plugin's schemas take more than {} bytes together (cap `schemas_total_bytes`)",
                    schema_caps::TOTAL_BYTES
                )));
            }
            let schema: Value = serde_json::from_str(&declared.schema)
                .map_err(|e| error(format!("not JSON: {e}")))?;
            patterns += check_shape(&schema).map_err(error)?.patterns;
            if patterns > schema_caps::PATTERNS {
                return Err(error(format!(
                    "the plugin's schemas hold more than {} patterns together (cap `patterns`)",
                    schema_caps::PATTERNS
                )));
            }
            let validator = compile(&schema).map_err(error)?;
            if by_name.insert(declared.name.clone(), validator).is_some() {
                return Err(error("declared twice".into()));
            }
        }
        Ok(Self { by_name })
    }
}

/// The CPU time the calling thread has used so far.
fn thread_cpu_time() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; the thread CPU clock exists on
    // every Linux and BSD. On failure the time stays 0, so no budget is ever spent.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    std::time::Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
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
        // CPU time of this thread, not wall time: a busy machine that sets the pipeline
        // thread aside must not cost a healthy plugin its telemetry.
        let started = thread_cpu_time();
        let budget = std::time::Duration::from_millis(limits.cpu_ms_per_call);
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
            } else if thread_cpu_time().saturating_sub(started) > budget {
                Some(Rejection::ValidationBudget {
                    limit_ms: limits.cpu_ms_per_call,
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

    /// Compiles one schema and returns the refusal's message.
    fn refusal(schema: &str) -> String {
        match PluginSchemas::compile(&[wit::TelemetrySchema {
            name: "x".into(),
            schema: schema.into(),
        }]) {
            Ok(_) => panic!("accepted: {}", &schema[..schema.len().min(200)]),
            Err(error) => error.message,
        }
    }

    /// `{"$defs":{"a0":{"$ref":"#/$defs/a1"},...,"aN":{"type":"object"}},"$ref":"#/$defs/a0"}`
    fn ref_chain(links: usize) -> String {
        let defs: Vec<String> = (0..links)
            .map(|i| format!(r##""a{i}":{{"$ref":"#/$defs/a{}"}}"##, i + 1))
            .collect();
        format!(
            r##"{{"$defs":{{{},"a{links}":{{"type":"object"}}}},"$ref":"#/$defs/a0"}}"##,
            defs.join(",")
        )
    }

    #[test]
    fn references_must_stay_inside_the_schema() {
        for target in [
            "https://example.com/s.json",
            "file:///etc/passwd",
            "/etc/passwd",
            "other.json#/a",
            "#anchor",
        ] {
            let message = refusal(&format!(r#"{{"$ref":"{target}"}}"#));
            assert!(
                message.contains("reaches outside the schema"),
                "{target}: {message}"
            );
        }
        assert!(refusal(r##"{"$dynamicRef":"#x"}"##).contains("`$dynamicRef` is not supported"));
        assert!(
            refusal(r#"{"properties":{"a":{"$id":"https://example.com/a"}}}"#)
                .contains("`$id` below the schema's root")
        );
        assert!(refusal(r#"{"$schema":"https://example.com/meta"}"#).contains("`$schema`"));
        assert!(refusal(r##"{"$ref":"#/nowhere"}"##).contains("points at nothing"));
    }

    #[test]
    fn a_ref_chain_is_capped_and_a_cycle_refused() {
        PluginSchemas::compile(&[wit::TelemetrySchema {
            name: "x".into(),
            schema: ref_chain(schema_caps::REFS - 1),
        }])
        .expect("a chain under the cap compiles");
        assert!(refusal(&ref_chain(schema_caps::REFS)).contains("cap `schema_refs`"));
        // The attack that overflowed the host's stack: refused by size before it is parsed.
        assert!(refusal(&ref_chain(100_000)).contains("cap `schema_bytes`"));
        assert!(
            refusal(r##"{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}"##)
                .contains("`$ref` cycle")
        );
        assert!(refusal(r##"{"items":{"$ref":"#"}}"##).contains("`$ref` cycle"));
    }

    #[test]
    fn refs_that_multiply_are_capped_by_their_expanded_size() {
        // Each level refers to the next twice: 2^20 nodes once expanded, from 60 lines.
        let levels = 20;
        let defs: Vec<String> = (0..levels)
            .map(|i| {
                format!(
                    r##""l{i}":{{"anyOf":[{{"$ref":"#/$defs/l{n}"}},{{"$ref":"#/$defs/l{n}"}}]}}"##,
                    n = i + 1
                )
            })
            .collect();
        let schema = format!(
            r##"{{"$defs":{{{},"l{levels}":{{"type":"object"}}}},"$ref":"#/$defs/l0"}}"##,
            defs.join(",")
        );
        assert!(refusal(&schema).contains("cap `schema_expanded_nodes`"));
    }

    #[test]
    fn deep_large_and_many_schemas_are_refused_by_their_caps() {
        let nested =
            |depth: usize| format!("{}{{}}{}", r#"{"not":"#.repeat(depth), "}".repeat(depth));
        PluginSchemas::compile(&[wit::TelemetrySchema {
            name: "x".into(),
            schema: nested(schema_caps::DEPTH - 2),
        }])
        .expect("nesting under the cap compiles");
        assert!(refusal(&nested(schema_caps::DEPTH)).contains("cap `schema_depth`"));
        assert!(refusal(&nested(5_000)).contains("not JSON"));
        let wide = format!("[{}]", vec!["1"; schema_caps::NODES].join(","));
        assert!(refusal(&format!(r#"{{"enum":{wide}}}"#)).contains("cap `schema_nodes`"));
        let big = format!(
            r#"{{"description":"{}"}}"#,
            "x".repeat(schema_caps::SCHEMA_BYTES)
        );
        assert!(refusal(&big).contains("cap `schema_bytes`"));
        let each = format!(r#"{{"description":"{}"}}"#, "x".repeat(60 * 1024));
        let five: Vec<wit::TelemetrySchema> = (0..5)
            .map(|i| wit::TelemetrySchema {
                name: format!("s{i}"),
                schema: each.clone(),
            })
            .collect();
        let error = PluginSchemas::compile(&five).err().expect("over the total");
        assert!(
            error.message.contains("cap `schemas_total_bytes`"),
            "{error}"
        );
        assert_eq!(error.name, "s4");
    }

    #[test]
    fn definitions_count_wherever_a_ref_can_reach_them() {
        // A level that refers to the next twice, 20 deep: 2^20 nodes once expanded.
        let defs: Vec<String> = (0..20)
            .map(|i| {
                format!(
                    r##""l{i}":{{"anyOf":[{{"$ref":"#/$defs/l{n}"}},{{"$ref":"#/$defs/l{n}"}}]}}"##,
                    n = i + 1
                )
            })
            .collect();
        let defs = format!(r#"{{{},"l20":{{"type":"string"}}}}"#, defs.join(","));
        // Used from a property whose *name* is `definitions` (not the keyword).
        let named = format!(
            r##"{{"$defs":{defs},"properties":{{"definitions":{{"$ref":"#/$defs/l0"}}}}}}"##
        );
        assert!(refusal(&named).contains("cap `schema_expanded_nodes`"));
        // Reached through a %-escaped pointer, which the checker and the validator could
        // read differently: refused outright.
        let escaped =
            format!(r##"{{"$defs":{defs},"%24defs":{{"l0":{{}}}},"$ref":"#/%24defs/l0"}}"##);
        assert!(refusal(&escaped).contains("without %-escapes"));
    }

    #[test]
    fn patterns_are_capped_per_plugin() {
        let properties: Vec<String> = (0..=schema_caps::PATTERNS)
            .map(|i| format!(r#""p{i}":{{"pattern":"(\\w{{100}}){{40}}{i}"}}"#))
            .collect();
        let schema = format!(r#"{{"properties":{{{}}}}}"#, properties.join(","));
        assert!(refusal(&schema).contains("cap `patterns`"));
        let split: Vec<wit::TelemetrySchema> = (0..2)
            .map(|half| wit::TelemetrySchema {
                name: format!("s{half}"),
                schema: format!(
                    r#"{{"patternProperties":{{{}}}}}"#,
                    (0..40)
                        .map(|i| format!(r#""^a{half}{i}$":{{}}"#))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            })
            .collect();
        let error = PluginSchemas::compile(&split)
            .err()
            .expect("80 patterns in all");
        assert!(error.message.contains("cap `patterns`"), "{error}");
    }

    #[test]
    fn a_calls_validation_stops_at_its_time_budget() {
        // Every array value goes through 40 refs to a 100-branch `anyOf`: about 4,000 schema
        // nodes per value, well over a millisecond for an item of 2,000 values.
        let branches = vec![r#"{"type":"string"}"#; 100].join(",");
        let refs = vec![r##"{"$ref":"#/$defs/a"}"##; 40].join(",");
        let schema = format!(
            r#"{{"$defs":{{"a":{{"not":{{"anyOf":[{branches}]}}}}}},"properties":{{"v":{{"items":{{"allOf":[{refs}]}}}}}}}}"#
        );
        let schemas = PluginSchemas::compile(&[wit::TelemetrySchema {
            name: "heavy".into(),
            schema,
        }])
        .unwrap();
        let values = vec!["1"; 2_000].join(",");
        let items: Vec<wit::Telemetry> = (0..5)
            .map(|_| item("heavy", &format!(r#"{{"v":[{values}]}}"#)))
            .collect();
        let limits = Limits {
            cpu_ms_per_call: 1,
            ..Limits::default()
        };
        let mut labels = Vec::new();
        Validator::new().check_call(items, &schemas, &limits, |outcome| {
            labels.push(outcome.map_or_else(|rejected| rejected.reason.label(), |_| "valid"));
        });
        assert_eq!(labels[0], "valid", "the first item is always validated");
        assert_eq!(labels[1..], ["validation_budget"; 4]);
    }

    #[test]
    fn patterns_run_on_a_linear_time_engine() {
        // A backreference needs backtracking: the linear engine refuses it at load.
        let message = refusal(r#"{"properties":{"t":{"pattern":"^(a|aa)+\\1?$"}}}"#);
        assert!(
            message.contains("pattern") || message.contains("regex"),
            "{message}"
        );
        // Without one, the classic catastrophic pattern compiles and matches in linear time.
        let schemas = PluginSchemas::compile(&[wit::TelemetrySchema {
            name: "t".into(),
            schema: r#"{"properties":{"t":{"type":"string","pattern":"^(a|aa)+$"}}}"#.into(),
        }])
        .unwrap();
        let text = format!(r#"{{"t":"{}b"}}"#, "a".repeat(10_000));
        let rejected = Validator::new()
            .check_item(item("t", &text), &schemas)
            .unwrap_err();
        assert_eq!(rejected.reason.label(), "schema");
        // A pattern past the compiled-size cap is refused too.
        let huge = format!(r#"{{"pattern":"(\\w{{100}}){{{}}}"}}"#, 1000);
        assert!(refusal(&huge).contains("pattern") || refusal(&huge).contains("regex"));
    }
}
