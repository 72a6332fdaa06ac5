/**
 * Builds a recorder module into a swarmtel plugin component: bundles it with this SDK
 * (esbuild), loads it in Node and describes it (so an author's mistake is reported with its
 * file and line before anything slow runs), then componentizes the bundle against swarmtel's
 * WIT world, with componentize-js (SpiderMonkey; the WASI features swarmtel does not link
 * turned off) or componentize-qjs (QuickJS).
 *
 * @module
 */

import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { describeError, PluginError } from "./errors.js";
import { describePlugin, registeredPlugins } from "./plugin.js";

/** The package's root folder. */
export const SDK_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The WIT folder the component is built against: `wit/telemetry.wit`, a symbolic link to the
 * repository's `wit/0.2.0/telemetry.wit` (one copy of the contract in git).
 */
export const WIT_DIR = path.join(SDK_ROOT, "wit");

/** The world every plugin component implements. */
export const WORLD = "recorder-plugin";

/**
 * componentize-js features turned off: `http` and `fetch-event` import `wasi:http`, which
 * swarmtel does not link (it links WASI 0.2 without HTTP). `stdio` (console output, captured
 * by the host), `random` and `clocks` (frozen or fixed by the host unless granted) stay.
 */
export const DISABLED_FEATURES = Object.freeze(["http", "fetch-event"]);

/**
 * The JavaScript engines a recorder can be built with:
 * - `quickjs`: componentize-qjs 0.4.5 (QuickJS), with its non-async runtime, the default: a
 *   component a sixth the size that compiles five times faster, and whose instances do not
 *   grow with every batch;
 * - `spidermonkey`: componentize-js 0.23.0 (SpiderMonkey in StarlingMonkey), whose instances
 *   keep about 24 bytes per request they are handed (ComponentizeJS issue 350), so a
 *   recorder loses its state to a memory fault after a few million requests.
 */
export const ENGINES = Object.freeze(["spidermonkey", "quickjs"]);

/** The engine used when none is named. */
export const DEFAULT_ENGINE = "quickjs";

const UNCHECKED = Symbol.for("swarmtel-recorder.unchecked");

/** A build failure whose message is one line for the author. */
export class BuildError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "BuildError";
  }
}

/** @param {string} file */
function shown(file) {
  const relative = path.relative(process.cwd(), file);
  return relative.startsWith("..") || path.isAbsolute(relative) ? file : relative;
}

/**
 * Rewrites absolute paths in a message to paths relative to the working directory.
 * @param {string} message
 */
