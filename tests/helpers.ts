/**
 * Shared by the tests: which Python runs the workers, where the fixtures live,
 * whether a process or a port is still alive, scratch directories, shard
 * files, the fault worker, and the batches and other arguments the tests pass.
 */
import * as Command from "@effect/platform/Command"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { type BatchRef, type JsonValue, type MergeCandidate, PythonWorker, type RuntimePatch } from "../src/mod.ts"

/** Debian's interpreter has torch and starts ~80 ms faster than the pyenv shim; override with TEST_PYTHON. */
export const testPython: string = process.env.TEST_PYTHON ??
  (existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3")

export const fixturesRoot: string = fileURLToPath(new URL("./fixtures/python", import.meta.url))

const runtimeRoot = fileURLToPath(new URL("../python", import.meta.url))

/**
 * The bound, in ms, on a call that must fail "at once": over the stalls of a busy CI machine, under the
 * restart delays and call timeouts (1 s and more) such a call would otherwise wait out. Whether it
 * reached the wire, each test checks by the worker's own record.
 */
export const AT_ONCE_MS = 500

/** Alive means signalable and not a zombie waiting for its reaper. */
export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
  } catch {
    return false
  }
}

/**
 * Waits until none of the pids is alive: a SIGKILLed grandchild is reaped by
 * init a moment after its group is killed, so this polls briefly rather than
 * asserting at one instant. Fails with the survivors after ~2 s.
 */
export const awaitGone = (pids: ReadonlyArray<number>): Effect.Effect<void, Error> =>
  Effect.suspend(() => {
    const alive = pids.filter(isAlive)
    return alive.length === 0 ? Effect.void : Effect.fail(new Error(`still alive: ${alive.join(", ")}`))
  }).pipe(Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 100 }))

/** The pids whose parent is this process (the vitest worker running the test file). */
export const childPids = (): Array<number> =>
  readdirSync("/proc").filter((name) => /^\d+$/.test(name)).flatMap((name) => {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8")
      const parent = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      return parent === process.pid ? [Number(name)] : []
    } catch {
      return []
    }
  })

/** Runs `effect`, then waits until no child it started is alive. */
export const leavesNoProcess = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | Error, R> =>
  Effect.gen(function* () {
    const before = new Set(childPids())
    const result = yield* effect
    yield* awaitGone(childPids().filter((pid) => !before.has(pid)))
    return result
  })

/** The tagged error `E` narrowed to tag `T` (or `E` with that tag, when `E` names no tags). */
export type Tagged<E, T extends string> = [Extract<E, { readonly _tag: T }>] extends [never] ? E & { readonly _tag: T }
  : Extract<E, { readonly _tag: T }>

/**
 * Asserts that `error` has tag `tag` and matches `fields` (as `toMatchObject`
 * does), and returns it narrowed to that tag. The match runs on a spread copy,
 * `{ ...error }`: an error failed inside an `Effect.fn` span is a Proxy, and
 * vitest overflows its stack printing a failed match on it.
 */
export const expectTagged = <E, const T extends (E extends { readonly _tag: infer K extends string } ? K : string)>(
  error: E,
  tag: T,
  fields: { readonly [field: string]: unknown } = {},
  message?: string,
): Tagged<E, T> => {
  expect({ ...error as object }, message).toMatchObject({ _tag: tag, ...fields })
  return error as Tagged<E, T>
}

/** True once nothing accepts connections on the loopback port. */
export const portIsClosed = (port: number): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    const socket = Net.connect({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(false))
    })
    socket.once("error", () => resume(Effect.succeed(true)))
  })

/** A fresh directory, removed with everything in it when the scope closes. */
export const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "burn-p2p-test-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true })),
)

/** `bytes` cut at the given offsets (taken modulo its length + 1), empty pieces included. */
export const cut = (bytes: Uint8Array, offsets: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(offsets.map((o) => o % (bytes.length + 1)))].sort((a, b) => a - b)
  const pieces: Array<Uint8Array> = []
  let from = 0
  for (const point of points) {
    pieces.push(bytes.subarray(from, point))
    from = point
  }
  pieces.push(bytes.subarray(from))
  return pieces
}

/** A byte stream decoded as UTF-8 and joined. */
export const streamText = <E>(stream: Stream.Stream<Uint8Array, E>): Effect.Effect<string, E> =>
  stream.pipe(Stream.decodeText(), Stream.mkString)

/**
 * A workload module's shard CLI (`python -m <module> write-shards`): one
 * safetensors file per ordinal of payload seed `seed` in `dir`; the written
 * paths, or a defect quoting its stderr.
 */
export const writeShards = (
  module: string,
  config: JsonValue,
  dir: string,
  ordinals: ReadonlyArray<number>,
  seed = 0,
) =>
  Effect.gen(function* () {
    const proc = yield* Command.make(
      testPython,
      "-m",
      module,
      "write-shards",
      "--out",
      dir,
      "--config-json",
      JSON.stringify(config),
      "--ordinals",
      ordinals.join(","),
      "--seed",
      String(seed),
    ).pipe(Command.env({ PYTHONPATH: runtimeRoot }), Command.start)
    const [stdout, stderr, exitCode] = yield* Effect.all(
      [streamText(proc.stdout), streamText(proc.stderr), proc.exitCode],
      { concurrency: "unbounded" },
    )
    if (exitCode !== 0) return yield* Effect.dieMessage(`write-shards exited with ${exitCode}: ${stderr}`)
    return JSON.parse(stdout) as Array<string>
  }).pipe(Effect.scoped, Effect.provide(NodeContext.layer))

