/**
 * The PyTorch workload (`burn_p2p_python_runtime.torch_workload`) driven
 * through the real client: every method, both batch kinds, each merge policy
 * checked against its formula on artifacts written here with known values,
 * bit-for-bit artifacts and determinism across models and processes.
 *
 * Without torch the file is skipped with a message saying how to get it,
 * except under CI (CI=true or 1), where it runs and fails.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { spawnSync } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import process from "node:process"
import { type MergeCandidate, type MergePolicy, type Metrics, PythonWorker, RemoteError } from "../src/mod.ts"
import { cached, generated, patch, tempDir, testPython, wireId, writeShards } from "./helpers.ts"
import * as safetensors from "./safetensors.ts"

const torchCheck = spawnSync(testPython, ["-c", "import torch"], { encoding: "utf8" })
const torchImportable = torchCheck.status === 0
const inCI = ["true", "1"].includes((process.env.CI ?? "").toLowerCase())
const TORCH_MISSING = `PyTorch is not importable by ${testPython} (${
  (torchCheck.stderr ?? "").trim().split("\n").at(-1) || torchCheck.error?.message || `exit ${torchCheck.status}`
}): install it with \`apt-get install python3-torch\` and run the tests with /usr/bin/python3 (or set TEST_PYTHON)`
if (!torchImportable) {
  console.warn(inCI ? `${TORCH_MISSING}; CI is set, so the torch tests run and fail` : `skipped: ${TORCH_MISSING}`)
}

const WORKLOAD = "burn_p2p_python_runtime.torch_workload"
const LEARNING_RATE = 0.01
// Non-default merge settings, so each expectation below holds only if the worker read them.
const MERGE = { clip_norm: 20, trim_fraction: 0.45, ema_alpha: 0.25, root_ema_beta: 0.3 }
const config = {
  dataset_seed: 3,
  seed: 7,
  learning_rate: LEARNING_RATE,
  examples_per_microshard: 64,
  batch_size: 32,
  local_epochs: 2,
  threads: 1,
  eval_examples: 512,
  probe_seconds: 0.05,
  target_window_seconds: 7,
  ...MERGE,
}
const options: PythonWorker.Options = {
  workloadFactory: `${WORKLOAD}:make`,
  workloadConfig: config,
  pythonExecutable: testPython,
  connectTimeout: "60 seconds",
}
/** Float32 results of float64 formulas: a few roundings of values near 1. */
const TOLERANCE = 1e-6

const num = (metrics: Metrics, key: string): number => {
  const value = metrics[key]
  if (typeof value !== "number") throw new Error(`metric ${key} is ${JSON.stringify(value)}, expected a number`)
  return value
}

/** -1 when equal, else the first differing byte (or the shorter length). */
const firstDifference = (a: Uint8Array, b: Uint8Array): number => {
  const length = Math.min(a.byteLength, b.byteLength)
  for (let index = 0; index < length; index++) if (a[index] !== b[index]) return index
  return a.byteLength === b.byteLength ? -1 : length
}

/** Every tensor's name, dtype, shape and bytes (the header's metadata aside). */
const expectSameTensors = (actual: safetensors.Safetensors, expected: safetensors.Safetensors) => {
  expect([...actual.tensors.keys()].sort()).toEqual([...expected.tensors.keys()].sort())
  for (const [name, tensor] of expected.tensors) {
    const other = actual.tensors.get(name)!
    expect({ name, dtype: other.dtype, shape: other.shape }).toEqual({ name, dtype: tensor.dtype, shape: tensor.shape })
    expect({ name, firstDifference: firstDifference(other.data, tensor.data) }).toEqual({ name, firstDifference: -1 })
  }
}

/** The parameters as the workload names and shapes them, learned from a materialized model. */
type Layout = ReadonlyArray<{ readonly name: string; readonly shape: ReadonlyArray<number>; readonly size: number }>

const layoutOf = (artifact: safetensors.Safetensors): Layout =>
  [...artifact.tensors.keys()].sort().map((name) => {
    const shape = artifact.tensors.get(name)!.shape
    return { name, shape, size: shape.reduce((product, size) => product * size, 1) }
  })

