/**
 * An in-memory fake worker for the fast suite: a `Transport` pair whose
 * worker side decodes the request frames and plays a scripted behaviour per
 * request (answer, answer late under `TestClock`, never answer, answer with
 * a wrong id, garbage, close the stream, exit), a fake `WorkerProcess`, and
 * a fake launcher counting launches per generation. No process, no socket,
 * no real time: every wait is an `Effect.sleep` that `TestClock.adjust`
 * drives.
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import { Buffer } from "node:buffer"
import type { Transport } from "../src/internal/transport.ts"
import type { ExitStatus } from "../src/internal/exitStatus.ts"
import { FrameDecoder } from "../src/internal/frame.ts"
import type { Launched, LaunchError } from "../src/internal/launcher.ts"
import type { WorkerProcess } from "../src/internal/process.ts"
import { WorkerConnectError } from "../src/WorkerError.ts"

/** A request as the fake worker read it off the wire. */
export interface Seen {
  readonly id: number
  readonly method: string
  readonly params: unknown
}

/** One thing the fake worker does in answer to a request. */
export type Step =
  | { readonly _tag: "Sleep"; readonly millis: number }
  | { readonly _tag: "Bytes"; readonly bytes: Uint8Array }
  | { readonly _tag: "End" }
  | { readonly _tag: "Exit"; readonly status: ExitStatus; readonly stderr: string }
  /** The process is reaped with this status, but the stream has not ended yet (its EOF comes later). */
  | { readonly _tag: "Reaped"; readonly status: ExitStatus }
  | { readonly _tag: "Hang" }

/** What the worker does for one request; `undefined` means the default answer. */
export type Script = (request: Seen, index: number) => ReadonlyArray<Step> | undefined

/** An 8-byte big-endian length header. */
export const header = (length: number): Uint8Array => {
  const bytes = Buffer.alloc(8)
  bytes.writeUInt32BE(Math.floor(length / 0x1_0000_0000), 0)
  bytes.writeUInt32BE(length >>> 0, 4)
  return bytes
}

/** A frame around raw body bytes or text. */
export const frameOf = (body: Uint8Array | string): Uint8Array => {
  const bytes = typeof body === "string" ? Buffer.from(body, "utf8") : body
  return Buffer.concat([header(bytes.length), bytes])
}

/** A frame holding `value` as JSON. */
export const jsonFrame = (value: unknown): Uint8Array => frameOf(JSON.stringify(value))

// Steps.
export const sleep = (millis: number): Step => ({ _tag: "Sleep", millis })
export const bytes = (data: Uint8Array): Step => ({ _tag: "Bytes", bytes: data })
export const send = (value: unknown): Step => bytes(jsonFrame(value))
export const end: Step = { _tag: "End" }
export const hang: Step = { _tag: "Hang" }
export const reaped = (status: Partial<ExitStatus> = {}): Step => ({
  _tag: "Reaped",
  status: { exitCode: status.exitCode ?? (status.signal ? null : 0), signal: status.signal ?? null },
})
export const exit = (status: Partial<ExitStatus> = {}, stderr = ""): Step => ({
  _tag: "Exit",
  status: { exitCode: status.exitCode ?? (status.signal ? null : 0), signal: status.signal ?? null },
  stderr,
})

// Behaviours (lists of steps) for one request.
export const answer = (request: Seen, result: unknown = {}): ReadonlyArray<Step> => [
  send({ id: request.id, ok: true, result }),
]
export const late = (millis: number, request: Seen, result: unknown = {}): ReadonlyArray<Step> => [
  sleep(millis),
  ...answer(request, result),
]
export const remoteFailure = (request: Seen, error: string): ReadonlyArray<Step> => [
  send({ id: request.id, ok: false, error }),
]
export const never: ReadonlyArray<Step> = [hang]
export const wrongId = (request: Seen, result: unknown = {}): ReadonlyArray<Step> => [
  send({ id: request.id + 100, ok: true, result }),
]
export const garbage = (text = "this is not json"): ReadonlyArray<Step> => [bytes(frameOf(text))]

/** The hello a protocol 2 worker sends. */
export const helloResult = {
  protocol_version: 2,
  workload_name: "FakeWorkload",
  capabilities: ["artifact_path_io", "parameter_pack_export", "parameter_pack_import"],
}

/** What the fake worker answers when the script does not say: a plausible result per method. */
export const defaultAnswer = (models: { next: number }) => (request: Seen): ReadonlyArray<Step> => {
  switch (request.method) {
    case "hello":
      return answer(request, helloResult)
    case "init_model":
      return answer(request, { model_id: `m${models.next++}` })
    case "train_window":
    case "evaluate": {
      const params = request.params as { batches?: ReadonlyArray<{ payload?: { echo?: unknown } }> } | null
      const echo = params?.batches?.[0]?.payload?.echo
      return answer(request, { metrics: echo === undefined ? { loss: 0.5 } : { echo } })
    }
    case "shutdown":
      // The worker answers, then exits.
      return [...answer(request), exit({ exitCode: 0 })]
    default:
      return answer(request)
  }
}

