/**
 * Drive a recorder in Node, without building it or running swarmtel: for `node --test`.
 *
 * {@link Harness} feeds one recorder events built by hand; {@link replay} runs an event-stream
 * file (the format `swarmtel replay` reads) through every recorder of a plugin, batched and
 * ticked as the host does it. Both build the batches the host sends and run the same dispatch
 * code the component runs. Both return the telemetry items as an array whose `metrics`
 * property (not enumerable, so `deepEqual` on the array is unchanged) lists the metric points
 * the same calls reported; a point the host would reject throws a {@link MetricRejected}.
 *
 * ```js
 * import { test } from "node:test";
 * import assert from "node:assert/strict";
 * import { Harness } from "swarmtel-recorder/testing";
 * import plugin from "./recorder.js";
 *
 * test("logs CUSTOM_START", () => {
 *   const harness = new Harness(plugin, "custom_telemetry_recorder", "master");
 *   const items = harness.event({ event: "test_start", time: 1 });
 *   assert.equal(items[0].name, "CUSTOM_START");
 * });
 * ```
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

import { RecorderState } from "./dispatch.js";
import { authorLocation } from "./errors.js";
import { mapStack } from "./stack.js";
import { ROLES, describePlugin, optionKeys, registrationOf } from "./plugin.js";

const SDK_SRC = path.dirname(fileURLToPath(import.meta.url));
const REALM = "__swarmtelRecorderRealm";

/**
 * The file of the module that registered `entry` (where `registerPlugin` was called).
 * @param {import("./plugin.js").RegisteredPlugin} entry
 */
function moduleOf(entry) {
  const location = authorLocation(entry.stack);
  return location === undefined ? undefined : location.replace(/:\d+:\d+$/, "");
}

/**
 * A factory of recorder states that each run in a realm of their own (a fresh `vm` context
 * with the recorder module and the SDK loaded anew), as the host gives each recorder
 * instance its own JavaScript engine: module-level variables are not shared. Undefined when
 * the module cannot be loaded that way (its file is unknown, or it needs Node's modules).
 *
 * @param {string | undefined} file the recorder module
 * @returns {((config: any) => RecorderState) | undefined}
 */
function isolatedStates(file) {
  if (file === undefined) {
    return undefined;
  }
  let code;
  try {
    const esbuild = createRequire(import.meta.url)("esbuild");
    const result = esbuild.buildSync({
      bundle: true,
      write: false,
      format: "iife",
      platform: "neutral",
      target: "es2022",
      mainFields: ["module", "main"],
      alias: { "swarmtel-recorder": path.join(SDK_SRC, "index.js") },
      sourcemap: "inline",
      logLevel: "silent",
      stdin: {
        contents: [
          `import { RecorderState } from ${JSON.stringify(path.join(SDK_SRC, "dispatch.js"))};`,
          `import { thePlugin } from ${JSON.stringify(path.join(SDK_SRC, "component.js"))};`,
          `import ${JSON.stringify(file)};`,
          `globalThis.${REALM} = { RecorderState, thePlugin };`,
        ].join("\n"),
        resolveDir: path.dirname(file),
        sourcefile: "swarmtel-isolated-entry.js",
        loader: "js",
      },
    });
    code = result.outputFiles[0].text;
  } catch {
    return undefined;
  }
  // Stacks from the realm point into the bundle: map them back to the files before they
  // reach the test (Node does not apply the bundle's source map to a vm script).
  const marker = "//# sourceMappingURL=data:application/json;base64,";
  const at = code.lastIndexOf(marker);
  const raw = at < 0 ? undefined : JSON.parse(Buffer.from(code.slice(at + marker.length).trim(), "base64").toString("utf8"));
  const map = raw && { sources: raw.sources.map((/** @type {string} */ source) => path.resolve(source)), mappings: raw.mappings };
  const filename = path.join(path.dirname(file), "swarmtel-isolated.js");
  const positions = new RegExp(`${filename.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:(\\d+):(\\d+)`, "g");
  /** @type {<T>(call: () => T) => T} */
  const mapped = (call) => {
    try {
      return call();
    } catch (error) {
      const thrown = /** @type {any} */ (error);
      if (map !== undefined && thrown !== null && typeof thrown === "object" && typeof thrown.stack === "string") {
        try {
          thrown.stack = mapStack(thrown.stack, map, positions);
          if (typeof thrown.location === "string") {
            thrown.location = mapStack(thrown.location, map, positions);
          }
        } catch {
          // a frozen error keeps its stack
        }
      }
      throw error;
    }
  };
  const script = new vm.Script(code.slice(0, at < 0 ? code.length : at), { filename });
  return (config) => {
    const context = vm.createContext({ console, TextEncoder, TextDecoder, URL, URLSearchParams });
    script.runInContext(context);
    const realm = context[REALM];
    const state = mapped(() => new realm.RecorderState(realm.thePlugin(), config));
    return {
      handle: (/** @type {any} */ batch) => mapped(() => state.handle(batch)),
      finish: () => mapped(() => state.finish()),
    };
  };
}

