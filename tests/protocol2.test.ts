/**
 * Protocol 2 on both sides: every new method through our client against our
 * worker, with the standard-library workload and the torch workload; the pack
 * format checked by an independent reader written here (manifest.json parsed
 * by hand, values.f32le read through a little-endian DataView, the layout hash
 * recomputed from the model's layout); every capability gate; the exact-step
 * check on both sides; and one DiLoCo round end to end on two workers.
 *
 * Errors are matched with `expectTagged` (helpers.ts), which matches a spread
 * copy: an error failed inside an `Effect.fn` span is a Proxy.
 */
import { afterAll, describe, expect, it, layer } from "@effect/vitest"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { DiLoCo, ParameterPack, PythonWorker } from "../src/mod.ts"
import { expectTagged, fixturesRoot, generated, tempDir, testPython } from "./helpers.ts"
import * as safetensors from "./safetensors.ts"

const runtimeRoot = fileURLToPath(new URL("../python", import.meta.url))
const FORMAT = "burn-p2p-python-flattened-parameter-pack-v1"
const SCHEMA = "schema-protocol2-test"
const ALL_CAPABILITIES = [
  "artifact_path_io",
  "diloco_checkpoint_job",
  "parameter_pack_export",
  "parameter_pack_import",
  "exact_step_budget",
]
const LAYOUT_HASH = /^torch-layout-[0-9a-f]{64}$/

// ---------------------------------------------------------------------------
// The independent reader: nothing from src/ParameterPack.ts or src/internal.
// ---------------------------------------------------------------------------

interface LayoutEntry {
  readonly name: string
  readonly shape: ReadonlyArray<number>
  readonly dtype: string
  readonly numel: number
}

/** Python's `json.dumps(value, sort_keys=True, separators=(",", ":"))` (ensure_ascii) for strings, ints, lists and dicts. */
const pythonCompactJson = (value: unknown): string => {
  if (Array.isArray(value)) return `[${value.map(pythonCompactJson).join(",")}]`
  if (typeof value === "string") {
    return JSON.stringify(value).replace(
      /[\u0080-\uffff]/g,
      (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
    )
  }
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`not an int: ${value}`)
    return String(value)
  }
  if (value !== null && typeof value === "object") {
    const record = value as Record<string, unknown>
    return `{${
      Object.keys(record).sort().map((key) => `${pythonCompactJson(key)}:${pythonCompactJson(record[key])}`).join(",")
    }}`
  }
  throw new Error(`unsupported JSON value ${String(value)}`)
}

const independentLayoutHash = (layout: ReadonlyArray<LayoutEntry>): string =>
  "torch-layout-" +
  createHash("sha256").update(
    pythonCompactJson(layout.map(({ name, shape, dtype, numel }) => ({ name, shape, dtype, numel }))),
    "utf8",
  ).digest("hex")

interface RawPack {
  readonly manifest: Record<string, unknown>
  readonly values: Float32Array
  readonly valuesBytes: Uint8Array
}

/** Reads a pack folder by hand; fails the test on any inconsistency of the format itself. */
const readPackIndependently = (dir: string): RawPack => {
  const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as Record<string, unknown>
  expect(manifest.format).toBe(FORMAT)
  expect(manifest.values_f32_le).toBe("values.f32le")
  const count = manifest.parameter_count as number
  expect(Number.isSafeInteger(count) && count >= 0).toBe(true)
  const valuesBytes = new Uint8Array(readFileSync(join(dir, manifest.values_f32_le as string)))
  expect(valuesBytes.byteLength).toBe(4 * count)
  const view = new DataView(valuesBytes.buffer, valuesBytes.byteOffset, valuesBytes.byteLength)
  const values = new Float32Array(count)
  for (let index = 0; index < count; index++) values[index] = view.getFloat32(4 * index, true)
  return { manifest, values, valuesBytes }
}

const bitsOf = (values: Float32Array) => new Uint8Array(values.buffer, values.byteOffset, values.byteLength)

/** -1 when equal, else the first differing byte (or the shorter length). */
const firstDifference = (a: Uint8Array, b: Uint8Array): number => {
  const length = Math.min(a.byteLength, b.byteLength)
  for (let index = 0; index < length; index++) if (a[index] !== b[index]) return index
  return a.byteLength === b.byteLength ? -1 : length
}

const expectSameBits = (actual: Float32Array, expected: Float32Array) =>
  expect(firstDifference(bitsOf(actual), bitsOf(expected))).toBe(-1)

/** `ParameterPack.read` sees what the independent reader sees. */
const expectReaderAgrees = (dir: string, layoutHash?: string) =>
  Effect.gen(function* () {
    const raw = readPackIndependently(dir)
    const pack = yield* ParameterPack.read(dir, layoutHash === undefined ? undefined : { layoutHash })
    expect(pack.manifest.format).toBe(raw.manifest.format)
    expect(pack.manifest.modelSchemaHash).toBe(raw.manifest.model_schema_hash)
    expect(pack.manifest.layoutHash).toBe(raw.manifest.layout_hash)
    expect(pack.manifest.parameterCount).toBe(raw.manifest.parameter_count)
    expect(pack.manifest.valuesF32Le).toBe(raw.manifest.values_f32_le)
    if (raw.manifest.included_keys !== undefined) {
      expect(pack.manifest.includedKeys).toEqual(raw.manifest.included_keys)
      expect(pack.manifest.excludedFloatKeys).toEqual(raw.manifest.excluded_float_keys)
      expect(pack.manifest.ignoredNonFloatKeys).toEqual(raw.manifest.ignored_non_float_keys)
      const filter = raw.manifest.state_dict_filter as { include_globs: Array<string>; exclude_globs: Array<string> }
      expect(pack.manifest.stateDictFilter?.includeGlobs).toEqual(filter.include_globs)
      expect(pack.manifest.stateDictFilter?.excludeGlobs).toEqual(filter.exclude_globs)
    }
    expectSameBits(pack.values, raw.values)
    return raw
  }).pipe(Effect.provide(NodeContext.layer))

/** The tensors of a safetensors artifact, flattened and concatenated in the given order. */
const artifactValues = (path: string, names: ReadonlyArray<string>): Float32Array =>
  safetensors.flatF32(safetensors.decode(readFileSync(path)), names)

