/**
 * Supervised restarts against real processes: a worker SIGKILLed mid-call,
 * calls waiting for (and bounded while waiting for) the next generation,
 * model ids of a dead generation, `onStart` before any other call, events
 * and logs, crash loops that give up or keep going without spinning, a
 * timed-out call's kill, `restart: "never"`, and scoped model handles.
 * Every process a test starts is gone afterwards: each pid it saw, and any
 * process carrying the test's tag in its environment.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { join } from "node:path"
import process from "node:process"
import type { PythonWorker, WorkerEvent } from "../src/PythonWorker.ts"
import type { CallError } from "../src/WorkerError.ts"
import { AT_ONCE_MS, awaitGone, echoBatch, expectTagged, faultWorker, isAlive, patch, tempDir } from "./helpers.ts"
import {
  attempts,
  awaitAllGone,
  awaitEvent,
  awaitGeneration,
  batch,
  capturingLogger,
  failure,
  type LogRecord,
  newTag,
  pidsOf,
  start,
  supervisedOptions,
  tagged,
  timed,
} from "./fixtures/supervised.ts"

/** Polls the captured records until one contains `needle` (at most ~5 s). */
const untilLogged = (records: ReadonlyArray<LogRecord>, needle: string) =>
  Effect.suspend(() =>
    records.some((record) => record.message.includes(needle))
      ? Effect.void
      : Effect.fail(new Error(`never logged: ${needle}`))
  ).pipe(Effect.retry({ schedule: Schedule.spaced("10 millis"), times: 500 }))

const tags = (events: ReadonlyArray<WorkerEvent>) => events.map((event) => event._tag)

/** Everything the service streams for `millis` (the replayed events first). */
const eventsFor = (worker: PythonWorker.Service, millis: number) =>
  worker.events.pipe(Stream.interruptAfter(millis), Stream.runCollect, Effect.map((chunk) => [...chunk]))

