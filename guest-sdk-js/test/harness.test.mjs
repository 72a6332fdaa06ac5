// The harness: events by hand and from an event-stream file, through the dispatch code the
// component runs.
import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { loadRecorderModule } from "../src/build.js";
import { Harness, decodeEvent, readEventStream, replay } from "swarmtel-recorder/testing";

import customPlugin from "./fixtures/custom-telemetry.js";
import { EverythingPlugin } from "./fixtures/everything.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const capture = path.join(root, "examples/locust-run.ndjson");
const requestStatsJs = path.join(root, "example-plugins/request-stats-js/recorder.js");

test("the seed's recorder logs CUSTOM_START and CUSTOM_STOP", () => {
  const harness = new Harness(customPlugin, "custom_telemetry_recorder", "master");
  assert.deepEqual(harness.event({ event: "test_start", time: 1 }).map((i) => i.name), ["CUSTOM_START"]);
  assert.deepEqual(harness.event({ event: "test_stop", time: 2 }).map((i) => i.name), ["CUSTOM_STOP"]);
  assert.deepEqual(harness.finish(), []);
  assert.throws(() => new Harness(customPlugin, "custom_telemetry_recorder", "standalone"), /does not serve role standalone/);
  assert.throws(() => new Harness(customPlugin, "nope", "master"), /has no recorder nope/);
});

test("every hook gets Locust's arguments under Locust's names", () => {
  const harness = new Harness(EverythingPlugin, "everything_recorder", "master");
  const args = (line) => harness.event(line).map((item) => [item.name, item.fields.args]);
  assert.deepEqual(args({ event: "spawning_complete", time: 5, user_count: 12 }), [["spawning_complete", { time: 5, user_count: 12 }]]);
  assert.deepEqual(args({ event: "user_error", time: 5, user_instance: "U", exception: "boom", tb: "tb" }), [["user_error", { time: 5, user_instance: "U", exception: "boom", tb: "tb" }]]);
  assert.deepEqual(args({ event: "usage_monitor", time: 5, cpu_usage: 12.5, memory_usage: 1024 }), [["usage_monitor", { time: 5, cpu_usage: 12.5, memory_usage: 1024 }]]);
  assert.deepEqual(args({ event: "worker_report", time: 5, client_id: "w1", user_count: 3 }), [["worker_report", { time: 5, client_id: "w1", user_count: 3 }]]);
  assert.deepEqual(args({ event: "heartbeat_received", time: 5, client_id: "w1", timestamp: 4.5 }), [["heartbeat_received", { time: 5, client_id: "w1", timestamp: 4.5 }]]);
  assert.deepEqual(args({ event: "quit", time: 6, exit_code: 1 }), [["quit", { time: 6, exit_code: 1 }]]);
  const total = { request_type: "", name: "Aggregated", num_requests: 3, num_failures: 1, total_response_time: 30.5, min_response_time: 5, max_response_time: 20, total_content_length: 300, response_times: [[5, 2], [20, 1]], current_rps: 1.5, current_fail_per_sec: 0.5 };
  // Without the 0.2.0 fields (an older bridge): no times, no error table.
  const none = { start_time: null, last_request_timestamp: null };
  assert.deepEqual(args({ event: "stats", time: 7, user_count: 2, entries: [{ ...total, request_type: "GET", name: "/" }], total }), [
    ["stats", { time: 7, user_count: 2, entries: [{ ...total, ...none, request_type: "GET", name: "/" }], total: { ...total, ...none }, errors: [] }],
  ]);
  // With them: fractional histogram keys stay as they are (Locust 2.44 allows them).
  const timed = { ...total, response_times: [[2.5, 1], [5, 1], [20, 1]], start_time: 1.5, last_request_timestamp: 6.25 };
  const error = { request_type: "GET", name: "/", error: "HTTPError 500", occurrences: 1, first_seen: 3, last_seen: 3 };
  assert.deepEqual(args({ event: "stats", time: 7, user_count: 2, entries: [], total: timed, errors: [error, { ...error, error: "timeout", first_seen: null, last_seen: undefined }] }), [
    ["stats", { time: 7, user_count: 2, entries: [], total: timed, errors: [error, { ...error, error: "timeout", first_seen: null, last_seen: null }] }],
  ]);
  assert.deepEqual(args({ event: "tick", time: 8 }), [["tick", { time: 8 }]]);
  assert.deepEqual(args({ event: "process_sample", time: 8.5, cpu_percent: 37.5, memory_bytes: 2 ** 40, network_sent_bytes: 1000, network_recv_bytes: 2000 }), [
    ["process_sample", { time: 8.5, cpu_percent: 37.5, memory_bytes: 2 ** 40, network_sent_bytes: 1000, network_recv_bytes: 2000 }],
  ]);
  harness.request({ request_type: "POST", name: "/orders", response_time: 12.5, response_length: 99, exception: "HTTPError 500", exception_type: "HTTPError", start_time: 9, url: "http://x/orders", context: { user: 7 } });
  harness.request({ request_type: "POST", name: "/orders", response_time: 13, exception: "refused" });
  harness.request({ request_type: "POST", name: "/orders", response_time: 14 });
  assert.deepEqual(harness.flush().map((item) => item.fields.args), [
    { request_type: "POST", name: "/orders", response_time: 12.5, response_length: 99, exception: "HTTPError 500", exception_type: "HTTPError", start_time: 9, url: "http://x/orders", context: { user: 7 }, status_code: 500, endpoint: 0 },
    { request_type: "POST", name: "/orders", response_time: 13, response_length: 0, exception: "refused", exception_type: "", start_time: 0, url: null, context: {}, status_code: 500, endpoint: 0 },
    { request_type: "POST", name: "/orders", response_time: 14, response_length: 0, exception: null, exception_type: null, start_time: 0, url: null, context: {}, status_code: 200, endpoint: 0 },
  ]);
  assert.deepEqual(harness.finish().map((item) => item.name), ["finish"]);
});