/** A pack the owner writes (the five-field manifest), through `ParameterPack.write`. */
const writeOwnerPack = (dir: string, values: Float32Array, layoutHash: string) =>
  ParameterPack.write(dir, ParameterPack.make(values, { modelSchemaHash: SCHEMA, layoutHash })).pipe(
    Effect.provide(NodeContext.layer),
  )

const OWNER_FIELDS = ["format", "layout_hash", "model_schema_hash", "parameter_count", "values_f32_le"]

const patternValues = (count: number, salt: number) =>
  Float32Array.from({ length: count }, (_, index) => (((index * 7 + salt * 13) % 23) - 11) / 64)

/** Three broken copies of a good pack: the bad layout hash, the bad byte length, the bad format string. */
const brokenPacks = (good: string, dir: string) => {
  const copy = (name: string, edit: (manifest: Record<string, unknown>, values: Uint8Array) => Uint8Array) => {
    const target = join(dir, name)
    rmSync(target, { recursive: true, force: true })
    const manifest = JSON.parse(readFileSync(join(good, "manifest.json"), "utf8"))
    const values = edit(manifest, new Uint8Array(readFileSync(join(good, "values.f32le"))))
    mkdirSync(target, { recursive: true })
    writeFileSync(join(target, "manifest.json"), JSON.stringify(manifest, null, 2))
    writeFileSync(join(target, "values.f32le"), values)
    return target
  }
  const wrongHash = `torch-layout-${"0".repeat(64)}`
  return {
    wrongHash,
    layout: copy("bad-layout", (manifest, values) => {
      manifest.layout_hash = wrongHash
      return values
    }),
    length: copy("bad-length", (_manifest, values) => values.subarray(0, values.byteLength - 4)),
    format: copy("bad-format", (manifest, values) => {
      manifest.format = "burn-p2p-python-flattened-parameter-pack-v0"
      return values
    }),
  }
}

/** Each broken pack is refused by name (a RemoteError), and the worker keeps serving. */
const expectBrokenPacksRefused = (good: string, dir: string, check: Effect.Effect<void, unknown, PythonWorker>) =>
  Effect.gen(function* () {
    const worker = yield* PythonWorker
    const broken = brokenPacks(good, dir)
    const refused = (path: string) => Effect.flip(worker.importParameterPack("cpu", path))
    const layoutError = yield* refused(broken.layout)
    expectTagged(layoutError, "RemoteError", {
      method: "import_parameter_pack",
      remoteMessage: expect.stringContaining(broken.wrongHash),
    })
    expect(layoutError.message).toMatch(/layout/)
    const lengthError = yield* refused(broken.length)
    expectTagged(lengthError, "RemoteError", {
      method: "import_parameter_pack",
      remoteMessage: expect.stringMatching(/byte length/),
    })
    const formatError = yield* refused(broken.format)
    expectTagged(formatError, "RemoteError", {
      method: "import_parameter_pack",
      remoteMessage: expect.stringContaining("burn-p2p-python-flattened-parameter-pack-v0"),
    })
    // Still serving: the good pack imports, and the check passes.
    const again = yield* worker.importParameterPack("cpu", good)
    yield* worker.releaseModel(again)
    yield* check
  })

// ---------------------------------------------------------------------------
// The standard-library workload
// ---------------------------------------------------------------------------

const FEATURES = 6
const CLASSES = 3
const refConfig = { dataset_seed: 5, seed: 11, examples_per_microshard: 32, features: FEATURES, classes: CLASSES }
const refOptions: PythonWorker.Options = {
  workloadFactory: "burn_p2p_python_runtime.reference_workload:make",
  workloadConfig: refConfig,
  pythonExecutable: testPython,
}
/** What the workload documents: bias [classes] then weight [classes, features], float32. */
const refLayout: ReadonlyArray<LayoutEntry> = [
  { name: "bias", shape: [CLASSES], dtype: "torch.float32", numel: CLASSES },
  { name: "weight", shape: [CLASSES, FEATURES], dtype: "torch.float32", numel: CLASSES * FEATURES },
]
const REF_COUNT = CLASSES + CLASSES * FEATURES

const validation = (worker: PythonWorker.Service, modelId: string) => worker.evaluate(modelId, "Validation")

