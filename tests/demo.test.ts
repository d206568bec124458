/**
 * The demo (`deno task demo`): its round logic at a small size with the
 * reference workload (merge mode, DiLoCo with a byzantine peer), the report
 * files, and the script itself as a subprocess without a TTY: run to the end,
 * in DiLoCo mode, with a worker SIGKILLed mid-run (`--chaos`), interrupted
 * with SIGINT, asked for `--help`, and given a bad argument.
 */
import * as Command from "@effect/platform/Command"
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import process from "node:process"
import { fileURLToPath } from "node:url"
import type { DemoEvent } from "../scripts/demo/progress.ts"
import { writeReport } from "../scripts/demo/report.ts"
import { defaultSettings, runRounds } from "../scripts/demo/rounds.ts"
import { workloads } from "../scripts/demo/workloads.ts"
import { awaitGone, streamText, tempDir, testPython } from "./helpers.ts"

const repoRoot = fileURLToPath(new URL("..", import.meta.url))

/** The demo's flags for a small run of the reference workload: 2 peers, `rounds` rounds, reports in `dir`. */
const demoFlags = (rounds: number, dir: string) => [
  "--peers",
  "2",
  "--rounds",
  String(rounds),
  "--workload",
  "reference",
  "--python",
  testPython,
  "--out",
  dir,
]

/** The `demo` task's command line (its permission flags, exactly), for running the demo without `deno task`. */
const demoTask: ReadonlyArray<string> = (() => {
  const tasks = JSON.parse(readFileSync(join(repoRoot, "deno.json"), "utf8")).tasks as Record<string, string>
  const [, ...args] = tasks.demo.replaceAll("$HOME", process.env.HOME ?? "").split(/\s+/)
  return args
})()

/** Runs `deno task demo` with `flags` to the end: its output and exit status. */
const runDemo = (flags: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const proc = yield* Command.start(
      Command.make(process.execPath, "task", "--quiet", "demo", ...flags).pipe(Command.workingDirectory(repoRoot)),
    )
    const [stdout, stderr, exitCode] = yield* Effect.all(
      [streamText(proc.stdout), streamText(proc.stderr), proc.exitCode],
      { concurrency: "unbounded" },
    )
    return { stdout, stderr, exitCode }
  })

/** The rows of the table printed after the run: cells split on runs of two or more spaces. */
const tableRows = (stdout: string, rounds: number) => {
  const lines = stdout.split("\n")
  const header = lines.findIndex((line) => line.startsWith("round  "))
  expect(header).toBeGreaterThan(0)
  return lines.slice(header + 2, header + 3 + rounds).map((line) => line.trim().split(/\s{2,}/))
}

/** Worker pids as the plain progress log announces them ("peer-0 ready: pid 1234, ..."), restarted ones too. */
const announcedPids = (output: string) => [...output.matchAll(/ready: pid (\d+)/g)].map((match) => Number(match[1]))

