/**
 * The hooks a recorder can listen to on `env.events`: Locust's own hooks under Locust's names,
 * plus swarmtel's `stats` (the master's stats snapshot), `tick` (the host's clock),
 * `process_sample` (a Locust process's resource use), `requests` (the columns fast path) and
 * `finish` (the stream ended).
 *
 * @module
 */

/**
 * One hook: its Locust name, its camelCase alias, the WIT event kind it subscribes to (none
 * for `finish`) and the WIT event variant tag that delivers it.
 *
 * @typedef {object} HookSpec
 * @property {string} name Locust's name, such as `test_start`.
 * @property {string} alias The camelCase alias, such as `testStart`.
 * @property {string | null} kind The WIT `event-kind` it subscribes to.
 * @property {string | null} tag The WIT `event` variant tag that delivers it.
 */

/** @type {HookSpec[]} */
export const HOOKS = [
  ["test_start", "testStart", "test-start"],
  ["test_stopping", "testStopping", "test-stopping"],
  ["test_stop", "testStop", "test-stop"],
  ["spawning_complete", "spawningComplete", "spawning-complete"],
  ["request", "request", "request"],
  ["requests", "requests", "request"],
  ["user_error", "userError", "user-error"],
  ["cpu_warning", "cpuWarning", "cpu-warning"],
  ["usage_monitor", "usageMonitor", "usage-monitor"],
  ["worker_connect", "workerConnect", "worker-connect"],
  ["worker_report", "workerReport", "worker-report"],
  ["heartbeat_sent", "heartbeatSent", "heartbeat-sent"],
  ["heartbeat_received", "heartbeatReceived", "heartbeat-received"],
  ["reset_stats", "resetStats", "reset-stats"],
  ["quitting", "quitting", "quitting"],
  ["quit", "quit", "quit"],
  ["stats", "stats", "stats-snapshot"],
  ["tick", "tick", "tick"],
  ["process_sample", "processSample", "process-sample"],
  ["finish", "finish", null],
].map(([name, alias, kind]) => ({
  name,
  alias,
  kind,
  tag: kind === "request" ? null : kind,
}));

/** Hook spec by Locust name and by alias. */
export const HOOK_BY_NAME = new Map();
for (const hook of HOOKS) {
  HOOK_BY_NAME.set(hook.name, hook);
  HOOK_BY_NAME.set(hook.alias, hook);
}

/** Locust hook name by WIT event variant tag. */
export const HOOK_BY_TAG = new Map(HOOKS.filter((h) => h.tag).map((h) => [h.tag, h.name]));

/** Every name `env.events` answers to. */
export const HOOK_NAMES = [...HOOK_BY_NAME.keys()];

/**
 * Edit distance with transpositions (optimal string alignment), for "did you mean".
 * @param {string} a
 * @param {string} b
 */
function distance(a, b) {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/**
 * The known name nearest to `name`, if one is near enough to be a typo. Case and `_` are
 * ignored, so `testStart`, `TestStart` and `test_start` all find `test_start`.
 *
 * @param {string} name
 * @param {Iterable<string>} known
 * @param {boolean} [strict] only very near names (for method names, which may be anything)
 * @returns {string | undefined}
 */
export function nearest(name, known, strict = false) {
  const fold = (/** @type {string} */ text) => text.toLowerCase().replace(/_/g, "");
  const wanted = fold(String(name));
  let best;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = distance(wanted, fold(candidate));
    const sameStyle = candidate.includes("_") === String(name).includes("_");
    if (d < bestDistance || (d === bestDistance && sameStyle)) {
      best = candidate;
      bestDistance = d;
    }
  }
  const limit = strict ? Math.max(1, Math.floor(wanted.length / 8)) : Math.max(2, Math.floor(wanted.length / 3));
  return bestDistance <= limit ? best : undefined;
}
