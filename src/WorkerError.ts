/**
 * The errors of the Python worker service. Each carries, as fields, what a
 * person needs to act on it (method, pid, exit status, stderr tail, Python
 * exception), and builds its message from them.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import { describeExit } from "./internal/exitStatus.ts"
import type { RuntimeCacheError } from "./RuntimeCache.ts"

/** Lines of the stderr tail quoted in messages; the field keeps the whole tail. */
const MESSAGE_STDERR_LINES = 12

const quoteStderr = (stderrTail: string): string => {
  const lines = stderrTail.trimEnd().split("\n")
  if (lines.length === 1 && lines[0] === "") return ""
  const shown = lines.slice(-MESSAGE_STDERR_LINES).map((line) => `  | ${line}`).join("\n")
  return `\n  worker stderr (last ${Math.min(lines.length, MESSAGE_STDERR_LINES)} lines):\n${shown}`
}

/** What `Schema.TaggedError<Self>()(tag, fields)` returns, spelled out so that JSR need not infer it. */
type ErrorBase<Self, Tag extends string, Fields extends Schema.Struct.Fields> = Schema.TaggedErrorClass<
  Self,
  Tag,
  { readonly _tag: Schema.tag<Tag> } & Fields
>

type ExitFields = {
  pid: Schema.NullOr<typeof Schema.Number>
  exitCode: Schema.NullOr<typeof Schema.Number>
  signal: Schema.NullOr<typeof Schema.String>
  stderrTail: typeof Schema.String
}

const ExitFields: ExitFields = {
  pid: Schema.NullOr(Schema.Number),
  exitCode: Schema.NullOr(Schema.Number),
  signal: Schema.NullOr(Schema.String),
  stderrTail: Schema.String,
}

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

const /** @internal */ RemoteErrorBase: ErrorBase<RemoteError, "RemoteError", {
  method: typeof Schema.String
  id: typeof Schema.Number
  /** The Python exception class, e.g. `ValueError`; parsed from the text when the worker does not send it. */
  errorType: typeof Schema.String
  remoteMessage: typeof Schema.String
  traceback: typeof Schema.String
}> = Schema.TaggedError<RemoteError>()("RemoteError", {
  method: Schema.String,
  id: Schema.Number,
  errorType: Schema.String,
  remoteMessage: Schema.String,
  traceback: Schema.String,
})
/**
 * The worker answered `ok: false`: the workload (or the worker's dispatch)
 * raised. The worker keeps serving; the model ids it holds stay valid.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const worker = yield* PythonWorker
 *   return yield* worker.evaluate("g1:m1", { Custom: "holdout" })
 * }).pipe(
 *   // The workload raised: the worker keeps serving.
 *   Effect.catchTag("RemoteError", (error) => Effect.logWarning(`${error.errorType}: ${error.remoteMessage}`)),
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class RemoteError extends RemoteErrorBase {
  /** `method#id failed in Python: Type: message`. */
  override get message(): string {
    return `${this.method}#${this.id} failed in Python: ${this.errorType}: ${this.remoteMessage}`
  }
}

// Built outside the fields object: written inline, TypeScript infers the
// fields from the annotation below instead and rejects the object.
const stderrTailOrEmpty = Schema.optionalWith(Schema.String, { default: () => "" })

const /** @internal */ ProtocolErrorBase: ErrorBase<ProtocolError, "ProtocolError", {
  method: Schema.NullOr<typeof Schema.String>
  id: Schema.NullOr<typeof Schema.Number>
  pid: Schema.NullOr<typeof Schema.Number>
  reason: Schema.Literal<[
    "FrameTooLarge",
    "TruncatedFrame",
    "InvalidUtf8",
    "InvalidJson",
    "InvalidEnvelope",
    "UnexpectedId",
    "UnsolicitedFrame",
    "InvalidResult",
    "UnsupportedVersion",
  ]>
  detail: typeof Schema.String
  /** Quoted when the worker's end explains the fault (a frame cut short by its exit). */
  stderrTail: Schema.optionalWith<typeof Schema.String, { default: () => string }>
}> = Schema.TaggedError<ProtocolError>()("ProtocolError", {
  method: Schema.NullOr(Schema.String),
  id: Schema.NullOr(Schema.Number),
  pid: Schema.NullOr(Schema.Number),
  reason: Schema.Literal(
    "FrameTooLarge",
    "TruncatedFrame",
    "InvalidUtf8",
    "InvalidJson",
    "InvalidEnvelope",
    "UnexpectedId",
    "UnsolicitedFrame",
    "InvalidResult",
    "UnsupportedVersion",
  ),
  detail: Schema.String,
  stderrTail: stderrTailOrEmpty,
})
/**
 * The worker sent something the protocol does not allow. The stream cannot be
 * trusted afterwards, so the worker is killed and the service closes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const worker = yield* PythonWorker
 *   return yield* worker.capabilityProbe()
 * }).pipe(
 *   Effect.catchTag("ProtocolError", (error) => Effect.logError(error.reason, error.detail)),
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class ProtocolError extends ProtocolErrorBase {
  /** The call, the worker's pid, the reason and its detail, and the stderr tail when it explains the fault. */
  override get message(): string {
    const call = this.method === null ? "" : `${this.method}${this.id === null ? "" : `#${this.id}`}: `
    return `${call}protocol error from Python worker (pid ${this.pid ?? "?"}): ${this.reason}: ${this.detail}` +
      quoteStderr(this.stderrTail)
  }
}

