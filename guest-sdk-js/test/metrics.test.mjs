// Metric points: Locust's rounding (against Python's own round), merging per series and call,
// the checks at the call, and the harness's copy of the host's rules.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";

import { BaseTelemetryPlugin, BaseTelemetryRecorder, PluginError, ResponseTimes, TelemetryData, bucketResponseTime, float } from "swarmtel-recorder";
import { Harness, MetricRejected, replay } from "swarmtel-recorder/testing";

/** Ties of every range (a half goes to the even neighbour), their neighbours, range edges. */
const TIES = [0, 0.5, 1.5, 2.5, 12.5, 13.5, 99.5, 99.49999999999999, 100, 145, 155, 144.99999999999997,
  145.00000000000003, 995, 999.5, 1000, 1050, 1150, 1250, 9950, 10000, 12500, 13500, 1e6 + 500, 4294967000, 4294967499];

test("bucketResponseTime rounds ties to even, as Locust's Python does", () => {
  assert.deepEqual([12.5, 145, 2.5, 13.5, 155, 1050, 1150, 12500, 99.5].map(bucketResponseTime), [12, 140, 2, 14, 160, 1000, 1200, 12000, 100]);
  assert.notEqual(bucketResponseTime(12.5), Math.round(12.5), "Math.round takes a half up");
});

test("bucketResponseTime agrees with Python's round on ties and random times", (t) => {
  let seed = 7;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const values = [...TIES];
  for (let i = 0; i < 3000; i++) {
    values.push(random() * 10 ** Math.floor(random() * 10));
    values.push(Math.floor(random() * 8000) * [1, 10, 100, 1000][i % 4] / 2);
  }
  const python = spawnSync("python3", ["-c", [
    "import json, sys",
    "def bucket(ms):",
    "    if ms < 100: return round(ms)",
    "    if ms < 1000: return int(round(ms, -1))",
    "    if ms < 10000: return int(round(ms, -2))",
    "    return int(round(ms, -3))",
    "print(json.dumps([bucket(ms) for ms in json.load(sys.stdin)]))",
  ].join("\n")], { input: JSON.stringify(values), encoding: "utf8" });
  if (python.error !== undefined) {
    t.skip("no python3 to compare with");
    return;
  }
  assert.equal(python.status, 0, python.stderr);
  const expected = JSON.parse(python.stdout);
  const mismatches = values.map((ms, i) => [ms, bucketResponseTime(ms), expected[i]]).filter(([, ours, theirs]) => ours !== theirs);
  assert.deepEqual(mismatches, []);
});

test("ResponseTimes counts rounded buckets and the exact sum; reset forgets", () => {
  const times = new ResponseTimes();
  for (const ms of [12.5, 145, 2.5, 1050, 12.4, 145]) {
    times.observe(ms);
  }
  assert.deepEqual([...times.buckets].sort((a, b) => a[0] - b[0]), [[2, 1], [12, 2], [140, 2], [1000, 1]]);
  assert.equal(times.sumMs, 12.5 + 145 + 2.5 + 1050 + 12.4 + 145);
  assert.equal(times.count, 6);
  times.reset();
  assert.deepEqual([times.buckets.size, times.sumMs, times.count], [0, 0, 0]);
});

test("ResponseTimes refuses what no bucket holds", () => {
  assert.equal(ResponseTimes.LIMIT_MS, 4294967500);
  assert.equal(bucketResponseTime(4294967499.9999995), 4294967000, "the last time that fits rounds into the largest u32 bucket");
  for (const bad of [-1, NaN, Infinity, ResponseTimes.LIMIT_MS, "12", 12n, true, null]) {
    const times = new ResponseTimes();
    assert.throws(() => times.observe(/** @type {any} */ (bad)), (error) => error instanceof PluginError && /a response time is a number of milliseconds from 0 to below 4294967500/.test(error.message), String(bad));
    assert.equal(times.count, 0);
  }
});

/** A recorder that runs the calls its test hands it at test_start, and logs one item. */
class Reporter extends BaseTelemetryRecorder {
  static name = "reporter";
  static calls = [];

  onTestStart() {
    for (const call of Reporter.calls) {
      call(this);
    }
    this.logTelemetry(new TelemetryData({ type: "event", name: "STARTED" }), "started");
  }
}

class ReporterPlugin extends BaseTelemetryPlugin {
  loadWorkerTelemetryRecorders(env) {
    new Reporter(env);
  }
}

/** The harness's output for one test_start that runs `calls`. */
function run(calls, settings = {}) {
  Reporter.calls = calls;
  return new Harness(ReporterPlugin, "reporter", "worker", settings).event({ event: "test_start", time: 1 });
}

