/**
 * Hardening against what real training runs produce, one class of input per
 * block, several members of each: output that is not line-structured,
 * pathological JSON either way, results above the frame limit, options out
 * of range, and connections that must prove who they are. Every process and
 * file a test starts or writes is gone afterwards.
 *
 * Errors are matched with `expectTagged` (helpers.ts), which matches a spread
 * copy: an error failed inside an `Effect.fn` span is a Proxy.
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
import { spawnSync } from "node:child_process"
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import process from "node:process"
import { type JsonValue, make, type PythonWorker, type Rpc } from "../src/mod.ts"
import { awaitGone, childPids, echoBatch, expectTagged, fixturesRoot, leavesNoProcess, testPython } from "./helpers.ts"

const start = (options: PythonWorker.Options) => make(options).pipe(Effect.provide(NodeContext.layer))

const MiB = 1024 * 1024

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
  verify: () => undefined,
} as Rpc<unknown, unknown, unknown, unknown>)
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
        // with the volume: the second 2 GiB add far less than they hold (measured 40-72 MiB, the
        // garbage collector's lag under load) to what the first 512 MiB took.
        expect(peakRss - before.rss).toBeLessThan(320 * MiB)
        expect(peakRss - Math.max(middle.rss, peakRssPhase1)).toBeLessThan(128 * MiB)

        const error = yield* Effect.flip(worker.trainWindow(model, [echoBatch({ last_words: true })]))
        expectTagged(error, "WorkerExitedError", { exitCode: 3 })
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

describe("2. pathological JSON either way", () => {
  /** The id the worker gives its next request, read from an error: ids are consecutive on the wire. */
  const nextId = (worker: PythonWorker.Service) =>
    worker.evaluate("no-such-model", "Validation").pipe(
      Effect.flip,
      Effect.map((error) => (error._tag === "RemoteError" ? error.id : -1)),
    )

  it.live("params 10,000 deep or circular are an InvalidArgumentError before anything is sent; the service stays usable", () =>
    Effect.scoped(Effect.gen(function* () {
      const worker = yield* start(hardening)
      const model = yield* worker.initModel("cpu")
      const circularArray: Array<unknown> = []
      circularArray.push(circularArray)
      const circularObject: Record<string, unknown> = { a: { b: {} } }
      ;(circularObject.a as Record<string, Record<string, unknown>>).b.c = circularObject
      const payloads: Array<[string, unknown]> = [
        ["a list 10,000 deep", nested(10_000)],
        ["an object 10,000 deep", nestedObject(10_000)],
        ["a list 1,000,000 deep", nested(1_000_000)],
        ["a circular list", circularArray],
        ["a circular object", circularObject],
        ["a list 254 deep (params 257)", nested(254)],
      ]
      const first = yield* nextId(worker)
      for (const [name, payload] of payloads) {
        const exit = yield* Effect.exit(worker.trainWindow(model, [echoBatch({ deep: payload as JsonValue })]))
        expect(Exit.isFailure(exit) && exit.cause._tag, name).toBe("Fail")
        const error = yield* Effect.flip(worker.trainWindow(model, [echoBatch({ deep: payload as JsonValue })]))
        expectTagged(error, "InvalidArgumentError", { where: "train_window" }, name)
        expect(error.message, name).toMatch(/nested deeper than 256 levels|circular/)
        expect(error.message.length, name).toBeLessThan(10_000)
        if (name.includes("254")) continue
        // The raw escape hatch checks the same.
        const raw = yield* Effect.flip(worker.call(applyPatchRaw, { do: "echo", deep: payload }))
        expectTagged(raw, "InvalidArgumentError", { where: "apply_patch" }, name)
      }
      // Nothing reached the wire: the next request id follows the first at once.
      expect(yield* nextId(worker)).toBe(first + 1)
      expect(yield* worker.evaluate(model, "Validation")).toEqual({ split: "Validation" })
    })))

  it.live("a workloadConfig 10,000 deep or circular is an InvalidArgumentError before anything is spawned", () =>
    Effect.gen(function* () {
      const circular: Record<string, unknown> = {}
      circular.self = circular
      for (const config of [nested(10_000), nestedObject(10_000), circular, nestedObject(257)]) {
        const before = childPids()
        const error = yield* startError({ ...echo, workloadConfig: config as JsonValue })
        expectTagged(error, "InvalidArgumentError", { where: "PythonWorker.layer" })
        expect(error.message).toMatch(/workloadConfig must be plain JSON: .*(nested deeper than 256|circular)/)
        expect(childPids()).toEqual(before)
      }
      // At the limit the worker gets it and starts.
      const worker = yield* Effect.scoped(
        Effect.map(start({ ...echo, workloadConfig: nestedObject(256) }), (worker) => worker.info.workloadName),
      )
      expect(worker).toBe("EchoWorkload")
    }))

  it.live("at and just below the limit of 256 levels, params reach the worker and round-trip", () =>
    Effect.scoped(Effect.gen(function* () {
      const worker = yield* start(hardening)
      const model = yield* worker.initModel("cpu")
      for (const depth of [1, 2, 128, 255, 256]) {
        // The patch is `depth` deep: its own object, then `depth - 1` levels below it.
        const patch = { do: "echo", expect_depth: depth, below: depth === 1 ? 0 : nestedObject(depth - 1) }
        expect(yield* worker.call(applyPatchRaw, patch)).toEqual(patch)
        const list = { do: "echo", expect_depth: depth, below: depth === 1 ? 0 : nested(depth - 1) }
        expect(yield* worker.call(applyPatchRaw, list)).toEqual(list)
      }
      const over = { do: "echo", expect_depth: 257, below: nestedObject(256) }
      expectTagged(yield* Effect.flip(worker.call(applyPatchRaw, over)), "InvalidArgumentError", {
        detail: expect.stringContaining("nested deeper than 256 levels"),
      })
      // train_window: params, batches, the batch and its payload take 3 levels, the payload the rest.
      for (const depth of [252, 253]) {
        expect(yield* worker.trainWindow(model, [echoBatch({ echo: `depth ${depth}`, deep: nested(depth - 1) })]))
          .toEqual({ echo: `depth ${depth}`, examples: 0 })
      }
      expectTagged(
        yield* Effect.flip(worker.trainWindow(model, [echoBatch({ deep: nested(253) })])),
        "InvalidArgumentError",
        { where: "train_window" },
      )
    })))

  it.live("a result deeper than the limit or than Python can encode, or not JSON at all, is a RemoteError; the models stay", () =>
    Effect.scoped(Effect.gen(function* () {
      const worker = yield* start(hardening)
      const model = yield* worker.initModel("cpu")
      for (const depth of [257, 300, 1_000, 5_000, 100_000]) {
        const error = yield* Effect.flip(worker.call(applyPatchRaw, { do: "nest", depth }))
        expectTagged(error, "RemoteError", { errorType: "ResultTooDeepError" }, `depth ${depth}`)
        expect(yield* worker.evaluate(model, "Validation")).toEqual({ split: "Validation" })
      }
      expect(yield* worker.call(applyPatchRaw, { do: "nest", depth: 256 })).toEqual(nested(256))
      for (const kind of ["set", "object", "unprintable", "bytes", "nan", "inf", "circular", "tuple_key", "huge_int"]) {
        const error = yield* Effect.flip(worker.call(applyPatchRaw, { do: "unencodable", kind }))
        expectTagged(error, "RemoteError", { method: "apply_patch" }, kind)
        expect(error._tag === "RemoteError" && error.errorType, kind).toMatch(/^Result(Encode|TooDeep)Error$/)
        expect(errorText(error).length, kind).toBeLessThan(100_000)
        expect(yield* worker.evaluate(model, "Validation")).toEqual({ split: "Validation" })
      }
    })))

  it.live(
    "errors quote a bounded prefix: a 10 MB model id or message keeps every error under 100 KB",
    () =>
      Effect.scoped(Effect.gen(function* () {
        const worker = yield* start(hardening)
        const model = yield* worker.initModel("cpu")
        const huge = "x".repeat(10 * MiB)
        const errors = [
          yield* Effect.flip(worker.evaluate(huge, "Validation")),
          yield* Effect.flip(worker.evaluate(`g1:${huge}`, "Validation")),
          // Another generation's id: refused before sending, as a ModelLostError.
          yield* Effect.flip(worker.evaluate(`g7:${huge}`, "Validation")),
          yield* Effect.flip(worker.trainWindow(huge, [echoBatch({}, [-1])])),
          yield* Effect.flip(
            worker.evaluate(model, { Custom: huge } as never).pipe(Effect.flatMap(() => Effect.fail("ok"))),
          ),
          yield* Effect.flip(worker.call(applyPatchRaw, { do: "raise", chars: 10 * MiB })),
          yield* Effect.flip(worker.call(applyPatchRaw, { do: "raise", chars: 10 * MiB, chained: true })),
          // A method the worker does not know, named by 10 MB: the worker quotes 200 characters of it.
          yield* Effect.flip(worker.call(rawRpc(`no_such_method_${huge}`), null)),
        ]
        const tags = errors.map((error) => (typeof error === "string" ? error : error._tag))
        expect(tags).toEqual([
          "RemoteError",
          "RemoteError",
          "ModelLostError",
          "InvalidArgumentError",
          "ok",
          "RemoteError",
          "RemoteError",
          "RemoteError",
        ])
        const unknownMethod = errors[7]
        if (typeof unknownMethod !== "string" && unknownMethod._tag === "RemoteError") {
          // Its `method` field is our own descriptor's name; what the worker said is bounded.
          expect(unknownMethod.errorType).toBe("UnknownMethodError")
          expect(unknownMethod.remoteMessage.length + unknownMethod.traceback.length).toBeLessThan(100_000)
        }
        for (const [i, error] of errors.slice(0, 7).entries()) {
          if (typeof error === "string") continue
          expect(errorText(error).length, `${i}: ${error._tag}`).toBeLessThan(100_000)
          expect(error.message.length, error._tag).toBeLessThan(100_000)
        }
        expect(yield* worker.evaluate(model, "Validation")).toEqual({ split: "Validation" })
      })),
    60_000,
  )
})

