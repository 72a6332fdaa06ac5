/**
 * Write swarmtel telemetry recorders in JavaScript.
 *
 * swarmtel runs recorders as sandboxed WebAssembly components. This package hides the
 * component plumbing: subclass {@link BaseTelemetryPlugin} (declare options, create recorders
 * per role) and {@link BaseTelemetryRecorder} (listen to Locust's hooks on `env.events`, log
 * telemetry), call {@link registerPlugin} once, and build with
 * `npx swarmtel-recorder build recorder.js -o recorder.wasm`. Test it in Node with
 * `swarmtel-recorder/testing`, which drives the same dispatch code the component runs.
 *
 * The concepts are locust-telemetry's, in JavaScript's idiom:
 *
 * ```js
 * import { BaseTelemetryPlugin, BaseTelemetryRecorder, TelemetryData, registerPlugin } from "swarmtel-recorder";
 *
 * class CustomTelemetryRecorder extends BaseTelemetryRecorder {
 *   static name = "custom_telemetry_recorder";
 *   constructor(env) {
 *     super(env);
 *     env.events.test_start.addListener(this.onTestStart);
 *   }
 *   onTestStart() {
 *     this.logTelemetry(new TelemetryData({ type: "event", name: "CUSTOM_START" }), "Custom telemetry recorder started");
 *   }
 * }
 * ```
 *
 * @module
 */

export {
  ArgumentParser,
  BaseTelemetryPlugin,
  BaseTelemetryRecorder,
  Environment,
  TelemetryData,
  registerPlugin,
} from "./plugin.js";
export { Float, float } from "./json.js";
export { log } from "./log.js";
export { PluginError } from "./errors.js";
export { Requests } from "./requests.js";
export { HOOKS } from "./hooks.js";
export { ResponseTimes, bucketResponseTime } from "./metrics.js";
