/**
 * The PythonWorker service against the reference workload: every method, both
 * batch kinds, concurrent callers, and the process gone once the scope closes.
 *
 * Errors are matched with `expectTagged` (helpers.ts), which matches a spread
 * copy: an error failed inside an `Effect.fn` span is a Proxy.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { spawnSync } from "node:child_process"
import { existsSync, readFileSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { PythonWorker } from "../src/mod.ts"
import {
  awaitGone,
  cached,
  candidate,
  expectTagged,
  generated,
  isAlive,
  patch,
  tempDir,
  testPython,
  wireId,
  writeShards,
} from "./helpers.ts"

const config = { dataset_seed: 7, seed: 3, examples_per_microshard: 32 }
const options: PythonWorker.Options = {
  workloadFactory: "burn_p2p_python_runtime.reference_workload:make",
  workloadConfig: config,
  pythonExecutable: testPython,
}
const splits = ["Train", "Validation", "Test"] as const

/** A fresh model trained on four microshards of `seed`. */
const trained = (seed: number) =>
  Effect.gen(function* () {
    const worker = yield* PythonWorker
    const modelId = yield* worker.initModel("cpu")
    yield* worker.trainWindow(modelId, [generated([0, 1, 2, 3], seed)])
    return modelId
  })

const validation = (modelId: string) => Effect.flatMap(PythonWorker, (worker) => worker.evaluate(modelId, "Validation"))

