// The author's API: plugin description, options, listeners, telemetry and its JSON.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  BaseTelemetryPlugin,
  BaseTelemetryRecorder,
  Environment,
  PluginError,
  TelemetryData,
  float,
} from "swarmtel-recorder";
import { encodeJson, floatText } from "../src/json.js";
import { describePlugin, registrationOf } from "../src/plugin.js";
import { Harness } from "swarmtel-recorder/testing";

import customPlugin from "./fixtures/custom-telemetry.js";
import { EverythingPlugin } from "./fixtures/everything.js";

test("the seed's plugin describes itself as the Rust custom-telemetry does", () => {
  const { info } = describePlugin(customPlugin);
  assert.equal(info.id, "custom-telemetry-js");
  assert.equal(info.version, "0.1.0");
  assert.deepEqual(info.options, [
    {
      name: "custom-option",
      optionType: "text",
      default: { tag: "text", val: "default-value" },
      help: "Example custom argument",
      envVar: "LOCUST_CUSTOM_OPTION",
    },
  ]);
  assert.deepEqual(info.recorders, [
    {
      name: "custom_telemetry_recorder",
      roles: ["master", "worker"],
      events: ["test-start", "test-stop"],
      tickIntervalMs: undefined,
      requestExtras: { url: false, context: false },
    },
  ]);
  assert.deepEqual(info.schemas, []);
});

test("option types, defaults and the names parsedOptions answers to", () => {
  const { info } = describePlugin(registrationOf(EverythingPlugin));
  assert.equal(info.id, "everything");
  const byName = Object.fromEntries(info.options.map((o) => [o.name, o]));
  assert.deepEqual(byName["max-users"].default, { tag: "integer", val: 10n });
  assert.deepEqual(byName.ratio.default, { tag: "float", val: 0.5 });
  assert.deepEqual(byName.verbose.default, { tag: "boolean", val: false });
  assert.equal(byName.label.default, undefined);
  assert.equal(byName.label.optionType, "text");

  const harness = new Harness(EverythingPlugin, "everything_recorder", "worker", {
    options: { max_users: 3, label: "x" },
  });
  const options = harness.recorder.env.parsedOptions;
  assert.equal(options["max-users"], 3);
  assert.equal(options.max_users, 3);
  assert.equal(options.maxUsers, 3);
  assert.equal(options.ratio, 0.5);
  assert.equal(options.verbose, false);
  assert.equal(options.label, "x");
  assert.throws(() => new Harness(EverythingPlugin, "everything_recorder", "worker", { options: { nope: 1 } }), /option nope is not declared/);
  assert.throws(() => new Harness(EverythingPlugin, "everything_recorder", "worker", { options: { ratio: "high" } }), /ratio must be of type float/);
});

test("a recorder refusing its options refuses creation with its message", () => {
  assert.throws(
    () => new Harness(EverythingPlugin, "everything_recorder", "worker", { options: { "max-users": -1 } }),
    /max-users must not be negative/,
  );
});

test("recorder names, tick interval, request extras and events from listeners and methods", () => {
  const { info } = describePlugin(registrationOf(EverythingPlugin));
  const [recorder] = info.recorders;
  assert.equal(recorder.name, "everything_recorder", "class name in snake_case by default");
  assert.deepEqual(recorder.roles, ["master", "worker", "standalone"]);
  assert.equal(recorder.tickIntervalMs, 1000);
  assert.deepEqual(recorder.requestExtras, { url: true, context: true });
  for (const kind of ["test-start", "stats-snapshot", "request", "tick", "quit"]) {
    assert.ok(recorder.events.includes(kind), kind);
  }
  assert.ok(!recorder.events.includes(null), "finish is no event kind");
});

test("option declarations fail clearly", () => {
  class Untyped extends BaseTelemetryPlugin {
    addArguments(parser) {
      parser.addArgument("--size", { default: 3 });
    }
  }
  assert.throws(() => describePlugin(registrationOf(Untyped)), (error) => {
    assert.ok(error instanceof PluginError);
    assert.match(error.message, /option --size has no type/);
    assert.match(error.location, /api\.test\.mjs:\d+:\d+$/);
    return true;
  });
  class WrongDefault extends BaseTelemetryPlugin {
    addArguments(parser) {
      parser.addArgument("--size", { type: "integer", default: 1.5 });
    }
  }
  assert.throws(() => describePlugin(registrationOf(WrongDefault)), /default 1.5 is not of type integer/);
});