/**
 * One telemetry item a recorder logged, as the host receives it.
 *
 * @typedef {object} TelemetryItem
 * @property {"event" | "metric"} telemetryType
 * @property {string} name the telemetry name
 * @property {string} message
 * @property {Record<string, unknown>} fields the fields, parsed (`{}` when none)
 * @property {string} fieldsJson the fields as the JSON text handed to the host ("" when none)
 */

/**
 * A telemetry item from {@link replay}, with where and when the host would write it: `time`
 * in Unix seconds, and `rfc3339` as the host writes it in the line's `time`.
 *
 * @typedef {TelemetryItem & { node: string, role: string, recorder: string, time: number, rfc3339: string }} ReplayItem
 */

/**
 * A metric point from {@link replay}, with the node, role and recorder that reported it and
 * the event time of its call.
 *
 * @typedef {MetricItem & { node: string, role: string, recorder: string, time: number }} ReplayMetric
 */

/** The last second the host accepts (`ingest::MAX_UNIX_SECONDS`): 9999-12-31T23:59:59Z. */
const MAX_UNIX_SECONDS = 253402300799;

/**
 * Unix seconds as the host writes them (`enrich::format_time`): clamped to the years 1970 to
 * 9999 (NaN as 0), made exact nanoseconds as Rust's `Duration::from_secs_f64` does (to the
 * nearest), then cut (not rounded) to milliseconds, so 1795557122.1, which is
 * 1795557122.0999999046... as a double, is written `...:02.099Z`.
 *
 * @param {number} unixSeconds
 * @returns {string}
 */
export function formatTime(unixSeconds) {
  const seconds = Number.isNaN(unixSeconds) ? 0 : Math.min(Math.max(unixSeconds, 0), MAX_UNIX_SECONDS);
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, seconds);
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  let mantissa = bits & ((1n << 52n) - 1n);
  let exponent = -1074;
  if (biased !== 0) {
    mantissa |= 1n << 52n;
    exponent = biased - 1075;
  }
  // seconds = mantissa * 2^exponent, exactly.
  let nanos;
  if (exponent >= 0) {
    nanos = (mantissa << BigInt(exponent)) * 1_000_000_000n;
  } else {
    const numerator = mantissa * 1_000_000_000n;
    const denominator = 1n << BigInt(-exponent);
    nanos = numerator / denominator;
    const twice = 2n * (numerator % denominator);
    if (twice > denominator || (twice === denominator && (nanos & 1n) === 1n)) {
      nanos += 1n;
    }
  }
  return new Date(Number(nanos / 1_000_000n)).toISOString();
}

/**
 * One metric point a recorder reported, in plain values.
 *
 * @typedef {object} MetricItem
 * @property {string} name
 * @property {"counter" | "gauge" | "responseTimes"} type
 * @property {number | bigint | { buckets: [number, number][], sumMs: number }} value a counter's
 *   increment (a BigInt past 2^53), a gauge's value, or response times: ascending
 *   `[ms, count]` buckets and the sum of the exact times
 * @property {string} unit
 * @property {string} description
 * @property {Record<string, string | number | bigint | boolean>} attributes
 */

/**
 * Telemetry items with the metric points of the same calls as `metrics` (not enumerable).
 * @typedef {TelemetryItem[] & { metrics: MetricItem[] }} Output
 */

/**
 * A metric point the host would reject (and count, instead of exporting it): a name, unit,
 * description or attribute outside the host's rules, a new series past the plugin's
 * `max_metric_series`, more than 1,000 points in one call, or a point whose kind is not its
 * name's. The harness throws it where the host would drop the point, with the host's reason.
 * It does not check what depends on other plugins (a name another plugin owns) or on
 * Prometheus's spelling of sample names (two names that export the same sample).
 */
export class MetricRejected extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "MetricRejected";
  }
}

/** Metric names the host exports itself. */
const BUILTIN_METRICS = ["locust.client.duration", "locust.client.duration.percentile", "locust.users.count"];
/** Attribute keys the outputs use themselves (compared after `.` becomes `_`). */
const RESERVED_ATTRIBUTE_KEYS = ["run_id", "testplan", "le", "quantile"];
/**
 * The host's caps on metric points (`runtime/src/pipeline/plugin_metrics.rs`, and the config's
 * `max_points_per_call` and `max_metric_series`, which `maxSeries` is the default of).
 */
export const METRIC_CAPS = Object.freeze({ pointsPerCall: 1000, maxSeries: 1000, attributes: 16, buckets: 1024 });

const bytes = (/** @type {string} */ text) => new TextEncoder().encode(text).length;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Checks one WIT `metric-point` as the host does (`check_point` in
 * `runtime/src/pipeline/plugin_metrics.rs`); throws a {@link MetricRejected} with its reason.
 * @param {any} point
 */
