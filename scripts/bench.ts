/**
 * `deno task bench`: the client's costs beside the floor they sit on, in one run.
 *
 * 1. Spawn to a ready `hello`: `PythonWorker.layer` acquire vs `python -c pass`.
 * 2. Small call round trip: `hello()` through the service vs a bare `node:net`
 *    client speaking the same frames to a second worker (same argv and env).
 * 3. `trainWindow` with 1, 16 and 64 MiB of payload vs the bare client sending
 *    the same request bytes.
 *
 * Client and baseline blocks alternate (ABBA) so drift hits both alike.
 *
 *     deno task bench [--python PATH] [--calls N] [--spawn-runs N] [--train-runs N] [--pin]
 *
 * `--pin` re-executes this script under `taskset -c 0`, so Deno and both
 * workers share one core: a loopback round trip then costs ~15 µs instead of
 * ~100 µs across cores (PROTOCOL.md), which makes client overhead visible.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { spawnSync } from "node:child_process"
import { readFileSync, realpathSync } from "node:fs"
import os from "node:os"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { type BatchRef, PythonWorker, Rpcs } from "../src/mod.ts"
import {
  bareSpawnToHello,
  bareStart,
  type BareWorker,
  bareWorker,
  frame,
  workerArgs,
  type WorkerLaunch,
} from "./bench/bare.ts"

/** Set in the re-executed child, so `--pin` re-executes once. */
const PINNED_ENV = "BURN_P2P_BENCH_PINNED"
const MiB = 1024 * 1024
const SIZES_MIB = [1, 16, 64]

// `deno task bench -- --pin` forwards the `--` itself.
const args = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args
const { values: flags } = parseArgs({
  args,
  options: {
    python: { type: "string", default: "/usr/bin/python3" },
    calls: { type: "string", default: "5000" },
    "spawn-runs": { type: "string", default: "20" },
    "train-runs": { type: "string", default: "5" },
    pin: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
})

if (flags.help) {
  console.log("deno task bench [--python PATH] [--calls N] [--spawn-runs N] [--train-runs N] [--pin]")
  Deno.exit(0)
}

const count = (name: string, raw: string): number => {
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 1) {
    console.error(`--${name} must be a positive integer, got ${JSON.stringify(raw)}`)
    Deno.exit(2)
  }
  return value
}
const calls = count("calls", flags.calls)
const spawnRuns = count("spawn-runs", flags["spawn-runs"])
const trainRuns = count("train-runs", flags["train-runs"])

