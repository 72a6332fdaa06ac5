/**
 * Turns the host's batches into calls of a recorder's listeners. The component and the test
 * harness both run this code.
 *
 * @module
 */

import { HOOK_BY_TAG } from "./hooks.js";
import { createRecorder, subscriptions } from "./plugin.js";
import { EndpointTable, Requests, u64Number } from "./requests.js";

/**
 * A BigInt as a number when that loses nothing.
 * @param {bigint | number} value
 */
function toNumber(value) {
  if (typeof value === "number") {
    return u64Number(value);
  }
  return typeof value === "bigint" && value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= BigInt(Number.MIN_SAFE_INTEGER)
    ? Number(value)
    : value;
}

/**
 * A WIT `option<timestamp>`: SpiderMonkey's bindings give undefined for none, QuickJS's null.
 * @param {number | null | undefined} value
 */
function optional(value) {
  return value ?? null;
}

/**
 * One row of the master's statistics under Locust's (and the event stream's) names.
 * @param {any} entry WIT `endpoint-stats`
 */
function statsEntry(entry) {
  return {
    request_type: entry.requestType,
    name: entry.name,
    num_requests: toNumber(entry.numRequests),
    num_failures: toNumber(entry.numFailures),
    total_response_time: entry.totalResponseTimeMs,
    min_response_time: entry.minResponseTimeMs,
    max_response_time: entry.maxResponseTimeMs,
    total_content_length: toNumber(entry.totalContentLength),
    response_times: entry.responseTimes.map(([ms, count]) => [ms, toNumber(count)]),
    current_rps: entry.currentRps,
    current_fail_per_sec: entry.currentFailPerSec,
    start_time: optional(entry.startTime),
    last_request_timestamp: optional(entry.lastRequestTime),
  };
}

/**
 * One row of Locust's error table under the event stream's names.
 * @param {any} row WIT `error-stats`
 */
function statsError(row) {
  return {
    request_type: row.requestType,
    name: row.name,
    error: row.error,
    occurrences: toNumber(row.occurrences),
    first_seen: optional(row.firstSeen),
    last_seen: optional(row.lastSeen),
  };
}

/**
 * A listener's arguments for a WIT event: one object, with the event's time and its
 * arguments under the event stream's (Locust's) names.
 *
 * @param {string} tag the WIT `event` variant tag
 * @param {any} val its payload
 * @param {number} time
 */
export function eventArgs(tag, val, time) {
  switch (tag) {
    case "spawning-complete":
      return { time, user_count: val };
    case "user-error":
      return { time, user_instance: val.userInstance, exception: val.exception, tb: val.traceback };
    case "cpu-warning":
      return { time, cpu_usage: val };
    case "usage-monitor":
      return { time, cpu_usage: val.cpuUsage, memory_usage: toNumber(val.memoryUsage) };
    case "worker-connect":
      return { time, client_id: val };
    case "worker-report":
      return { time, client_id: val.clientId, user_count: val.userCount };
    case "heartbeat-sent":
    case "heartbeat-received":
      return { time, client_id: val.clientId, timestamp: val.timestamp };
    case "quit":
      return { time, exit_code: val };
    case "stats-snapshot":
      return {
        time,
        user_count: val.userCount,
        entries: val.entries.map(statsEntry),
        total: statsEntry(val.total),
        errors: (val.errors ?? []).map(statsError),
      };
    case "process-sample":
      return {
        time,
        cpu_percent: val.cpuPercent,
        memory_bytes: toNumber(val.memoryBytes),
        network_sent_bytes: toNumber(val.networkSentBytes),
        network_recv_bytes: toNumber(val.networkRecvBytes),
      };
    default:
      return { time };
  }
}

/** One recorder with the state the SDK keeps for it between calls. */
export class RecorderState {
  /**
   * @param {import("./plugin.js").RegisteredPlugin} entry
   * @param {any} config WIT `recorder-config`
   */
  constructor(entry, config) {
    const { recorder, state } = createRecorder(entry, config);
    /** The author's recorder. */
    this.recorder = recorder;
    this.env = state;
    this.endpoints = new EndpointTable();
    /** @type {Map<string, Function[]>} */
    this.byHook = new Map();
    this.version = -1;
  }

  /**
   * The recorder's listeners of one hook, bound to it.
   * @param {string} hook
   * @returns {Function[] | undefined}
   */
  listeners(hook) {
    if (this.version !== this.env.version) {
      this.byHook.clear();
      for (const { hook: name, listener, owner } of subscriptions(this.env, this.recorder)) {
        const list = this.byHook.get(name) ?? [];
        list.push(listener.bind(owner));
        this.byHook.set(name, list);
      }
      this.version = this.env.version;
    }
    return this.byHook.get(hook);
  }

  /**
   * Handles one WIT `event-batch`: requests first (the `requests` listeners get the columns,
   * then the `request` listeners one object per request), then the other events in order.
   * Returns the WIT `recorder-output`: the telemetry logged and the metric points reported.
   *
   * @param {any} batch
   */
  handle(batch) {
    const columns = batch.requests;
    const count = columns.endpoint.length;
    if (count > 0) {
      const onRequests = this.listeners("requests");
      const onRequest = this.listeners("request");
      if (onRequests !== undefined || onRequest !== undefined) {
        const dictionary = columns.endpoints;
        const local = new Uint32Array(dictionary.length);
        for (let i = 0; i < dictionary.length; i++) {
          local[i] = this.endpoints.intern(dictionary[i].requestType, dictionary[i].name);
        }
        const ids = new Uint32Array(count);
        const endpoint = columns.endpoint;
        for (let i = 0; i < count; i++) {
          ids[i] = local[endpoint[i]];
        }
        const requests = new Requests(columns, ids, this.endpoints);
        if (onRequests !== undefined) {
          for (const listener of onRequests) {
            listener(requests);
          }
        }
        if (onRequest !== undefined) {
          for (const request of requests) {
            for (const listener of onRequest) {
              listener(request);
            }
          }
        }
      }
    }
    for (const timed of batch.events) {
      const listeners = this.listeners(HOOK_BY_TAG.get(timed.event.tag));
      if (listeners === undefined) {
        continue;
      }
      const args = eventArgs(timed.event.tag, timed.event.val, timed.time);
      for (const listener of listeners) {
        listener(args);
      }
    }
    return this.take();
  }

  /** The stream ended: calls the `finish` listeners; returns what was logged and reported. */
  finish() {
    for (const listener of this.listeners("finish") ?? []) {
      listener({});
    }
    return this.take();
  }

  /** The WIT `recorder-output` of what was logged and reported since the last call. */
  take() {
    const out = this.env.out;
    return { telemetry: out.splice(0, out.length), metrics: this.env.metrics.take() };
  }
}