describe("demo", () => {
  it.scopedLive("2 peers x 2 rounds: disjoint leases, a patched learning rate, a better merged model, a chart", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* tempDir
      const artifactsDir = join(dir, "artifacts")
      yield* fs.makeDirectory(artifactsDir)
      const events: Array<DemoEvent> = []
      const workload = workloads.reference
      const { series: [merge], ...run } = yield* runRounds(
        defaultSettings({
          python: testPython,
          workload,
          peers: 2,
          rounds: 2,
          artifactsDir,
        }),
        { emit: (event) => Effect.sync(() => events.push(event)) },
      )
      // runRounds owns its workers: they are gone when it returns.
      yield* awaitGone(run.pids)
      expect(run.pids).toHaveLength(3)

      expect(run.restarts).toEqual([])
      expect(merge.rounds.map((result) => result.round)).toEqual([0, 1, 2])
      const [genesis, , last] = merge.rounds
      expect(last.mergedAccuracy).toBeGreaterThan(genesis.mergedAccuracy + 0.2)
      expect(last.mergedLoss).toBeLessThan(genesis.mergedLoss)
      expect(merge.rounds.slice(1).every((result) => result.merged && result.peers.length === 2)).toBe(true)
      // A window is 4 x 64 examples in minibatches of 16: the DiLoCo default H matches it.
      expect(merge.rounds.slice(1).flatMap((result) => result.peers.map((peer) => peer.steps))).toEqual(
        [16, 16, 16, 16],
      )
      expect(workload.stepsPerWindow).toBe(16)

      const ordinals = merge.rounds.flatMap((result) => result.peers.flatMap((peer) => peer.ordinals))
      expect(ordinals).toHaveLength(2 * 2 * workload.microshardsPerWindow)
      expect(new Set(ordinals).size).toBe(ordinals.length)

      // The patch lands at the start of round 2 and the peers train with the lower rate.
      expect(merge.rounds[1].patch).toBeNull()
      expect(merge.rounds[2].patch?.outcomes).toEqual([
        { peer: "peer-0", outcome: "Applied" },
        { peer: "peer-1", outcome: "Applied" },
      ])
      expect(merge.rounds[1].peers.map((peer) => peer.learningRate)).toEqual([
        workload.learningRate,
        workload.learningRate,
      ])
      expect(merge.rounds[2].peers.map((peer) => peer.learningRate)).toEqual([
        workload.learningRate / 2,
        workload.learningRate / 2,
      ])

      const artifacts = (yield* fs.readDirectory(artifactsDir)).sort()
      expect(artifacts).toEqual([
        "canonical-00.safetensors",
        "canonical-01.safetensors",
        "canonical-02.safetensors",
        "round-01-peer-0.safetensors",
        "round-01-peer-1.safetensors",
        "round-02-peer-0.safetensors",
        "round-02-peer-1.safetensors",
      ])
      // Every peer was seen training in every round.
      const training = events.filter((event) => event._tag === "Phase" && event.text.startsWith("training"))
      expect(training.map((event) => event._tag === "Phase" && event.actor).sort()).toEqual([
        "peer-0",
        "peer-0",
        "peer-1",
        "peer-1",
      ])

      const files = yield* writeReport(dir, { ...run, series: [merge] }, {
        workload: "reference",
        python: testPython,
        reason: "test",
        totalMillis: 0,
      })
      const svg = yield* fs.readFileString(files.chart)
      expect(svg.startsWith("<svg")).toBe(true)
      expect(svg.trimEnd().endsWith("</svg>")).toBe(true)
      expect(svg).toContain(`data-series="accuracy"`)
      expect(svg).toContain(`data-series="loss"`)
      // One point per round (genesis included) in each series.
      const polylines = [...svg.matchAll(/<polyline [^>]*points="([^"]*)"/g)].map((match) => match[1].split(" "))
      expect(polylines.map((points) => points.length)).toEqual([3, 3])
      const summary = JSON.parse(yield* fs.readFileString(files.json))
      expect(summary.series[0].rounds).toHaveLength(3)
      expect(yield* fs.readFileString(files.markdown)).toContain("| round |")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("`deno task demo` without a TTY: plain timestamped lines, the table, exit status 0", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* tempDir
      const { stdout, stderr, exitCode } = yield* runDemo(demoFlags(2, dir))
      expect({ exitCode, stderr }).toEqual({ exitCode: 0, stderr: "" })
      expect(stdout).not.toContain("\x1b")
      expect(stdout).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3} \+\d+\.\ds\] round 1\/2$/m)
      expect(stdout).toContain("workload: reference, because --workload reference")
      expect(stdout).toContain("round  mean peer acc (val)  merged acc (test)")
      const rows = tableRows(stdout, 2)
      expect(rows.map((row) => row[0])).toEqual(["0", "1", "2"])
      const merged = rows.map((row) => Number(row[2]))
      expect(merged[2]).toBeGreaterThan(merged[0])
      expect(stdout).toContain("restarts: 0")

      expect(stdout).toContain(`chart:   ${join(dir, "chart.svg")}`)
      expect((yield* fs.readFileString(join(dir, "chart.svg"))).startsWith("<svg")).toBe(true)
      yield* awaitGone(announcedPids(stdout))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("--chaos: a peer's worker SIGKILLed mid-run is restarted, reloads the canonical model, the run ends", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      const { stdout, stderr, exitCode } = yield* runDemo([...demoFlags(3, dir), "--chaos", "--seed", "5"])
      expect({ exitCode, stderr }).toEqual({ exitCode: 0, stderr: "" })
      // The death, the restart and the recovery, as the progress log shows them.
      const killed = /chaos: SIGKILL to (peer-\d)'s worker #1 \(pid (\d+)\)/.exec(stdout)
      expect(killed).not.toBeNull()
      const [, peer, pid] = killed!
      expect(stdout).toContain(`${peer}: worker #1 (pid ${pid}) killed by SIGKILL`)
      expect(stdout).toMatch(new RegExp(`${peer}: restarting: worker #2 in \\d+ ms`))
      expect(stdout).toMatch(new RegExp(`${peer}: worker #2 \\(pid \\d+\\) reloaded .*canonical-0\\d\\.safetensors`))
      expect(stdout).toMatch(new RegExp(`${peer} ready: pid \\d+, worker #2 \\(restarted\\)`))
      expect(stdout).toContain(`restarts: 1 (${peer}: worker #1, pid ${pid}, killed by SIGKILL)`)
      const rows = tableRows(stdout, 3)
      expect(rows.map((row) => row[0])).toEqual(["0", "1", "2", "3"])
      expect(Number(rows[3][2])).toBeGreaterThan(Number(rows[0][2]))
      const pids = announcedPids(stdout)
      expect(pids).toHaveLength(4)
      expect(pids).toContain(Number(pid))
      yield* awaitGone(pids)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("--mode diloco with the reference workload: 2 peers x 2 rounds of H = 8 improve the global model", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* tempDir
      const { stdout, stderr, exitCode } = yield* runDemo([
        ...demoFlags(2, dir),
        "--mode",
        "diloco",
        "--inner-steps",
        "8",
      ])
      expect({ exitCode, stderr }).toEqual({ exitCode: 0, stderr: "" })
      expect(stdout).toContain("round  mean peer acc (val)  global acc (test)")
      const rows = tableRows(stdout, 2)
      expect(rows.map((row) => row[6])).toEqual(["-", "8", "8"])
      const global = rows.map((row) => Number(row[2]))
      expect(global[1]).toBeGreaterThan(global[0] + 0.2)
      expect(global[2]).toBeGreaterThan(global[0] + 0.3)
      const loss = rows.map((row) => Number(row[3]))
      expect(loss[2]).toBeLessThan(loss[0])
      expect(stdout).toMatch(/DiLoCo \(Mean\)\s+Test accuracy/)
      // The owner's global packs, one per round, and each peer's exported pack with its optimiser state.
      const artifacts = (yield* fs.readDirectory(join(dir, "artifacts"))).sort()
      expect(artifacts).toEqual(expect.arrayContaining(["global-00", "global-01", "global-02", "round-02-peer-1"]))
      expect(artifacts).toContain("round-02-peer-1.inner-optimizer.json")
      yield* awaitGone(announcedPids(stdout))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("--byzantine: one forged update of 3 wrecks Mean; CoordinateMedian and SignMajority hold", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* tempDir
      const artifactsDir = join(dir, "artifacts")
      yield* fs.makeDirectory(artifactsDir)
      const run = yield* runRounds(
        defaultSettings({
          python: testPython,
          workload: workloads.reference,
          peers: 3,
          rounds: 2,
          artifactsDir,
          innerSteps: 8,
          byzantine: true,
          series: [
            { mode: "diloco", aggregation: "mean" },
            { mode: "diloco", aggregation: "median" },
            { mode: "diloco", aggregation: "sign" },
          ],
        }),
        { emit: () => Effect.void },
      )
      yield* awaitGone(run.pids)
      expect(run.byzantine).toBe("peer-2")
      const [mean, median, sign] = run.series.map((series) => series.rounds[series.rounds.length - 1])
      expect(run.series.map((series) => series.name)).toEqual(["diloco-mean", "diloco-median", "diloco-sign"])
      expect(median.mergedAccuracy).toBeGreaterThan(mean.mergedAccuracy + 0.3)
      expect(sign.mergedAccuracy).toBeGreaterThan(mean.mergedAccuracy + 0.3)
      expect(median.mergedAccuracy).toBeGreaterThan(run.series[1].rounds[0].mergedAccuracy + 0.2)
      // The liar reports honest metrics: its Validation accuracy is as good as the others'.
      expect(median.peers.find((peer) => peer.byzantine)?.peer).toBe("peer-2")
      // Series after the first run in a folder of their own; the compare chart draws every one.
      expect((yield* fs.readDirectory(artifactsDir)).sort()).toEqual(["diloco-mean", "diloco-median", "diloco-sign"])
      const files = yield* writeReport(dir, run, {
        workload: "reference",
        python: testPython,
        reason: "test",
        totalMillis: 0,
      })
      const svg = yield* fs.readFileString(files.chart)
      for (const name of ["diloco-mean", "diloco-median", "diloco-sign"]) {
        expect(svg).toContain(`data-series="${name} accuracy"`)
      }
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("SIGINT mid-run stops every worker and exits with 130", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // `deno run` itself, not `deno task`: the signal goes to the demo alone.
      const proc = yield* Command.start(
        Command.make(process.execPath, ...demoTask, ...demoFlags(100, dir)).pipe(
          Command.workingDirectory(repoRoot),
        ),
      )
      const stderr = yield* Effect.fork(streamText(proc.stderr))
      // One reader for the whole run: the log so far, and a latch once round 2 has begun.
      const midRun = yield* Deferred.make<void>()
      let output = ""
      const stdout = yield* Effect.fork(proc.stdout.pipe(
        Stream.decodeText(),
        Stream.runForEach((text) =>
          Effect.suspend(() => {
            output += text
            return /round 2\/100/.test(output) ? Deferred.succeed(midRun, undefined) : Effect.void
          })
        ),
      ))
      yield* Deferred.await(midRun)
      const pids = announcedPids(output)
      expect(pids).toHaveLength(3)
      process.kill(proc.pid, "SIGINT")
      expect(yield* proc.exitCode).toBe(130)
      yield* Fiber.join(stdout)
      expect(output).toMatch(/peer-0: stopped/)
      expect(output).not.toMatch(/round 100\/100/)
      expect(yield* Fiber.join(stderr)).toContain("interrupted")
      yield* awaitGone(pids)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("--help prints the flags; a bad argument prints the usage and exits with 2", () =>
    Effect.gen(function* () {
      const help = yield* runDemo(["--help"])
      expect(help.exitCode).toBe(0)
      for (
        const flag of ["--peers", "--mode", "--inner-steps", "--aggregation", "--outer-lr", "--byzantine", "--chaos"]
      ) {
        expect(help.stdout).toContain(flag)
      }
      const bad = yield* runDemo(["--mode", "sideways"])
      expect(bad.exitCode).toBe(2)
      expect(bad.stderr).toContain("usage: deno task demo")
      expect(bad.stdout + bad.stderr).toMatch(/sideways|merge/)
      const lonely = yield* runDemo(["--byzantine", "--peers", "2"])
      expect(lonely.exitCode).toBe(2)
      expect(lonely.stderr).toContain("--byzantine needs at least 3 peers")
      expect(lonely.stderr).toContain("usage: deno task demo")
      // Refused before any worker started.
      expect(lonely.stdout).not.toContain("ready: pid")
    }).pipe(Effect.provide(NodeContext.layer)))
})
