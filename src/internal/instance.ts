/**
 * One worker process as the manager holds it: how it starts (launch,
 * connection, `hello`, `onStart`), and a call on it (the capability gate,
 * the model ids of its generation, the params checked and encoded, the
 * answer decoded and verified).
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { type Hello, type ModelIds, PROTOCOL_VERSIONS, Rpcs } from "../Protocol.ts"
import type { CallOptions, WorkerDeath } from "../PythonWorker.ts"
import {
  type CallError,
  InvalidArgumentError,
  MissingCapabilityError,
  type ModelLostError,
  ProtocolError,
  ResultMismatchError,
} from "../WorkerError.ts"
import { decodeAnswer, encodeParams } from "./codec.ts"
import { cancelOnInterrupt, type Connection, type Lost, make as makeConnection } from "./connection.ts"
import { lostOnWire } from "./death.ts"
import { bounded } from "./json.ts"
import type { Launched, LaunchError } from "./launcher.ts"
import type { Calls } from "./calls.ts"
import * as ModelIdsOf from "./modelIds.ts"
import { type SpanSpec, type Timing, timingOf } from "./observe.ts"
import type { WorkerProcess } from "./process.ts"
import type { RpcFor } from "./rpcTypes.ts"

/** @internal */
export interface Instance {
  readonly generation: number
  readonly pid: number
  readonly info: Hello
  readonly capabilities: ReadonlySet<string>
  readonly connection: Connection
  readonly process: WorkerProcess
  readonly scope: Scope.CloseableScope
  readonly died: Deferred.Deferred<WorkerDeath>
  /** The model ids of this generation. */
  readonly ids: ModelIds
}

/** @internal */
export interface CallContext {
  /** The manager's clock, read directly on every call. */
  readonly clock: Clock.Clock
  readonly maxFrameBytes: number
  readonly idPrefix: string
  /** The error for a model id of an earlier generation. */
  readonly modelLost: (method: string, stale: ModelIdsOf.StaleId, currentGeneration: number) => ModelLostError
}

/**
 * One call on one instance; a `Lost` call resumes with `lost` (one never
 * sent may be retried on the next). Unguarded: the caller runs
 * `timing.stats.cancel` when the call is interrupted (see `Connection.unguarded`).
 *
 * @internal
 */
export const callOn = <P, R, A>(
  context: CallContext,
  instance: Instance,
  rpc: RpcFor<P, R, A>,
  build: (ids: ModelIds) => P,
  finish: (result: R, ids: ModelIds) => A,
  timing: Timing,
  lost: (lost: Lost) => Effect.Effect<A, CallError>,
): Effect.Effect<A, CallError> => {
  const { method } = rpc
  if (rpc.capability !== undefined && !instance.capabilities.has(rpc.capability)) {
    return Effect.fail(
      new MissingCapabilityError({ method, capability: rpc.capability, advertised: [...instance.capabilities] }),
    )
  }
  const ids = instance.ids
  let params: P
  try {
    params = build(ids)
  } catch (error) {
    if (error instanceof ModelIdsOf.StaleId) return Effect.fail(context.modelLost(method, error, instance.generation))
    return Effect.fail(
      new InvalidArgumentError({
        where: method,
        detail: error instanceof ModelIdsOf.ForeignId
          ? `model ${JSON.stringify(bounded(error.id))} belongs to another worker of the pool`
          : `bad arguments: ${bounded(String(error), 500)}`,
      }),
    )
  }
  const paramsJson = encodeParams(rpc, params, context.maxFrameBytes)
  if (Either.isLeft(paramsJson)) return Effect.fail(paramsJson.left)
  timing.stats.pid = instance.pid
  timing.stats.generation = instance.generation
  // The id the caller holds: every process counts its own from m1.
  const model = rpc.modelOf(params)
  timing.stats.modelId = model === undefined ? undefined : ids.fromWire(model)
  timing.stats.connection = instance.connection
  return instance.connection.unguarded(
    {
      method,
      paramsJson: paramsJson.right,
      deadline: timing.deadline,
      timeoutMillis: timing.timeoutMillis,
      stats: timing.stats,
    },
    (envelope, id) =>
      Either.flatMap(decodeAnswer(rpc, envelope, id, instance.pid), (result) => {
        const mismatch = rpc.verify(params, result)
        return mismatch === undefined
          ? Either.right(finish(result, ids))
          : Either.left(new ResultMismatchError({ method, id, detail: mismatch }))
      }),
    lost,
    timing.stats,
  )
}

/**
 * Calls bound to one instance: what `onStart` gets, before the instance
 * serves anyone else, and what the manager's start and stop use.
 *
 * @internal
 */