if (flags.pin && Deno.env.get(PINNED_ENV) !== "1") {
  // The terminal's Ctrl-C reaches the child too (same process group): let it clean up, then exit with its code.
  const child = new Deno.Command("taskset", {
    args: ["-c", "0", Deno.execPath(), "run", "-A", fileURLToPath(import.meta.url), ...args],
    env: { [PINNED_ENV]: "1" },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn()
  Deno.addSignalListener("SIGINT", () => {})
  Deno.addSignalListener("SIGTERM", () => child.kill("SIGTERM"))
  Deno.exit((await child.status).code)
}

const probe = spawnSync(flags.python, ["-c", "import sys; print(sys.version.split()[0])"], { encoding: "utf8" })
if (probe.status !== 0) {
  console.error(`--python ${flags.python} does not run: ${probe.error?.message ?? probe.stderr}`)
  Deno.exit(2)
}
const pythonVersion = probe.stdout.trim()

const launch: WorkerLaunch = {
  python: flags.python,
  factory: "burn_p2p_python_runtime.reference_workload:make",
  runtimeRoot: fileURLToPath(new URL("../python", import.meta.url)),
  maxFrameBytes: 256 * MiB,
}

const layerOptions: PythonWorker.Options = {
  workloadFactory: launch.factory,
  pythonExecutable: launch.python,
  maxFrameBytes: launch.maxFrameBytes,
}

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

/** Runs client and baseline blocks in ABBA order, so neither always goes first. */
const alternate = <A, B>(
  blocks: number,
  client: (block: number) => Effect.Effect<A, unknown>,
  baseline: (block: number) => Effect.Effect<B, unknown>,
) =>
  Effect.gen(function* () {
    const a: Array<A> = []
    const b: Array<B> = []
    for (let block = 0; block < blocks; block++) {
      if (block % 2 === 0) {
        a.push(yield* client(block))
        b.push(yield* baseline(block))
      } else {
        b.push(yield* baseline(block))
        a.push(yield* client(block))
      }
    }
    return { client: a, baseline: b }
  })

const promise = <A>(run: () => Promise<A>) =>
  Effect.tryPromise({ try: run, catch: (error) => error instanceof Error ? error : new Error(String(error)) })

// ---------------------------------------------------------------- 1. spawn

/** Milliseconds until `PythonWorker.layer` has built (it awaits `hello`); the release is not timed. */
const layerStart = Effect.scoped(Effect.gen(function* () {
  const started = performance.now()
  yield* Layer.build(PythonWorker.layer(layerOptions))
  return performance.now() - started
}))

const measureSpawn = Effect.gen(function* () {
  // One untimed round of each warms the page cache and Deno's lazy module paths.
  yield* layerStart
  yield* promise(() => bareStart(launch.python))
  yield* bareSpawnToHello(launch)
  const { baseline, client } = yield* alternate(
    spawnRuns,
    () => layerStart,
    () => Effect.zip(promise(() => bareStart(launch.python)), bareSpawnToHello(launch)),
  )
  return {
    layer: median(client),
    python: median(baseline.map(([python]) => python)),
    bareHello: median(baseline.map(([, hello]) => hello)),
  }
})

// ---------------------------------------------------------------- 2. round trip

const clientHellos = (hello: Effect.Effect<unknown, unknown>, n: number) =>
  Effect.gen(function* () {
    const samples = new Float64Array(n)
    for (let i = 0; i < n; i++) {
      const started = performance.now()
      yield* hello
      samples[i] = performance.now() - started
    }
    return samples
  })

const bareHellos = (worker: BareWorker, n: number) =>
  promise(async () => {
    const samples = new Float64Array(n)
    for (let i = 0; i < n; i++) {
      const started = performance.now()
      await worker.call("hello", null)
      samples[i] = performance.now() - started
    }
    return samples
  })

const concat = (blocks: Array<Float64Array>): Float64Array => {
  const out = new Float64Array(blocks.reduce((total, block) => total + block.length, 0))
  let offset = 0
  for (const block of blocks) {
    out.set(block, offset)
    offset += block.length
  }
  return out
}

const measureRoundTrip = (worker: PythonWorker.Service, bare: BareWorker) =>
  Effect.gen(function* () {
    const blocks = Math.min(10, calls)
    const perBlock = Math.ceil(calls / blocks)
    const warmUp = Math.min(1000, perBlock)
    // `hello()` is the public method (with its `Effect.fn` span); `call` is the same request without the span.
    const spanned = worker.hello()
    const unspanned = worker.call(Rpcs.hello, null)
    yield* clientHellos(spanned, warmUp)
    yield* clientHellos(unspanned, warmUp)
    yield* bareHellos(bare, warmUp)
    const measure = (hello: Effect.Effect<unknown, unknown>) =>
      Effect.map(
        alternate(blocks, () => clientHellos(hello, perBlock), () => bareHellos(bare, perBlock)),
        ({ baseline, client }) => {
          const a = concat(client)
          const b = concat(baseline)
          return {
            n: a.length,
            client: { median: median(a), p99: quantile(a, 0.99) },
            baseline: { median: median(b), p99: quantile(b, 0.99) },
          }
        },
      )
    return { spanned: yield* measure(spanned), unspanned: yield* measure(unspanned) }
  })

// ---------------------------------------------------------------- 3. trainWindow

const batchOf = (paddingBytes: number): BatchRef => ({
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

const measureTrain = (worker: PythonWorker.Service, bare: BareWorker) =>
  Effect.gen(function* () {
    const clientModel = yield* worker.initModel("cpu")
    const bareModel = ((yield* promise(() =>
      bare.call("init_model", { device: "cpu" })
    )) as { model_id: string }).model_id
    const rows = []
    for (const mib of SIZES_MIB) {
      const batch = batchOf(mib * MiB) as BatchRef & { kind: "micro_epoch" }
      const bareParams = wireParams(bareModel, batch)
      // The baseline must send the bytes the client sends: compare the params' JSON once.
      const clientJson = JSON.stringify(
        Schema.encodeSync(Rpcs.trainWindow.params)({ modelId: clientModel, batches: [batch] }),
      )
      const bareJson = JSON.stringify(bareParams)
      if (clientJson !== bareJson) {
        return yield* Effect.fail(new Error(`baseline params differ from the client's at ${mib} MiB`))
      }
      const frameBytes = frame(`{"id":1,"method":"train_window","params":${bareJson}}`).length
      const clientRun = Effect.gen(function* () {
        const started = performance.now()
        yield* worker.trainWindow(clientModel, [batch])
        return performance.now() - started
      })
      const bareRun = promise(async () => {
        const started = performance.now()
        await bare.call("train_window", bareParams)
        return performance.now() - started
      })
      yield* clientRun
      yield* bareRun
      const { baseline, client } = yield* alternate(trainRuns, () => clientRun, () => bareRun)
      rows.push({ mib, frameBytes, client: median(client), baseline: median(baseline) })
    }
    return rows
  })

// ---------------------------------------------------------------- report

const shellQuote = (word: string) => /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`

const environment = () => {
  const cmdline = readFileSync("/proc/self/cmdline", "utf8").split("\0").filter((word) => word !== "")
  const pinned = Deno.env.get(PINNED_ENV) === "1"
  const affinity = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? "?"
  const cpus = os.cpus()
  return [
    `command:  ${pinned ? "taskset -c 0 " : ""}${cmdline.map(shellQuote).join(" ")}`,
    `pinned:   ${pinned ? "yes (taskset -c 0: Deno and both workers share core 0)" : "no"}; CPU affinity ${affinity}`,
    `cores:    ${cpus.length} x ${cpus[0]?.model ?? "?"}; ${os.type()} ${os.release()}`,
    `python:   ${launch.python} -> ${realpathSync(launch.python)} (${pythonVersion})`,
    `deno:     ${Deno.version.deno} (V8 ${Deno.version.v8})`,
    `load:     ${
      os.loadavg().map((load) => load.toFixed(2)).join(" ")
    } (1/5/15 min; other processes skew every figure)`,
    `bytecode: ${
      Deno.env.get("PYTHONDONTWRITEBYTECODE")
        ? "PYTHONDONTWRITEBYTECODE is set: the worker compiles its modules at every start"
        : `cached (${Deno.env.get("PYTHONPYCACHEPREFIX") ?? "__pycache__"})`
    }`,
    `worker:   ${launch.python} ${workerArgs(launch, "PORT").map(shellQuote).join(" ")}`,
    `          PYTHONPATH=${launch.runtimeRoot} PYTHONUNBUFFERED=1, stdin a pipe (exit on EOF)`,
  ].join("\n")
}

const ms = (value: number) => `${value.toFixed(value < 10 ? 2 : 1)} ms`
const us = (value: number) => `${(value * 1000).toFixed(1)} µs`
const signed = (value: number, unit: (value: number) => string) => `${value >= 0 ? "+" : "-"}${unit(Math.abs(value))}`
const times = (value: number) => `${value.toFixed(2)}x`
const verdict = (met: boolean) => (met ? "met" : "MISSED")

const table = (rows: Array<Array<string>>): string => {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)))
  const line = (row: Array<string>) =>
    row.map((cell, column) => column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column])).join("  ")
  return [line(rows[0]), widths.map((width) => "-".repeat(width)).join("  "), ...rows.slice(1).map(line)].join("\n")
}

const program = Effect.gen(function* () {
  console.log(environment())
  console.log(
    `runs:     spawn ${spawnRuns} each; hello ${calls} calls each (ABBA blocks, after warm-up); ` +
      `trainWindow ${trainRuns} runs per size each\n`,
  )

  const spawn = yield* measureSpawn
  const { roundTrip, train } = yield* Effect.scoped(Effect.gen(function* () {
    const worker = Context.get(yield* Layer.build(PythonWorker.layer(layerOptions)), PythonWorker)
    const bare = yield* bareWorker(launch)
    return { roundTrip: yield* measureRoundTrip(worker, bare), train: yield* measureTrain(worker, bare) }
  }))

  /** A figure beside its baseline: ratio, difference and, where the issue sets one, the target. */
  const compare = (
    figure: string,
    client: number,
    baseline: number,
    unit: (value: number) => string,
    target?: { readonly label: string; readonly met: boolean },
  ) => [
    figure,
    unit(client),
    unit(baseline),
    times(client / baseline),
    signed(client - baseline, unit),
    target?.label ?? "",
    target === undefined ? "" : verdict(target.met),
  ]
  const { spanned, unspanned } = roundTrip
  const rows: Array<Array<string>> = [
    ["figure", "client", "baseline", "ratio", "difference", "target", ""],
    compare("spawn -> ready hello, median (vs python -c pass)", spawn.layer, spawn.python, ms, {
      label: "<= +30 ms",
      met: spawn.layer - spawn.python <= 30,
    }),
    compare("  same, vs bare-socket worker spawn -> hello", spawn.layer, spawn.bareHello, ms),
    compare(`hello round trip, median (n=${spanned.n})`, spanned.client.median, spanned.baseline.median, us, {
      label: "<= 1.10x",
      met: spanned.client.median / spanned.baseline.median <= 1.1,
    }),
    compare(`hello round trip, p99 (n=${spanned.n})`, spanned.client.p99, spanned.baseline.p99, us),
    compare("  same, worker.call(Rpcs.hello): no span, median", unspanned.client.median, unspanned.baseline.median, us),
  ]
  for (const row of train) {
    const mbps = (millis: number) => row.frameBytes / 1e6 / (millis / 1000)
    const ratio = mbps(row.client) / mbps(row.baseline)
    rows.push(
      compare(`trainWindow ${row.mib} MiB, median time/call (n=${trainRuns})`, row.client, row.baseline, ms),
      [
        `trainWindow ${row.mib} MiB, throughput MB/s`,
        mbps(row.client).toFixed(1),
        mbps(row.baseline).toFixed(1),
        times(ratio),
        "",
        ">= 0.80x",
        verdict(ratio >= 0.8),
      ],
    )
  }
  console.log(table(rows))
  console.log(
    `\nthroughput = request frame bytes (${
      train.map((row) => `${row.mib} MiB: ${row.frameBytes}`).join(", ")
    }) / 10^6 / median seconds per call (send, train, answer).`,
  )
})

// Ctrl-C interrupts the program (its scopes stop every worker); exit 130 then, as a shell would.
NodeRuntime.runMain(program, {
  teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) ? 0 : Cause.isInterruptedOnly(exit.cause) ? 130 : 1),
})
