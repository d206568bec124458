/**
 * `deno task bench`: the client's costs as ratios against baselines measured in
 * the same run, each beside its target (issue "Speed"), in two sections:
 *
 * - same core: Deno and every worker on cpu0;
 * - cross core: Deno on cpu0, every worker on cpu1;
 * - packs and aggregation: the worker's pack export/import (`bench/packs.py`,
 *   vs the reference's `struct.pack` way in the same run, target >= 1 GB/s each
 *   way; skipped when torch is missing) and the owner's aggregation of 8 packs
 *   of 10M parameters per policy (`bench/aggregate.ts`), as child processes;
 * - pool (`bench/pool.ts`): CPU-bound `trainWindow` throughput of a
 *   `PythonWorkerPool` of 2 vs one worker (target >= 1.8x) and `withWorker`'s
 *   per-call overhead; its workers are unpinned, free to use every core.
 *
 * Baselines: a bare `node:net` client (`bench/bare.ts`) driving a worker with
 * the same argv and env, and the seed Rust client (`rust-compat bench`,
 * skipped when cargo or Debian's crate sources are missing). Client and bare
 * blocks alternate ABBA, so drift hits both alike. The Rust client's hello and
 * spawn runs bracket ours (half before, half after); its 64 MiB runs, one
 * process each, rotate with ours and bare's.
 *
 * Pinning: this script re-executes itself under `taskset -c 0` (all of Deno's
 * threads on cpu0). Long-lived workers are pinned with `taskset -a -p -c N PID`
 * right after they start (ours through `worker.pid`); spawn runs start the
 * worker through a `taskset -c N python` wrapper in the cross-core section,
 * and inherit cpu0 in the same-core one. Every pin is read back with
 * `taskset -a -p -c PID` (`bench/pin.ts`) and the report says what it read.
 *
 *     deno task bench [--python PATH] [--calls N] [--spawn-runs N] [--train-runs N]
 *                     [--section same-core|cross-core|packs|pool|all] [--pack-runs N] [--aggregate-runs N]
 *                     [--pool-calls N]
 *                     [--rust|--no-rust] [--profile DIR]
 *     deno task bench --help
 *     deno task bench --profile .bench/profile --calls 20000   # a --cpu-prof of hello(), top self time printed
 *     bash scripts/rust-compat/run.sh --bench --worker-cpu 1   # the seed Rust client's figures alone, as JSON
 *
 * Permissions (the `bench` task): `--allow-run` (python at any path, taskset,
 * sh, cargo, the Rust binary, deno for --profile), `--allow-net=127.0.0.1`,
 * `--allow-read` (the interpreter, the runtime, node_modules, Debian's crate
 * folder), `--allow-write=/tmp` (the workers' config files and the pinning
 * wrapper: `os.tmpdir()`, so a TMPDIR elsewhere needs it added), `--allow-env`
 * (the worker inherits the environment), `--allow-sys=cpus,loadavg,osRelease,uid`
 * (the report's header). Deno asks for `--allow-all` to read anything under
 * `/proc`, so affinity and memory are read through `taskset` and `sh`.
 */
import { Command, HelpDoc, Options, Usage, ValidationError } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import { spawnSync } from "node:child_process"
import { realpathSync } from "node:fs"
import os from "node:os"
import { fileURLToPath } from "node:url"
import { type BatchRef, PythonWorker, Rpcs } from "../src/mod.ts"
import { bareSpawnToHello, type BareWorker, bareWorker, cpuMillis, frame, type WorkerLaunch } from "./bench/bare.ts"
import { peakAbove } from "./bench/memory.ts"
import { affinity, pin, pinnedPython, shellQuote } from "./bench/pin.ts"
import { poolSection } from "./bench/pool.ts"
import { profileHellos } from "./bench/profile.ts"
import { rustBench, rustBinary, type RustFigures } from "./bench/rust.ts"
import * as External from "./bench/external.ts"
import * as Table from "./bench/table.ts"

/** Set in the re-executed child, so this script re-executes once. */
const PINNED_ENV = "BURN_P2P_BENCH_PINNED"
/** The permissions of the `bench` task in deno.json; the pinned re-execution gets the same. */
export const PERMISSIONS = [
  "--allow-run",
  "--allow-net=127.0.0.1",
  "--allow-read",
  "--allow-write=/tmp",
  "--allow-env",
  "--allow-sys=cpus,loadavg,osRelease,uid",
]
/**
 * V8 flags of the pinned re-execution: `gc()` lets the memory figure start
 * from a collected heap (`bench/memory.ts`); no permission is involved.
 */
const V8_FLAGS = ["--v8-flags=--expose-gc"]
const MiB = 1024 * 1024
const KiB = 1024
const CONCURRENT_CALLERS = 64
/** A tracer other than Effect's own, whose spans are Effect's native ones: what making a span costs the client. */
const installedTracer: Tracer.Tracer = Effect.runSync(
  Effect.map(
    Effect.tracer,
    (builtIn) => Tracer.make({ span: (...args) => builtIn.span(...args), context: (f) => f() }),
  ),
)

// ---------------------------------------------------------------- statistics

const sorted = (samples: ArrayLike<number>): Array<number> => Array.from(samples).sort((a, b) => a - b)
const quantile = (samples: ArrayLike<number>, q: number): number => {
  const s = sorted(samples)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]
}
const median = (samples: ArrayLike<number>): number => {
  const s = sorted(samples)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}