export const instanceCalls = (
  context: CallContext,
  callTimeout: Option.Option<Duration.Duration>,
  instance: Instance,
): Calls => {
  const direct = <P, R, A>(
    rpc: RpcFor<P, R, A>,
    build: (ids: ModelIds) => P,
    finish: (result: R, ids: ModelIds) => A,
    callOptions: CallOptions | undefined,
    span: SpanSpec | undefined,
  ) => {
    const call = Effect.flatMap(
      Effect.suspend(() => timingOf(context.clock, callTimeout, rpc.method, callOptions)),
      (timing) =>
        cancelOnInterrupt(
          callOn(context, instance, rpc, build, finish, timing, (lost) =>
            Effect.flatMap(
              Deferred.await(instance.died),
              (death) => Effect.fail(lostOnWire(rpc.method, death, lost.reason)),
            )),
          timing.stats,
        ),
    )
    return span === undefined ? call : Effect.useSpan(span.name, span.options, () => call)
  }
  return {
    invoke: (rpc, args, callOptions, span) =>
      direct(rpc, (ids) => rpc.toParams(ids, ...args), (result, ids) => rpc.fromResult(result, ids), callOptions, span),
    raw: (rpc, params, callOptions, span) => direct(rpc, () => params, (result) => result, callOptions, span),
    pid: () => instance.pid,
    generation: () => instance.generation,
    info: () => instance.info,
  }
}

/**
 * `onStart` failed: for a restart, a death like any other.
 *
 * @internal
 */
export class OnStartFailure extends Data.TaggedError("OnStartFailure")<{ readonly cause: unknown }> {}

/** @internal */
export interface StartOptions<E> {
  readonly generation: number
  /** The scope each instance's own scope is forked from. */
  readonly parent: Scope.Scope
  readonly launch: (generation: number) => Effect.Effect<Launched, LaunchError, Scope.Scope>
  readonly maxFrameBytes: number
  readonly connectTimeout: Duration.Duration
  readonly callTimeout: Option.Option<Duration.Duration>
  readonly onStart: ((worker: Calls) => Effect.Effect<unknown, E>) | undefined
  readonly idPrefix: string
  /** Starts watching the instance for its death, from its launch on. */
  readonly watch: (instance: Instance) => Effect.Effect<unknown>
  readonly calls: (instance: Instance) => Calls
}

/**
 * Launch, connect, `hello`, `onStart`: a ready instance, or the error that
 * stopped it (its scope then closed).
 *
 * @internal
 */
export const startInstance = <E>(
  options: StartOptions<E>,
): Effect.Effect<Instance, LaunchError | CallError | OnStartFailure> =>
  Effect.gen(function* () {
    const { generation } = options
    const instanceScope = yield* Scope.fork(options.parent, ExecutionStrategy.sequential)
    const started = yield* Clock.currentTimeMillis
    const attempt = Effect.gen(function* () {
      const launched = yield* options.launch(generation)
      const proc = launched.process
      const connection = yield* makeConnection({
        transport: launched.transport,
        maxFrameBytes: options.maxFrameBytes,
        pid: proc.pid,
      })
      const instance: Instance = {
        generation,
        pid: proc.pid,
        info: undefined as unknown as Hello,
        capabilities: new Set(),
        connection,
        process: proc,
        scope: instanceScope,
        died: yield* Deferred.make<WorkerDeath>(),
        ids: ModelIdsOf.make(options.idPrefix, generation),
      }
      yield* options.watch(instance)
      // The handshake is part of starting: without a callTimeout, what is
      // left of connectTimeout bounds it too.
      const now = yield* Clock.currentTimeMillis
      const helloTimeout = Option.getOrElse(
        Option.map(options.callTimeout, Duration.toMillis),
        () => Math.max(1, started + Duration.toMillis(options.connectTimeout) - now),
      )
      const info = yield* options.calls(instance).raw(Rpcs.hello, null, { timeout: helloTimeout })
      if (!PROTOCOL_VERSIONS.includes(info.protocolVersion)) {
        return yield* new ProtocolError({
          method: "hello",
          id: 1,
          pid: proc.pid,
          reason: "UnsupportedVersion",
          detail: `the worker speaks protocol ${info.protocolVersion}; this client speaks ${
            PROTOCOL_VERSIONS.join(" and ")
          }: install a worker runtime that speaks one of them (this package ships burn_p2p_python_runtime)`,
        })
      }
      // Same connection, process and death as `instance`, which the watcher holds.
      const ready: Instance = { ...instance, info, capabilities: new Set(info.capabilities) }
      if (options.onStart !== undefined) {
        yield* options.onStart(options.calls(ready)).pipe(
          Effect.mapError((cause) => new OnStartFailure({ cause })),
          Effect.catchAllDefect((cause) => Effect.fail(new OnStartFailure({ cause }))),
        )
      }
      yield* Effect.logDebug(`worker ready: ${info.workloadName}, protocol ${info.protocolVersion}`)
      return ready
    }).pipe(Scope.extend(instanceScope))
    return yield* attempt.pipe(Effect.tapErrorCause(() => Scope.close(instanceScope, Exit.void)))
  }).pipe(Effect.annotateLogs({ generation: options.generation }))