const parameterCount = (layout: Layout) => layout.reduce((sum, { size }) => sum + size, 0)

/** An artifact whose parameters, flattened in name order, are `valueAt(index)` rounded to f32; returns those values. */
const writeArtifact = (path: string, layout: Layout, valueAt: (index: number) => number): Float32Array => {
  const values = Float32Array.from({ length: parameterCount(layout) }, (_, index) => valueAt(index))
  let offset = 0
  const tensors = new Map(layout.map(({ name, shape, size }) => {
    offset += size
    return [name, safetensors.f32(shape, values.subarray(offset - size, offset))]
  }))
  writeFileSync(path, safetensors.encode(tensors, { written_by: "tests/torch.test.ts" }))
  return values
}

const readArtifact = (path: string) => safetensors.decode(readFileSync(path))

/** Bit for bit, -0 and NaN payloads included. */
const expectSameValues = (actual: Float32Array, expected: Float32Array) => {
  const bytes = (values: Float32Array) => new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
  expect(firstDifference(bytes(actual), bytes(expected))).toBe(-1)
}

/** Fails with the worst coordinate unless every value is within TOLERANCE of the formula. */
const expectClose = (actual: Float32Array, expected: (index: number) => number) => {
  let worst = { index: -1, actual: 0, expected: 0, error: 0 }
  for (let index = 0; index < actual.length; index++) {
    const error = Math.abs(actual[index] - expected(index))
    if (!(error <= worst.error)) worst = { index, actual: actual[index], expected: expected(index), error }
  }
  expect(worst.error, `worst coordinate ${JSON.stringify(worst)}`).toBeLessThanOrEqual(TOLERANCE)
}

/** A value in [-1, 1] whose order across candidates changes from coordinate to coordinate. */
const wave = (k: number, index: number) => ((index * (2 * k + 3) + 5 * k) % 17) / 8 - 1

const baseValue = (index: number) => 0.05 + 0.1 * wave(99, index)

/**
 * The merge candidates: parameters `offset + spread × wave(k, ·)`. Deltas from
 * the base have L2 norms of about 12 (p0, p3) and 40 to 140 (p1, p2, p4), so
 * clip_norm 20 clips some and not others. p5 has weight zero (quality 0) and
 * values no other policy could hide, so counting it anywhere shows.
 */
const PEERS = [
  { peer: "p0", sampleWeight: 1, qualityWeight: 1, offset: 0, spread: 0.02 },
  { peer: "p1", sampleWeight: 2, qualityWeight: 0.5, offset: 0.3, spread: 0.2 },
  { peer: "p2", sampleWeight: 3, qualityWeight: 1, offset: -0.4, spread: 0.5 },
  { peer: "p3", sampleWeight: 1, qualityWeight: 2, offset: 0.1, spread: 0.05 },
  { peer: "p4", sampleWeight: 0.5, qualityWeight: 1, offset: 1, spread: 0.3 },
  { peer: "p5", sampleWeight: 4, qualityWeight: 0, offset: 50, spread: 0 },
] as const

const normalise = (weights: ReadonlyArray<number>) => {
  const total = weights.reduce((sum, weight) => sum + weight, 0)
  return weights.map((weight) => weight / total)
}

/** A model of the shared worker, released when the test's scope closes. */
const scopedModel = (acquire: Effect.Effect<string, unknown, PythonWorker>) =>
  Effect.acquireRelease(
    acquire,
    (modelId) => Effect.flatMap(PythonWorker, (worker) => Effect.ignore(worker.releaseModel(modelId))),
  )

const newModel = scopedModel(Effect.flatMap(PythonWorker, (worker) => worker.initModel("cpu")))

/** A fresh model's artifact, for names and shapes. */
const learnLayout = (dir: string) =>
  Effect.gen(function* () {
    const worker = yield* PythonWorker
    const path = join(dir, "layout.safetensors")
    yield* worker.materializeModelArtifact(yield* newModel, path)
    return layoutOf(readArtifact(path))
  })

