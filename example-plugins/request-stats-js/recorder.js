// request-stats, in JavaScript: aggregates Locust `request` events per endpoint and logs
// counts, failures and response-time percentiles (computed as Locust does) every tick and at
// test stop. A port of example-plugins/request-stats (Rust): the same plugin id, recorder,
// option, schema and telemetry, line for line.
//
// It reads each batch's columns directly (the `requests` hook), not one object per request,
// which is what keeps a sandboxed JavaScript recorder fast.
//
// Beside the telemetry it reports two metrics per endpoint (attributes `request_type` and
// `endpoint`), every tick and at the end: the counter `request_stats.requests` and the
// response-time histogram `request_stats.duration`.
//
// Build: npx swarmtel-recorder build recorder.js -o request_stats.wasm

import {
  BaseTelemetryPlugin,
  BaseTelemetryRecorder,
  ResponseTimes,
  TelemetryData,
  registerPlugin,
} from "swarmtel-recorder";

import { RequestStats } from "./aggregate.js";

/** Interval of the periodic report, in milliseconds of event time. */
export const TICK_INTERVAL_MS = 5_000;

/** The telemetry name of every report. */
export const TELEMETRY_NAME = "request_stats";

/** The metrics: requests per endpoint (a counter), and their response times (a histogram). */
export const REQUESTS_METRIC = "request_stats.requests";
export const DURATION_METRIC = "request_stats.duration";

/** The host's longest text attribute value, in bytes. */
const MAX_ATTRIBUTE_BYTES = 256;

/**
 * `text` cut to what the host takes as an attribute value (256 bytes of UTF-8).
 * @param {string} text
 */
function attribute(text) {
  let bytes = 0;
  let end = 0;
  for (const char of text) {
    const code = /** @type {number} */ (char.codePointAt(0));
    bytes += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
    if (bytes > MAX_ATTRIBUTE_BYTES) {
      return text.slice(0, end);
    }
    end += char.length;
  }
  return text;
}

/** The JSON Schema of a `request_stats` item's fields. */
export function fieldsSchema() {
  const count = { type: "integer", minimum: 0 };
  const ms = { type: "number", minimum: 0 };
  return {
    type: "object",
    additionalProperties: false,
    required: ["request_type", "endpoint", "requests", "failures", "avg_response_time_ms",
      "min_response_time_ms", "max_response_time_ms", "p50_ms", "p90_ms", "p95_ms",
      "p99_ms", "total_bytes", "final"],
    properties: {
      request_type: { type: "string" },
      endpoint: { type: "string", minLength: 1 },
      requests: count, failures: count, total_bytes: count,
      avg_response_time_ms: ms, min_response_time_ms: ms, max_response_time_ms: ms,
      p50_ms: count, p90_ms: count, p95_ms: count, p99_ms: count,
      final: { type: "boolean" },
    },
  };
}

/** Aggregates requests; reports on tick (when something changed) and at test stop. */
export class RequestStatsRecorder extends BaseTelemetryRecorder {
  static name = "request_stats_recorder";
  static tickIntervalMs = TICK_INTERVAL_MS;

  constructor(env) {
    super(env);
    this.stats = new RequestStats();
    this.periodic = env.parsedOptions.periodic ?? true;
    this.requestsSinceReport = 0;
    /** Per endpoint id: its metric attributes, requests and response times since the last report. */
    this.pending = [];
    env.events.requests.addListener(this.onRequests);
    env.events.test_stop.addListener(this.onTestStop);
    env.events.reset_stats.addListener(this.onResetStats);
    env.events.tick.addListener(this.onTick);
    env.events.finish.addListener(this.onFinish);
  }

  /** @param {import("swarmtel-recorder").Requests} requests one batch, as columns */
  onRequests(requests) {
    const endpoints = requests.endpoints();
    for (let id = this.stats.endpointCount; id < endpoints.length; id++) {
      this.stats.ensureEndpoint(id, endpoints[id].request_type, endpoints[id].name);
    }
    for (let id = this.pending.length; id < endpoints.length; id++) {
      const attributes = { request_type: attribute(endpoints[id].request_type), endpoint: attribute(endpoints[id].name) };
      this.pending.push({ attributes, requests: 0, times: new ResponseTimes() });
    }
    const ids = requests.endpointIds;
    const times = requests.responseTimesMs;
    const lengths = requests.responseLengths;
    let exact;
    for (let i = 0; i < ids.length; i++) {
      const pending = this.pending[ids[i]];
      pending.requests++;
      if (times[i] < ResponseTimes.LIMIT_MS) {
        pending.times.observe(times[i]); // absurd times are counted, not timed
      }
      const length = lengths[i];
      // Past 2^53 a number is not exact: read the u64 itself, as the Rust plugin does.
      if (length > Number.MAX_SAFE_INTEGER) {
        exact ??= requests.responseLengthsExact;
        this.stats.record(ids[i], times[i], exact[i]);
      } else {
        this.stats.record(ids[i], times[i], length);
      }
    }
    for (const { index } of requests.failures) {
      this.stats.recordFailure(ids[index]);
    }
    this.requestsSinceReport += requests.length;
  }

  /** Reports each endpoint's requests and response times since the last report. */
  reportMetrics() {
    for (const pending of this.pending) {
      if (pending.requests > 0) {
        const { attributes, times } = pending;
        this.addCounter(REQUESTS_METRIC, pending.requests, { unit: "{request}", description: "Requests, per endpoint", attributes });
        this.recordResponseTimes(DURATION_METRIC, times, { description: "Response times, per endpoint", attributes });
        pending.requests = 0;
        times.reset();
      }
    }
  }

  onTick() {
    this.reportMetrics();
    if (this.periodic && this.requestsSinceReport > 0) {
      this.report(false);
    }
  }

  onTestStop() {
    this.reportMetrics();
    this.report(true);
  }

  onResetStats() {
    this.stats.reset();
  }

  onFinish() {
    this.reportMetrics();
    // Requests that arrived after the last test stop (a worker's final ones) still count.
    if (this.requestsSinceReport > 0) {
      this.report(true);
    }
  }

  /** @param {boolean} isFinal */
  report(isFinal) {
    for (const [message, fields] of this.stats.report(isFinal)) {
      this.logTelemetry(new TelemetryData({ type: "metric", name: TELEMETRY_NAME }), message, fields);
    }
    this.requestsSinceReport = 0;
  }
}

/** The plugin: one recorder, on the roles that see requests. */
export class RequestStatsPlugin extends BaseTelemetryPlugin {
  addArguments(parser) {
    parser.addArgument("--periodic", {
      type: Boolean,
      default: true,
      help: "Also report every tick, not only at test stop",
      envVar: "SWARMTEL_REQUEST_STATS_PERIODIC",
    });
  }

  loadWorkerTelemetryRecorders(env) {
    new RequestStatsRecorder(env);
  }

  loadStandaloneTelemetryRecorders(env) {
    new RequestStatsRecorder(env);
  }
}

export default registerPlugin(new RequestStatsPlugin(), {
  id: "request-stats",
  version: "0.1.0",
  description: "Per-endpoint request counts, failures and response-time percentiles",
  schemas: { [TELEMETRY_NAME]: fieldsSchema() },
});
