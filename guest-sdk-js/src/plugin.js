/**
 * The author's API: locust-telemetry's `BaseTelemetryPlugin`, `BaseTelemetryRecorder` and
 * `TelemetryData`, and how a plugin is described to the host and its recorders created.
 *
 * @module
 */

import { PluginError } from "./errors.js";
import { HOOK_BY_NAME, HOOK_NAMES, nearest } from "./hooks.js";
import { NonFiniteError, encodeFields } from "./json.js";
import { MetricBuffer } from "./metrics.js";

/** Internal state of an {@link Environment}; not API. */
const ENV = Symbol.for("swarmtel-recorder.env");
const REGISTRY = Symbol.for("swarmtel-recorder.registry");
const BASE_RECORDER = Symbol.for("swarmtel-recorder.base-recorder");

/** The roles, with the node id the harness gives each and the plugin method that loads it. */
export const ROLES = Object.freeze({
  master: { node: "master", load: "loadMasterTelemetryRecorders" },
  worker: { node: "worker-0", load: "loadWorkerTelemetryRecorders" },
  standalone: { node: "local", load: "loadStandaloneTelemetryRecorders" },
});

const OPTION_TYPES = new Map([
  [String, "text"],
  ["text", "text"],
  ["string", "text"],
  ["str", "text"],
  ["integer", "integer"],
  ["int", "integer"],
  [BigInt, "integer"],
  [Number, "float"],
  ["float", "float"],
  ["number", "float"],
  [Boolean, "boolean"],
  ["boolean", "boolean"],
  ["bool", "boolean"],
]);

/**
 * A recorder class's name: its `static name` when set, else its class name in snake_case
 * (`CustomTelemetryRecorder` → `custom_telemetry_recorder`), as in the Python SDK.
 *
 * @param {Function} type
 */
export function recorderName(type) {
  const own = Object.getOwnPropertyDescriptor(type, "name");
  if (own !== undefined && own.writable) {
    return String(own.value);
  }
  return snakeCase(type.name);
}

/** @param {string} name */
function snakeCase(name) {
  return name
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1_$2")
    .toLowerCase();
}

/**
 * A plugin id from its class name: `CustomTelemetryPlugin` → `custom-telemetry`.
 * @param {string} name
 */
function idFromClassName(name) {
  return snakeCase(name.replace(/Plugin$/, "") || name).replace(/_/g, "-");
}

/** The host's rule for a telemetry name (`schemas/telemetry.schema.json`). */
const TELEMETRY_NAME = /^[A-Za-z][A-Za-z0-9_.:-]{0,127}$/;

/**
 * The type and name of a piece of telemetry, like locust-telemetry's `TelemetryData`.
 */
export class TelemetryData {
  /**
   * @param {{ type: "event" | "metric", name: string }} data `event` (something happened) or
   *   `metric` (a measurement), and the telemetry name, such as `CUSTOM_START`
   */
  constructor({ type, name } = /** @type {any} */ ({})) {
    if (type !== "event" && type !== "metric") {
      throw new PluginError(
        `TelemetryData type must be "event" or "metric", got ${JSON.stringify(type)}`,
      );
    }
    if (typeof name !== "string" || name === "") {
      throw new PluginError("TelemetryData needs a name, such as CUSTOM_START");
    }
    if (!TELEMETRY_NAME.test(name)) {
      throw new PluginError(
        `TelemetryData name ${JSON.stringify(name)} must start with a letter and hold at most 128 of A-Z, a-z, 0-9, _, ., :, - (the host refuses other names)`,
      );
    }
    /** `event` or `metric`. */
    this.type = type;
    /** The telemetry name. */
    this.name = name;
    Object.freeze(this);
  }
}

/**
 * One declared option, as the host sees it.
 * @typedef {object} OptionDecl
 * @property {string} name the config key, such as `custom-option`
 * @property {"text" | "integer" | "float" | "boolean"} type
 * @property {string | number | bigint | boolean | undefined} default
 * @property {string} help
 * @property {string | undefined} envVar
 * @property {boolean} [whenAbsent] for `store_false`: the value when the flag is not given
 */

/**
 * Collects option declarations, like the `LocustArgumentParser` handed to locust-telemetry's
 * `add_arguments`.
 */
export class ArgumentParser {
  constructor() {
    /** @type {OptionDecl[]} */
    this.options = [];
  }

  /**
   * A titled group of options, as `parser.add_argument_group(title, description)`. The title
   * and description are for the reader; options land in one list.
   * @param {string} [title]
   * @param {string} [description]
   * @returns {{ addArgument: ArgumentParser["addArgument"] }}
   */
  addArgumentGroup(title, description) {
    void title;
    void description;
    return { addArgument: (flag, spec) => this.addArgument(flag, spec) };
  }