export function checkPoint(point) {
  const rejected = (/** @type {string} */ reason) => new MetricRejected(`metric ${point.name} rejected by the host: ${reason}`);
  const name = point.name;
  if (!(bytes(name) >= 1 && bytes(name) <= 128)) {
    throw rejected("the name must be 1 to 128 bytes");
  }
  if (!/^[a-z][a-z0-9_.]*$/.test(name)) {
    throw rejected("the name must be lower-case letters, digits, `_` and `.`, starting with a letter");
  }
  if (name.startsWith("swarmtel")) {
    throw rejected("names starting `swarmtel` are the runtime's own");
  }
  if (BUILTIN_METRICS.includes(name)) {
    throw rejected(`the name is a built-in metric's (${BUILTIN_METRICS.join(", ")})`);
  }
  if (!/^[\x21-\x7e]{0,32}$/.test(point.unit)) {
    throw rejected("the unit must be at most 32 printable ASCII characters");
  }
  if (bytes(point.description) > 512 || CONTROL.test(point.description) || point.description.includes("\\") || point.description.includes('"')) {
    throw rejected('the description must be at most 512 bytes, without control characters, `\\` or `"`');
  }
  if (point.attributes.length > METRIC_CAPS.attributes) {
    throw rejected(`${point.attributes.length} attributes, more than ${METRIC_CAPS.attributes}`);
  }
  const seen = new Set();
  for (const { key, value } of point.attributes) {
    if (!(bytes(key) >= 1 && bytes(key) <= 64 && /^[a-zA-Z_][a-zA-Z0-9_.]*$/.test(key))) {
      throw rejected(`attribute key ${JSON.stringify(key)} must be 1 to 64 letters, digits, \`_\` and \`.\`, not starting with a digit`);
    }
    const spelled = key.replace(/\./g, "_");
    if (RESERVED_ATTRIBUTE_KEYS.includes(spelled) || spelled.startsWith("__")) {
      throw rejected(`attribute key \`${key}\` is the outputs' own`);
    }
    if (seen.has(spelled)) {
      throw rejected(`attribute key \`${key}\` repeats another (\`.\` and \`_\` are the same in Prometheus)`);
    }
    seen.add(spelled);
    if (value.tag === "text" && (bytes(value.val) > 256 || CONTROL.test(value.val))) {
      throw rejected(`attribute \`${key}\`: a text value must be at most 256 bytes, without control characters`);
    }
  }
  if (point.value.tag === "gauge" && !Number.isFinite(point.value.val)) {
    throw rejected(`a gauge must be finite, got ${point.value.val}`);
  }
  if (point.value.tag === "response-times") {
    const { buckets, sumMs } = point.value.val;
    if (buckets.length > METRIC_CAPS.buckets) {
      throw rejected(`${buckets.length} buckets, more than ${METRIC_CAPS.buckets}`);
    }
    if (!(Number.isFinite(sumMs) && sumMs >= 0)) {
      throw rejected(`the sum must be finite milliseconds >= 0, got ${sumMs}`);
    }
  }
}

/** What the host remembers of one plugin's metrics: each name's kind, and its series. */
class MetricLedger {
  /** @param {number} maxSeries */
  constructor(maxSeries) {
    this.maxSeries = maxSeries;
    /** @type {Map<string, string>} */
    this.kinds = new Map();
    /** @type {Set<string>} */
    this.series = new Set();
  }

  /** @param {any[]} points WIT `metric-point`s of one call */
  check(points) {
    if (points.length > METRIC_CAPS.pointsPerCall) {
      throw new MetricRejected(`metric ${points[METRIC_CAPS.pointsPerCall].name} rejected by the host: more than ${METRIC_CAPS.pointsPerCall} points in one call (max_points_per_call)`);
    }
    for (const point of points) {
      checkPoint(point);
      const kind = this.kinds.get(point.name) ?? point.value.tag;
      this.kinds.set(point.name, kind);
      if (kind !== point.value.tag) {
        throw new MetricRejected(`metric ${point.name} rejected by the host: a ${point.value.tag} point for a ${kind} metric`);
      }
      // As the host tells series apart (as Prometheus sees them): keys with `.` as `_`, values
      // as text, empty text values dropped.
      const labels = point.attributes
        .filter((/** @type {any} */ { value }) => !(value.tag === "text" && value.val === ""))
        .map((/** @type {any} */ { key, value }) => [key.replace(/\./g, "_"), String(value.val)])
        .sort();
      const identity = JSON.stringify([point.name, labels]);
      if (!this.series.has(identity)) {
        if (this.series.size >= this.maxSeries) {
          throw new MetricRejected(`metric ${point.name} rejected by the host: a new series past the plugin's ${this.maxSeries} (max_metric_series)`);
        }
        this.series.add(identity);
      }
    }
  }
}

/**
 * A WIT `u64` or `s64` as a number when that loses nothing, else a BigInt.
 * @param {number | bigint} value
 */
function exact(value) {
  return typeof value === "bigint" && value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER)
    ? Number(value)
    : value;
}

/**
 * @param {any} point a WIT `metric-point`
 * @returns {MetricItem}
 */
function toMetric(point) {
  const { tag, val } = point.value;
  return {
    name: point.name,
    type: tag === "response-times" ? "responseTimes" : tag,
    value: tag === "counter" ? exact(val)
      : tag === "gauge" ? val
      : { buckets: val.buckets.map((/** @type {any} */ [ms, count]) => [ms, exact(count)]), sumMs: val.sumMs },
    unit: point.unit,
    description: point.description,
    attributes: Object.fromEntries(point.attributes.map((/** @type {any} */ { key, value }) => [key, exact(value.val)])),
  };
}

