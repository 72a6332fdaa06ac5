// The build command: an author's mistakes fail fast with one line naming the file and line;
// a good recorder becomes a component that swarmtel loads with default settings.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const sdk = path.resolve(here, "..");
const root = path.resolve(sdk, "..");
const cli = path.join(sdk, "bin/swarmtel-recorder.js");
const out = path.join(root, "target/js-sdk-test");

/** Runs the CLI from the SDK folder; returns status and output. */
function run(...args) {
  const result = spawnSync(process.execPath, [cli, ...args], { cwd: sdk, encoding: "utf8" });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const mistakes = [
  ["syntax-error.js", /^swarmtel-recorder: test\/fixtures\/syntax-error\.js:5:15: syntax error: Unexpected ";"$/],
  ["bad-hook.js", /^swarmtel-recorder: test\/fixtures\/bad-hook\.js:6:16: env\.events\.test_strat is not a hook \(did you mean test_start\?\)$/],
  ["bad-method.js", /^swarmtel-recorder: test\/fixtures\/bad-method\.js:4:3: recorder typo_recorder: method onTestStrat is not a hook \(did you mean onTestStart\?\)$/],
  ["untyped-option.js", /^swarmtel-recorder: test\/fixtures\/untyped-option\.js:10:11: option --custom-option has no type: add type: "text"/],
  ["no-plugin.js", /^swarmtel-recorder: test\/fixtures\/no-plugin\.js: no plugin registered: call registerPlugin\(/],
  ["tick-without-interval.js", /^swarmtel-recorder: test\/fixtures\/tick-without-interval\.js:6:21: recorder tick_recorder listens to tick but has no tick interval/],
];

for (const [fixture, message] of mistakes) {
  test(`build refuses ${fixture} with one line naming the place`, () => {
    const target = path.join(out, `${fixture}.wasm`);
    const result = run("build", `test/fixtures/${fixture}`, "-o", target);
    assert.equal(result.status, 1, result.stderr);
    const lines = result.stderr.trim().split("\n");
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0], message);
    assert.equal(existsSync(target), false, "no output on failure");
  });
}

test("build of a missing file, and usage errors, fail with a message", () => {
  assert.match(run("build", "test/fixtures/absent.js", "-o", "x.wasm").stderr, /absent\.js: no such file/);
  assert.match(run("build", "test/fixtures/custom-telemetry.js", "-o", "x.wasm", "--engine", "v8").stderr, /unknown engine v8: use spidermonkey or quickjs/);
  assert.match(run("build", "test/fixtures/custom-telemetry.js").stderr, /build needs a recorder and -o/);
  assert.match(run("frobnicate").stderr, /unknown command frobnicate/);
});

test("describe prints what the plugin declares", () => {
  const result = run("describe", "test/fixtures/custom-telemetry.js");
  assert.equal(result.status, 0, result.stderr);
  const info = JSON.parse(result.stdout);
  assert.equal(info.id, "custom-telemetry-js");
  assert.deepEqual(info.recorders.map((r) => r.name), ["custom_telemetry_recorder"]);
});

/** The swarmtel binary: $SWARMTEL_BIN, else a build in target/. */
function swarmtel() {
  const candidates = [process.env.SWARMTEL_BIN, path.join(root, "target/release/swarmtel"), path.join(root, "target/debug/swarmtel")];
  return candidates.find((candidate) => candidate && existsSync(candidate));
}

for (const engine of ["spidermonkey", "quickjs"]) {
  test(`build (${engine}) makes a component that swarmtel loads and runs with default settings`, { timeout: 300_000 }, (t) => {
    mkdirSync(out, { recursive: true });
    const wasm = path.join(out, `custom_telemetry_js_${engine}.wasm`);
    const result = run("build", "test/fixtures/custom-telemetry.js", "-o", wasm, "--engine", engine);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stderr, /plugin custom-telemetry-js 0\.1\.0: custom_telemetry_recorder \(master, worker; test-start, test-stop\)/);
    assert.match(result.stderr, new RegExp(`MB \\(${engine}\\) in`));
    const bytes = readFileSync(wasm);
    // A component, not a core module: magic, then version 0x0d and layer 1.
    assert.deepEqual([...bytes.subarray(0, 8)], [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]);
    const binary = swarmtel();
    if (binary === undefined) {
      t.skip("no swarmtel binary (set SWARMTEL_BIN or build target/release/swarmtel)");
      return;
    }
    const config = path.join(out, `custom_telemetry_js_${engine}.toml`);
    writeFileSync(
      config,
      [
        "[run]", 'testplan = "js-sdk-test"', 'run_id = "js-sdk-test"',
        "[cache]", 'dir = "cache"',
        "[[plugins]]", `path = "custom_telemetry_js_${engine}.wasm"`,
        "[plugins.options]", 'custom-option = "from-config"', "",
      ].join("\n"),
    );
    const replay = spawnSync(binary, ["replay", "--config", config, path.join(root, "examples/locust-run.ndjson")], { encoding: "utf8" });
    assert.equal(replay.status, 0, replay.stderr);
    const lines = replay.stdout.trim().split("\n").map((line) => JSON.parse(line)).filter((line) => line.telemetry.plugin === "custom-telemetry-js");
    assert.deepEqual(
      lines.map((line) => `${line.telemetry.source_id} ${line.telemetry.telemetry_name} ${line.telemetry.custom_option ?? ""}`),
      ["master CUSTOM_START ", "worker-1 CUSTOM_START ", "worker-0 CUSTOM_START ", "master CUSTOM_STOP from-config", "worker-1 CUSTOM_STOP from-config", "worker-0 CUSTOM_STOP from-config"],
    );
  });
}