const concat = (blocks: Array<Float64Array>): Float64Array => {
  const out = new Float64Array(blocks.reduce((total, block) => total + block.length, 0))
  let offset = 0
  for (const block of blocks) {
    out.set(block, offset)
    offset += block.length
  }
  return out
}

/**
 * Runs each of `runs` once per block, the order rotating by one each block,
 * so none always goes first (for two: ABBA).
 */
const rotate = <A, E>(blocks: number, runs: ReadonlyArray<() => Effect.Effect<A, E>>) =>
  Effect.gen(function* () {
    const out = runs.map(() => [] as Array<A>)
    for (let block = 0; block < blocks; block++) {
      for (let k = 0; k < runs.length; k++) {
        const which = (block + k) % runs.length
        out[which].push(yield* runs[which]())
      }
    }
    return out
  })

const promise = <A>(run: () => Promise<A>) =>
  Effect.tryPromise({ try: run, catch: (error) => error instanceof Error ? error : new Error(String(error)) })

// ---------------------------------------------------------------- units

const ms = (value: number) => `${value.toFixed(value < 10 ? 2 : 1)} ms`
const us = (value: number) => `${(value * 1000).toFixed(1)} µs`
const mbps = (value: number) => `${value.toFixed(1)} MB/s`
const perSecond = (value: number) => `${Math.round(value)}/s`
const xFrame = (value: number) => `${value.toFixed(4)}x frame`

// ---------------------------------------------------------------- the run's settings

interface Settings {
  readonly python: string
  readonly calls: number
  /** Untimed calls each client makes first, so both are measured at the JIT's steady state. */
  readonly warmup: number
  readonly spawnRuns: number
  readonly trainRuns: number
  readonly sections: ReadonlyArray<SectionSpec>
  readonly rust: boolean
  /** Whether the "packs and aggregation" section runs. */
  readonly packs: boolean
  readonly packRuns: number
  readonly aggregateRuns: number
  /** Whether the "pool" section runs (`bench/pool.ts`), with this many trainWindow calls per block. */
  readonly pool: boolean
  readonly poolCalls: number
}

interface SectionSpec {
  readonly name: "same-core" | "cross-core"
  readonly title: string
  /** The worker's CPU; the client is always on cpu0. */
  readonly workerCpu: number
  /** hello median target (ours / bare). */
  readonly helloTarget: number
}

const SECTIONS: ReadonlyArray<SectionSpec> = [
  { name: "same-core", title: "same core (client cpu0, worker cpu0)", workerCpu: 0, helloTarget: 1.5 },
  { name: "cross-core", title: "cross core (client cpu0, worker cpu1)", workerCpu: 1, helloTarget: 1.3 },
]

const FACTORY = "burn_p2p_python_runtime.reference_workload:make"
const RUNTIME_ROOT = fileURLToPath(new URL("../python", import.meta.url))
const MAX_FRAME_BYTES = 256 * MiB

const launchOf = (python: string): WorkerLaunch => ({
  python,
  factory: FACTORY,
  runtimeRoot: RUNTIME_ROOT,
  maxFrameBytes: MAX_FRAME_BYTES,
})
const layerOptionsOf = (python: string): PythonWorker.Options => ({
  workloadFactory: FACTORY,
  pythonExecutable: python,
  maxFrameBytes: MAX_FRAME_BYTES,
})

// ---------------------------------------------------------------- 1. spawn to a ready hello

/**
 * Milliseconds until `start` has a worker (it awaits the first `hello`); the
 * release is not timed. The worker's affinity is read back before the
 * release (untimed).
 */
const timedStart = <E>(start: Effect.Effect<PythonWorker.Service, E, Scope.Scope>) =>
  Effect.scoped(Effect.gen(function* () {
    const started = performance.now()
    const cpuBefore = cpuMillis()
    const worker = yield* start
    const elapsed = performance.now() - started
    return { elapsed, cpu: cpuMillis() - cpuBefore, affinity: affinity(worker.pid) }
  }))

/** Through `PythonWorker.layer`. */
const layerSpawn = (python: string) =>
  timedStart(Effect.map(Layer.build(PythonWorker.layer(layerOptionsOf(python))), Context.get(PythonWorker)))

/** Through `PythonWorker.make` on Node's executor (`NodeContext.layer`), which forks the client. */
const makeSpawn = (python: string) =>
  timedStart(PythonWorker.make(layerOptionsOf(python)).pipe(Effect.provide(NodeContext.layer)))

/**
 * Ours, the bare client, the bare client starting the worker as ours does
 * (own process group, connect token), and ours through `make` on Node's
 * executor, in rotating order.
 */
const measureSpawn = (settings: Settings, spawnPython: string) =>
  Effect.gen(function* () {
    const clients = [
      () => layerSpawn(spawnPython),
      () => bareSpawnToHello(launchOf(spawnPython)),
      () => bareSpawnToHello({ ...launchOf(spawnPython), ourProcessSetup: true }),
      () => makeSpawn(spawnPython),
    ]
    // One untimed round of each warms the page cache and Deno's lazy module paths.
    for (const run of clients) yield* run()
    const runs = yield* rotate<{ readonly elapsed: number; readonly cpu: number; readonly affinity: string }, unknown>(
      settings.spawnRuns,
      clients,
    )
    const [ours, bare, bareOurSetup, nodeExecutor] = runs.map((series) => median(series.map((run) => run.elapsed)))
    const [oursCpu, bareCpu] = runs.map((series) => median(series.map((run) => run.cpu)))
    return {
      ours,
      bare,
      bareOurSetup,
      nodeExecutor,
      oursCpu,
      bareCpu,
      affinities: new Set(runs.flat().map((run) => run.affinity)),
    }
  })

