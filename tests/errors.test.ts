/**
 * The errors a user meets through ordinary mistakes: each is a typed value
 * with the fields needed to act on it, and none leaves a process behind.
 *
 * Errors are matched with `expectTagged` (helpers.ts), which matches a spread
 * copy: an error failed inside an `Effect.fn` span is a Proxy.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { PythonWorker } from "../src/mod.ts"
import {
  awaitGone,
  awkwardExceptionsKeepTypeAndMessage,
  childPids,
  echoBatch,
  expectTagged,
  fixturesRoot,
  leavesNoProcess,
  testPython,
} from "./helpers.ts"

const echo: PythonWorker.Options = {
  workloadFactory: "echo_workload:make",
  moduleSearchRoots: [fixturesRoot],
  pythonExecutable: testPython,
  // These tests check what a death does to the service itself.
  restart: "never",
}

/** Starting the service must fail: its error. */
const startError = (options: PythonWorker.Options) =>
  leavesNoProcess(Effect.flip(Effect.provide(PythonWorker, PythonWorker.layer(options))))

describe("starting a worker", () => {
  it.live("a missing Python executable is a WorkerSpawnError NotFound", () =>
    Effect.gen(function* () {
      const error = yield* startError({ ...echo, pythonExecutable: "/nonexistent/python3" })
      expectTagged(error, "WorkerSpawnError", {
        executable: "/nonexistent/python3",
        reason: "NotFound",
      })
      expect(error.message).toContain("pythonExecutable")
    }))

  it.live("a Python executable that cannot be executed is a WorkerSpawnError PermissionDenied", () =>
    Effect.gen(function* () {
      const error = yield* startError({ ...echo, pythonExecutable: fixturesRoot })
      expectTagged(error, "WorkerSpawnError", {
        executable: fixturesRoot,
        reason: "PermissionDenied",
      })
    }))

  it.live("a factory module that does not exist: WorkerConnectError Exited, with Python's error in the stderr tail", () =>
    Effect.gen(function* () {
      const error = yield* startError({ ...echo, workloadFactory: "no_such_workload_module:make" })
      expectTagged(error, "WorkerConnectError", {
        reason: "ProcessExited",
        exitCode: 2,
        signal: null,
        pid: expect.any(Number),
        stderrTail: expect.stringContaining("ModuleNotFoundError: No module named 'no_such_workload_module'"),
      })
      expect(error.message).toContain("exited with code 2 before connecting back")
      expect(error.message).toContain("ModuleNotFoundError: No module named 'no_such_workload_module'")
      if (error._tag === "WorkerConnectError") yield* awaitGone([error.pid!])
    }))

  it.live("a factory attribute that is not callable: WorkerConnectError naming it", () =>
    Effect.gen(function* () {
      const error = yield* startError({ ...echo, workloadFactory: "echo_workload:not_callable" })
      expectTagged(error, "WorkerConnectError", {
        reason: "ProcessExited",
        exitCode: 2,
        stderrTail: expect.stringContaining("TypeError: 'echo_workload:not_callable' is not callable"),
      })
    }))

  it.live("a factory that raises: WorkerConnectError with the exception and its traceback", () =>
    Effect.gen(function* () {
      const error = yield* startError({
        ...echo,
        workloadFactory: "echo_workload:make_raising",
        workloadConfig: { answer: 42 },
      })
      expectTagged(error, "WorkerConnectError", { reason: "ProcessExited", exitCode: 2 })
      if (error._tag !== "WorkerConnectError") return
      expect(error.stderrTail).toContain("ValueError: bad config: {'answer': 42}")
      expect(error.stderrTail).toContain("Traceback (most recent call last)")
      expect(error.message).toContain("ValueError: bad config")
    }))

  it.live("a workload config the workload refuses: WorkerConnectError with the workload's reason", () =>
    Effect.gen(function* () {
      const error = yield* startError({
        workloadFactory: "burn_p2p_python_runtime.reference_workload:make",
        workloadConfig: { features: "eight" },
        pythonExecutable: testPython,
      })
      expectTagged(error, "WorkerConnectError", {
        reason: "ProcessExited",
        exitCode: 2,
        stderrTail: expect.stringContaining("ValueError: config features must be an integer, got 'eight'"),
      })
      expect(error.message).toContain("config features must be an integer")
    }))

  // The executable does not exist either: failing on the options rather than
  // on the spawn shows they are checked before anything starts.
  const badOptions: Array<[string, Record<string, unknown>, string]> = [
    ["a factory without a colon", { workloadFactory: "nocolon" }, `expected "module:attr"`],
    ["a negative maxFrameBytes", { maxFrameBytes: -1 }, "maxFrameBytes"],
    ["a misspelt option", { pythonExecutible: testPython }, "pythonExecutible"],
    ["a connectTimeout that is no duration", { connectTimeout: "soon" }, "connectTimeout"],
  ]
  for (const [name, override, detail] of badOptions) {
    it.live(`${name} is an InvalidArgumentError before anything is spawned`, () =>
      Effect.gen(function* () {
        const options = { ...echo, pythonExecutable: "/nonexistent/python3", ...override } as PythonWorker.Options
        const error = yield* startError(options)
        expectTagged(error, "InvalidArgumentError", {
          where: "PythonWorker.layer",
          detail: expect.stringContaining(detail),
        })
      }))
  }

  it.live("a worker speaking protocol 3 is refused with ProtocolError UnsupportedVersion, naming 1 and 2, and stopped", () =>
    Effect.gen(function* () {
      const error = yield* startError({ ...echo, workerModule: "future_protocol_worker" })
      expectTagged(error, "ProtocolError", {
        reason: "UnsupportedVersion",
        method: "hello",
        pid: expect.any(Number),
        detail: expect.stringContaining("the worker speaks protocol 3; this client speaks 1 and 2"),
      })
      expect(error.message).toContain("install a worker runtime")
      if (error._tag === "ProtocolError") yield* awaitGone([error.pid!])
    }))

  it.live("a worker that says protocol 2 is accepted", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      expect(worker.info.protocolVersion).toBe(2)
      expect(yield* worker.hello()).toMatchObject({ protocolVersion: 2 })
    }).pipe(Effect.provide(PythonWorker.layer({ ...echo, env: { BURN_P2P_WORKER_PROTOCOL_VERSION: "2" } }))))

  it.live("a worker that never connects is a WorkerConnectError Timeout, quickly, and is stopped", () =>
    Effect.gen(function* () {
      const started = Date.now()
      const error = yield* startError({ ...echo, workerModule: "silent_worker", connectTimeout: 200 })
      expect(Date.now() - started).toBeLessThan(2_000)
      expectTagged(error, "WorkerConnectError", {
        reason: "Timeout",
        timeoutMillis: 200,
        pid: expect.any(Number),
      })
      expect(error.message).toContain("did not connect back within 200 ms")
      if (error._tag === "WorkerConnectError") yield* awaitGone([error.pid!])
    }))
})

