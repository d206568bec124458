/**
 * PythonWorkerPool against real processes: per-index options, a concurrent
 * start, a failed start that stops the others, a release that stops them
 * all, first-come-first-served `withWorker` (interrupted waiters included),
 * routing of a model's calls by its id, and a restart inside a pool.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import process from "node:process"
import type { PythonWorker } from "../src/PythonWorker.ts"
import { PythonWorkerPool } from "../src/PythonWorkerPool.ts"
import { AT_ONCE_MS, awaitGone, expectTagged, faultWorker, tempDir } from "./helpers.ts"
import {
  attempts,
  awaitAllGone,
  awaitGeneration,
  batch,
  failure,
  newTag,
  start,
  starts,
  supervisedOptions,
  timed,
} from "./fixtures/supervised.ts"

type Config = Parameters<typeof supervisedOptions>[1]

/** Each worker's options: the supervised workload, told its index through `WORKER_INDEX`. */
const indexed = (tag: string, config: Config = {}, extra: Partial<PythonWorker.Options> = {}) => (index: number) =>
  supervisedOptions(tag, config, { ...extra, env: { WORKER_INDEX: String(index) } })

const pidsOf = (pool: PythonWorkerPool.Service) => pool.workers.map((worker) => worker.pid)

describe("PythonWorkerPool", () => {
  it.scopedLive("each worker gets its own options; they start concurrently and are all gone after release", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const dir = yield* tempDir
      const begin = Date.now()
      const { pids, built } = yield* Effect.gen(function* () {
        const pool = yield* PythonWorkerPool
        const built = Date.now() - begin
        expect(pool.workers).toHaveLength(2)
        for (const [index, worker] of pool.workers.entries()) {
          expect(worker.info.workloadName).toBe(`supervised-${index}`)
          const model = yield* worker.initModel("cpu")
          expect(yield* worker.trainWindow(model, batch({}))).toMatchObject({
            worker_index: String(index),
            pid: worker.pid,
          })
        }
        expect(new Set(pidsOf(pool)).size).toBe(2)
        return { pids: pidsOf(pool), built }
      }).pipe(
        Effect.provide(
          PythonWorkerPool.layer({ size: 2, options: indexed(tag, { record: dir, start_delay_seconds: 0.5 }) }),
        ),
      )
      // Both factories were running at once: each began before the other ended.
      const records = starts(dir)
      expect(records.map((record) => record.index).sort()).toEqual(["0", "1"])
      expect(records.map((record) => record.pid).sort()).toEqual([...pids].sort())
      expect(Math.max(...records.map((r) => r.began))).toBeLessThan(Math.min(...records.map((r) => r.ended)))
      // One after the other would take two slow factories (> 1 s) plus two interpreter starts.
      expect(built).toBeLessThan(1_000)
      yield* awaitAllGone(pids, tag)
    })
  })

  it.live("release stops the workers together: two that ignore shutdown and SIGTERM take one grace, not two", () => {
    const faults = [0, 1].map(() => faultWorker([{ at: 2, fault: "hang" }], { ignoreSigterm: true }))
    return Effect.gen(function* () {
      const scope = yield* Scope.make()
      const pool = yield* PythonWorkerPool.make({ size: 2, options: (index) => faults[index].options }).pipe(
        Effect.provide(NodeContext.layer),
        Scope.extend(scope),
      )
      const pids = pidsOf(pool)
      const release = yield* timed(Scope.close(scope, Exit.void))
      // Each: shutdownTimeout (300) unanswered, then terminateGrace (300) ignored, then SIGKILL.
      expect(release.millis).toBeGreaterThanOrEqual(550)
      expect(release.millis).toBeLessThan(1_000)
      yield* awaitGone(pids)
    }).pipe(Effect.ensuring(Effect.forEach(faults, (fault) => fault.cleanup)))
  })

  it.scopedLive("a failed start of one worker fails the pool with its error and stops the other", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const dir = yield* tempDir
      const options = (index: number) =>
        index === 1
          ? indexed(tag, { record: dir, start_delay_seconds: 0.5 }, {
            workloadFactory: "supervised_workload:make_raising_late",
          })(index)
          : indexed(tag, { record: dir })(index)
      const exit = yield* Effect.exit(Effect.provide(Effect.void, PythonWorkerPool.layer({ size: 2, options })))
      const error = failure(exit)
      expectTagged(error, "WorkerConnectError", { reason: "ProcessExited", exitCode: 2 })
      expect(error._tag === "WorkerConnectError" && error.stderrTail).toContain("bad factory for this worker")
      // Worker 0 had started (its factory returned) before worker 1 failed.
      const started = starts(dir)
      expect(started.map((record) => record.index)).toEqual(["0"])
      const pids = attempts(dir)
      expect(pids).toHaveLength(2)
      yield* awaitAllGone(pids, tag)
    })
  })

  it.scopedLive("with make in a scope that stays open, a failed start still stops the worker that did start", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const dir = yield* tempDir
      const options = (index: number) =>
        index === 1
          ? indexed(tag, { record: dir, start_delay_seconds: 0.5 }, {
            workloadFactory: "supervised_workload:make_raising_late",
          })(index)
          : indexed(tag, { record: dir })(index)
      // The test's scope stays open: nothing but the pool itself may stop worker 0.
      const exit = yield* Effect.exit(
        PythonWorkerPool.make({ size: 2, options }).pipe(Effect.provide(NodeContext.layer)),
      )
      expectTagged(failure(exit), "WorkerConnectError", { reason: "ProcessExited" })
      yield* awaitAllGone(attempts(dir), tag)
    })
  })

  it.live("withWorker is first come, first served: 20 queued callers run in arrival order", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const pool = yield* PythonWorkerPool.make({ size: 1, options: indexed(tag) }).pipe(
          Effect.provide(NodeContext.layer),
        )
        const release = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(pool.withWorker(() => Deferred.await(release)))
        yield* Effect.yieldNow()
        const order: Array<number> = []
        const callers: Array<Fiber.RuntimeFiber<unknown, unknown>> = []
        for (let i = 0; i < 20; i++) {
          callers.push(
            yield* Effect.fork(pool.withWorker((worker, index) =>
              Effect.gen(function* () {
                expect(index).toBe(0)
                order.push(i)
                yield* worker.hello()
              })
            )),
          )
          yield* Effect.yieldNow()
        }
        expect(pool.waiting()).toBe(20)
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)
        for (const caller of callers) yield* Fiber.join(caller)
        expect(order).toEqual(Array.from({ length: 20 }, (_, i) => i))
        expect(pool.waiting()).toBe(0)
        return pidsOf(pool)
      }))
      yield* awaitAllGone(pids, tag)
    })
  })

  it.live("an interrupted waiter, or a caller that fails, does not lose the worker", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const pool = yield* PythonWorkerPool.make({ size: 1, options: indexed(tag) }).pipe(
          Effect.provide(NodeContext.layer),
        )
        const release = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(pool.withWorker(() => Deferred.await(release)))
        yield* Effect.yieldNow()
        const ran: Array<string> = []
        const first = yield* Effect.fork(pool.withWorker(() => Effect.sync(() => ran.push("interrupted"))))
        yield* Effect.yieldNow()
        const second = yield* Effect.fork(pool.withWorker((worker) => Effect.as(worker.hello(), ran.push("second"))))
        yield* Effect.yieldNow()
        expect(pool.waiting()).toBe(2)
        yield* Fiber.interrupt(first)
        expect(pool.waiting()).toBe(1)
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)
        yield* Fiber.join(second).pipe(Effect.timeout("2 seconds"))
        expect(ran).toEqual(["second"])

        // A failing caller gives the worker back too.
        expect(yield* Effect.exit(pool.withWorker(() => Effect.fail("caller failed" as const)))).toEqual(
          Exit.fail("caller failed"),
        )

        // Waiters interrupted at every moment of a hand-over: the worker is never lost.
        for (let round = 0; round < 50; round++) {
          const busy = yield* Effect.fork(pool.withWorker(() => Effect.yieldNow()))
          const waiter = yield* Effect.fork(pool.withWorker(() => Effect.void))
          for (let i = 0; i < round % 4; i++) yield* Effect.yieldNow()
          yield* Fiber.interrupt(waiter)
          yield* Fiber.join(busy).pipe(Effect.timeout("2 seconds"))
        }
        const after = yield* timed(pool.withWorker((worker) => worker.hello()).pipe(Effect.timeout("2 seconds")))
        expect(Exit.isSuccess(after.exit)).toBe(true)
        expect(pool.waiting()).toBe(0)
        return pidsOf(pool)
      }))
      yield* awaitAllGone(pids, tag)
    })
  })

  it.live("workerOf routes a model's calls to the worker that made it; a model on the wrong worker is refused", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const pool = yield* PythonWorkerPool.make({ size: 2, options: indexed(tag) }).pipe(
          Effect.provide(NodeContext.layer),
        )
        const [zero, one] = pool.workers
        const m0 = yield* zero.initModel("cpu")
        const m1 = yield* one.initModel("cpu")
        expect(m0.startsWith("w0.g1:")).toBe(true)
        expect(m1.startsWith("w1.g1:")).toBe(true)
        // The workers' own ids are alike (each counts from its first model): only the prefix tells them apart.
        expect(m0.slice("w0.".length)).toBe(m1.slice("w1.".length))

        expect(yield* pool.workerOf(m0)).toBe(zero)
        expect(yield* pool.workerOf(m1)).toBe(one)
        const routed = yield* pool.workerOf(m1)
        expect(yield* routed.trainWindow(m1, batch({}))).toMatchObject({ worker_index: "1", windows: 1 })

        const made = yield* pool.withWorker((worker, index) =>
          Effect.map(worker.initModel("cpu"), (id) => ({ id, index }))
        )
        expect(yield* pool.workerOf(made.id)).toBe(pool.workers[made.index])

        const wrong = yield* timed(zero.trainWindow(m1, batch({})))
        const error = failure(wrong.exit)
        expectTagged(error, "InvalidArgumentError", { where: "train_window" })
        expect(error.message).toContain("belongs to another worker of the pool")
        expect(wrong.millis).toBeLessThan(AT_ONCE_MS)
        // Nothing went to worker 0: model m1 there trained once, on worker 1.
        expect(yield* one.trainWindow(m1, batch({}))).toMatchObject({ windows: 2 })

        for (const id of ["m1", "w2.g1:m1", "w-1.g1:m1", "w0.x:m1", ""]) {
          const refused = yield* Effect.either(pool.workerOf(id))
          expect([id, Either.isLeft(refused) && refused.left._tag]).toEqual([id, "InvalidArgumentError"])
          expect(Either.isLeft(refused) && refused.left.where).toBe("PythonWorkerPool.workerOf")
        }
        return pidsOf(pool)
      }))
      yield* awaitAllGone(pids, tag)
    })
  })

  it.live("workerOf refuses a model id without this pool's prefix (a single worker's id)", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const single = yield* start(supervisedOptions(tag))
        const foreign = yield* single.initModel("cpu")
        expect(foreign).toBe("g1:m1")
        const pool = yield* PythonWorkerPool.make({ size: 2, options: indexed(tag) }).pipe(
          Effect.provide(NodeContext.layer),
        )
        for (const id of [foreign, "w00.g1:m1"]) {
          const refused = yield* Effect.either(pool.workerOf(id))
          expect([id, Either.isLeft(refused) && refused.left.where]).toEqual([id, "PythonWorkerPool.workerOf"])
        }
        return [single.pid, ...pidsOf(pool)]
      }))
      yield* awaitAllGone(pids, tag)
    })
  })

  it.live("a worker of a pool SIGKILLed is restarted as generation 2 while the others keep serving", () => {
    const tag = newTag()
    return Effect.gen(function* () {
      const pids = yield* Effect.scoped(Effect.gen(function* () {
        const pool = yield* PythonWorkerPool.make({
          size: 2,
          options: indexed(tag, {}, { restart: Schedule.spaced("300 millis") }),
        }).pipe(Effect.provide(NodeContext.layer))
        const [zero, one] = pool.workers
        const [p0, p1] = pidsOf(pool)
        const old = yield* one.initModel("cpu")
        process.kill(p1, "SIGKILL")
        // Worker 0 serves at once while worker 1 waits out its delay.
        const meanwhile = yield* timed(zero.hello())
        expect(Exit.isSuccess(meanwhile.exit)).toBe(true)
        expect(meanwhile.millis).toBeLessThan(200)
        yield* awaitGeneration(one, 2)
        expect(one.generation).toBe(2)
        expect(one.pid).not.toBe(p1)
        expect(zero.generation).toBe(1)
        expect(zero.pid).toBe(p0)
        const fresh = yield* one.initModel("cpu")
        expect(fresh.startsWith("w1.g2:")).toBe(true)
        expect(yield* one.trainWindow(fresh, batch({}))).toMatchObject({ worker_index: "1" })
        // The lost model still names its worker; that worker says what became of it.
        expect(yield* pool.workerOf(old)).toBe(one)
        expectTagged(failure(yield* Effect.exit(one.evaluate(old, "Validation"))), "ModelLostError", {
          modelId: old,
          generation: 1,
          currentGeneration: 2,
        })
        const zeroEvents = yield* zero.events.pipe(Stream.interruptAfter(100), Stream.runCollect)
        expect([...zeroEvents].map((event) => event._tag)).toEqual(["Started"])
        return [p0, p1, one.pid]
      }))
      yield* awaitAllGone(pids, tag)
    })
  })
})