/**
 * Telemetry items as an {@link Output}.
 * @param {TelemetryItem[]} items
 * @param {MetricItem[]} metrics
 * @returns {Output}
 */
function withMetrics(items, metrics) {
  return /** @type {Output} */ (Object.defineProperty(items, "metrics", { value: metrics, enumerable: false, writable: true }));
}

/**
 * @param {any} output WIT `recorder-output`
 * @param {MetricLedger} ledger
 * @returns {Output}
 */
function toOutput(output, ledger) {
  ledger.check(output.metrics);
  const items = output.telemetry.map((/** @type {any} */ item) => ({
    telemetryType: item.telemetryType,
    name: item.name,
    message: item.message,
    fields: item.fields === "" ? {} : JSON.parse(item.fields),
    fieldsJson: item.fields,
  }));
  return withMetrics(items, output.metrics.map(toMetric));
}

/**
 * The WIT `recorder-config` options: every declared option, from `given` (by any of its names)
 * or its default.
 *
 * @param {ReturnType<typeof describePlugin>} described
 * @param {Record<string, unknown>} given
 */
function resolveOptions(described, given) {
  const declared = new Map();
  for (const option of described.options) {
    for (const key of optionKeys(option.name)) {
      declared.set(key, option);
    }
  }
  const values = new Map();
  for (const [key, value] of Object.entries(given)) {
    const option = declared.get(key);
    if (option === undefined) {
      throw new Error(`option ${key} is not declared by the plugin (it declares: ${described.options.map((o) => o.name).join(", ") || "none"})`);
    }
    values.set(option.name, value);
  }
  const settings = [];
  for (const option of described.options) {
    const value = values.has(option.name) ? values.get(option.name) : option.default;
    if (value === undefined || value === null) {
      continue;
    }
    const ok =
      option.type === "text" ? typeof value === "string"
      : option.type === "integer" ? (typeof value === "bigint" && value >= -(2n ** 63n) && value < 2n ** 63n) || Number.isSafeInteger(value)
      : option.type === "float" ? typeof value === "number"
      : typeof value === "boolean";
    if (!ok) {
      throw new Error(`option ${option.name} must be of type ${option.type}, got ${JSON.stringify(String(value))}`);
    }
    settings.push({
      name: option.name,
      value: { tag: option.type, val: option.type === "integer" ? BigInt(value) : value },
    });
  }
  return settings;
}

/** One recorder's batch under construction, as the host's `route::BatchBuilder` builds it. */
class BatchBuilder {
  /** @param {{ url: boolean, context: boolean }} extras */
  constructor(extras) {
    this.extras = extras;
    this.clear();
  }

  clear() {
    /** @type {{ requestType: string, name: string }[]} */
    this.endpoints = [];
    /** @type {Map<string, number>} */
    this.local = new Map();
    this.endpoint = [];
    this.startTime = [];
    this.responseTimeMs = [];
    this.responseLength = [];
    this.statusCode = [];
    this.failures = [];
    this.details = [];
    this.events = [];
    this.lastTime = -Infinity;
  }

  get requestCount() {
    return this.endpoint.length;
  }

  get isEmpty() {
    return this.endpoint.length === 0 && this.events.length === 0;
  }

  /**
   * @param {RequestRecord} request
   * @param {number} time
   */
  pushRequest(request, time) {
    const key = `${request.request_type}\u0000${request.name}`;
    let local = this.local.get(key);
    if (local === undefined) {
      local = this.endpoints.length;
      this.endpoints.push({ requestType: request.request_type, name: request.name });
      this.local.set(key, local);
    }
    const index = this.endpoint.length;
    this.endpoint.push(local);
    this.startTime.push(request.start_time);
    this.responseTimeMs.push(request.response_time);
    this.responseLength.push(BigInt(request.response_length));
    this.statusCode.push(request.status_code);
    if (request.exception !== null) {
      this.failures.push({ index, exception: request.exception, exceptionType: request.exception_type ?? "" });
    }
    if (this.extras.url || this.extras.context) {
      const url = this.extras.url && request.url !== null ? request.url : undefined;
      const context = this.extras.context && request.context !== null ? request.context : undefined;
      if (url !== undefined || context !== undefined) {
        this.details.push({ index, url, context });
      }
    }
    this.lastTime = Math.max(this.lastTime, time);
  }

  /**
   * @param {number} time
   * @param {{ tag: string, val?: any }} event
   */
  pushEvent(time, event) {
    this.events.push({ time, event });
    this.lastTime = Math.max(this.lastTime, time);
  }

  /** The WIT `event-batch` built so far; the builder starts over. */
  take() {
    const batch = {
      requests: {
        endpoints: this.endpoints,
        endpoint: Uint32Array.from(this.endpoint),
        startTime: Float64Array.from(this.startTime),
        responseTimeMs: Float64Array.from(this.responseTimeMs),
        responseLength: BigUint64Array.from(this.responseLength),
        statusCode: Uint16Array.from(this.statusCode),
        failures: this.failures,
        details: this.details,
      },
      events: this.events,
    };
    const time = this.lastTime;
    this.clear();
    return { batch, time };
  }
}