test("points of one series merge within a call and come back beside the telemetry", () => {
  const durations = new ResponseTimes();
  durations.observe(12.5);
  const out = run([
    (r) => [1, 2, 3].forEach(() => r.addCounter("shop.orders", undefined, { attributes: { endpoint: "/a", code: 200 } })),
    (r) => r.addCounter("shop.orders", 4, { attributes: new Map([["code", 200], ["endpoint", "/a"]]) }), // the same set
    (r) => r.addCounter("shop.orders", 2, { unit: "{order}", attributes: { endpoint: "/b", code: 200 } }),
    (r) => r.addCounter("shop.orders", 0, { attributes: { endpoint: "/a", code: "200" } }), // text is not an integer
    (r) => r.addCounter("shop.bytes", 2n ** 60n + 1n, { unit: "By" }),
    (r) => r.addCounter("shop.bytes", 1n, { unit: "By" }),
    (r) => r.setGauge("shop.queue", 3, { unit: "1", description: "Queue depth" }),
    (r) => r.setGauge("shop.queue", float(2.5)),
    (r) => r.recordResponseTimes("shop.duration", durations, { attributes: { endpoint: "/a", big: 2n ** 62n } }),
    () => durations.observe(145), // after the report: not in it, but in the next one
    (r) => r.recordResponseTimes("shop.duration", durations, { attributes: { big: 2n ** 62n, endpoint: "/a" } }),
  ]);
  assert.deepEqual(out, [{ telemetryType: "event", name: "STARTED", message: "started", fields: {}, fieldsJson: "" }], "metrics stay out of the items");
  assert.deepEqual(out.metrics.map((m) => [m.name, m.type, m.value, m.attributes]), [
    ["shop.orders", "counter", 7, { endpoint: "/a", code: 200 }],
    ["shop.orders", "counter", 2, { endpoint: "/b", code: 200 }],
    ["shop.orders", "counter", 0, { endpoint: "/a", code: "200" }],
    ["shop.bytes", "counter", 2n ** 60n + 2n, {}],
    ["shop.queue", "gauge", 2.5, {}],
    ["shop.duration", "responseTimes", { buckets: [[12, 2], [140, 1]], sumMs: 12.5 + 12.5 + 145 }, { endpoint: "/a", big: 2n ** 62n }],
  ]);
  assert.deepEqual(out.metrics.map((m) => [m.unit, m.description]), [["", ""], ["{order}", ""], ["", ""], ["By", ""], ["1", "Queue depth"], ["ms", ""]]);
});

test("each call hands back only its own points, and replay says where they came from", () => {
  class Ticking extends BaseTelemetryRecorder {
    static tickIntervalMs = 1000;
    onTick() {
      this.addCounter("ticks.seen");
    }
  }
  class TickingPlugin extends BaseTelemetryPlugin {
    loadWorkerTelemetryRecorders(env) {
      new Ticking(env);
    }
  }
  const harness = new Harness(TickingPlugin, "ticking", "worker");
  assert.deepEqual(harness.event({ event: "tick", time: 1 }).metrics.map((m) => m.value), [1]);
  assert.deepEqual(harness.event({ event: "tick", time: 2 }).metrics.map((m) => m.value), [1]);
  assert.deepEqual(harness.finish().metrics, []);
  const items = replay(TickingPlugin, [["worker-0", 10.5], ["worker-1", 10.7], ["worker-0", 12.2]].map(([node, time]) => ({ event: "test_start", role: "worker", node, time })));
  assert.deepEqual(items, []);
  assert.deepEqual(items.metrics.map((m) => [m.node, m.time, m.value, m.recorder, m.role]), [
    ["worker-0", 11, 1, "ticking", "worker"], ["worker-0", 12, 1, "ticking", "worker"],
  ]);
});

