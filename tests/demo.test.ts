/**
 * The demo (`deno task demo`): its round logic at a small size with the
 * reference workload, the report files, and the script itself as a
 * subprocess without a TTY, run to the end and interrupted with SIGINT.
 */
import * as Command from "@effect/platform/Command"
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
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

/** Worker pids as the plain progress log announces them ("peer-0 ready: pid 1234, ..."). */
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
      const run = yield* runRounds(
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

      expect(run.rounds.map((result) => result.round)).toEqual([0, 1, 2])
      const [genesis, , last] = run.rounds
      expect(last.mergedAccuracy).toBeGreaterThan(genesis.mergedAccuracy + 0.2)
      expect(last.mergedLoss).toBeLessThan(genesis.mergedLoss)
      expect(run.rounds.slice(1).every((result) => result.merged && result.peers.length === 2)).toBe(true)

      const ordinals = run.rounds.flatMap((result) => result.peers.flatMap((peer) => peer.ordinals))
      expect(ordinals).toHaveLength(2 * 2 * workload.microshardsPerWindow)
      expect(new Set(ordinals).size).toBe(ordinals.length)

      // The patch lands at the start of round 2 and the peers train with the lower rate.
      expect(run.rounds[1].patch).toBeNull()
      expect(run.rounds[2].patch?.outcomes).toEqual([
        { peer: "peer-0", outcome: "Applied" },
        { peer: "peer-1", outcome: "Applied" },
      ])
      expect(run.rounds[1].peers.map((peer) => peer.learningRate)).toEqual([
        workload.learningRate,
        workload.learningRate,
      ])
      expect(run.rounds[2].peers.map((peer) => peer.learningRate)).toEqual([
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

      const files = yield* writeReport(dir, run, {
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
      expect(summary.rounds).toHaveLength(3)
      expect(yield* fs.readFileString(files.markdown)).toContain("| round |")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("`deno task demo` without a TTY: plain timestamped lines, the table, exit status 0", () =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* tempDir
      const proc = yield* Command.start(
        Command.make(process.execPath, "task", "--quiet", "demo", ...demoFlags(2, dir)).pipe(
          Command.workingDirectory(repoRoot),
        ),
      )
      const [stdout, stderr, exitCode] = yield* Effect.all(
        [streamText(proc.stdout), streamText(proc.stderr), proc.exitCode],
        { concurrency: "unbounded" },
      )
      expect({ exitCode, stderr }).toEqual({ exitCode: 0, stderr: "" })
      expect(stdout).not.toContain("\x1b")
      expect(stdout).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3} \+\d+\.\ds\] round 1\/2$/m)
      expect(stdout).toContain("workload: reference, because --workload reference")

      const lines = stdout.split("\n")
      const header = lines.findIndex((line) => line.startsWith("round  mean peer acc (val)  merged acc (test)"))
      expect(header).toBeGreaterThan(0)
      const rows = lines.slice(header + 2, header + 5).map((line) => line.trim().split(/\s{2,}/))
      expect(rows.map((row) => row[0])).toEqual(["0", "1", "2"])
      const merged = rows.map((row) => Number(row[2]))
      expect(merged[2]).toBeGreaterThan(merged[0])

      expect(stdout).toContain(`chart:   ${join(dir, "chart.svg")}`)
      expect((yield* fs.readFileString(join(dir, "chart.svg"))).startsWith("<svg")).toBe(true)
      yield* awaitGone(announcedPids(stdout))
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("SIGINT mid-run stops every worker and exits with 130", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir
      // `deno run` itself, not `deno task`: the signal goes to the demo alone.
      const proc = yield* Command.start(
        Command.make(process.execPath, "run", "-A", "scripts/demo.ts", ...demoFlags(100, dir)).pipe(
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
})
