/**
 * The errors of one request that leave the worker serving: Python raised, an
 * argument was refused, a model was lost with its process, a capability is
 * missing, or the answer does not match the call.
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import type { ErrorBase } from "./internal/wire.ts"

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
