/**
 * Hardening against what real training runs produce, one class of input per
 * block, several members of each: output that is not line-structured,
 * pathological JSON either way, results above the frame limit, options out
 * of range, and connections that must prove who they are. Every process and
 * file a test starts or writes is gone afterwards.
 *
 * Errors are matched as `{ ...error }`: an error failed inside an `Effect.fn`
 * span is a Proxy, and vitest overflows its stack printing a failed match on it.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Schema from "effect/Schema"
import { Buffer } from "node:buffer"
import { spawn, spawnSync } from "node:child_process"
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { type JsonValue, make, type PythonWorker, type Rpc } from "../src/mod.ts"
import { awaitGone, echoBatch, fixturesRoot, isAlive, testPython } from "./helpers.ts"

const start = (options: PythonWorker.Options) => make(options).pipe(Effect.provide(NodeContext.layer))

const MiB = 1024 * 1024

/** The pids whose parent is this process (the vitest worker running this file). */
const childPids = (): Array<number> =>
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
const leavesNoProcess = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const before = new Set(childPids())
    const result = yield* effect
    yield* awaitGone(childPids().filter((pid) => !before.has(pid)))
    return result
  })

/** Starting the service must fail: its error, once every process it started is gone. */
const startError = (options: PythonWorker.Options) => leavesNoProcess(Effect.flip(Effect.scoped(start(options))))

/** Any method with params and result as plain JSON: the worker's answer unchecked. */
const rawRpc = (method: string): Rpc<unknown, unknown, unknown, unknown> => ({
  method,
  params: Schema.Unknown,
  result: Schema.Unknown,
  doc: "",
  arity: 1,
  toParams: (_ids, params) => params,
  fromResult: (result) => result,
  modelOf: () => undefined,
  capability: undefined,
})
const applyPatchRaw = rawRpc("apply_patch")

/** A list nested `depth` deep around 0, built without recursion. */
const nested = (depth: number): JsonValue => {
  let value: JsonValue = 0
  for (let i = 0; i < depth; i++) value = [value]
  return value
}
/** An object nested `depth` deep (`{"a": {"a": ... {}}}`, the innermost `{}` counting). */
const nestedObject = (depth: number, leaf: JsonValue = {}): JsonValue => {
  let value: JsonValue = leaf
  for (let i = 1; i < depth; i++) value = { a: value }
  return value
}

/** Every string in an error: its message and each field, nested ones included. */
const errorText = (error: unknown): string => {
  const seen = new Set<unknown>()
  const parts: Array<string> = []
  const visit = (value: unknown) => {
    if (typeof value === "string") return void parts.push(value)
    if (typeof value !== "object" || value === null || seen.has(value)) return
    seen.add(value)
    for (const key of Object.keys(value)) visit((value as Record<string, unknown>)[key])
  }
  visit({ ...(error as object) })
  parts.push(String((error as Error).message))
  return parts.join("\n")
}

const echo: PythonWorker.Options = {
  workloadFactory: "echo_workload:make",
  moduleSearchRoots: [fixturesRoot],
  pythonExecutable: testPython,
  restart: "never",
}
const hardening: PythonWorker.Options = { ...echo, workloadFactory: "hardening_workload:make" }