const /** @internal */ RpcTimeoutErrorBase: ErrorBase<RpcTimeoutError, "RpcTimeoutError", {
  method: typeof Schema.String
  id: Schema.NullOr<typeof Schema.Number>
  pid: Schema.NullOr<typeof Schema.Number>
  timeoutMillis: typeof Schema.Number
}> = Schema.TaggedError<RpcTimeoutError>()("RpcTimeoutError", {
  method: Schema.String,
  id: Schema.NullOr(Schema.Number),
  pid: Schema.NullOr(Schema.Number),
  timeoutMillis: Schema.Number,
})
/**
 * A call passed its deadline (`callTimeout` or the call's own `timeout`). When
 * the request was already on the wire the worker is killed and the service
 * closes; a call that timed out while still queued leaves the service open.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const worker = yield* PythonWorker
 *   const model = yield* worker.initModel("cpu")
 *   return yield* worker.evaluate(model, "Test", { timeout: "30 seconds" })
 * }).pipe(
 *   // `id` null: it timed out while queued, and the worker was left alone.
 *   Effect.catchTag("RpcTimeoutError", (error) => Effect.logWarning(error.method, error.id, error.timeoutMillis)),
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class RpcTimeoutError extends RpcTimeoutErrorBase {
  /** The call, its deadline, and whether it was queued or on the wire. */
  override get message(): string {
    const where = this.id === null ? "while queued behind other calls" : "waiting for the worker's answer"
    return `${this.method}${this.id === null ? "" : `#${this.id}`} timed out after ${this.timeoutMillis} ms ${where}`
  }
}

const /** @internal */ WorkerClosedErrorBase: ErrorBase<WorkerClosedError, "WorkerClosedError", {
  method: typeof Schema.String
  cause: Schema.optional<Schema.Union<[typeof RpcTimeoutError, typeof ProtocolError]>>
}> = Schema.TaggedError<WorkerClosedError>()("WorkerClosedError", {
  method: Schema.String,
  cause: Schema.optional(Schema.Union(RpcTimeoutError, ProtocolError)),
})
/**
 * The service can no longer be used: a timeout or protocol error closed it
 * (`cause`), or its scope has closed (`cause` absent).
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
 *   Effect.catchTag("WorkerClosedError", (error) => Effect.logError(error.cause?.message ?? "scope closed")),
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkerClosedError extends WorkerClosedErrorBase {
  /** The method and why the service closed (the closing error's message). */
  override get message(): string {
    const why = this.cause === undefined ? "its scope has closed" : `it was closed after: ${this.cause.message}`
    return `${this.method}: the Python worker service is no longer usable: ${why}`
  }
}

const /** @internal */ InvalidArgumentErrorBase: ErrorBase<InvalidArgumentError, "InvalidArgumentError", {
  /** `PythonWorker.layer` for options, else the method name. */
  where: typeof Schema.String
  detail: typeof Schema.String
}> = Schema.TaggedError<InvalidArgumentError>()("InvalidArgumentError", {
  where: Schema.String,
  detail: Schema.String,
})
/**
 * An option or a call argument failed its schema; nothing was sent or spawned.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.flatMap(PythonWorker, (worker) => worker.hello()).pipe(
 *   Effect.provide(PythonWorker.layer({ workloadFactory: "my_pkg.workload:make" })),
 *   // A layer option out of range (here: connectTimeout 0) fails before anything is spawned.
 *   Effect.catchTag("InvalidArgumentError", (error) => Effect.logError(error.where, error.detail)),
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidArgumentError extends InvalidArgumentErrorBase {
  /** Where the argument was refused, and why. */
  override get message(): string {
    return `invalid argument to ${this.where}: ${this.detail}`
  }
}

const /** @internal */ ModelLostErrorBase: ErrorBase<ModelLostError, "ModelLostError", {
  modelId: typeof Schema.String
  /** The worker process (1 for the first, counting restarts) that made the model. */
  generation: typeof Schema.Number
  /** The worker process serving calls now, if any. */
  currentGeneration: typeof Schema.Number
  method: typeof Schema.String
  /** How the model's process ended. */
  died: typeof Schema.String
}> = Schema.TaggedError<ModelLostError>()("ModelLostError", {
  modelId: Schema.String,
  generation: Schema.Number,
  currentGeneration: Schema.Number,
  method: Schema.String,
  died: Schema.String,
})
/**
 * A call named a model made by an earlier worker process, which has died
 * since; nothing was sent. Re-create the model (for example in `onStart`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const worker = yield* PythonWorker
 *   const model = yield* worker.initModel("cpu") // "g1:m1"
 *   // ... the worker dies and is restarted as generation 2 ...
 *   return yield* worker.evaluate(model, "Validation").pipe(
 *     Effect.catchTag("ModelLostError", (error) =>
 *       Effect.flatMap(worker.initModel("cpu"), (fresh) => worker.evaluate(fresh, "Validation"))),
 *   )
 * })
 * ```
 *
 * @since 0.2.0
 * @category errors
 */
