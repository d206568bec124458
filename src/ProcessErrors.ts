/**
 * The errors of the worker process itself: it could not be spawned, never
 * connected back, exited (or closed its connection), or died once too often
 * for its restart schedule. Each carries the exit status and stderr tail it
 * has.
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import { ExitFields, quoteStderr } from "./internal/errorFields.ts"
import { describeExit } from "./internal/exitStatus.ts"
import type { ErrorBase } from "./internal/wire.ts"

const /** @internal */ WorkerSpawnErrorBase: ErrorBase<WorkerSpawnError, "WorkerSpawnError", {
  executable: typeof Schema.String
  reason: Schema.Literal<["NotFound", "PermissionDenied", "Unknown"]>
  detail: typeof Schema.String
}> = Schema.TaggedError<WorkerSpawnError>()("WorkerSpawnError", {
  executable: Schema.String,
  reason: Schema.Literal("NotFound", "PermissionDenied", "Unknown"),
  detail: Schema.String,
})
/**
 * The Python executable could not be started at all.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.flatMap(PythonWorker, (worker) => worker.hello()).pipe(
 *   Effect.provide(PythonWorker.layer({ workloadFactory: "my_pkg.workload:make" })),
 *   Effect.catchTag("WorkerSpawnError", (error) =>
 *     Effect.logError(`cannot run ${error.executable}: ${error.reason}`)),
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkerSpawnError extends WorkerSpawnErrorBase {
  /** The executable, what went wrong and how to fix it. */
  override get message(): string {
    const hint = this.reason === "NotFound"
      ? "was not found; set `pythonExecutable` to a Python 3 interpreter (for example /usr/bin/python3)"
      : this.reason === "PermissionDenied"
      ? "is not executable by this user"
      : "could not be started"
    return `cannot start the Python worker: ${JSON.stringify(this.executable)} ${hint} (${this.detail})`
  }
}

const /** @internal */ WorkerConnectErrorBase: ErrorBase<
  WorkerConnectError,
  "WorkerConnectError",
  {
    reason: Schema.Literal<["ProcessExited", "Timeout", "Listen", "OutsideProcessGroup"]>
    timeoutMillis: typeof Schema.Number
    detail: typeof Schema.String
  } & ExitFields
> = Schema.TaggedError<WorkerConnectError>()("WorkerConnectError", {
  reason: Schema.Literal("ProcessExited", "Timeout", "Listen", "OutsideProcessGroup"),
  timeoutMillis: Schema.Number,
  detail: Schema.String,
  ...ExitFields,
})
/**
 * The worker was started but never connected back: it exited first (its
 * stderr usually says why: a missing module, a factory that raised), the
 * `connectTimeout` passed, the listener could not be opened, or the worker
 * connected from outside its process group (a launcher such as `setsid`
 * moved it into its own session, where the client could not stop it).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.flatMap(PythonWorker, (worker) => worker.hello()).pipe(
 *   Effect.provide(PythonWorker.layer({ workloadFactory: "my_pkg.workload:make" })),
 *   Effect.catchTag("WorkerConnectError", (error) =>
 *     // "ProcessExited": the stderr tail usually names the missing module or the factory's exception.
 *     Effect.logError(error.reason, error.exitCode, error.stderrTail)),
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkerConnectError extends WorkerConnectErrorBase {
  /** What happened (exit status, deadline, listener, outsider) and the last lines of stderr. */
  override get message(): string {
    const who = `Python worker (pid ${this.pid ?? "?"})`
    const head = this.reason === "ProcessExited"
      ? `${who} ${describeExit(this.exitCode, this.signal)} before connecting back` +
        (this.exitCode === 0
          ? " (a worker never does that by itself: did a launcher such as setsid hand Python to another session?)"
          : "")
      : this.reason === "Timeout"
      ? `${who} did not connect back within ${this.timeoutMillis} ms`
      : this.reason === "OutsideProcessGroup"
      ? `${who}: the worker connected from outside its process group (${this.detail}); ` +
        "a launcher moved Python into its own session (setsid?), where the client can neither supervise nor stop it"
      : `cannot listen for the Python worker on 127.0.0.1: ${this.detail}`
    return head + quoteStderr(this.stderrTail)
  }
}

const /** @internal */ WorkerExitedErrorBase: ErrorBase<
  WorkerExitedError,
  "WorkerExitedError",
  {
    method: Schema.NullOr<typeof Schema.String>
    reason: Schema.Literal<["ProcessExited", "ConnectionClosed"]>
  } & ExitFields
> = Schema.TaggedError<WorkerExitedError>()("WorkerExitedError", {
  method: Schema.NullOr(Schema.String),
  reason: Schema.Literal("ProcessExited", "ConnectionClosed"),
  ...ExitFields,
})
/**
 * The worker process exited or its connection closed. `method` is the call
 * that was pending or attempted, null when the death was noticed between calls.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const worker = yield* PythonWorker
 *   const model = yield* worker.initModel("cpu")
 *   return yield* worker.evaluate(model, "Validation")
 * }).pipe(
 *   Effect.catchTag("WorkerExitedError", (error) =>
 *     Effect.logError(`${error.method} lost: exit ${error.exitCode ?? error.signal}`, error.stderrTail)),
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkerExitedError extends WorkerExitedErrorBase {
  /** The method, the exit status and the last lines of stderr. */
  override get message(): string {
    const who = `Python worker (pid ${this.pid ?? "?"})`
    const what = this.reason === "ProcessExited" || this.exitCode !== null || this.signal !== null
      ? `${who} ${describeExit(this.exitCode, this.signal)}`
      : `${who} closed its connection`
    const during = this.method === null ? "" : `${this.method}: `
    return `${during}${what}${quoteStderr(this.stderrTail)}`
  }
}

const /** @internal */ WorkerGaveUpErrorBase: ErrorBase<
  WorkerGaveUpError,
  "WorkerGaveUpError",
  {
    method: typeof Schema.String
    /** Worker processes started in all, the first included. */
    starts: typeof Schema.Number
    /** What killed or stopped the last one, when it was more than its exit: a timeout, a failed start. */
    cause: Schema.optional<typeof Schema.Defect>
  } & ExitFields
> = Schema.TaggedError<WorkerGaveUpError>()("WorkerGaveUpError", {
  method: Schema.String,
  starts: Schema.Number,
  cause: Schema.optional(Schema.Defect),
  ...ExitFields,
})
/**
 * The worker died and its restart schedule gave up: every call fails at
 * once. Carries the last process's exit status and stderr tail.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const worker = yield* PythonWorker
 *   return yield* worker.hello()
 * }).pipe(
 *   Effect.catchTag("WorkerGaveUpError", (error) =>
 *     Effect.logError(`given up after ${error.starts} starts`, error.exitCode, error.stderrTail)),
 * )
 * ```
 *
 * @since 0.2.0
 * @category errors
 */
export class WorkerGaveUpError extends WorkerGaveUpErrorBase {
  /** The method, the number of starts, the last exit status and the stderr tail. */
  override get message(): string {
    const after = this.cause instanceof Error ? ` after: ${this.cause.message.slice(0, 300)}` : ""
    return `${this.method}: the Python worker is not restarted any more after ${this.starts} starts; ` +
      `the last one (pid ${this.pid ?? "?"}) ${describeExit(this.exitCode, this.signal)}${after}${
        quoteStderr(this.stderrTail)
      }`
  }
}
