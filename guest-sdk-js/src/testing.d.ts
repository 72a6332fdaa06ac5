// Types of swarmtel-recorder/testing: drive a recorder in Node.
import type { BaseTelemetryPlugin, BaseTelemetryRecorder, RegisteredPlugin, Role } from "./index.js";

/** One telemetry item a recorder logged. */
export interface TelemetryItem {
  telemetryType: "event" | "metric";
  name: string;
  message: string;
  /** The fields, parsed (`{}` when none). */
  fields: Record<string, any>;
  /** The fields as the JSON text handed to the host ("" when none). */
  fieldsJson: string;
}

/** One metric point a recorder reported. */
export interface MetricItem {
  name: string;
  type: "counter" | "gauge" | "responseTimes";
  /** A counter's increment (a BigInt past 2^53), a gauge's value, or response times. */
  value: number | bigint | { buckets: Array<[number, number | bigint]>; sumMs: number };
  unit: string;
  description: string;
  attributes: Record<string, string | number | bigint | boolean>;
}

/** The telemetry of a call, with its metric points as `metrics` (not enumerable). */
export type Output<T = TelemetryItem, M = MetricItem> = T[] & { metrics: M[] };

/** A metric point the host would reject; the harness throws it where the host drops the point. */
export class MetricRejected extends Error {}

/** A telemetry item from {@link replay}, with where and when the host would write it. */
export interface ReplayItem extends TelemetryItem {
  node: string;
  role: Role;
  recorder: string;
  /** Event time of the batch that produced it, Unix seconds. */
  time: number;
  /** `time` as the host writes it: RFC 3339, cut to milliseconds (`2026-11-25T11:12:02.099Z`). */
  rfc3339: string;
}

/** A metric point from {@link replay}, with where it came from and its call's event time. */
export interface ReplayMetric extends MetricItem {
  node: string;
  role: Role;
  recorder: string;
  time: number;
}

type PluginLike = RegisteredPlugin | BaseTelemetryPlugin | (new () => BaseTelemetryPlugin);

/** One recorder of a plugin, fed by hand. */
export class Harness {
  constructor(plugin: PluginLike, recorder: string, role?: Role, settings?: { options?: Record<string, unknown>; node?: string; maxMetricSeries?: number });
  readonly recorder: BaseTelemetryRecorder;
  /** Queues one request (Locust's `request` arguments) for the next delivery. */
  request(request: {
    request_type?: string; name: string; response_time: number; response_length?: number;
    exception?: string | null; exception_type?: string; start_time?: number; status_code?: number; url?: string; context?: object;
  }): void;
  /** Delivers queued requests, then one event written as an event-stream line. */
  event(line: { event: string; time?: number; [argument: string]: unknown }): Output;
  flush(): Output;
  finish(): Output;
}

/** A decoded event-stream line. */
export interface EventRecord {
  node: string;
  role: Role;
  time: number;
  kind: string;
  request?: Record<string, unknown>;
  event?: { tag: string; val?: unknown };
}

export function decodeEvent(line: Record<string, unknown>, accept?: { tick?: boolean }): EventRecord;
export function readEventStream(path: string): EventRecord[];

/**
 * Runs an event stream through every recorder of a plugin, as `swarmtel replay` does. Each
 * recorder instance gets a realm of its own (module state is per instance, as in the host)
 * when the recorder module's file is known: the module that called `registerPlugin`, or
 * `settings.module`.
 */
export function replay(
  plugin: PluginLike,
  events: string | Iterable<EventRecord | Record<string, unknown>>,
  settings?: { options?: Record<string, unknown>; batchSize?: number; roles?: Role[]; module?: string; isolate?: boolean; maxMetricSeries?: number },
): Output<ReplayItem, ReplayMetric>;

/** Unix seconds as the host writes a line's `time`: RFC 3339, cut to milliseconds. */
export function formatTime(unixSeconds: number): string;
