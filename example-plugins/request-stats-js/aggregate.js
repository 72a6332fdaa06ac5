// Per-endpoint request statistics, computed the way Locust computes them: a port of the Rust
// request-stats plugin's `aggregate.rs`, number for number, so both plugins write the same
// telemetry for the same events.

import { float } from "swarmtel-recorder";

/**
 * Response times below this many milliseconds are counted in a dense array; slower ones in a
 * map. Locust rounds to 100 ms between 1 s and 10 s, so the array has 280 slots.
 */
const DENSE_LIMIT_MS = 10_000;
const DENSE_SLOTS = 280;

/** 2^64, the first number Rust's `as u64` saturates (to 2^64 - 1). */
const U64_LIMIT = 18_446_744_073_709_551_616;
const U64_MAX = 18_446_744_073_709_551_615n;

/**
 * Python's `round(x)` (Rust's `round_ties_even`): to the nearest integer, a half to the even
 * neighbour (12.5 → 12, 13.5 → 14). Exact for every double: `x - floor(x)` loses nothing.
 * @param {number} x
 */
export function roundTiesEven(x) {
  if (!Number.isFinite(x)) return x;
  const floor = Math.floor(x);
  const fraction = x - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * Rust's `f64::round`: to the nearest integer, a half away from zero. Written out rather than
 * `Math.round` (a half towards +infinity), so every engine gives the Rust plugin's result.
 * @param {number} x
 */
function roundHalfAway(x) {
  if (!Number.isFinite(x)) return x;
  const magnitude = Math.abs(x);
  const floor = Math.floor(magnitude);
  const rounded = magnitude - floor >= 0.5 ? floor + 1 : floor;
  return x < 0 ? -rounded : rounded;
}

/**
 * Locust's rounding of a response time for its histogram (`StatsEntry._log_response_time`):
 * to 1 ms below 100 ms, to 10 ms below 1 s, to 100 ms below 10 s, to 1 s above, with
 * Python's `round`: a half goes to the even neighbour (12.5 → 12, 145 → 140, 1,050 → 1,000).
 * Like the Rust plugin's `as u64`, NaN gives 0 and anything from 2^64 up gives one bucket
 * (2^64, written 2^64 - 1 by {@link u64Json}).
 * @param {number} responseTimeMs
 */
export function roundResponseTime(responseTimeMs) {
  const ms = responseTimeMs > 0 ? responseTimeMs : 0; // NaN and negatives: 0, as f64::max
  let rounded;
  if (ms < 100) rounded = roundTiesEven(ms);
  else if (ms < 1_000) rounded = roundTiesEven(ms / 10) * 10;
  else if (ms < 10_000) rounded = roundTiesEven(ms / 100) * 100;
  else rounded = roundTiesEven(ms / 1_000) * 1_000;
  return rounded >= U64_LIMIT ? U64_LIMIT : rounded;
}

/**
 * A whole number of at most 2^64 as the JSON integer the Rust plugin writes for its `u64`:
 * exact past 2^53 (a BigInt), and 2^64 (the saturated bucket) as 2^64 - 1.
 * @param {number | bigint} value
 */
export function u64Json(value) {
  if (typeof value === "bigint") return value;
  if (value >= U64_LIMIT) return U64_MAX;
  return Number.isSafeInteger(value) ? value : BigInt(value);
}

/**
 * `a + b` as Rust's `u64` addition in a release build (wrapping at 2^64): a number while the
 * sum is safe, else a BigInt.
 * @param {number | bigint} a
 * @param {number | bigint} b
 */
function addU64(a, b) {
  if (typeof a === "number" && typeof b === "number") {
    const sum = a + b;
    if (Number.isSafeInteger(sum)) return sum;
  }
  const exact = BigInt.asUintN(64, BigInt(a) + BigInt(b));
  return exact <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(exact) : exact;
}

/** @param {number} rounded */
function slotOf(rounded) {
  if (rounded < 100) return rounded;
  if (rounded < 1_000) return 100 + (rounded - 100) / 10;
  return 190 + (rounded - 1_000) / 100;
}

/** @param {number} slot */
function msOfSlot(slot) {
  if (slot < 100) return slot;
  if (slot < 190) return 100 + (slot - 100) * 10;
  return 1_000 + (slot - 190) * 100;
}

/** Locust's response-time histogram: rounded milliseconds to counts. */
export class Histogram {
  constructor() {
    this.dense = new Float64Array(DENSE_SLOTS);
    /** @type {Map<number, number>} */
    this.slow = new Map();
  }

  /** @param {number} responseTimeMs */
  record(responseTimeMs) {
    const rounded = roundResponseTime(responseTimeMs);
    if (rounded < DENSE_LIMIT_MS) {
      this.dense[slotOf(rounded)] += 1;
    } else {
      this.slow.set(rounded, (this.slow.get(rounded) ?? 0) + 1);
    }
  }

  /** @param {Histogram} other */
  merge(other) {
    for (let slot = 0; slot < DENSE_SLOTS; slot++) {
      this.dense[slot] += other.dense[slot];
    }
    for (const [ms, count] of other.slow) {
      this.slow.set(ms, (this.slow.get(ms) ?? 0) + count);
    }
  }

  /** (rounded milliseconds, count) pairs, fastest first, without empty buckets. */
  buckets() {
    const buckets = [];
    for (let slot = 0; slot < DENSE_SLOTS; slot++) {
      if (this.dense[slot] > 0) buckets.push([msOfSlot(slot), this.dense[slot]]);
    }
    const slow = [...this.slow].sort((a, b) => a[0] - b[0]);
    return buckets.concat(slow);
  }

  /**
   * Locust's `calculate_response_time_percentile`: the rounded response time below which
   * `percent` (0 to 1) of `total` requests fall.
   * @param {number} total
   * @param {number} percent
   */
  percentile(total, percent) {
    const wanted = Math.trunc(total * percent);
    let processed = 0;
    const buckets = this.buckets();
    for (let i = buckets.length - 1; i >= 0; i--) {
      const [ms, count] = buckets[i];
      processed += count;
      if (Math.max(total - processed, 0) <= wanted) return ms;
    }
    return 0;
  }
}

/**
 * Milliseconds to three decimals: enough for a dashboard, stable in snapshots. A result that
 * is not finite is `null`, as serde_json writes the Rust plugin's infinite `f64`.
 * @param {number} value
 */
function round3(value) {
  const rounded = roundHalfAway(value * 1_000) / 1_000;
  return Number.isFinite(rounded) ? float(rounded) : null;
}

/** Running statistics of one endpoint. */
export class EndpointStats {
  /**
   * @param {string} requestType
   * @param {string} name
   */
  constructor(requestType, name) {
    this.requestType = requestType;
    this.name = name;
    this.requests = 0;
    this.failures = 0;
    this.totalResponseTimeMs = 0;
    this.minResponseTimeMs = Infinity;
    this.maxResponseTimeMs = 0;
    /** @type {number | bigint} */
    this.totalBytes = 0;
    this.histogram = new Histogram();
  }

  /**
   * @param {number} responseTimeMs
   * @param {number | bigint} responseLength exact (a BigInt) past 2^53
   */
  record(responseTimeMs, responseLength) {
    this.requests += 1;
    this.totalResponseTimeMs += responseTimeMs;
    this.minResponseTimeMs = Math.min(this.minResponseTimeMs, responseTimeMs);
    this.maxResponseTimeMs = Math.max(this.maxResponseTimeMs, responseTimeMs);
    this.totalBytes = addU64(this.totalBytes, responseLength);
    this.histogram.record(responseTimeMs);
  }

  /** @param {EndpointStats} other */
  merge(other) {
    this.requests += other.requests;
    this.failures += other.failures;
    this.totalResponseTimeMs += other.totalResponseTimeMs;
    this.minResponseTimeMs = Math.min(this.minResponseTimeMs, other.minResponseTimeMs);
    this.maxResponseTimeMs = Math.max(this.maxResponseTimeMs, other.maxResponseTimeMs);
    this.totalBytes = addU64(this.totalBytes, other.totalBytes);
    this.histogram.merge(other.histogram);
  }

  /**
   * The telemetry fields, as the `request_stats` schema describes; times are floats, as the
   * Rust plugin writes them.
   * @param {boolean} isFinal
   */
  fields(isFinal) {
    const average = this.requests === 0 ? 0 : this.totalResponseTimeMs / this.requests;
    const min = this.requests === 0 ? 0 : this.minResponseTimeMs;
    return {
      request_type: this.requestType,
      endpoint: this.name,
      requests: this.requests,
      failures: this.failures,
      avg_response_time_ms: round3(average),
      min_response_time_ms: round3(min),
      max_response_time_ms: round3(this.maxResponseTimeMs),
      p50_ms: u64Json(this.histogram.percentile(this.requests, 0.5)),
      p90_ms: u64Json(this.histogram.percentile(this.requests, 0.9)),
      p95_ms: u64Json(this.histogram.percentile(this.requests, 0.95)),
      p99_ms: u64Json(this.histogram.percentile(this.requests, 0.99)),
      total_bytes: u64Json(this.totalBytes),
      final: isFinal,
    };
  }
}

/**
 * Compares strings as Rust's `String` ordering does (by UTF-8 bytes), which is the order of
 * their code points (JavaScript's `<` compares UTF-16 units, which differs past U+FFFF).
 * @param {string} a
 * @param {string} b
 */
function compareBytes(a, b) {
  if (a === b) return 0;
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i].codePointAt(0) - y[i].codePointAt(0);
  }
  return x.length - y.length;
}