layer(PythonWorker.layer(refOptions), { excludeTestServices: true })("protocol 2, standard-library workload", (it) => {
  it.effect("hello advertises every protocol-2 capability, in the reference's order", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      expect(worker.info.capabilities).toEqual(ALL_CAPABILITIES)
      expect((yield* worker.hello()).capabilities).toEqual(ALL_CAPABILITIES)
    }))

  it.effect("parameterPackPlan: the workload's own plan, its layout hash recomputed here", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const plan = yield* worker.parameterPackPlan("cpu")
      expect(plan.layoutHash).toMatch(LAYOUT_HASH)
      expect(plan.layoutHash).toBe(independentLayoutHash(refLayout))
      expect(plan.layoutHash).toBe(ParameterPack.layoutHash(refLayout))
      expect(plan).toMatchObject({
        usesCustomParameterPackHooks: true,
        includedKeys: ["bias", "weight"],
        excludedFloatKeys: [],
        ignoredNonFloatKeys: [],
        parameterCount: REF_COUNT,
      })
      expect(plan.genericPlanError).toBeUndefined()
      // The hooks take no filter, so the plan is the same whatever the filter says (documented).
      const filtered = yield* worker.parameterPackPlan("cpu", { includeGlobs: ["weight"], excludeGlobs: ["bias"] })
      expect(filtered.includedKeys).toEqual(["bias", "weight"])
      expect(filtered.parameterCount).toBe(REF_COUNT)
    }))

  it.scoped("exportParameterPack: the independent reader finds the model's artifact values, and ParameterPack.read agrees", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const dir = yield* tempDir
      const model = yield* worker.initModel("cpu")
      yield* worker.trainWindow(model, [generated([0, 1, 2], 4)])
      const pack = join(dir, "pack")
      yield* worker.exportParameterPack(model, pack, SCHEMA)
      const raw = yield* expectReaderAgrees(pack, independentLayoutHash(refLayout))
      expect(raw.manifest).toEqual({
        format: FORMAT,
        model_schema_hash: SCHEMA,
        layout_hash: independentLayoutHash(refLayout),
        parameter_count: REF_COUNT,
        values_f32_le: "values.f32le",
        state_dict_filter: { include_globs: [], exclude_globs: [] },
        included_keys: ["bias", "weight"],
        excluded_float_keys: [],
        ignored_non_float_keys: [],
      })
      // The reference writes the manifest with a two-space indent.
      expect(readFileSync(join(pack, "manifest.json"), "utf8")).toBe(JSON.stringify(raw.manifest, null, 2))
      const artifact = join(dir, "model.safetensors")
      yield* worker.materializeModelArtifact(model, artifact)
      expectSameBits(raw.values, artifactValues(artifact, ["bias", "weight"]))
    }))

  it.scoped("importParameterPack: a new model id that evaluates like the exported model", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const dir = yield* tempDir
      const source = yield* worker.initModel("cpu")
      yield* worker.trainWindow(source, [generated([0, 1, 2, 3], 6)])
      const fresh = yield* worker.initModel("cpu")
      const pack = join(dir, "pack")
      yield* worker.exportParameterPack(source, pack, SCHEMA)
      const imported = yield* worker.importParameterPack("cpu", pack)
      expect([source, fresh]).not.toContain(imported)
      expect(yield* validation(worker, imported)).toEqual(yield* validation(worker, source))
      expect(yield* validation(worker, fresh)).not.toEqual(yield* validation(worker, source))
      const again = join(dir, "again")
      yield* worker.exportParameterPack(imported, again, SCHEMA)
      expect(firstDifference(readPackIndependently(again).valuesBytes, readPackIndependently(pack).valuesBytes)).toBe(
        -1,
      )
    }))

  it.scoped("a pack the TS owner wrote (five-field manifest) imports with exactly its values", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const dir = yield* tempDir
      const values = patternValues(REF_COUNT, 1)
      const pack = join(dir, "owner")
      yield* writeOwnerPack(pack, values, independentLayoutHash(refLayout))
      const raw = readPackIndependently(pack)
      expect(Object.keys(raw.manifest).sort()).toEqual(OWNER_FIELDS)
      // Pretty-printed, as the reference owner writes it.
      expect(readFileSync(join(pack, "manifest.json"), "utf8")).toMatch(/^\{\n {2}"/)
      expectSameBits(raw.values, values)
      const model = yield* worker.importParameterPack("cpu", pack)
      const artifact = join(dir, "imported.safetensors")
      yield* worker.materializeModelArtifact(model, artifact)
      expectSameBits(artifactValues(artifact, ["bias", "weight"]), values)
    }))

  it.scoped("a wrong layout hash, byte length or format string is refused by name; the worker keeps serving", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const dir = yield* tempDir
      const model = yield* worker.initModel("cpu")
      const good = join(dir, "good")
      yield* worker.exportParameterPack(model, good, SCHEMA)
      yield* expectBrokenPacksRefused(
        good,
        dir,
        Effect.asVoid(Effect.flatMap(worker.initModel("cpu"), (fresh) => validation(worker, fresh))),
      )
    }))

  it.scoped("runInnerLoop: steps, metrics, the model updated, its pack written, the optimizer state fed to round 2", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const dir = yield* tempDir
      const model = yield* worker.initModel("cpu")
      const before = yield* validation(worker, model)
      const out1 = join(dir, "round1")
      const first = yield* worker.runInnerLoop(model, [generated([0, 1, 2, 3], 21)], {
        numInnerSteps: 6,
        outputParameterPackPath: out1,
        modelSchemaHash: SCHEMA,
        requireExactSteps: true,
      })
      expect(first.stepsCompleted).toBe(6)
      expect(first.metrics).toMatchObject({ steps: 6, examples: 128, learning_rate: 0.2 })
      expect(first.metrics.loss).toBeGreaterThan(0)
      expect(first.innerOptimizerStateEncoding).toBe("reference-softmax-momentum-json-v1")
      expect(first.innerOptimizerStatePath).toBe(`${out1}.inner-optimizer.json`)
      expect(existsSync(first.innerOptimizerStatePath!)).toBe(true)
      const raw1 = yield* expectReaderAgrees(out1, independentLayoutHash(refLayout))
      expect(raw1.manifest.model_schema_hash).toBe(SCHEMA)
      expect(yield* validation(worker, model)).not.toEqual(before)
      // The pack is the model as the loop left it.
      const exported = join(dir, "exported")
      yield* worker.exportParameterPack(model, exported, SCHEMA)
      expectSameBits(readPackIndependently(exported).values, raw1.values)

      // Round 2 from the same pack, with and without the saved velocity: momentum carries over.
      const withState = yield* worker.importParameterPack("cpu", out1)
      const withoutState = yield* worker.importParameterPack("cpu", out1)
      const batches = [generated([4, 5], 21)]
      const out2 = join(dir, "round2")
      const second = yield* worker.runInnerLoop(withState, batches, {
        numInnerSteps: 3,
        outputParameterPackPath: out2,
        modelSchemaHash: SCHEMA,
        innerOptimizerStatePath: first.innerOptimizerStatePath,
      })
      expect(second.stepsCompleted).toBe(3)
      expect(existsSync(second.innerOptimizerStatePath!)).toBe(true)
      expect(existsSync(first.innerOptimizerStatePath!)).toBe(true)
      const out2Cold = join(dir, "round2-cold")
      yield* worker.runInnerLoop(withoutState, batches, {
        numInnerSteps: 3,
        outputParameterPackPath: out2Cold,
        modelSchemaHash: SCHEMA,
        innerOptimizerStatePath: null,
      })
      expect(firstDifference(readPackIndependently(out2).valuesBytes, readPackIndependently(out2Cold).valuesBytes))
        .not.toBe(-1)
    }))

  it.scoped("runInnerLoop is deterministic across two workers: identical output packs, two rounds", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const other = Context.get(yield* Layer.build(PythonWorker.layer(refOptions)), PythonWorker)
      expect(other.pid).not.toBe(worker.pid)
      const dir = yield* tempDir
      const genesis = join(dir, "genesis")
      yield* worker.exportParameterPack(yield* worker.initModel("cpu"), genesis, SCHEMA)
      const run = (service: PythonWorker.Service, name: string) =>
        Effect.gen(function* () {
          const model = yield* service.importParameterPack("cpu", genesis)
          const first = yield* service.runInnerLoop(model, [generated([0, 1], 8)], {
            numInnerSteps: 5,
            outputParameterPackPath: join(dir, `${name}-1`),
            modelSchemaHash: SCHEMA,
          })
          const second = yield* service.runInnerLoop(model, [generated([2, 3], 8)], {
            numInnerSteps: 4,
            outputParameterPackPath: join(dir, `${name}-2`),
            modelSchemaHash: SCHEMA,
            innerOptimizerStatePath: first.innerOptimizerStatePath,
          })
          return {
            first,
            second,
            packs: [readPackIndependently(join(dir, `${name}-1`)), readPackIndependently(join(dir, `${name}-2`))],
          }
        })
      const a = yield* run(worker, "a")
      const b = yield* run(other, "b")
      expect(b.first.metrics).toEqual(a.first.metrics)
      expect(b.second.metrics).toEqual(a.second.metrics)
      for (const round of [0, 1]) {
        expect(firstDifference(b.packs[round].valuesBytes, a.packs[round].valuesBytes)).toBe(-1)
        expect(b.packs[round].manifest).toEqual(a.packs[round].manifest)
      }
    }))

  // BUG (python/burn_p2p_python_runtime/protocol2.py, run_inner_loop): the worker writes the output pack
  // "unless the workload already wrote output_parameter_pack_path/manifest.json", but it only checks that the
  // manifest *exists* after the hook, so a folder holding a pack from an earlier call (a retried round, a reused
  // path) is taken as written by the workload: the owner then reads the stale parameters, silently. Proposed fix:
  // stat the manifest before calling the hook (`os.stat(...)` -> `(st_ino, st_mtime_ns, st_size)` or None) and
  // export unless the hook created or replaced it (the stat differs afterwards); or remove a stale manifest before
  // the hook runs. Remove `.fails` once fixed.
  it.scoped("runInnerLoop into a folder that already holds a pack (a retried round) leaves the model there", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const dir = yield* tempDir
      const model = yield* worker.initModel("cpu")
      const out = join(dir, "out")
      const options = { numInnerSteps: 3, outputParameterPackPath: out, modelSchemaHash: SCHEMA }
      yield* worker.runInnerLoop(model, [generated([0, 1], 12)], options)
      const first = readPackIndependently(out).values
      yield* worker.runInnerLoop(model, [generated([2, 3], 12)], options)
      const now = join(dir, "now")
      yield* worker.exportParameterPack(model, now, SCHEMA)
      expect(firstDifference(bitsOf(readPackIndependently(now).values), bitsOf(first))).not.toBe(-1)
      expectSameBits(readPackIndependently(out).values, readPackIndependently(now).values)
    }))

  it.effect("requireExactSteps with the right count passes", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const dir = mkdtempSync(join(tmpdir(), "burn-p2p-p2-"))
      try {
        const model = yield* worker.initModel("cpu")
        const result = yield* worker.runInnerLoop(model, [generated([0], 2)], {
          numInnerSteps: 0,
          outputParameterPackPath: join(dir, "zero"),
          modelSchemaHash: SCHEMA,
          requireExactSteps: true,
        })
        expect(result.stepsCompleted).toBe(0)
        expect(readPackIndependently(join(dir, "zero")).values.length).toBe(REF_COUNT)
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    }))
})

