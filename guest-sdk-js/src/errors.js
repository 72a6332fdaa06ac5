/**
 * Errors in a plugin's own code, located in the author's file.
 *
 * @module
 */

const SDK_DIR_MARKERS = ["/swarmtel-recorder/src/", "/guest-sdk-js/src/"];

/**
 * Whether a stack frame points into this SDK (not the author's code).
 * @param {string} frame
 */
function isSdkFrame(frame) {
  return SDK_DIR_MARKERS.some((marker) => frame.includes(marker)) || frame.includes("node:");
}

/**
 * The author's `file:line:column` in a stack trace: the first frame outside this SDK and
 * Node's internals, or undefined.
 *
 * @param {string | undefined} stack
 * @returns {string | undefined}
 */
export function authorLocation(stack) {
  if (!stack) {
    return undefined;
  }
  for (const line of stack.split("\n").slice(1)) {
    const match = /\(?((?:file:\/\/)?[^\s()]+):(\d+):(\d+)\)?\s*$/.exec(line.trim());
    if (!match || isSdkFrame(match[1])) {
      continue;
    }
    let file = match[1];
    if (file.startsWith("file://")) {
      file = decodeURIComponent(new URL(file).pathname);
    }
    return `${file}:${match[2]}:${match[3]}`;
  }
  return undefined;
}

/**
 * A mistake in a plugin: a hook that does not exist, an option without a type, a recorder
 * that cannot be described. `location` is the author's `file:line:column` when known.
 */
export class PluginError extends Error {
  /**
   * @param {string} message
   * @param {{ location?: string, stack?: string }} [where] where the mistake is; by default
   *   the caller of the SDK function that throws
   */
  constructor(message, where = {}) {
    super(message);
    this.name = "PluginError";
    /** The author's `file:line:column`, when known. */
    this.location = where.location ?? authorLocation(where.stack ?? this.stack);
  }
}

/**
 * The message of anything thrown, with the author's location first when known.
 * @param {unknown} error
 * @param {boolean} [locate] look for the author's location in the stack (not inside the
 *   component, whose stack points into the bundle)
 */
export function describeError(error, locate = true) {
  if (error instanceof Error) {
    const location = locate ? /** @type {any} */ (error).location ?? authorLocation(error.stack) : undefined;
    const kind = error instanceof PluginError ? "" : `${error.name}: `;
    return location ? `${location}: ${kind}${error.message}` : `${kind}${error.message}`;
  }
  return String(error);
}
