//! Locust's `StatsEntry.to_dict()` and `StatsError.to_dict()`, computed from a stats snapshot
//! the way Locust computes them, types included: Python writes `0` for an int and `0.0` for a
//! float, and a dashboard or a Loki filter can tell them apart.

use serde_json::{Map, Number, Value};
use swarmtel_guest::{EndpointStats, ErrorStats};

/// A Python float as JSON (`null` where Python's json would write `NaN`/`Infinity`, which
/// is not JSON).
pub fn float(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// A response-time key as Locust holds it: an `int` for a whole number of milliseconds (its
/// own rounding), a `float` for a fractional key (a custom rounding function).
pub fn key(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Value::from(value as i64)
    } else {
        float(value)
    }
}

/// How many characters Python's `str(float)` has: shortest round-trip digits, fixed notation
/// from 1e-4 to 1e16 with at least one decimal (`12.0`), scientific outside it (`1e-05`).
pub fn python_float_repr_len(value: f64) -> usize {
    if !value.is_finite() {
        // `nan`, `inf`, `-inf`
        return if value == f64::NEG_INFINITY { 4 } else { 3 };
    }
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-4..1e16).contains(&magnitude) {
        let text = format!("{value}");
        return if text.contains('.') {
            text.len()
        } else {
            text.len() + 2
        };
    }
    let text = format!("{value:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits = exponent.unsigned_abs().to_string().len().max(2);
    mantissa.len() + 2 + digits
}

/// Locust's `proper_round(value)`: `round(value + 10 ** (-len(str(value)) - 1), 0)`, a float
/// (half up in practice: the tiny addition breaks Python's half-even ties upwards).
pub fn proper_round(value: f64) -> f64 {
    let nudge = 10f64.powf(-(python_float_repr_len(value) as f64) - 1.0);
    (value + nudge).round_ties_even()
}

/// Locust's `calculate_response_time_percentile`: the smallest key such that at most
/// `int(count * percent)` requests are slower; 0 for an empty histogram.
pub fn percentile(response_times: &[(f64, u64)], count: u64, percent: f64) -> Option<f64> {
    let allowed_slower = (count as f64 * percent) as u64;
    let mut processed = 0u64;
    let mut keys: Vec<&(f64, u64)> = response_times.iter().collect();
    keys.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (ms, n) in keys {
        processed = processed.saturating_add(*n);
        if count.saturating_sub(processed) <= allowed_slower {
            return Some(*ms);
        }
    }
    None
}

/// The global times Locust's per-entry rates use: the `Aggregated` row's start time and last
/// request time (`self.stats.start_time`, `self.stats.last_request_timestamp`).
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsClock {
    /// When the stats were last reset.
    pub start_time: Option<f64>,
    /// When the last request was counted.
    pub last_request_time: Option<f64>,
}

impl StatsClock {
    /// The clock of a snapshot whose total is `total`.
    pub fn of(total: &EndpointStats) -> Self {
        Self {
            start_time: total.start_time,
            last_request_time: total.last_request_time,
        }
    }

    /// `count` per second from the start to the last request, as `total_rps` computes it: 0.0
    /// without either time (Python's falsy 0 included) or with no time between them.
    fn per_second(&self, count: u64) -> f64 {
        match (self.start_time, self.last_request_time) {
            (Some(start), Some(last)) if start != 0.0 && last != 0.0 && last != start => {
                count as f64 / (last - start)
            }
            _ => 0.0,
        }
    }
}

/// `StatsEntry.to_dict()` with locust-telemetry's `add_percentiles`: the fields of one stats
/// row (the `Aggregated` row's method is `""`, as Locust's).
pub fn entry_fields(entry: &EndpointStats, clock: StatsClock) -> Map<String, Value> {
    // Requests with a response time: Locust's `num_requests - num_none_requests`.
    let timed: u64 = entry.response_times.iter().map(|(_, n)| *n).sum();
    let mut row = Map::new();
    row.insert("method".into(), entry.request_type.clone().into());
    row.insert("name".into(), entry.name.clone().into());
    row.insert("num_requests".into(), entry.num_requests.into());
    row.insert("num_failures".into(), entry.num_failures.into());
    // Locust's min is None before the first timed request: 0, an int.
    row.insert(
        "min_response_time".into(),
        if timed == 0 {
            Value::from(0)
        } else {
            float(proper_round(entry.min_response_time_ms))
        },
    );
    row.insert(
        "max_response_time".into(),
        float(proper_round(entry.max_response_time_ms)),
    );
    // current_rps is the int 0 until the stats saw a request, then a float.
    let current = |value: f64| {
        if clock.last_request_time.is_none() {
            Value::from(0)
        } else {
            float(value)
        }
    };
    row.insert("current_rps".into(), current(entry.current_rps));
    row.insert(
        "current_fail_per_sec".into(),
        current(entry.current_fail_per_sec),
    );
    row.insert(
        "avg_response_time".into(),
        float(if timed == 0 {
            0.0
        } else {
            entry.total_response_time_ms / timed as f64
        }),
    );
    row.insert("median_response_time".into(), median(entry, timed));
    row.insert(
        "total_rps".into(),
        float(clock.per_second(entry.num_requests)),
    );
    row.insert(
        "total_fail_per_sec".into(),
        float(clock.per_second(entry.num_failures)),
    );
    row.insert(
        "avg_content_length".into(),
        if entry.num_requests == 0 {
            Value::from(0)
        } else {
            float(entry.total_content_length as f64 / entry.num_requests as f64)
        },
    );
    for (field, percent) in [("percentile_95", 0.95), ("percentile_99", 0.99)] {
        let value = percentile(&entry.response_times, timed, percent).map_or(Value::from(0), key);
        row.insert(field.into(), value);
    }
    row
}

/// `median_response_time`: the 50th percentile key, kept between the exact min and max.
fn median(entry: &EndpointStats, timed: u64) -> Value {
    if entry.response_times.is_empty() {
        return Value::from(0);
    }
    let median = percentile(&entry.response_times, timed, 0.5).unwrap_or(0.0);
    if median > entry.max_response_time_ms {
        float(entry.max_response_time_ms)
    } else if timed > 0 && median < entry.min_response_time_ms {
        float(entry.min_response_time_ms)
    } else {
        key(median)
    }
}

/// `StatsError.to_dict()` with `add_percentiles` (which adds empty percentiles to it).
pub fn error_fields(error: &ErrorStats) -> Map<String, Value> {
    let mut row = Map::new();
    row.insert("method".into(), error.request_type.clone().into());
    row.insert("name".into(), error.name.clone().into());
    row.insert("error".into(), error.error.clone().into());
    row.insert("occurrences".into(), error.occurrences.into());
    row.insert(
        "first_seen".into(),
        error.first_seen.map_or(Value::Null, float),
    );
    row.insert(
        "last_seen".into(),
        error.last_seen.map_or(Value::Null, float),
    );
    row.insert("percentile_95".into(), "".into());
    row.insert("percentile_99".into(), "".into());
    row
}