layer(
  PythonWorker.layer({ ...refOptions, env: { BURN_P2P_WORKER_PROTOCOL_VERSION: "2" } }),
  { excludeTestServices: true },
)("protocol 2, the worker saying version 2", (it) => {
  it.effect("BURN_P2P_WORKER_PROTOCOL_VERSION=2: hello says 2, the client accepts it, the capabilities are the same", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      expect(worker.info).toMatchObject({ protocolVersion: 2, capabilities: ALL_CAPABILITIES })
      expect((yield* worker.parameterPackPlan("cpu")).parameterCount).toBe(REF_COUNT)
    }))
})

// ---------------------------------------------------------------------------
// Exact steps: our worker's own check, and the client's against a worker that does not check
// ---------------------------------------------------------------------------

const shortOptions: PythonWorker.Options = {
  ...refOptions,
  workloadFactory: "short_inner_loop_workload:make",
  moduleSearchRoots: [fixturesRoot],
}

layer(PythonWorker.layer(shortOptions), { excludeTestServices: true })("requireExactSteps, our worker", (it) => {
  it.scoped("a workload that stops one step short: refused by the worker itself with requireExactSteps", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      const dir = yield* tempDir
      const model = yield* worker.initModel("cpu")
      const options = { numInnerSteps: 5, outputParameterPackPath: join(dir, "out"), modelSchemaHash: SCHEMA }
      const error = yield* Effect.flip(worker.runInnerLoop(model, [generated([0], 1)], {
        ...options,
        requireExactSteps: true,
      }))
      expectTagged(error, "RemoteError", {
        method: "run_inner_loop",
        errorType: "ValueError",
        remoteMessage: expect.stringContaining("completed 4 steps, 5 were requested"),
      })
      // Without the requirement the short count is simply reported.
      const result = yield* worker.runInnerLoop(model, [generated([0], 1)], options)
      expect(result.stepsCompleted).toBe(4)
      expect(readPackIndependently(join(dir, "out")).values.length).toBe(REF_COUNT)
    }))
})

const records = mkdtempSync(join(tmpdir(), "burn-p2p-miscount-"))
afterAll(() => rmSync(records, { recursive: true, force: true }))