/** Statistics of every endpoint, indexed by the SDK's stable endpoint id. */
export class RequestStats {
  constructor() {
    /** @type {EndpointStats[]} */
    this.endpoints = [];
  }

  /** How many endpoint ids are known. */
  get endpointCount() {
    return this.endpoints.length;
  }

  /**
   * Makes sure endpoint `index` exists, named as given.
   * @param {number} index
   * @param {string} requestType
   * @param {string} name
   */
  ensureEndpoint(index, requestType, name) {
    while (this.endpoints.length <= index) {
      const next = this.endpoints.length;
      this.endpoints.push(next === index ? new EndpointStats(requestType, name) : new EndpointStats("", ""));
    }
  }

  /** Zeroes every count, keeping the endpoints and their ids (Locust `reset_stats`). */
  reset() {
    this.endpoints = this.endpoints.map((e) => new EndpointStats(e.requestType, e.name));
  }

  /** @param {number} index @param {number} responseTimeMs @param {number | bigint} responseLength */
  record(index, responseTimeMs, responseLength) {
    this.endpoints[index].record(responseTimeMs, responseLength);
  }

  /** @param {number} index */
  recordFailure(index) {
    this.endpoints[index].failures += 1;
  }

  /** The `Aggregated` row over every endpoint. */
  total() {
    const total = new EndpointStats("", "Aggregated");
    for (const endpoint of this.endpoints) total.merge(endpoint);
    return total;
  }

  /**
   * One [message, fields] pair per endpoint that saw requests, ordered by request type and
   * name, then the `Aggregated` row.
   * @param {boolean} isFinal
   */
  report(isFinal) {
    const seen = this.endpoints
      .filter((e) => e.requests > 0)
      .sort((a, b) => compareBytes(a.requestType, b.requestType) || compareBytes(a.name, b.name));
    seen.push(this.total());
    return seen.map((stats) => [
      `${stats.requestType} ${stats.name}: ${stats.requests} requests, ${stats.failures} failures`.trimStart(),
      stats.fields(isFinal),
    ]);
  }
}
