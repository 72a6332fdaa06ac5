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
 * The WIT `plugin` interface's implementation, as componentize-js expects it.
 *
 * @param {(level: string, message: string) => void} hostLog the host's `log` import
 */
export function componentExports(hostLog) {
  setLogSink(/** @type {any} */ (hostLog));

  /** The WIT `recorder` resource. */
  class Recorder {
    /** @param {RecorderState} state */
    constructor(state) {
      this.state = state;
    }

    /** @param {any} batch */
    handle(batch) {
      try {
        return this.state.handle(batch);
      } catch (error) {
        report(this.state, error);
        throw error;
      }
    }

    finish() {
      try {
        return this.state.finish();
      } catch (error) {
        report(this.state, error);
        throw error;
      }
    }
  }

  return {
    describe() {
      return describePlugin(thePlugin()).info;
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