  /**
   * Declares an option, as `group.add_argument("--custom-option", type=str, ...)`.
   *
   * @param {string} flag `--custom-option`; the config key is the name without dashes
   * @param {object} spec
   * @param {StringConstructor | NumberConstructor | BooleanConstructor | BigIntConstructor | "text" | "integer" | "float" | "boolean"} [spec.type]
   *   `String`/`"text"`, `"integer"`, `Number`/`"float"` or `Boolean`/`"boolean"`; required
   *   unless `action` is `store_true`/`store_false`
   * @param {string | number | bigint | boolean} [spec.default] used when neither config nor
   *   environment sets the option
   * @param {string} [spec.help] shown by `swarmtel plugin inspect`
   * @param {string} [spec.envVar] an environment variable the host may read (also `env_var`)
   * @param {"store_true" | "store_false"} [spec.action] a boolean flag, as in argparse
   */
  addArgument(flag, spec = {}) {
    if (typeof flag !== "string" || !/^(--?)?[A-Za-z0-9][A-Za-z0-9_-]*$/.test(flag)) {
      throw new PluginError(`option name ${JSON.stringify(flag)} is not like --custom-option`);
    }
    const name = flag.replace(/^--?/, "");
    if (this.options.some((option) => option.name === name)) {
      throw new PluginError(`option --${name} is declared twice`);
    }
    let type;
    let fallback;
    if (spec.action === "store_true" || spec.action === "store_false") {
      type = "boolean";
      fallback = false;
    } else if (spec.action !== undefined) {
      throw new PluginError(`option --${name}: action ${JSON.stringify(spec.action)} is not supported (store_true or store_false)`);
    }
    if (spec.type !== undefined) {
      type = OPTION_TYPES.get(spec.type);
      if (type === undefined) {
        throw new PluginError(
          `option --${name} has type ${String(spec.type?.name ?? spec.type)}; use "text" (String), "integer", "float" (Number) or "boolean" (Boolean)`,
        );
      }
    }
    if (type === undefined) {
      throw new PluginError(
        `option --${name} has no type: add type: "text" (or String), "integer", "float" (or Number) or "boolean" (or Boolean)`,
      );
    }
    // store_false, as argparse: the host's boolean says whether the flag is given (default
    // false); parsedOptions holds false when it is, else the default (true unless set).
    const storeFalse = spec.action === "store_false";
    if (storeFalse && spec.default !== undefined && typeof spec.default !== "boolean") {
      throw new PluginError(`option --${name}: default ${JSON.stringify(spec.default)} is not of type boolean`);
    }
    const value = storeFalse ? false : spec.default === undefined ? fallback : spec.default;
    if (type === "integer" && typeof value === "bigint" && !fitsType(type, value)) {
      throw new PluginError(`option --${name}: default ${value} is outside the host's 64-bit integers (-2^63 to 2^63 - 1)`);
    }
    if (value !== undefined && !fitsType(type, value)) {
      throw new PluginError(
        `option --${name}: default ${JSON.stringify(typeof value === "bigint" ? String(value) : value)} is not of type ${type}`,
      );
    }
    const envVar = spec.envVar ?? spec.env_var;
    if (envVar !== undefined && typeof envVar !== "string") {
      throw new PluginError(`option --${name}: envVar must be a string`);
    }
    this.options.push({
      name,
      type,
      default: value,
      help: String(spec.help ?? ""),
      envVar,
      ...(storeFalse ? { whenAbsent: spec.default ?? true } : {}),
    });
  }
}

/**
 * @param {string} type
 * @param {unknown} value
 */
function fitsType(type, value) {
  switch (type) {
    case "text":
      return typeof value === "string";
    case "integer":
      return (typeof value === "bigint" && value >= -(2n ** 63n) && value < 2n ** 63n) || Number.isSafeInteger(value);
    case "float":
      return typeof value === "number";
    default:
      return typeof value === "boolean";
  }
}

/**
 * A Locust hook on `env.events`: `addListener(fn)` subscribes the recorder being created.
 */
class EventHook {
  /**
   * @param {EnvState} state
   * @param {string} name
   */
  constructor(state, name) {
    this.state = state;
    /** The hook's Locust name. */
    this.name = name;
  }

  /**
   * Calls `listener` with this hook's arguments (one object, under Locust's names) each time
   * the event happens. The listener belongs to the recorder being created, and is called with
   * `this` set to it, so `this.onTestStart` works unbound, as a Python bound method would.
   *
   * @param {(args: any) => void} listener
   */
  addListener(listener) {
    const state = this.state;
    if (typeof listener !== "function") {
      throw new PluginError(`env.events.${this.name}.addListener needs a function, got ${typeof listener}`);
    }
    if (state.frozen) {
      throw new PluginError(
        `env.events.${this.name}.addListener after the recorder was created: add listeners in the recorder's constructor`,
      );
    }
    if (state.current === undefined) {
      throw new PluginError(
        `env.events.${this.name}.addListener before any recorder: listeners belong to a recorder; call it in a BaseTelemetryRecorder's constructor after super(env)`,
      );
    }
    state.listeners.push({ hook: this.name, listener, owner: state.current, stack: new Error().stack });
    claim(state, state.current, this.name);
    state.version++;
  }

  /**
   * Stops calling `listener`, one added with `addListener` or the recorder's method named
   * after this hook (`onTestStart`): once removed, the method is not called either. Works
   * in the constructor and after (in a listener). The host keeps delivering the hook's
   * events; the recorder ignores them.
   * @param {(args: any) => void} listener
   */
  removeListener(listener) {
    const state = this.state;
    const owner = state.current;
    const index = state.listeners.findIndex(
      (entry) => entry.hook === this.name && entry.listener === listener && (owner === undefined || entry.owner === owner),
    );
    if (index >= 0) {
      state.listeners.splice(index, 1);
      state.version++;
      return;
    }
    if (owner !== undefined && typeof listener === "function") {
      const method = [...HOOK_METHODS].find(([name, hook]) => hook === this.name && /** @type {any} */ (owner)[name] === listener);
      if (method !== undefined) {
        claim(state, owner, this.name);
        state.version++;
      }
    }
  }
}