/** A fake `WorkerProcess`, plus what the tests need to see and steer. */
export interface FakeProcess extends WorkerProcess {
  /** Marks the process exited (and reaped) with `status`; the first status wins. */
  readonly exitWith: (status: ExitStatus) => void
  readonly appendStderr: (text: string) => void
  /** How many times `kill()` ran. */
  readonly kills: () => number
  /** The `Clock` times at which `terminate` ran. */
  readonly terminations: ReadonlyArray<number>
}

/** The worker end of the transport pair, and what it saw. */
export interface FakeWorker {
  readonly transport: Transport
  readonly process: FakeProcess
  /** Every request written to the wire so far, in order. */
  readonly requests: ReadonlyArray<Seen>
  /** The `Clock` time at which each request was written. */
  readonly requestTimes: ReadonlyArray<number>
  /** The most requests the worker ever held unanswered at once (1 when the wire lock works). */
  readonly maxOutstanding: () => number
  /** How many writes the client made. */
  readonly writes: () => number
  /** Whether the client destroyed its end. */
  readonly destroyed: () => boolean
  /** Sends bytes to the client now, outside any script (e.g. an unsolicited frame). */
  readonly push: (data: Uint8Array) => void
  /** Ends the stream from the worker's side now. */
  readonly endStream: () => void
}

let nextPid = 4000

/**
 * A fake worker whose behaviour per request is `script` (the default answer
 * where it returns `undefined`). It serves one request at a time, as a real
 * worker does; its loop runs in the scope.
 */
export const makeWorker = (
  script: Script = () => undefined,
  options: {
    readonly pid?: number
    /** Every write asks the client to wait for a drain (a slow reader). */
    readonly congested?: boolean
  } = {},
): Effect.Effect<FakeWorker, never, Scope.Scope> =>
  Effect.gen(function* () {
    const pid = options.pid ?? nextPid++
    const congested = options.congested ?? false
    let writes = 0
    // The test's clock (a TestClock under `it.effect`), read synchronously when a request is written.
    const clock = yield* Effect.clock
    const inbox = yield* Queue.unbounded<Seen>()
    const exited = yield* Deferred.make<ExitStatus>()
    const requests: Array<Seen> = []
    const requestTimes: Array<number> = []
    const terminations: Array<number> = []
    const decoder = new FrameDecoder(1 << 30)
    const models = { next: 1 }
    const fallback = defaultAnswer(models)
    let stderr = ""
    let outstanding = 0
    let maxOutstanding = 0
    let kills = 0
    let destroyed = false
    let ended = false
    let handlers: Parameters<Transport["listen"]>[0] | undefined
    // What the worker sent before the client listened (a socket buffers it too).
    const early: Array<Uint8Array> = []

    // Answers are counted as they go out, before the client sees them: a
    // client that writes its next request from the answer's handler has none outstanding.
    const sent = new FrameDecoder(1 << 30)
    let countable = true
    const push = (data: Uint8Array) => {
      if (destroyed || ended) return
      if (countable) {
        const { frames, fault } = sent.push(data)
        outstanding -= frames.length
        countable = fault === undefined
      }
      if (handlers === undefined) early.push(data)
      else handlers.data(data)
    }
    const endStream = () => {
      if (ended) return
      ended = true
      if (!destroyed) handlers?.end()
    }
    const exitWith = (status: ExitStatus) => {
      Deferred.unsafeDone(exited, Exit.succeed(status))
    }

    const transport: Transport = {
      write: (frame) => {
        if (destroyed || ended) return !congested
        const { frames, fault } = decoder.push(frame)
        if (fault !== undefined) throw new Error(`the client sent a bad frame: ${fault._tag}`)
        for (const body of frames) {
          const envelope = JSON.parse(Buffer.from(body).toString("utf8")) as Seen
          const seen = { id: envelope.id, method: envelope.method, params: envelope.params }
          requests.push(seen)
          maxOutstanding = Math.max(maxOutstanding, ++outstanding)
          requestTimes.push(clock.unsafeCurrentTimeMillis())
          Queue.unsafeOffer(inbox, seen)
        }
        writes++
        return !congested
      },
      // Congested: each write asks the writer to wait, and the wait ends a microtask later.
      onDrain: (callback) => queueMicrotask(callback),
      destroy: () => {
        destroyed = true
      },
      listen: (next) => {
        if (handlers !== undefined) throw new Error("listen called twice")
        handlers = next
        for (const data of early.splice(0)) next.data(data)
        if (ended) next.end()
      },
    }

    const runStep = (step: Step): Effect.Effect<void> => {
      switch (step._tag) {
        case "Sleep":
          return Effect.sleep(step.millis)
        case "Bytes":
          return Effect.sync(() => push(step.bytes))
        case "End":
          return Effect.sync(endStream)
        case "Exit":
          return Effect.sync(() => {
            stderr += step.stderr
            exitWith(step.status)
            endStream()
          })
        case "Reaped":
          return Effect.sync(() => exitWith(step.status))
        case "Hang":
          return Effect.never
      }
    }

    let index = 0
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function* () {
      const request = yield* Queue.take(inbox)
      const steps = script(request, index++) ?? fallback(request)
      for (const step of steps) yield* runStep(step)
    })))

    const process: FakeProcess = {
      pid,
      exited: Deferred.await(exited),
      exitStatus: Effect.flatMap(
        Deferred.poll(exited),
        Option.match({ onNone: () => Effect.succeedNone, onSome: Effect.asSome }),
      ),
      stderrTail: Effect.sync(() => stderr),
      kill: () => {
        kills++
        exitWith({ exitCode: null, signal: "SIGKILL" })
        endStream()
      },
      terminate: Effect.gen(function* () {
        terminations.push(yield* Clock.currentTimeMillis)
        exitWith({ exitCode: null, signal: "SIGTERM" })
        endStream()
      }),
      exitWith,
      appendStderr: (text) => {
        stderr += text
      },
      kills: () => kills,
      terminations,
    }
    // As the real process: its scope's release runs the stop sequence.
    yield* Effect.addFinalizer(() => process.terminate)

    return {
      transport,
      process,
      requests,
      requestTimes,
      maxOutstanding: () => maxOutstanding,
      writes: () => writes,
      destroyed: () => destroyed,
      push,
      endStream,
    } satisfies FakeWorker
  })