describe("3. a result above the frame limit", () => {
  it.live(
    "is a RemoteError ResultTooLargeError, whatever the characters; the worker keeps serving with its models",
    () =>
      Effect.scoped(Effect.gen(function* () {
        const worker = yield* start({ ...hardening, maxFrameBytes: 4096 })
        const model = yield* worker.initModel("cpu")
        // Just under the limit it comes through.
        expect(yield* worker.call(applyPatchRaw, { do: "big", chars: 4000 })).toBe("x".repeat(4000))
        const cases: Array<[number, string]> = [
          [4100, "x"],
          [10_000, "x"],
          [1_000_000, "x"],
          [50 * MiB, "x"],
          // Escaped by json.dumps: 6 and 12 bytes a character.
          [700, "é"],
          [400, "😀"],
        ]
        for (const [chars, char] of cases) {
          const error = yield* Effect.flip(worker.call(applyPatchRaw, { do: "big", chars, char }))
          expectTagged(error, "RemoteError", {
            method: "apply_patch",
            errorType: "ResultTooLargeError",
            remoteMessage: expect.stringContaining("above the frame limit of 4096 bytes"),
          }, `${chars} x ${char}`)
          expect(yield* worker.evaluate(model, "Validation")).toEqual({ split: "Validation" })
        }
        // A huge error message shrinks to fit the limit too.
        const raised = yield* Effect.flip(worker.call(applyPatchRaw, { do: "raise", chars: 1_000_000 }))
        expectTagged(raised, "RemoteError", { errorType: "RuntimeError" })
        expect(yield* worker.trainWindow(model, [echoBatch({ echo: "still serving" })])).toEqual({
          echo: "still serving",
          examples: 0,
        })
      })),
    60_000,
  )
})

