// Types of swarmtel-recorder's public API (the JavaScript guest SDK of swarmtel).

/** A Locust role: which process a recorder serves. */
export type Role = "master" | "worker" | "standalone";

/** Severity of a diagnostic line for {@link log}. */
export type LogLevel = "trace" | "debug" | "info" | "warn" | "error";

/** The type and name of a piece of telemetry, like locust-telemetry's `TelemetryData`. */
export class TelemetryData {
  constructor(data: { type: "event" | "metric"; name: string });
  readonly type: "event" | "metric";
  readonly name: string;
}

/** A number written as a JSON float even when whole (`20.0`); see {@link float}. */
export class Float {
  constructor(value: number);
  readonly value: number;
  toJSON(): number;
  valueOf(): number;
}

/** Marks a number as a float in telemetry fields: `float(20)` is written `20.0`. */
export function float(value: number): Float;

/** Logs one line of the plugin's own diagnostics through the host (not telemetry). */
export function log(level: LogLevel, message: string): void;

/** A mistake in a plugin, located in the author's file when known. */
export class PluginError extends Error {
  readonly location: string | undefined;
}

/** The type of an option: a name or the JavaScript constructor for it. */
export type OptionType =
  | "text" | "string" | "str" | StringConstructor
  | "integer" | "int" | BigIntConstructor
  | "float" | "number" | NumberConstructor
  | "boolean" | "bool" | BooleanConstructor;

/** How an option is declared, as argparse's `add_argument` keywords. */
export interface ArgumentSpec {
  type?: OptionType;
  default?: string | number | bigint | boolean;
  help?: string;
  envVar?: string;
  env_var?: string;
  action?: "store_true" | "store_false";
}

/** Collects option declarations, like Locust's argument parser. */
export class ArgumentParser {
  addArgumentGroup(title?: string, description?: string): { addArgument(flag: string, spec?: ArgumentSpec): void };
  addArgument(flag: string, spec?: ArgumentSpec): void;
}

/** Every listener gets one object: the event's arguments under Locust's names. */
export interface TimeArgs { time: number }
export interface RequestArgs {
  request_type: string;
  name: string;
  /** Milliseconds. */
  response_time: number;
  /** Bytes. */
  response_length: number;
  exception: string | null;
  /** The exception's class name, such as `ConnectionError`, for a failure (`""` when not known); null for a success. */
  exception_type: string | null;
  start_time: number;
  /** Only when the recorder asks for it (`static requestExtras = ["url"]`). */
  url: string | null;
  /** Only when the recorder asks for it (`static requestExtras = ["context"]`); else `{}`. */
  context: Record<string, unknown>;
  status_code: number | null;
  /** The recorder's stable id of the endpoint. */
  endpoint: number;
}
export interface StatsEntry {
  request_type: string;
  name: string;
  num_requests: number;
  num_failures: number;
  total_response_time: number;
  min_response_time: number;
  max_response_time: number;
  total_content_length: number;
  /** Locust's rounded histogram: [milliseconds, count], ascending; keys may be fractional (Locust 2.44+). */
  response_times: Array<[number, number]>;
  current_rps: number;
  current_fail_per_sec: number;
  /** When the entry started counting (the last stats reset), Unix seconds; null when not sent. */
  start_time: number | null;
  /** When its last request was counted, Unix seconds; null before the first or when not sent. */
  last_request_timestamp: number | null;
}
/** One row of Locust's error table. */
export interface StatsError {
  request_type: string;
  name: string;
  error: string;
  occurrences: number;
  /** When the bridge first saw it, Unix seconds; null when not known. */
  first_seen: number | null;
  /** When the bridge last saw it, Unix seconds; null when not known. */
  last_seen: number | null;
}
/** One Locust process's resource use (the `process_sample` hook). */
export interface ProcessSampleArgs extends TimeArgs {
  /** CPU use of the process, in percent of one core. */
  cpu_percent: number;
  /** Resident memory, in bytes. */
  memory_bytes: number;
  /** Bytes the host's network interfaces sent so far (host-wide). */
  network_sent_bytes: number;
  /** Bytes the host's network interfaces received so far (host-wide). */
  network_recv_bytes: number;
}
export interface HookArgs {
  test_start: TimeArgs;
  test_stopping: TimeArgs;
  test_stop: TimeArgs;
  spawning_complete: TimeArgs & { user_count: number };
  request: RequestArgs;
  requests: Requests;
  user_error: TimeArgs & { user_instance: string; exception: string; tb: string };
  cpu_warning: TimeArgs & { cpu_usage: number };
  usage_monitor: TimeArgs & { cpu_usage: number; memory_usage: number };
  worker_connect: TimeArgs & { client_id: string };
  worker_report: TimeArgs & { client_id: string; user_count: number };
  heartbeat_sent: TimeArgs & { client_id: string; timestamp: number };
  heartbeat_received: TimeArgs & { client_id: string; timestamp: number };
  reset_stats: TimeArgs;
  quitting: TimeArgs;
  quit: TimeArgs & { exit_code: number };
  stats: TimeArgs & { user_count: number; entries: StatsEntry[]; total: StatsEntry; errors: StatsError[] };
  tick: TimeArgs;
  process_sample: ProcessSampleArgs;
  finish: Record<string, never>;
}

