/**
 * The plugin's own diagnostics (not telemetry): inside the sandbox they go to the host's
 * `log`, tagged with the plugin id; under Node (the test harness) to stderr.
 *
 * @module
 */

/** @typedef {"trace" | "debug" | "info" | "warn" | "error"} LogLevel */

const LEVELS = new Set(["trace", "debug", "info", "warn", "error"]);

/** @type {(level: LogLevel, message: string) => void} */
let sink = (level, message) => {
  console.error(`[${level}] ${message}`);
};

/**
 * Logs one line of diagnostics through the host (not telemetry). The host may truncate or
 * rate-limit it.
 *
 * @param {LogLevel} level `trace`, `debug`, `info`, `warn` or `error`
 * @param {string} message
 */
export function log(level, message) {
  sink(LEVELS.has(level) ? level : "info", String(message));
}

/**
 * Where {@link log} writes; the component entry points it at the host. Not API.
 * @param {(level: LogLevel, message: string) => void} newSink
 */
export function setLogSink(newSink) {
  sink = newSink;
}