// ---------------------------------------------------------------- 2. hello round trips

/** `n` calls of `call()`, each a fresh Effect built inside the loop, as an application writes it. */
const oursLoop = (call: () => Effect.Effect<unknown, unknown>, n: number) =>
  Effect.gen(function* () {
    const samples = new Float64Array(n)
    for (let i = 0; i < n; i++) {
      const started = performance.now()
      yield* call()
      samples[i] = performance.now() - started
    }
    return samples
  })

const bareLoop = (worker: BareWorker, n: number) =>
  promise(async () => {
    const samples = new Float64Array(n)
    for (let i = 0; i < n; i++) {
      const started = performance.now()
      await worker.call("hello", null)
      samples[i] = performance.now() - started
    }
    return samples
  })

const measureHello = (
  settings: Settings,
  call: () => Effect.Effect<unknown, unknown>,
  bare: BareWorker,
  tracer?: Tracer.Tracer,
) =>
  Effect.gen(function* () {
    const blocks = Math.min(10, settings.calls)
    const perBlock = Math.ceil(settings.calls / blocks)
    const ours = (n: number) => tracer === undefined ? oursLoop(call, n) : Effect.withTracer(oursLoop(call, n), tracer)
    yield* ours(settings.warmup)
    yield* bareLoop(bare, settings.warmup)
    const [client, baseline] = yield* rotate<Float64Array, unknown>(blocks, [
      () => ours(perBlock),
      () => bareLoop(bare, perBlock),
    ])
    const a = concat(client)
    const b = concat(baseline)
    return {
      n: a.length,
      ours: { median: median(a), p99: quantile(a, 0.99) },
      bare: { median: median(b), p99: quantile(b, 0.99) },
    }
  })

/** Calls per second: `callers` fibers sharing `total` hello calls vs the same calls one after another. */
const measureConcurrency = (settings: Settings, worker: PythonWorker.Service) =>
  Effect.gen(function* () {
    const each = Math.max(1, Math.floor(settings.calls / CONCURRENT_CALLERS / 2))
    const total = each * CONCURRENT_CALLERS
    const timed = (self: Effect.Effect<unknown, unknown>) =>
      Effect.gen(function* () {
        const started = performance.now()
        yield* self
        return total / ((performance.now() - started) / 1000)
      })
    const sequential = timed(Effect.gen(function* () {
      for (let i = 0; i < total; i++) yield* worker.hello()
    }))
    const concurrent = timed(Effect.forEach(
      Array.from({ length: CONCURRENT_CALLERS }),
      () =>
        Effect.gen(function* () {
          for (let i = 0; i < each; i++) yield* worker.hello()
        }),
      { concurrency: "unbounded", discard: true },
    ))
    yield* concurrent
    yield* sequential
    const [client, baseline] = yield* rotate<number, unknown>(6, [() => concurrent, () => sequential])
    return { total, concurrent: median(client), sequential: median(baseline) }
  })

// ---------------------------------------------------------------- 3. trainWindow

const batchOf = (paddingBytes: number): BatchRef & { kind: "micro_epoch" } => ({
  kind: "micro_epoch",
  leaseId: "bench",
  microshardIds: ["bench-0"],
  ordinals: [0],
  bytesLen: paddingBytes,
  pipelineKind: "generated-dataset",
  payload: { seed: 1, examples_per_microshard: 8, padding: "x".repeat(paddingBytes) },
})

/** The wire form of the params, written out by hand: what any client must send. */
const wireParams = (modelId: string, batch: BatchRef & { kind: "micro_epoch" }) => ({
  model_id: modelId,
  batches: [{
    kind: batch.kind,
    lease_id: batch.leaseId,
    microshard_ids: batch.microshardIds,
    ordinals: batch.ordinals,
    bytes_len: batch.bytesLen,
    pipeline_kind: batch.pipelineKind,
    payload: batch.payload,
  }],
})

interface TrainFigures {
  readonly frameBytes: number
  readonly ours: number
  readonly bare: number
  /** Peak resident bytes above idle during the call, the largest over the runs (see `bench/memory.ts`). */
  readonly oursPeak: number
  readonly barePeak: number
  /** The seed Rust client's median, from runs interleaved with these; or why it has none. */
  readonly rust: number | string | undefined
}

