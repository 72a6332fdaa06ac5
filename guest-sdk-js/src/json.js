/**
 * JSON text of telemetry fields, with numbers written the way the host (serde_json) reads
 * them: a JavaScript number that is a whole number is written as an integer, a number wrapped
 * in {@link float} always as a float (`20.0`), a BigInt as an integer.
 *
 * @module
 */

const FLOAT = Symbol.for("swarmtel-recorder.float");

/** A number that must be written as a JSON float even when it is whole; see {@link float}. */
export class Float {
  /** @param {number} value */
  constructor(value) {
    /** The number. */
    this.value = Number(value);
  }

  /** Marks floats of every copy of this package. */
  get [FLOAT]() {
    return true;
  }

  /** Plain `JSON.stringify` sees the number. */
  toJSON() {
    return this.value;
  }

  /** The number, for arithmetic and comparisons. */
  valueOf() {
    return this.value;
  }
}

/**
 * Marks a number as a float in telemetry fields: `float(20)` is written `20.0`, as a Rust
 * `f64` or a Python `float` would be, so dashboards see one type per field.
 *
 * @param {number} value
 * @returns {Float}
 */
export function float(value) {
  return new Float(value);
}

/**
 * A finite number as a JSON float, in the shortest form that reads back the same, like
 * Rust's `ryu` (which the Rust guest SDK uses): `20.0`, `0.5`, `1e-7`, `1.5e300`.
 *
 * @param {number} value
 */
export function floatText(value) {
  if (!Number.isFinite(value)) {
    return "null";
  }
  if (Object.is(value, -0)) {
    return "-0.0";
  }
  const [mantissa, exponentText] = value.toExponential().split("e");
  const negative = mantissa.startsWith("-");
  const digits = mantissa.replace("-", "").replace(".", "");
  const exponent = Number(exponentText);
  // ryu's layout: the decimal point falls after `point` digits.
  const point = exponent + 1;
  let text;
  if (point > 0 && point <= 16) {
    text =
      digits.length <= point
        ? digits + "0".repeat(point - digits.length) + ".0"
        : `${digits.slice(0, point)}.${digits.slice(point)}`;
  } else if (point <= 0 && point > -5) {
    text = `0.${"0".repeat(-point)}${digits}`;
  } else {
    const head = digits.length === 1 ? digits : `${digits[0]}.${digits.slice(1)}`;
    text = `${head}e${exponent}`;
  }
  return negative ? `-${text}` : text;
}

/**
 * Encodes a value as JSON text with the number rules above.
 *
 * @param {unknown} value
 * @returns {string | undefined} undefined for values JSON has no place for (functions, undefined)
 */
export function encodeJson(value) {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "number":
      return Number.isFinite(value) ? String(value) : "null";
    case "bigint":
      return value.toString();
    case "boolean":
      return value ? "true" : "false";
    case "undefined":
    case "function":
    case "symbol":
      return undefined;
    default:
      break;
  }
  if (value === null) {
    return "null";
  }
  if (/** @type {any} */ (value)[FLOAT] === true) {
    return floatText(value.value);
  }
  if (Array.isArray(value) || ArrayBuffer.isView(value)) {
    const parts = [];
    for (const element of /** @type {ArrayLike<unknown>} */ (value)) {
      parts.push(encodeJson(element) ?? "null");
    }
    return `[${parts.join(",")}]`;
  }
  if (value instanceof Map) {
    return encodeJson(Object.fromEntries(value));
  }
  if (typeof (/** @type {any} */ (value).toJSON) === "function") {
    return encodeJson(/** @type {any} */ (value).toJSON());
  }
  const parts = [];
  for (const [key, element] of Object.entries(/** @type {object} */ (value))) {
    const text = encodeJson(element);
    if (text !== undefined) {
      parts.push(`${JSON.stringify(key)}:${text}`);
    }
  }
  return `{${parts.join(",")}}`;
}