/** A recorder's tick schedule in event time, as the host's `route::TickClock`. */
class TickClock {
  /** @param {number} intervalMs */
  constructor(intervalMs) {
    this.interval = intervalMs / 1000;
    /** @type {number | undefined} */
    this.next = undefined;
  }

  /**
   * The ticks due before an event at `time`, in order (at most 100 per gap).
   * @param {number} time
   */
  due(time) {
    const interval = this.interval;
    this.next ??= (Math.floor(time / interval) + 1) * interval;
    if (time < this.next) {
      return [];
    }
    const ticks = [];
    let tick = this.next;
    while (tick <= time && ticks.length < 100) {
      ticks.push(tick);
      tick += interval;
    }
    if (tick <= time) {
      tick = (Math.floor(time / interval) + 1) * interval;
    }
    this.next = tick;
    return ticks;
  }
}

/**
 * A request event as the host decodes it.
 * @typedef {object} RequestRecord
 * @property {string} request_type
 * @property {string} name
 * @property {number} response_time
 * @property {number | bigint} response_length
 * @property {string | null} exception
 * @property {string | null} [exception_type] the exception's class name, when known
 * @property {number} start_time
 * @property {number} status_code 0 when unknown
 * @property {string | null} url
 * @property {string | null} context JSON text, or null when absent or empty
 */

/**
 * A decoded line of the event stream.
 * @typedef {object} EventRecord
 * @property {string} node
 * @property {"master" | "worker" | "standalone"} role
 * @property {number} time
 * @property {string} kind the WIT event kind
 * @property {RequestRecord} [request] for requests
 * @property {{ tag: string, val?: any }} [event] for every other event (the WIT event variant)
 */

/**
 * @param {Record<string, any>} line
 * @param {string} key
 * @param {string} type
 * @param {boolean} required
 */
function arg(line, key, type, required) {
  const value = line[key];
  if (value === undefined || value === null) {
    if (required) {
      throw new Error(`event \`${line.event}\` needs \`${key}\``);
    }
    return undefined;
  }
  if (type === "integer" ? !Number.isInteger(value) && typeof value !== "bigint" : typeof value !== type) {
    throw new Error(`\`${key}\`: expected ${type === "integer" ? "an integer" : `a ${type}`}`);
  }
  return value;
}

/**
 * An optional timestamp of the event stream (null or absent: none).
 * @param {any} raw
 * @param {string} key
 */
function optionalTime(raw, key) {
  const value = raw[key];
  return value === undefined || value === null ? undefined : Number(value);
}

/**
 * @param {any} raw a row of Locust's error table as the bridge writes it
 */
function statsError(raw) {
  return {
    requestType: String(raw.request_type ?? raw.method ?? ""),
    name: String(raw.name),
    error: String(raw.error),
    occurrences: BigInt(raw.occurrences),
    firstSeen: optionalTime(raw, "first_seen"),
    lastSeen: optionalTime(raw, "last_seen"),
  };
}

/**
 * @param {any} raw a stats entry as the bridge writes it
 */
function statsEntry(raw) {
  return {
    requestType: raw.request_type ?? "",
    name: String(raw.name),
    numRequests: BigInt(raw.num_requests),
    numFailures: BigInt(raw.num_failures),
    totalResponseTimeMs: Number(raw.total_response_time),
    minResponseTimeMs: Number(raw.min_response_time ?? 0),
    maxResponseTimeMs: Number(raw.max_response_time),
    totalContentLength: BigInt(raw.total_content_length ?? 0),
    responseTimes: (raw.response_times ?? []).map(([ms, count]) => [Number(ms), BigInt(count)]),
    currentRps: Number(raw.current_rps ?? 0),
    currentFailPerSec: Number(raw.current_fail_per_sec ?? 0),
    startTime: optionalTime(raw, "start_time"),
    lastRequestTime: optionalTime(raw, "last_request_timestamp"),
  };
}

/**
 * Decodes one event-stream object (a line of the file `swarmtel replay` reads, parsed) the
 * way the host does; throws with the reason for a line the host would skip.
 *
 * @param {Record<string, any>} line
 * @param {{ tick?: boolean }} [accept] `tick: true` also accepts the host's `tick` (the
 *   harness's hand-made events; never in a stream)
 * @returns {EventRecord}
 */
