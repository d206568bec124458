/**
 * The service's failure semantics, one mechanism per test: deadlines,
 * interruption, death detection, worker output, and a release that completes
 * whatever state the worker is in.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import { join } from "node:path"
import process from "node:process"
import { make, type PythonWorker } from "../src/PythonWorker.ts"
import { capturingLogger } from "./fixtures/supervised.ts"
import {
  AT_ONCE_MS,
  awaitGone,
  echoBatch,
  faultWorker,
  fixturesRoot,
  isAlive,
  portIsClosed,
  testPython,
} from "./helpers.ts"

const start = (options: PythonWorker.Options) => make(options).pipe(Effect.provide(NodeContext.layer))

/** One batch that the fault worker answers with `echo: text`. */
const echo = (text: string) => [echoBatch({ echo: text })]

const timed = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const begin = Date.now()
    const exit = yield* Effect.exit(self)
    return { exit, millis: Date.now() - begin }
  })

const failure = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got ${JSON.stringify(exit.value)}`)
  const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
  if (error === undefined) throw new Error(`expected one typed failure, got ${exit.cause}`)
  return error
}

/** A logger that keeps every record, and completes `seen` once a message contains `needle`. */
const capturingLoggerSeeing = (needle: string, seen: Deferred.Deferred<void>) =>
  capturingLogger((record) => {
    if (record.message.includes(needle)) Deferred.unsafeDone(seen, Exit.void)
  })

/**
 * `count` callers at once, each echoing its own text: every one gets its own
 * answer, the worker sees the requests in call order and never two at once.
 */
const servedInOrder = (count: number, plan: Parameters<typeof faultWorker>[0]) => {
  const worker = faultWorker(plan)
  return Effect.scoped(Effect.gen(function* () {
    const service = yield* start(worker.options)
    const texts = Array.from({ length: count }, (_, i) => `caller-${i}`)
    const answers = yield* Effect.forEach(texts, (text) => service.trainWindow("m1", echo(text)), {
      concurrency: "unbounded",
    })
    expect(answers.map((metrics) => metrics.echo)).toEqual(texts)
    const events = worker.events()
    expect(events.filter((e) => e.event === "request" && e.method === "train_window").map((e) => e.echo)).toEqual(
      texts,
    )
    expect(events.filter((e) => e.event === "overlap")).toEqual([])
  })).pipe(Effect.ensuring(worker.cleanup))
}

describe("deadlines", () => {
  it.live("a call past its deadline fails with RpcTimeoutError, kills the worker, and closes the service", () => {
    const worker = faultWorker([{ at: 2, fault: "hang" }])
    return Effect.scoped(Effect.gen(function* () {
      const service = yield* start(worker.options)
      const late = yield* timed(service.trainWindow("m1", echo("late"), { timeout: 200 }))
      expect(failure(late.exit)).toMatchObject({ _tag: "RpcTimeoutError", method: "train_window", timeoutMillis: 200 })
      expect(late.millis).toBeLessThan(1_000)
      yield* awaitGone([service.pid])
      const after = yield* timed(service.hello())
      const closed = failure(after.exit)
      expect(closed).toMatchObject({ _tag: "WorkerClosedError", method: "hello" })
      expect(closed._tag === "WorkerClosedError" && closed.cause?._tag).toBe("RpcTimeoutError")
      expect(closed.message).toContain("timed out after 200 ms")
      expect(after.millis).toBeLessThan(AT_ONCE_MS)
    })).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("callTimeout applies to every call, and a call's own timeout overrides it", () => {
    const worker = faultWorker([{ at: 2, fault: "sleep", ms: 300 }, { at: 3, fault: "sleep", ms: 300 }], {
      callTimeout: 150,
    })
    return Effect.scoped(Effect.gen(function* () {
      const service = yield* start(worker.options)
      expect(yield* service.trainWindow("m1", echo("patient"), { timeout: "5 seconds" })).toMatchObject({
        echo: "patient",
      })
      const hurried = yield* Effect.flip(service.trainWindow("m1", echo("hurried")))
      expect(hurried).toMatchObject({ _tag: "RpcTimeoutError", timeoutMillis: 150 })
    })).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("a call that times out while queued never reached the wire, and the service stays open", () => {
    const worker = faultWorker([{ at: 2, fault: "sleep", ms: 400 }])
    return Effect.scoped(Effect.gen(function* () {
      const service = yield* start(worker.options)
      const slow = yield* Effect.fork(service.trainWindow("m1", echo("slow")))
      // Let the forked call take the wire first (forked fibers start on the next scheduler turn).
      yield* Effect.yieldNow()
      const queued = yield* Effect.flip(service.trainWindow("m1", echo("queued"), { timeout: 100 }))
      expect(queued).toMatchObject({ _tag: "RpcTimeoutError", id: null })
      expect(yield* Fiber.join(slow)).toMatchObject({ echo: "slow" })
      expect(yield* service.trainWindow("m1", echo("next"))).toMatchObject({ echo: "next" })
      expect(worker.events().filter((e) => e.event === "request").map((e) => e.echo)).toEqual([
        null,
        "slow",
        "next",
      ])
    })).pipe(Effect.ensuring(worker.cleanup))
  })
})

describe("interruption", () => {
  it.live("an interrupted caller returns at once; the next caller gets its own answer, after the abandoned one", () => {
    const worker = faultWorker([{ at: 2, fault: "sleep", ms: 400 }])
    return Effect.scoped(Effect.gen(function* () {
      const service = yield* start(worker.options)
      const abandoned = yield* timed(service.trainWindow("m1", echo("abandoned")).pipe(Effect.timeout("50 millis")))
      expect(failure(abandoned.exit)).toMatchObject({ _tag: "TimeoutException" })
      expect(abandoned.millis).toBeLessThan(200)
      expect(yield* service.trainWindow("m1", echo("next"))).toMatchObject({ echo: "next" })
      const events = worker.events()
      expect(events.filter((e) => e.event === "overlap")).toEqual([])
      expect(events.filter((e) => e.event === "request").map((e) => e.echo)).toEqual([null, "abandoned", "next"])
    })).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("concurrent callers go on the wire one at a time, in the order they called", () =>
    servedInOrder(20, [{ at: 2, fault: "sleep", ms: 50 }]))
})

describe("death detection", () => {
  it.live("a pending call fails when the process exits, with the exit code and the stderr tail", () => {
    const worker = faultWorker([{ at: 2, fault: "exit", code: 7, stderr: "RuntimeError: the GPU caught fire\n" }])
    return Effect.scoped(Effect.gen(function* () {
      const service = yield* start(worker.options)
      const error = yield* Effect.flip(service.trainWindow("m1", echo("doomed")))
      expect(error).toMatchObject({ _tag: "WorkerExitedError", method: "train_window", exitCode: 7, signal: null })
      expect(error._tag === "WorkerExitedError" && error.stderrTail).toContain("the GPU caught fire")
      expect(error.message).toContain("exited with code 7")
      expect(error.message).toContain("RuntimeError: the GPU caught fire")
    })).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("a death between calls is noticed: the next call fails at once with the signal, without a timeout", () => {
    const worker = faultWorker([], { callTimeout: "30 seconds" })
    return Effect.scoped(Effect.gen(function* () {
      const service = yield* start(worker.options)
      process.kill(service.pid, "SIGKILL")
      yield* awaitGone([service.pid])
      const after = yield* timed(service.hello())
      expect(failure(after.exit)).toMatchObject({ _tag: "WorkerExitedError", method: "hello", signal: "SIGKILL" })
      expect(after.millis).toBeLessThan(1_500)
      const again = yield* timed(service.hello())
      expect(failure(again.exit)).toMatchObject({ _tag: "WorkerExitedError", signal: "SIGKILL" })
      expect(again.millis).toBeLessThan(AT_ONCE_MS)
    })).pipe(Effect.ensuring(worker.cleanup))
  })
})

describe("worker output", () => {
  it.live("stderr lines reach the logger at debug level, annotated with the pid and the stream", () => {
    const worker = faultWorker([{ at: 2, fault: "behave", stderr: "loading shard 17 of 40\n" }])
    return Effect.gen(function* () {
      const seen = yield* Deferred.make<void>()
      const capture = capturingLoggerSeeing("loading shard 17 of 40", seen)
      const pid = yield* Effect.scoped(Effect.gen(function* () {
        const service = yield* start(worker.options)
        yield* service.trainWindow("m1", echo("x"))
        yield* Deferred.await(seen)
        return service.pid
      })).pipe(Effect.provide(capture.layer), Logger.withMinimumLogLevel(LogLevel.Debug))
      expect(capture.records.find((r) => r.message === "loading shard 17 of 40")).toMatchObject({
        level: "DEBUG",
        annotations: { pid, stream: "stderr" },
      })
    }).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("a worker writing 50 MB to stderr does not block, and the tail keeps the latest ~64 KiB", () => {
    const worker = faultWorker([
      { at: 2, fault: "stderr_flood", n: 50 * 1024 * 1024 },
      { at: 3, fault: "exit", code: 3, stderr: "last words\n" },
    ])
    return Effect.scoped(Effect.gen(function* () {
      const service = yield* start(worker.options)
      expect(yield* service.trainWindow("m1", echo("flood"), { timeout: "60 seconds" })).toMatchObject({
        echo: "flood",
      })
      const error = yield* Effect.flip(service.trainWindow("m1", echo("end")))
      if (error._tag !== "WorkerExitedError") throw new Error(`unexpected ${error._tag}`)
      expect(error.stderrTail.endsWith("last words\n")).toBe(true)
      expect(error.stderrTail.length).toBeLessThanOrEqual(64 * 1024)
      expect(error.stderrTail.length).toBeGreaterThan(32 * 1024)
    })).pipe(Effect.ensuring(worker.cleanup))
  }, 120_000)
})

describe("release", () => {
  const closesWithin = (
    options: PythonWorker.Options,
    during: (service: PythonWorker.Service) => Effect.Effect<void, unknown>,
  ) =>
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const service = yield* start(options).pipe(Scope.extend(scope))
      yield* during(service)
      const begin = Date.now()
      yield* Scope.close(scope, Exit.void)
      const millis = Date.now() - begin
      yield* awaitGone([service.pid])
      return millis
    })

  it.live("completes when the worker ignores SIGTERM and never answers shutdown", () => {
    const worker = faultWorker([{ at: 2, fault: "hang" }], { ignoreSigterm: true })
    return Effect.gen(function* () {
      const millis = yield* closesWithin(worker.options, () => Effect.void)
      // shutdownTimeout (300) + terminateGrace (300), then SIGKILL.
      expect(millis).toBeGreaterThanOrEqual(550)
      expect(millis).toBeLessThan(2_000)
    }).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("completes when the worker is stopped with SIGSTOP", () => {
    const worker = faultWorker([], { ignoreSigterm: true })
    return Effect.gen(function* () {
      const millis = yield* closesWithin(
        worker.options,
        (service) => Effect.sync(() => process.kill(service.pid, "SIGSTOP")),
      )
      expect(millis).toBeLessThan(2_000)
    }).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("a call still pending at release fails with WorkerClosedError, and release is bounded", () => {
    const worker = faultWorker([{ at: 2, fault: "hang" }])
    return Effect.gen(function* () {
      let pending: Fiber.RuntimeFiber<unknown, unknown> | undefined
      const millis = yield* closesWithin(worker.options, (service) =>
        Effect.gen(function* () {
          pending = yield* Effect.forkDaemon(service.trainWindow("m1", echo("stuck")))
          yield* Effect.yieldNow()
        }))
      expect(millis).toBeLessThan(2_000)
      const error = failure(yield* Fiber.await(pending!))
      expect(error).toMatchObject({ _tag: "WorkerClosedError", method: "train_window" })
    }).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("kills the children the worker started", () => {
    const worker = faultWorker([{ at: 2, fault: "spawn_child" }])
    return Effect.gen(function* () {
      yield* closesWithin(worker.options, (service) => Effect.asVoid(service.trainWindow("m1", echo("spawn"))))
      const children = worker.events().filter((e) => e.event === "child").map((e) => e.pid as number)
      expect(children.length).toBe(1)
      yield* awaitGone(children)
    }).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("interrupted during start, it leaves no process and no open listener", () => {
    const worker = faultWorker([{ at: 1, fault: "hang", stderr: "stuck in hello\n" }])
    return Effect.gen(function* () {
      const seen = yield* Deferred.make<void>()
      const capture = capturingLoggerSeeing("stuck in hello", seen)
      const starting = yield* Effect.fork(
        Effect.scoped(start(worker.options)).pipe(
          Effect.provide(capture.layer),
          Logger.withMinimumLogLevel(LogLevel.Debug),
        ),
      )
      yield* Deferred.await(seen)
      yield* Fiber.interrupt(starting)
      const begin = worker.events().find((e) => e.event === "start")!
      yield* awaitGone([begin.pid as number])
      expect(yield* portIsClosed(begin.port as number)).toBe(true)
    }).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("a busy worker exits when the client process dies without releasing it", () =>
    Effect.gen(function* () {
      const script = join(fixturesRoot, "..", "orphan_client.ts")
      const child = spawn(process.execPath, ["run", "-A", script, testPython], { stdio: ["ignore", "pipe", "inherit"] })
      const workerPid = yield* Effect.async<number>((resume) => {
        child.stdout.once("data", (chunk: Uint8Array) => resume(Effect.succeed(Number(String(chunk).trim()))))
      })
      expect(isAlive(workerPid)).toBe(true)
      child.kill("SIGKILL")
      yield* awaitGone([workerPid])
    }))
})

describe("review regressions", () => {
  it.live("thousands of concurrent callers are served one at a time, in call order", () => servedInOrder(3000, []))

  it.live("a request above maxFrameBytes is an InvalidArgumentError; nothing is sent and the service stays open", () => {
    const worker = faultWorker([], { maxFrameBytes: 4096 })
    return Effect.scoped(Effect.gen(function* () {
      const service = yield* start(worker.options)
      const error = yield* Effect.flip(service.trainWindow("m1", echo("x".repeat(10_000))))
      expect(error).toMatchObject({ _tag: "InvalidArgumentError", where: "train_window" })
      expect(error.message).toContain("above maxFrameBytes 4096")
      expect(yield* service.trainWindow("m1", echo("small"))).toMatchObject({ echo: "small" })
      expect(worker.events().filter((e) => e.event === "request").map((e) => e.id)).toEqual([1, 2])
    })).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("a call's timeout that is not a duration is an InvalidArgumentError", () => {
    const worker = faultWorker([])
    return Effect.scoped(Effect.gen(function* () {
      const service = yield* start(worker.options)
      const error = yield* Effect.flip(service.hello({ timeout: "bogus" as never }))
      expect(error).toMatchObject({ _tag: "InvalidArgumentError", where: "hello" })
      expect((yield* service.hello()).protocolVersion).toBe(1)
    })).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("without a callTimeout, connectTimeout also bounds the first hello", () => {
    const worker = faultWorker([{ at: 1, fault: "hang" }], { connectTimeout: 300 })
    return Effect.gen(function* () {
      const error = yield* Effect.flip(Effect.scoped(start(worker.options)))
      expect(error).toMatchObject({ _tag: "RpcTimeoutError", method: "hello" })
      expect(error._tag === "RpcTimeoutError" && error.timeoutMillis).toBeLessThanOrEqual(300)
      const begin = worker.events().find((e) => e.event === "start")!
      yield* awaitGone([begin.pid as number])
    }).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("a frame cut short by the worker's exit is a ProtocolError that quotes the exit and stderr", () => {
    const worker = faultWorker([{ at: 2, fault: "close_mid_frame", stderr: "ran out of memory\n" }])
    return Effect.scoped(Effect.gen(function* () {
      const service = yield* start(worker.options)
      const error = yield* Effect.flip(service.trainWindow("m1", echo("cut")))
      expect(error).toMatchObject({ _tag: "ProtocolError", reason: "TruncatedFrame", method: "train_window" })
      expect(error.message).toContain("exited with code 0")
      expect(error.message).toContain("ran out of memory")
    })).pipe(Effect.ensuring(worker.cleanup))
  })

  it.live("a PYTHONPATH in `env` is added to the path, not put in place of the runtime's folder", () =>
    Effect.scoped(Effect.gen(function* () {
      // Our worker module comes from the runtime's folder, the factory from the env's PYTHONPATH.
      const service = yield* start({
        workloadFactory: "echo_workload:make",
        pythonExecutable: testPython,
        env: { PYTHONPATH: fixturesRoot },
      })
      expect((yield* service.hello()).workloadName).toBe("EchoWorkload")
    })))
})