/** One hook: `addListener(fn)` in a recorder's constructor. */
export interface EventHook<A> {
  readonly name: string;
  addListener(listener: (this: BaseTelemetryRecorder, args: A) => void): void;
  /** Stops a listener added with addListener, or the recorder's own method named after the hook. */
  removeListener(listener: (args: A) => void): void;
}

/** Locust's hooks under their own names, with camelCase aliases. */
export type Events = { [K in keyof HookArgs]: EventHook<HookArgs[K]> } & {
  testStart: EventHook<HookArgs["test_start"]>;
  testStopping: EventHook<HookArgs["test_stopping"]>;
  testStop: EventHook<HookArgs["test_stop"]>;
  spawningComplete: EventHook<HookArgs["spawning_complete"]>;
  userError: EventHook<HookArgs["user_error"]>;
  cpuWarning: EventHook<HookArgs["cpu_warning"]>;
  usageMonitor: EventHook<HookArgs["usage_monitor"]>;
  workerConnect: EventHook<HookArgs["worker_connect"]>;
  workerReport: EventHook<HookArgs["worker_report"]>;
  heartbeatSent: EventHook<HookArgs["heartbeat_sent"]>;
  heartbeatReceived: EventHook<HookArgs["heartbeat_received"]>;
  resetStats: EventHook<HookArgs["reset_stats"]>;
  processSample: EventHook<HookArgs["process_sample"]>;
};

/** What `load*TelemetryRecorders(env)` and a recorder's constructor get. */
export class Environment {
  constructor(init: { role: Role; node: string; parsedOptions: Record<string, unknown>; probing?: boolean });
  readonly role: Role;
  /** True while the plugin is being described, with every option at its default. */
  readonly probing: boolean;
  readonly node: string;
  /** Each option under its config name, Locust's attribute name and camelCase. */
  readonly parsedOptions: Readonly<Record<string, any>>;
  readonly events: Events;
}

/** An endpoint with the recorder's stable id. */
export interface Endpoint {
  readonly id: number;
  readonly request_type: string;
  readonly name: string;
}

/** The request events of one batch, as columns (the fast path) or iterated per request. */
export class Requests implements Iterable<RequestArgs> {
  readonly length: number;
  readonly endpointIds: Uint32Array;
  readonly responseTimesMs: Float64Array;
  readonly responseLengths: Float64Array;
  /** Exact response lengths (the host's u64), for lengths past 2^53. */
  readonly responseLengthsExact: BigUint64Array;
  readonly startTimes: Float64Array;
  readonly statusCodes: Uint16Array;
  /** `exceptionType` is the exception's class name, `""` when not known. */
  readonly failures: ReadonlyArray<{ index: number; exception: string; exceptionType: string }>;
  readonly details: ReadonlyArray<{ index: number; url?: string; context?: string }>;
  readonly endpointCount: number;
  endpoint(id: number): Endpoint;
  endpoints(): ReadonlyArray<Endpoint>;
  [Symbol.iterator](): Iterator<RequestArgs>;
}

