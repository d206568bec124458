/**
 * One call's deadline and what it records when it ends: duration, bytes each
 * way, the error tag, the worker's pid and generation, the model; as metrics
 * and as attributes of its span.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import type { CallOptions } from "../PythonWorker.ts"
import type { CallError, InvalidArgumentError } from "../WorkerError.ts"
import type { Connection } from "./connection.ts"
import * as Metrics from "./metrics.ts"
import { decodeCallTimeout } from "./options.ts"

/**
 * Filled in as the call goes.
 *
 * @internal
 */
export interface Stats {
  requestBytes: number
  responseBytes: number
  pid: number | undefined
  generation: number | undefined
  modelId: string | undefined
  connection: Connection | undefined
  /** What an interruption of the call on the connection must run (`Connection.unguarded`). */
  cancel: (() => void) | undefined
}

/** @internal */
export interface Timing {
  /** Absolute, in `Clock` milliseconds; `undefined` for no deadline. */
  readonly deadline: number | undefined
  readonly timeoutMillis: number
  readonly stats: Stats
}

/**
 * A method's span, made once per method: its name and options (no stack
 * capture: it cost ~30 µs a call).
 *
 * @internal
 */
export interface SpanSpec {
  readonly name: string
  readonly options: Tracer.SpanOptions
}

/** @internal */
export const spanSpec = (name: string, method: string): SpanSpec => ({
  name,
  options: { captureStackTrace: false, attributes: { "rpc.method": method } },
})

const newStats = (): Stats => ({
  requestBytes: 0,
  responseBytes: 0,
  pid: undefined,
  generation: undefined,
  modelId: undefined,
  connection: undefined,
  cancel: undefined,
})

/**
 * A call's deadline: its own `timeout`, else `callTimeout`, else none. Read
 * from the manager's `Clock` directly: this runs on every call.
 *
 * @internal
 */
export const timingOf = (
  clock: Clock.Clock,
  callTimeout: Option.Option<Duration.Duration>,
  method: string,
  callOptions: CallOptions | undefined,
  stats: Stats = newStats(),
): Either.Either<Timing, InvalidArgumentError> => {
  const timeout = callOptions?.timeout === undefined
    ? Either.right(callTimeout)
    : Either.map(decodeCallTimeout(method, callOptions.timeout), Option.some)
  if (Either.isLeft(timeout)) return Either.left(timeout.left)
  if (Option.isNone(timeout.right)) return Either.right({ deadline: undefined, timeoutMillis: 0, stats })
  const timeoutMillis = Duration.toMillis(timeout.right.value)
  return Either.right({ deadline: clock.unsafeCurrentTimeMillis() + timeoutMillis, timeoutMillis, stats })
}

const outcomeOf = (exit: Exit.Exit<unknown, CallError>): string => {
  if (Exit.isSuccess(exit)) return "ok"
  // Causes come composed (an interruption is often `Sequential(Empty, Interrupt)`): look inside.
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) return failure.value._tag
  return Cause.isInterruptedOnly(exit.cause) ? "interrupted" : "defect"
}

/** Effect's own clock: the one a fiber has unless the application (or a test) provides another. */
const builtInClock = Effect.runSync(Effect.clock)

/**
 * A reading in milliseconds, for a duration: `performance.now()` under
 * Effect's own clock, whose nanosecond reads (a `BigInt` each, and BigInt
 * arithmetic) cost ~0.2 µs more per call; any other clock is read as itself.
 */
const millisOf = (clock: Clock.Clock): number =>
  clock === builtInClock ? performance.now() : Number(clock.unsafeCurrentTimeNanos()) / 1e6

/** The call's metrics, and its span's attributes and end. */
const record = (
  clock: Clock.Clock,
  metrics: Metrics.PerMethod,
  stats: Stats,
  start: number,
  span: Tracer.Span | undefined,
  exit: Exit.Exit<unknown, CallError>,
) => {
  const outcome = outcomeOf(exit)
  Metrics.callDuration.unsafeUpdate(millisOf(clock) - start, metrics.labels)
  if (stats.requestBytes > 0) Metrics.requestBytes.unsafeUpdate(stats.requestBytes, metrics.labels)
  if (stats.responseBytes > 0) Metrics.responseBytes.unsafeUpdate(stats.responseBytes, metrics.labels)
  if (Exit.isFailure(exit)) Metrics.callErrors.unsafeUpdate(1, Metrics.errorLabels(metrics, outcome))
  if (stats.connection !== undefined && stats.pid !== undefined) {
    Metrics.queuedCalls.unsafeUpdate(stats.connection.inFlight(), Metrics.labelsOfPid(stats.pid))
  }
  if (span === undefined) return
  span.attribute("rpc.outcome", outcome)
  span.attribute("rpc.request_bytes", stats.requestBytes)
  span.attribute("rpc.response_bytes", stats.responseBytes)
  if (stats.pid !== undefined) {
    span.attribute("worker.pid", stats.pid)
    span.attribute("worker.generation", stats.generation)
  }
  if (stats.modelId !== undefined) span.attribute("worker.model_id", stats.modelId)
  span.end(clock.unsafeCurrentTimeNanos(), exit)
}

/**
 * Effect's own tracer: the one a fiber has when the application installed
 * none. Its spans are objects nobody reads (it exports nothing, and nothing
 * runs inside a call's span), so a call under it makes none: ~5 KB and ~6 µs
 * a call. Under any tracer an application installs, every call has its span.
 */
const builtInTracer = Effect.runSync(Effect.tracer)

/**
 * Runs `call` in its span and records how it ended, whatever ended it; an
 * interruption first cancels the call on the connection (`stats.cancel`). One
 * mask holds the span's making and the recording (what `useSpan` and
 * `onExit` would each do), and the recording is plain code in the match:
 * this runs on every call.
 *
 * @internal
 */
export const observe = <A>(
  clock: Clock.Clock,
  method: string,
  span: SpanSpec | undefined,
  call: (stats: Stats) => Effect.Effect<A, CallError>,
): Effect.Effect<A, CallError> =>
  Effect.uninterruptibleMask((restore) => {
    const metrics = Metrics.forMethod(method)
    const stats = newStats()
    const run = (made: Tracer.Span | undefined) => {
      const start = millisOf(clock)
      // Built here, inside the match: a throw while building it is the call's defect, recorded and ending its span.
      let effect: Effect.Effect<A, CallError>
      try {
        effect = call(stats)
      } catch (defect) {
        effect = Effect.die(defect)
      }
      return Effect.matchCauseEffect(restore(effect), {
        onFailure: (cause) => {
          if (Cause.isInterrupted(cause)) stats.cancel?.()
          record(clock, metrics, stats, start, made, Exit.failCause(cause))
          return Effect.failCause(cause)
        },
        onSuccess: (value) => {
          record(clock, metrics, stats, start, made, Exit.succeed(value))
          return Effect.succeed(value)
        },
      })
    }
    if (span === undefined) return run(undefined)
    return Effect.withFiberRuntime((fiber) =>
      fiber.currentTracer === builtInTracer
        ? run(undefined)
        : Effect.flatMap(Effect.makeSpan(span.name, span.options), run)
    )
  })
