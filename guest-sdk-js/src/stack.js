/**
 * Error stacks inside the component point into the bundle the build made. The build appends
 * a compact source map (sources and mappings, no source text) to the bundle, and
 * {@link mapStack} rewrites `component.js:LINE:COLUMN` positions to the author's files
 * before the error is logged. Not API.
 *
 * @module
 */

/** Where the build puts the map: `{ file, sources, mappings }`. */
export const SOURCE_MAP = Symbol.for("swarmtel-recorder.sourcemap");

const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** @type {Map<any, (number[][])[]>} decoded maps, by map object */
const decoded = new Map();

/**
 * Decodes a source map's `mappings`: per generated line, its segments
 * `[generatedColumn, source, line, column]`, all 0-based, in column order.
 * @param {string} mappings
 */
function decode(mappings) {
  const lines = [];
  let source = 0;
  let line = 0;
  let column = 0;
  for (const text of mappings.split(";")) {
    const segments = [];
    let generated = 0;
    for (const segment of text.split(",")) {
      if (segment === "") continue;
      const values = [];
      let value = 0;
      let shift = 0;
      for (const char of segment) {
        const digit = BASE64.indexOf(char);
        value += (digit & 31) << shift;
        if (digit & 32) {
          shift += 5;
        } else {
          values.push(value & 1 ? -(value >>> 1) : value >>> 1);
          value = 0;
          shift = 0;
        }
      }
      generated += values[0];
      if (values.length >= 4) {
        source += values[1];
        line += values[2];
        column += values[3];
        segments.push([generated, source, line, column]);
      }
    }
    lines.push(segments);
  }
  return lines;
}

/**
 * The author's position of a 1-based bundle position, or undefined.
 * @param {any} map
 * @param {number} line
 * @param {number} column
 */
function lookup(map, line, column) {
  let lines = decoded.get(map);
  if (lines === undefined) {
    lines = decode(map.mappings);
    decoded.set(map, lines);
  }
  const segments = lines[line - 1];
  if (segments === undefined || segments.length === 0) return undefined;
  let found = segments[0];
  for (const segment of segments) {
    if (segment[0] > column - 1) break;
    found = segment;
  }
  return `${map.sources[found[1]]}:${found[2] + 1}:${found[3] + 1}`;
}

/**
 * A stack with bundle positions rewritten to the author's files, when the build left a map.
 * @param {string} stack
 * @param {any} [map] `{ sources, mappings }`; by default the one the build left
 * @param {RegExp} [positions] bundle positions, capturing line and column
 */
export function mapStack(stack, map = /** @type {any} */ (globalThis)[SOURCE_MAP], positions = /[^\s()@]*component\.js:(\d+):(\d+)/g) {
  if (map === undefined || typeof stack !== "string") return stack;
  try {
    return stack.replace(positions, (whole, line, column) => lookup(map, Number(line), Number(column)) ?? whole);
  } catch {
    return stack;
  }
}