/** How one launch goes. */
export type Start =
  /** A worker that serves under its script. */
  | { readonly _tag: "Serve"; readonly script?: Script }
  /** The launch itself fails (e.g. the worker exited before connecting back). */
  | { readonly _tag: "Fail"; readonly error?: LaunchError }
  /** The process starts, then exits at once, before it answers anything. */
  | { readonly _tag: "Die"; readonly status?: ExitStatus; readonly stderr?: string }

export const serve = (script?: Script): Start => ({ _tag: "Serve", script })
export const failStart = (error?: LaunchError): Start => ({ _tag: "Fail", error })
export const dieAtStart = (status?: ExitStatus, stderr?: string): Start => ({ _tag: "Die", status, stderr })

/** The fake launcher, and every worker it started. */
export interface FakeLauncher {
  readonly launch: (generation: number) => Effect.Effect<Launched, LaunchError, Scope.Scope>
  /** The generation of each launch, in order. */
  readonly launches: ReadonlyArray<number>
  /** The `Clock` time of each launch. */
  readonly launchTimes: ReadonlyArray<number>
  /** The worker of each generation that got one (the last launch of it). */
  readonly workers: Map<number, FakeWorker>
  readonly count: (generation: number) => number
}

/** A launcher whose `plan(generation)` says how each launch goes. */
export const makeLauncher = (plan: (generation: number) => Start = () => serve()): FakeLauncher => {
  const launches: Array<number> = []
  const launchTimes: Array<number> = []
  const workers = new Map<number, FakeWorker>()
  const pid = (generation: number) => 1000 * generation + launches.filter((g) => g === generation).length
  return {
    launches,
    launchTimes,
    workers,
    count: (generation) => launches.filter((g) => g === generation).length,
    launch: (generation) =>
      Effect.gen(function* () {
        launches.push(generation)
        launchTimes.push(yield* Clock.currentTimeMillis)
        const how = plan(generation)
        if (how._tag === "Fail") {
          return yield* Effect.fail(
            how.error ?? new WorkerConnectError({
              reason: "ProcessExited",
              timeoutMillis: 10_000,
              detail: "the process exited",
              pid: pid(generation),
              exitCode: 1,
              signal: null,
              stderrTail: `ImportError: generation ${generation} cannot start\n`,
            }),
          )
        }
        const worker = yield* makeWorker(how._tag === "Serve" ? how.script : undefined, { pid: pid(generation) })
        workers.set(generation, worker)
        if (how._tag === "Die") {
          worker.process.appendStderr(how.stderr ?? `Fatal: generation ${generation} died at start\n`)
          worker.process.exitWith(how.status ?? { exitCode: 3, signal: null })
          worker.endStream()
        }
        return { process: worker.process, transport: worker.transport }
      }),
  }
}
