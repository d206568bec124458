/**
 * What a real worker's calls feed: the Effect metrics by their public names
 * and labels (read back through `Metric.snapshot`, as an exporter would), and
 * one span per RPC under the caller's span, with its attributes, recorded by
 * a tracer that wraps the default one.
 *
 * Metrics are global to the test file: each check compares before and after.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Tracer from "effect/Tracer"
import process from "node:process"
import { Rpcs } from "../src/Protocol.ts"
import { PythonWorkerPool } from "../src/PythonWorkerPool.ts"
import {
  awaitAllGone,
  awaitEvent,
  awaitGeneration,
  batch,
  newTag,
  start,
  supervisedOptions,
} from "./fixtures/supervised.ts"

type Labels = Readonly<Record<string, string>>

/** The state of the metric `name` with exactly these labels, as `Metric.snapshot` reports it. */
const metricState = (name: string, labels: Labels) =>
  Effect.map(Metric.snapshot, (pairs) => {
    const wanted = Object.entries(labels).map(([key, value]) => `${key}=${value}`).sort().join(",")
    const pair = pairs.find((pair) =>
      pair.metricKey.name === name &&
      pair.metricKey.tags.map((tag) => `${tag.key}=${tag.value}`).sort().join(",") === wanted
    )
    return pair?.metricState as unknown as
      | { readonly count?: number; readonly value?: number; readonly sum?: number }
      | undefined
  })

/** A counter's count or a histogram's number of samples; 0 before the first update. */
const countOf = (name: string, labels: Labels = {}) =>
  Effect.map(metricState(name, labels), (state) => state?.count ?? 0)

const DURATION = "burn_p2p_worker_call_duration_ms"
const REQUEST_BYTES = "burn_p2p_worker_request_bytes"
const RESPONSE_BYTES = "burn_p2p_worker_response_bytes"
const ERRORS = "burn_p2p_worker_call_errors"
const RESTARTS = "burn_p2p_worker_restarts"
const QUEUED = "burn_p2p_worker_queued_calls"

/** Every metric this file reads, by method: to compare before and after. */
const readings = (methods: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const out: Record<string, number> = {}
    for (const method of methods) {
      for (const name of [DURATION, REQUEST_BYTES, RESPONSE_BYTES]) {
        out[`${name}{${method}}`] = yield* countOf(name, { method })
      }
    }
    for (
      const [method, error] of [["evaluate", "RemoteError"], ["train_window", "WorkerExitedError"], [
        "evaluate",
        "ModelLostError",
      ]]
    ) {
      out[`${ERRORS}{${method},${error}}`] = yield* countOf(ERRORS, { method, error })
    }
    out[RESTARTS] = yield* countOf(RESTARTS)
    return out
  })

const METHODS = ["hello", "init_model", "train_window", "evaluate"]

