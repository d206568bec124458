/**
 * `deno task bench:steps`: what one call costs the client itself, without
 * Python or a socket: fiber steps (counted by a `Supervisor`) and bytes
 * allocated (heap growth with a young generation large enough that no
 * collection runs while it is measured), per call of `hello()`,
 * `worker.call(Rpcs.hello, null)` and the manager's call without a span,
 * against an in-memory worker that answers each request on the next
 * macrotask, as a socket would. The bare line is a promise per call over the
 * same in-memory worker.
 *
 *     deno task bench:steps [--calls N]
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as RuntimeFlagsPatch from "effect/RuntimeFlagsPatch"
import * as Stream from "effect/Stream"
import * as Supervisor from "effect/Supervisor"
import { Buffer } from "node:buffer"
import { parseArgs } from "node:util"
import type { ExitStatus } from "../../src/internal/exitStatus.ts"
import { FrameDecoder } from "../../src/internal/frame.ts"
import type { Launched } from "../../src/internal/launcher.ts"
import * as manager from "../../src/internal/manager.ts"
import type { Transport } from "../../src/internal/transport.ts"
import * as service from "../../src/internal/service.ts"
import { Rpcs } from "../../src/Protocol.ts"
import { frame } from "./bare.ts"

const { values } = parseArgs({ args: Deno.args, options: { calls: { type: "string", default: "5000" } } })
const CALLS = Number(values.calls)
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with --v8-flags=--expose-gc (the bench:steps task does)")

const answerFrame = (id: number): Buffer =>
  frame(`{"id":${id},"ok":true,"result":{"protocol_version":2,"workload_name":"w","capabilities":[]}}`)

/** A worker in memory: it reads each request's id and answers `hello` on the next macrotask. */
const inMemory = () => {
  let deliver: (chunk: Uint8Array) => void = () => {}
  const requests = new FrameDecoder(1 << 30)
  const transport: Transport = {
    write: (bytes) => {
      for (const frame of requests.push(bytes).frames) {
        const answer = answerFrame(JSON.parse(Buffer.from(frame).toString("utf8")).id)
        setImmediate(() => deliver(answer))
      }
      return true
    },
    onDrain: (callback) => queueMicrotask(callback),
    destroy: () => {},
    listen: (handlers) => {
      deliver = handlers.data
    },
  }
  return transport
}

const launch = (): Effect.Effect<Launched> =>
  Effect.map(Deferred.make<ExitStatus>(), (exited) => ({
    process: {
      pid: 1,
      exited: Deferred.await(exited),
      exitStatus: Effect.succeedNone,
      stderrTail: Effect.succeed(""),
      kill: () => {},
      terminate: Effect.void,
    },
    transport: inMemory(),
  }))

class StepCounter extends Supervisor.AbstractSupervisor<void> {
  steps = 0
  value = Effect.void
  override onEffect() {
    this.steps++
  }
}

const measure = (label: string, call: () => Effect.Effect<unknown, unknown>) =>
  Effect.gen(function* () {
    const loop = Effect.gen(function* () {
      for (let i = 0; i < CALLS; i++) yield* call()
    })
    yield* loop
    const counter = new StepCounter()
    yield* loop.pipe(
      Effect.supervised(counter),
      Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision)),
    )
    gc()
    const before = Deno.memoryUsage().heapUsed
    const started = performance.now()
    yield* loop
    const micros = (performance.now() - started) * 1000 / CALLS
    const bytes = (Deno.memoryUsage().heapUsed - before) / CALLS
    console.log(
      `${label.padEnd(34)} ${(counter.steps / CALLS).toFixed(1).padStart(6)} steps ${bytes.toFixed(0).padStart(7)} B ${
        micros.toFixed(1).padStart(7)
      } µs`,
    )
  })

const bare = async () => {
  const transport = inMemory()
  let waiting: ((body: unknown) => void) | undefined
  const answers = new FrameDecoder(1 << 30)
  transport.listen({
    data: (chunk) => {
      for (const frame of answers.push(chunk).frames) waiting?.(JSON.parse(Buffer.from(frame).toString("utf8")))
    },
    end: () => {},
  })
  let id = 0
  const call = () =>
    new Promise((resolve) => {
      waiting = resolve
      transport.write(frame(JSON.stringify({ id: ++id, method: "hello", params: null })))
    })
  for (let i = 0; i < CALLS; i++) await call()
  gc!()
  const before = Deno.memoryUsage().heapUsed
  const started = performance.now()
  for (let i = 0; i < CALLS; i++) await call()
  const micros = (performance.now() - started) * 1000 / CALLS
  console.log(
    `${"bare: a promise per call".padEnd(34)} ${"".padStart(12)} ${
      ((Deno.memoryUsage().heapUsed - before) / CALLS).toFixed(0).padStart(7)
    } B ${micros.toFixed(1).padStart(7)} µs`,
  )
}

console.log(`${CALLS} calls each, after as many untimed; per call:`)
await bare()
await Effect.runPromise(Effect.scoped(Effect.gen(function* () {
  const supervised = yield* manager.make<never>({
    launch,
    maxFrameBytes: 1 << 28,
    connectTimeout: Duration.seconds(10),
    callTimeout: Option.none(),
    shutdownTimeout: Duration.millis(100),
    restart: "never",
    onStart: undefined,
    idPrefix: "",
  })
  const worker = service.make(supervised, Stream.empty)
  const cases: ReadonlyArray<readonly [string, () => Effect.Effect<unknown, unknown>]> = [
    ["hello()", () => worker.hello()],
    ["worker.call(Rpcs.hello, null)", () => worker.call(Rpcs.hello, null)],
    ["the manager's call, no span", () => supervised.raw(Rpcs.hello, null, undefined)],
  ]
  // All warmed first: the JIT would otherwise bill the first one measured.
  for (const [, call] of cases) {
    for (let i = 0; i < 4 * CALLS; i++) yield* call()
  }
  for (const [label, call] of cases) yield* measure(label, call)
})))
