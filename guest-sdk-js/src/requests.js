/**
 * Request events as the host sends them (columns, endpoint names once per batch), with
 * endpoint ids that stay the same across batches, and a per-request view over the columns.
 *
 * @module
 */

/**
 * An endpoint as Locust names it in its statistics, with the recorder's own stable id.
 *
 * @typedef {object} Endpoint
 * @property {number} id Dense from 0 in order of first sight; the same in every batch.
 * @property {string} request_type Locust's `request_type`, such as `GET`.
 * @property {string} name Locust's `name`, such as `/items/[id]`.
 */

/** Every endpoint one recorder has seen, numbered in order of first sight. */
export class EndpointTable {
  constructor() {
    /** @type {Map<string, Map<string, number>>} request type → name → id */
    this.byKey = new Map();
    /** @type {Endpoint[]} */
    this.endpoints = [];
  }

  /**
   * The stable id of an endpoint, numbering it if new.
   * @param {string} requestType
   * @param {string} name
   */
  intern(requestType, name) {
    let names = this.byKey.get(requestType);
    if (names === undefined) {
      names = new Map();
      this.byKey.set(requestType, names);
    }
    let id = names.get(name);
    if (id === undefined) {
      id = this.endpoints.length;
      this.endpoints.push(Object.freeze({ id, request_type: requestType, name }));
      names.set(name, id);
    }
    return id;
  }
}

const NO_FAILURES = Object.freeze([]);

/** 2^64. */
const TWO_64 = 18_446_744_073_709_551_616;

/**
 * A WIT `u64` as a number. SpiderMonkey's bindings hand over BigInts; QuickJS's hand over the
 * bits as a signed 64-bit number (2^64 - 1 arrives as -1), turned back into the unsigned value
 * here. Past 2^53 a number is not exact: see {@link u64BigInt}.
 * @param {number | bigint} value
 */
export function u64Number(value) {
  const number = Number(value);
  return number < 0 ? number + TWO_64 : number;
}

/**
 * A WIT `u64` as an exact BigInt. QuickJS's bindings hand over a signed 64-bit number, so a
 * value from 2^53 to 2^64 - 2^53 has already lost its low bits there (componentize-qjs 0.4.5).
 * @param {number | bigint} value
 */
export function u64BigInt(value) {
  return BigInt.asUintN(64, typeof value === "bigint" ? value : BigInt(value));
}

/**
 * A column as the typed array the API promises: SpiderMonkey's bindings hand over typed
 * arrays already; QuickJS's hand over plain arrays, copied here once per batch.
 *
 * @template {Float64ArrayConstructor | Uint16ArrayConstructor} T
 * @param {T} Type
 * @param {ArrayLike<number>} column
 * @returns {InstanceType<T>}
 */
function typed(Type, column) {
  return /** @type {any} */ (column instanceof Type ? column : Type.from(column));
}

/**
 * The request events of one batch: iterate it for one object per request, or read the
 * columns (`endpointIds`, `responseTimesMs`, ...) directly, which is much faster for
 * recorders that count millions of requests. Column arrays belong to this batch: copy what
 * you keep.
 */
export class Requests {
  /**
   * @param {any} columns the WIT `request-columns` of the batch
   * @param {Uint32Array} ids per request, the stable endpoint id
   * @param {EndpointTable} table
   */
  constructor(columns, ids, table) {
    this.columns = columns;
    /** Per request: the stable endpoint id (see {@link Requests#endpoint}). */
    this.endpointIds = ids;
    this.table = table;
    /** @type {Float64Array | undefined} */
    this.lengths = undefined;
    /** @type {Float64Array | undefined} */
    this.times = undefined;
    /** @type {BigUint64Array | undefined} */
    this.exactLengths = undefined;
    /** @type {Float64Array | undefined} */
    this.starts = undefined;
    /** @type {Uint16Array | undefined} */
    this.codes = undefined;
  }

  /** How many requests the batch holds. */
  get length() {
    return this.endpointIds.length;
  }

  /** Per request: Locust's `response_time`, in milliseconds. @returns {Float64Array} */
  get responseTimesMs() {
    return (this.times ??= typed(Float64Array, this.columns.responseTimeMs));
  }

  /** Per request: Locust's `response_length`, in bytes, as numbers. @returns {Float64Array} */
  get responseLengths() {
    if (this.lengths === undefined) {
      const raw = this.columns.responseLength;
      const lengths = new Float64Array(raw.length);
      for (let i = 0; i < raw.length; i++) {
        lengths[i] = u64Number(raw[i]);
      }
      this.lengths = lengths;
    }
    return this.lengths;
  }