const measureTrain = (
  worker: PythonWorker.Service,
  bare: BareWorker,
  models: { readonly ours: string; readonly bare: string },
  paddingBytes: number,
  runs: number,
  memory: boolean,
  rust?: () => Effect.Effect<number, string>,
) =>
  Effect.gen(function* () {
    const batch = batchOf(paddingBytes)
    const bareParams = wireParams(models.bare, batch)
    // The baseline must send the bytes the client sends: compare the params' JSON once.
    // The client tags ids with the worker's generation (`g1:m1`); the wire carries the worker's own.
    const oursOnWire = models.ours.slice(models.ours.indexOf(":") + 1)
    const clientJson = JSON.stringify(
      Schema.encodeSync(Rpcs.trainWindow.params)({ modelId: oursOnWire, batches: [batch] }),
    )
    const bareJson = JSON.stringify(bareParams)
    if (clientJson.length !== bareJson.length || clientJson.replace(oursOnWire, models.bare) !== bareJson) {
      return yield* Effect.fail(new Error(`baseline params differ from the client's at ${paddingBytes} bytes`))
    }
    const frameBytes = frame(`{"id":1,"method":"train_window","params":${bareJson}}`).length
    const oursRun = Effect.gen(function* () {
      const started = performance.now()
      yield* worker.trainWindow(models.ours, [batch])
      return performance.now() - started
    })
    const bareRun = promise(async () => {
      const started = performance.now()
      await bare.call("train_window", bareParams)
      return performance.now() - started
    })
    const withPeak = (self: Effect.Effect<number, unknown>) =>
      memory ? peakAbove(Deno.pid, self) : Effect.map(self, (value) => ({ value, peakBytes: 0, collected: false }))
    // Warm-up also flattens the padding string (`repeat` builds a rope); small calls get
    // as many as the JIT needs to settle, the 64 MiB ones one each.
    const warmups = memory ? 1 : 1000
    for (let i = 0; i < warmups; i++) yield* oursRun
    for (let i = 0; i < warmups; i++) yield* bareRun
    type Run = { readonly value: number; readonly peakBytes: number; readonly why?: string }
    const clients: Array<() => Effect.Effect<Run, unknown>> = [() => withPeak(oursRun), () => withPeak(bareRun)]
    // The Rust client takes its turn in the same rotation, so drift in the host's speed hits the three
    // alike (runs before and after the section, as its other figures are, would not).
    if (rust !== undefined) {
      clients.push(() =>
        Effect.match(rust(), {
          onSuccess: (value) => ({ value, peakBytes: 0 }),
          onFailure: (why) => ({ value: Number.NaN, peakBytes: 0, why }),
        })
      )
    }
    const [client, baseline, third] = yield* rotate(runs, clients)
    return {
      frameBytes,
      ours: median(client.map((run) => run.value)),
      bare: median(baseline.map((run) => run.value)),
      oursPeak: Math.max(...client.map((run) => run.peakBytes)),
      barePeak: Math.max(...baseline.map((run) => run.peakBytes)),
      rust: third === undefined
        ? undefined
        : third.find((run) => run.why !== undefined)?.why ?? median(third.map((run) => run.value)),
    } satisfies TrainFigures
  })

// ---------------------------------------------------------------- one section