test("a plugin with no recorder, or an unknown hook, fails with the place and a suggestion", () => {
  class Empty extends BaseTelemetryPlugin {}
  assert.throws(() => describePlugin(registrationOf(Empty)), /creates no recorder/);
  class Typo extends BaseTelemetryRecorder {
    constructor(env) {
      super(env);
      env.events.testStrat.addListener(() => {});
    }
  }
  class TypoPlugin extends BaseTelemetryPlugin {
    loadWorkerTelemetryRecorders(env) {
      new Typo(env);
    }
  }
  assert.throws(() => describePlugin(registrationOf(TypoPlugin)), (error) => {
    assert.match(error.message, /env\.events\.testStrat is not a hook \(did you mean testStart\?\)/);
    assert.match(error.location, /api\.test\.mjs:\d+:\d+$/);
    return true;
  });
});

test("listeners are added only while the recorder is created", () => {
  const harness = new Harness(customPlugin, "custom_telemetry_recorder", "master");
  assert.throws(() => harness.recorder.env.events.tick.addListener(() => {}), /after the recorder was created/);
  const env = new Environment({ role: "worker", node: "w", parsedOptions: {} });
  assert.throws(() => env.events.test_start.addListener(() => {}), /before any recorder/);
  assert.throws(() => new BaseTelemetryRecorder({}), /needs the env/);
});

test("TelemetryData checks its type and name", () => {
  assert.deepEqual({ ...new TelemetryData({ type: "metric", name: "x" }) }, { type: "metric", name: "x" });
  assert.throws(() => new TelemetryData({ type: "log", name: "x" }), /"event" or "metric"/);
  assert.throws(() => new TelemetryData({ type: "event" }), /needs a name/);
});

test("floats are written as Rust's serde_json writes an f64", () => {
  const cases = [
    [20, "20.0"], [0.5, "0.5"], [1.02, "1.02"], [-3, "-3.0"], [0, "0.0"], [-0, "-0.0"],
    [1e15, "1000000000000000.0"], [1e16, "1e16"], [1.5e300, "1.5e300"], [123456789.125, "123456789.125"],
    [0.0001, "0.0001"], [0.00001, "0.00001"], [0.000001, "1e-6"], [1.234e-7, "1.234e-7"], [4.413, "4.413"],
  ];
  for (const [value, text] of cases) {
    assert.equal(floatText(value), text, String(value));
    assert.equal(Number(text), value);
  }
});

test("fields: whole numbers are integers, float() marks floats, BigInts stay exact", () => {
  assert.equal(
    encodeJson({ n: 3, x: float(3), y: 2.5, big: 2n ** 64n, s: "é\"", a: [1, float(1)], skip: undefined, nested: { ok: true, none: null } }),
    '{"n":3,"x":3.0,"y":2.5,"big":18446744073709551616,"s":"é\\"","a":[1,1.0],"nested":{"ok":true,"none":null}}',
  );
  assert.equal(JSON.stringify({ x: float(3) }), '{"x":3}', "plain JSON.stringify sees a number");
});

test("logTelemetry hands the host the item, its fields as JSON text", () => {
  const harness = new Harness(customPlugin, "custom_telemetry_recorder", "worker", {
    options: { "custom-option": "from-test" },
  });
  const [item] = harness.event({ event: "test_stop", time: 2 });
  assert.deepEqual(item, {
    telemetryType: "event",
    name: "CUSTOM_STOP",
    message: "Custom telemetry recorder stopped",
    fields: { custom_option: "from-test" },
    fieldsJson: '{"custom_option":"from-test"}',
  });
  const [start] = harness.event({ event: "test_start", time: 3 });
  assert.equal(start.fieldsJson, "", "no fields: empty text");
  assert.throws(() => harness.recorder.logTelemetry(new TelemetryData({ type: "event", name: "X" }), "m", [1]), /must be an object/);
});

test("a plugin that checks its options skips the checks while probing", () => {
  class NeedsToken extends BaseTelemetryRecorder {
    onTestStart() {}
  }
  class Strict extends BaseTelemetryPlugin {
    addArguments(parser) {
      parser.addArgument("--token", { type: String });
    }
    loadWorkerTelemetryRecorders(env) {
      if (env.parsedOptions.token === null) {
        throw new Error("--token is required");
      }
      new NeedsToken(env);
    }
  }
  assert.throws(() => describePlugin(registrationOf(Strict)), /--token is required \(while describing the plugin: .*env\.probing/);
  class Careful extends Strict {
    loadWorkerTelemetryRecorders(env) {
      if (!env.probing && env.parsedOptions.token === null) {
        throw new Error("--token is required");
      }
      new NeedsToken(env);
    }
  }
  assert.equal(describePlugin(registrationOf(Careful)).info.recorders[0].name, "needs_token");
  assert.throws(() => new Harness(Careful, "needs_token", "worker"), /--token is required/);
  assert.equal(new Harness(Careful, "needs_token", "worker", { options: { token: "t" } }).recorder.env.probing, false);
});