export function decodeEvent(line, accept = {}) {
  if (line === null || typeof line !== "object" || Array.isArray(line)) {
    throw new Error("not a JSON object");
  }
  const role = line.role;
  if (!(role in ROLES)) {
    throw new Error(`unknown role \`${role}\` (expected master, worker or standalone)`);
  }
  if (typeof line.node !== "string" || line.node === "") {
    throw new Error("`node`: must not be empty");
  }
  const time = line.time;
  if (typeof time !== "number" || !(time >= 0 && time <= 253402300799)) {
    throw new Error("`time`: must be Unix seconds from 0 to 253402300799");
  }
  const base = { node: line.node, role, time };
  const event = line.event;
  if (event === "request") {
    const responseTime = arg(line, "response_time", "number", true);
    if (!(responseTime >= 0) || !Number.isFinite(responseTime)) {
      throw new Error(`\`response_time\`: must be milliseconds >= 0, got ${responseTime}`);
    }
    const context = line.context;
    const contextText =
      context === undefined || context === null || (typeof context === "object" && !Array.isArray(context) && Object.keys(context).length === 0)
        ? null
        : JSON.stringify(context);
    return {
      ...base,
      kind: "request",
      request: {
        request_type: arg(line, "request_type", "string", true),
        name: arg(line, "name", "string", true),
        response_time: responseTime,
        response_length: arg(line, "response_length", "integer", false) ?? 0,
        exception: line.exception === undefined || line.exception === null ? null : String(line.exception),
        exception_type: arg(line, "exception_type", "string", false) ?? null,
        start_time: arg(line, "start_time", "number", false) ?? time,
        status_code: arg(line, "status_code", "integer", false) ?? 0,
        url: arg(line, "url", "string", false) ?? null,
        context: contextText,
      },
    };
  }
  /** @type {{ tag: string, val?: any }} */
  let wit;
  switch (event) {
    case "test_start":
    case "test_stopping":
    case "test_stop":
    case "reset_stats":
    case "quitting":
      wit = { tag: event.replace(/_/g, "-") };
      break;
    case "tick":
      if (!accept.tick) {
        throw new Error("unknown event `tick`");
      }
      wit = { tag: "tick" };
      break;
    case "spawning_complete":
      wit = { tag: "spawning-complete", val: arg(line, "user_count", "integer", true) };
      break;
    case "user_error":
      wit = {
        tag: "user-error",
        val: {
          userInstance: String(line.user_instance ?? ""),
          exception: arg(line, "exception", "string", true),
          traceback: String(line.tb ?? ""),
        },
      };
      break;
    case "cpu_warning":
      wit = { tag: "cpu-warning", val: arg(line, "cpu_usage", "number", true) };
      break;
    case "usage_monitor":
      wit = {
        tag: "usage-monitor",
        val: {
          cpuUsage: arg(line, "cpu_usage", "number", true),
          memoryUsage: BigInt(arg(line, "memory_usage", "integer", true)),
        },
      };
      break;
    case "worker_connect":
      wit = { tag: "worker-connect", val: arg(line, "client_id", "string", true) };
      break;
    case "worker_report":
      wit = {
        tag: "worker-report",
        val: { clientId: arg(line, "client_id", "string", true), userCount: arg(line, "user_count", "integer", false) ?? 0 },
      };
      break;
    case "heartbeat_sent":
    case "heartbeat_received":
      wit = {
        tag: event.replace(/_/g, "-"),
        val: { clientId: arg(line, "client_id", "string", true), timestamp: arg(line, "timestamp", "number", false) ?? time },
      };
      break;
    case "quit":
      wit = { tag: "quit", val: arg(line, "exit_code", "integer", false) ?? 0 };
      break;
    case "stats":
      if (!Array.isArray(line.entries)) {
        throw new Error("event `stats` needs `entries`");
      }
      if (line.total === undefined || line.total === null) {
        throw new Error("event `stats` needs `total`");
      }
      wit = {
        tag: "stats-snapshot",
        val: {
          userCount: arg(line, "user_count", "integer", false) ?? 0,
          entries: line.entries.map(statsEntry),
          total: statsEntry(line.total),
          errors: (line.errors ?? []).map(statsError),
        },
      };
      break;
    case "process_sample":
      wit = {
        tag: "process-sample",
        val: {
          cpuPercent: arg(line, "cpu_percent", "number", true),
          memoryBytes: BigInt(arg(line, "memory_bytes", "integer", true)),
          networkSentBytes: BigInt(arg(line, "network_sent_bytes", "integer", false) ?? 0),
          networkRecvBytes: BigInt(arg(line, "network_recv_bytes", "integer", false) ?? 0),
        },
      };
      break;
    default:
      throw new Error(`unknown event \`${event}\``);
  }
  return { ...base, kind: wit.tag, event: wit };
}

/** The event stream's `u64` arguments, which the host reads exactly. */
const EXACT_KEYS = ["response_length", "memory_usage", "memory_bytes", "network_sent_bytes", "network_recv_bytes"];

/**
 * A parsed event-stream line whose `u64` arguments past 2^53 are BigInts, read from its text
 * (`JSON.parse` rounds them: 18446744073709551615 would become 2^64).
 * @param {string} text
 * @param {any} line
 */
function exactIntegers(text, line) {
  if (line === null || typeof line !== "object") {
    return line;
  }
  for (const key of EXACT_KEYS) {
    const value = line[key];
    if (typeof value === "number" && Number.isInteger(value) && !Number.isSafeInteger(value)) {
      const match = new RegExp(`"${key}"\\s*:\\s*(-?\\d+)\\s*[,}]`).exec(text);
      if (match !== null) {
        line[key] = BigInt(match[1]);
      }
    }
  }
  return line;
}

