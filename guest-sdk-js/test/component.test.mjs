// A built component speaks WIT 0.2.0 as the harness does, with either engine: its description,
// and the same batch handed to the component (through jco's bindings, as a host would) and to
// the harness's dispatch, give the same telemetry and metric points. This needs no swarmtel
// binary.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { RecorderState } from "../src/dispatch.js";
import { describePlugin } from "../src/plugin.js";
import plugin from "./fixtures/metrics.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const sdk = path.resolve(here, "..");
const cli = path.join(sdk, "bin/swarmtel-recorder.js");
/** jco, which componentize-js depends on: transpiles a component into JavaScript. */
const jco = path.join(sdk, "node_modules/@bytecodealliance/jco/src/jco.js");
const jcoDist = path.join(sdk, "node_modules/@bytecodealliance/jco/dist/jco.js");

const CONFIG = { recorder: "metrics_recorder", role: "master", node: "master", options: [] };

/** The batch a host would send: requests with and without exception types, then events. */
const BATCH_SOURCE = `({
  requests: {
    endpoints: [{ requestType: "GET", name: "/a" }, { requestType: "POST", name: "/b" }],
    endpoint: Uint32Array.from([0, 1, 0, 1]),
    startTime: Float64Array.from([1, 2, 3, 4]),
    responseTimeMs: Float64Array.from([12.5, 145, 2.5, 1050]),
    responseLength: BigUint64Array.from([1n, 2n, 3n, 4n]),
    statusCode: Uint16Array.from([200, 500, 200, 0]),
    failures: [{ index: 1, exception: "HTTPError('500')", exceptionType: "HTTPError" }, { index: 3, exception: "boom", exceptionType: "" }],
    details: [],
  },
  events: [
    { time: 5, event: { tag: "process-sample", val: { cpuPercent: 37.5, memoryBytes: 1099511627776n, networkSentBytes: 10n, networkRecvBytes: 20n } } },
    { time: 6, event: { tag: "stats-snapshot", val: {
      userCount: 2,
      entries: [],
      total: { requestType: "", name: "Aggregated", numRequests: 4n, numFailures: 2n, totalResponseTimeMs: 1210, minResponseTimeMs: 2.5,
        maxResponseTimeMs: 1050, totalContentLength: 10n, responseTimes: [[2.5, 1n], [12, 1n], [140, 1n], [1000, 1n]], currentRps: 1,
        currentFailPerSec: 0.5, startTime: 0.5, lastRequestTime: undefined },
      errors: [{ requestType: "POST", name: "/b", error: "boom", occurrences: 1n, firstSeen: 4, lastSeen: undefined }],
    } } },
    { time: 7, event: { tag: "test-stop" } },
  ],
})`;

/** JSON with BigInts written `123n`, so outputs compare exactly. */
const SHOW = "(value) => JSON.stringify(value, (key, v) => (typeof v === 'bigint' ? `${v}n` : v))";

function harnessOutput() {
  const show = eval(SHOW);
  const state = new RecorderState(plugin, CONFIG);
  return show({ describe: describePlugin(plugin).info, handle: state.handle(eval(BATCH_SOURCE)), finish: state.finish() });
}

for (const engine of ["quickjs", "spidermonkey"]) {
  test(`a ${engine} component hands back the harness's telemetry and metric points`, { timeout: 300_000 }, (t) => {
    const transpiler = [jco, jcoDist].find((file) => existsSync(file));
    if (transpiler === undefined) {
      t.skip("no jco in node_modules (it comes with componentize-js: run scripts/js-env.sh)");
      return;
    }
    const work = mkdtempSync(path.join(tmpdir(), "swarmtel-component-test-"));
    try {
      symlinkSync(path.join(sdk, "node_modules"), path.join(work, "node_modules"));
      const wasm = path.join(work, "metrics.wasm");
      const built = spawnSync(process.execPath, [cli, "build", "test/fixtures/metrics.js", "-o", wasm, "--engine", engine], { cwd: sdk, encoding: "utf8" });
      assert.equal(built.status, 0, built.stderr);
      const transpiled = spawnSync(process.execPath, [transpiler, "transpile", wasm, "-o", path.join(work, "js"), "--map", "swarmtel:telemetry/host=./host.js"], { encoding: "utf8" });
      assert.equal(transpiled.status, 0, transpiled.stderr);
      writeFileSync(path.join(work, "js", "host.js"), "export function log(level, message) { console.error(`${level}: ${message}`); }\n");
      const driver = [
        `const { plugin } = await import("./js/metrics.js");`,
        `const show = ${SHOW};`,
        `const recorder = plugin.createRecorder(${JSON.stringify(CONFIG)});`,
        `console.log(show({ describe: plugin.describe(), handle: recorder.handle(${BATCH_SOURCE}), finish: recorder.finish() }));`,
      ].join("\n");
      // Node 20's V8 compiles QuickJS's core module (extended constant expressions) only with this flag.
      const flags = Number(process.versions.node.split(".")[0]) < 21 ? ["--experimental-wasm-extended-const"] : [];
      const ran = spawnSync(process.execPath, [...flags, "--input-type=module", "-e", driver], { cwd: work, encoding: "utf8" });
      assert.equal(ran.status, 0, ran.stderr);
      const component = JSON.parse(ran.stdout);
      assert.deepEqual(component, JSON.parse(harnessOutput()));
      assert.deepEqual(component.describe.options[0].default, { tag: "integer", val: "1000n" });
      // And what that is: the points of the call, each series once, 64-bit integers past 2^53
      // (QuickJS's bindings carry them as numbers, so these are powers of two).
      const points = component.handle.metrics.map((point) => [point.name, point.value.tag, point.value.val, point.attributes.length]);
      assert.deepEqual(points, [
        ["fixture.requests", "counter", "2n", 3], // GET /a, 200, not failed: twice
        ["fixture.requests", "counter", "1n", 3],
        ["fixture.requests", "counter", "1n", 3],
        ["fixture.bytes", "counter", `${2n ** 60n}n`, 1],
        ["fixture.cpu", "gauge", 37.5, 0],
        ["fixture.memory", "gauge", 1099511627776, 0],
        ["fixture.duration", "response-times", { buckets: [[2, "1n"], [12, "1n"], [140, "1n"], [1000, "1n"]], sumMs: 1210 }, 0],
      ]);
      assert.deepEqual(component.handle.metrics.find((point) => point.name === "fixture.bytes").attributes, [{ key: "big", value: { tag: "integer", val: `${-(2n ** 62n)}n` } }]);
      assert.deepEqual(component.handle.telemetry[0].fields, JSON.stringify({
        failures: [[1, "HTTPError('500')", "HTTPError"], [3, "boom", ""]], types: [null, "HTTPError", null, ""],
      }));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
}
