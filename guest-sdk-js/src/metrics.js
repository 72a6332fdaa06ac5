/**
 * Metric points: counters, gauges and Locust response-time histograms a recorder hands the
 * host beside the telemetry of a call, exported by its metrics outputs (Prometheus, OTLP).
 *
 * A recorder reports them with `this.addCounter`, `this.setGauge` and
 * `this.recordResponseTimes`. Points of one call that name the same series (name, kind and
 * attributes) are merged into one: counter increments add up, the last gauge value wins,
 * response times add up. The SDK throws a {@link PluginError} at the call for what is plainly
 * wrong (a negative counter, NaN, a boolean passed as a number, an attribute that is not
 * text, an integer or a boolean); the host checks the rest (names, units, attribute keys, how
 * many series a plugin may create).
 *
 * @module
 */

import { PluginError } from "./errors.js";

/** The largest counter increment (the WIT's `u64`). */
const U64_MAX = 2n ** 64n - 1n;
/**
 * The response times a bucket holds are below this many milliseconds (about 49.7 days): from
 * here on they round past the largest bucket, the WIT's `u32`.
 */
const LIMIT_MS = 4_294_967_500;
const S64_MIN = -(2n ** 63n);
const S64_MAX = 2n ** 63n - 1n;
const FLOAT_MARK = Symbol.for("swarmtel-recorder.float");
/** Marks a {@link ResponseTimes} of any copy of this package (a bundled recorder has its own). */
const RESPONSE_TIMES_MARK = Symbol.for("swarmtel-recorder.response-times");

/**
 * Python's `round(x)` for a double: to the nearest integer, a half to the even neighbour
 * (12.5 → 12, 13.5 → 14, 2.5 → 2). `Math.round` takes a half up instead.
 * @param {number} x
 */