export class ModelLostError extends ModelLostErrorBase {
  /** The model, the generation that made it, how that process ended, and the generation serving now. */
  override get message(): string {
    return `${this.method}: model ${
      JSON.stringify(this.modelId)
    } belonged to worker process #${this.generation}, which ${this.died}; ` +
      `the worker now serving is #${this.currentGeneration}`
  }
}

const /** @internal */ WorkerGaveUpErrorBase: ErrorBase<
  WorkerGaveUpError,
  "WorkerGaveUpError",
  {
    method: typeof Schema.String
    /** Worker processes started in all, the first included. */
    starts: typeof Schema.Number
  } & ExitFields
> = Schema.TaggedError<WorkerGaveUpError>()("WorkerGaveUpError", {
  method: Schema.String,
  starts: Schema.Number,
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
    return `${this.method}: the Python worker is not restarted any more after ${this.starts} starts; ` +
      `the last one (pid ${this.pid ?? "?"}) ${describeExit(this.exitCode, this.signal)}${quoteStderr(this.stderrTail)}`
  }
}

const /** @internal */ MissingCapabilityErrorBase: ErrorBase<MissingCapabilityError, "MissingCapabilityError", {
  method: typeof Schema.String
  capability: typeof Schema.String
  /** What the worker does advertise in `hello`. */
  advertised: Schema.Array$<typeof Schema.String>
}> = Schema.TaggedError<MissingCapabilityError>()("MissingCapabilityError", {
  method: Schema.String,
  capability: Schema.String,
  advertised: Schema.Array(Schema.String),
})
/**
 * The method needs a capability the worker does not advertise in `hello`;
 * nothing was sent and the service stays usable.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const worker = yield* PythonWorker
 *   return yield* worker.parameterPackPlan("cpu")
 * }).pipe(
 *   Effect.catchTag("MissingCapabilityError", (error) =>
 *     Effect.logWarning(`${error.capability} not among ${error.advertised.join(", ")}`)),
 * )
 * ```
 *
 * @since 0.2.0
 * @category errors
 */
export class MissingCapabilityError extends MissingCapabilityErrorBase {
  /** The method, the capability it needs, and what the worker advertises. */
  override get message(): string {
    const has = this.advertised.length === 0 ? "none" : this.advertised.join(", ")
    return `${this.method} needs the worker capability ${JSON.stringify(this.capability)}; ` +
      `the worker advertises: ${has}`
  }
}

const /** @internal */ ResultMismatchErrorBase: ErrorBase<ResultMismatchError, "ResultMismatchError", {
  method: typeof Schema.String
  id: typeof Schema.Number
  detail: typeof Schema.String
}> = Schema.TaggedError<ResultMismatchError>()("ResultMismatchError", {
  method: Schema.String,
  id: Schema.Number,
  detail: Schema.String,
})
/**
 * The worker answered, in the right shape, but not what the call asked for
 * (`runInnerLoop` with `requireExactSteps` got another step count). The
 * worker keeps serving.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const worker = yield* PythonWorker
 *   const model = yield* worker.initModel("cpu")
 *   return yield* worker.runInnerLoop(model, [], {
 *     numInnerSteps: 10,
 *     outputParameterPackPath: "/tmp/round-1/peer-0",
 *     modelSchemaHash: "schema-v1",
 *     requireExactSteps: true,
 *   })
 * }).pipe(
 *   Effect.catchTag("ResultMismatchError", (error) => Effect.logError(error.detail)),
 * )
 * ```
 *
 * @since 0.2.0
 * @category errors
 */
export class ResultMismatchError extends ResultMismatchErrorBase {
  /** `method#id:` and what differs from what the call asked for. */
  override get message(): string {
    return `${this.method}#${this.id}: ${this.detail}`
  }
}

/**
 * What an RPC can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type CallError =
  | WorkerExitedError
  | RemoteError
  | ProtocolError
  | RpcTimeoutError
  | WorkerClosedError
  | InvalidArgumentError
  | ModelLostError
  | WorkerGaveUpError
  | MissingCapabilityError
  | ResultMismatchError

/**
 * What acquiring the service can fail with (the first `hello` included).
 *
 * @since 0.1.0
 * @category errors
 */
export type StartError = RuntimeCacheError | WorkerSpawnError | WorkerConnectError | CallError