/**
 * Marks `hook` as managed by addListener/removeListener for `owner`: its method named after
 * the hook is no longer a listener by itself.
 * @param {EnvState} state
 * @param {object} owner
 * @param {string} hook
 */
function claim(state, owner, hook) {
  let hooks = state.claimed.get(owner);
  if (hooks === undefined) {
    hooks = new Set();
    state.claimed.set(owner, hooks);
  }
  hooks.add(hook);
}

/**
 * @typedef {object} EnvState
 * @property {BaseTelemetryRecorder[]} recorders created on this environment, in order
 * @property {BaseTelemetryRecorder | undefined} current the recorder listeners are added to
 * @property {{ hook: string, listener: Function, owner: BaseTelemetryRecorder, stack?: string }[]} listeners
 * @property {WeakMap<object, Set<string>>} claimed per recorder, the hooks whose listeners it
 *   manages with addListener/removeListener (its methods named after them are not listeners)
 * @property {boolean} frozen whether the recorder was created (no listener may be added)
 * @property {number} version bumped when listeners change
 * @property {any[]} out telemetry logged and not handed over yet
 * @property {MetricBuffer} metrics metric points reported and not handed over yet
 */

/**
 * What a plugin's `load*TelemetryRecorders(env)` and a recorder's constructor get, like
 * Locust's `Environment`: the role and node served, the resolved options, and the event hooks.
 */
export class Environment {
  /**
   * @param {{ role: "master" | "worker" | "standalone", node: string, parsedOptions: Record<string, any>, probing?: boolean }} init
   */
  constructor({ role, node, parsedOptions, probing = false }) {
    /** @type {EnvState} */
    const state = { recorders: [], current: undefined, listeners: [], claimed: new WeakMap(), frozen: false, version: 0, out: [], metrics: new MetricBuffer() };
    Object.defineProperty(this, ENV, { value: state });
    /** The role of the node served: `master`, `worker` or `standalone`. */
    this.role = role;
    /** The node served: `master`, `worker-<n>` or `local`. */
    this.node = node;
    /**
     * Every declared option's value, under its config name (`custom-option`), Locust's
     * attribute name (`custom_option`) and camelCase (`customOption`).
     */
    this.parsedOptions = parsedOptions;
    /**
     * True while the plugin is being described (every option at its default, on a made-up
     * node): skip checks of option values then, and refuse only when a recorder is created.
     */
    this.probing = probing;
    const hooks = Object.create(null);
    for (const name of HOOK_NAMES) {
      const spec = HOOK_BY_NAME.get(name);
      hooks[name] = hooks[spec.name] ?? new EventHook(state, spec.name);
    }
    /**
     * Locust's hooks under their own names (`test_start`), with camelCase aliases
     * (`testStart`), plus `stats`, `tick`, `requests` and `finish`. A name that is not a hook
     * throws, naming the nearest one.
     * @type {Record<string, EventHook>}
     */
    this.events = new Proxy(hooks, {
      get(target, property) {
        if (typeof property === "symbol" || property in target) {
          return target[property];
        }
        if (property === "then" || property === "toJSON") {
          return undefined;
        }
        const near = nearest(property, HOOK_NAMES);
        throw new PluginError(
          `env.events.${property} is not a hook${near ? ` (did you mean ${near}?)` : `; hooks: ${[...new Set([...HOOK_BY_NAME.values()].map((h) => h.name))].join(", ")}`}`,
        );
      },
    });
    Object.freeze(this);
  }
}

/**
 * A recorder, like locust-telemetry's `BaseTelemetryRecorder`: subclass it, set `static name`,
 * add listeners to `env.events` in the constructor, and call {@link
 * BaseTelemetryRecorder#logTelemetry} from them.
 *
 * Class fields the SDK reads:
 * - `static name`: the recorder's name (by default the class name);
 * - `static tickIntervalMs`: the interval of `tick` events, needed when listening to `tick`;
 * - `static requestExtras`: `["url"]`, `["context"]` or both: per-request details to deliver.
 */
export class BaseTelemetryRecorder {
  /** Marks the SDK's base class (method lookup stops here). */
  static [Symbol.for("swarmtel-recorder.base-recorder")] = true;

  /**
   * @param {Environment} env the environment its plugin's `load*TelemetryRecorders` got
   */
  constructor(env) {
    const state = env?.[ENV];
    if (state === undefined) {
      throw new PluginError(
        "a recorder needs the env of its plugin's load*TelemetryRecorders(env): call super(env)",
      );
    }
    if (state.frozen) {
      throw new PluginError("recorders are created in the plugin's load*TelemetryRecorders(env), not later");
    }
    /** The environment it was created with. */
    this.env = env;
    state.recorders.push(this);
    state.current = this;
  }