layer(PythonWorker.layer(options), { excludeTestServices: true })("PythonWorker (reference workload)", (it) => {
  it.effect("hello answers protocol 1 and the workload name, as checked at start", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const hello = yield* worker.hello()
      expect(hello.protocolVersion).toBe(1)
      expect(hello.workloadName).toBe("reference-softmax")
      expect(worker.info).toEqual(hello)
      expect(isAlive(worker.pid)).toBe(true)
    }))

  it.effect("capabilityProbe reports the CPU and a measured throughput", () =>
    Effect.gen(function* () {
      const probe = yield* (yield* PythonWorker).capabilityProbe()
      expect(probe.runtimeDevice).toBe("cpu")
      expect(probe.capability.preferredBackends).toEqual(["cpu"])
      expect(probe.capability.workUnitsPerSecond).toBeGreaterThan(0)
      expect(probe.capability.targetWindowSeconds).toBe(1)
    }))

  it.effect("initModel mints a new id per model", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const ids = yield* Effect.all([worker.initModel("cpu"), worker.initModel("auto"), worker.initModel("cpu")])
      expect(new Set(ids).size).toBe(3)
    }))

  it.scoped("trainWindow: shard files and the same microshards generated in memory train identically", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const paths = yield* writeShards("burn_p2p_python_runtime.reference_workload", config, yield* tempDir, [0, 1])
      expect(paths).toHaveLength(2)
      const fromFiles = yield* worker.initModel("cpu")
      const fromSeeds = yield* worker.initModel("cpu")
      const fileMetrics = yield* worker.trainWindow(fromFiles, [cached(paths, [0, 1])])
      const seedMetrics = yield* worker.trainWindow(fromSeeds, [generated([0, 1], 0)])
      expect(fileMetrics).toMatchObject({ examples: 64, steps: 2, learning_rate: 0.2 })
      expect(fileMetrics.loss).toBeGreaterThan(0)
      expect(fileMetrics.accuracy).toBeGreaterThanOrEqual(0)
      expect(fileMetrics.accuracy).toBeLessThanOrEqual(1)
      expect(seedMetrics).toEqual(fileMetrics)
      expect(yield* validation(fromFiles)).toEqual(yield* validation(fromSeeds))
    }))

  it.effect("evaluate answers on each split; a Custom split is refused by name", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const modelId = yield* worker.initModel("cpu")
      for (const split of splits) {
        const metrics = yield* worker.evaluate(modelId, split)
        // Train scores 4 training microshards of 32 examples; the held-out splits have 512 each.
        expect(metrics).toMatchObject({ split, examples: split === "Train" ? 128 : 512 })
        expect(metrics.loss).toBeGreaterThan(0)
        expect(metrics.accuracy).toBeGreaterThanOrEqual(0)
        expect(metrics.accuracy).toBeLessThanOrEqual(1)
      }
      const error = yield* Effect.flip(worker.evaluate(modelId, { Custom: "holdout-b" }))
      expectTagged(error, "RemoteError", {
        method: "evaluate",
        errorType: "ValueError",
        remoteMessage: expect.stringContaining("'holdout-b'"),
      })
    }))

  it.effect("loss goes down over a few windows on a fixed seed", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const modelId = yield* worker.initModel("cpu")
      const before = yield* validation(modelId)
      const windows = []
      for (let window = 0; window < 5; window++) {
        const ordinals = [0, 1, 2, 3].map((offset) => window * 4 + offset)
        windows.push(yield* worker.trainWindow(modelId, [generated(ordinals, 11)]))
      }
      const after = yield* validation(modelId)
      expect(windows[4].loss).toBeLessThan(windows[0].loss as number)
      expect(after.loss).toBeLessThan(before.loss as number)
      expect(after.accuracy).toBeGreaterThan(before.accuracy as number)
    }))

  it.effect("applyPatch: learning_rate is Applied and used by the next window; an unknown key is Rejected", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const modelId = yield* worker.initModel("cpu")
      expect(yield* worker.applyPatch(patch({ learning_rate: 0.05 }))).toBe("Applied")
      const metrics = yield* worker.trainWindow(modelId, [generated([0], 1)])
      expect(metrics.learning_rate).toBe(0.05)

      const rejected = yield* worker.applyPatch(patch({ momentum: 0.9 }))
      expect(rejected).toEqual({ Rejected: expect.stringContaining("momentum") })
      // A JavaScript 1.0 reaches Python as the int 1, which must still count as a rate.
      expect(yield* worker.applyPatch(patch({ learning_rate: 1.0 }))).toBe("Applied")
      expect((yield* worker.trainWindow(modelId, [generated([1], 1)])).learning_rate).toBe(1)
    }).pipe(
      // Later tests in this block train at the configured rate.
      Effect.ensuring(
        Effect.orDie(Effect.flatMap(PythonWorker, (worker) => worker.applyPatch(patch({ learning_rate: 0.2 })))),
      ),
    ))

  it.scoped("materialize then load into a fresh model gives the same evaluate metrics", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const artifact = join(yield* tempDir, "model.safetensors")
      const source = yield* trained(5)
      yield* worker.materializeModelArtifact(source, artifact)
      expect(statSync(artifact).size).toBeGreaterThan(0)

      const fresh = yield* worker.initModel("cpu")
      const freshMetrics = yield* validation(fresh)
      const sourceMetrics = yield* validation(source)
      expect(freshMetrics).not.toEqual(sourceMetrics)
      yield* worker.loadModelArtifact(fresh, artifact)
      expect(yield* validation(fresh)).toEqual(sourceMetrics)
      expect(yield* worker.evaluate(fresh, "Train")).toEqual(yield* worker.evaluate(source, "Train"))
    }))

  it.effect("mergeCandidateModels makes a new model, leaves its inputs alone, and gives none without candidates", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const base = yield* worker.initModel("cpu")
      const a = yield* trained(1)
      const b = yield* trained(2)
      const aBefore = yield* validation(a)

      const merged = yield* worker.mergeCandidateModels(
        base,
        [candidate(a, 10, 1), candidate(b, 30, 0.5)],
        "WeightedMean",
      )
      expect(Option.isSome(merged)).toBe(true)
      const mergedId = Option.getOrThrow(merged)
      expect([base, a, b]).not.toContain(mergedId)
      expect((yield* validation(mergedId)).examples).toBe(512)
      expect(yield* validation(a)).toEqual(aBefore)

      // The weighted mean of one candidate is that candidate.
      const alone = yield* worker.mergeCandidateModels(base, [candidate(a, 2, 0.5)], "QualityWeightedEma")
      expect(yield* validation(Option.getOrThrow(alone))).toEqual(aBefore)

      expect(yield* worker.mergeCandidateModels(base, [], "WeightedMean")).toEqual(Option.none())
      expect(yield* worker.mergeCandidateModels(base, [candidate(a, 0, 1)], "Ema")).toEqual(Option.none())
    }))

  it.effect("applySingleRootEma updates the merged model in place and returns its id", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const base = yield* trained(3)
      const merged = yield* worker.initModel("cpu")
      const baseBefore = yield* validation(base)
      const mergedBefore = yield* validation(merged)
      expect(yield* worker.applySingleRootEma(base, merged, "Ema")).toBe(merged)
      expect(yield* validation(merged)).not.toEqual(mergedBefore)
      expect(yield* validation(base)).toEqual(baseBefore)
    }))

  it.effect("reconcileCanonicalModel: Replace keeps the canonical model, RootEma blends by canonical_weight", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const local = yield* trained(4)
      const canonical = yield* worker.initModel("cpu")
      const localMetrics = yield* validation(local)
      const canonicalMetrics = yield* validation(canonical)

      expect(yield* worker.reconcileCanonicalModel(local, canonical, "Replace")).toBe(canonical)
      expect(yield* validation(canonical)).toEqual(canonicalMetrics)
      expect(yield* worker.reconcileCanonicalModel(local, canonical, { RootEma: { canonicalWeight: 1 } })).toBe(
        canonical,
      )
      expect(yield* validation(canonical)).toEqual(canonicalMetrics)
      // Weight 0: the canonical model becomes the local one.
      expect(yield* worker.reconcileCanonicalModel(local, canonical, { RootEma: { canonicalWeight: 0 } })).toBe(
        canonical,
      )
      expect(yield* validation(canonical)).toEqual(localMetrics)
      expect(yield* validation(local)).toEqual(localMetrics)
    }))

  it.effect("releaseModel frees the model: evaluating it afterwards is an UnknownModelError", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const modelId = yield* worker.initModel("cpu")
      yield* worker.releaseModel(modelId)
      const error = yield* Effect.flip(worker.evaluate(modelId, "Validation"))
      expectTagged(error, "RemoteError", {
        method: "evaluate",
        errorType: "UnknownModelError",
        remoteMessage: expect.stringContaining(`'${wireId(modelId)}'`),
      })
      // Releasing an id that is already gone is not an error.
      yield* worker.releaseModel(modelId)
    }))

  it.effect("50 concurrent callers each get their own answer", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const modelId = yield* worker.initModel("cpu")
      // Even callers train on i + 1 examples, odd ones evaluate a split: each answer names its request.
      const calls = Array.from({ length: 50 }, (_, i) =>
        i % 2 === 0
          ? Effect.map(
            worker.trainWindow(modelId, [generated([i], 1, { examples_per_microshard: i + 1 })]),
            (metrics) => metrics.examples,
          )
          : Effect.map(worker.evaluate(modelId, splits[i % 3]), (metrics) => metrics.split))
      const answers = yield* Effect.all(calls, { concurrency: "unbounded" })
      expect(answers).toEqual(Array.from({ length: 50 }, (_, i) => i % 2 === 0 ? i + 1 : splits[i % 3]))
    }))
})