const miscount = (name: string, capabilities?: ReadonlyArray<string>) => {
  const record = join(records, `${name}.jsonl`)
  const options: PythonWorker.Options = {
    workloadFactory: "miscount:ignored",
    workerModule: "miscount_worker",
    moduleSearchRoots: [fixturesRoot],
    pythonExecutable: testPython,
    workloadConfig: { record, steps_offset: -1, ...(capabilities === undefined ? {} : { capabilities }) },
  }
  const methods = (): Array<string> =>
    existsSync(record)
      ? readFileSync(record, "utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line).method)
      : []
  return { options, methods }
}

const liar = miscount("liar")
layer(PythonWorker.layer(liar.options), { excludeTestServices: true })(
  "requireExactSteps, the client's check",
  (it) => {
    it.effect("a worker that answers another step count: ResultMismatchError, and the service stays usable", () =>
      Effect.gen(function* () {
        const worker = yield* PythonWorker
        expect(worker.info).toMatchObject({ protocolVersion: 2, capabilities: ALL_CAPABILITIES })
        const model = yield* worker.initModel("cpu")
        const options = { numInnerSteps: 5, outputParameterPackPath: "/nonexistent/out", modelSchemaHash: SCHEMA }
        const error = yield* Effect.flip(worker.runInnerLoop(model, [], { ...options, requireExactSteps: true }))
        expectTagged(error, "ResultMismatchError", {
          method: "run_inner_loop",
          detail: expect.stringMatching(/4 inner steps.*exactly 5/),
        })
        // The worker did get the request (the check is on the answer), and keeps serving.
        expect(liar.methods()).toContain("run_inner_loop")
        const served = yield* worker.evaluate(model, "Validation")
        expect(served.requests).toBe(liar.methods().length)
        const unchecked = yield* worker.runInnerLoop(model, [], options)
        expect(unchecked.stepsCompleted).toBe(4)
      }))
  },
)

// ---------------------------------------------------------------------------
// Capability gates
// ---------------------------------------------------------------------------

const echoOptions: PythonWorker.Options = {
  workloadFactory: "echo_workload:make",
  workloadConfig: {},
  moduleSearchRoots: [fixturesRoot],
  pythonExecutable: testPython,
}

/** Each protocol-2 method on `model`, with the capability it needs. */
const gatedCalls = (worker: PythonWorker.Service, model: string) =>
  [
    ["parameter_pack_plan", "parameter_pack_export", worker.parameterPackPlan("cpu")],
    ["export_parameter_pack", "parameter_pack_export", worker.exportParameterPack(model, "/nonexistent/p", SCHEMA)],
    ["import_parameter_pack", "parameter_pack_import", worker.importParameterPack("cpu", "/nonexistent/p")],
    [
      "run_inner_loop",
      "diloco_checkpoint_job",
      worker.runInnerLoop(model, [], {
        numInnerSteps: 1,
        outputParameterPackPath: "/nonexistent/p",
        modelSchemaHash: SCHEMA,
        requireExactSteps: true,
      }),
    ],
  ] as const

const expectAllGated = (worker: PythonWorker.Service, model: string, advertised: ReadonlyArray<string>) =>
  Effect.forEach(gatedCalls(worker, model), ([method, capability, call]) =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(call as Effect.Effect<unknown, unknown>)
      expectTagged(error, "MissingCapabilityError", { method, capability, advertised })
      expect((error as Error).message).toContain(capability)
    }), { discard: true })

layer(PythonWorker.layer(echoOptions), { excludeTestServices: true })("capability gates, echo workload", (it) => {
  it.effect("only artifact_path_io is advertised; each protocol-2 method fails before anything is sent", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      expect(worker.info.capabilities).toEqual(["artifact_path_io"])
      const model = yield* worker.initModel("cpu")
      // Request ids count what was sent: the echo workload raises on Train, and its RemoteError carries the id.
      const before = yield* Effect.flip(worker.evaluate(model, "Train"))
      yield* expectAllGated(worker, model, ["artifact_path_io"])
      const after = yield* Effect.flip(worker.evaluate(model, "Train"))
      expect(before._tag === "RemoteError" && after._tag === "RemoteError").toBe(true)
      expect((after as { id: number }).id).toBe((before as { id: number }).id + 1)
      // Still usable.
      expect(yield* worker.trainWindow(model, [generated([0, 1], 0, { echo: "still here" })])).toMatchObject({
        echo: "still here",
        examples: 2,
      })
    }))
})

const mute = miscount("mute", [])
layer(PythonWorker.layer(mute.options), { excludeTestServices: true })("capability gates, recorded", (it) => {
  it.effect("a worker advertising no capability: every method gated, none of them ever reaches it", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      expect(worker.info.capabilities).toEqual([])
      const model = yield* worker.initModel("cpu")
      yield* expectAllGated(worker, model, [])
      expect((yield* worker.evaluate(model, "Validation")).requests).toBe(3)
      expect(mute.methods()).toEqual(["hello", "init_model", "evaluate"])
    }))
})

const compatOptions: PythonWorker.Options = {
  ...refOptions,
  workerModule: "reference_compat_worker",
  moduleSearchRoots: [fixturesRoot],
}
layer(PythonWorker.layer(compatOptions), { excludeTestServices: true })("capability gates, reference worker", (it) => {
  it.effect("the protocol-1 reference worker sends no capabilities: every protocol-2 method is gated", () =>
    Effect.gen(function* () {
      const worker = yield* PythonWorker
      expect(worker.info.protocolVersion).toBe(1)
      const model = yield* worker.initModel("cpu")
      yield* expectAllGated(worker, model, [])
      expect((yield* worker.evaluate(model, "Validation")).examples).toBe(512)
    }))

  // BUG (src/Protocol.ts, Hello): PROTOCOL.md says "the client reads a missing `capabilities` as `[]`",
  // but `Hello.capabilities` is `Schema.optional(...)`, so `worker.info.capabilities` is `undefined` here
  // (the gate itself is right: manager.ts reads it with `?? []`). Proposed fix:
  // `capabilities: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] })`.
  // Remove `.fails` once fixed.
  it.effect("info.capabilities reads a missing list as []", () =>
    Effect.gen(function* () {
      expect((yield* PythonWorker).info.capabilities).toEqual([])
    }))
})

// ---------------------------------------------------------------------------
// One DiLoCo round end to end, without torch
// ---------------------------------------------------------------------------