const runSection = (settings: Settings, spec: SectionSpec, rustBinary: Option.Option<string> | string) =>
  Effect.gen(function* () {
    const section = Table.make(spec.title)
    const cpu = spec.workerCpu
    // Same core: the worker inherits cpu0 from this (pinned) process. Cross core: a wrapper pins it from exec on.
    const wrapper = cpu === 0 ? undefined : pinnedPython(cpu, settings.python)
    yield* Effect.addFinalizer(() => Effect.sync(() => wrapper?.remove()))
    const spawnPython = wrapper?.path ?? settings.python

    const binary = typeof rustBinary === "string" ? undefined : Option.getOrUndefined(rustBinary)
    // Its hello and spawn figures: half the samples before the section, half after (1 MiB trains, unused).
    const rustRuns = (half: number) =>
      binary === undefined ? Effect.succeed(undefined) : rustBench(binary, {
        python: settings.python,
        spawnPython,
        calls: Math.max(100, Math.ceil(settings.calls / 2)),
        spawnRuns: Math.max(2, Math.ceil(settings.spawnRuns / 2)),
        trainRuns: 1,
        trainMib: 1,
        workerCpu: cpu,
        label: `${spec.name} ${half}`,
      })
    // Its 64 MiB figure: one process per run (a warm-up, then one timed), in rotation with ours and bare's.
    const rustTrain = binary === undefined ? undefined : () =>
      Effect.flatMap(
        rustBench(binary, {
          python: settings.python,
          spawnPython,
          calls: 1,
          spawnRuns: 1,
          trainRuns: 1,
          trainMib: 64,
          workerCpu: cpu,
          label: `${spec.name} 64 MiB`,
        }),
        (figures) =>
          typeof figures === "string" ? Effect.fail(figures) : Effect.succeed(figures.train_window.median_ms),
      )
    const rustBefore = yield* rustRuns(1)

    const spawn = yield* measureSpawn(settings, spawnPython)

    const long = yield* Effect.scoped(Effect.gen(function* () {
      const worker = Context.get(yield* Layer.build(PythonWorker.layer(layerOptionsOf(settings.python))), PythonWorker)
      const bare = yield* bareWorker(launchOf(settings.python))
      const pins = { ours: pin(worker.pid, cpu), bare: pin(bare.pid, cpu) }
      const spanned = yield* measureHello(settings, () => worker.hello(), bare)
      const unspanned = yield* measureHello(settings, () => worker.call(Rpcs.hello, null), bare)
      // Under Effect's own tracer (none installed) a call makes no span, since nobody can read it; under any other, each does.
      const traced = yield* measureHello(settings, () => worker.hello(), bare, installedTracer)
      // What the design's one Effect per call costs by itself: the bare client's call, resumed through a fiber.
      const floor = yield* measureHello(settings, () => Effect.tryPromise(() => bare.call("hello", null)), bare)
      const concurrency = yield* measureConcurrency(settings, worker)
      const models = {
        ours: yield* worker.initModel("cpu"),
        bare: ((yield* promise(() => bare.call("init_model", { device: "cpu" }))) as { model_id: string }).model_id,
      }
      const small = yield* measureTrain(worker, bare, models, KiB, Math.max(50, settings.trainRuns * 20), false)
      const large = yield* measureTrain(worker, bare, models, 64 * MiB, settings.trainRuns, true, rustTrain)
      return { pins, spanned, unspanned, traced, floor, concurrency, small, large }
    }))

    const rustAfter = yield* rustRuns(2)
    const rust = mergeRust(rustBefore, rustAfter)

    const { spanned, unspanned, traced, floor, concurrency, small, large } = long
    Table.compare(section, {
      figure: `hello(), fresh Effect per call, spans on, no tracer installed: median (n=${spanned.n}) vs bare`,
      ours: spanned.ours.median,
      baseline: spanned.bare.median,
      unit: us,
      target: Table.atMost(spec.helloTarget),
    })
    Table.compare(section, {
      figure: `hello(): p99 vs bare p99`,
      ours: spanned.ours.p99,
      baseline: spanned.bare.p99,
      unit: us,
      target: Table.atMost(3),
    })
    Table.compare(section, {
      figure: `worker.call(Rpcs.hello, null): median vs bare`,
      ours: unspanned.ours.median,
      baseline: unspanned.bare.median,
      unit: us,
      target: Table.atMost(1.2),
    })
    Table.compare(section, {
      figure: `worker.call(Rpcs.hello, null): p99 vs bare p99`,
      ours: unspanned.ours.p99,
      baseline: unspanned.bare.p99,
      unit: us,
    })
    Table.compare(section, {
      figure: `hello() under an installed tracer (each call makes its span): median vs bare`,
      ours: traced.ours.median,
      baseline: traced.bare.median,
      unit: us,
    })
    Table.compare(section, {
      figure: `floor: the bare call in one Effect (Effect.tryPromise) vs bare`,
      ours: floor.ours.median,
      baseline: floor.bare.median,
      unit: us,
    })
    Table.compare(section, {
      figure: `trainWindow 1 KiB params, median (n=${Math.max(50, settings.trainRuns * 20)}) vs bare`,
      ours: small.ours,
      baseline: small.bare,
      unit: ms,
      target: Table.atMost(1.3),
    })
    Table.compare(section, {
      figure: `spawn -> ready hello, median (n=${settings.spawnRuns}) vs bare`,
      ours: spawn.ours,
      baseline: spawn.bare,
      unit: ms,
      target: Table.plusAtMost(3, ms),
    })
    Table.compare(section, {
      // All of it is on the start's path when the worker shares the client's core.
      figure: `spawn -> ready hello: the client's CPU time, every thread (median) vs bare`,
      ours: spawn.oursCpu,
      baseline: spawn.bareCpu,
      unit: ms,
    })
    Table.compare(section, {
      figure: `spawn -> ready hello vs bare starting it as ours does (own process group, connect token)`,
      ours: spawn.ours,
      baseline: spawn.bareOurSetup,
      unit: ms,
    })
    Table.compare(section, {
      figure: `spawn -> ready hello: layer vs make on NodeContext.layer (Node's executor forks the client)`,
      ours: spawn.ours,
      baseline: spawn.nodeExecutor,
      unit: ms,
    })
    const throughput = (millis: number) => large.frameBytes / 1e6 / (millis / 1000)
    Table.compare(section, {
      figure: `trainWindow 64 MiB, throughput (n=${settings.trainRuns}) vs bare`,
      ours: throughput(large.ours),
      baseline: throughput(large.bare),
      unit: mbps,
      target: Table.atLeast(1),
    })
    Table.compare(section, {
      figure: `trainWindow 64 MiB, client peak RSS above idle (bare for scale)`,
      ours: large.oursPeak / large.frameBytes,
      baseline: large.barePeak / large.frameBytes,
      unit: xFrame,
      target: Table.absolute("<= 2.00x frame", (ours) => ours <= 2),
    })
    Table.compare(section, {
      figure: `${CONCURRENT_CALLERS} concurrent callers vs sequential, hello/s (${concurrency.total} calls)`,
      ours: concurrency.concurrent,
      baseline: concurrency.sequential,
      unit: perSecond,
      target: Table.atLeast(0.95),
    })
    if (rust === undefined || typeof rust === "string") {
      const why = rust ?? (typeof rustBinary === "string" ? rustBinary : "--no-rust")
      for (
        const figure of ["hello() median vs seed Rust", "spawn -> ready hello vs seed Rust"]
      ) {
        Table.skip(section, figure, why)
      }
    } else {
      Table.compare(section, {
        figure: `hello() median vs seed Rust client (n=${rust.hello.n})`,
        ours: spanned.ours.median,
        baseline: rust.hello.median_us / 1000,
        unit: us,
      })
      Table.compare(section, {
        figure: `hello() p99 vs seed Rust client p99`,
        ours: spanned.ours.p99,
        baseline: rust.hello.p99_us / 1000,
        unit: us,
      })
      Table.compare(section, {
        figure: `spawn -> ready hello vs seed Rust client (25 ms accept poll)`,
        ours: spawn.ours,
        baseline: rust.spawn_to_hello.median_ms,
        unit: ms,
      })
    }
    if (typeof large.rust !== "number") {
      const why = large.rust ?? (typeof rustBinary === "string" ? rustBinary : "--no-rust")
      Table.skip(section, "64 MiB vs seed Rust", why)
    } else {
      Table.compare(section, {
        figure: `trainWindow 64 MiB, throughput vs seed Rust client (n=${settings.trainRuns}, in rotation with ours)`,
        ours: throughput(large.ours),
        baseline: throughput(large.rust),
        unit: mbps,
        target: Table.atLeast(1),
      })
    }
    Table.note(
      section,
      `pinning read back with taskset: client ${
        affinity(Deno.pid)
      }; long-lived workers ours ${long.pins.ours}, bare ${long.pins.bare}` +
        `${
          rust !== undefined && typeof rust !== "string"
            ? `, Rust ${rust.worker_affinity} (Rust client ${rust.client_affinity})`
            : ""
        }; ` +
        `spawn runs ${[...spawn.affinities].join(", ")} (${
          wrapper === undefined ? "inherited from the client" : `via ${spawnPython}`
        })`,
    )
    Table.note(
      section,
      `64 MiB frame = ${large.frameBytes} bytes; throughput = frame bytes / 10^6 / median seconds per call (send, train, answer); ` +
        `ours ${ms(large.ours)}, bare ${ms(large.bare)} per call`,
    )
    const kib = (bytes: number) => `${Math.round(bytes / 1024)} KiB`
    Table.note(
      section,
      `peak RSS above idle (kernel VmHWM after clear_refs, after gc(); the largest of ${settings.trainRuns} calls): ` +
        `ours ${kib(large.oursPeak)}, bare ${kib(large.barePeak)}; 2 x frame = ${kib(2 * large.frameBytes)}`,
    )
    return section
  })