describe("PythonWorker lifecycle", () => {
  const workerPid = Effect.gen(function* () {
    const worker = yield* PythonWorker
    expect(isAlive(worker.pid)).toBe(true)
    yield* worker.hello()
    return worker.pid
  })

  it.live("the worker process is gone once its scope closes", () =>
    Effect.gen(function* () {
      const pid = yield* workerPid.pipe(Effect.provide(PythonWorker.layer(options)))
      yield* awaitGone([pid])
    }))

  it.live("the worker process is gone when the scope closes on a failure", () =>
    Effect.gen(function* () {
      let pid = 0
      const exit = yield* workerPid.pipe(
        Effect.tap((alive) => {
          pid = alive
        }),
        Effect.zipRight(Effect.fail("caller failed" as const)),
        Effect.provide(PythonWorker.layer(options)),
        Effect.exit,
      )
      expect(exit).toEqual(Exit.fail("caller failed"))
      expect(pid).toBeGreaterThan(0)
      yield* awaitGone([pid])
    }))
})

describe("the workload config", () => {
  it.scopedLive("reaches our worker through a private file, not argv: large configs work and ps does not show them", () =>
    Effect.gen(function* () {
      const secret = "s3cr3t-".repeat(50_000)
      const worker = yield* PythonWorker.make({
        workloadFactory: "burn_p2p_python_runtime.reference_workload:make",
        workloadConfig: { api_token: secret, learning_rate: 0.3 },
        pythonExecutable: testPython,
      }).pipe(Effect.provide(NodeContext.layer))
      const argv = readFileSync(`/proc/${worker.pid}/cmdline`, "utf8").split("\0")
      expect(argv.join(" ")).not.toContain("s3cr3t")
      const configFile = argv[argv.indexOf("--config-file") + 1]
      expect(existsSync(configFile)).toBe(false)
      const model = yield* worker.initModel("cpu")
      expect((yield* worker.trainWindow(model, [generated([0], 0)])).learning_rate).toBe(0.3)
    }))

  it.scopedLive(
    "refused by Deno's permissions, names the folder to grant, not the file it refused",
    () =>
      Effect.gen(function* () {
        const cache = join(yield* tempDir, "cache")
        const env = { ...process.env, BURN_P2P_RUNTIME_CACHE: cache }
        const script = fileURLToPath(new URL("./fixtures/config_client.ts", import.meta.url))
        const permissions = ["--allow-run", "--allow-net=127.0.0.1", "--allow-env", "--allow-sys=uid", `--allow-read`]
        const runWith = (write: string) => {
          const result = spawnSync(process.execPath, ["run", ...permissions, write, script, testPython], {
            env,
            encoding: "utf8",
          })
          expect(result.status, result.stderr).toBe(0)
          return JSON.parse(result.stdout.trim().split("\n").pop()!)
        }
        expect(runWith(`--allow-write=${cache},${tmpdir()}`)).toEqual({ ok: true })
        expect(runWith(`--allow-write=${cache}`)).toEqual({
          ok: false,
          tag: "InvalidArgumentError",
          detail: `cannot write the workload config to a temporary file: Deno needs --allow-write=${tmpdir()}`,
        })
      }),
    60_000,
  )

  it.scopedLive("that cannot be written to its private file fails the start with a typed error, nothing spawned", () =>
    Effect.gen(function* () {
      const missing = join(yield* tempDir, "gone")
      const saved = process.env.TMPDIR
      const error = yield* Effect.acquireUseRelease(
        Effect.sync(() => (process.env.TMPDIR = missing)),
        () => Effect.flip(Effect.scoped(PythonWorker.make({ ...options, pythonExecutable: "/nonexistent/python" }))),
        () => Effect.sync(() => saved === undefined ? delete process.env.TMPDIR : (process.env.TMPDIR = saved)),
      ).pipe(Effect.provide(NodeContext.layer))
      // Never spawned: the missing interpreter would have been a WorkerSpawnError.
      expectTagged(error, "InvalidArgumentError")
      expect((error as { detail: string }).detail).toMatch(
        /cannot write the workload config to a temporary file: .*ENOENT/,
      )
    }))
})
