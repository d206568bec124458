/**
 * The owner's DiLoCo costs on packs of realistic size: each aggregation
 * policy over `--peers` local packs of `--params` parameters (pseudo-gradients
 * formed on the fly, as `DiLoCo.round` does), the outer step, and pack
 * read/write throughput.
 *
 *     deno run -A scripts/bench/aggregate.ts [--peers 8] [--params 10000000] [--runs 3] [--dir /tmp]
 *
 * Prints a table, then one JSON line (last) for the main bench to include:
 * `{bench, peers, params, runs, millis: {figure: ms}, policies: [{name,
 * fusedMs, givenMs}], pseudoGradientsMs, outerStepMs, packWriteMBps,
 * packReadMBps}`.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import os from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import * as DiLoCo from "../../src/DiLoCo.ts"
import * as ParameterPack from "../../src/ParameterPack.ts"

const args = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args
const { values: flags } = parseArgs({
  args,
  options: {
    peers: { type: "string", default: "8" },
    params: { type: "string", default: "10000000" },
    runs: { type: "string", default: "3" },
    dir: { type: "string", default: os.tmpdir() },
    help: { type: "boolean", default: false },
  },
})
if (flags.help) {
  console.log("deno run -A scripts/bench/aggregate.ts [--peers 8] [--params 10000000] [--runs 3] [--dir /tmp]")
  Deno.exit(0)
}
const positive = (name: string, raw: string): number => {
  const value = Number(raw)
  if (!Number.isSafeInteger(value) || value <= 0) {
    console.error(`--${name} must be a positive integer, got ${JSON.stringify(raw)}`)
    Deno.exit(2)
  }
  return value
}
const peers = positive("peers", flags.peers)
const params = positive("params", flags.params)
const runs = positive("runs", flags.runs)

/** xorshift32 noise in [-scale, scale): fast, reproducible, no number arrays. */
const fill = (out: Float32Array, seed: number, scale: number, around?: Float32Array): Float32Array => {
  let x = seed >>> 0 || 1
  for (let j = 0; j < out.length; j++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    const noise = ((x >>> 0) / 0x1_0000_0000 * 2 - 1) * scale
    out[j] = around === undefined ? noise : around[j] + noise
  }
  return out
}

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

const time = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<number, E, R> =>
  Effect.suspend(() => {
    const start = performance.now()
    return Effect.map(effect, () => performance.now() - start)
  })

const repeat = <E, R>(effect: Effect.Effect<unknown, E, R>): Effect.Effect<number, E, R> =>
  Effect.gen(function* () {
    const times: Array<number> = []
    for (let run = 0; run < runs; run++) times.push(yield* time(effect))
    return median(times)
  })

const table = (rows: Array<Array<string>>): string => {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)))
  const line = (row: Array<string>) =>
    row.map((cell, column) => column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column])).join("  ")
  return [line(rows[0]), widths.map((width) => "-".repeat(width)).join("  "), ...rows.slice(1).map(line)].join("\n")
}