type RustRun = RustFigures | string | undefined

/** Averages the bracketing Rust runs (each half of the samples); a string is why it did not run. */
const mergeRust = (before: RustRun, after: RustRun): RustRun => {
  if (typeof before !== "object" || typeof after !== "object") {
    return typeof before === "string" ? before : typeof after === "string" ? after : undefined
  }
  const mean = (a: number, b: number) => (a + b) / 2
  return {
    ...after,
    hello: {
      n: before.hello.n + after.hello.n,
      median_us: mean(before.hello.median_us, after.hello.median_us),
      p99_us: mean(before.hello.p99_us, after.hello.p99_us),
    },
    spawn_to_hello: {
      ...after.spawn_to_hello,
      n: before.spawn_to_hello.n + after.spawn_to_hello.n,
      median_ms: mean(before.spawn_to_hello.median_ms, after.spawn_to_hello.median_ms),
    },
    worker_affinity: [...new Set([before.worker_affinity, after.worker_affinity])].join("|"),
  }
}

// ---------------------------------------------------------------- 4. packs and aggregation

const PACKS_SCRIPT = fileURLToPath(new URL("./bench/packs.py", import.meta.url))
const AGGREGATE_SCRIPT = fileURLToPath(new URL("./bench/aggregate.ts", import.meta.url))
/** The issue's target for the worker's pack export and import, each way. */
const PACK_TARGET_MBPS = 1000
const AGGREGATE_PEERS = 8
const AGGREGATE_PARAMS = 10_000_000

/** The last JSON line of `scripts/bench/packs.py`. */
interface PackFigures {
  readonly export_mb_s: number
  readonly import_mb_s: number
  readonly baseline_export_mb_s: number
  readonly baseline_import_mb_s: number
  readonly parameters: number
  readonly bytes: number
  readonly runs: number
  readonly byte_identical: boolean
}

/** The last JSON line of `scripts/bench/aggregate.ts`. */
interface AggregateFigures {
  readonly peers: number
  readonly params: number
  readonly runs: number
  readonly policies: ReadonlyArray<{ readonly name: string; readonly fusedMs: number; readonly givenMs: number }>
  readonly pseudoGradientsMs: number
  readonly outerStepMs: number
  readonly packWriteMBps: number
  readonly packReadMBps: number
}

/** Why `python` cannot import torch, or undefined when it can. */
const torchMissing = (python: string): string | undefined => {
  const probe = spawnSync(python, ["-c", "import torch"], { encoding: "utf8" })
  if (probe.status === 0) return undefined
  const why = (probe.stderr ?? "").trim().split("\n").at(-1) || probe.error?.message || `exit ${probe.status}`
  return `torch is not importable by ${python} (${why})`
}

/**
 * The worker's pack I/O (`bench/packs.py`: ours vs the reference's
 * `struct.pack` way, in the same run) and the owner's aggregation of 8 packs
 * of 10M parameters (`bench/aggregate.ts`: each policy fused vs materialising
 * the pseudo-gradients first). Both run as child processes on cpu0 (inherited
 * from this pinned process), one after the other.
 */