describe("metrics", () => {
  it.live("calls feed duration, bytes and error metrics by method; a restart feeds the restart counter", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const before = yield* readings(METHODS)
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(supervisedOptions(tag, {}, { restart: Schedule.spaced("100 millis") }))
        const first = worker.pid
        for (let i = 0; i < 3; i++) yield* worker.hello()
        const model = yield* worker.initModel("cpu")
        // A payload the worker ignores: a large request, a small answer.
        yield* worker.trainWindow(model, batch({ blob: "x".repeat(200_000) }))
        const remote = yield* Effect.flip(worker.evaluate(model, "Train"))
        expect(remote._tag).toBe("RemoteError")
        const middle = yield* readings(METHODS)
        const delta = (key: string) => middle[key] - before[key]

        expect(delta(`${DURATION}{hello}`)).toBe(3)
        expect(delta(`${DURATION}{init_model}`)).toBe(1)
        expect(delta(`${DURATION}{train_window}`)).toBe(1)
        expect(delta(`${DURATION}{evaluate}`)).toBe(1)
        for (const method of METHODS) {
          expect([method, delta(`${REQUEST_BYTES}{${method}}`) > 0]).toEqual([method, true])
          expect([method, delta(`${RESPONSE_BYTES}{${method}}`) > 0]).toEqual([method, true])
        }
        const helloRequest = delta(`${REQUEST_BYTES}{hello}`) / 3
        expect(delta(`${REQUEST_BYTES}{train_window}`)).toBeGreaterThan(200_000)
        expect(delta(`${REQUEST_BYTES}{train_window}`)).toBeGreaterThan(100 * helloRequest)
        expect(delta(`${RESPONSE_BYTES}{train_window}`)).toBeLessThan(10_000)
        expect(delta(`${ERRORS}{evaluate,RemoteError}`)).toBe(1)
        expect(delta(RESTARTS)).toBe(0)
        // The queue gauge of this worker's pid exists, and nothing is queued now.
        expect(yield* metricState(QUEUED, { pid: String(first) })).toMatchObject({ value: 0 })

        // A call the worker dies under, a restart, and a model id of the dead generation.
        const inFlight = yield* Effect.fork(worker.trainWindow(model, batch({ sleep_seconds: 30 })))
        yield* Effect.sleep("300 millis")
        process.kill(first, "SIGKILL")
        expect(Exit.isFailure(yield* Fiber.await(inFlight))).toBe(true)
        yield* awaitGeneration(worker, 2)
        expect(yield* Effect.flip(worker.evaluate(model, "Validation"))).toMatchObject({ _tag: "ModelLostError" })
        const after = yield* readings(METHODS)
        expect(after[RESTARTS] - middle[RESTARTS]).toBe(1)
        expect(after[`${ERRORS}{train_window,WorkerExitedError}`] - middle[`${ERRORS}{train_window,WorkerExitedError}`])
          .toBe(1)
        expect(after[`${ERRORS}{evaluate,ModelLostError}`] - middle[`${ERRORS}{evaluate,ModelLostError}`]).toBe(1)
        return [first, worker.pid]
      }))
      yield* awaitAllGone(pids, tag)
    })
  })
})

/** A tracer that records every span the default tracer makes. */
const recordingTracer = Effect.map(Effect.tracer, (base) => {
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const span = base.span(name, parent, context, links, startTime, kind, options)
      spans.push(span)
      return span
    },
    context: (f, fiber) => base.context(f, fiber),
  })
  return { tracer, spans }
})

const attributesOf = (span: Tracer.Span) => Object.fromEntries(span.attributes)