  /**
   * Per request: Locust's `response_length`, exact (the host's `u64`): for lengths past 2^53,
   * which {@link Requests#responseLengths} rounds. @returns {BigUint64Array}
   */
  get responseLengthsExact() {
    if (this.exactLengths === undefined) {
      const raw = this.columns.responseLength;
      this.exactLengths = raw instanceof BigUint64Array ? raw : BigUint64Array.from(raw, u64BigInt);
    }
    return this.exactLengths;
  }

  /** Per request: Locust's `start_time`, Unix seconds. @returns {Float64Array} */
  get startTimes() {
    return (this.starts ??= typed(Float64Array, this.columns.startTime));
  }

  /** Per request: the HTTP status code, 0 where unknown. @returns {Uint16Array} */
  get statusCodes() {
    return (this.codes ??= typed(Uint16Array, this.columns.statusCode));
  }

  /**
   * The failed requests, ascending by index: `{ index, exception, exceptionType }`, the
   * exception's class name (such as `ConnectionError`) empty when the bridge did not know it.
   * @returns {ReadonlyArray<{ index: number, exception: string, exceptionType: string }>}
   */
  get failures() {
    return this.columns.failures ?? NO_FAILURES;
  }

  /**
   * Per-request URL and context, only for recorders that asked for them
   * (`static requestExtras`): `{ index, url, context }` (context as JSON text).
   * @returns {ReadonlyArray<{ index: number, url?: string, context?: string }>}
   */
  get details() {
    return this.columns.details ?? NO_FAILURES;
  }

  /**
   * The endpoint behind a stable id.
   * @param {number} id
   * @returns {Endpoint}
   */
  endpoint(id) {
    return this.table.endpoints[id];
  }

  /** How many endpoints this recorder has seen so far (ids are below this). */
  get endpointCount() {
    return this.table.endpoints.length;
  }

  /**
   * Every endpoint this recorder has seen so far, in id order.
   * @returns {ReadonlyArray<Endpoint>}
   */
  endpoints() {
    return this.table.endpoints;
  }

  /**
   * One object per request, with Locust's `request` hook arguments.
   * @returns {Generator<RequestArgs>}
   */
  *[Symbol.iterator]() {
    const columns = this.columns;
    const failures = this.failures;
    const details = this.details;
    const lengths = columns.responseLength;
    let nextFailure = 0;
    let nextDetail = 0;
    for (let index = 0; index < this.endpointIds.length; index++) {
      let exception = null;
      let exceptionType = null;
      if (nextFailure < failures.length && failures[nextFailure].index === index) {
        exception = failures[nextFailure].exception;
        exceptionType = failures[nextFailure].exceptionType ?? "";
        nextFailure++;
      }
      let url = null;
      let context = {};
      if (nextDetail < details.length && details[nextDetail].index === index) {
        const detail = details[nextDetail];
        url = detail.url ?? null;
        if (detail.context !== undefined && detail.context !== null) {
          context = JSON.parse(detail.context);
        }
        nextDetail++;
      }
      const id = this.endpointIds[index];
      const endpoint = this.table.endpoints[id];
      const statusCode = columns.statusCode[index];
      yield {
        request_type: endpoint.request_type,
        name: endpoint.name,
        response_time: columns.responseTimeMs[index],
        response_length: u64Number(lengths[index]),
        exception,
        exception_type: exceptionType,
        start_time: columns.startTime[index],
        url,
        context,
        status_code: statusCode === 0 ? null : statusCode,
        endpoint: id,
      };
    }
  }
}

/**
 * Locust's `request` hook arguments, as one object.
 *
 * @typedef {object} RequestArgs
 * @property {string} request_type
 * @property {string} name
 * @property {number} response_time milliseconds
 * @property {number} response_length bytes
 * @property {string | null} exception Locust's exception text when the request failed
 * @property {string | null} exception_type the exception's class name, such as
 *   `ConnectionError`, when the request failed (`""` when not known)
 * @property {number} start_time Unix seconds
 * @property {string | null} url when the recorder asked for it (`static requestExtras`)
 * @property {object} context when the recorder asked for it, else `{}`
 * @property {number | null} status_code the HTTP status, when known
 * @property {number} endpoint the stable endpoint id
 */
