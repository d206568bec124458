/**
 * What every call and every restart feeds: Effect `Metric`s, which an
 * application exports with the exporter of its choice (`@effect/opentelemetry`,
 * Prometheus, ...). A library emits; it never exports.
 *
 * @internal
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"

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

/** Each method's tagged metrics, made once (tagging allocates a new metric). */
interface PerMethod {
  readonly method: string
  readonly duration: Metric.Metric.Histogram<number>
  readonly requestBytes: Metric.Metric.Counter<number>
  readonly responseBytes: Metric.Metric.Counter<number>
  readonly errors: Map<string, Metric.Metric.Counter<number>>
}
const perMethod = new Map<string, PerMethod>()

/** @internal */
export const forMethod = (method: string): PerMethod => {
  let found = perMethod.get(method)
  if (found === undefined) {
    found = {
      method,
      duration: Metric.tagged(callDuration, "method", method),
      requestBytes: Metric.tagged(requestBytes, "method", method),
      responseBytes: Metric.tagged(responseBytes, "method", method),
      errors: new Map(),
    }
    perMethod.set(method, found)
  }
  return found
}

/** @internal */
export const errorsFor = (metrics: PerMethod, tag: string): Metric.Metric.Counter<number> => {
  let found = metrics.errors.get(tag)
  if (found === undefined) {
    found = Metric.tagged(Metric.tagged(callErrors, "method", metrics.method), "error", tag)
    metrics.errors.set(tag, found)
  }
  return found
}