/** The base and the PEERS candidates, written from TypeScript and loaded into models of the shared worker. */
const mergeFixture = Effect.gen(function* () {
  const worker = yield* PythonWorker
  const dir = yield* tempDir
  const layout = yield* learnLayout(dir)
  const load = (name: string, valueAt: (index: number) => number) =>
    Effect.gen(function* () {
      const path = join(dir, `${name}.safetensors`)
      const values = writeArtifact(path, layout, valueAt)
      const modelId = yield* newModel
      yield* worker.loadModelArtifact(modelId, path)
      return { modelId, path, values }
    })
  const base = yield* load("base", baseValue)
  const candidates = yield* Effect.forEach(PEERS, (peer, k) =>
    Effect.map(
      load(peer.peer, (index) => peer.offset + peer.spread * wave(k, index)),
      (model) => ({
        ...model,
        peer,
        candidate: {
          peerId: peer.peer,
          headId: `head-${peer.peer}`,
          artifactId: `artifact-${peer.peer}`,
          modelId: model.modelId,
          sampleWeight: peer.sampleWeight,
          qualityWeight: peer.qualityWeight,
        } satisfies MergeCandidate,
      }),
    ))
  /** Merges all candidates; the new model's parameters (it is released with the scope). */
  const merge = (policy: MergePolicy) =>
    Effect.gen(function* () {
      const merged = yield* scopedModel(
        Effect.flatMap(
          worker.mergeCandidateModels(base.modelId, candidates.map(({ candidate }) => candidate), policy),
          Option.match({
            onNone: () => Effect.dieMessage(`${JSON.stringify(policy)} merged nothing`),
            onSome: Effect.succeed,
          }),
        ),
      )
      const path = join(dir, `merged-${JSON.stringify(policy).replace(/\W/g, "")}.safetensors`)
      yield* worker.materializeModelArtifact(merged, path)
      return { modelId: merged, values: safetensors.flatF32(readArtifact(path)) }
    })
  const materialize = (modelId: string, name: string) =>
    Effect.gen(function* () {
      const path = join(dir, `${name}.safetensors`)
      yield* worker.materializeModelArtifact(modelId, path)
      return safetensors.flatF32(readArtifact(path))
    })
  return { worker, dir, layout, base, candidates, merge, materialize }
})

const remoteError = <A, E>(effect: Effect.Effect<A, E, PythonWorker>) =>
  Effect.gen(function* () {
    const error = yield* Effect.flip(effect)
    if (!(error instanceof RemoteError)) throw new Error(`expected a RemoteError, got ${String(error)}`)
    return error
  })