/**
 * Reads an event-stream file (NDJSON, the format `swarmtel replay` reads). Blank lines are
 * skipped; a bad line throws `FILE:LINE: reason`.
 *
 * @param {string} path
 * @returns {EventRecord[]}
 */
export function readEventStream(path) {
  const records = [];
  const lines = readFileSync(path, "utf8").split("\n");
  for (let index = 0; index < lines.length; index++) {
    const text = lines[index].replace(/\r$/, "");
    if (text.trim() === "") {
      continue;
    }
    try {
      records.push(decodeEvent(exactIntegers(text, JSON.parse(text))));
    } catch (error) {
      throw new Error(`${path}:${index + 1}: ${/** @type {Error} */ (error).message}`);
    }
  }
  return records;
}

/**
 * One recorder of a plugin, fed by hand, like the Rust SDK's `testing::Harness`.
 */
export class Harness {
  /**
   * Creates `recorder` of `plugin` for one node in `role`.
   *
   * @param {any} plugin what `registerPlugin` returned, or the plugin's class or instance
   * @param {string} recorder the recorder's name (its class's `static name`)
   * @param {"master" | "worker" | "standalone"} [role] default `worker`
   * @param {{ options?: Record<string, unknown>, node?: string, maxMetricSeries?: number }} [settings]
   *   option values by name (the rest take their defaults), the node id (`master`,
   *   `worker-0`, `local` by default), and the config's `max_metric_series` (1000)
   */
  constructor(plugin, recorder, role = "worker", settings = {}) {
    const entry = registrationOf(plugin);
    const described = describePlugin(entry);
    const spec = described.recorders.get(recorder);
    if (spec === undefined) {
      throw new Error(`the plugin has no recorder ${recorder} (it has: ${[...described.recorders.keys()].join(", ")})`);
    }
    if (!spec.roles.includes(role)) {
      throw new Error(`recorder ${recorder} does not serve role ${role} (it serves: ${spec.roles.join(", ")})`);
    }
    /** The recorder's state, as the component keeps it. */
    this.state = new RecorderState(entry, {
      recorder,
      role,
      node: settings.node ?? ROLES[role].node,
      options: resolveOptions(described, settings.options ?? {}),
    });
    /** The author's recorder object. */
    this.recorder = this.state.recorder;
    this.builder = new BatchBuilder(spec.extras);
    this.ledger = new MetricLedger(settings.maxMetricSeries ?? METRIC_CAPS.maxSeries);
  }

  /**
   * Queues one request for the next delivery, with Locust's `request` arguments
   * (`exception` marks it failed, `exception_type` names its class; `status_code` defaults to
   * 500 for a failure, else 200).
   *
   * @param {{ request_type?: string, name: string, response_time: number, response_length?: number, exception?: string | null, exception_type?: string, start_time?: number, status_code?: number, url?: string, context?: object }} request
   */
  request(request) {
    const failed = request.exception !== undefined && request.exception !== null;
    const context = request.context;
    this.builder.pushRequest(
      {
        request_type: request.request_type ?? "GET",
        name: request.name,
        response_time: request.response_time,
        response_length: request.response_length ?? 0,
        exception: failed ? String(request.exception) : null,
        exception_type: request.exception_type ?? null,
        start_time: request.start_time ?? 0,
        status_code: request.status_code ?? (failed ? 500 : 200),
        url: request.url ?? null,
        context: context === undefined || Object.keys(context).length === 0 ? null : JSON.stringify(context),
      },
      request.start_time ?? 0,
    );
  }

  /**
   * Delivers the queued requests and then one event, written as an event-stream line
   * (`{ event: "spawning_complete", time: 5, user_count: 10 }`; `role` and `node` are not
   * needed, and `tick` is allowed); returns what was logged, with the metric points
   * reported as its `metrics`. A `request` line is queued instead, and nothing is returned.
   *
   * @param {Record<string, any> & { event: string, time?: number }} line
   * @returns {Output}
   */
  event(line) {
    if (line.event === "request") {
      this.request(/** @type {any} */ (line));
      return withMetrics([], []);
    }
    const record = decodeEvent({ role: "worker", node: "harness", time: 0, ...line }, { tick: true });
    this.builder.pushEvent(record.time, /** @type {any} */ (record.event));
    return this.flush();
  }

  /**
   * Delivers the queued requests; returns what was logged and reported.
   * @returns {Output}
   */
  flush() {
    if (this.builder.isEmpty) {
      return withMetrics([], []);
    }
    return toOutput(this.state.handle(this.builder.take().batch), this.ledger);
  }

  /**
   * Ends the stream: delivers what is queued, then calls the `finish` listeners.
   * @returns {Output}
   */
  finish() {
    const flushed = this.flush();
    const finished = toOutput(this.state.finish(), this.ledger);
    return withMetrics([...flushed, ...finished], [...flushed.metrics, ...finished.metrics]);
  }
}