  /**
   * Logs telemetry: locust-telemetry's `log_telemetry(TelemetryData(type, name), message,
   * **fields)`. Fields are a plain object; wrap a number in `float()` to write it as a float
   * (`20.0`). The host validates the item, adds the context (`time`, `run_id`, `source`, ...)
   * and writes it out.
   *
   * @param {TelemetryData | { type: "event" | "metric", name: string }} telemetry
   * @param {string} message a human-readable message
   * @param {Record<string, unknown>} [fields] the recorder's own fields
   */
  logTelemetry(telemetry, message, fields) {
    const data = telemetry instanceof TelemetryData ? telemetry : new TelemetryData(telemetry ?? {});
    let encoded = "";
    if (fields !== undefined && fields !== null) {
      let top = /** @type {any} */ (fields);
      if (top instanceof Map) {
        top = Object.fromEntries(top);
      } else if (typeof top === "object" && typeof top.toJSON === "function" && top[FLOAT_MARK] !== true) {
        top = top.toJSON();
      }
      if (top === null || typeof top !== "object" || Array.isArray(top) || ArrayBuffer.isView(top) || top[FLOAT_MARK] === true) {
        throw new PluginError(`logTelemetry ${data.name}: fields must be an object, got ${describeKind(top)}`);
      }
      const keys = Object.keys(top).filter((key) => {
        const kind = typeof top[key];
        return kind !== "undefined" && kind !== "function" && kind !== "symbol";
      });
      if (keys.length > MAX_FIELDS) {
        throw new PluginError(`logTelemetry ${data.name}: ${keys.length} fields; the host takes at most ${MAX_FIELDS}`);
      }
      const owned = keys.find((key) => HOST_OWNED_KEYS.includes(key));
      if (owned !== undefined) {
        throw new PluginError(
          `logTelemetry ${data.name}: field \`${owned}\` is owned by the host and cannot be set by a plugin (the host adds ${HOST_OWNED_KEYS.join(", ")}); rename it`,
        );
      }
      try {
        encoded = encodeFields(top) ?? "";
      } catch (error) {
        if (error instanceof NonFiniteError) {
          throw new PluginError(`logTelemetry ${data.name}: ${error.message}`);
        }
        throw error;
      }
      if (encoded === "{}") {
        encoded = "";
      }
    }
    const text = String(message ?? "");
    if (text.length > MAX_MESSAGE_CHARS && [...text].length > MAX_MESSAGE_CHARS) {
      throw new PluginError(`logTelemetry ${data.name}: a message of ${[...text].length} characters; the host takes at most ${MAX_MESSAGE_CHARS}`);
    }
    this.env[ENV].out.push({
      telemetryType: data.type,
      name: data.name,
      message: text,
      fields: encoded,
    });
  }

  // Metric points (see metrics.js). Points of one series in one call are merged into one. The
  // SDK refuses plainly wrong values here (PluginError); the host checks the rest of each point
  // (a name of 1 to 128 bytes of [a-z][a-z0-9_.]*, units, attribute keys, series per plugin:
  // the README's "Metrics" lists its rules), and the harness throws MetricRejected where it
  // would refuse.

  /**
   * Adds `value` to the counter `name` (for `attributes`): the increment since this recorder
   * last reported the series, a whole number >= 0 (a BigInt past 2^53). The host sums the
   * increments of every call and node into one total.
   *
   * @param {string} name such as `checkout.items`
   * @param {number | bigint} [value] default 1
   * @param {MetricOptions} [options]
   */
  addCounter(name, value = 1, options = {}) {
    this.env[ENV].metrics.counter(name, value, options ?? {});
  }

  /**
   * Sets the gauge `name` (for `attributes`) to `value`, a finite number: its value now. The
   * last value reported wins.
   *
   * @param {string} name
   * @param {number} value
   * @param {MetricOptions} [options]
   */
  setGauge(name, value, options = {}) {
    this.env[ENV].metrics.gauge(name, value, options ?? {});
  }

  /**
   * Reports a copy of `times` (a {@link ResponseTimes}): the response times observed since
   * this recorder last reported the series; `times.reset()` afterwards. The host merges the
   * buckets of every call and node and exports a histogram in seconds, with the bucket bounds
   * of `locust.client.duration`.
   *
   * @param {string} name
   * @param {import("./metrics.js").ResponseTimes} times
   * @param {Omit<MetricOptions, "unit">} [options]
   */
  recordResponseTimes(name, times, options = {}) {
    this.env[ENV].metrics.responseTimes(name, times, options ?? {});
  }
}

/**
 * How a metric point is described, and which series it belongs to.
 * @typedef {object} MetricOptions
 * @property {string} [unit] its unit in UCUM, such as `ms`, `By` or `1`; empty for none
 * @property {string} [description] one line on what it measures
 * @property {Record<string, string | number | bigint | boolean> | Map<string, string | number | bigint | boolean>} [attributes]
 *   each distinct set is one series: text, integers or booleans
 */

/** Field names the host writes itself and refuses from a plugin (`validate::HOST_OWNED_KEYS`). */
export const HOST_OWNED_KEYS = Object.freeze([
  "time",
  "run_id",
  "testplan",
  "source",
  "source_id",
  "plugin",
  "telemetry_type",
  "telemetry_name",
]);

const FLOAT_MARK = Symbol.for("swarmtel-recorder.float");

