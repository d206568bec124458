/**
 * Our client driving the reference worker (the `reference_compat_worker`
 * stand-in: no error_type, `{"ok": true}` acks, Nagle-delayed answers) with
 * the reference workload: every method answers as our own worker does.
 *
 * Errors are matched with `expectTagged` (helpers.ts), which matches a spread
 * copy: an error failed inside an `Effect.fn` span is a Proxy.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { join } from "node:path"
import { PythonWorker } from "../src/mod.ts"
import {
  awaitGone,
  awkwardExceptionsKeepTypeAndMessage,
  cached,
  candidate,
  expectTagged,
  fixturesRoot,
  generated,
  isAlive,
  patch,
  tempDir,
  testPython,
  writeShards,
} from "./helpers.ts"

const config = { dataset_seed: 2, seed: 9, examples_per_microshard: 16 }
const ours: PythonWorker.Options = {
  workloadFactory: "burn_p2p_python_runtime.reference_workload:make",
  workloadConfig: config,
  pythonExecutable: testPython,
}
const reference: PythonWorker.Options = {
  ...ours,
  workerModule: "reference_compat_worker",
  moduleSearchRoots: [fixturesRoot],
}

/**
 * Every model method once, in a fixed order on a fresh worker; returns what a
 * second worker must reproduce. Asserts the ids each method must hand back.
 */
const everyMethod = (artifact: string, shardPaths: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const worker = yield* PythonWorker
    const a = yield* worker.initModel("cpu")
    const b = yield* worker.initModel("cpu")
    const trainA = yield* worker.trainWindow(a, [generated([0, 1], 0), generated([5], 3)])
    const trainB = yield* worker.trainWindow(b, [cached(shardPaths, [0, 1])])
    const evaluations = yield* Effect.forEach(["Train", "Validation", "Test"] as const, (split) =>
      worker.evaluate(a, split))

    yield* worker.materializeModelArtifact(a, artifact)
    const c = yield* worker.initModel("cpu")
    yield* worker.loadModelArtifact(c, artifact)
    expect(yield* worker.evaluate(c, "Validation")).toEqual(evaluations[1])

    const merged = Option.getOrThrow(
      yield* worker.mergeCandidateModels(c, [candidate(a, 1), candidate(b, 3)], "WeightedMean"),
    )
    expect([a, b, c]).not.toContain(merged)
    expect(yield* worker.mergeCandidateModels(c, [], "WeightedMean")).toEqual(Option.none())
    expect(yield* worker.applySingleRootEma(a, merged, "Ema")).toBe(merged)
    expect(yield* worker.reconcileCanonicalModel(a, b, { RootEma: { canonicalWeight: 0.25 } })).toBe(b)
    expect(yield* worker.reconcileCanonicalModel(b, c, "Replace")).toBe(c)
    const finals = yield* Effect.forEach([merged, b, c], (modelId) =>
      worker.evaluate(modelId, "Validation"))

    yield* worker.releaseModel(a)
    const released = yield* Effect.flip(worker.evaluate(a, "Validation"))
    expectTagged(released, "RemoteError", { method: "evaluate" })
    return { trainA, trainB, evaluations, finals }
  })

layer(PythonWorker.layer(reference), { excludeTestServices: true })("our client, the reference worker", (it) => {
  it.effect("hello and capabilityProbe", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      expect(yield* worker.hello()).toMatchObject({ protocolVersion: 1, workloadName: "reference-softmax" })
      expect(worker.info.workloadName).toBe("reference-softmax")
      const probe = yield* worker.capabilityProbe()
      expect(probe.runtimeDevice).toBe("cpu")
      expect(probe.capability).toMatchObject({ preferredBackends: ["cpu"], targetWindowSeconds: 1 })
      expect(probe.capability.workUnitsPerSecond).toBeGreaterThan(0)
    }))

  it.effect("applyPatch: Applied and Rejected", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      expect(yield* worker.applyPatch(patch({ learning_rate: 0.2 }))).toBe("Applied")
      expect(yield* worker.applyPatch(patch({ momentum: 0.9 }))).toEqual({
        Rejected: expect.stringContaining("momentum"),
      })
    }))

  it.effect("a Python exception is a RemoteError whose type is recovered from the error text", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const unknown = yield* Effect.flip(worker.evaluate("no-such-model", "Validation"))
      expectTagged(unknown, "RemoteError", {
        method: "evaluate",
        errorType: "KeyError",
        remoteMessage: "'no-such-model'",
        traceback: expect.stringContaining("Traceback (most recent call last)"),
      })
      const modelId = yield* worker.initModel("cpu")
      const custom = yield* Effect.flip(worker.evaluate(modelId, { Custom: "holdout" }))
      expectTagged(custom, "RemoteError", {
        errorType: "ValueError",
        remoteMessage: expect.stringContaining("custom evaluation split 'holdout' is not supported"),
      })
      expect((yield* worker.evaluate(modelId, "Test")).split).toBe("Test")
    }))
})

describe("our client, the reference worker, one worker per test", () => {
  it.scopedLive("every method answers as our own worker does, and the process is gone after", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const shardPaths = yield* writeShards("burn_p2p_python_runtime.reference_workload", config, dir, [0, 1])
      let pid = 0
      const fromReference = yield* Effect.gen(function* () {
        const worker = yield* PythonWorker
        pid = worker.pid
        expect(isAlive(pid)).toBe(true)
        return yield* everyMethod(join(dir, "reference.safetensors"), shardPaths)
      }).pipe(Effect.provide(PythonWorker.layer(reference)))
      yield* awaitGone([pid])

      const fromOurs = yield* everyMethod(join(dir, "ours.safetensors"), shardPaths).pipe(
        Effect.provide(PythonWorker.layer(ours)),
      )
      expect(fromReference).toEqual(fromOurs)
      expect(fromReference.trainA).toMatchObject({ examples: 48, learning_rate: 0.2 })
    }))

  it.live("exceptions of awkward shapes keep their type and whole message without error_type", () =>
    awkwardExceptionsKeepTypeAndMessage.pipe(
      Effect.provide(PythonWorker.layer({ ...reference, workloadFactory: "raising_workload:make" })),
    ))

  it.live("a factory that raises: WorkerConnectError with the uncaught exception's exit status and traceback", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        Effect.provide(
          PythonWorker,
          PythonWorker.layer({ ...reference, workloadFactory: "echo_workload:make_raising" }),
        ),
      )
      expectTagged(error, "WorkerConnectError", {
        reason: "ProcessExited",
        exitCode: 1,
        stderrTail: expect.stringContaining("ValueError: bad config"),
      })
      if (error._tag === "WorkerConnectError") yield* awaitGone([error.pid!])
    }))
})
