#!/usr/bin/env node
// swarmtel-recorder: build a JavaScript recorder into a swarmtel plugin component, describe
// it, or run it on an event-stream file in Node without building it.

import { BuildError, build, describeOrFail, loadRecorderModule } from "../src/build.js";
import { replay } from "../src/testing.js";
import path from "node:path";

const USAGE = `usage:
  swarmtel-recorder build RECORDER.js -o PLUGIN.wasm [--engine quickjs|spidermonkey]
                                                       bundle, check and componentize a recorder
                                                       (quickjs: componentize-qjs, the default;
                                                       spidermonkey: componentize-js)
  swarmtel-recorder describe RECORDER.js               print what the plugin declares, as JSON
  swarmtel-recorder replay RECORDER.js EVENTS.ndjson [--option NAME=VALUE]... [--batch-size N]
                                                       run it in Node on an event stream (as
                                                       swarmtel replay batches it); telemetry as
                                                       JSON lines on stdout`;

/** @param {string} message */
function fail(message) {
  process.stderr.write(`swarmtel-recorder: ${message}\n`);
  process.exit(1);
}

/**
 * Parses an option value given on the command line by the option's declared type.
 * @param {any} option
 * @param {string} text
 */
function optionValue(option, text) {
  switch (option.type) {
    case "integer":
      if (!/^-?\d+$/.test(text)) fail(`--option ${option.name}: ${text} is not an integer`);
      return Number(text);
    case "float":
      if (Number.isNaN(Number(text))) fail(`--option ${option.name}: ${text} is not a number`);
      return Number(text);
    case "boolean":
      if (text !== "true" && text !== "false") fail(`--option ${option.name}: ${text} is not true or false`);
      return text === "true";
    default:
      return text;
  }
}

async function main() {
  const [command, ...rest] = process.argv.slice(2);
  if (command === undefined || command === "-h" || command === "--help" || command === "help") {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const positional = [];
  let output;
  let batchSize;
  /** @type {any} */
  let engine;
  const options = [];
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    if (arg === "-o" || arg === "--output") {
      output = rest[++i];
    } else if (arg.startsWith("--output=")) {
      output = arg.slice("--output=".length);
    } else if (arg === "--option") {
      options.push(rest[++i] ?? "");
    } else if (arg === "--engine") {
      engine = rest[++i];
    } else if (arg.startsWith("--engine=")) {
      engine = arg.slice("--engine=".length);
    } else if (arg === "--batch-size") {
      batchSize = Number(rest[++i]);
    } else if (arg.startsWith("-")) {
      fail(`unknown flag ${arg}\n${USAGE}`);
    } else {
      positional.push(arg);
    }
  }
  switch (command) {
    case "build": {
      if (positional.length !== 1 || output === undefined) fail(`build needs a recorder and -o\n${USAGE}`);
      const result = await build(positional[0], output, { engine, log: (line) => process.stderr.write(`${line}\n`) });
      process.stderr.write(
        `built ${output}: ${(result.bytes / 1e6).toFixed(1)} MB (${result.engine}) in ${result.seconds.toFixed(1)} s\n`,
      );
      return;
    }
    case "describe": {
      if (positional.length !== 1) fail(`describe needs a recorder\n${USAGE}`);
      const { plugin } = await loadRecorderModule(positional[0]);
      const { info } = describeOrFail(plugin, positional[0]);
      process.stdout.write(
        `${JSON.stringify(info, (_, value) => (typeof value === "bigint" ? Number(value) : value), 2)}\n`,
      );
      return;
    }
    case "replay": {
      if (positional.length !== 2) fail(`replay needs a recorder and an event-stream file\n${USAGE}`);
      const { plugin } = await loadRecorderModule(positional[0]);
      const described = describeOrFail(plugin, positional[0]);
      const values = {};
      for (const setting of options) {
        const equals = setting.indexOf("=");
        if (equals < 1) fail(`--option ${setting}: expected NAME=VALUE`);
        const name = setting.slice(0, equals);
        const option = described.options.find((o) => o.name === name);
        if (option === undefined) fail(`--option ${name}: the plugin declares no such option`);
        values[name] = optionValue(option, setting.slice(equals + 1));
      }
      const items = replay(plugin, positional[1], { options: values, batchSize, module: path.resolve(positional[0]) });
      // `fields` is the JSON text the recorder handed over, unchanged (20.0 stays a float).
      const lines = items.map((item) => {
        const head = JSON.stringify({
          time: item.time,
          rfc3339: item.rfc3339,
          node: item.node,
          role: item.role,
          recorder: item.recorder,
          telemetry_type: item.telemetryType,
          telemetry_name: item.name,
          message: item.message,
        });
        return `${head.slice(0, -1)},"fields":${item.fieldsJson || "{}"}}`;
      });
      process.stdout.write(lines.length ? `${lines.join("\n")}\n` : "");
      return;
    }
    default:
      fail(`unknown command ${command}\n${USAGE}`);
  }
}

main().catch((error) => {
  if (error instanceof BuildError) {
    fail(error.message);
  }
  fail(error?.stack ?? String(error));
});