/** The host's envelope (`schemas/telemetry.schema.json`): fields per item, message length. */
const MAX_FIELDS = 256;
const MAX_MESSAGE_CHARS = 4096;

/** @param {unknown} value */
function describeKind(value) {
  if (Array.isArray(value)) return "an array";
  if (value instanceof Map) return "a Map (use Object.fromEntries)";
  if (ArrayBuffer.isView(value)) return "a typed array";
  if (value !== null && typeof value === "object" && /** @type {any} */ (value)[FLOAT_MARK] === true) return "a float()";
  if (value !== null && typeof value === "object") return `a ${value.constructor?.name ?? "object"}`;
  return typeof value;
}

/**
 * A plugin, like locust-telemetry's `BaseTelemetryPlugin`: override `addArguments(parser)` to
 * declare options and `load<Role>TelemetryRecorders(env)` to create recorders per role. A role
 * whose method is not overridden gets no recorder.
 */
export class BaseTelemetryPlugin {
  /**
   * Declares options, like `add_arguments(parser)`.
   * @param {ArgumentParser} parser
   */
  addArguments(parser) {
    void parser;
  }

  /**
   * Creates the master's recorders.
   * @param {Environment} env
   */
  loadMasterTelemetryRecorders(env) {
    void env;
  }

  /**
   * Creates each worker's recorders.
   * @param {Environment} env
   */
  loadWorkerTelemetryRecorders(env) {
    void env;
  }

  /**
   * Creates a standalone (`locust` without master or workers) process's recorders.
   * @param {Environment} env
   */
  loadStandaloneTelemetryRecorders(env) {
    void env;
  }
}

/**
 * What registering a plugin gives back; hand it to the test harness.
 * @typedef {object} RegisteredPlugin
 * @property {BaseTelemetryPlugin} plugin
 * @property {string} id
 * @property {string} version
 * @property {string} description
 * @property {Record<string, object>} schemas JSON Schemas by telemetry name
 * @property {string | undefined} stack where it was registered
 */

/**
 * Registers the plugin this module builds into, like locust-telemetry's
 * `PluginManager.register_plugin(plugin=...)`. Call it once, at the top level of the module.
 *
 * @param {BaseTelemetryPlugin | (new () => BaseTelemetryPlugin)} plugin an instance (or a class
 *   to instantiate)
 * @param {object} [info] also read from static fields of the plugin's class
 * @param {string} [info.id] stable identifier: lower-case letters, digits, `-`, `_`
 * @param {string} [info.version] the plugin's own version (default `0.1.0`)
 * @param {string} [info.description] one line on what it records
 * @param {Record<string, object>} [info.schemas] JSON Schemas for the fields of telemetry, by
 *   telemetry name; the host rejects items that do not match
 * @returns {RegisteredPlugin}
 */
export function registerPlugin(plugin, info = {}) {
  const instance = typeof plugin === "function" ? new /** @type {any} */ (plugin)() : plugin;
  if (instance === null || typeof instance !== "object") {
    throw new PluginError(`registerPlugin needs a plugin instance, got ${typeof plugin}`);
  }
  const statics = /** @type {any} */ (instance.constructor ?? {});
  const entry = Object.freeze({
    plugin: instance,
    id: info.id ?? statics.pluginId ?? idFromClassName(statics.name ?? ""),
    version: info.version ?? statics.version ?? "0.1.0",
    description: info.description ?? statics.description ?? "",
    schemas: info.schemas ?? statics.schemas ?? {},
    stack: new Error().stack,
  });
  registeredPlugins().push(entry);
  return entry;
}

/**
 * Every plugin registered so far in this JavaScript realm. Not API.
 * @returns {RegisteredPlugin[]}
 */
export function registeredPlugins() {
  const global = /** @type {any} */ (globalThis);
  global[REGISTRY] ??= [];
  return global[REGISTRY];
}

/**
 * The registration of `plugin`: a registration, a registered instance or class, or (for the
 * harness) an unregistered instance or class, registered on the fly from its static fields.
 *
 * @param {any} plugin
 * @returns {RegisteredPlugin}
 */
export function registrationOf(plugin) {
  const all = registeredPlugins();
  if (all.includes(plugin)) {
    return plugin;
  }
  const found = all.find(
    (entry) => entry.plugin === plugin || entry.plugin.constructor === plugin,
  );
  if (found) {
    return found;
  }
  const instance = typeof plugin === "function" ? new plugin() : plugin;
  const statics = instance.constructor ?? {};
  return Object.freeze({
    plugin: instance,
    id: statics.pluginId ?? idFromClassName(statics.name ?? ""),
    version: statics.version ?? "0.1.0",
    description: statics.description ?? "",
    schemas: statics.schemas ?? {},
    stack: undefined,
  });
}

/**
 * The plugin's options, recorders and schemas, as WIT `plugin-info`, and what the SDK needs
 * to create recorders. Runs `addArguments` and every role's `load*TelemetryRecorders` with
 * default options to learn which recorders exist and which hooks they listen to.
 *
 * @param {RegisteredPlugin} entry
 */
