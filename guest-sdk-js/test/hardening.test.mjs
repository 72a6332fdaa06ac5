// Defects found in the twin Python SDK, checked here: non-finite numbers and host-owned keys
// in fields, store_false, listeners that depend on options, removeListener, and (with the
// real swarmtel) what the host sees of them.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { BaseTelemetryPlugin, BaseTelemetryRecorder, PluginError, TelemetryData, float } from "swarmtel-recorder";
import { Harness, formatTime, readEventStream, replay } from "swarmtel-recorder/testing";
import { describePlugin, registrationOf } from "../src/plugin.js";

import { HardeningPlugin } from "./fixtures/hardening.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const sdk = path.resolve(here, "..");
const root = path.resolve(sdk, "..");
const cli = path.join(sdk, "bin/swarmtel-recorder.js");
const out = path.join(root, "target/js-sdk-test/hardening");

/** A harness on a recorder whose test_start logs `fields`. */
function logging(fields) {
  class Logs extends BaseTelemetryRecorder {
    onTestStart() {
      this.logTelemetry(new TelemetryData({ type: "metric", name: "M" }), "m", fields);
    }
  }
  class LogsPlugin extends BaseTelemetryPlugin {
    loadWorkerTelemetryRecorders(env) {
      new Logs(env);
    }
  }
  return new Harness(LogsPlugin, "logs", "worker");
}

test("NaN and infinities in fields throw at the call, naming the field", () => {
  for (const [fields, where] of [
    [{ ratio: NaN }, /field ratio is NaN: JSON has no NaN or Infinity/],
    [{ x: float(Infinity) }, /field x is Infinity/],
    [{ nested: { list: [1, -Infinity] } }, /field nested\.list\[1\] is -Infinity/],
  ]) {
    assert.throws(() => logging(fields).event({ event: "test_start", time: 1 }), (error) => {
      assert.ok(error instanceof PluginError);
      assert.match(error.message, /^logTelemetry M: /);
      assert.match(error.message, where);
      return true;
    });
  }
  assert.deepEqual(logging({ ok: null, n: float(2) }).event({ event: "test_start", time: 1 })[0].fields, { ok: null, n: 2 });
});

test("fields the host refuses throw: host-owned keys, fields that are not an object", () => {
  for (const key of ["time", "run_id", "testplan", "source", "source_id", "plugin", "telemetry_type", "telemetry_name"]) {
    assert.throws(
      () => logging({ [key]: 1 }).event({ event: "test_start", time: 1 }),
      new RegExp(`field \`${key}\` is owned by the host and cannot be set by a plugin`),
    );
  }
  assert.throws(() => logging(new Map([["source", "x"]])).event({ event: "test_start", time: 1 }), /field `source` is owned by the host/);
  assert.throws(() => logging({ toJSON: () => ({ plugin: 1 }) }).event({ event: "test_start", time: 1 }), /field `plugin` is owned/);
  for (const [fields, kind] of [[[1], "an array"], ["text", "string"], [5, "number"], [float(1), "a float\\(\\)"], [new Uint8Array(2), "a typed array"]]) {
    assert.throws(() => logging(fields).event({ event: "test_start", time: 1 }), new RegExp(`fields must be an object, got ${kind}`));
  }
  const many = Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`f${i}`, i]));
  assert.throws(() => logging(many).event({ event: "test_start", time: 1 }), /257 fields; the host takes at most 256/);
  assert.throws(() => new TelemetryData({ type: "event", name: "has space" }), /must start with a letter/);
  assert.throws(() => new TelemetryData({ type: "event", name: "9lives" }), /must start with a letter/);
  // Still fine: a key the host does not own, an undefined host key (not written), a Map.
  assert.deepEqual(logging({ times: 1, time: undefined }).event({ event: "test_start", time: 1 })[0].fields, { times: 1 });
  assert.deepEqual(logging(new Map([["a", 1]])).event({ event: "test_start", time: 1 })[0].fields, { a: 1 });
});

test("store_false behaves like argparse: true unless the flag is given", () => {
  const { info } = describePlugin(registrationOf(HardeningPlugin));
  const option = info.options.find((o) => o.name === "no-cache");
  assert.deepEqual(option.default, { tag: "boolean", val: false }, "the host's value says whether the flag is given");
  const absent = new Harness(HardeningPlugin, "hardening_recorder", "worker");
  assert.equal(absent.recorder.env.parsedOptions.no_cache, true);
  const given = new Harness(HardeningPlugin, "hardening_recorder", "worker", { options: { "no-cache": true } });
  assert.equal(given.recorder.env.parsedOptions.no_cache, false);
  assert.equal(given.recorder.env.parsedOptions.noCache, false);
  class Defaulted extends BaseTelemetryPlugin {
    addArguments(parser) {
      parser.addArgument("--quiet", { action: "store_false", default: false });
      parser.addArgument("--loud", { action: "store_true" });
    }
    loadWorkerTelemetryRecorders(env) {
      new (class Rec extends BaseTelemetryRecorder { onTestStart() {} })(env);
    }
  }
  const defaulted = new Harness(Defaulted, "rec", "worker");
  assert.equal(defaulted.recorder.env.parsedOptions.quiet, false);
  assert.equal(defaulted.recorder.env.parsedOptions.loud, false);
  assert.equal(new Harness(Defaulted, "rec", "worker", { options: { loud: true } }).recorder.env.parsedOptions.loud, true);
});

