/**
 * The manager against the fake launcher and the in-memory fake worker, under
 * `TestClock`: the shutdown sequence, what a death does with and without
 * restarts, the restart schedule and its budget, stale model ids, calls that
 * wait for a restart, `onStart`, events and logs. No Python, no real time.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as manager from "../src/internal/manager.ts"
import type { Calls } from "../src/internal/calls.ts"
import { Rpcs } from "../src/Protocol.ts"
import type { WorkerEvent } from "../src/PythonWorker.ts"
import {
  answer,
  bytes,
  dieAtStart,
  end,
  exit,
  failStart,
  type FakeLauncher,
  type FakeWorker,
  header,
  late,
  makeLauncher,
  never,
  reaped,
  type Script,
  serve,
  sleep,
  type Start,
} from "./fake.ts"

/** Fails a test that would otherwise hang on a fiber that never completes. */
const FAST = 1_000
const SHUTDOWN_TIMEOUT = 500

const options = <E = never>(
  launcher: FakeLauncher,
  more: Partial<manager.ManagerOptions<E>> = {},
): manager.ManagerOptions<E> => ({
  launch: launcher.launch,
  maxFrameBytes: 1 << 20,
  // Far off: `hello`'s deadline (what is left of it) never fires, nor costs the TestClock a wake-up.
  connectTimeout: Duration.hours(1),
  callTimeout: Option.none(),
  shutdownTimeout: Duration.millis(SHUTDOWN_TIMEOUT),
  restart: "never",
  onStart: undefined,
  idPrefix: "",
  ...more,
})

/** Lets every forked fiber run until it suspends (daemon fibers included, which `TestClock` does not wait for). */
const settleFibers = Effect.repeatN(Effect.yieldNow(), 20)

/** Moves the `TestClock` on, then lets what woke up run. */
const advance = (millis: number) =>
  Effect.zipRight(settleFibers, Effect.zipRight(TestClock.adjust(millis), settleFibers))