/** One step of the fault worker's plan: at request `at` (hello is 1), misbehave as `fault` says. */
export interface FaultStep {
  readonly at: number
  readonly fault: string
  readonly stderr?: string
  readonly [field: string]: unknown
}

/**
 * Options for `tests/fixtures/python/fault_worker.py` with this plan, the
 * events it recorded so far (one JSON object per line), and the cleanup of
 * its scratch directory.
 */
export const faultWorker = (
  plan: ReadonlyArray<FaultStep>,
  extra: Partial<PythonWorker.Options> & { ignoreSigterm?: boolean } = {},
) => {
  const dir = mkdtempSync(join(tmpdir(), "burn-p2p-fault-"))
  const record = join(dir, "record.jsonl")
  const { ignoreSigterm, ...rest } = extra
  const options: PythonWorker.Options = {
    workloadFactory: "fault_worker:ignored",
    workerModule: "fault_worker",
    moduleSearchRoots: [fixturesRoot],
    pythonExecutable: testPython,
    workloadConfig: { plan: plan as never, record, ignore_sigterm: ignoreSigterm ?? false },
    shutdownTimeout: 300,
    terminateGrace: 300,
    // These scenarios check what a death does to the service itself: no restart.
    restart: "never",
    ...rest,
  }
  const events = (): Array<Record<string, unknown>> =>
    existsSync(record) ? readFileSync(record, "utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line)) : []
  const cleanup = Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  return { options, events, cleanup }
}

type MicroEpoch = Extract<BatchRef, { readonly kind: "micro_epoch" }>

/** Microshards `ordinals` of payload seed `seed`, generated by the workload; `extra` adds payload keys. */
export const generated = (
  ordinals: ReadonlyArray<number>,
  seed: number,
  extra: { readonly [key: string]: JsonValue } = {},
): MicroEpoch => ({
  kind: "micro_epoch",
  leaseId: `lease-${seed}`,
  microshardIds: ordinals.map((ordinal) => `s${seed}-o${ordinal}`),
  ordinals,
  bytesLen: 0,
  pipelineKind: "generated-dataset",
  payload: { seed, ...extra },
})

/** Shard files written by `writeShards` for microshards `ordinals` of payload seed `seed`. */
export const cached = (shardPaths: ReadonlyArray<string>, ordinals: ReadonlyArray<number>, seed = 0): BatchRef => ({
  kind: "cached_microshard_group",
  shardPaths,
  microshardIds: ordinals.map((ordinal) => `s${seed}-o${ordinal}`),
  ordinals,
  bytesLen: shardPaths.reduce((sum, path) => sum + statSync(path).size, 0),
})

/** A batch for the echo workload and the fault worker, which answer `payload.echo` back as the `echo` metric. */
export const echoBatch = (payload: JsonValue, ordinals: ReadonlyArray<number> = []): MicroEpoch => ({
  kind: "micro_epoch",
  leaseId: "lease",
  microshardIds: ordinals.map(String),
  ordinals,
  bytesLen: 0,
  pipelineKind: "generated-dataset",
  payload,
})

export const patch = (values: RuntimePatch["values"]): RuntimePatch => ({
  patchId: "patch-1",
  class: "Hot",
  summary: "test patch",
  values,
  requiredClientCapabilities: [],
})

export const candidate = (modelId: string, sampleWeight: number, qualityWeight = 1): MergeCandidate => ({
  peerId: `peer-${modelId}`,
  headId: `head-${modelId}`,
  artifactId: `artifact-${modelId}`,
  modelId,
  sampleWeight,
  qualityWeight,
})

/**
 * raising_workload's awkward exceptions, raised by `evaluate` on a `Custom`
 * split named after the shape: each must keep its Python type and whole
 * message.
 */
export const awkwardExceptionsKeepTypeAndMessage: Effect.Effect<void, unknown, PythonWorker> = Effect.gen(
  function* () {
    const awkward = [
      ["bare", "RuntimeError", ""],
      ["multiline", "ValueError", "first line\nsecond line"],
      ["chained", "ValueError", "outer"],
    ] as const
    const worker = yield* PythonWorker
    const modelId = yield* worker.initModel("cpu")
    for (const [shape, errorType, remoteMessage] of awkward) {
      const error = yield* Effect.flip(worker.evaluate(modelId, { Custom: shape }))
      expectTagged(error, "RemoteError", { method: "evaluate", errorType, remoteMessage })
    }
  },
)

/** The worker's own id for a model id the client handed out (`g1:m3` -> `m3`): what Python's messages name. */
export const wireId = (modelId: string): string => modelId.slice(modelId.indexOf(":") + 1)