/** An attribute value of a metric point: text, an integer (a safe number or a 64-bit BigInt) or a boolean. */
export type AttributeValue = string | number | bigint | boolean;

/** How a metric point is described, and which series it belongs to. */
export interface MetricOptions {
  /** Its unit in UCUM, such as `ms`, `By` or `1`; empty for none. */
  unit?: string;
  /** One line on what it measures. */
  description?: string;
  /** Each distinct set is one series. */
  attributes?: Record<string, AttributeValue> | Map<string, AttributeValue>;
}

/**
 * Response times counted in Locust's rounded buckets (Python's round, a half to the even
 * neighbour), with the sum of the exact times.
 */
export class ResponseTimes {
  /** Times from this many milliseconds on (about 49.7 days) do not fit a bucket. */
  static readonly LIMIT_MS: number;
  constructor();
  /** Rounded milliseconds → count. */
  readonly buckets: Map<number, number>;
  /** The sum of the exact response times, in milliseconds. */
  readonly sumMs: number;
  /** How many times were observed. */
  readonly count: number;
  /** Counts one response time (finite, >= 0, in milliseconds). */
  observe(responseTimeMs: number): void;
  /** Forgets every time observed. */
  reset(): void;
}

/** Locust's `bucket_response_time`: 147 → 150, 145 → 140, 3432 → 3400, 58760 → 59000. */
export function bucketResponseTime(responseTimeMs: number): number;

/** A recorder, like locust-telemetry's `BaseTelemetryRecorder`. */
export class BaseTelemetryRecorder {
  /** Interval of `tick` events in milliseconds of event time; needed to listen to `tick`. */
  static tickIntervalMs?: number;
  /** Per-request details to deliver: `"url"`, `"context"`. */
  static requestExtras?: Array<"url" | "context">;
  constructor(env: Environment);
  readonly env: Environment;
  logTelemetry(telemetry: TelemetryData | { type: "event" | "metric"; name: string }, message: string, fields?: Record<string, unknown>): void;
  /** Adds an increment (a whole number >= 0, default 1; a BigInt past 2^53) to a counter. */
  addCounter(name: string, value?: number | bigint, options?: MetricOptions): void;
  /** Sets a gauge to a finite number; the last value reported wins. */
  setGauge(name: string, value: number, options?: MetricOptions): void;
  /** Reports a copy of the response times observed since the series was last reported. */
  recordResponseTimes(name: string, times: ResponseTimes, options?: Omit<MetricOptions, "unit">): void;
}

/** A plugin, like locust-telemetry's `BaseTelemetryPlugin`. */
export class BaseTelemetryPlugin {
  addArguments(parser: ArgumentParser): void;
  loadMasterTelemetryRecorders(env: Environment): void;
  loadWorkerTelemetryRecorders(env: Environment): void;
  loadStandaloneTelemetryRecorders(env: Environment): void;
}

/** What {@link registerPlugin} returns; hand it to the test harness. */
export interface RegisteredPlugin {
  readonly plugin: BaseTelemetryPlugin;
  readonly id: string;
  readonly version: string;
  readonly description: string;
  readonly schemas: Record<string, object>;
}

/** Registers the plugin this module builds into; call it once at the top level. */
export function registerPlugin(
  plugin: BaseTelemetryPlugin | (new () => BaseTelemetryPlugin),
  info?: { id?: string; version?: string; description?: string; schemas?: Record<string, object> },
): RegisteredPlugin;

/** Every hook: Locust name, camelCase alias, WIT event kind. */
export const HOOKS: ReadonlyArray<{ name: string; alias: string; kind: string | null; tag: string | null }>;