test("a listener added only for some options refuses creation, clearly", () => {
  assert.ok(new Harness(HardeningPlugin, "hardening_recorder", "worker"));
  assert.throws(
    () => new Harness(HardeningPlugin, "hardening_recorder", "worker", { options: { extra: true } }),
    /recorder hardening_recorder listens to quit with these options, but did not when the plugin was described \(every option at its default\)/,
  );
});

test("removeListener stops a listener, an added method and a hook method alike", () => {
  class Removing extends BaseTelemetryRecorder {
    constructor(env) {
      super(env);
      this.calls = [];
      env.events.test_start.addListener(this.onTestStart);
      env.events.test_stop.addListener(this.onTestStop);
    }
    onTestStart() {
      this.calls.push("start");
      // After creation: stop listening to test_start and to the hook method onQuit.
      this.env.events.test_start.removeListener(this.onTestStart);
      this.env.events.quit.removeListener(this.onQuit);
    }
    onTestStop() {
      this.calls.push("stop");
    }
    onQuit() {
      this.calls.push("quit");
    }
  }
  class RemovingPlugin extends BaseTelemetryPlugin {
    loadWorkerTelemetryRecorders(env) {
      const recorder = new Removing(env);
      env.events.test_stop.removeListener(recorder.onTestStop);
    }
  }
  const harness = new Harness(RemovingPlugin, "removing", "worker");
  for (const event of ["test_start", "test_start", "test_stop", "quit"]) {
    harness.event({ event, time: 1 });
  }
  assert.deepEqual(harness.recorder.calls, ["start"]);
  const { info } = describePlugin(registrationOf(RemovingPlugin));
  assert.deepEqual(info.recorders[0].events, ["test-start", "quit"], "a removed hook is not subscribed");
});

function swarmtel() {
  const candidates = [process.env.SWARMTEL_BIN, path.join(root, "target/debug/swarmtel"), path.join(root, "target/release/swarmtel")];
  return candidates.find((candidate) => candidate && existsSync(candidate));
}

test("with the real swarmtel: option-dependent listeners refuse creation, NaN traps with its field and the author's line", { timeout: 300_000 }, (t) => {
  const binary = swarmtel();
  if (binary === undefined) {
    t.skip("no swarmtel binary (set SWARMTEL_BIN)");
    return;
  }
  mkdirSync(out, { recursive: true });
  const wasm = path.join(out, "hardening.wasm");
  const built = spawnSync(process.execPath, [cli, "build", "test/fixtures/hardening.js", "-o", wasm], { cwd: sdk, encoding: "utf8" });
  assert.equal(built.status, 0, built.stderr);
  const events = path.join(out, "events.ndjson");
  writeFileSync(events, `${JSON.stringify({ event: "test_start", role: "worker", node: "worker-0", time: 1795557122.1 })}\n`);
  const run = (name, options, command) => {
    const config = path.join(out, `${name}.toml`);
    writeFileSync(config, `[run]\ntestplan = "t"\nrun_id = "t"\n\n[cache]\ndir = "cache"\n\n[[plugins]]\npath = "hardening.wasm"\n\n[plugins.options]\n${options}\n`);
    return spawnSync(binary, [...command, "--config", config, ...(command[0] === "replay" ? [events] : [])], { encoding: "utf8" });
  };
  const refused = run("extra", "extra = true", ["check"]);
  assert.equal(refused.status, 1, refused.stderr);
  assert.match(refused.stderr, /recorder `hardening_recorder` for role worker refused: recorder hardening_recorder listens to quit with these options, but did not when the plugin was described/);
  const nan = run("nan", "nan = true", ["replay"]);
  assert.match(nan.stderr, /recorder hardening_recorder threw logTelemetry STARTED: field ratio is NaN: JSON has no NaN or Infinity/);
  assert.ok(!nan.stdout.includes('"telemetry_name":"STARTED"'));
  // The logged stack points at the author's file and line, not at the bundle.
  assert.match(nan.stderr, /at onTestStart \(test\/fixtures\/hardening\.js:21:\d+\)/);
  assert.match(nan.stderr, /at logTelemetry \(swarmtel-recorder\/src\/plugin\.js:\d+:\d+\)/);
  const good = run("good", "no-cache = true", ["replay"]);
  assert.equal(good.status, 0, good.stderr);
  const line = good.stdout.split("\n").map((text) => text && JSON.parse(text)).find((item) => item && item.telemetry.telemetry_name === "STARTED");
  assert.equal(line.telemetry.no_cache, false, "store_false: the flag given in the config");
  assert.equal(line.time, "2026-11-24T21:52:02.099Z", "the host truncates to milliseconds");
  // The harness's replay gives the same time, in the same form.
  const [item] = replay(HardeningPlugin, [{ event: "test_start", role: "worker", node: "worker-0", time: 1795557122.1 }], { options: { "no-cache": true } });
  assert.equal(item.rfc3339, line.time);
  assert.deepEqual(item.fields, { no_cache: false, ratio: 0.5 });
});

