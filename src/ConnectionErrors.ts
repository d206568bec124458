/**
 * The errors of the connection to a worker: it broke the protocol, a call
 * passed its deadline, or the service was closed (by one of those, or by its
 * scope).
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import { quoteStderr, stderrTailOrEmpty } from "./internal/errorFields.ts"
import type { ErrorBase } from "./internal/wire.ts"

/** What a protocol error can be: written once for the type and the schema. */
const protocolFaults = [
  "FrameTooLarge",
  "TruncatedFrame",
  "InvalidUtf8",
  "InvalidJson",
  "InvalidEnvelope",
  "UnexpectedId",
  "UnsolicitedFrame",
  "InvalidResult",
  "UnsupportedVersion",
] as const

const /** @internal */ ProtocolErrorBase: ErrorBase<ProtocolError, "ProtocolError", {
  method: Schema.NullOr<typeof Schema.String>
  id: Schema.NullOr<typeof Schema.Number>
  pid: Schema.NullOr<typeof Schema.Number>
  reason: Schema.Literal<typeof protocolFaults>
  detail: typeof Schema.String
  /** Quoted when the worker's end explains the fault (a frame cut short by its exit). */
  stderrTail: Schema.optionalWith<typeof Schema.String, { default: () => string }>
}> = Schema.TaggedError<ProtocolError>()("ProtocolError", {
  method: Schema.NullOr(Schema.String),
  id: Schema.NullOr(Schema.Number),
  pid: Schema.NullOr(Schema.Number),
  reason: Schema.Literal(...protocolFaults),
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