test("requests arrive as columns with stable ids, failures and lengths as numbers", async () => {
  const sdk = await import("swarmtel-recorder");
  const batches = [];
  class Columns extends sdk.BaseTelemetryRecorder {
    onRequests(requests) {
      batches.push({
        ids: [...requests.endpointIds],
        times: [...requests.responseTimesMs],
        lengths: [...requests.responseLengths],
        codes: [...requests.statusCodes],
        failures: requests.failures.map((f) => [f.index, f.exception]),
        endpoints: requests.endpoints().map((e) => `${e.id}:${e.request_type} ${e.name}`),
        perRequest: [...requests].map((r) => [r.name, r.endpoint, r.exception]),
      });
    }
  }
  class ColumnsPlugin extends sdk.BaseTelemetryPlugin {
    loadWorkerTelemetryRecorders(env) {
      new Columns(env);
    }
  }
  const harness = new Harness(ColumnsPlugin, "columns", "worker");
  harness.request({ name: "/b", response_time: 1, response_length: 10 });
  harness.request({ name: "/a", response_time: 2, response_length: 20, exception: "boom" });
  harness.flush();
  // Second batch: the host's dictionary starts over (here `/a` comes first), ids do not.
  harness.request({ name: "/a", response_time: 3, response_length: 30 });
  harness.request({ name: "/c", response_time: 4, response_length: 40, status_code: 204 });
  harness.request({ name: "/b", response_time: 5, response_length: 50 });
  harness.flush();
  assert.deepEqual(batches[0], {
    ids: [0, 1], times: [1, 2], lengths: [10, 20], codes: [200, 500], failures: [[1, "boom"]],
    endpoints: ["0:GET /b", "1:GET /a"], perRequest: [["/b", 0, null], ["/a", 1, "boom"]],
  });
  assert.deepEqual(batches[1].ids, [1, 2, 0]);
  assert.deepEqual(batches[1].codes, [200, 204, 200]);
  assert.deepEqual(batches[1].endpoints, ["0:GET /b", "1:GET /a", "2:GET /c"]);
  assert.deepEqual(batches[1].failures, []);
});

test("the event stream decodes as the host decodes it, and bad lines name file and line", () => {
  const records = readEventStream(capture);
  assert.equal(records.length, 5436);
  const request = records.find((r) => r.kind === "request").request;
  assert.equal(typeof request.response_time, "number");
  assert.throws(() => decodeEvent({ event: "nope", role: "worker", node: "w", time: 1 }), /unknown event `nope`/);
  assert.throws(() => decodeEvent({ event: "request", role: "worker", node: "w", time: 1, name: "/" }), /needs `response_time`/);
  assert.throws(() => decodeEvent({ event: "test_start", role: "boss", node: "w", time: 1 }), /unknown role/);
  assert.throws(() => decodeEvent({ event: "tick", role: "worker", node: "w", time: 1 }), /unknown event `tick`/, "ticks come from the host, not the stream");
  const failed = { event: "request", role: "worker", node: "w", time: 1, request_type: "GET", name: "/", response_time: 1, exception: "boom" };
  assert.equal(decodeEvent({ ...failed, exception_type: "ConnectionError" }).request.exception_type, "ConnectionError");
  assert.equal(decodeEvent(failed).request.exception_type, null, "older captures have no exception_type");
  assert.deepEqual(decodeEvent({ event: "process_sample", role: "worker", node: "w", time: 1, cpu_percent: 5, memory_bytes: 7 }).event, {
    tag: "process-sample", val: { cpuPercent: 5, memoryBytes: 7n, networkSentBytes: 0n, networkRecvBytes: 0n },
  });
  assert.throws(() => decodeEvent({ event: "process_sample", role: "worker", node: "w", time: 1, cpu_percent: 5 }), /event `process_sample` needs `memory_bytes`/);
});

