/**
 * What every call and every restart feeds: Effect `Metric`s, which an
 * application exports with the exporter of its choice (`@effect/opentelemetry`,
 * Prometheus, ...). A library emits; it never exports.
 *
 * @internal
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricLabel from "effect/MetricLabel"

/** @internal */
export const callDuration: Metric.Metric.Histogram<number> = Metric.histogram(
  "burn_p2p_worker_call_duration_ms",
  // 50 µs to ~7 minutes.
  MetricBoundaries.exponential({ start: 0.05, factor: 2, count: 24 }),
  "time from a call's start to its outcome, queueing and restarts included, in milliseconds",
)
/** @internal */
export const requestBytes: Metric.Metric.Counter<number> = Metric.counter("burn_p2p_worker_request_bytes", {
  description: "bytes of request frames written",
  incremental: true,
})
/** @internal */
export const responseBytes: Metric.Metric.Counter<number> = Metric.counter("burn_p2p_worker_response_bytes", {
  description: "bytes of response frames read",
  incremental: true,
})
/** @internal */
export const callErrors: Metric.Metric.Counter<number> = Metric.counter("burn_p2p_worker_call_errors", {
  description: "calls that failed, by method and error tag",
  incremental: true,
})
/** @internal */
export const restarts: Metric.Metric.Counter<number> = Metric.counter("burn_p2p_worker_restarts", {
  description: "worker processes started again after a death",
  incremental: true,
})
/** @internal */
export const queuedCalls: Metric.Metric.Gauge<number> = Metric.gauge("burn_p2p_worker_queued_calls", {
  description: "calls waiting for or on the wire of one worker, by pid",
})

/**
 * Each method's labels, as one array kept for good: a metric caches its
 * hook per labels array, while `Metric.tagged` builds a new key on every
 * update (measured: a key's formatting was ~2 µs of every call).
 *
 * @internal
 */
export interface PerMethod {
  readonly labels: ReadonlyArray<MetricLabel.MetricLabel>
  readonly errorLabels: Map<string, ReadonlyArray<MetricLabel.MetricLabel>>
}
const perMethod = new Map<string, PerMethod>()

/** @internal */
export const forMethod = (method: string): PerMethod => {
  let found = perMethod.get(method)
  if (found === undefined) {
    found = { labels: [MetricLabel.make("method", method)], errorLabels: new Map() }
    perMethod.set(method, found)
  }
  return found
}

/** @internal */
export const errorLabels = (metrics: PerMethod, tag: string): ReadonlyArray<MetricLabel.MetricLabel> => {
  let found = metrics.errorLabels.get(tag)
  if (found === undefined) {
    found = [...metrics.labels, MetricLabel.make("error", tag)]
    metrics.errorLabels.set(tag, found)
  }
  return found
}

const pidLabels = new Map<number, ReadonlyArray<MetricLabel.MetricLabel>>()

/** @internal */
export const labelsOfPid = (pid: number): ReadonlyArray<MetricLabel.MetricLabel> => {
  let found = pidLabels.get(pid)
  if (found === undefined) {
    found = [MetricLabel.make("pid", String(pid))]
    pidLabels.set(pid, found)
  }
  return found
}

/**
 * Forgets a dead process's labels (its gauge keeps its last value).
 *
 * @internal
 */
export const forgetPid = (pid: number): void => {
  pidLabels.delete(pid)
}