describe("supervised restarts", () => {
  it.live(
    "a SIGKILL mid-call fails that call; calls made meanwhile run on generation 2; events and a warning tell it",
    () => {
      const tag = newTag()
      const capture = capturingLogger()
      return Effect.gen(function* () {
        const seen = yield* Effect.scoped(Effect.gen(function* () {
          const worker = yield* start(supervisedOptions(tag, {}, { restart: Schedule.spaced("300 millis") }))
          const first = worker.pid
          expect(worker.generation).toBe(1)
          const model = yield* worker.initModel("cpu")
          const inFlight = yield* Effect.fork(
            worker.trainWindow(model, batch({ stderr: "last words before the kill\n", sleep_seconds: 30 })),
          )
          // The worker has the request once its stderr line is logged.
          yield* untilLogged(capture.records, "last words before the kill")
          process.kill(first, "SIGKILL")
          const lost = failure(yield* Fiber.await(inFlight))
          expectTagged(lost, "WorkerExitedError", {
            method: "train_window",
            pid: first,
            signal: "SIGKILL",
          })
          expect(lost._tag === "WorkerExitedError" && lost.stderrTail).toContain("last words before the kill")

          // Made while it restarts: they wait (the 300 ms delay), then run on the new process.
          const waited = yield* timed(
            Effect.all([worker.hello(), worker.initModel("cpu"), worker.capabilityProbe()], {
              concurrency: "unbounded",
            }),
          )
          if (Exit.isFailure(waited.exit)) throw new Error(`the waiting calls failed: ${waited.exit.cause}`)
          expect(waited.millis).toBeGreaterThanOrEqual(150)
          const [hello, fresh] = waited.exit.value
          expect(hello.workloadName).toBe("supervised-")
          expect(fresh.startsWith("g2:")).toBe(true)
          expect(worker.generation).toBe(2)
          expect(worker.pid).not.toBe(first)
          expect(isAlive(first)).toBe(false)
          expect(isAlive(worker.pid)).toBe(true)
          const events = yield* awaitGeneration(worker, 2)
          return { first, second: worker.pid, events }
        }))
        const { first, second, events } = seen
        expect(tags(events)).toEqual(["Started", "Exited", "Restarting", "Started"])
        expect(events[0]).toEqual({ _tag: "Started", generation: 1, pid: first })
        expect(events[1]).toMatchObject({
          _tag: "Exited",
          generation: 1,
          pid: first,
          exited: true,
          exitCode: null,
          signal: "SIGKILL",
        })
        expect(events[1]._tag === "Exited" && events[1].stderrTail).toContain("last words before the kill")
        expect(events[2]).toMatchObject({
          _tag: "Restarting",
          generation: 2,
          delayMillis: 300,
          after: { generation: 1, pid: first, signal: "SIGKILL" },
        })
        expect(events[3]).toEqual({ _tag: "Started", generation: 2, pid: second })
        const warnings = capture.records.filter((record) => record.level === "WARN")
        expect(warnings).toHaveLength(1)
        expect(warnings[0].message).toContain(`(pid ${first}) was killed by SIGKILL`)
        expect(warnings[0].message).toContain("starting worker #2 in 300 ms")
        yield* awaitAllGone([first, second], tag)
      }).pipe(Effect.provide(capture.layer), Logger.withMinimumLogLevel(LogLevel.Debug))
    },
  )

  it.live("a call's own timeout bounds its wait for a slow restart; a call without one waits it out", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(supervisedOptions(tag, {}, { restart: Schedule.spaced("2 seconds") }))
        const first = worker.pid
        process.kill(first, "SIGKILL")
        const events = yield* awaitEvent(worker, "Restarting")
        expect(events.at(-1)).toMatchObject({ _tag: "Restarting", generation: 2, delayMillis: 2000 })

        const hurried = yield* timed(worker.hello({ timeout: 200 }))
        expectTagged(failure(hurried.exit), "RpcTimeoutError", {
          method: "hello",
          id: null,
          pid: null,
          timeoutMillis: 200,
        })
        expect(hurried.millis).toBeGreaterThanOrEqual(190)
        expect(hurried.millis).toBeLessThan(1_000)

        const patient = yield* timed(worker.hello())
        expect(Exit.isSuccess(patient.exit)).toBe(true)
        expect(patient.millis).toBeGreaterThan(1_000)
        expect(worker.generation).toBe(2)
        expect(worker.pid).not.toBe(first)
        return [first, worker.pid]
      }))
      yield* awaitAllGone(pids, tag)
    })
  })

  it.live("a model id of generation 1 fails at once with ModelLostError, and nothing goes on the wire", () => {
    const fault = faultWorker([], { restart: Schedule.spaced("100 millis") })
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(fault.options)
        const first = worker.pid
        const old = yield* worker.initModel("cpu")
        expect(old).toBe("g1:m1")
        process.kill(first, "SIGKILL")
        yield* awaitGeneration(worker, 2)

        const lost = yield* timed(worker.evaluate(old, "Validation"))
        const error = failure(lost.exit)
        expectTagged(error, "ModelLostError", {
          method: "evaluate",
          modelId: old,
          generation: 1,
          currentGeneration: 2,
        })
        expect(error._tag === "ModelLostError" && error.died).toContain("SIGKILL")
        expect(error.message).toContain("worker process #1")
        expect(lost.millis).toBeLessThan(AT_ONCE_MS)
        // Each argument position that names a model is checked.
        const fresh = yield* worker.initModel("cpu")
        expect(fresh).toBe("g2:m1")
        expect(failure(yield* Effect.exit(worker.applySingleRootEma(fresh, old, "Ema")))).toMatchObject({
          _tag: "ModelLostError",
          modelId: old,
        })

        // Generation 2 saw its hello and the one initModel: the stale calls never reached it.
        const record = fault.events()
        const secondStart = record.findIndex((event, i) => event.event === "start" && i > 0)
        expect(record[secondStart].pid).toBe(worker.pid)
        expect(record.slice(secondStart + 1).map((event) => event.method)).toEqual(["hello", "init_model"])
        return [first, worker.pid]
      }))
      yield* awaitGone(pids)
    }).pipe(Effect.ensuring(fault.cleanup))
  })

  it.live("a model id of a dead generation fails at once even while the next generation is starting", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(supervisedOptions(tag, {}, { restart: Schedule.spaced("2 seconds") }))
        const first = worker.pid
        const old = yield* worker.initModel("cpu")
        process.kill(first, "SIGKILL")
        yield* awaitEvent(worker, "Restarting")
        const lost = yield* timed(worker.evaluate(old, "Validation"))
        expectTagged(failure(lost.exit), "ModelLostError", { modelId: old, generation: 1 })
        expect(lost.millis).toBeLessThan(AT_ONCE_MS)
        // Released before generation 2 starts: the tag finds it if it did.
        return [first]
      }))
      yield* awaitAllGone(pids, tag)
    })
  })

  it.live("onStart runs against each fresh worker before any other call, and a call right after sees its effect", () => {
    const tag = newTag()
    const ran: Array<[generation: number, pid: number]> = []
    let model = ""
    const onStart = (fresh: PythonWorker.Service) =>
      Effect.gen(function* () {
        ran.push([fresh.generation, fresh.pid])
        // A call that jumped ahead of onStart would land in this gap.
        yield* Effect.sleep("300 millis")
        const applied = yield* fresh.applyPatch(patch({ ready: fresh.generation * 10 }))
        if (applied !== "Applied") return yield* Effect.dieMessage(`patch not applied: ${JSON.stringify(applied)}`)
        model = yield* fresh.initModel("cpu")
      })
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(supervisedOptions(tag, {}, { restart: Schedule.spaced("100 millis"), onStart }))
        const first = worker.pid
        expect(model.startsWith("g1:")).toBe(true)
        expect(yield* worker.trainWindow(model, batch({}))).toMatchObject({ ready: 10, windows: 1 })

        // Queued while generation 2 starts: it must run after onStart's patch, not before it.
        process.kill(first, "SIGKILL")
        yield* awaitEvent(worker, "Exited")
        const queued = yield* Effect.fork(worker.applyPatch(patch({ ready: 99 })))
        expect(yield* Fiber.join(queued)).toBe("Applied")
        expect(worker.generation).toBe(2)
        expect(model.startsWith("g2:")).toBe(true)
        expect(yield* worker.trainWindow(model, batch({}))).toMatchObject({ ready: 99, windows: 1 })
        const second = worker.pid

        // Right after generation 3 is announced, its onStart's model and patch are there.
        process.kill(second, "SIGKILL")
        yield* awaitGeneration(worker, 3)
        expect(model.startsWith("g3:")).toBe(true)
        expect(yield* worker.trainWindow(model, batch({}))).toMatchObject({ ready: 30, windows: 1 })
        expect(ran).toEqual([[1, first], [2, second], [3, worker.pid]])
        return [first, second, worker.pid]
      }))
      yield* awaitAllGone(pids, tag)
    })
  })

  it.scopedLive(
    "a worker that dies at every start after the first gives up under Schedule.recurs(2): WorkerGaveUpError",
    () => {
      const tag = newTag()
      const capture = capturingLogger()
      return Effect.gen(function* () {
        const dir = yield* tempDir
        const seen = yield* Effect.scoped(Effect.gen(function* () {
          const worker = yield* start(
            supervisedOptions(tag, { record: dir, marker: join(dir, "marker"), crash: "exit" }, {
              restart: Schedule.recurs(2),
            }),
          )
          const first = worker.pid
          process.kill(first, "SIGKILL")
          const events = yield* awaitEvent(worker, "GaveUp")
          for (const method of ["hello", "capabilityProbe"] as const) {
            const call = yield* timed<unknown, CallError, never>(worker[method]())
            const error = failure(call.exit)
            expectTagged(error, "WorkerGaveUpError", {
              method: method === "hello" ? "hello" : "capability_probe",
              starts: 3,
              exitCode: 3,
              signal: null,
            })
            expect(error._tag === "WorkerGaveUpError" && error.stderrTail).toContain("crashing at start")
            expect(error.message).toContain("exited with code 3")
            expect(call.millis).toBeLessThan(AT_ONCE_MS)
          }
          return { first, events }
        }))
        const { first, events } = seen
        expect(tags(events)).toEqual([
          "Started",
          "Exited",
          "Restarting",
          "Exited",
          "Restarting",
          "Exited",
          "GaveUp",
        ])
        expect(events[1]).toMatchObject({ generation: 1, pid: first, signal: "SIGKILL" })
        for (const [index, generation] of [[3, 2], [5, 3]] as const) {
          const exited = events[index]
          expect(exited).toMatchObject({ _tag: "Exited", generation, exitCode: 3, signal: null })
          expect(exited._tag === "Exited" && exited.stderrTail).toContain("crashing at start")
        }
        expect(events.filter((event) => event._tag === "Restarting").map((event) => event.delayMillis)).toEqual([
          100,
          100,
        ])
        expect(events[6]).toMatchObject({ _tag: "GaveUp", generation: 3, starts: 3, death: { exitCode: 3 } })
        // The failed starts were real processes, each with its pid.
        const pids = [...new Set([...pidsOf(events), ...attempts(dir)])]
        expect(pids.length).toBe(3)
        expect(capture.records.filter((record) => record.level === "WARN")).toHaveLength(2)
        const errors = capture.records.filter((record) => record.level === "ERROR")
        expect(errors).toHaveLength(1)
        expect(errors[0].message).toContain("gave up after 3 starts")
        yield* awaitAllGone(pids, tag)
      }).pipe(Effect.provide(capture.layer))
    },
  )

  it.scopedLive("a crash loop under a schedule that never stops does not spin: restarts are spaced", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const dir = yield* tempDir
      const scope = yield* Scope.make()
      const worker = yield* start(
        supervisedOptions(tag, { record: dir, marker: join(dir, "marker"), crash: "raise" }, {
          restart: Schedule.spaced("200 millis"),
        }),
      ).pipe(Scope.extend(scope))
      const first = worker.pid
      const stamped: Array<{ readonly at: number; readonly event: WorkerEvent }> = []
      const fifthRestart = yield* Deferred.make<void>()
      const collector = yield* Effect.fork(
        Stream.runForEach(worker.events, (event) =>
          Effect.suspend(() => {
            stamped.push({ at: Date.now(), event })
            const restarts = stamped.filter(({ event }) => event._tag === "Restarting").length
            return restarts === 5 ? Deferred.succeed(fifthRestart, undefined) : Effect.void
          })),
      )
      process.kill(first, "SIGKILL")
      // Counted, not slept for: a slow machine's failed starts take longer, the spacing does not change.
      yield* Deferred.await(fifthRestart).pipe(Effect.timeoutFail({
        duration: "20 seconds",
        onTimeout: () =>
          new Error(`five restarts never came; saw ${stamped.map(({ event }) => event._tag).join(", ")}`),
      }))
      // A call meanwhile waits for a start that never comes, within its own deadline.
      expect(failure(yield* Effect.exit(worker.hello({ timeout: 100 })))).toMatchObject({ _tag: "RpcTimeoutError" })
      yield* Fiber.interrupt(collector)
      const restarting = stamped.filter(({ event }) => event._tag === "Restarting")
      for (const { event } of restarting) expect(event).toMatchObject({ delayMillis: 200 })
      for (let i = 1; i < restarting.length; i++) {
        expect(restarting[i].at - restarting[i - 1].at).toBeGreaterThanOrEqual(190)
      }
      expect(stamped.some(({ event }) => event._tag === "GaveUp")).toBe(false)
      const failedStart = stamped.find(({ event }) => event._tag === "Exited" && event.generation === 2)?.event
      expect(failedStart?._tag === "Exited" && failedStart.stderrTail).toContain("refusing to start again")

      const release = yield* timed(Scope.close(scope, Exit.void))
      expect(Exit.isSuccess(release.exit)).toBe(true)
      expect(release.millis).toBeLessThan(2_000)
      const pids = [...new Set([first, ...pidsOf(stamped.map(({ event }) => event)), ...attempts(dir)])]
      expect(pids.length).toBeGreaterThanOrEqual(4)
      yield* awaitAllGone(pids, tag)
    })
  })

  it.live("a call timeout that kills the worker on purpose counts as a death, and the worker is restarted", () => {
    const fault = faultWorker([{ at: 3, fault: "hang" }], {
      callTimeout: 300,
      restart: Schedule.spaced("100 millis"),
    })
    const capture = capturingLogger()
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(fault.options)
        const first = worker.pid
        expect(yield* worker.trainWindow("m1", [echoBatch({ echo: "before" })])).toMatchObject({ echo: "before" })
        const late = failure(yield* Effect.exit(worker.trainWindow("m1", [echoBatch({ echo: "hangs" })])))
        expectTagged(late, "RpcTimeoutError", { method: "train_window", id: 3 })
        const events = yield* awaitGeneration(worker, 2)
        expect(tags(events)).toEqual(["Started", "Exited", "Restarting", "Started"])
        expect(events[1]).toMatchObject({ generation: 1, pid: first, signal: "SIGKILL" })
        expect(events[1]._tag === "Exited" && (events[1].cause as { _tag?: string })?._tag).toBe("RpcTimeoutError")
        expect(yield* worker.trainWindow("m1", [echoBatch({ echo: "after" })])).toMatchObject({ echo: "after" })
        expect(worker.generation).toBe(2)
        const started = fault.events().filter((event) => event.event === "start").map((event) => event.pid)
        expect(started).toEqual([first, worker.pid])
        return [first, worker.pid]
      }))
      const warnings = capture.records.filter((record) => record.level === "WARN")
      expect(warnings).toHaveLength(1)
      expect(warnings[0].message).toContain("was killed by SIGKILL after:")
      expect(warnings[0].message).toContain("timed out after 300 ms")
      yield* awaitGone(pids)
    }).pipe(Effect.provide(capture.layer), Effect.ensuring(fault.cleanup))
  })

  it.live('restart: "never" keeps a dead worker dead: later calls fail with WorkerExitedError', () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const first = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(supervisedOptions(tag, {}, { restart: "never" }))
        const first = worker.pid
        process.kill(first, "SIGKILL")
        yield* awaitGone([first])
        for (let i = 0; i < 2; i++) {
          expectTagged(failure(yield* Effect.exit(worker.hello())), "WorkerExitedError", {
            method: "hello",
            pid: first,
            signal: "SIGKILL",
          })
        }
        const events = yield* eventsFor(worker, 300)
        expect(tags(events)).toEqual(["Started", "Exited"])
        expect(worker.generation).toBe(1)
        // Nothing was started again.
        expect(tagged(tag)).toEqual([])
        return first
      }))
      yield* awaitAllGone([first], tag)
    })
  })
})