export function describePlugin(entry) {
  const cached = describeCache.get(entry);
  if (cached) {
    return cached;
  }
  if (typeof entry.id !== "string" || entry.id === "") {
    throw new PluginError("the plugin has no id: registerPlugin(plugin, { id: \"my-plugin\" })", { stack: entry.stack });
  }
  const parser = new ArgumentParser();
  if (typeof entry.plugin.addArguments === "function") {
    entry.plugin.addArguments(parser);
  }
  const options = parser.options;
  const defaults = options.map((option) => ({ name: option.name, value: option.default }));
  /** @type {Map<string, { type: Function, roles: string[], events: string[], tickIntervalMs?: number, extras: { url: boolean, context: boolean } }>} */
  const recorders = new Map();
  for (const [role, { node, load }] of Object.entries(ROLES)) {
    if (typeof entry.plugin[load] !== "function") {
      continue;
    }
    const env = new Environment({ role: /** @type {any} */ (role), node, parsedOptions: parsedOptions(options, defaults), probing: true });
    try {
      entry.plugin[load](env, {});
    } catch (error) {
      if (error instanceof Error && !(error instanceof PluginError)) {
        error.message += ` (while describing the plugin: ${load} runs with every option at its default; skip checks when env.probing is true)`;
      }
      throw error;
    }
    const state = env[ENV];
    for (const recorder of state.recorders) {
      const type = recorder.constructor;
      const name = recorderName(type);
      const listeners = subscriptions(state, recorder);
      const known = recorders.get(name);
      if (known && known.type !== type) {
        throw new PluginError(`two recorder classes are named ${name}: give each its own static name`, { stack: entry.stack });
      }
      const spec = known ?? { type, roles: [], events: [], tickIntervalMs: undefined, extras: requestExtras(type) };
      if (!spec.roles.includes(role)) {
        spec.roles.push(role);
      }
      for (const { hook, stack } of listeners) {
        const kind = HOOK_BY_NAME.get(hook).kind;
        if (kind !== null && !spec.events.includes(kind)) {
          spec.events.push(kind);
        }
        if (hook === "tick") {
          spec.tickIntervalMs = tickInterval(type, stack);
        }
      }
      recorders.set(name, spec);
    }
  }
  if (recorders.size === 0) {
    throw new PluginError(
      "the plugin creates no recorder: create one in loadMasterTelemetryRecorders(env), loadWorkerTelemetryRecorders(env) or loadStandaloneTelemetryRecorders(env)",
      { stack: entry.stack },
    );
  }
  const schemas = Object.entries(entry.schemas).map(([name, schema]) => ({
    name,
    schema: typeof schema === "string" ? schema : JSON.stringify(schema),
  }));
  const info = {
    id: entry.id,
    version: String(entry.version),
    description: String(entry.description),
    options: options.map((option) => ({
      name: option.name,
      optionType: option.type,
      default: option.default === undefined ? undefined : optionValue(option.type, option.default),
      help: option.help,
      envVar: option.envVar,
    })),
    recorders: [...recorders].map(([name, spec]) => ({
      name,
      roles: spec.roles,
      events: spec.events,
      tickIntervalMs: spec.tickIntervalMs,
      requestExtras: spec.extras,
    })),
    schemas,
  };
  const problem = hostChecksOn() ? hostRefusal(info) : undefined;
  if (problem !== undefined) {
    throw new PluginError(problem, { stack: entry.stack });
  }
  const described = { info, options, recorders };
  describeCache.set(entry, described);
  return described;
}

/** Set by a build that skips {@link hostRefusal} (only to test the host's own verdicts). */
const UNCHECKED = Symbol.for("swarmtel-recorder.unchecked");

function hostChecksOn() {
  return /** @type {any} */ (globalThis)[UNCHECKED] !== true;
}

/** The host's caps on a description (`runtime/src/plugin.rs`, `caps`). */
export const CAPS = Object.freeze({
  recorders: 64,
  options: 64,
  schemas: 64,
  name_chars: 128,
  version_chars: 64,
  text_chars: 1024,
});

const NAME_RULE = "1 to 128 of A-Z, a-z, 0-9, `.`, `:`, `-`, `_`";

/**
 * Rust's `char::is_control`: the Unicode control characters (Cc).
 * @param {string} text
 */
function hasControl(text) {
  return /[\u0000-\u001f\u007f-\u009f]/.test(text);
}

/** @param {string} text characters as Rust counts them (code points) */
function chars(text) {
  return [...text].length;
}

/**
 * The host's `name_allowed`: an option, recorder or telemetry name.
 * @param {string} name
 */
export function nameAllowed(name) {
  return name.length >= 1 && name.length <= CAPS.name_chars && /^[A-Za-z0-9.:_-]+$/.test(name);
}

/**
 * The host's `option_env_var_allowed`: an environment variable the host may read for a
 * plugin (`LOCUST_*` or `SWARMTEL_*`, A-Z, 0-9 and `_`).
 * @param {string} name
 */
export function envVarAllowed(name) {
  return /^[A-Z0-9_]*$/.test(name)
    && ["LOCUST_", "SWARMTEL_"].some((prefix) => name.length > prefix.length && name.startsWith(prefix))
    && name.length <= CAPS.name_chars;
}

const OWN_ENV_VARS = ["SWARMTEL_TOKEN", "SWARMTEL_CONFIG", "SWARMTEL_CACHE_DIR"];
const SECRET_WORDS = ["TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "PWD", "AUTH",
  "CREDENTIAL", "CREDENTIALS", "KEY", "APIKEY", "COOKIE", "SESSION", "PRIVATE"];
