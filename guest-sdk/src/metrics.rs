//! Metric points a recorder hands back beside its telemetry (contract 0.2.0): counters,
//! gauges and Locust response-time histograms, each with a name, unit, description and
//! attributes. The host merges every call's and every node's points into one series per name
//! and attribute set and exports them through its metrics outputs (Prometheus, OTLP).

use std::collections::BTreeMap;

use crate::__private::bindings::swarmtel::telemetry::types as wit;

/// The value of a metric attribute: text, an integer or a boolean.
pub use wit::AttributeValue;

impl From<&str> for AttributeValue {
    fn from(text: &str) -> Self {
        AttributeValue::Text(text.to_owned())
    }
}

impl From<String> for AttributeValue {
    fn from(text: String) -> Self {
        AttributeValue::Text(text)
    }
}

impl From<i64> for AttributeValue {
    fn from(number: i64) -> Self {
        AttributeValue::Integer(number)
    }
}

impl From<u16> for AttributeValue {
    fn from(number: u16) -> Self {
        AttributeValue::Integer(i64::from(number))
    }
}

impl From<bool> for AttributeValue {
    fn from(flag: bool) -> Self {
        AttributeValue::Boolean(flag)
    }
}

/// A metric's name, unit and description: make it once, report its points with
/// [`Output::add_counter`](crate::Output::add_counter) and friends.
///
/// A name is lower-case letters, digits, `_` and `.`, starting with a letter, at most 128
/// bytes (`checkout.items`); the host rejects others, and names starting `swarmtel`.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub(crate) name: String,
    pub(crate) unit: String,
    pub(crate) description: String,
}

impl Metric {
    /// A metric without unit or description.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            unit: String::new(),
            description: String::new(),
        }
    }

    /// Its unit in UCUM, such as `ms`, `By` or `1`.
    pub fn unit(mut self, unit: &str) -> Self {
        self.unit = unit.to_owned();
        self
    }

    /// One line on what it measures.
    pub fn description(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }

    /// The metric's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn point(
        &self,
        attributes: &[(&str, AttributeValue)],
        value: wit::MetricValue,
    ) -> wit::MetricPoint {
        wit::MetricPoint {
            name: self.name.clone(),
            unit: self.unit.clone(),
            description: self.description.clone(),
            attributes: attributes
                .iter()
                .map(|(key, value)| wit::Attribute {
                    key: (*key).to_owned(),
                    value: value.clone(),
                })
                .collect(),
            value,
        }
    }
}

/// Response times in Locust's rounded buckets, to report with
/// [`Output::record_response_times`](crate::Output::record_response_times): the host merges
/// the buckets of every call and node exactly, as Locust's master merges its workers'.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseTimes {
    buckets: BTreeMap<u32, u64>,
    sum_ms: f64,
}

impl ResponseTimes {
    /// No observations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one response time, rounded as Locust rounds it. A negative or NaN time counts
    /// as 0 ms and adds nothing to the sum; one past `u32::MAX` ms counts in the last bucket.
    pub fn observe(&mut self, response_time_ms: f64) {
        let rounded = u32::try_from(round_response_time(response_time_ms)).unwrap_or(u32::MAX);
        *self.buckets.entry(rounded).or_insert(0) += 1;
        if response_time_ms.is_finite() && response_time_ms > 0.0 {
            self.sum_ms += response_time_ms;
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// Whether nothing was observed.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// The sum of the exact response times, in milliseconds.
    pub fn sum_ms(&self) -> f64 {
        self.sum_ms
    }

    /// The (rounded milliseconds, count) buckets, ascending.
    pub fn buckets(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.buckets.iter().map(|(&ms, &count)| (ms, count))
    }

    /// Forgets every observation (after reporting them: the host adds up what each report
    /// carries).
    pub fn clear(&mut self) {
        self.buckets.clear();
        self.sum_ms = 0.0;
    }

    pub(crate) fn to_wit(&self) -> wit::ResponseTimes {
        wit::ResponseTimes {
            buckets: self.buckets().collect(),
            sum_ms: self.sum_ms,
        }
    }
}

/// Locust's rounding of a response time for its histogram (`StatsEntry._log_response_time`):
/// to 1 ms below 100 ms, to 10 ms below 1 s, to 100 ms below 10 s, to 1 s above, with
/// Python's `round`: a half goes to the even neighbour (12.5 → 12, 145 → 140).
pub fn round_response_time(response_time_ms: f64) -> u64 {
    // `max` also turns NaN into 0.
    let ms = response_time_ms.max(0.0);
    let rounded = if ms < 100.0 {
        ms.round_ties_even()
    } else if ms < 1_000.0 {
        (ms / 10.0).round_ties_even() * 10.0
    } else if ms < 10_000.0 {
        (ms / 100.0).round_ties_even() * 100.0
    } else {
        (ms / 1_000.0).round_ties_even() * 1_000.0
    };
    // Saturates past u64 (and at infinity).
    rounded as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs and what Locust 2.47's `locust.stats.bucket_response_time` returned for them,
    /// printed by CPython 3.11 (ties round to even, as Python's `round` does: 12.5 is 12,
    /// 145 is 140, 1050 is 1000).
    const LOCUST_ROUNDING: &[(f64, u64)] = &[
        (0.0, 0),
        (0.4999999999999999, 0),
        (0.5, 0),
        (1.5, 2),
        (2.5, 2),
        (12.5, 12),
        (13.5, 14),
        (99.49999999999999, 99),
        (99.5, 100),
        (100.0, 100),
        (105.0, 100),
        (115.0, 120),
        (125.0, 120),
        (145.0, 140),
        (145.00000000000003, 150),
        (155.0, 160),
        (994.9999999999999, 990),
        (995.0, 1000),
        (999.9, 1000),
        (1050.0, 1000),
        (1150.0, 1200),
        (1250.0, 1200),
        (9950.0, 10000),
        (10500.0, 10000),
        (11500.0, 12000),
        (12500.0, 12000),
        (58760.0, 59000),
        (3432.0, 3400),
        (1234.5678, 1200),
    ];

    #[test]
    fn rounds_like_locust_ties_to_even_included() {
        for &(ms, locust) in LOCUST_ROUNDING {
            assert_eq!(round_response_time(ms), locust, "{ms}");
        }
        // What Locust never sees but a recorder might: not a panic, 0.
        assert_eq!(round_response_time(-3.0), 0);
        assert_eq!(round_response_time(f64::NAN), 0);
    }

    #[test]
    fn response_times_count_rounded_buckets_and_the_exact_sum() {
        let mut times = ResponseTimes::new();
        for ms in [12.5, 12.4, 145.0, 147.0] {
            times.observe(ms);
        }
        assert_eq!(
            times.buckets().collect::<Vec<_>>(),
            [(12, 2), (140, 1), (150, 1)]
        );
        assert_eq!(times.count(), 4);
        assert!((times.sum_ms() - 316.9).abs() < 1e-9);
        times.clear();
        assert!(times.is_empty());
        assert_eq!(times.sum_ms(), 0.0);
    }
}