describe.skipIf(!torchImportable && !inCI)(
  torchImportable || inCI ? "torch workload" : `torch workload (skipped: ${TORCH_MISSING})`,
  () => {
    it("PyTorch is importable by the test Python", () => {
      expect(torchImportable, TORCH_MISSING).toBe(true)
    })

    layer(PythonWorker.layer(options), { excludeTestServices: true, timeout: "60 seconds" })("one worker", (it) => {
      it.effect("hello names the workload", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          const hello = yield* worker.hello()
          expect(hello.protocolVersion).toBe(1)
          expect(hello.workloadName).toBe("torch-spiral-mlp")
          expect(worker.info.workloadName).toBe("torch-spiral-mlp")
        }))

      it.effect("capabilityProbe: the cpu, a positive throughput, the configured target window", () =>
        Effect.gen(function* () {
          const probe = yield* (yield* PythonWorker).capabilityProbe()
          expect(probe.runtimeDevice).toBe("cpu")
          expect(probe.capability.preferredBackends).toEqual(["cpu"])
          expect(probe.capability.workUnitsPerSecond).toBeGreaterThan(0)
          expect(probe.capability.targetWindowSeconds).toBe(7)
        }))

      it.scoped("initModel auto and cpu: distinct models on the cpu, the same genesis parameters", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          const dir = yield* tempDir
          const auto = yield* scopedModel(worker.initModel("auto"))
          expect((yield* worker.capabilityProbe()).runtimeDevice).toBe("cpu")
          const cpu = yield* scopedModel(worker.initModel("cpu"))
          expect(cpu).not.toBe(auto)
          yield* worker.materializeModelArtifact(auto, join(dir, "auto.safetensors"))
          yield* worker.materializeModelArtifact(cpu, join(dir, "cpu.safetensors"))
          const genesis = readArtifact(join(dir, "cpu.safetensors"))
          expectSameTensors(readArtifact(join(dir, "auto.safetensors")), genesis)
          // features 32 -> 128 -> 128 -> classes 8.
          expect(layoutOf(genesis)).toEqual([
            { name: "hidden0.bias", shape: [128], size: 128 },
            { name: "hidden0.weight", shape: [128, 32], size: 4096 },
            { name: "hidden1.bias", shape: [128], size: 128 },
            { name: "hidden1.weight", shape: [128, 128], size: 16384 },
            { name: "output.bias", shape: [8], size: 8 },
            { name: "output.weight", shape: [8, 128], size: 1024 },
          ])
        }))

      it.scoped("trainWindow on micro_epoch batches: the window's metrics, steps accumulating", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          const model = yield* newModel
          const metrics = yield* worker.trainWindow(model, [generated([0, 1], 1), generated([2], 1)])
          // 3 microshards of 64 examples, 2 local epochs of 6 minibatches of 32.
          expect(metrics).toMatchObject({
            examples: 192,
            steps: 12,
            epochs: 2,
            total_steps: 12,
            learning_rate: LEARNING_RATE,
            device: "cpu",
          })
          expect(Number.isFinite(num(metrics, "loss"))).toBe(true)
          expect(num(metrics, "accuracy")).toBeGreaterThanOrEqual(0)
          expect(num(metrics, "accuracy")).toBeLessThanOrEqual(1)
          const next = yield* worker.trainWindow(model, [generated([3], 1)])
          expect(next).toMatchObject({ examples: 64, steps: 4, total_steps: 16 })
          const unsupported = yield* remoteError(
            worker.trainWindow(model, [{ ...generated([4], 1), pipelineKind: "indexed-dataset" }]),
          )
          expect(unsupported.errorType).toBe("ValueError")
          expect(unsupported.remoteMessage).toContain("indexed-dataset")
        }))

      it.scoped("cached_microshard_group of write-shards files trains exactly like the same micro_epoch", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          const dir = yield* tempDir
          const ordinals = [0, 1, 2]
          const paths = yield* writeShards(WORKLOAD, config, join(dir, "shards"), ordinals, 5)
          expect(paths).toHaveLength(3)
          const shard = readArtifact(paths[0])
          expect(shard.tensors.get("x")).toMatchObject({ dtype: "F32", shape: [64, 32] })
          expect(shard.tensors.get("y")).toMatchObject({ dtype: "I64", shape: [64] })

          const fromFiles = yield* newModel
          const fromSeeds = yield* newModel
          const filesMetrics = yield* worker.trainWindow(fromFiles, [cached(paths, ordinals, 5)])
          const seedsMetrics = yield* worker.trainWindow(fromSeeds, [generated(ordinals, 5)])
          expect(filesMetrics).toMatchObject({ examples: 192, steps: 12 })
          expect(filesMetrics).toEqual(seedsMetrics)
          yield* worker.materializeModelArtifact(fromFiles, join(dir, "files.safetensors"))
          yield* worker.materializeModelArtifact(fromSeeds, join(dir, "seeds.safetensors"))
          expectSameTensors(readArtifact(join(dir, "files.safetensors")), readArtifact(join(dir, "seeds.safetensors")))
        }))

      it.scoped("evaluate Train, Validation and Test; training lowers the validation loss", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          const model = yield* newModel
          const before = yield* Effect.forEach(
            ["Train", "Validation", "Test"] as const,
            (split) => worker.evaluate(model, split),
          )
          for (const [index, split] of ["Train", "Validation", "Test"].entries()) {
            expect(before[index]).toMatchObject({ split, examples: 512 })
            expect(Number.isFinite(num(before[index], "loss"))).toBe(true)
            expect(num(before[index], "accuracy")).toBeGreaterThanOrEqual(0)
            expect(num(before[index], "accuracy")).toBeLessThanOrEqual(1)
          }
          // Held-out splits are different data: the same model scores differently on them.
          expect(num(before[1], "loss")).not.toBe(num(before[2], "loss"))
          for (const window of [0, 1, 2]) {
            yield* worker.trainWindow(model, [generated([8 * window, 8 * window + 1, 8 * window + 2], 11)])
          }
          const after = yield* worker.evaluate(model, "Validation")
          expect(num(after, "loss")).toBeLessThan(num(before[1], "loss"))
          expect(num(after, "accuracy")).toBeGreaterThan(num(before[1], "accuracy"))
        }))

      it.scoped("evaluate rejects a Custom split with a ValueError naming it", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          const error = yield* remoteError(worker.evaluate(yield* newModel, { Custom: "holdout-b" }))
          expect(error.method).toBe("evaluate")
          expect(error.errorType).toBe("ValueError")
          expect(error.remoteMessage).toContain("Custom(holdout-b)")
        }))

      it.scoped("a trained model's artifact loads into another model bit for bit", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          const dir = yield* tempDir
          const trained = yield* newModel
          yield* worker.trainWindow(trained, [generated([0, 1], 2)])
          const first = join(dir, "first.safetensors")
          yield* worker.materializeModelArtifact(trained, first)
          const copy = yield* newModel
          yield* worker.loadModelArtifact(copy, first)
          const second = join(dir, "second.safetensors")
          yield* worker.materializeModelArtifact(copy, second)
          expect(firstDifference(readFileSync(second), readFileSync(first))).toBe(-1)
          const artifact = readArtifact(first)
          expect(artifact.metadata).toMatchObject({ workload: "torch-spiral-mlp" })
          // The trained parameters differ from the genesis ones that `copy` started from.
          const genesis = join(dir, "genesis.safetensors")
          yield* worker.materializeModelArtifact(yield* newModel, genesis)
          expect(firstDifference(readFileSync(genesis), readFileSync(first))).not.toBe(-1)
        }))

      it.scoped("an artifact written here comes back bit for bit, -0, subnormals and extremes included", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          const dir = yield* tempDir
          const layout = yield* learnLayout(dir)
          const special = [-0, 1.4e-45, -1.4e-45, 3.4028234663852886e38, -3.4028234663852886e38, 1.1754943508222875e-38]
          const written = join(dir, "written.safetensors")
          writeArtifact(written, layout, (index) => index < special.length ? special[index] : Math.sin(index) * 1e3)
          const model = yield* newModel
          yield* worker.loadModelArtifact(model, written)
          const back = join(dir, "back.safetensors")
          yield* worker.materializeModelArtifact(model, back)
          expectSameTensors(readArtifact(back), readArtifact(written))
          expect(Object.is(safetensors.flatF32(readArtifact(back))[0], -0)).toBe(true)

          const misfit = join(dir, "misfit.safetensors")
          writeFileSync(misfit, safetensors.encode(new Map([["output.bias", safetensors.f32([3], [1, 2, 3])]])))
          const error = yield* remoteError(worker.loadModelArtifact(model, misfit))
          expect(error.errorType).toBe("ValueError")
          expect(error.remoteMessage).toContain("does not fit this model")
        }))

      it.scoped("same seed and batches: identical metrics and artifacts across models and across processes", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          const dir = yield* tempDir
          const batches = [generated([0, 1], 9), generated([2, 3], 9)]
          const trainAndSave = (service: PythonWorker.Service, name: string) =>
            Effect.gen(function* () {
              const model = yield* service.initModel("cpu")
              const metrics = yield* service.trainWindow(model, batches)
              const path = join(dir, `${name}.safetensors`)
              yield* service.materializeModelArtifact(model, path)
              yield* service.releaseModel(model)
              return { metrics, bytes: readFileSync(path) }
            })
          const first = yield* trainAndSave(worker, "first")
          const second = yield* trainAndSave(worker, "second")
          expect(second.metrics).toEqual(first.metrics)
          expect(firstDifference(second.bytes, first.bytes)).toBe(-1)

          const other = Context.get(yield* Layer.build(PythonWorker.layer(options)), PythonWorker)
          expect(other.pid).not.toBe(worker.pid)
          const elsewhere = yield* trainAndSave(other, "elsewhere")
          expect(elsewhere.metrics).toEqual(first.metrics)
          expect(firstDifference(elsewhere.bytes, first.bytes)).toBe(-1)
        }))

      it.scoped("applyPatch: learning_rate is Applied to live and new models; other values are Rejected by name", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          yield* Effect.addFinalizer(() => Effect.ignore(worker.applyPatch(patch({ learning_rate: LEARNING_RATE }))))
          const live = yield* newModel
          expect(yield* worker.applyPatch(patch({ learning_rate: 0.005 }))).toBe("Applied")
          expect(yield* worker.trainWindow(live, [generated([0], 3)])).toMatchObject({ learning_rate: 0.005 })
          // A JavaScript 2.0 reaches Python as the int 2; it counts as a rate.
          expect(yield* worker.applyPatch(patch({ learning_rate: 2.0 }))).toBe("Applied")
          expect(yield* worker.trainWindow(yield* newModel, [generated([0], 3)])).toMatchObject({ learning_rate: 2 })

          const momentum = yield* worker.applyPatch(patch({ momentum: 0.9 }))
          expect(momentum).toEqual({ Rejected: expect.stringContaining("momentum") })
          const notANumber = yield* worker.applyPatch(patch({ learning_rate: "fast" }))
          expect(notANumber).toEqual({ Rejected: expect.stringContaining("learning_rate") })
          expect(yield* worker.trainWindow(live, [generated([1], 3)])).toMatchObject({ learning_rate: 2 })
        }))

      it.scoped("WeightedMean: Σ wₖθₖ, wₖ = sample × quality normalised; inputs untouched", () =>
        Effect.gen(function* () {
          const { base, candidates, materialize, merge } = yield* mergeFixture
          const merged = yield* merge("WeightedMean")
          const weights = normalise(candidates.map(({ peer }) => peer.sampleWeight * peer.qualityWeight))
          expectClose(
            merged.values,
            (index) => candidates.reduce((sum, { values }, k) => sum + weights[k] * values[index], 0),
          )
          expectSameValues(yield* materialize(base.modelId, "base-after"), base.values)
          for (const candidate of candidates) {
            expectSameValues(yield* materialize(candidate.modelId, `${candidate.peer.peer}-after`), candidate.values)
          }
        }))

      it.scoped("NormClippedWeightedMean: base + Σ wₖ min(1, clip_norm/‖δₖ‖) δₖ", () =>
        Effect.gen(function* () {
          const { base, candidates, merge } = yield* mergeFixture
          const merged = yield* merge("NormClippedWeightedMean")
          const weights = normalise(candidates.map(({ peer }) => peer.sampleWeight * peer.qualityWeight))
          const deltas = candidates.map(({ values }) => values.map((value, index) => value - base.values[index]))
          const scales = deltas.map((delta) => {
            const norm = Math.sqrt(delta.reduce((sum, value) => sum + value * value, 0))
            return norm > 0 ? Math.min(1, MERGE.clip_norm / norm) : 1
          })
          // The premise: among weighted candidates, some are clipped and some are not.
          const weighted = scales.filter((_, k) => weights[k] > 0)
          expect(weighted.some((scale) => scale < 1) && weighted.some((scale) => scale === 1)).toBe(true)
          expectClose(
            merged.values,
            (index) =>
              base.values[index] + deltas.reduce((sum, delta, k) => sum + weights[k] * scales[k] * delta[index], 0),
          )
        }))

      it.scoped("TrimmedMean: per coordinate, weighted candidates only, floor(trim_fraction × n) cut from each end", () =>
        Effect.gen(function* () {
          const { candidates, merge } = yield* mergeFixture
          const merged = yield* merge("TrimmedMean")
          const kept = candidates.filter(({ peer }) => peer.sampleWeight * peer.qualityWeight > 0)
          const count = kept.length
          const trim = Math.min(Math.max(Math.floor(MERGE.trim_fraction * count), count >= 3 ? 1 : 0), (count - 1) >> 1)
          // 5 kept, trim 2: the per-coordinate median (the default 0.2 would keep 3).
          expect([count, trim]).toEqual([5, 2])
          expectClose(merged.values, (index) => {
            const middle = kept.map(({ values }) => values[index]).sort((a, b) => a - b).slice(trim, count - trim)
            return middle.reduce((sum, value) => sum + value, 0) / middle.length
          })
        }))

      it.scoped("Ema and QualityWeightedEma: (1 − ema_alpha) base + ema_alpha Σ wₖθₖ", () =>
        Effect.gen(function* () {
          const { base, candidates, merge } = yield* mergeFixture
          const alpha = MERGE.ema_alpha
          const expectEma = (values: Float32Array, weights: ReadonlyArray<number>) =>
            expectClose(values, (index) =>
              (1 - alpha) * base.values[index] +
              alpha * candidates.reduce((sum, candidate, k) => sum + weights[k] * candidate.values[index], 0))
          expectEma(
            (yield* merge("Ema")).values,
            normalise(candidates.map(({ peer }) => peer.sampleWeight * peer.qualityWeight)),
          )
          // Quality alone: the sample weights (which differ) must not count.
          expectEma(
            (yield* merge("QualityWeightedEma")).values,
            normalise(candidates.map(({ peer }) => peer.qualityWeight)),
          )
        }))

      it.scoped("a Custom merge policy is a RemoteError naming it; no candidates or zero weights merge nothing", () =>
        Effect.gen(function* () {
          const { base, candidates, worker } = yield* mergeFixture
          const all = candidates.map(({ candidate }) => candidate)
          const custom = yield* remoteError(worker.mergeCandidateModels(base.modelId, all, { Custom: "FedProx" }))
          expect(custom.method).toBe("merge_candidate_models")
          expect(custom.errorType).toBe("ValueError")
          expect(custom.remoteMessage).toContain("Custom(FedProx)")
          const customEma = yield* remoteError(
            worker.applySingleRootEma(base.modelId, candidates[0].modelId, { Custom: "FedProx" }),
          )
          expect(customEma.remoteMessage).toContain("Custom(FedProx)")

          expect(yield* worker.mergeCandidateModels(base.modelId, [], "WeightedMean")).toEqual(Option.none())
          const weightless = all.map((candidate) => ({ ...candidate, sampleWeight: 0 }))
          expect(yield* worker.mergeCandidateModels(base.modelId, weightless, "Ema")).toEqual(Option.none())
        }))

      it.scoped("applySingleRootEma: merged ← root_ema_beta base + (1 − root_ema_beta) merged, in place", () =>
        Effect.gen(function* () {
          const { base, materialize, merge, worker } = yield* mergeFixture
          const merged = yield* merge("WeightedMean")
          const result = yield* worker.applySingleRootEma(base.modelId, merged.modelId, "WeightedMean")
          expect(result).toBe(merged.modelId)
          const beta = MERGE.root_ema_beta
          expectClose(
            yield* materialize(merged.modelId, "root-ema"),
            (index) => beta * base.values[index] + (1 - beta) * merged.values[index],
          )
        }))

      it.scoped("reconcileCanonicalModel: Replace keeps the canonical model; RootEma blends w canonical + (1 − w) local", () =>
        Effect.gen(function* () {
          const { candidates, materialize, worker } = yield* mergeFixture
          const [local, canonical] = candidates
          const replaced = yield* worker.reconcileCanonicalModel(local.modelId, canonical.modelId, "Replace")
          expect(replaced).toBe(canonical.modelId)
          expectSameValues(yield* materialize(canonical.modelId, "replaced"), canonical.values)

          const weight = 0.6
          const blended = yield* worker.reconcileCanonicalModel(local.modelId, canonical.modelId, {
            RootEma: { canonicalWeight: weight },
          })
          expect(blended).toBe(canonical.modelId)
          expectClose(
            yield* materialize(canonical.modelId, "blended"),
            (index) => weight * canonical.values[index] + (1 - weight) * local.values[index],
          )
          // The local model is only read.
          expectSameValues(yield* materialize(local.modelId, "local-after"), local.values)
        }))

      it.effect("releaseModel: the id is gone for later calls; releasing it again is not an error", () =>
        Effect.gen(function* () {
          const worker = yield* PythonWorker
          const model = yield* worker.initModel("cpu")
          yield* worker.releaseModel(model)
          const error = yield* remoteError(worker.evaluate(model, "Test"))
          expect(error.remoteMessage).toContain(`unknown model id '${wireId(model)}'`)
          yield* worker.releaseModel(model)
        }))
    })
  },
)
