// A description the host refuses fails `describe` and `build` with the host's own words: each
// case is checked against the verdict of the real `swarmtel check` on a component built
// without the SDK's copy of the checks.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { build } from "../src/build.js";
import { envVarHoldsSecret, envVarAllowed, nameAllowed } from "../src/plugin.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const sdk = path.resolve(here, "..");
const root = path.resolve(sdk, "..");
const cli = path.join(sdk, "bin/swarmtel-recorder.js");
const out = path.join(root, "target/js-sdk-test/host-checks");

/** A recorder module with one thing the host refuses. */
function source({ id = "host-check", version = "0.1.0", description = "", envVar, recorder = "check_recorder" }) {
  return `import { BaseTelemetryPlugin, BaseTelemetryRecorder, registerPlugin } from "swarmtel-recorder";
class CheckRecorder extends BaseTelemetryRecorder {
  static name = ${JSON.stringify(recorder)};
  constructor(env) { super(env); env.events.test_start.addListener(() => {}); }
}
class CheckPlugin extends BaseTelemetryPlugin {
  addArguments(parser) {
    parser.addArgument("--my-option", { type: String, default: "x"${envVar ? `, envVar: ${JSON.stringify(envVar)}` : ""} });
  }
  loadWorkerTelemetryRecorders(env) { new CheckRecorder(env); }
}
export default registerPlugin(new CheckPlugin(), ${JSON.stringify({ id, version, description })});
`;
}

const cases = [
  ["reserved-id", { id: "swarmtel" }, "id `swarmtel` is reserved for the runtime"],
  ["long-id", { id: "a".repeat(65) }, `id \`${"a".repeat(65)}\` must be 1 to 64 of a-z, 0-9, \`-\`, \`_\``],
  ["unprefixed-env-var", { envVar: "MY_OPTION" },
    "option `my-option` names env var `MY_OPTION`; the host reads only LOCUST_* and SWARMTEL_* names for plugins (A-Z, 0-9, _; at most 128)"],
  ["secret-env-var", { envVar: "LOCUST_API_KEY" },
    "option `my-option` names env var `LOCUST_API_KEY`, which holds a secret of swarmtel, its Locust bridge or Locust; the host never reads it for a plugin"],
  ["long-version", { version: `1.0.0-${"x".repeat(60)}` },
    `version \`1.0.0-${"x".repeat(60)}\` must be at most 64 characters, none of them control characters (cap \`version_chars\`)`],
  ["long-description", { description: "d".repeat(1025) }, "over the cap `text_chars` (1024): a description of 1025 characters"],
  ["long-recorder-name", { recorder: "r".repeat(129) }, `recorder name \`${"r".repeat(129)}\` must be 1 to 128 of A-Z, a-z, 0-9, \`.\`, \`:\`, \`-\`, \`_\``],
];

function swarmtel() {
  const candidates = [process.env.SWARMTEL_BIN, path.join(root, "target/debug/swarmtel"), path.join(root, "target/release/swarmtel")];
  return candidates.find((candidate) => candidate && existsSync(candidate));
}

for (const [name, spec, words] of cases) {
  test(`describe and build refuse ${name} in the words of swarmtel check`, { timeout: 120_000 }, async (t) => {
    mkdirSync(out, { recursive: true });
    const file = path.join(out, `${name}.js`);
    writeFileSync(file, source(spec));
    for (const command of [["describe", file], ["build", file, "-o", path.join(out, `${name}-refused.wasm`)]]) {
      const result = spawnSync(process.execPath, [cli, ...command], { cwd: sdk, encoding: "utf8" });
      assert.equal(result.status, 1, `${command[0]}: ${result.stdout}${result.stderr}`);
      assert.ok(result.stderr.includes(words), `${command[0]}: ${result.stderr}`);
      assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
    }
    assert.equal(existsSync(path.join(out, `${name}-refused.wasm`)), false);
    const binary = swarmtel();
    if (binary === undefined) {
      t.skip("no swarmtel binary (set SWARMTEL_BIN)");
      return;
    }
    // The host's verdict on the same description, built without the SDK's checks.
    const wasm = path.join(out, `${name}.wasm`);
    await build(file, wasm, { hostChecks: false });
    const config = path.join(out, `${name}.toml`);
    writeFileSync(config, `[run]\ntestplan = "t"\n\n[cache]\ndir = "cache"\n\n[[plugins]]\npath = "${name}.wasm"\n`);
    const check = spawnSync(binary, ["check", "--config", config], { encoding: "utf8" });
    assert.equal(check.status, 1, check.stderr);
    assert.ok(check.stderr.includes(words), `swarmtel check said:\n${check.stderr}`);
  });
}

test("the env var and name rules are the host's", () => {
  for (const ok of ["LOCUST_CUSTOM_OPTION", "SWARMTEL_REQUEST_STATS_PERIODIC"]) {
    assert.ok(envVarAllowed(ok) && !envVarHoldsSecret(ok), ok);
  }
  for (const refused of ["LOCUST_", "locust_x", "LOCUST_A-B", "HOME", `LOCUST_${"A".repeat(122)}`]) {
    assert.ok(!envVarAllowed(refused), refused);
  }
  for (const secret of ["SWARMTEL_TOKEN", "LOCUST_SWARMTEL_ENDPOINT", "LOCUST_WEB_AUTH", "LOCUST_TLS_KEY", "LOCUST_TLS_CERT",
    "SWARMTEL_DB_PASSWORD", "SWARMTEL_CONFIG", "SWARMTEL_CACHE_DIR", "LOCUST_SECRET", "LOCUST_APITOKEN", "SWARMTEL_AUTHTOKEN",
    "LOCUST_DB_PASSPHRASE", "LOCUST_API_KEYS", "LOCUST_SESSIONS"]) {
    assert.ok(envVarHoldsSecret(secret), secret);
  }
  assert.ok(nameAllowed("request_stats") && nameAllowed("a.b:c-d") && !nameAllowed("") && !nameAllowed("a b") && !nameAllowed("x".repeat(129)));
});