function relativePaths(message) {
  return message.replace(/(\/[^\s:()'"]+)(?=:\d+)/g, (file) => shown(file));
}

/** An esbuild plugin: `swarmtel-recorder` (and its subpaths) is this SDK, one copy. */
const sdkAlias = {
  name: "swarmtel-recorder",
  /** @param {any} build */
  setup(build) {
    build.onResolve({ filter: /^swarmtel-recorder(\/.*)?$/ }, (/** @type {any} */ args) => {
      const sub = args.path.slice("swarmtel-recorder".length);
      const file = sub === "" ? "index.js" : sub === "/testing" ? "testing.js" : `${sub.slice(1)}.js`;
      return { path: path.join(SDK_ROOT, "src", file) };
    });
  },
};

/**
 * Bundles `entry` (a file, or module text resolved from `resolveDir`) into one ES module.
 *
 * @param {{ file?: string, contents?: string, resolveDir?: string, outfile: string, sourcemap?: boolean }} spec
 */
async function bundle(spec) {
  const esbuild = await import("esbuild");
  const options = {
    bundle: true,
    format: /** @type {const} */ ("esm"),
    platform: /** @type {const} */ ("neutral"),
    target: "es2022",
    mainFields: ["module", "main"],
    external: ["swarmtel:*"],
    outfile: spec.outfile,
    sourcemap: spec.sourcemap ? /** @type {const} */ ("inline") : false,
    logLevel: /** @type {const} */ ("silent"),
    plugins: [sdkAlias],
    ...(spec.file !== undefined
      ? { entryPoints: [spec.file] }
      : { stdin: { contents: spec.contents, resolveDir: spec.resolveDir, sourcefile: "swarmtel-entry.js", loader: /** @type {const} */ ("js") } }),
  };
  try {
    await esbuild.build(options);
  } catch (error) {
    const first = /** @type {any} */ (error).errors?.[0];
    if (first === undefined) {
      throw error;
    }
    const where = first.location
      ? `${shown(path.resolve(first.location.file))}:${first.location.line}:${first.location.column + 1}: `
      : "";
    const kind = /Expected|Unexpected|Unterminated|Syntax|Invalid|reserved word/.test(first.text) ? "syntax error: " : "";
    throw new BuildError(`${where}${kind}${first.text}`);
  }
}

/**
 * Loads a recorder module in Node the way the component will see it (bundled with this SDK)
 * and returns its registered plugin and its exports. Stack traces point into the original
 * files. Used by the build and by the `replay` command; tests may use it to load a module
 * whose folder has no `node_modules`.
 *
 * @param {string} source the recorder module
 * @returns {Promise<{ plugin: import("./plugin.js").RegisteredPlugin, exports: Record<string, unknown> }>}
 */
export async function loadRecorderModule(source) {
  const file = path.resolve(source);
  try {
    if (!statSync(file).isFile()) {
      throw new Error("not a file");
    }
  } catch {
    throw new BuildError(`${shown(file)}: no such file`);
  }
  const work = mkdtempSync(path.join(tmpdir(), "swarmtel-recorder-"));
  try {
    const outfile = path.join(work, "node-entry.mjs");
    await bundle({ file, outfile, sourcemap: true });
    process.setSourceMapsEnabled(true);
    const registry = registeredPlugins();
    const before = registry.length;
    let exports;
    try {
      exports = await import(`${pathToFileURL(outfile).href}?load=${Date.now()}-${Math.random()}`);
    } catch (error) {
      throw new BuildError(relativePaths(describeError(error)));
    }
    const added = registry.splice(before);
    if (added.length === 0) {
      throw new BuildError(
        `${shown(file)}: no plugin registered: call registerPlugin(new MyPlugin(), { id: "my-plugin" }) once at the top level`,
      );
    }
    if (added.length > 1) {
      throw new BuildError(`${shown(file)}: ${added.length} plugins registered; a plugin file registers exactly one`);
    }
    const [plugin] = added;
    registry.push(plugin);
    return { plugin, exports };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Describes a registered plugin, turning a mistake into a one-line {@link BuildError}.
 * @param {import("./plugin.js").RegisteredPlugin} plugin
 * @param {string} [file] the recorder module, to locate a misspelt method in
 */
export function describeOrFail(plugin, file) {
  try {
    return describePlugin(plugin);
  } catch (error) {
    const method = /** @type {any} */ (error)?.searchFor;
    if (method !== undefined && file !== undefined && /** @type {any} */ (error).location === undefined) {
      // A misspelt hook method: point at its definition in the recorder file, if it is there.
      const lines = readFileSync(file, "utf8").split("\n");
      const line = lines.findIndex((text) => new RegExp(`^\\s*(static\\s+)?(async\\s+)?${method}\\s*\\(`).test(text));
      /** @type {any} */ (error).location =
        line >= 0 ? `${file}:${line + 1}:${lines[line].indexOf(method) + 1}` : file;
    }
    throw new BuildError(relativePaths(describeError(error)));
  }
}

/**
 * Builds `source` into a component at `output`.
 *
 * @param {string} source the recorder module (ES module that calls `registerPlugin` once)
 * @param {string} output where the `.wasm` goes
 * @param {{ log?: (line: string) => void, engine?: "spidermonkey" | "quickjs", hostChecks?: boolean }} [settings]
 *   `engine`: see {@link ENGINES} (default {@link DEFAULT_ENGINE}); `hostChecks: false` skips
 *   the SDK's copy of the host's description checks (only to test the host's verdicts)
 * @returns {Promise<{ bytes: number, seconds: number, info: any, engine: string }>}
 */
export async function build(source, output, settings = {}) {
  const say = settings.log ?? (() => {});
  const engine = settings.engine ?? DEFAULT_ENGINE;
  if (!ENGINES.includes(engine)) {
    throw new BuildError(`unknown engine ${engine}: use ${ENGINES.join(" or ")}`);
  }
  const started = performance.now();
  const file = path.resolve(source);
  const { plugin } = await loadRecorderModule(file);
  // `hostChecks: false` leaves the host's own checks to the host: only for testing them.
  const unchecked = settings.hostChecks === false;
  const global = /** @type {any} */ (globalThis);
  const before = global[UNCHECKED];
  let info;
  try {
    if (unchecked) global[UNCHECKED] = true;
    ({ info } = describeOrFail(plugin, file));
  } finally {
    global[UNCHECKED] = before;
  }
  say(
    `${shown(file)}: plugin ${info.id} ${info.version}: ${info.recorders
      .map((/** @type {any} */ r) => `${r.name} (${r.roles.join(", ")}; ${r.events.join(", ") || "no events"})`)
      .join("; ")}`,
  );
  const work = mkdtempSync(path.join(tmpdir(), "swarmtel-recorder-"));
  try {
    const bundled = path.join(work, "component.js");
    const entry = [
      `import { log } from "swarmtel:telemetry/host@0.2.0";`,
      `import { componentExports } from ${JSON.stringify(path.join(SDK_ROOT, "src", "component.js"))};`,
      `import ${JSON.stringify(file)};`,
      ...(unchecked ? [`globalThis[Symbol.for("swarmtel-recorder.unchecked")] = true;`] : []),
      `export const plugin = componentExports(log, ${JSON.stringify(engine)});`,
    ].join("\n");
    await bundle({ contents: entry, resolveDir: path.dirname(file), outfile: bundled, sourcemap: true });
    embedSourceMap(bundled);
    if (!existsSync(path.join(WIT_DIR, "telemetry.wit"))) {
      throw new BuildError(
        `${WIT_DIR}/telemetry.wit is missing: install swarmtel-recorder from a swarmtel checkout (npm install path/to/swarmtel/guest-sdk-js), whose wit/ it links to`,
      );
    }
    let component;
    try {
      component = engine === "quickjs" ? await componentizeQuickJs(bundled) : await componentizeSpiderMonkey(bundled);
    } catch (error) {
      const tool = engine === "quickjs" ? "componentize-qjs" : "componentize-js";
      throw new BuildError(`${shown(file)}: ${tool} failed: ${String(/** @type {any} */ (error)?.message ?? error).split("\n")[0]}`);
    }
    writeFileSync(output, component);
    return { bytes: component.length, seconds: (performance.now() - started) / 1000, info, engine };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * Replaces the bundle's inline source map by a compact one (no source text, paths relative
 * to the working directory) that the component's error reports read (see `stack.js`),
 * appended after the code so no line moves.
 * @param {string} bundled the bundle's path
 */
function embedSourceMap(bundled) {
  const text = readFileSync(bundled, "utf8");
  const marker = "//# sourceMappingURL=data:application/json;base64,";
  const at = text.lastIndexOf(marker);
  if (at < 0) {
    return;
  }
  const map = JSON.parse(Buffer.from(text.slice(at + marker.length).trim(), "base64").toString("utf8"));
  const sources = map.sources.map((/** @type {string} */ source) => {
    const absolute = path.resolve(path.dirname(bundled), source);
    const src = path.join(SDK_ROOT, "src") + path.sep;
    return absolute.startsWith(src) ? `swarmtel-recorder/src/${path.relative(src, absolute)}` : shown(absolute);
  });
  const compact = JSON.stringify({ sources, mappings: map.mappings });
  writeFileSync(bundled, `${text.slice(0, at)}globalThis[Symbol.for("swarmtel-recorder.sourcemap")] = ${compact};\n`);
}

/**
 * componentize-js: SpiderMonkey, with the features swarmtel does not link turned off.
 * @param {string} bundled the bundle's path
 * @returns {Promise<Uint8Array>}
 */
async function componentizeSpiderMonkey(bundled) {
  const { componentize } = await import("@bytecodealliance/componentize-js");
  const { component } = await componentize({
    sourcePath: bundled,
    witPath: WIT_DIR,
    worldName: WORLD,
    disableFeatures: /** @type {any} */ ([...DISABLED_FEATURES]),
  });
  return component;
}

/**
 * componentize-qjs: QuickJS, with the non-async runtime (swarmtel's calls are synchronous).
 * @param {string} bundled the bundle's path
 * @returns {Promise<Uint8Array>}
 */
async function componentizeQuickJs(bundled) {
  const { componentize } = await import("componentize-qjs");
  const { component } = await componentize({
    witPath: WIT_DIR,
    jsSource: readFileSync(bundled, "utf8"),
    jsPath: bundled,
    world: WORLD,
    sync: true,
  });
  return component;
}

export { PluginError };