const SECRET_PARTS = ["TOKEN", "SECRET", "PASSW", "PASSPHRASE", "CREDENTIAL", "PRIVATE", "CERT"];

/**
 * The host's `env_var_holds_secret`: a variable the host never reads for a plugin.
 * @param {string} name
 */
export function envVarHoldsSecret(name) {
  return OWN_ENV_VARS.includes(name)
    || name.startsWith("LOCUST_SWARMTEL_")
    || SECRET_PARTS.some((part) => name.includes(part))
    || name.split("_").some((word) =>
      SECRET_WORDS.includes(word)
      || (word.endsWith("S") && SECRET_WORDS.includes(word.slice(0, -1)))
      || word.startsWith("TLS"));
}

/**
 * Why the host would refuse this description, in the words of `swarmtel check`
 * (`check_description` in `runtime/src/plugin.rs`, in its order), or undefined.
 * @param {any} info WIT `plugin-info`
 * @returns {string | undefined}
 */
export function hostRefusal(info) {
  for (const cap of ["recorders", "options", "schemas"]) {
    if (info[cap].length > CAPS[cap]) {
      return `over the cap \`${cap}\` (${CAPS[cap]}): declares ${info[cap].length} ${cap}`;
    }
  }
  if (!/^[a-z0-9_-]{1,64}$/.test(info.id)) {
    return `id \`${info.id}\` must be 1 to 64 of a-z, 0-9, \`-\`, \`_\``;
  }
  if (info.id === "swarmtel") {
    return `id \`${info.id}\` is reserved for the runtime`;
  }
  if (chars(info.version) > CAPS.version_chars || hasControl(info.version)) {
    return `version \`${info.version}\` must be at most ${CAPS.version_chars} characters, none of them control characters (cap \`version_chars\`)`;
  }
  if (chars(info.description) > CAPS.text_chars) {
    return `over the cap \`text_chars\` (${CAPS.text_chars}): a description of ${chars(info.description)} characters`;
  }
  const seen = new Set();
  for (const option of info.options) {
    if (!nameAllowed(option.name)) {
      return `option name \`${option.name}\` must be ${NAME_RULE}`;
    }
    if (seen.has(option.name)) {
      return `option name \`${option.name}\` is repeated`;
    }
    seen.add(option.name);
    if (chars(option.help) > CAPS.text_chars) {
      return `over the cap \`text_chars\` (${CAPS.text_chars}): option \`${option.name}\` has help of ${chars(option.help)} characters`;
    }
    const envVar = option.envVar;
    if (envVar !== undefined) {
      if (!envVarAllowed(envVar)) {
        return `option \`${option.name}\` names env var \`${envVar}\`; the host reads only LOCUST_* and SWARMTEL_* names for plugins (A-Z, 0-9, _; at most 128)`;
      }
      if (envVarHoldsSecret(envVar)) {
        return `option \`${option.name}\` names env var \`${envVar}\`, which holds a secret of swarmtel, its Locust bridge or Locust; the host never reads it for a plugin`;
      }
    }
  }
  for (const schema of info.schemas) {
    if (!nameAllowed(schema.name)) {
      return `schema for telemetry name \`${schema.name}\`: the name must be ${NAME_RULE}`;
    }
  }
  for (const recorder of info.recorders) {
    if (!nameAllowed(recorder.name)) {
      return `recorder name \`${recorder.name}\` must be ${NAME_RULE}`;
    }
  }
  return undefined;
}

/** @type {WeakMap<object, ReturnType<typeof describePlugin>>} */
const describeCache = new WeakMap();

/**
 * @param {any} type a recorder class
 * @param {string | undefined} stack where it listens to `tick`
 */
function tickInterval(type, stack) {
  const interval = type.tickIntervalMs;
  if (interval === undefined) {
    throw new PluginError(
      `recorder ${recorderName(type)} listens to tick but has no tick interval: add static tickIntervalMs = 5000 to its class`,
      { stack },
    );
  }
  if (!Number.isInteger(interval) || interval < 1 || interval > 0xffffffff) {
    throw new PluginError(`recorder ${recorderName(type)}: tickIntervalMs must be a whole number of milliseconds from 1, got ${interval}`, { stack });
  }
  return interval;
}

/** @param {any} type a recorder class */
function requestExtras(type) {
  const wanted = type.requestExtras ?? [];
  if (!Array.isArray(wanted) || wanted.some((extra) => extra !== "url" && extra !== "context")) {
    throw new PluginError(`recorder ${recorderName(type)}: requestExtras must list "url" and/or "context"`);
  }
  return { url: wanted.includes("url"), context: wanted.includes("context") };
}

/**
 * @param {string} type
 * @param {any} value
 */
function optionValue(type, value) {
  return { tag: type, val: type === "integer" ? BigInt(value) : value };
}

/**
 * The `parsedOptions` object: every declared option under its three names.
 * @param {OptionDecl[]} declared
 * @param {{ name: string, value: any }[]} values
 */