describe("1. worker output that is not line-structured", () => {
  const noisy: PythonWorker.Options = { ...echo, workloadFactory: "noisy_workload:make" }
  const noise = (stream: "stdout" | "stderr", kind: "cr" | "nonewline" | "invalid", bytes: number) => [
    echoBatch({ noise: { stream, kind, bytes } }),
  ]

  it.live(
    "gigabytes of \\r redraws, endless lines and invalid UTF-8 on stdout and stderr: bounded memory, calls served, a correct tail",
    () =>
      Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(noisy)
        const model = yield* worker.initModel("cpu")
        for (let i = 0; i < 50; i++) yield* worker.trainWindow(model, [echoBatch({ echo: `warm-${i}` })])
        const before = process.memoryUsage()
        let peakRss = before.rss
        let peakHeap = before.heapUsed
        let calls = 0
        let slowest = 0
        /** Echo calls for `millis`, each checked, while the noise flows. */
        const serve = (millis: number) =>
          Effect.gen(function* () {
            const until = Date.now() + millis
            while (Date.now() < until) {
              const begin = Date.now()
              const text = `call-${calls}`
              expect(yield* worker.trainWindow(model, [echoBatch({ echo: text })])).toMatchObject({ echo: text })
              slowest = Math.max(slowest, Date.now() - begin)
              calls++
              const now = process.memoryUsage()
              peakRss = Math.max(peakRss, now.rss)
              peakHeap = Math.max(peakHeap, now.heapUsed)
            }
          })
        const began = Date.now()
        // Phase 1: random bytes (invalid UTF-8, short lines) on both streams.
        yield* worker.trainWindow(model, noise("stdout", "invalid", 256 * MiB))
        yield* worker.trainWindow(model, noise("stderr", "invalid", 256 * MiB))
        yield* serve(1_000)
        const first = yield* worker.trainWindow(model, [echoBatch({ noise_join: true })])
        const middle = process.memoryUsage()
        const peakRssPhase1 = peakRss
        // Phase 2: a progress bar redrawn with \r and never a \n on stderr, one endless line on stdout.
        yield* worker.trainWindow(model, noise("stderr", "cr", 1024 * MiB))
        yield* worker.trainWindow(model, noise("stdout", "nonewline", 1024 * MiB))
        yield* serve(2_000)
        const written = (yield* worker.trainWindow(model, [echoBatch({ noise_join: true })])).written as number
        const seconds = (Date.now() - began) / 1000
        const after = process.memoryUsage()
        console.log(
          `[hardening 1] ${(written / 2 ** 30).toFixed(2)} GiB of output in ${seconds.toFixed(1)} s ` +
            `(${(written / MiB / seconds).toFixed(0)} MiB/s), phase 1 ${first.written} bytes; ` +
            `${calls} calls served meanwhile, slowest ${slowest} ms; ` +
            `rss ${(before.rss / MiB).toFixed(1)} -> phase 1 peak ${(peakRssPhase1 / MiB).toFixed(1)} -> ${
              (middle.rss / MiB).toFixed(1)
            } -> phase 2 peak ${(peakRss / MiB).toFixed(1)} -> ${(after.rss / MiB).toFixed(1)} MiB; heapUsed ${
              (before.heapUsed / MiB).toFixed(1)
            } -> peak ${(peakHeap / MiB).toFixed(1)} -> ${(after.heapUsed / MiB).toFixed(1)} MiB`,
        )
        expect(written).toBeGreaterThanOrEqual(2560 * MiB)
        expect(calls).toBeGreaterThan(20)
        // The JavaScript heap stays within 64 MiB whatever the volume.
        expect(peakHeap - before.heapUsed).toBeLessThan(64 * MiB)
        // The resident size levels off: Deno's pipe reads leave ~64 KiB buffers to a lazy GC, a fixed
        // cost (bare node:child_process reading 3 GiB of stderr: 41 -> 291 MiB) that does not grow
        // with the volume: the second 2 GiB add less than 64 MiB to what the first 512 MiB took.
        expect(peakRss - before.rss).toBeLessThan(320 * MiB)
        expect(peakRss - Math.max(middle.rss, peakRssPhase1)).toBeLessThan(64 * MiB)

        const error = yield* Effect.flip(worker.trainWindow(model, [echoBatch({ last_words: true })]))
        expect({ ...error }).toMatchObject({ _tag: "WorkerExitedError", exitCode: 3 })
        if (error._tag !== "WorkerExitedError") return
        const tail = error.stderrTail
        expect(Buffer.byteLength(tail, "utf8")).toBeLessThanOrEqual(64 * 1024)
        // Ends with the worker's last line; the redrawn line only as its last redraw; invalid UTF-8 as U+FFFD.
        expect(
          tail.endsWith(`epoch 3/3: 100%\nbad bytes: \uFFFD\uFFFD\uFFFD(\n${"L".repeat(20000)}\nworker's last line\n`),
        )
          .toBe(true)
        expect(tail).not.toContain("epoch 3/3:  50%")
        expect(tail).not.toContain("epoch 3/3:  10%")
        // Every redraw of the progress bar was replaced by the next line.
        expect(tail).not.toContain("it/s]")
        expect(error.message).toContain("worker's last line")
      })),
    180_000,
  )

  it.live(
    "with debug logs on, every logged line is at most 8 KiB, redraws and invalid UTF-8 included",
    () =>
      Effect.gen(function* () {
        const lines: Array<{ text: string; stream: unknown }> = []
        const logger = Logger.make(({ annotations, message }) => {
          const text = Array.isArray(message) ? message.join(" ") : String(message)
          const stream = [...annotations].find(([key]) => key === "stream")?.[1]
          if (stream !== undefined) lines.push({ text, stream })
        })
        const tail = yield* Effect.scoped(Effect.gen(function* () {
          const worker = yield* start(noisy)
          const model = yield* worker.initModel("cpu")
          for (const stream of ["stdout", "stderr"] as const) {
            for (const kind of ["cr", "nonewline", "invalid"] as const) {
              yield* worker.trainWindow(model, noise(stream, kind, 2 * MiB))
            }
          }
          yield* worker.trainWindow(model, [echoBatch({ noise_join: true })])
          const error = yield* Effect.flip(worker.trainWindow(model, [echoBatch({ last_words: true })]))
          return error._tag === "WorkerExitedError" ? error.stderrTail : ""
        })).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
          Logger.withMinimumLogLevel(LogLevel.Debug),
        )
        const longest = Math.max(...lines.map((line) => Buffer.byteLength(line.text, "utf8")))
        // A piece is at most 8 KiB of input; an invalid byte becomes U+FFFD (3 bytes), so allow for that.
        expect(longest).toBeLessThanOrEqual(3 * 8 * 1024)
        expect(lines.every((line) => line.text.length <= 8 * 1024 + 1)).toBe(true)
        for (const stream of ["stdout", "stderr"]) {
          const mine = lines.filter((line) => line.stream === stream)
          // Redraws are logged one by one; the endless line in 8 KiB pieces; invalid bytes as U+FFFD.
          expect(mine.some((line) => line.text.includes("it/s]"))).toBe(true)
          expect(mine.filter((line) => line.text === "A".repeat(8 * 1024)).length).toBeGreaterThan(200)
          expect(mine.some((line) => line.text.includes("\uFFFD"))).toBe(true)
        }
        expect(lines.some((line) => line.text === "worker's last line")).toBe(true)
        expect(tail.endsWith("worker's last line\n")).toBe(true)
      }),
    120_000,
  )
})