export function roundHalfEven(x) {
  const floor = Math.floor(x);
  const fraction = x - floor; // exact for every double
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * Python's `round(value, -digits)` for a finite `value >= 10 * step` below 2^53: the multiple of
 * `step` (a power of ten) nearest to the exact value of the double, a half to the even
 * multiple. Works on the exact remainder, not on `value / step`, which may round onto a tie.
 * @param {number} value
 * @param {number} step
 */
function roundToStep(value, step) {
  let quotient = Math.floor(value / step);
  // Both products are exact below 2^53, and value - quotient * step too (the two are within
  // a factor of two, since value >= 10 * step).
  let rest = value - quotient * step;
  if (rest < 0) {
    quotient -= 1;
    rest += step;
  } else if (rest >= step) {
    quotient += 1;
    rest -= step;
  }
  const twice = 2 * rest;
  if (twice > step || (twice === step && quotient % 2 !== 0)) {
    quotient += 1;
  }
  return quotient * step;
}

/**
 * Locust's `bucket_response_time`: a response time in milliseconds rounded to about two
 * significant digits with Python's `round` (a half to the even neighbour): to 1 ms below
 * 100 ms, to 10 ms below 1 s, to 100 ms below 10 s, to 1 s above (147 → 150, 145 → 140,
 * 3432 → 3400, 58760 → 59000).
 * @param {number} responseTimeMs finite, >= 0
 */
export function bucketResponseTime(responseTimeMs) {
  if (responseTimeMs < 100) return roundHalfEven(responseTimeMs);
  if (responseTimeMs < 1_000) return roundToStep(responseTimeMs, 10);
  if (responseTimeMs < 10_000) return roundToStep(responseTimeMs, 100);
  return roundToStep(responseTimeMs, 1_000);
}

/**
 * Response times counted in Locust's rounded buckets, as a Locust `StatsEntry` counts them, so
 * histograms from every call, node and worker merge exactly, as Locust's master merges them.
 *
 * `observe(ms)` counts one time; `buckets` maps the rounded milliseconds to counts, `sumMs` is
 * the sum of the exact (unrounded) times. Hand it to `this.recordResponseTimes(name, times)`,
 * which copies it, then `reset()` it: each point holds the times observed since the series
 * was last reported.
 *
 * A time is a number of milliseconds from 0 to below `ResponseTimes.LIMIT_MS` (about 49.7
 * days, where the rounded time no longer fits the host's 32-bit bucket); anything else throws
 * a {@link PluginError}.
 */
export class ResponseTimes {
  /** Times from this many milliseconds on do not fit a bucket. */
  static LIMIT_MS = LIMIT_MS;

  constructor() {
    /** Rounded milliseconds → how many times fell there. @type {Map<number, number>} */
    this.buckets = new Map();
    /** The sum of the exact response times, in milliseconds. */
    this.sumMs = 0;
  }

  /**
   * Counts one response time, in milliseconds (from 0 to below `ResponseTimes.LIMIT_MS`).
   * @param {number} responseTimeMs
   */
  observe(responseTimeMs) {
    if (typeof responseTimeMs !== "number" || !(responseTimeMs >= 0 && responseTimeMs < LIMIT_MS)) {
      throw new PluginError(`ResponseTimes.observe: a response time is a number of milliseconds from 0 to below ${LIMIT_MS}, got ${show(responseTimeMs)}`);
    }
    const bucket = bucketResponseTime(responseTimeMs);
    this.buckets.set(bucket, (this.buckets.get(bucket) ?? 0) + 1);
    this.sumMs += responseTimeMs;
  }

  /** Marks response times of every copy of this package. */
  get [RESPONSE_TIMES_MARK]() {
    return true;
  }

  /** Forgets every time observed. */
  reset() {
    this.buckets = new Map();
    this.sumMs = 0;
  }

  /** How many times were observed. */
  get count() {
    let count = 0;
    for (const n of this.buckets.values()) count += n;
    return count;
  }
}

/** @param {unknown} value */
function show(value) {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (value !== null && typeof value === "object") return value.constructor?.name ?? "an object";
  return String(value);
}

/**
 * @param {string} call
 * @param {string} what
 * @param {unknown} value
 * @returns {string}
 */
function text(call, what, value) {
  if (typeof value !== "string") {
    throw new PluginError(`${call}: ${what} must be a string, got ${show(value)}`);
  }
  return value;
}

/**
 * The WIT attributes of a point: a plain object or a Map of text, integers and booleans.
 * @param {string} call
 * @param {unknown} attributes
 * @returns {{ key: string, value: { tag: "text" | "integer" | "boolean", val: string | bigint | boolean } }[]}
 */
function witAttributes(call, attributes) {
  if (attributes === undefined || attributes === null) {
    return [];
  }
  if (typeof attributes !== "object" || Array.isArray(attributes)) {
    throw new PluginError(`${call}: attributes must be an object of strings, integers and booleans, got ${show(attributes)}`);
  }
  const entries = attributes instanceof Map ? [...attributes] : Object.entries(attributes);
  return entries.map(([key, value]) => {
    if (typeof key !== "string") {
      throw new PluginError(`${call}: attribute key ${show(key)} is not a string`);
    }
    switch (typeof value) {
      case "string":
        return { key, value: { tag: "text", val: value } };
      case "boolean":
        return { key, value: { tag: "boolean", val: value } };
      case "number":
        if (Number.isSafeInteger(value)) {
          return { key, value: { tag: "integer", val: BigInt(value) } };
        }
        break;
      case "bigint":
        if (value >= S64_MIN && value <= S64_MAX) {
          return { key, value: { tag: "integer", val: value } };
        }
        break;
      default:
        break;
    }
    throw new PluginError(`${call}: attribute ${key}: a value is a string, an integer (a safe number or a 64-bit BigInt) or a boolean, got ${show(value)}`);
  });
}

/**
 * The metric points a recorder reported since its last call, one per series. Not API.
 */
export class MetricBuffer {
  constructor() {
    /** @type {Map<string, any>} series key → WIT `metric-point` under construction */
    this.points = new Map();
  }

  /**
   * The point of a series, created when new.
   * @param {string} call
   * @param {unknown} name
   * @param {"counter" | "gauge" | "response-times"} kind
   * @param {unknown} unit
   * @param {{ description?: unknown, attributes?: unknown }} options
   * @param {any} initial the value of a new point
   * @returns {{ point: any, fresh: boolean }}
   */
  slot(call, name, kind, unit, options, initial) {
    text(call, "the name", name);
    const where = `${call} ${name}`;
    const description = text(where, "description", options.description ?? "");
    const attributes = witAttributes(where, options.attributes);
    text(where, "unit", unit);
    const identity = attributes
      .map(({ key, value }) => [key, value.tag, String(value.val)])
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const key = JSON.stringify([name, kind, identity]);
    const found = this.points.get(key);
    if (found !== undefined) {
      return { point: found, fresh: false };
    }
    const point = { name, unit, description, attributes, value: { tag: kind, val: initial } };
    this.points.set(key, point);
    return { point, fresh: true };
  }

  /**
   * @param {unknown} name
   * @param {unknown} value
   * @param {{ unit?: unknown, description?: unknown, attributes?: unknown }} options
   */
  counter(name, value, options) {
    let increment;
    if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) {
      increment = BigInt(value);
    } else if (typeof value === "bigint" && value >= 0n && value <= U64_MAX) {
      increment = value;
    } else {
      throw new PluginError(
        `addCounter ${name}: an increment is a whole number >= 0 (a BigInt past 2^53), got ${show(value)}`,
      );
    }
    const { point, fresh } = this.slot("addCounter", name, "counter", options.unit ?? "", options, increment);
    if (!fresh) {
      const total = point.value.val + increment;
      if (total > U64_MAX) {
        throw new PluginError(`addCounter ${name}: the increments of one call add up past 2^64 - 1`);
      }
      point.value.val = total;
    }
  }

  /**
   * @param {unknown} name
   * @param {unknown} value
   * @param {{ unit?: unknown, description?: unknown, attributes?: unknown }} options
   */
  gauge(name, value, options) {
    const number = value !== null && typeof value === "object" && /** @type {any} */ (value)[FLOAT_MARK] === true
      ? /** @type {any} */ (value).value
      : value;
    if (typeof number !== "number" || !Number.isFinite(number)) {
      throw new PluginError(`setGauge ${name}: a value is a finite number, got ${show(number)}`);
    }
    const { point, fresh } = this.slot("setGauge", name, "gauge", options.unit ?? "", options, number);
    if (!fresh) {
      point.value.val = number;
    }
  }

  /**
   * @param {unknown} name
   * @param {unknown} times
   * @param {{ description?: unknown, attributes?: unknown }} options
   */
  responseTimes(name, times, options) {
    if (times === null || typeof times !== "object" || /** @type {any} */ (times)[RESPONSE_TIMES_MARK] !== true) {
      throw new PluginError(`recordResponseTimes ${name}: times must be a ResponseTimes (new ResponseTimes()), got ${show(times)}`);
    }
    const { point } = this.slot("recordResponseTimes", name, "response-times", "ms", options, { buckets: new Map(), sumMs: 0 });
    const merged = point.value.val;
    for (const [ms, count] of /** @type {ResponseTimes} */ (times).buckets) {
      merged.buckets.set(ms, (merged.buckets.get(ms) ?? 0) + count);
    }
    merged.sumMs += /** @type {ResponseTimes} */ (times).sumMs;
  }

  /**
   * The WIT `metric-point`s, in order of first report; the buffer starts over.
   * @returns {any[]}
   */
  take() {
    if (this.points.size === 0) {
      return [];
    }
    const points = [...this.points.values()];
    this.points = new Map();
    for (const point of points) {
      if (point.value.tag === "response-times") {
        const { buckets, sumMs } = point.value.val;
        point.value.val = {
          buckets: [...buckets].sort((a, b) => a[0] - b[0]).map(([ms, count]) => [ms, BigInt(count)]),
          sumMs,
        };
      }
    }
    return points;
  }
}