// The echo workload plus awkward exceptions (raising_workload).
layer(PythonWorker.layer({ ...echo, workloadFactory: "raising_workload:make" }), { excludeTestServices: true })(
  "calls that fail while the worker keeps serving",
  (it) => {
    it.effect("an unknown model id is a RemoteError UnknownModelError", () =>
      Effect.gen(function* () {
        const worker = yield* PythonWorker
        const error = yield* Effect.flip(worker.evaluate("no-such-model", "Validation"))
        expectTagged(error, "RemoteError", {
          method: "evaluate",
          errorType: "UnknownModelError",
          remoteMessage: expect.stringContaining("unknown model id 'no-such-model'"),
          id: expect.any(Number),
        })
        expect((yield* worker.hello()).protocolVersion).toBe(1)
        // The worker is our child: what `leavesNoProcess` relies on.
        expect(childPids()).toContain(worker.pid)
      }))

    it.effect("a workload method that raises is a RemoteError with the Python type, message and traceback", () =>
      Effect.gen(function* () {
        const worker = yield* PythonWorker
        const modelId = yield* worker.initModel("cpu")
        const error = yield* Effect.flip(worker.evaluate(modelId, "Train"))
        expectTagged(error, "RemoteError", {
          method: "evaluate",
          errorType: "RuntimeError",
          remoteMessage: expect.stringContaining("boom from workload"),
        })
        if (error._tag !== "RemoteError") return
        expect(error.traceback).toContain("Traceback")
        expect(error.traceback).toContain("echo_workload.py")
        expect(error.message).toContain("RuntimeError: boom from workload")
        expect(yield* worker.evaluate(modelId, "Validation")).toEqual({ split: "Validation" })
      }))

    it.effect("exceptions of awkward shapes keep their type and whole message", () =>
      awkwardExceptionsKeepTypeAndMessage)

    it.effect("invalid call arguments are an InvalidArgumentError, nothing is sent, and the service still works", () =>
      Effect.gen(function* () {
        const worker = yield* PythonWorker
        const modelId = yield* worker.initModel("cpu")
        const unknown = worker.evaluate("no-such-model", "Validation").pipe(
          Effect.flip,
          Effect.map((error) => (error._tag === "RemoteError" ? error.id : -1)),
        )
        const firstId = yield* unknown
        const negative = yield* Effect.flip(worker.trainWindow(modelId, [echoBatch({}, [-1])]))
        expectTagged(negative, "InvalidArgumentError", {
          where: "train_window",
          detail: expect.stringContaining("ordinals"),
        })
        const weight = yield* Effect.flip(
          worker.reconcileCanonicalModel(modelId, modelId, { RootEma: { canonicalWeight: 1.5 } }),
        )
        expectTagged(weight, "InvalidArgumentError", { where: "reconcile_canonical_model" })
        // Request ids are consecutive on the wire: neither refused call used one.
        expect(yield* unknown).toBe(firstId + 1)
        expect(yield* worker.trainWindow(modelId, [echoBatch({ echo: "still here" }, [0, 1])])).toEqual({
          echo: "still here",
          examples: 2,
        })
      }))
  },
)

describe("using a worker past its end", () => {
  it.live("a call after the scope has closed is a WorkerClosedError", () =>
    Effect.gen(function* () {
      const worker = yield* leavesNoProcess(Effect.provide(PythonWorker, PythonWorker.layer(echo)))
      const error = yield* Effect.flip(worker.hello())
      expectTagged(error, "WorkerClosedError", { method: "hello" })
      expect(error.message).toContain("its scope has closed")
    }))

  it.live("a workload that kills its process is a WorkerExitedError with the exit code", () =>
    leavesNoProcess(
      Effect.gen(function* () {
        const worker = yield* PythonWorker
        const modelId = yield* worker.initModel("cpu")
        const error = yield* Effect.flip(worker.trainWindow(modelId, [echoBatch({ exit_code: 3 }, [0])]))
        expectTagged(error, "WorkerExitedError", {
          method: "train_window",
          reason: "ProcessExited",
          exitCode: 3,
          pid: worker.pid,
        })
        expectTagged(yield* Effect.flip(worker.hello()), "WorkerExitedError", {
          method: "hello",
        })
        yield* awaitGone([worker.pid])
      }).pipe(Effect.provide(PythonWorker.layer(echo))),
    ))
})