const packsSection = (settings: Settings) =>
  Effect.gen(function* () {
    const section = Table.make(
      `packs and aggregation (${AGGREGATE_PEERS} peers x ${AGGREGATE_PARAMS / 1e6}M parameters; children on cpu0)`,
    )
    const exportFigure = `worker pack export, 10M params, median (n=${settings.packRuns}) vs struct.pack`
    const importFigure = `worker pack import, 10M params, median (n=${settings.packRuns}) vs struct.unpack`
    const noTorch = torchMissing(settings.python)
    const packs: PackFigures | string = noTorch ?? (yield* External.json<PackFigures>(
      settings.python,
      [PACKS_SCRIPT, "--runs", String(settings.packRuns)],
      { env: { PYTHONPATH: RUNTIME_ROOT } },
    ))
    const target = Table.absolute(
      `>= ${PACK_TARGET_MBPS} MB/s`,
      (ours) => ours >= PACK_TARGET_MBPS,
    )
    if (typeof packs === "string") {
      Table.skip(section, exportFigure, packs)
      Table.skip(section, importFigure, packs)
    } else {
      Table.compare(section, {
        figure: exportFigure,
        ours: packs.export_mb_s,
        baseline: packs.baseline_export_mb_s,
        unit: mbps,
        target,
      })
      Table.compare(section, {
        figure: importFigure,
        ours: packs.import_mb_s,
        baseline: packs.baseline_import_mb_s,
        unit: mbps,
        target,
      })
    }

    const aggregate = yield* External.json<AggregateFigures>(Deno.execPath(), [
      "run",
      "-A",
      AGGREGATE_SCRIPT,
      "--peers",
      String(AGGREGATE_PEERS),
      "--params",
      String(AGGREGATE_PARAMS),
      "--runs",
      String(settings.aggregateRuns),
    ])
    if (typeof aggregate === "string" || !Array.isArray(aggregate.policies)) {
      const why = typeof aggregate === "string" ? aggregate : "bench/aggregate.ts printed no policies"
      for (const name of ["Mean", "CoordinateMedian", "SignMajority"]) {
        Table.skip(section, `aggregate ${name}, ${AGGREGATE_PEERS} x 10M`, why)
      }
    } else {
      for (const policy of aggregate.policies) {
        Table.compare(section, {
          figure: `aggregate ${policy.name}, ${aggregate.peers} x ${
            aggregate.params / 1e6
          }M, fused θ−θᵢ vs Δᵢ materialised + aggregate (n=${aggregate.runs})`,
          ours: policy.fusedMs,
          baseline: aggregate.pseudoGradientsMs + policy.givenMs,
          unit: ms,
          target: Table.atMost(1),
        })
      }
      Table.note(
        section,
        `aggregate.ts: pseudoGradients (materialise ${aggregate.peers}) ${ms(aggregate.pseudoGradientsMs)}; ` +
          aggregate.policies.map((policy) => `${policy.name} given Δᵢ ${ms(policy.givenMs)}`).join(", ") +
          `; outerStep (lr 0.7, μ 0.9, Nesterov, wd 1e-4) ${ms(aggregate.outerStepMs)}; ` +
          `owner-side ParameterPack.write ${mbps(aggregate.packWriteMBps)}, read ${
            mbps(aggregate.packReadMBps)
          } (warm cache)`,
      )
    }
    if (typeof packs !== "string") {
      Table.note(
        section,
        `packs.py: ${packs.parameters} float32 parameters (${(packs.bytes / 1e6).toFixed(1)} MB); ` +
          `MB/s = values bytes / 10^6 / median seconds; ratio = ours / the reference's struct way in the same run; ` +
          `packs byte-identical: ${packs.byte_identical ? "yes" : "NO"}`,
      )
    }
    return section
  })

// ---------------------------------------------------------------- the program

const environment = (settings: Settings, args: ReadonlyArray<string>) => {
  const cpus = os.cpus()
  const python = settings.python
  const probe = spawnSync(python, ["-c", "import sys; print(sys.version.split()[0])"], { encoding: "utf8" })
  return [
    `command:  taskset -c 0 deno run ${[...V8_FLAGS, ...PERMISSIONS].join(" ")} scripts/bench.ts ${
      args.map(shellQuote).join(" ")
    }`,
    `client:   pid ${Deno.pid}, CPU affinity ${affinity(Deno.pid)} (every thread, read with taskset -a -p -c)`,
    `cores:    ${cpus.length} x ${cpus[0]?.model ?? "?"}; ${os.type()} ${os.release()}`,
    `python:   ${python} -> ${realpathSync(python)} (${probe.stdout.trim()})`,
    `deno:     ${Deno.version.deno} (V8 ${Deno.version.v8})`,
    `load:     ${
      os.loadavg().map((load) => load.toFixed(2)).join(" ")
    } (1/5/15 min; other processes skew every figure)`,
    `worker:   ${python} -m burn_p2p_python_runtime.worker --factory ${FACTORY} --config-file FILE ` +
    `--connect-host 127.0.0.1 --connect-port PORT`,
    `          PYTHONPATH=${RUNTIME_ROOT} PYTHONUNBUFFERED=1, stdin a pipe (exit on EOF); the Rust client: stdin /dev/null`,
    `runs:     spawn ${settings.spawnRuns} each; hello ${settings.calls} calls each (ABBA blocks, after ${settings.warmup} untimed); ` +
    `trainWindow 1 KiB ${Math.max(50, settings.trainRuns * 20)}, 64 MiB ${settings.trainRuns} runs each` +
    (settings.packs ? `; pack I/O ${settings.packRuns}, aggregation ${settings.aggregateRuns} runs` : ""),
  ].join("\n")
}

const bench = (settings: Settings, args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const probe = spawnSync(settings.python, ["-c", "pass"], { encoding: "utf8" })
    if (probe.status !== 0) {
      return yield* Effect.fail(
        new Error(`--python ${settings.python} does not run: ${probe.error?.message ?? probe.stderr}`),
      )
    }
    console.log(environment(settings, args))
    const rust: Option.Option<string> | string = settings.rust ? yield* rustBinaryOrWhy : Option.none()
    if (settings.sections.length === 0) console.log("rust:     not used by this section")
    else if (typeof rust === "string") console.log(`rust:     skipped: ${rust}`)
    else if (Option.isSome(rust)) {
      console.log(`rust:     ${rust.value} bench (built once, cached under scripts/rust-compat/target/)`)
    } else console.log("rust:     skipped: --no-rust")
    for (const spec of settings.sections) {
      const section = yield* Effect.scoped(runSection(settings, spec, rust))
      console.log(`\n${Table.render(section)}`)
    }
    if (settings.packs) console.log(`\n${Table.render(yield* packsSection(settings))}`)
    if (settings.pool) {
      const pool = { python: settings.python, calls: settings.poolCalls, helloCalls: Math.min(settings.calls, 2000) }
      console.log(`\n${Table.render(yield* Effect.scoped(poolSection(pool)))}`)
    }
  })

/** The Rust binary (built if needed), or why it cannot be had. */
const rustBinaryOrWhy: Effect.Effect<Option.Option<string> | string> = Effect.sync(() => {
  const why = rustBinary()
  return why.ok ? Option.some(why.binary) : why.reason
})