function parsedOptions(declared, values) {
  const parsed = {};
  for (const option of declared) {
    const given = values.find((value) => value.name === option.name);
    let value = given?.value ?? null;
    if (option.whenAbsent !== undefined) {
      value = value === true ? false : option.whenAbsent;
    }
    if (typeof value === "bigint" && value >= Number.MIN_SAFE_INTEGER && value <= Number.MAX_SAFE_INTEGER) {
      value = Number(value);
    }
    for (const key of optionKeys(option.name)) {
      parsed[key] = value;
    }
  }
  return Object.freeze(parsed);
}

/**
 * The names an option answers to in `parsedOptions`.
 * @param {string} name
 */
export function optionKeys(name) {
  const underscored = name.replace(/-/g, "_");
  const camel = underscored.replace(/_+([a-zA-Z0-9])/g, (_, c) => c.toUpperCase());
  return [...new Set([name, underscored, camel])];
}

/**
 * Creates the recorder `config.recorder` for one node: runs the role's
 * `load*TelemetryRecorders` with the resolved options and keeps that recorder.
 *
 * @param {RegisteredPlugin} entry
 * @param {{ recorder: string, role: "master" | "worker" | "standalone", node: string, options: { name: string, value: { tag: string, val: any } }[] }} config
 *   WIT `recorder-config`
 * @returns {{ recorder: BaseTelemetryRecorder, state: EnvState }}
 */
export function createRecorder(entry, config) {
  const { options, recorders } = describePlugin(entry);
  const role = ROLES[config.role];
  if (role === undefined) {
    throw new PluginError(`unknown role ${config.role}`);
  }
  const values = (config.options ?? []).map((setting) => ({ name: setting.name, value: setting.value.val }));
  const env = new Environment({ role: config.role, node: config.node, parsedOptions: parsedOptions(options, values) });
  if (typeof entry.plugin[role.load] === "function") {
    entry.plugin[role.load](env, {});
  }
  const state = env[ENV];
  const recorder = state.recorders.find((candidate) => recorderName(candidate.constructor) === config.recorder);
  if (recorder === undefined) {
    throw new PluginError(`the plugin created no recorder ${config.recorder} for role ${config.role}`);
  }
  const declared = recorders.get(config.recorder)?.events ?? [];
  const undeclared = [...new Set(subscriptions(state, recorder).map((entry) => entry.hook))].filter((hook) => {
    const kind = HOOK_BY_NAME.get(hook).kind;
    return kind !== null && !declared.includes(kind);
  });
  if (undeclared.length > 0) {
    throw new PluginError(
      `recorder ${config.recorder} listens to ${undeclared.join(", ")} with these options, but did not when the plugin was described (every option at its default), so the host never delivers ${undeclared.length === 1 ? "it" : "them"}: add every listener you may need whatever the options, and ignore what you do not want`,
    );
  }
  state.frozen = true;
  state.current = recorder;
  return { recorder, state };
}

/**
 * The method names that make a method a hook's listener: `onTestStart` and `on_test_start`.
 * @type {Map<string, string>} method name → hook name
 */
const HOOK_METHODS = new Map();
for (const name of new Set([...HOOK_BY_NAME.values()].map((hook) => hook.name))) {
  const alias = HOOK_BY_NAME.get(name).alias;
  HOOK_METHODS.set(`on${alias[0].toUpperCase()}${alias.slice(1)}`, name);
  HOOK_METHODS.set(`on_${name}`, name);
}

/**
 * Every method name of a recorder's class chain, up to BaseTelemetryRecorder.
 * @param {object} recorder
 */
function methodNames(recorder) {
  const names = new Set();
  for (let proto = Object.getPrototypeOf(recorder); proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    if (proto.constructor?.[BASE_RECORDER] === true && Object.hasOwn(proto.constructor, BASE_RECORDER)) {
      break;
    }
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (name !== "constructor" && typeof proto[name] === "function") {
        names.add(name);
      }
    }
  }
  return names;
}

/**
 * A recorder's listeners: those it added to \`env.events\`, and for each hook it added none to,
 * its method named after the hook (\`onTestStart\`, \`onRequests\`, \`onFinish\`, or
 * \`on_test_start\`), as the Python SDK does. A method that looks like a misspelt hook throws.
 *
 * @param {EnvState} state
 * @param {BaseTelemetryRecorder} recorder
 * @returns {{ hook: string, listener: Function, owner: BaseTelemetryRecorder, stack?: string }[]}
 */
export function subscriptions(state, recorder) {
  const added = state.listeners.filter((entry) => entry.owner === recorder);
  const hooksAdded = new Set([...added.map((entry) => entry.hook), ...(state.claimed.get(recorder) ?? [])]);
  const fromMethods = [];
  for (const method of methodNames(recorder)) {
    const hook = HOOK_METHODS.get(method);
    if (hook === undefined) {
      if (/^on[A-Z_]/.test(method)) {
        const near = nearest(method, HOOK_METHODS.keys(), true);
        if (near !== undefined && near !== method) {
          const error = new PluginError(
            `recorder ${recorderName(recorder.constructor)}: method ${method} is not a hook (did you mean ${near}?)`,
            { location: "" },
          );
          error.location = undefined;
          /** @type {any} */ (error).searchFor = method;
          throw error;
        }
      }
      continue;
    }
    if (!hooksAdded.has(hook)) {
      fromMethods.push({ hook, listener: /** @type {any} */ (recorder)[method], owner: recorder, stack: undefined });
    }
  }
  return [...added, ...fromMethods];
}
