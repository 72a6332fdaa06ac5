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

/** A number JSON cannot hold (NaN, Infinity) in telemetry fields; see {@link encodeFields}. */
export class NonFiniteError extends Error {
  /**
   * @param {string} path where the number is, such as `latency.p50` or `samples[3]`
   * @param {number} value
   */
  constructor(path, value) {
    super(`field ${path} is ${value}: JSON has no NaN or Infinity; check the arithmetic, or log null or a string instead`);
    this.name = "NonFiniteError";
    /** Where the number is. */
    this.path = path;
  }
}

/**
 * Encodes telemetry fields as JSON text with the number rules above, and throws a
 * {@link NonFiniteError} naming the field for NaN or an infinity (plain or in `float()`),
 * which JSON cannot hold.
 *
 * @param {unknown} value
 * @returns {string | undefined}
 */
export function encodeFields(value) {
  return encode(value, "");
}

/**
 * Encodes a value as JSON text with the number rules above; NaN and infinities become `null`
 * (as `JSON.stringify` and serde_json write them).
 *
 * @param {unknown} value
 * @returns {string | undefined} undefined for values JSON has no place for (functions, undefined)
 */
export function encodeJson(value) {
  return encode(value, undefined);
}

/**
 * @param {string} path
 * @param {string | number} key
 */
function child(path, key) {
  if (typeof key === "number") {
    return `${path}[${key}]`;
  }
  return path === "" ? key : `${path}.${key}`;
}

/**
 * @param {unknown} value
 * @param {string | undefined} path where `value` is, when non-finite numbers must throw
 * @returns {string | undefined}
 */
function encode(value, path) {
  switch (typeof value) {
    case "string":
      return JSON.stringify(value);
    case "number":
      if (Number.isFinite(value)) {
        return String(value);
      }
      if (path !== undefined) {
        throw new NonFiniteError(path, value);
      }
      return "null";
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
    const number = /** @type {any} */ (value).value;
    if (path !== undefined && !Number.isFinite(number)) {
      throw new NonFiniteError(path, number);
    }
    return floatText(number);
  }
  if (Array.isArray(value) || ArrayBuffer.isView(value)) {
    const parts = [];
    let index = 0;
    for (const element of /** @type {ArrayLike<unknown>} */ (value)) {
      parts.push(encode(element, path === undefined ? undefined : child(path, index)) ?? "null");
      index++;
    }
    return `[${parts.join(",")}]`;
  }
  if (value instanceof Map) {
    return encode(Object.fromEntries(value), path);
  }
  if (typeof (/** @type {any} */ (value).toJSON) === "function") {
    return encode(/** @type {any} */ (value).toJSON(), path);
  }
  const parts = [];
  for (const [key, element] of Object.entries(/** @type {object} */ (value))) {
    const text = encode(element, path === undefined ? undefined : child(path, key));
    if (text !== undefined) {
      parts.push(`${JSON.stringify(key)}:${text}`);
    }
  }
  return `{${parts.join(",")}}`;
}
