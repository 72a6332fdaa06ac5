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

/**
 * Locust's rounding of a response time for its histogram (`StatsEntry._log_time_of_request`):
 * exact below 100 ms, to 10 ms below 1 s, to 100 ms below 10 s, to 1 s above.
 * @param {number} responseTimeMs
 */
export function roundResponseTime(responseTimeMs) {
  const ms = Math.max(responseTimeMs, 0);
  if (ms < 100) return Math.round(ms);
  if (ms < 1_000) return Math.round(ms / 10) * 10;
  if (ms < 10_000) return Math.round(ms / 100) * 100;
  return Math.round(ms / 1_000) * 1_000;
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

/** Milliseconds to three decimals: enough for a dashboard, stable in snapshots. */
function round3(value) {
  return Math.round(value * 1_000) / 1_000;
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
    this.totalBytes = 0;
    this.histogram = new Histogram();
  }

  /**
   * @param {number} responseTimeMs
   * @param {number} responseLength
   */
  record(responseTimeMs, responseLength) {
    this.requests += 1;
    this.totalResponseTimeMs += responseTimeMs;
    this.minResponseTimeMs = Math.min(this.minResponseTimeMs, responseTimeMs);
    this.maxResponseTimeMs = Math.max(this.maxResponseTimeMs, responseTimeMs);
    this.totalBytes += responseLength;
    this.histogram.record(responseTimeMs);
  }

  /** @param {EndpointStats} other */
  merge(other) {
    this.requests += other.requests;
    this.failures += other.failures;
    this.totalResponseTimeMs += other.totalResponseTimeMs;
    this.minResponseTimeMs = Math.min(this.minResponseTimeMs, other.minResponseTimeMs);
    this.maxResponseTimeMs = Math.max(this.maxResponseTimeMs, other.maxResponseTimeMs);
    this.totalBytes += other.totalBytes;
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
      avg_response_time_ms: float(round3(average)),
      min_response_time_ms: float(round3(min)),
      max_response_time_ms: float(round3(this.maxResponseTimeMs)),
      p50_ms: this.histogram.percentile(this.requests, 0.5),
      p90_ms: this.histogram.percentile(this.requests, 0.9),
      p95_ms: this.histogram.percentile(this.requests, 0.95),
      p99_ms: this.histogram.percentile(this.requests, 0.99),
      total_bytes: this.totalBytes,
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

  /** @param {number} index @param {number} responseTimeMs @param {number} responseLength */
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