test("replay's rfc3339 cuts to milliseconds as the host does", () => {
  assert.equal(formatTime(1795557122.1), "2026-11-24T21:52:02.099Z", "1795557122.0999999046... as a double");
  assert.equal(formatTime(1795557122.5), "2026-11-24T21:52:02.500Z");
  assert.equal(formatTime(1.9999999), "1970-01-01T00:00:01.999Z");
  assert.equal(formatTime(NaN), "1970-01-01T00:00:00.000Z");
  assert.equal(formatTime(-5), "1970-01-01T00:00:00.000Z");
  assert.equal(formatTime(1e20), "9999-12-31T23:59:59.000Z");
});

test("replay gives each (node, recorder) its own module state, as the host does", { timeout: 300_000 }, async (t) => {
  const { default: plugin } = await import("./fixtures/module-state.js");
  const stream = ["worker-0", "worker-1", "worker-2", "worker-0"].map((node, i) => ({ event: "test_start", role: "worker", node, time: 10 + i }));
  const isolated = replay(plugin, stream);
  assert.deepEqual(isolated.map((item) => `${item.node} ${item.fields.started}`), ["worker-0 1", "worker-1 1", "worker-2 1", "worker-0 2"]);
  // A listener's error leaves the realm with its stack mapped to the author's file.
  assert.throws(
    () => replay(HardeningPlugin, stream, { options: { nan: true }, isolate: true }),
    (error) => /field ratio is NaN/.test(error.message) && /at HardeningRecorder\.onTestStart \(.*test\/fixtures\/hardening\.js:21:\d+\)/.test(error.stack),
  );
  const shared = replay(plugin, stream, { isolate: false });
  assert.deepEqual(shared.map((item) => item.fields.started), [1, 2, 3, 4], "isolate: false shares one realm");
  const binary = swarmtel();
  if (binary === undefined) {
    t.skip("no swarmtel binary (set SWARMTEL_BIN)");
    return;
  }
  mkdirSync(out, { recursive: true });
  const wasm = path.join(out, "module-state.wasm");
  const built = spawnSync(process.execPath, [cli, "build", "test/fixtures/module-state.js", "-o", wasm], { cwd: sdk, encoding: "utf8" });
  assert.equal(built.status, 0, built.stderr);
  const events = path.join(out, "module-state.ndjson");
  writeFileSync(events, stream.map((line) => JSON.stringify(line)).join("\n"));
  const config = path.join(out, "module-state.toml");
  writeFileSync(config, `[run]\ntestplan = "t"\nrun_id = "t"\n\n[cache]\ndir = "cache"\n\n[[plugins]]\npath = "module-state.wasm"\n`);
  const host = spawnSync(binary, ["replay", "--config", config, events], { encoding: "utf8" });
  assert.equal(host.status, 0, host.stderr);
  const lines = host.stdout.split("\n").filter((text) => text.includes('"STARTED"')).map((text) => JSON.parse(text));
  assert.deepEqual(lines.map((line) => `${line.telemetry.source_id} ${line.telemetry.started}`), isolated.map((item) => `${item.node} ${item.fields.started}`));
  assert.deepEqual(lines.map((line) => line.time), isolated.map((item) => item.rfc3339));
  // The CLI's replay isolates too.
  const cliReplay = spawnSync(process.execPath, [cli, "replay", "test/fixtures/module-state.js", events], { cwd: sdk, encoding: "utf8" });
  assert.equal(cliReplay.status, 0, cliReplay.stderr);
  assert.deepEqual(cliReplay.stdout.trim().split("\n").map((text) => JSON.parse(text).fields.started), [1, 1, 1, 2]);
});

test("the event stream's u64 arguments stay exact past 2^53, as the host reads them", () => {
  mkdirSync(out, { recursive: true });
  const file = path.join(out, "big-lengths.ndjson");
  writeFileSync(file, [
    '{"event":"request","role":"worker","node":"w","time":1,"request_type":"GET","name":"/","response_time":1,"response_length":18446744073709551615}',
    '{"event":"request","role":"worker","node":"w","time":1,"request_type":"GET","name":"/","response_length":9007199254740993,"response_time":1}',
    '{"event":"usage_monitor","role":"worker","node":"w","time":2,"cpu_usage":1,"memory_usage":9007199254740995}',
  ].join("\n"));
  const [first, second, usage] = readEventStream(file);
  assert.equal(first.request.response_length, 18446744073709551615n);
  assert.equal(second.request.response_length, 9007199254740993n);
  assert.equal(usage.event.val.memoryUsage, 9007199254740995n);
});