/**
 * Runs an event stream through every recorder of `plugin`, as `swarmtel replay` does: one
 * recorder instance per (recorder, node) created when the node first appears, requests in
 * batches of at most `batchSize` that any other event ends, ticks from event time, and every
 * recorder finished at the end. Returns the telemetry in the order the host writes it.
 *
 * @param {any} plugin what `registerPlugin` returned, or the plugin's class or instance
 * @param {string | Iterable<EventRecord | Record<string, any>>} events an event-stream file,
 *   or its lines (decoded or as parsed JSON objects)
 * Each recorder instance runs in a realm of its own (a fresh `vm` context, with the recorder
 * module and the SDK loaded anew), as each has its own engine in the host, so module-level
 * variables are per instance there too. That needs the recorder module's file: the module
 * that called `registerPlugin`, or `settings.module`. A plugin class that was never
 * registered, or a module that needs Node's own modules, runs every instance in the caller's
 * realm instead, sharing module state (`isolate: true` makes that an error).
 *
 * @param {any} plugin what `registerPlugin` returned, or the plugin's class or instance
 * @param {string | Iterable<EventRecord | Record<string, any>>} events an event-stream file,
 *   or its lines (decoded or as parsed JSON objects)
 * @param {{ options?: Record<string, unknown>, batchSize?: number, roles?: string[], module?: string, isolate?: boolean, maxMetricSeries?: number }} [settings]
 *   option values, the config's `batch_size` (1024) and `roles` (default: every role), the
 *   recorder module's file, whether instances must (true) or must not (false) get a realm
 *   each (default: when possible), and the config's `max_metric_series` (1000)
 * @returns {ReplayItem[] & { metrics: ReplayMetric[] }} the telemetry, and as `metrics` the
 *   metric points, each with `node`, `role`, `recorder` and `time`
 */
export function replay(plugin, events, settings = {}) {
  const entry = registrationOf(plugin);
  const described = describePlugin(entry);
  const options = resolveOptions(described, settings.options ?? {});
  const batchSize = settings.batchSize ?? 1024;
  const isolated = settings.isolate === false ? undefined : isolatedStates(settings.module ?? moduleOf(entry));
  if (settings.isolate === true && isolated === undefined) {
    throw new Error("replay cannot isolate this plugin's recorders: pass what registerPlugin returned (or its class) and settings.module, the recorder module's file, which must load without Node's own modules");
  }
  const newState = (config) => (isolated === undefined ? new RecorderState(entry, config) : isolated(config));
  const records = typeof events === "string" ? readEventStream(events) : events;
  /** @type {Map<string, { role: string, lastTime: number, slots: any[] }>} */
  const nodes = new Map();
  const slots = [];
  /** @type {ReplayItem[]} */
  const out = [];
  /** @type {ReplayMetric[]} */
  const metrics = [];
  const ledger = new MetricLedger(settings.maxMetricSeries ?? METRIC_CAPS.maxSeries);

  const emit = (slot, output, time) => {
    const { node, role, recorder } = slot;
    const converted = toOutput(output, ledger);
    for (const item of converted) {
      out.push({ ...item, node, role, recorder, time, rfc3339: formatTime(time) });
    }
    for (const point of converted.metrics) {
      metrics.push({ ...point, node, role, recorder, time });
    }
  };
  const flush = (slot) => {
    if (slot.builder.isEmpty) {
      return;
    }
    const { batch, time } = slot.builder.take();
    emit(slot, slot.state.handle(batch), time);
  };

  for (const raw of records) {
    const record = "kind" in raw ? /** @type {EventRecord} */ (raw) : decodeEvent(raw);
    let node = nodes.get(record.node);
    if (node === undefined) {
      node = { role: record.role, lastTime: -Infinity, slots: [] };
      if (settings.roles === undefined || settings.roles.includes(record.role)) {
        for (const [name, spec] of described.recorders) {
          if (!spec.roles.includes(record.role)) {
            continue;
          }
          const slot = {
            recorder: name,
            node: record.node,
            role: record.role,
            events: new Set(spec.events),
            state: newState({ recorder: name, role: record.role, node: record.node, options }),
            builder: new BatchBuilder(spec.extras),
            tick: spec.tickIntervalMs === undefined ? undefined : new TickClock(spec.tickIntervalMs),
            nodeState: node,
          };
          node.slots.push(slot);
          slots.push(slot);
        }
      }
      nodes.set(record.node, node);
    } else if (node.role !== record.role) {
      continue;
    }
    node.lastTime = Math.max(node.lastTime, record.time);
    for (const slot of node.slots) {
      if (slot.tick !== undefined) {
        for (const tick of slot.tick.due(record.time)) {
          slot.builder.pushEvent(tick, { tag: "tick" });
          flush(slot);
        }
      }
      if (!slot.events.has(record.kind)) {
        continue;
      }
      if (record.request !== undefined) {
        slot.builder.pushRequest(record.request, record.time);
        if (slot.builder.requestCount >= batchSize) {
          flush(slot);
        }
      } else {
        slot.builder.pushEvent(record.time, /** @type {any} */ (record.event));
        flush(slot);
      }
    }
  }
  for (const slot of slots) {
    flush(slot);
    emit(slot, slot.state.finish(), slot.nodeState.lastTime);
  }
  return withMetrics(out, metrics);
}