describe("4. options out of range", () => {
  const MAX_TIMER = 2 ** 31 - 1
  const badDurations: ReadonlyArray<unknown> = [
    -1,
    -5,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    MAX_TIMER + 1,
    1e20,
    "1000 days",
    "-5 seconds",
    "soon",
    null,
    {},
  ]
  /** Refused before anything is spawned: no new child, named option, the accepted range. */
  const refused = (options: Record<string, unknown>, name: string, range: RegExp) =>
    Effect.gen(function* () {
      const before = childPids()
      const error = yield* Effect.flip(Effect.scoped(start({ ...echo, ...options } as PythonWorker.Options)))
      expect(childPids()).toEqual(before)
      expectTagged(error, "InvalidArgumentError", { where: "PythonWorker.layer" })
      expect(error.message).toContain(name)
      expect(error.message).toMatch(range)
      expect(error.message.length).toBeLessThan(3_000)
    })

  for (const name of ["connectTimeout", "shutdownTimeout", "terminateGrace", "callTimeout"]) {
    const zeroAllowed = name === "shutdownTimeout" || name === "terminateGrace"
    it.live(`${name}: negative, NaN, infinite, huge${zeroAllowed ? "" : ", 0"} and non-durations are refused`, () =>
      Effect.gen(function* () {
        for (const value of zeroAllowed ? badDurations : [0, "0 millis", ...badDurations]) {
          const isDuration = typeof value === "number" || value === "1000 days"
          yield* refused(
            { [name]: value },
            name,
            isDuration ? new RegExp(`(at least|more than) 0 ms and at most ${MAX_TIMER} ms`) : /DurationInput|duration/,
          )
        }
      }))
  }

  it.live("the call's own timeout: the same values are refused, naming the range, and the service stays usable", () =>
    Effect.scoped(Effect.gen(function* () {
      const worker = yield* start(echo)
      for (const value of [0, ...badDurations]) {
        const error = yield* Effect.flip(worker.hello({ timeout: value as never }))
        expectTagged(error, "InvalidArgumentError", { where: "hello" }, String(value))
        if (typeof value === "number") expect(error.message).toContain(`at most ${MAX_TIMER} ms`)
      }
      expect((yield* worker.hello({ timeout: MAX_TIMER })).protocolVersion).toBe(1)
    })))

  it.live("maxFrameBytes and stderrTailBytes out of range or not integers are refused, naming the range", () =>
    Effect.gen(function* () {
      for (const value of [0, -1, 1023, 1024.5, 2 ** 29, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, "4096", null]) {
        yield* refused({ maxFrameBytes: value }, "maxFrameBytes", /from 1024 to 536870888|number/)
      }
      for (const value of [-1, 0.5, 64 * MiB + 1, Number.NaN, Number.NEGATIVE_INFINITY, "64", true]) {
        yield* refused({ stderrTailBytes: value }, "stderrTailBytes", /from 0 to 67108864|number/)
      }
    }))

  it.live('configVia: "argv" with a config over 128 KiB is refused before spawning; at 128 KiB it starts', () =>
    Effect.gen(function* () {
      // The JSON text plus its NUL: Linux's limit for one argument.
      const config = (jsonBytes: number) => ({ pad: "x".repeat(jsonBytes - `{"pad":""}`.length) })
      for (const bytes of [128 * 1024, 128 * 1024 + 1, MiB]) {
        yield* refused({ configVia: "argv", workloadConfig: config(bytes) }, "workloadConfig", /Linux allows 131072/)
      }
      const started = yield* Effect.scoped(
        Effect.map(
          start({ ...echo, configVia: "argv", workloadConfig: config(128 * 1024 - 1) }),
          (worker) => worker.info.workloadName,
        ),
      )
      expect(started).toBe("EchoWorkload")
    }))

  it.live("no error message or field ever contains the workload config, whichever way the start fails", () => {
    const dir = mkdtempSync(join(tmpdir(), "burn-p2p-marker-"))
    const wrapper = join(dir, "setsid-python")
    writeFileSync(wrapper, `#!/bin/sh\nexec setsid ${testPython} "$@"\n`)
    chmodSync(wrapper, 0o755)
    return Effect.gen(function* () {
      const marker = "MARKER-b7c1e9a4-never-quote-me"
      const configs: Array<[string, JsonValue]> = [
        ["small", { secret: marker }],
        ["tiny", marker],
        ["1 MiB", { secret: marker, pad: "y".repeat(MiB), more: [marker, { deep: marker }] }],
      ]
      const failures: Array<[string, Partial<PythonWorker.Options>]> = [
        ["a missing executable", { pythonExecutable: "/nonexistent/python3" }],
        ["an executable that is a directory", { pythonExecutable: fixturesRoot }],
        ["a missing module", { workloadFactory: "no_such_module_anywhere:make" }],
        ["a factory that is not callable", { workloadFactory: "echo_workload:not_callable" }],
        ["a factory that raises", { workloadFactory: "tree_workload:make_failing" }],
        ["a bad option", { maxFrameBytes: -1 }],
        ["a misspelt option", { workloadFactroy: "x:y" } as never],
        ["a worker that never connects", { workerModule: "silent_worker", connectTimeout: 300 }],
        ["a worker speaking protocol 3", { workerModule: "future_protocol_worker" }],
        ["a worker moved into its own session", { pythonExecutable: wrapper }],
        ["a hello that times out", { workloadFactory: "tree_workload:make_quiet_slow", connectTimeout: 400 }],
      ]
      for (const [configName, config] of configs) {
        for (const configVia of ["file", "argv"] as const) {
          for (const [failureName, override] of failures) {
            const options = {
              ...echo,
              workloadConfig: failureName === "a hello that times out" ? { sleep_seconds: 5, marker } : config,
              configVia,
              ...override,
            } as PythonWorker.Options
            const label = `${configName} config via ${configVia}, ${failureName}`
            const error = yield* startError(options)
            const text = errorText(error)
            expect(text.includes(marker), `${label}: ${error._tag}`).toBe(false)
            expect(text.length, label).toBeLessThan(200_000)
          }
          // And a config JSON cannot carry: the error names where, not what.
          const error = yield* startError({
            ...echo,
            configVia,
            workloadConfig: { secret: marker, bad: Number.NaN } as never,
          })
          expectTagged(error, "InvalidArgumentError")
          expect(errorText(error)).not.toContain(marker)
        }
      }
    }).pipe(Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
  }, 180_000)
})

describe("6. a connection that proves who it is", () => {
  /** Starts late_worker (which waits for `go`), returning the port and a fiber for the start's outcome. */
  const lateStart = (verifyConnection: "token" | "processGroup" | undefined, go: string) =>
    Effect.gen(function* () {
      const announced = yield* Deferred.make<number>()
      const logger = Logger.make(({ message }) => {
        const port = /late worker: port (\d+)/.exec(String(message))?.[1]
        if (port !== undefined) Deferred.unsafeDone(announced, Exit.succeed(Number(port)))
      })
      const started = yield* Effect.fork(
        Effect.scoped(Effect.gen(function* () {
          const worker = yield* start({
            ...echo,
            workerModule: "late_worker",
            env: { LATE_WORKER_GO: go },
            ...(verifyConnection === undefined ? {} : { verifyConnection }),
          })
          const ready = Date.now()
          return { name: (yield* worker.hello()).workloadName, ready }
        })).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
          Logger.withMinimumLogLevel(LogLevel.Debug),
        ),
      )
      return { port: yield* Deferred.await(announced), started }
    })

  /** A local process connecting first: `send` is what it writes; resolves once the client has closed it. */
  const impostor = (port: number, send: Uint8Array | undefined) =>
    Effect.async<{ closed: boolean }>((resume) => {
      const socket = Net.connect({ host: "127.0.0.1", port }, () => {
        if (send !== undefined) socket.write(send)
      })
      socket.on("error", () => undefined)
      socket.once("close", () => resume(Effect.succeed({ closed: true })))
    })

  const frame = (body: string) => {
    const bytes = Buffer.from(body)
    const header = Buffer.alloc(8)
    header.writeBigUInt64BE(BigInt(bytes.length))
    return Buffer.concat([header, bytes])
  }
  const impostors: Array<[string, Uint8Array]> = [
    ["garbage", Buffer.from("GET / HTTP/1.1\r\n\r\n")],
    ["a wrong token", frame(`{"connect_token":"${"0".repeat(64)}","pid":1,"pgid":1}`)],
    ["the right prefix and a wrong token", frame(`{"connect_token":"${"ab".repeat(32)}"}`)],
    ["a header announcing 2^60 bytes", Buffer.from([0x10, 0, 0, 0, 0, 0, 0, 0])],
    ["a frame of our own protocol", frame(`{"id":1,"ok":true,"result":{"protocol_version":1,"workload_name":"evil"}}`)],
  ]

  for (const mode of ["token", "processGroup", undefined] as const) {
    it.live(`impostors that connect first are dropped and the real worker is accepted (${mode ?? "default"})`, () => {
      const dir = mkdtempSync(join(tmpdir(), "burn-p2p-impostor-"))
      const go = join(dir, "go")
      return Effect.gen(function* () {
        const { port, started } = yield* lateStart(mode, go)
        const silent = yield* Effect.fork(impostor(port, undefined))
        for (const [name, bytes] of impostors) {
          // Each is closed before the worker has even connected.
          const closed = yield* impostor(port, bytes).pipe(Effect.timeout("2 seconds"))
          expect(closed, name).toEqual({ closed: true })
        }
        writeFileSync(go, "")
        expect((yield* Fiber.join(started)).name).toBe("EchoWorkload")
        // The silent one never proved anything: closed at the latest when the worker is accepted.
        expect(yield* Fiber.join(silent).pipe(Effect.timeout("2 seconds"))).toEqual({ closed: true })
      }).pipe(Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
    })
  }

  it.live(
    "a flood of 1,000 connections during start delays the real worker by under 100 ms (token mode), and stays bounded in processGroup mode",
    () => {
      const dir = mkdtempSync(join(tmpdir(), "burn-p2p-flood-"))
      /** Milliseconds from the go signal to a started service, after `flood` connections. */
      const once = (verifyConnection: "token" | "processGroup", flood: number, run: number) =>
        Effect.gen(function* () {
          const go = join(dir, `go-${verifyConnection}-${flood}-${run}`)
          const { port, started } = yield* lateStart(verifyConnection, go)
          const sockets: Array<Net.Socket> = []
          yield* Effect.forEach(
            Array.from({ length: flood }, (_, i) => i),
            (i) =>
              Effect.async<void>((resume) => {
                const socket = Net.connect({ host: "127.0.0.1", port }, () => {
                  // Half send garbage, half say nothing.
                  if (i % 2 === 0) socket.write(Buffer.from("garbage garbage garbage"))
                  resume(Effect.void)
                })
                socket.on("error", () => resume(Effect.void))
                sockets.push(socket)
              }),
            { concurrency: 100, discard: true },
          )
          const begin = Date.now()
          writeFileSync(go, "")
          const { ready } = yield* Fiber.join(started)
          for (const socket of sockets) socket.destroy()
          return ready - begin
        })
      const median = (values: Array<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
      return Effect.gen(function* () {
        const figures: Record<string, number> = {}
        for (const mode of ["token", "processGroup"] as const) {
          // processGroup judges connections through /proc, one read of the table and of the
          // group's files per batch: slower than the token, but a flood does not stop the start.
          for (const flood of [0, 1000]) {
            const runs: Array<number> = []
            for (let run = 0; run < 5; run++) runs.push(yield* once(mode, flood, run))
            figures[`${mode} ${flood}`] = median(runs)
            console.log(
              `[flood] ${mode}, ${flood} connections: go -> started ${runs.join(", ")} ms (median ${median(runs)})`,
            )
          }
        }
        expect(figures["token 1000"] - figures["token 0"]).toBeLessThan(100)
        expect(figures["processGroup 1000"] - figures["processGroup 0"]).toBeLessThan(1000)
      }).pipe(Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
    },
    120_000,
  )

  it.live(
    "token mode works without /proc: under permissions narrower than -A, Deno grants no /proc read",
    () =>
      Effect.sync(() => {
        const script = join(fixturesRoot, "..", "token_client.ts")
        const narrow = [
          "--allow-run",
          "--allow-net=127.0.0.1",
          "--allow-read",
          "--allow-write",
          "--allow-env",
          "--allow-sys",
        ]
        for (const mode of ["token", "processGroup"]) {
          const result = spawnSync(process.execPath, ["run", ...narrow, script, testPython, mode], { encoding: "utf8" })
          expect(result.status, result.stderr).toBe(0)
          expect(JSON.parse(result.stdout.trim())).toEqual({
            procReadable: false,
            workloadName: "EchoWorkload",
            verifyConnection: mode,
          })
        }
        // With -A, strace shows what the client opens under /proc: in token mode never the socket
        // table nor another process's files (Deno itself reads /proc/self/*, /proc/meminfo).
        const which = spawnSync("sh", ["-c", "command -v strace"], { encoding: "utf8" })
        if (which.status !== 0) return
        const opened = (mode: string) => {
          const trace = join(mkdtempSync(join(tmpdir(), "burn-p2p-strace-")), "trace")
          try {
            const run = spawnSync(
              "strace",
              [
                ...["-f", "-qq", "-e", "trace=openat,execve", "-o", trace],
                ...[process.execPath, "run", "-A", script, testPython, mode, "--no-probe"],
              ],
              { encoding: "utf8" },
            )
            expect(run.status, run.stderr).toBe(0)
            const lines = readFileSync(trace, "utf8").split("\n")
            const python = new Set(
              lines.filter((line) => /execve\("[^"]*python/.test(line)).map((line) => line.split(" ")[0]),
            )
            return lines.filter((line) => line.includes('"/proc/') && !python.has(line.split(" ")[0]))
              .map((line) => /"(\/proc\/[^"]*)"/.exec(line)![1])
          } finally {
            rmSync(join(trace, ".."), { recursive: true, force: true })
          }
        }
        // The socket table and other processes' open files; Python's own threads may read /proc/N/stat.
        const foreign = (paths: Array<string>) => paths.filter((path) => /^\/proc\/(net\/|\d+\/fd)/.test(path))
        expect(foreign(opened("token"))).toEqual([])
        // The check sees what it should: processGroup mode reads the socket table.
        expect(opened("processGroup")).toContain("/proc/net/tcp")
      }),
    60_000,
  )

  for (const mode of ["token", "processGroup"] as const) {
    it.live(
      `a launcher that moves Python into its own session: OutsideProcessGroup, and no process left (${mode})`,
      () => {
        const dir = mkdtempSync(join(tmpdir(), "burn-p2p-setsid-"))
        const wrapper = join(dir, "setsid-python")
        const mark = `setsid-mark-${process.pid}-${mode}`
        writeFileSync(wrapper, `#!/bin/sh\nexec setsid ${testPython} "$@"\n`)
        chmodSync(wrapper, 0o755)
        /** The processes carrying our mark in their environment (the setsid'd Python among them). */
        const marked = () =>
          readdirSync("/proc").filter((name) => /^\d+$/.test(name)).map(Number).filter((pid) => {
            try {
              return readFileSync(`/proc/${pid}/environ`, "latin1").includes(mark)
            } catch {
              return false
            }
          })
        return Effect.gen(function* () {
          const options = {
            ...echo,
            workloadConfig: { sleep_seconds: 1 },
            pythonExecutable: wrapper,
            verifyConnection: mode,
            env: { SETSID_MARK: mark },
          }
          const error = yield* startError(options)
          expectTagged(error, "WorkerConnectError", { reason: "OutsideProcessGroup" })
          expect(error.message).toContain("connected from outside its process group")
          expect(error.message).not.toContain("exited with code 0")
          yield* awaitGone(marked())
          // A factory slower than the grace (5 s): the outsider reads EOF on stdin (the launcher's pipe
          // closed with it) and exits before it connects; nothing to diagnose, and nothing left.
          const slow = yield* startError({
            ...options,
            workloadFactory: "tree_workload:make_quiet_slow",
            workloadConfig: { sleep_seconds: 9 },
          })
          expectTagged(slow, "WorkerConnectError", { reason: "ProcessExited", exitCode: 0 })
          expect(slow._tag === "WorkerConnectError" && slow.stderrTail).toContain("stdin reached EOF")
          yield* awaitGone(marked())
        }).pipe(Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
      },
      30_000,
    )
  }

  it.live("start-up with the default options: spawn to a ready hello, median of 20", () =>
    Effect.gen(function* () {
      const times: Array<number> = []
      for (let i = 0; i < 21; i++) {
        const begin = performance.now()
        yield* Effect.scoped(
          Effect.flatMap(start(echo), () => Effect.sync(() => times.push(performance.now() - begin))),
        )
      }
      // The first one materialises the runtime and warms the module cache: left out.
      const runs = times.slice(1).sort((a, b) => a - b)
      const median = (runs[9] + runs[10]) / 2
      console.log(
        `[start-up] median ${median.toFixed(1)} ms, min ${runs[0].toFixed(1)}, max ${runs[19].toFixed(1)} (first ${
          times[0].toFixed(1)
        })`,
      )
      expect(median).toBeLessThan(2_000)
    }), 60_000)
})