// ---------------------------------------------------------------- CLI

const positive = (name: string, fallback: number, description: string) =>
  Options.integer(name).pipe(
    Options.withDefault(fallback),
    Options.withDescription(description),
    Options.mapEffect((value) =>
      value >= 1
        ? Effect.succeed(value)
        : Effect.fail(ValidationError.invalidValue(HelpDoc.p(`--${name} must be a positive integer, got ${value}`)))
    ),
  )

const command = Command.make("bench", {
  python: Options.text("python").pipe(
    Options.withDefault("/usr/bin/python3"),
    Options.withDescription("the Python interpreter every worker runs on"),
  ),
  calls: positive("calls", 5000, "hello calls per client and figure (ABBA blocks after a warm-up)"),
  warmup: positive(
    "warmup",
    50000,
    "untimed hello calls per client before each hello figure: Effect's code is still getting faster after 40,000 calls",
  ),
  spawnRuns: positive("spawn-runs", 20, "spawn -> ready hello runs per client"),
  trainRuns: positive("train-runs", 5, "trainWindow 64 MiB runs per client (1 KiB: 20x as many)"),
  section: Options.choice("section", ["same-core", "cross-core", "packs", "pool", "all"]).pipe(
    Options.withDefault("all" as const),
    Options.withDescription(
      "same-core: worker on cpu0 with the client; cross-core: worker on cpu1; packs: pack I/O and aggregation; " +
        "pool: a PythonWorkerPool of 2 (workers unpinned) vs one worker",
    ),
  ),
  packRuns: positive("pack-runs", 3, "pack export/import runs each, ours and the struct baseline (bench/packs.py)"),
  aggregateRuns: positive(
    "aggregate-runs",
    3,
    "runs per aggregation figure (their median), 8 peers x 10M (bench/aggregate.ts)",
  ),
  poolCalls: positive("pool-calls", 32, "CPU-bound trainWindow calls per block, pool and one worker (bench/pool.ts)"),
  noRust: Options.boolean("no-rust", { negationNames: ["rust"] }).pipe(
    Options.withDescription("--rust (default) adds the seed Rust client as a baseline when cargo can build it"),
  ),
  profile: Options.text("profile").pipe(
    Options.optional,
    Options.withDescription(
      "instead of the bench: write a deno --cpu-prof profile of --calls hello() calls to this folder (created if missing), then print its top functions by self time",
    ),
  ),
}, (flags) =>
  Effect.gen(function* () {
    const args = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args
    if (Deno.env.get(PINNED_ENV) !== "1") return yield* reexecPinned(args)
    if (Option.isSome(flags.profile)) {
      return yield* profileHellos({
        python: flags.python,
        calls: flags.calls,
        warmup: flags.warmup,
        dir: flags.profile.value,
        permissions: PERMISSIONS,
      })
    }
    yield* bench({
      python: flags.python,
      calls: flags.calls,
      warmup: flags.warmup,
      spawnRuns: flags.spawnRuns,
      trainRuns: flags.trainRuns,
      sections: SECTIONS.filter((spec) => flags.section === "all" || flags.section === spec.name),
      rust: !flags.noRust && flags.section !== "packs" && flags.section !== "pool",
      packs: flags.section === "all" || flags.section === "packs",
      packRuns: flags.packRuns,
      aggregateRuns: flags.aggregateRuns,
      pool: flags.section === "all" || flags.section === "pool",
      poolCalls: flags.poolCalls,
    }, args)
  })).pipe(Command.withDescription("The client's costs as ratios against baselines measured in the same run."))

/** Runs this script again under `taskset -c 0` with the same permissions and arguments; exits with its code. */
const reexecPinned = (args: ReadonlyArray<string>) =>
  Effect.async<never>(() => {
    // The terminal's Ctrl-C reaches the child too (same process group): let it clean up, then exit with its code.
    const child = new Deno.Command("taskset", {
      args: ["-c", "0", Deno.execPath(), "run", ...V8_FLAGS, ...PERMISSIONS, fileURLToPath(import.meta.url), ...args],
      env: { [PINNED_ENV]: "1" },
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn()
    Deno.addSignalListener("SIGINT", () => {})
    Deno.addSignalListener("SIGTERM", () => child.kill("SIGTERM"))
    child.status.then((status) => Deno.exit(status.code))
  })

const cli = Command.run(command, { name: "deno task bench", version: "0.1.0" })

// `deno task bench -- --calls 100` forwards the `--` itself.
const argv = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args

/** @effect/cli has printed what was wrong; add the usage and leave with 2, as a shell tool does. */
const usageError = Effect.sync(() => {
  const usage = HelpDoc.toAnsiText(Usage.getHelp(Command.getUsage(command))).trimEnd()
  console.error(`\nusage: deno task bench ${usage.replace(/^\$?\s*bench\s*/, "")}\n(--help for details)`)
  return "usage" as const
})

const main = cli(["deno", "scripts/bench.ts", ...argv]).pipe(
  Effect.catchIf(ValidationError.isValidationError, () => usageError),
  Effect.provide(NodeContext.layer),
)

// Ctrl-C interrupts the program (its scopes stop every worker); exit 130 then, as a shell would.
NodeRuntime.runMain(main, {
  teardown: (exit, onExit) =>
    onExit(
      Exit.isSuccess(exit) ? (exit.value === "usage" ? 2 : 0) : Cause.isInterruptedOnly(exit.cause) ? 130 : 1,
    ),
})