describe("DiLoCo round, two workers, standard-library workload", () => {
  it.scopedLive(
    "each imports θ, runs the inner loop, exports; DiLoCo.round under each policy; both import θ' alike",
    () =>
      Effect.gen(function* () {
        const dir = yield* tempDir
        const workers = [
          Context.get(yield* Layer.build(PythonWorker.layer(refOptions)), PythonWorker),
          Context.get(yield* Layer.build(PythonWorker.layer(refOptions)), PythonWorker),
        ]
        const plan = yield* workers[0].parameterPackPlan("cpu")
        const layoutHash = plan.layoutHash!
        const theta = join(dir, "global-0")
        yield* workers[0].exportParameterPack(yield* workers[0].initModel("cpu"), theta, SCHEMA)

        const locals = yield* Effect.forEach(workers, (worker, index) =>
          Effect.gen(function* () {
            const model = yield* worker.importParameterPack("cpu", theta)
            const result = yield* worker.runInnerLoop(model, [generated([0, 1, 2], 30 + index)], {
              numInnerSteps: 8,
              outputParameterPackPath: join(dir, `inner-${index}`),
              modelSchemaHash: SCHEMA,
              requireExactSteps: true,
            })
            expect(result.stepsCompleted).toBe(8)
            const exported = join(dir, `local-${index}`)
            yield* worker.exportParameterPack(model, exported, SCHEMA)
            expectSameBits(
              readPackIndependently(exported).values,
              readPackIndependently(join(dir, `inner-${index}`)).values,
            )
            return exported
          }))
        const base = readPackIndependently(theta).values
        const peers = locals.map((path) => readPackIndependently(path).values)
        expect(firstDifference(bitsOf(peers[0]), bitsOf(peers[1]))).not.toBe(-1)
        const deltas = peers.map((peer) => base.map((value, j) => Math.fround(value - peer[j])))

        const policies = [
          {
            name: "Mean",
            policy: new DiLoCo.Mean(),
            learningRate: 1,
            step: (j: number) => (deltas[0][j] + deltas[1][j]) / 2,
          },
          {
            name: "CoordinateMedian",
            policy: new DiLoCo.CoordinateMedian(),
            learningRate: 0.7,
            step: (j: number) => (deltas[0][j] + deltas[1][j]) / 2,
          },
          {
            name: "SignMajority",
            policy: new DiLoCo.SignMajority({ minimumAgreement: 0.5, tieBreak: "Zero" }),
            learningRate: 0.01,
            // Two peers: the sign when both agree, else a tie (or zeros holding a share of the lead): 0.
            step: (j: number) => Math.sign(deltas[0][j]) === Math.sign(deltas[1][j]) ? Math.sign(deltas[0][j]) : 0,
          },
        ] as const
        for (const { name, policy, learningRate, step } of policies) {
          const output = join(dir, `global-1-${name}`)
          const result = yield* DiLoCo.round({
            base: theta,
            locals,
            output,
            policy,
            optimizer: new DiLoCo.OuterOptimizer({ learningRate }),
            state: DiLoCo.initialState,
            layoutHash,
          }).pipe(Effect.provide(NodeContext.layer))
          expect(result.state.round).toBe(1)
          const next = readPackIndependently(output)
          expect(Object.keys(next.manifest).sort()).toEqual(OWNER_FIELDS)
          expect(next.manifest).toMatchObject({ layout_hash: layoutHash, model_schema_hash: SCHEMA })
          expectSameBits(result.next.values, next.values)
          let worst = 0
          for (let j = 0; j < base.length; j++) {
            worst = Math.max(worst, Math.abs(next.values[j] - (base[j] - learningRate * step(j))))
          }
          expect(worst, name).toBeLessThanOrEqual(1e-6)
          if (name === "Mean") {
            // lr 1 on the mean pseudo-gradient is model averaging.
            for (let j = 0; j < base.length; j++) {
              expect(Math.abs(next.values[j] - (peers[0][j] + peers[1][j]) / 2)).toBeLessThanOrEqual(1e-6)
            }
          }

          const models = yield* Effect.forEach(workers, (worker) => worker.importParameterPack("cpu", output))
          const metrics = yield* Effect.forEach(workers, (worker, index) => validation(worker, models[index]))
          expect(metrics[1]).toEqual(metrics[0])
          const back = yield* Effect.forEach(workers, (worker, index) =>
            Effect.gen(function* () {
              const path = join(dir, `back-${name}-${index}`)
              yield* worker.exportParameterPack(models[index], path, SCHEMA)
              return readPackIndependently(path).values
            }))
          expectSameBits(back[0], next.values)
          expectSameBits(back[1], next.values)
        }
      }),
    { timeout: 60_000 },
  )
})

// ---------------------------------------------------------------------------
// The torch workload
// ---------------------------------------------------------------------------

const torchCheck = spawnSync(testPython, ["-c", "import torch"], { encoding: "utf8" })
const torchImportable = torchCheck.status === 0
const inCI = ["true", "1"].includes((process.env.CI ?? "").toLowerCase())
const TORCH_MISSING = `PyTorch is not importable by ${testPython}`

const torchConfig = {
  dataset_seed: 3,
  seed: 7,
  learning_rate: 0.01,
  examples_per_microshard: 64,
  batch_size: 32,
  local_epochs: 1,
  threads: 1,
  eval_examples: 256,
  probe_seconds: 0.05,
  hidden: [16, 12],
  features: 10,
  classes: 4,
}
const torchOptions: PythonWorker.Options = {
  workloadFactory: "burn_p2p_python_runtime.torch_workload:make",
  workloadConfig: torchConfig,
  pythonExecutable: testPython,
  connectTimeout: "60 seconds",
}

interface TorchEntry extends LayoutEntry {
  readonly floating: boolean
}

/** The model's state_dict as torch itself reports it, from a separate interpreter (sorted keys). */
const torchLayout = (): ReadonlyArray<TorchEntry> => {
  const script = [
    "import json, sys",
    "from burn_p2p_python_runtime import torch_workload as tw",
    "state = tw.make(json.loads(sys.argv[1])).init_model('cpu')",
    "sd = state['model'].state_dict()",
    "print(json.dumps([{'name': k, 'shape': list(v.shape), 'dtype': str(v.dtype), 'numel': v.numel(),",
    "  'floating': v.is_floating_point()} for k, v in sorted(sd.items())]))",
  ].join("\n")
  const run = spawnSync(testPython, ["-c", script, JSON.stringify(torchConfig)], {
    encoding: "utf8",
    env: { ...process.env, PYTHONPATH: runtimeRoot },
  })
  if (run.status !== 0) throw new Error(`torch layout script failed: ${run.stderr}`)
  return JSON.parse(run.stdout)
}