describe("spans", () => {
  it.live("each RPC opens a span PythonWorker.<method> under the caller's span, with its attributes", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const { tracer, spans } = yield* recordingTracer
      const only = (name: string) => {
        const found = spans.filter((span) => span.name === name)
        expect([name, found.length]).toEqual([name, 1])
        return found[0]
      }
      /** The one span named `name` under the caller's span `caller` (its only child), ended. */
      const childOf = (name: string, caller: string) => {
        const parent = only(caller)
        const children = spans.filter((span) =>
          Option.isSome(span.parent) && span.parent.value.spanId === parent.spanId
        )
        expect(children.map((span) => span.name)).toEqual([name])
        const span = children[0]
        expect(span.traceId).toBe(parent.traceId)
        expect(span.status._tag).toBe("Ended")
        return span
      }

      const seen = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(supervisedOptions(tag, {}, { restart: Schedule.spaced("100 millis") }))
        const first = worker.pid
        yield* worker.hello().pipe(Effect.withSpan("caller.hello"))
        const model = yield* worker.initModel("cpu").pipe(Effect.withSpan("caller.init"))
        yield* worker.trainWindow(model, batch({ blob: "y".repeat(10_000) })).pipe(Effect.withSpan("caller.train"))
        yield* Effect.flip(worker.evaluate(model, "Train")).pipe(Effect.withSpan("caller.evaluate"))
        yield* worker.call(Rpcs.capabilityProbe, null).pipe(Effect.withSpan("caller.call"))
        process.kill(first, "SIGKILL")
        yield* awaitEvent(worker, "Exited")
        // Made while generation 2 starts: its span names the process that served it.
        yield* worker.hello().pipe(Effect.withSpan("caller.after"))
        yield* Effect.flip(worker.evaluate(model, "Validation")).pipe(Effect.withSpan("caller.lost"))
        return { first, second: worker.pid, model }
      })).pipe(Effect.withTracer(tracer))
      const { first, second, model } = seen

      expect(only("PythonWorker.make").status._tag).toBe("Ended")
      const hello = childOf("PythonWorker.hello", "caller.hello")
      expect(attributesOf(hello)).toMatchObject({
        "rpc.method": "hello",
        "rpc.outcome": "ok",
        "worker.pid": first,
        "worker.generation": 1,
      })
      expect(attributesOf(hello)).not.toHaveProperty("worker.model_id")
      for (const span of [hello, childOf("PythonWorker.initModel", "caller.init")]) {
        expect(attributesOf(span)["rpc.request_bytes"]).toBeGreaterThan(0)
        expect(attributesOf(span)["rpc.response_bytes"]).toBeGreaterThan(0)
      }

      const train = childOf("PythonWorker.trainWindow", "caller.train")
      expect(attributesOf(train)).toMatchObject({
        "rpc.method": "train_window",
        "rpc.outcome": "ok",
        "worker.pid": first,
        "worker.generation": 1,
        "worker.model_id": expect.stringContaining(model.slice(model.indexOf(":") + 1)),
      })
      expect(attributesOf(train)["rpc.request_bytes"]).toBeGreaterThan(10_000)
      expect(attributesOf(train)["rpc.response_bytes"]).toBeGreaterThan(0)

      const evaluate = childOf("PythonWorker.evaluate", "caller.evaluate")
      expect(attributesOf(evaluate)).toMatchObject({ "rpc.method": "evaluate", "rpc.outcome": "RemoteError" })
      expect(attributesOf(evaluate)["rpc.response_bytes"]).toBeGreaterThan(0)
      expect(evaluate.status._tag === "Ended" && Exit.isFailure(evaluate.status.exit)).toBe(true)

      const call = childOf("PythonWorker.call", "caller.call")
      expect(attributesOf(call)).toMatchObject({ "rpc.method": "capability_probe", "rpc.outcome": "ok" })

      const after = childOf("PythonWorker.hello", "caller.after")
      expect(attributesOf(after)).toMatchObject({ "rpc.outcome": "ok", "worker.pid": second, "worker.generation": 2 })

      // Refused before the wire: no bytes either way.
      const lost = childOf("PythonWorker.evaluate", "caller.lost")
      expect(attributesOf(lost)).toMatchObject({
        "rpc.outcome": "ModelLostError",
        "rpc.request_bytes": 0,
        "rpc.response_bytes": 0,
      })
      yield* awaitAllGone([first, second], tag)
    })
  })

  it.live("worker.model_id is the model id the caller holds, distinct across the workers of a pool", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const { tracer, spans } = yield* recordingTracer
      const seen = yield* Effect.scoped(Effect.gen(function* () {
        const pool = yield* PythonWorkerPool.make({
          size: 2,
          options: (index) => supervisedOptions(tag, {}, { env: { WORKER_INDEX: String(index) } }),
        }).pipe(Effect.provide(NodeContext.layer))
        const models: Array<string> = []
        for (const worker of pool.workers) {
          const model = yield* worker.initModel("cpu")
          yield* worker.trainWindow(model, batch({}))
          models.push(model)
        }
        return { models, pids: pool.workers.map((worker) => worker.pid) }
      })).pipe(Effect.withTracer(tracer))
      const trained = spans.filter((span) => span.name === "PythonWorker.trainWindow")
      expect(trained.map((span) => span.attributes.get("worker.model_id"))).toEqual(seen.models)
      yield* awaitAllGone(seen.pids, tag)
    })
  })
})