const failure = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got ${JSON.stringify(exit.value)}`)
  const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
  if (error === undefined) throw new Error(`expected one typed failure, got ${exit.cause}`)
  return error
}

const hello = (m: Calls, timeout?: number) => m.raw(Rpcs.hello, null, timeout === undefined ? undefined : { timeout })
const train = (m: Calls, modelId: string, timeout?: number) =>
  m.invoke(Rpcs.trainWindow, [modelId, []], timeout === undefined ? undefined : { timeout })
const initModel = (m: Calls) => m.invoke(Rpcs.initModel, ["cpu"], undefined)

/** Every event from now on (and the replayed ones before). */
const collectEvents = (m: manager.Manager) =>
  Effect.gen(function* () {
    const events: Array<WorkerEvent> = []
    yield* Effect.forkScoped(Stream.runForEach(m.events, (event) => Effect.sync(() => events.push(event))))
    yield* settleFibers
    return events
  })

const methods = (worker: FakeWorker | undefined) => worker?.requests.map((r) => r.method)

/** Each generation serves `scripts[generation]` (or the default answers). */
const byGeneration = (scripts: Record<number, Script | Start>) => (generation: number): Start => {
  const entry = scripts[generation]
  return entry === undefined ? serve() : typeof entry === "function" ? serve(entry) : entry
}

/** Kills generation `generation` from outside, as a crash would: exit status, then the stream ends. */
const crash = (launcher: FakeLauncher, generation: number, exitCode = 9, stderr = "Segmentation fault\n") => {
  const worker = launcher.workers.get(generation)!
  worker.process.appendStderr(stderr)
  worker.process.exitWith({ exitCode, signal: null })
  worker.endStream()
}

describe("the shutdown sequence", () => {
  /** A manager in a scope of its own, and that scope to close. */
  const open = (launcher: FakeLauncher, more: Partial<manager.ManagerOptions<never>> = {}) =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const m = yield* manager.make(options(launcher, more)).pipe(Scope.extend(scope))
      return { m, close: Scope.close(scope, Exit.void) }
    })

  it.effect(
    "sends shutdown first; a worker that acknowledges and exits is not terminated before it exits",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher()
        const { close, m } = yield* open(launcher)
        const closing = yield* Effect.fork(close)
        yield* advance(0)
        expect(Option.isSome(yield* Fiber.poll(closing))).toBe(true)
        const worker = launcher.workers.get(1)!
        expect(methods(worker)).toEqual(["hello", "shutdown"])
        // It exited by itself (code 0): the stop sequence found nothing to stop.
        expect(yield* worker.process.exited).toEqual({ exitCode: 0, signal: null })
        expect(worker.process.kills()).toBe(0)
        expect(failure(yield* Effect.exit(hello(m)))).toMatchObject({ _tag: "WorkerClosedError", method: "hello" })
      }),
    FAST,
  )

  it.effect("a worker that never answers shutdown is terminated after shutdownTimeout", () =>
    Effect.gen(function* () {
      const launcher = makeLauncher(() => serve((request) => request.method === "shutdown" ? never : undefined))
      const { close } = yield* open(launcher)
      const closing = yield* Effect.fork(close)
      yield* advance(SHUTDOWN_TIMEOUT - 1)
      const worker = launcher.workers.get(1)!
      expect(methods(worker)).toEqual(["hello", "shutdown"])
      expect(worker.process.terminations).toEqual([])
      expect(Option.isNone(yield* Fiber.poll(closing))).toBe(true)
      yield* advance(1)
      expect(Option.isSome(yield* Fiber.poll(closing))).toBe(true)
      expect(worker.process.terminations).toEqual([SHUTDOWN_TIMEOUT])
      expect(yield* worker.process.exited).toEqual({ exitCode: null, signal: "SIGTERM" })
    }), FAST)

  it.effect(
    "a worker that acknowledges shutdown but does not exit is terminated after shutdownTimeout",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(() =>
          serve((request) => request.method === "shutdown" ? answer(request) : undefined)
        )
        const { close } = yield* open(launcher)
        const closing = yield* Effect.fork(close)
        yield* advance(SHUTDOWN_TIMEOUT - 1)
        const worker = launcher.workers.get(1)!
        expect(worker.process.terminations).toEqual([])
        yield* advance(1)
        yield* Fiber.join(closing)
        expect(worker.process.terminations).toEqual([SHUTDOWN_TIMEOUT])
      }),
    FAST,
  )

  it.effect(
    "a call pending at close fails with WorkerClosedError, and the close is bounded by shutdownTimeout",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(() => serve((request) => request.method === "train_window" ? never : undefined))
        const { close, m } = yield* open(launcher)
        const pending = yield* Effect.fork(train(m, "m1"))
        yield* settleFibers
        const closing = yield* Effect.fork(close)
        yield* advance(SHUTDOWN_TIMEOUT)
        yield* Fiber.join(closing)
        expect(failure(yield* Fiber.await(pending))).toMatchObject({
          _tag: "WorkerClosedError",
          method: "train_window",
        })
        const worker = launcher.workers.get(1)!
        // The wire was held by the pending call, so shutdown never went out; the worker was terminated.
        expect(methods(worker)).toEqual(["hello", "train_window"])
        expect(worker.process.terminations).toEqual([SHUTDOWN_TIMEOUT])
      }),
    FAST,
  )

  // The polite stop sends `shutdown` without callTimeout's deadline: a worker
  // slower to acknowledge than callTimeout still gets shutdownTimeout.
  it.effect(
    "with a callTimeout, a worker slower than it to acknowledge shutdown still exits by itself",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(() =>
          serve((request) => request.method === "shutdown" ? [...late(300, request), exit({ exitCode: 0 })] : undefined)
        )
        const { close } = yield* open(launcher, { callTimeout: Option.some(Duration.millis(100)) })
        const closing = yield* Effect.fork(close)
        yield* advance(300)
        yield* Fiber.join(closing)
        const worker = launcher.workers.get(1)!
        expect(worker.process.kills()).toBe(0)
        expect(yield* worker.process.exited).toEqual({ exitCode: 0, signal: null })
      }),
    FAST,
  )
})

describe("deaths without restarts", () => {
  it.scoped(
    "a call past its deadline on the wire makes the manager kill the process: a death",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(() => serve((request) => request.method === "train_window" ? never : undefined))
        const m = yield* manager.make(options(launcher))
        const events = yield* collectEvents(m)
        const call = yield* Effect.fork(train(m, "m1", 1_000))
        yield* advance(1_000)
        const error = failure(yield* Fiber.await(call))
        expect(error).toMatchObject({ _tag: "RpcTimeoutError", method: "train_window", id: 2, timeoutMillis: 1_000 })
        const worker = launcher.workers.get(1)!
        expect(worker.process.kills()).toBe(1)
        expect(events.find((e) => e._tag === "Exited")).toMatchObject({
          generation: 1,
          exited: true,
          signal: "SIGKILL",
          cause: error,
        })
        const after = failure(yield* Effect.exit(hello(m)))
        expect(after).toMatchObject({ _tag: "WorkerClosedError", method: "hello", cause: error })
        expect(methods(worker)).toEqual(["hello", "train_window"])
      }),
    FAST,
  )

  it.scoped(
    "restart never: a death between calls fails later calls with WorkerExitedError, its exit and stderr",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher()
        const m = yield* manager.make(options(launcher))
        crash(launcher, 1, 9, "Segmentation fault\n")
        yield* settleFibers
        const error = failure(yield* Effect.exit(hello(m)))
        expect(error).toMatchObject({
          _tag: "WorkerExitedError",
          method: "hello",
          reason: "ProcessExited",
          exitCode: 9,
          signal: null,
          stderrTail: "Segmentation fault\n",
        })
        expect(failure(yield* Effect.exit(train(m, "m1")))).toMatchObject({ _tag: "WorkerExitedError", exitCode: 9 })
        expect(methods(launcher.workers.get(1))).toEqual(["hello"])
        expect(launcher.launches).toEqual([1])
      }),
    FAST,
  )

  it.scoped(
    "restart never: a call on the wire when the worker exits fails with WorkerExitedError",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(() =>
          serve((request) =>
            request.method === "train_window"
              ? [exit({ exitCode: 7 }, "RuntimeError: the GPU caught fire\n")]
              : undefined
          )
        )
        const m = yield* manager.make(options(launcher))
        const error = failure(yield* Effect.exit(train(m, "m1")))
        expect(error).toMatchObject({ _tag: "WorkerExitedError", method: "train_window", exitCode: 7 })
        expect(error._tag === "WorkerExitedError" && error.stderrTail).toContain("the GPU caught fire")
      }),
    FAST,
  )

  it.scoped(
    "restart never: a protocol fault kills the worker; later calls get WorkerClosedError with the fault",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(() =>
          serve((request) => request.method === "train_window" ? answer({ ...request, id: 77 }) : undefined)
        )
        const m = yield* manager.make(options(launcher))
        const error = failure(yield* Effect.exit(train(m, "m1")))
        expect(error).toMatchObject({ _tag: "ProtocolError", reason: "UnexpectedId", id: 2 })
        yield* settleFibers
        expect(launcher.workers.get(1)!.process.kills()).toBe(1)
        expect(failure(yield* Effect.exit(hello(m)))).toMatchObject({ _tag: "WorkerClosedError", cause: error })
      }),
    FAST,
  )

  it.scoped(
    "a stream that closes while the process lives on: ConnectionClosed, once the exit has had its second",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher()
        const m = yield* manager.make(options(launcher))
        launcher.workers.get(1)!.endStream()
        const call = yield* Effect.fork(hello(m))
        yield* advance(999)
        expect(Option.isNone(yield* Fiber.poll(call))).toBe(true)
        yield* advance(1)
        expect(failure(yield* Fiber.await(call))).toMatchObject({
          _tag: "WorkerExitedError",
          reason: "ConnectionClosed",
          exitCode: null,
          signal: null,
        })
      }),
    FAST,
  )
  it.scoped(
    "a frame cut short by the exit is a TruncatedFrame ProtocolError quoting the exit, EOF before the exit status",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(() =>
          serve((request) =>
            request.method === "train_window"
              ? [bytes(header(100)), bytes(new Uint8Array(10)), exit({ exitCode: 0 }, "ran out of memory\n")]
              : undefined
          )
        )
        const m = yield* manager.make(options(launcher))
        const error = failure(yield* Effect.exit(train(m, "m1")))
        expect(error).toMatchObject({ _tag: "ProtocolError", reason: "TruncatedFrame", method: "train_window" })
        expect(error.message).toContain("exited with code 0")
        expect(error.message).toContain("ran out of memory")
      }),
    FAST,
  )

  // The exit status and the stream's EOF race in a real process: seen first,
  // the exit still leaves the frame cut short to be reported as such.
  it.scoped(
    "a frame cut short by the exit is a TruncatedFrame ProtocolError, exit status before EOF",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(() =>
          serve((request) =>
            request.method === "train_window"
              ? [bytes(header(100)), bytes(new Uint8Array(10)), reaped({ exitCode: 0 }), sleep(10), end]
              : undefined
          )
        )
        const m = yield* manager.make(options(launcher))
        const call = yield* Effect.fork(train(m, "m1"))
        yield* advance(10)
        const error = failure(yield* Fiber.await(call))
        expect(error).toMatchObject({ _tag: "ProtocolError", reason: "TruncatedFrame", method: "train_window" })
      }),
    FAST,
  )
})

describe("deadlines", () => {
  it.scoped(
    "a call's deadline counts from when its Effect runs, not from when it was built, each time it runs",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher()
        const m = yield* manager.make(options(launcher))
        const call = train(m, "m1", 100)
        yield* advance(1000)
        expect(yield* call).toEqual({ loss: 0.5 })
        yield* advance(1000)
        expect(yield* call).toEqual({ loss: 0.5 })
      }),
    FAST,
  )
})

describe("interruption", () => {
  /** Answers train_window after 500 ms, echoing nothing; hello at once. */
  const slowTrain = (): Script => (request) =>
    request.method === "train_window" ? late(500, request, { metrics: { loss: 0.5 } }) : undefined

  it.scoped(
    "interrupted while queued behind another call, a call is never written; the one after it goes on",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(byGeneration({ 1: slowTrain() }))
        const m = yield* manager.make(options(launcher))
        const first = yield* Effect.fork(train(m, "m1"))
        yield* settleFibers
        const leaving = yield* Effect.fork(train(m, "m1"))
        const after = yield* Effect.fork(hello(m))
        yield* settleFibers
        yield* Fiber.interrupt(leaving)
        yield* advance(500)
        expect(yield* Fiber.join(first)).toEqual({ loss: 0.5 })
        expect((yield* Fiber.join(after)).workloadName).toBe("FakeWorkload")
        expect(methods(launcher.workers.get(1))).toEqual(["hello", "train_window", "hello"])
      }),
    FAST,
  )

  it.scoped(
    "interrupted on the wire, a caller returns at once; the next request waits for the abandoned answer",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(byGeneration({ 1: slowTrain() }))
        const m = yield* manager.make(options(launcher))
        const abandoned = yield* Effect.fork(train(m, "m1"))
        yield* advance(100)
        expect(Exit.isInterrupted(yield* Fiber.interrupt(abandoned))).toBe(true)
        const next = yield* Effect.fork(hello(m))
        yield* advance(399)
        const worker = launcher.workers.get(1)!
        expect(methods(worker)).toEqual(["hello", "train_window"])
        yield* advance(1)
        expect((yield* Fiber.join(next)).workloadName).toBe("FakeWorkload")
        expect(methods(worker)).toEqual(["hello", "train_window", "hello"])
        expect(worker.maxOutstanding()).toBe(1)
      }),
    FAST,
  )

  it.scoped(
    "an interrupted call with a deadline still closes the connection past it, and the worker is replaced",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(
          byGeneration({ 1: (request) => request.method === "train_window" ? never : undefined }),
        )
        const m = yield* manager.make(options(launcher, { restart: Schedule.spaced("100 millis") }))
        const abandoned = yield* Effect.fork(train(m, "m1", 1_000))
        yield* settleFibers
        yield* Fiber.interrupt(abandoned)
        expect(m.generation()).toBe(1)
        yield* advance(1_000)
        expect(launcher.workers.get(1)!.process.kills()).toBe(1)
        yield* advance(100)
        expect(launcher.launches).toEqual([1, 2])
        expect(m.generation()).toBe(2)
        expect((yield* hello(m)).workloadName).toBe("FakeWorkload")
      }),
    FAST,
  )
})

describe("restarts", () => {
  it.scoped("a call made while restarting waits and runs on the new generation", () =>
    Effect.gen(function* () {
      const launcher = makeLauncher()
      const m = yield* manager.make(options(launcher, { restart: Schedule.spaced("1 second") }))
      crash(launcher, 1)
      yield* settleFibers
      const call = yield* Effect.fork(train(m, "m1"))
      yield* advance(999)
      expect(Option.isNone(yield* Fiber.poll(call))).toBe(true)
      expect(launcher.launches).toEqual([1])
      yield* advance(1)
      expect(yield* Fiber.join(call)).toEqual({ loss: 0.5 })
      expect(launcher.launches).toEqual([1, 2])
      expect(methods(launcher.workers.get(1))).toEqual(["hello"])
      expect(methods(launcher.workers.get(2))).toEqual(["hello", "train_window"])
      expect(m.generation()).toBe(2)
      expect(m.pid()).toBe(launcher.workers.get(2)!.process.pid)
    }), FAST)

  it.scoped("a call's own deadline bounds its wait for the restart", () =>
    Effect.gen(function* () {
      const launcher = makeLauncher()
      const m = yield* manager.make(options(launcher, { restart: Schedule.spaced("1 second") }))
      crash(launcher, 1)
      yield* settleFibers
      const call = yield* Effect.fork(train(m, "m1", 300))
      yield* advance(299)
      expect(Option.isNone(yield* Fiber.poll(call))).toBe(true)
      yield* advance(1)
      expect(failure(yield* Fiber.await(call))).toMatchObject({
        _tag: "RpcTimeoutError",
        method: "train_window",
        id: null,
        timeoutMillis: 300,
      })
      yield* advance(700)
      expect(methods(launcher.workers.get(2))).toEqual(["hello"])
    }), FAST)

  it.scoped(
    "a call in flight at the death fails with WorkerExitedError; the next generation serves",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(byGeneration({
          1: (request) => request.method === "train_window" ? [exit({ exitCode: 7 }, "CUDA error\n")] : undefined,
        }))
        const m = yield* manager.make(options(launcher, { restart: Schedule.spaced("200 millis") }))
        const error = failure(yield* Effect.exit(train(m, "m1")))
        expect(error).toMatchObject({
          _tag: "WorkerExitedError",
          method: "train_window",
          reason: "ProcessExited",
          exitCode: 7,
          stderrTail: "CUDA error\n",
        })
        yield* advance(200)
        expect(yield* train(m, "m1")).toEqual({ loss: 0.5 })
        expect(m.generation()).toBe(2)
      }),
    FAST,
  )

  it.scoped(
    "a call queued behind the one in flight at the death is not lost: it runs on the next generation",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher(byGeneration({
          1: (request) => request.method === "train_window" ? [sleep(50), exit({ exitCode: 7 })] : undefined,
        }))
        const m = yield* manager.make(options(launcher, { restart: Schedule.spaced("200 millis") }))
        const inFlight = yield* Effect.fork(train(m, "m1"))
        yield* settleFibers
        const queued = yield* Effect.fork(hello(m))
        yield* settleFibers
        yield* advance(50)
        // The call on the wire is lost with the process; the queued one was never sent.
        expect(failure(yield* Fiber.await(inFlight))).toMatchObject({
          _tag: "WorkerExitedError",
          method: "train_window",
        })
        yield* advance(200)
        expect((yield* Fiber.join(queued)).workloadName).toBe("FakeWorkload")
        expect(methods(launcher.workers.get(1))).toEqual(["hello", "train_window"])
        expect(methods(launcher.workers.get(2))).toEqual(["hello", "hello"])
      }),
    FAST,
  )

  it.scoped(
    "a model id of generation 1 used in generation 2 fails with ModelLostError; nothing is sent",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher()
        const m = yield* manager.make(options(launcher, { restart: Schedule.spaced("100 millis") }))
        const model = yield* initModel(m)
        expect(model).toBe("g1:m1")
        crash(launcher, 1, 9)
        yield* advance(100)
        expect(m.generation()).toBe(2)
        const error = failure(yield* Effect.exit(train(m, model)))
        expect(error).toMatchObject({
          _tag: "ModelLostError",
          modelId: "g1:m1",
          generation: 1,
          currentGeneration: 2,
          method: "train_window",
          died: "exited with code 9",
        })
        expect(methods(launcher.workers.get(2))).toEqual(["hello"])
        // Ids of this generation go to the wire without their tag; untagged ids pass through as they are.
        const fresh = yield* initModel(m)
        expect(fresh).toBe("g2:m1")
        yield* train(m, fresh)
        yield* train(m, "m42")
        const sent = launcher.workers.get(2)!.requests.filter((r) => r.method === "train_window")
        expect(sent.map((r) => (r.params as { model_id: string }).model_id)).toEqual(["m1", "m42"])
      }),
    FAST,
  )

  it.scoped(
    "the schedule's budget: past Schedule.recurs(2), calls fail at once with WorkerGaveUpError",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher((generation) => generation === 1 ? serve() : dieAtStart())
        const m = yield* manager.make(options(launcher, { restart: Schedule.recurs(2) }))
        const events = yield* collectEvents(m)
        crash(launcher, 1)
        yield* settleFibers
        const waiting = yield* Effect.fork(hello(m))
        yield* advance(100)
        expect(launcher.launches).toEqual([1, 2])
        expect(Option.isNone(yield* Fiber.poll(waiting))).toBe(true)
        yield* advance(100)
        expect(launcher.launches).toEqual([1, 2, 3])
        const expected = {
          _tag: "WorkerGaveUpError",
          method: "hello",
          starts: 3,
          pid: launcher.workers.get(3)!.process.pid,
          exitCode: 3,
          signal: null,
          stderrTail: "Fatal: generation 3 died at start\n",
        }
        // The call waiting for the restart gets it, and so does every later call, at once.
        expect(failure(yield* Fiber.await(waiting))).toMatchObject(expected)
        expect(failure(yield* Effect.exit(hello(m)))).toMatchObject(expected)
        yield* advance(1_000)
        expect(launcher.launches).toEqual([1, 2, 3])
        expect(events.map((e) => e._tag)).toEqual([
          "Started",
          "Exited",
          "Restarting",
          "Exited",
          "Restarting",
          "Exited",
          "GaveUp",
        ])
        expect(events.at(-1)).toMatchObject({ _tag: "GaveUp", generation: 3, starts: 3, death: { exitCode: 3 } })
      }),
    FAST,
  )

  it.scoped(
    "a launch that fails is a death like any other, with the launch error's exit status",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher((generation) => generation === 1 ? serve() : failStart())
        const m = yield* manager.make(options(launcher, { restart: Schedule.recurs(1) }))
        const events = yield* collectEvents(m)
        crash(launcher, 1)
        yield* advance(100)
        expect(failure(yield* Effect.exit(hello(m)))).toMatchObject({
          _tag: "WorkerGaveUpError",
          starts: 2,
          exitCode: 1,
          stderrTail: "ImportError: generation 2 cannot start\n",
        })
        expect(events.filter((e) => e._tag === "Exited").at(-1)).toMatchObject({
          generation: 2,
          exitCode: 1,
          cause: { _tag: "WorkerConnectError" },
        })
      }),
    FAST,
  )

  it.scoped(
    "a worker that dies at start every time under Schedule.forever is restarted at most every 100 ms",
    () =>
      Effect.gen(function* () {
        const launcher = makeLauncher((generation) => generation === 1 ? serve() : dieAtStart())
        const m = yield* manager.make(options(launcher, { restart: Schedule.forever }))
        const events = yield* collectEvents(m)
        crash(launcher, 1)
        yield* settleFibers
        for (let i = 0; i < 10; i++) yield* advance(100)
        // One start at 0, then one every 100 ms.
        expect(launcher.launches).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
        expect(launcher.launchTimes).toEqual([0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1_000])
        expect(events.slice(0, 3).map((e) => e._tag)).toEqual(["Started", "Exited", "Restarting"])
        const restarting = events.filter((e) => e._tag === "Restarting")
        expect(restarting.map((e) => e.generation)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        expect(restarting.every((e) => e._tag === "Restarting" && e.delayMillis === 100)).toBe(true)
        const exited = events.filter((e) => e._tag === "Exited")
        expect(exited.map((e) => e.generation)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
        expect(exited.slice(1).every((e) => e._tag === "Exited" && e.exitCode === 3)).toBe(true)
        expect(events.filter((e) => e._tag === "Started").length).toBe(1)
      }),
    FAST,
  )

  it.scoped("a timed-out call's kill counts as a death: the next generation starts", () =>
    Effect.gen(function* () {
      const launcher = makeLauncher(byGeneration({
        1: (request) => request.method === "train_window" ? never : undefined,
      }))
      const m = yield* manager.make(options(launcher, { restart: Schedule.spaced("100 millis") }))
      const events = yield* collectEvents(m)
      expect(failure(
        yield* Effect.exit(
          Effect.fork(train(m, "m1", 500)).pipe(
            Effect.tap(() => advance(500)),
            Effect.flatMap(Fiber.join),
          ),
        ),
      )).toMatchObject({ _tag: "RpcTimeoutError", id: 2 })
      yield* advance(100)
      expect(launcher.launches).toEqual([1, 2])
      expect(events.find((e) => e._tag === "Restarting")).toMatchObject({
        generation: 2,
        after: { generation: 1, signal: "SIGKILL", cause: { _tag: "RpcTimeoutError" } },
      })
    }), FAST)

  it.scoped(
    "onStart runs against each fresh generation before any other call is served",
    () =>
      Effect.gen(function* () {
        const seen: Array<{ generation: number; model: string }> = []
        const launcher = makeLauncher(() =>
          serve((request) => request.method === "init_model" ? late(50, request, { model_id: "m1" }) : undefined)
        )
        const m = yield* manager.make(options(launcher, {
          restart: Schedule.spaced("100 millis"),
          onStart: (calls) =>
            Effect.map(initModel(calls), (model) => {
              seen.push({ generation: calls.generation(), model })
            }),
        })).pipe(Effect.fork, Effect.tap(() => advance(50)), Effect.flatMap(Fiber.join))
        expect(seen).toEqual([{ generation: 1, model: "g1:m1" }])
        crash(launcher, 1)
        yield* settleFibers
        const waiting = yield* Effect.fork(train(m, "m7"))
        yield* advance(100)
        expect(Option.isNone(yield* Fiber.poll(waiting))).toBe(true)
        yield* advance(50)
        yield* Fiber.join(waiting)
        expect(seen).toEqual([{ generation: 1, model: "g1:m1" }, { generation: 2, model: "g2:m1" }])
        expect(methods(launcher.workers.get(2))).toEqual(["hello", "init_model", "train_window"])
      }),
    FAST,
  )

  it.scoped("a failing onStart on a restart counts as a death", () =>
    Effect.gen(function* () {
      const launcher = makeLauncher()
      let runs = 0
      const m = yield* manager.make(options<string>(launcher, {
        restart: Schedule.recurs(1),
        onStart: () => (runs++ === 0 ? Effect.void : Effect.fail("no checkpoint")),
      }))
      crash(launcher, 1)
      yield* advance(100)
      expect(launcher.launches).toEqual([1, 2])
      expect(failure(yield* Effect.exit(hello(m)))).toMatchObject({ _tag: "WorkerGaveUpError", starts: 2 })
      // Its process was stopped with its scope.
      expect(launcher.workers.get(2)!.process.terminations.length).toBe(1)
    }), FAST)

  it.scoped("restarts are logged at warning level, giving up at error level", () =>
    Effect.gen(function* () {
      const logs: Array<{ level: string; message: string }> = []
      const logger = Logger.make(({ logLevel, message }) => {
        logs.push({ level: logLevel.label, message: Array.isArray(message) ? message.join(" ") : String(message) })
      })
      const launcher = makeLauncher()
      yield* Effect.gen(function* () {
        yield* manager.make(options(launcher, { restart: Schedule.recurs(1) }))
        crash(launcher, 1, 9)
        yield* advance(100)
        crash(launcher, 2, 4)
        yield* settleFibers
      }).pipe(Effect.provide(Logger.add(logger)))
      const warnings = logs.filter((log) => log.level === "WARN")
      expect(warnings.length).toBe(1)
      expect(warnings[0].message).toContain("Python worker #1")
      expect(warnings[0].message).toContain("exited with code 9")
      expect(warnings[0].message).toContain("starting worker #2 in 100 ms")
      const errors = logs.filter((log) => log.level === "ERROR")
      expect(errors.length).toBe(1)
      expect(errors[0].message).toContain("exited with code 4")
      expect(errors[0].message).toContain("gave up after 2 starts")
    }), FAST)
})
