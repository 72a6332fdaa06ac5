/**
 * The component's `plugin` export, built around the one registered plugin. The build's
 * generated entry module calls {@link componentExports} with the host's `log`. Not API.
 *
 * @module
 */

import { RecorderState } from "./dispatch.js";
import { describeError } from "./errors.js";
import { log, setLogSink } from "./log.js";
import { describePlugin, recorderName, registeredPlugins } from "./plugin.js";
import { mapStack } from "./stack.js";

/** The one registered plugin; throws when there is none or more than one. */
export function thePlugin() {
  const all = registeredPlugins();
  if (all.length === 0) {
    throw new Error("no plugin registered: call registerPlugin(new MyPlugin(), { id: \"my-plugin\" }) once");
  }
  if (all.length > 1) {
    throw new Error(`${all.length} plugins registered: a component holds exactly one`);
  }
  return all[0];
}

/**
 * A WIT `plugin-info` for QuickJS: integer option defaults as numbers.
 * @param {any} info
 */
function quickJsInfo(info) {
  return {
    ...info,
    options: info.options.map((/** @type {any} */ option) =>
      option.default?.tag === "integer" ? { ...option, default: { tag: "integer", val: Number(option.default.val) } } : option),
  };
}

/**
 * A WIT `recorder-output` for QuickJS: the metric points' `u64` and `s64` values as numbers.
 * @param {any} output
 */
function quickJsOutput(output) {
  for (const point of output.metrics) {
    for (const attribute of point.attributes) {
      if (attribute.value.tag === "integer") {
        attribute.value.val = Number(attribute.value.val);
      }
    }
    const value = point.value;
    if (value.tag === "counter") {
      value.val = Number(value.val);
    } else if (value.tag === "response-times") {
      value.val.buckets = value.val.buckets.map((/** @type {[number, bigint]} */ [ms, count]) => [ms, Number(count)]);
    }
  }
  return output;
}

/**
 * The WIT `plugin` interface's implementation, as componentize-js and componentize-qjs
 * expect it. The SDK builds a WIT `u64` or `s64` as a BigInt, which componentize-js takes;
 * componentize-qjs 0.4.5 takes only numbers there (exact up to 2^53), so for `quickjs` they
 * are turned into numbers on the way out.
 *
 * @param {(level: string, message: string) => void} hostLog the host's `log` import
 * @param {"spidermonkey" | "quickjs"} [engine] the engine the component is built with
 */
export function componentExports(hostLog, engine = "spidermonkey") {
  setLogSink(/** @type {any} */ (hostLog));
  const numbers = engine === "quickjs";

  /** The WIT `recorder` resource. */
  class Recorder {
    /** @param {RecorderState} state */
    constructor(state) {
      this.state = state;
    }

    /** @param {any} batch */
    handle(batch) {
      try {
        const output = this.state.handle(batch);
        return numbers ? quickJsOutput(output) : output;
      } catch (error) {
        report(this.state, error);
        throw error;
      }
    }

    finish() {
      try {
        const output = this.state.finish();
        return numbers ? quickJsOutput(output) : output;
      } catch (error) {
        report(this.state, error);
        throw error;
      }
    }
  }

  return {
    describe() {
      const info = describePlugin(thePlugin()).info;
      return numbers ? quickJsInfo(info) : info;
    },
    /** @param {any} config */
    createRecorder(config) {
      try {
        return new Recorder(new RecorderState(thePlugin(), config));
      } catch (error) {
        // A string thrown here is the `err` of `create-recorder`: the author's own message.
        throw error instanceof Error ? error.message : String(error);
      }
    },
    Recorder,
  };
}

/**
 * Logs an exception from a recorder's listener before the call traps.
 * @param {RecorderState} state
 * @param {unknown} error
 */
function report(state, error) {
  const name = recorderName(state.recorder.constructor);
  const stack = error instanceof Error && error.stack ? `\n${mapStack(error.stack).trimEnd()}` : "";
  log("error", `recorder ${name} threw ${describeError(error, false)}${stack}`);
}