const MISTAKES = [
  [(r) => r.addCounter("c", -1), /addCounter c: an increment is a whole number >= 0 \(a BigInt past 2\^53\), got -1/],
  [(r) => r.addCounter("c", 1.5), /an increment is a whole number >= 0/],
  [(r) => r.addCounter("c", 2 ** 53), /an increment is a whole number >= 0 \(a BigInt past 2\^53\), got 9007199254740992/],
  [(r) => r.addCounter("c", 2n ** 64n), /an increment is a whole number/],
  [(r) => r.addCounter("c", true), /got true/],
  [(r) => [0, 1].forEach(() => r.addCounter("c", 2n ** 63n)), /add up past 2\^64 - 1/],
  [(r) => r.setGauge("g", NaN), /setGauge g: a value is a finite number, got NaN/],
  [(r) => r.setGauge("g", -Infinity), /a value is a finite number, got -Infinity/],
  [(r) => r.setGauge("g", float(Infinity)), /a value is a finite number/],
  [(r) => r.setGauge("g", false), /a value is a finite number, got false/],
  [(r) => r.setGauge("g", 3n), /a value is a finite number, got 3n/],
  [(r) => r.addCounter(42), /addCounter: the name must be a string, got 42/],
  [(r) => r.addCounter("c", 1, { unit: 5 }), /addCounter c: unit must be a string/],
  [(r) => r.setGauge("g", 1, { description: 5 }), /setGauge g: description must be a string, got 5/],
  [(r) => r.addCounter("c", 1, { attributes: { ratio: 0.5 } }), /attribute ratio: a value is a string, an integer .* or a boolean, got 0.5/],
  [(r) => r.addCounter("c", 1, { attributes: { n: 2n ** 63n } }), /attribute n: .* got 9223372036854775808n/],
  [(r) => r.addCounter("c", 1, { attributes: { n: null } }), /attribute n: .* got null/],
  [(r) => r.addCounter("c", 1, { attributes: new Map([[1, "a"]]) }), /attribute key 1 is not a string/],
  [(r) => r.addCounter("c", 1, { attributes: [["k", "v"]] }), /attributes must be an object/],
  [(r) => r.recordResponseTimes("d", { buckets: new Map(), sumMs: 0 }), /recordResponseTimes d: times must be a ResponseTimes/],
];

test("plainly wrong metric calls throw a PluginError at the call", () => {
  for (const [call, words] of MISTAKES) {
    assert.throws(() => run([call]), (error) => error instanceof PluginError && words.test(error.message), String(words));
  }
});

const REJECTED = [
  [(r) => r.addCounter("Orders"), "the name must be lower-case letters, digits, `_` and `.`, starting with a letter"],
  [(r) => r.addCounter("o".repeat(129)), "the name must be 1 to 128 bytes"],
  [(r) => r.addCounter("swarmtel_mine"), "names starting `swarmtel` are the runtime's own"],
  [(r) => r.setGauge("locust.client.duration", 1), "the name is a built-in metric's"],
  [(r) => r.addCounter("c", 1, { unit: "per second" }), "the unit must be at most 32 printable ASCII characters"],
  [(r) => r.addCounter("c", 1, { description: "back\\slash" }), 'without control characters, `\\` or `"`'],
  [(r) => r.addCounter("c", 1, { description: 'a "quote"' }), 'without control characters, `\\` or `"`'],
  [(r) => r.addCounter("swarmtel"), "names starting `swarmtel` are the runtime's own"],
  [(r) => r.addCounter("c", 1, { attributes: { __name__: "x" } }), "attribute key `__name__` is the outputs' own"],
  [(r) => r.addCounter("c", 1, { attributes: Object.fromEntries([...Array(17).keys()].map((i) => [`k${i}`, i])) }), "17 attributes, more than 16"],
  [(r) => r.addCounter("c", 1, { attributes: { "1k": 1 } }), 'attribute key "1k" must be 1 to 64 letters'],
  [(r) => r.addCounter("c", 1, { attributes: { quantile: 1 } }), "attribute key `quantile` is the outputs' own"],
  [(r) => r.addCounter("c", 1, { attributes: { "http.code": 1, http_code: 2 } }), "attribute key `http_code` repeats another"],
  [(r) => r.addCounter("c", 1, { attributes: { url: "é".repeat(129) } }), "attribute `url`: a text value must be at most 256 bytes"],
  [(r) => [r.addCounter("same"), r.setGauge("same", 1)], "a gauge point for a counter metric"],
  [(r) => [...Array(1001).keys()].forEach((i) => r.addCounter("c", 1, { attributes: { i } })), "more than 1000 points in one call"],
];

test("the harness rejects points the host rejects, in the host's words", () => {
  for (const [call, reason] of REJECTED) {
    assert.throws(() => run([call]), (error) => error instanceof MetricRejected && error.message.includes("rejected by the host: ") && error.message.includes(reason), reason);
  }
});

test("the harness keeps the host's series cap over calls", () => {
  class Growing extends BaseTelemetryRecorder {
    static tickIntervalMs = 1000;
    ticks = 0;
    onTick() {
      this.ticks++;
      this.addCounter("grows", 1, { attributes: { tick: Math.min(this.ticks, 3) } });
    }
  }
  class GrowingPlugin extends BaseTelemetryPlugin {
    loadWorkerTelemetryRecorders(env) {
      new Growing(env);
    }
  }
  const harness = new Harness(GrowingPlugin, "growing", "worker", { maxMetricSeries: 2 });
  harness.event({ event: "tick", time: 1 });
  harness.event({ event: "tick", time: 2 });
  assert.throws(() => harness.event({ event: "tick", time: 3 }), /a new series past the plugin's 2 \(max_metric_series\)/);
});