const entry = ({ name, shape, dtype, numel }: LayoutEntry): LayoutEntry => ({ name, shape, dtype, numel })
const count = (layout: ReadonlyArray<LayoutEntry>) => layout.reduce((sum, { numel }) => sum + numel, 0)

describe.skipIf(!torchImportable && !inCI)(
  torchImportable || inCI ? "protocol 2, torch workload" : `protocol 2, torch workload (skipped: ${TORCH_MISSING})`,
  () => {
    const layout = torchImportable ? torchLayout() : []
    const floats = layout.filter((tensor) => tensor.floating).map(entry)
    const names = floats.map(({ name }) => name)
    const filter = { includeGlobs: ["hidden*"], excludeGlobs: ["*.bias"] }
    const kept = floats.filter(({ name }) => name.startsWith("hidden") && !name.endsWith(".bias"))

    layer(PythonWorker.layer(torchOptions), { excludeTestServices: true, timeout: "60 seconds" })(
      "one worker",
      (it) => {
        it.effect("hello advertises every protocol-2 capability (torch loaded, the workload's inner loop)", () =>
          Effect.gen(function* () {
            expect((yield* PythonWorker).info.capabilities).toEqual(ALL_CAPABILITIES)
          }))

        it.effect("parameterPackPlan: the generic plan over torch's state_dict, its layout hash recomputed here", () =>
          Effect.gen(function* () {
            const worker = yield* PythonWorker
            expect(names).toEqual(
              ["hidden0.bias", "hidden0.weight", "hidden1.bias", "hidden1.weight", "output.bias", "output.weight"],
            )
            const plan = yield* worker.parameterPackPlan("cpu")
            expect(plan.layoutHash).toMatch(LAYOUT_HASH)
            expect(plan.layoutHash).toBe(independentLayoutHash(floats))
            expect(plan).toMatchObject({
              usesCustomParameterPackHooks: false,
              includedKeys: names,
              excludedFloatKeys: [],
              ignoredNonFloatKeys: [],
              parameterCount: count(floats),
            })
            expect(plan.parameterCount).toBe(10 * 16 + 16 + 16 * 12 + 12 + 12 * 4 + 4)
          }))

        it.effect("filters: include and exclude globs change the kept and excluded keys, the count and the hash", () =>
          Effect.gen(function* () {
            const worker = yield* PythonWorker
            const plan = yield* worker.parameterPackPlan("cpu", filter)
            expect(plan).toMatchObject({
              includedKeys: ["hidden0.weight", "hidden1.weight"],
              excludedFloatKeys: ["hidden0.bias", "hidden1.bias", "output.bias", "output.weight"],
              parameterCount: 10 * 16 + 16 * 12,
            })
            expect(plan.layoutHash).toBe(independentLayoutHash(kept))
            const excludeOnly = yield* worker.parameterPackPlan("cpu", { includeGlobs: [], excludeGlobs: ["output.*"] })
            expect(excludeOnly.includedKeys).toEqual(names.filter((name) => !name.startsWith("output.")))
            expect(excludeOnly.excludedFloatKeys).toEqual(["output.bias", "output.weight"])
            // Excludes win over includes; matching is case-sensitive.
            const both = yield* worker.parameterPackPlan("cpu", { includeGlobs: ["*"], excludeGlobs: ["*"] })
            expect(both).toMatchObject({ includedKeys: [], parameterCount: 0, excludedFloatKeys: names })
            const upper = yield* worker.parameterPackPlan("cpu", { includeGlobs: ["HIDDEN*"], excludeGlobs: [] })
            expect(upper.includedKeys).toEqual([])
          }))

        it.scoped("export: the independent reader finds the artifact's tensors in layout order; ParameterPack.read agrees", () =>
          Effect.gen(function* () {
            const worker = yield* PythonWorker
            const dir = yield* tempDir
            const model = yield* worker.initModel("cpu")
            yield* worker.trainWindow(model, [generated([0, 1], 5)])
            const artifact = join(dir, "model.safetensors")
            yield* worker.materializeModelArtifact(model, artifact)

            const whole = join(dir, "whole")
            yield* worker.exportParameterPack(model, whole, SCHEMA)
            const raw = yield* expectReaderAgrees(whole, independentLayoutHash(floats))
            expect(raw.manifest).toMatchObject({
              layout_hash: independentLayoutHash(floats),
              parameter_count: count(floats),
              included_keys: names,
              model_schema_hash: SCHEMA,
            })
            expectSameBits(raw.values, artifactValues(artifact, names))
            // ParameterPack.read's own layout check, from the layout torch reported.
            yield* ParameterPack.read(whole, { layout: floats }).pipe(Effect.provide(NodeContext.layer))

            const part = join(dir, "part")
            yield* worker.exportParameterPack(model, part, SCHEMA, filter)
            const partial = yield* expectReaderAgrees(part, independentLayoutHash(kept))
            expect(partial.manifest).toMatchObject({
              parameter_count: count(kept),
              state_dict_filter: { include_globs: filter.includeGlobs, exclude_globs: filter.excludeGlobs },
              included_keys: ["hidden0.weight", "hidden1.weight"],
              excluded_float_keys: ["hidden0.bias", "hidden1.bias", "output.bias", "output.weight"],
              ignored_non_float_keys: [],
            })
            expectSameBits(partial.values, artifactValues(artifact, ["hidden0.weight", "hidden1.weight"]))
          }))

        it.scoped("import: a new model that evaluates like the exported one; a filtered pack loads only its tensors", () =>
          Effect.gen(function* () {
            const worker = yield* PythonWorker
            const dir = yield* tempDir
            const source = yield* worker.initModel("cpu")
            yield* worker.trainWindow(source, [generated([0, 1, 2], 6)])
            const whole = join(dir, "whole")
            yield* worker.exportParameterPack(source, whole, SCHEMA)
            const imported = yield* worker.importParameterPack("cpu", whole)
            expect(imported).not.toBe(source)
            expect(yield* validation(worker, imported)).toEqual(yield* validation(worker, source))

            const part = join(dir, "part")
            yield* worker.exportParameterPack(source, part, SCHEMA, filter)
            const partial = yield* worker.importParameterPack("cpu", part, filter)
            const artifact = (model: string, name: string) =>
              Effect.as(worker.materializeModelArtifact(model, join(dir, name)), join(dir, name))
            const partialArtifact = yield* artifact(partial, "partial.safetensors")
            const sourceArtifact = yield* artifact(source, "source.safetensors")
            const freshArtifact = yield* artifact(yield* worker.initModel("cpu"), "fresh.safetensors")
            for (const name of names) {
              const from = kept.some((tensor) => tensor.name === name) ? sourceArtifact : freshArtifact
              expectSameBits(artifactValues(partialArtifact, [name]), artifactValues(from, [name]))
            }
            // The filtered pack does not fit the whole layout: refused, never a partial load.
            const error = yield* Effect.flip(worker.importParameterPack("cpu", part))
            expectTagged(error, "RemoteError", {
              method: "import_parameter_pack",
              remoteMessage: expect.stringContaining(independentLayoutHash(kept)),
            })
          }))

        it.scoped("a pack the TS owner wrote imports with exactly its values", () =>
          Effect.gen(function* () {
            const worker = yield* PythonWorker
            const dir = yield* tempDir
            const values = patternValues(count(floats), 2)
            const pack = join(dir, "owner")
            yield* writeOwnerPack(pack, values, independentLayoutHash(floats))
            expect(Object.keys(readPackIndependently(pack).manifest).sort()).toEqual(OWNER_FIELDS)
            const model = yield* worker.importParameterPack("cpu", pack)
            const artifact = join(dir, "imported.safetensors")
            yield* worker.materializeModelArtifact(model, artifact)
            expectSameBits(artifactValues(artifact, names), values)
          }))

        it.scoped("a wrong layout hash, byte length or format string is refused by name; the worker keeps serving", () =>
          Effect.gen(function* () {
            const worker = yield* PythonWorker
            const dir = yield* tempDir
            const good = join(dir, "good")
            yield* worker.exportParameterPack(yield* worker.initModel("cpu"), good, SCHEMA)
            yield* expectBrokenPacksRefused(
              good,
              dir,
              Effect.asVoid(Effect.flatMap(worker.initModel("cpu"), (fresh) => validation(worker, fresh))),
            )
          }))

        it.scoped(
          "runInnerLoop: steps, metrics, the optimizer state file fed to round 2; identical packs on a second worker",
          () =>
            Effect.gen(function* () {
              const worker = yield* PythonWorker
              const other = Context.get(yield* Layer.build(PythonWorker.layer(torchOptions)), PythonWorker)
              const dir = yield* tempDir
              const genesis = join(dir, "genesis")
              yield* worker.exportParameterPack(yield* worker.initModel("cpu"), genesis, SCHEMA)
              const run = (service: PythonWorker.Service, name: string) =>
                Effect.gen(function* () {
                  const model = yield* service.importParameterPack("cpu", genesis)
                  const out1 = join(dir, `${name}-1`)
                  const first = yield* service.runInnerLoop(model, [generated([0, 1], 9)], {
                    numInnerSteps: 6,
                    outputParameterPackPath: out1,
                    modelSchemaHash: SCHEMA,
                    requireExactSteps: true,
                  })
                  expect(first.stepsCompleted).toBe(6)
                  expect(first.metrics).toMatchObject({ steps: 6, examples: 128, total_steps: 6 })
                  expect(first.metrics.loss).toBeGreaterThan(0)
                  expect(first.innerOptimizerStateEncoding).toBe("torch-save-v1")
                  expect(first.innerOptimizerStatePath).toBe(`${out1}.inner-optimizer.pt`)
                  expect(existsSync(first.innerOptimizerStatePath!)).toBe(true)
                  const out2 = join(dir, `${name}-2`)
                  const second = yield* service.runInnerLoop(model, [generated([2, 3], 9)], {
                    numInnerSteps: 3,
                    outputParameterPackPath: out2,
                    modelSchemaHash: SCHEMA,
                    innerOptimizerStatePath: first.innerOptimizerStatePath,
                    requireExactSteps: true,
                  })
                  expect(second.stepsCompleted).toBe(3)
                  expect(second.metrics.total_steps).toBe(9)
                  expect(existsSync(second.innerOptimizerStatePath!)).toBe(true)
                  const packs = [
                    yield* expectReaderAgrees(out1, independentLayoutHash(floats)),
                    readPackIndependently(out2),
                  ]
                  // The model is what the loop left: its export is the output pack.
                  const exported = join(dir, `${name}-exported`)
                  yield* service.exportParameterPack(model, exported, SCHEMA)
                  expectSameBits(readPackIndependently(exported).values, packs[1].values)
                  return { first, second, packs }
                })
              const a = yield* run(worker, "a")
              const b = yield* run(other, "b")
              expect(b.first.metrics).toEqual(a.first.metrics)
              expect(b.second.metrics).toEqual(a.second.metrics)
              for (const round of [0, 1]) {
                expect(firstDifference(b.packs[round].valuesBytes, a.packs[round].valuesBytes)).toBe(-1)
              }
              expect(firstDifference(a.packs[0].valuesBytes, readPackIndependently(genesis).valuesBytes)).not.toBe(-1)

              // The optimizer state matters: round 2 from the same pack without it lands elsewhere.
              const cold = yield* worker.importParameterPack("cpu", join(dir, "a-1"))
              yield* worker.runInnerLoop(cold, [generated([2, 3], 9)], {
                numInnerSteps: 3,
                outputParameterPackPath: join(dir, "cold-2"),
                modelSchemaHash: SCHEMA,
              })
              expect(firstDifference(readPackIndependently(join(dir, "cold-2")).valuesBytes, a.packs[1].valuesBytes))
                .not
                .toBe(-1)
            }),
          { timeout: 120_000 },
        )
      },
    )
  },
)