describe("scoped model handles", () => {
  const unknownModel = (worker: PythonWorker.Service, modelId: string) =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(worker.evaluate(modelId, "Validation"))
      expectTagged(error, "RemoteError", { method: "evaluate", errorType: "UnknownModelError" })
    })

  it.live("the model is released when its scope closes: on success, on failure, on interruption", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const pid = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(supervisedOptions(tag))

        const used = yield* Effect.scoped(Effect.gen(function* () {
          const modelId = yield* worker.model("cpu")
          expect(yield* worker.evaluate(modelId, "Validation")).toMatchObject({ split: "Validation" })
          return modelId
        }))
        yield* unknownModel(worker, used)

        let failedWith = ""
        const failed = yield* Effect.exit(Effect.scoped(Effect.gen(function* () {
          failedWith = yield* worker.model("cpu")
          return yield* Effect.fail("the body failed" as const)
        })))
        expect(failed).toEqual(Exit.fail("the body failed"))
        yield* unknownModel(worker, failedWith)

        const made = yield* Deferred.make<string>()
        const body = yield* Effect.fork(Effect.scoped(Effect.gen(function* () {
          yield* Deferred.succeed(made, yield* worker.model("cpu"))
          return yield* Effect.never
        })))
        const interruptedWith = yield* Deferred.await(made)
        yield* Fiber.interrupt(body)
        yield* unknownModel(worker, interruptedWith)

        // A model outside any of those scopes is still there.
        const kept = yield* worker.initModel("cpu")
        expect(yield* worker.evaluate(kept, "Validation")).toMatchObject({ split: "Validation" })
        return worker.pid
      }))
      yield* awaitAllGone([pid], tag)
    })
  })

  it.live('the release never fails when the worker is already gone (restart: "never")', () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const pid = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(supervisedOptions(tag, {}, { restart: "never" }))
        const pid = worker.pid
        const closed = yield* timed(Effect.scoped(Effect.gen(function* () {
          yield* worker.model("cpu")
          process.kill(pid, "SIGKILL")
          yield* awaitGone([pid])
        })))
        expect(closed.exit).toEqual(Exit.void)
        expect(closed.millis).toBeLessThan(2_000)
        return pid
      }))
      yield* awaitAllGone([pid], tag)
    })
  })

  it.live("the release of a model whose worker died does not wait for the restart", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(supervisedOptions(tag, {}, { restart: Schedule.spaced("2 seconds") }))
        const first = worker.pid
        const closed = yield* timed(Effect.scoped(Effect.gen(function* () {
          yield* worker.model("cpu")
          process.kill(first, "SIGKILL")
          yield* awaitEvent(worker, "Restarting")
        })))
        expect(closed.exit).toEqual(Exit.void)
        // The model died with generation 1: nothing to release, nothing to wait for.
        expect(closed.millis).toBeLessThan(1_000)
        return [first]
      }))
      yield* awaitAllGone(pids, tag)
    })
  })
})
