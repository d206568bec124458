/**
 * A call's span and its recording, without a worker: whatever ends the call
 * (a value, a failure, a throw while it is being built, an interruption),
 * its span ends with that outcome; under Effect's own tracer none is made.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as TestClock from "effect/TestClock"
import * as Tracer from "effect/Tracer"
import { observe, spanSpec } from "../src/internal/observe.ts"
import { InvalidArgumentError } from "../src/WorkerError.ts"

/** A tracer that keeps every span it makes, and how each ended. */
const recording = () => {
  const spans: Array<{ name: string; outcome: unknown; ended: Exit.Exit<unknown, unknown> | undefined }> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const entry = { name, outcome: undefined as unknown, ended: undefined as Exit.Exit<unknown, unknown> | undefined }
      spans.push(entry)
      return {
        _tag: "Span",
        name,
        spanId: String(spans.length),
        traceId: "trace",
        parent,
        context,
        status: { _tag: "Started", startTime },
        attributes: new Map(),
        links,
        sampled: true,
        kind,
        end: (_endTime, exit) => {
          entry.ended = exit
        },
        attribute: (key, value) => {
          if (key === "rpc.outcome") entry.outcome = value
        },
        event: () => {},
        addLinks: () => {},
      } satisfies Tracer.Span
    },
    context: (f) => f(),
  })
  return { spans, tracer }
}

const span = spanSpec("PythonWorker.m", "m")

describe("a call's span", () => {
  it.effect("ends with the outcome: a value, a typed failure, a throw while the call is built", () =>
    Effect.gen(function* () {
      const { spans, tracer } = recording()
      const clock = yield* Effect.clock
      const run = <A>(call: () => Effect.Effect<A, InvalidArgumentError>) =>
        Effect.exit(observe(clock, "m", span, call).pipe(Effect.withTracer(tracer)))
      expect(yield* run(() => Effect.succeed(1))).toEqual(Exit.succeed(1))
      const failed = yield* run(() => Effect.fail(new InvalidArgumentError({ where: "m", detail: "bad" })))
      expect(Exit.isFailure(failed)).toBe(true)
      const thrown = yield* run(() => {
        throw new Error("thrown while building the call")
      })
      expect(Exit.isFailure(thrown) && thrown.cause._tag === "Die").toBe(true)
      expect(spans.map((s) => s.outcome)).toEqual(["ok", "InvalidArgumentError", "defect"])
      expect(spans.every((s) => s.ended !== undefined)).toBe(true)
    }))

  it.effect("ends as interrupted when the caller is interrupted, and cancels the call", () =>
    Effect.gen(function* () {
      const { spans, tracer } = recording()
      const clock = yield* Effect.clock
      let cancelled = 0
      const fiber = yield* Effect.fork(
        observe(clock, "m", span, (stats) => {
          stats.cancel = () => cancelled++
          return Effect.never
        }).pipe(Effect.withTracer(tracer)),
      )
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(fiber)
      expect(cancelled).toBe(1)
      expect(spans.map((s) => s.outcome)).toEqual(["interrupted"])
    }))

  it.effect("under Effect's own tracer, no span is made (nobody could read it)", () =>
    Effect.gen(function* () {
      const clock = yield* Effect.clock
      let made = 0
      const builtIn = yield* Effect.tracer
      const counting = Tracer.make({ span: (...args) => (made++, builtIn.span(...args)), context: (f) => f() })
      yield* observe(clock, "m", span, () => Effect.succeed(1))
      expect(made).toBe(0)
      yield* observe(clock, "m", span, () => Effect.succeed(1)).pipe(Effect.withTracer(counting))
      expect(made).toBe(1)
    }))
})

/** The sum of the call-duration histogram of `method`, in milliseconds. */
const durationSum = (method: string) =>
  Effect.map(Metric.snapshot, (pairs) => {
    const pair = pairs.find((pair) =>
      pair.metricKey.name === "burn_p2p_worker_call_duration_ms" &&
      pair.metricKey.tags.some((tag) => tag.key === "method" && tag.value === method)
    )
    return (pair?.metricState as unknown as { readonly sum?: number } | undefined)?.sum ?? 0
  })

describe("a call's duration", () => {
  it.effect("is read on the clock the call runs on: a TestClock moves it exactly", () =>
    Effect.gen(function* () {
      const clock = yield* Effect.clock
      const fiber = yield* Effect.fork(
        observe(clock, "duration-test-clock", undefined, () => Effect.sleep("250 millis")),
      )
      yield* TestClock.adjust("250 millis")
      yield* Fiber.join(fiber)
      expect(yield* durationSum("duration-test-clock")).toBe(250)
    }))

  it.live("is read on Effect's own clock: a call that sleeps 30 ms takes at least that", () =>
    Effect.gen(function* () {
      const clock = yield* Effect.clock
      yield* observe(clock, "duration-live-clock", undefined, () => Effect.sleep("30 millis"))
      const sum = yield* durationSum("duration-live-clock")
      // A reading in the wrong unit (µs, ns, s) or from two different bases cannot land here.
      expect(sum).toBeGreaterThanOrEqual(29)
      expect(sum).toBeLessThan(30_000)
    }))
})