const program = Effect.gen(function* () {
  const cpus = os.cpus()
  const cmdline = readFileSync("/proc/self/cmdline", "utf8").split("\0").filter((word) => word !== "").join(" ")
  console.log(`command:  ${cmdline}`)
  console.log(`cores:    ${cpus.length} x ${cpus[0]?.model ?? "?"}; ${os.type()} ${os.release()}`)
  console.log(`deno:     ${Deno.version.deno} (V8 ${Deno.version.v8})`)
  console.log(`load:     ${os.loadavg().map((load) => load.toFixed(2)).join(" ")} (1/5/15 min)`)
  console.log(
    `shape:    ${peers} peers x ${params} parameters (${(params * 4 / 1e6).toFixed(0)} MB a pack); ` +
      `median of ${runs} runs\n`,
  )

  const hash = ParameterPack.layoutHash([{ name: "w", shape: [params], dtype: "torch.float32", numel: params }])
  const pack = (values: Float32Array) => ParameterPack.make(values, { modelSchemaHash: "bench", layoutHash: hash })
  const theta = fill(new Float32Array(params), 1, 1)
  const base = pack(theta)
  const locals = Array.from({ length: peers }, (_, i) => pack(fill(new Float32Array(params), 100 + i, 1e-3, theta)))
  const out = new Float32Array(params)
  const bytesIn = (peers + 1) * params * 4

  const policies: Array<[string, DiLoCo.AggregationPolicy]> = [
    ["Mean", new DiLoCo.Mean()],
    ["CoordinateMedian", new DiLoCo.CoordinateMedian()],
    ["SignMajority(0.5, Zero)", new DiLoCo.SignMajority({ minimumAgreement: 0.5, tieBreak: "Zero" })],
  ]
  const results: Record<string, number> = {}
  const rows: Array<Array<string>> = [["figure", "median", "throughput", "per coordinate"]]
  const aggregateRow = (name: string, millis: number, bytes: number) => {
    results[name] = millis
    rows.push([
      name,
      `${millis.toFixed(1)} ms`,
      `${(bytes / 1e6 / (millis / 1000)).toFixed(0)} MB/s in`,
      `${(millis * 1e6 / params).toFixed(2)} ns`,
    ])
  }
  /** Per policy: fused (θ−θᵢ formed on the fly) and given (Δᵢ already materialised) milliseconds. */
  const perPolicy: Array<{ name: string; fusedMs: number; givenMs: number }> = []
  for (const [name, policy] of policies) {
    yield* DiLoCo.aggregatePseudoGradients(base, locals, policy, { out }) // warm-up
    const fusedMs = yield* repeat(DiLoCo.aggregatePseudoGradients(base, locals, policy, { out }))
    aggregateRow(`aggregate ${name} (fused θ−θᵢ)`, fusedMs, bytesIn)
    perPolicy.push({ name, fusedMs, givenMs: Number.NaN })
  }
  const deltas = yield* DiLoCo.pseudoGradients(base, locals)
  const pseudoGradientsMs = yield* repeat(DiLoCo.pseudoGradients(base, locals))
  aggregateRow(`pseudoGradients (materialise ${peers})`, pseudoGradientsMs, bytesIn)
  for (const [index, [name, policy]] of policies.entries()) {
    yield* DiLoCo.aggregate(deltas, policy, { out })
    const givenMs = yield* repeat(DiLoCo.aggregate(deltas, policy, { out }))
    aggregateRow(`aggregate ${name} (given Δᵢ)`, givenMs, peers * params * 4)
    perPolicy[index].givenMs = givenMs
  }
  const optimizer = new DiLoCo.OuterOptimizer({ learningRate: 0.7, momentum: 0.9, nesterov: true, weightDecay: 1e-4 })
  const stepped = new Float32Array(params)
  let state = DiLoCo.initialState
  const step = Effect.map(DiLoCo.outerStep(theta, out, optimizer, state, { out: stepped }), (r) => {
    state = r.state
  })
  yield* step
  const outerStepMs = yield* repeat(step)
  aggregateRow("outerStep (lr 0.7, μ 0.9, Nesterov, wd 1e-4)", outerStepMs, 3 * params * 4)

  const dir = mkdtempSync(join(flags.dir, "bench-packs-"))
  try {
    const path = join(dir, "pack")
    yield* ParameterPack.write(path, base)
    const writeMs = yield* repeat(ParameterPack.write(path, base))
    yield* ParameterPack.read(path)
    const readMs = yield* repeat(ParameterPack.read(path))
    const mb = (params * 4) / 1e6
    results["pack write"] = writeMs
    results["pack read"] = readMs
    rows.push(
      [
        `pack write (${mb.toFixed(0)} MB, temp + rename)`,
        `${writeMs.toFixed(1)} ms`,
        `${(mb / (writeMs / 1000)).toFixed(0)} MB/s`,
        "",
      ],
      [
        `pack read (${mb.toFixed(0)} MB, checked)`,
        `${readMs.toFixed(1)} ms`,
        `${(mb / (readMs / 1000)).toFixed(0)} MB/s`,
        "",
      ],
    )
    console.log(table(rows))
    console.log(
      `\npacks written to ${dir} (page cache: read figures are warm). ` +
        `Reference (PROTOCOL.md): 33 MB/s writing, 45 MB/s reading through Python lists.`,
    )
    console.log(JSON.stringify({
      bench: "aggregate",
      peers,
      params,
      runs,
      millis: results,
      policies: perPolicy,
      pseudoGradientsMs,
      outerStepMs,
      packWriteMBps: mb / (writeMs / 1000),
      packReadMBps: mb / (readMs / 1000),
    }))
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

NodeRuntime.runMain(program.pipe(Effect.provide(NodeContext.layer)))