test("a listener that throws fails the harness call with the author's error", async () => {
  const sdk = await import("swarmtel-recorder");
  class Broken extends sdk.BaseTelemetryRecorder {
    onQuitting() {
      throw new RangeError("out of range on purpose");
    }
  }
  class BrokenPlugin extends sdk.BaseTelemetryPlugin {
    loadMasterTelemetryRecorders(env) {
      new Broken(env);
    }
  }
  const harness = new Harness(BrokenPlugin, "broken", "master");
  assert.throws(() => harness.event({ event: "quitting", time: 1 }), RangeError);
});

test("replay batches like the host: requests until any other event or batchSize, ticks from event time", async () => {
  const sdk = await import("swarmtel-recorder");
  const calls = [];
  class Probe extends sdk.BaseTelemetryRecorder {
    static tickIntervalMs = 5000;
    onRequests(requests) {
      calls.push(`requests:${requests.length}`);
    }
    onTick({ time }) {
      calls.push(`tick:${time}`);
    }
    onTestStop({ time }) {
      calls.push(`test_stop:${time}`);
    }
  }
  class ProbePlugin extends sdk.BaseTelemetryPlugin {
    loadWorkerTelemetryRecorders(env) {
      new Probe(env);
    }
  }
  const line = (time, extra) => ({ role: "worker", node: "w", time, ...extra });
  const request = (time) => line(time, { event: "request", request_type: "GET", name: "/", response_time: 1 });
  replay(ProbePlugin, [request(101), request(102), request(103), request(104), line(104.5, { event: "test_stop" }), request(111), line(112, { event: "quitting" })], { batchSize: 3 });
  assert.deepEqual(calls, ["requests:3", "requests:1", "test_stop:104.5", "tick:105", "tick:110", "requests:1"]);
});

test("request-stats-js on the sample capture: counts add up per node, Locust percentiles", async () => {
  const { plugin } = await loadRecorderModule(requestStatsJs);
  const items = replay(plugin, capture);
  const finals = items.filter((item) => item.fields.final && item.fields.endpoint === "Aggregated");
  const requestsPerNode = {};
  for (const record of readEventStream(capture)) {
    if (record.kind === "request") {
      requestsPerNode[record.node] = (requestsPerNode[record.node] ?? 0) + 1;
    }
  }
  const finalPerNode = {};
  for (const item of finals) {
    finalPerNode[item.node] = item.fields.requests;
  }
  assert.deepEqual(finalPerNode, requestsPerNode);
  assert.ok(items.every((item) => item.name === "request_stats" && item.telemetryType === "metric"));
  assert.match(items[0].fieldsJson, /"avg_response_time_ms":\d+\.\d+/);
  const harness = new Harness(plugin, "request_stats_recorder", "worker");
  for (let ms = 1; ms <= 10; ms++) {
    harness.request({ name: "/p", response_time: ms, response_length: 1 });
  }
  const [row] = harness.event({ event: "test_stop", time: 1 });
  assert.equal(row.fields.p50_ms, 6);
  assert.equal(row.fields.p90_ms, 10);
  assert.equal(row.fieldsJson.includes('"avg_response_time_ms":5.5'), true);
  assert.equal(row.fieldsJson.includes('"min_response_time_ms":1.0'), true);
});

test("dispatch takes both engines' shapes: typed arrays and BigInts, or plain arrays, numbers and null", async () => {
  const { RecorderState } = await import("../src/dispatch.js");
  const { plugin } = await loadRecorderModule(requestStatsJs);
  const config = { recorder: "request_stats_recorder", role: "worker", node: "w", options: [] };
  const spidermonkey = {
    requests: {
      endpoints: [{ requestType: "GET", name: "/a" }, { requestType: "POST", name: "/b" }],
      endpoint: Uint32Array.from([0, 1, 0]),
      startTime: Float64Array.from([1, 2, 3]),
      responseTimeMs: Float64Array.from([10, 20, 30.5]),
      responseLength: BigUint64Array.from([100n, 200n, 300n]),
      statusCode: Uint16Array.from([200, 500, 200]),
      failures: [{ index: 1, exception: "boom" }],
      details: [],
    },
    events: [{ time: 4, event: { tag: "test-stop" } }],
  };
  const quickjs = {
    requests: {
      endpoints: [{ requestType: "GET", name: "/a" }, { requestType: "POST", name: "/b" }],
      endpoint: [0, 1, 0],
      startTime: [1, 2, 3],
      responseTimeMs: [10, 20, 30.5],
      responseLength: [100, 200, 300],
      statusCode: [200, 500, 200],
      failures: [{ index: 1, exception: "boom" }],
      details: [],
    },
    events: [{ time: 4, event: { tag: "test-stop", val: null } }],
  };
  const a = new RecorderState(plugin, config).handle(spidermonkey);
  const b = new RecorderState(plugin, config).handle(quickjs);
  assert.equal(a.telemetry.length, 3);
  assert.deepEqual(b, a);
  assert.match(a.telemetry[2].fields, /"requests":3,"failures":1,.*"total_bytes":600/);
});
