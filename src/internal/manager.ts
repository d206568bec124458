/**
 * The manager: policy over one supervised worker. It starts a process
 * through a launcher, puts a connection on it, checks `hello`, runs
 * `onStart`; it owns every deadline, the shutdown sequence, what a failure
 * does to the service, and restarts under a `Schedule`.
 *
 * Each worker process is a *generation* (1, 2, ...) with a scope of its own.
 * A supervisor fiber watches it; when it dies (exit, closed stream, a
 * protocol fault or a timeout, after which the manager kills it on purpose)
 * the supervisor gathers its exit status and stderr tail, closes its scope,
 * and asks the restart schedule whether and when to start the next.
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
import * as FiberId from "effect/FiberId"
import * as FiberSet from "effect/FiberSet"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import type * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as ScheduleIntervals from "effect/ScheduleIntervals"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as Tracer from "effect/Tracer"
import { type Hello, type ModelIds, PROTOCOL_VERSIONS, type Rpc, Rpcs } from "../Protocol.ts"
import type { CallOptions, WorkerDeath, WorkerEvent } from "../PythonWorker.ts"
import {
  type CallError,
  InvalidArgumentError,
  MissingCapabilityError,
  ModelLostError,
  ProtocolError,
  ResultMismatchError,
  RpcTimeoutError,
  WorkerClosedError,
  WorkerExitedError,
  WorkerGaveUpError,
} from "../WorkerError.ts"
import { decodeAnswer, encodeParams } from "./codec.ts"
import { type CloseReason, type Connection, describeFault, Lost, make as makeConnection } from "./connection.ts"
import { describeExit } from "./exitStatus.ts"
import { bounded } from "./json.ts"
import type { Launched, LaunchError } from "./launcher.ts"
import * as Metrics from "./metrics.ts"
import { decodeCallTimeout } from "./options.ts"
import type { WorkerProcess } from "./process.ts"

/** How long an error waits, after the stream ends, for the exit status that explains it. */
const EXIT_SETTLE = Duration.seconds(1)
/** The least time between a death and the next start, whatever the schedule says: a crash loop never spins. */
const MIN_RESTART_DELAY_MILLIS = 100
const EVENT_REPLAY = 64

/** @internal */
export interface ManagerOptions<E> {
  /** Starts one worker process; its resources belong to the given scope. */
  readonly launch: (generation: number) => Effect.Effect<Launched, LaunchError, Scope.Scope>
  readonly maxFrameBytes: number
  readonly connectTimeout: Duration.Duration
  readonly callTimeout: Option.Option<Duration.Duration>
  readonly shutdownTimeout: Duration.Duration
  readonly restart: Schedule.Schedule<unknown, WorkerDeath> | "never"
  readonly onStart: ((worker: Calls) => Effect.Effect<unknown, E>) | undefined
  /** Put before model ids' generation tag: which worker of a pool made them. */
  readonly idPrefix: string
}

/**
 * What a caller needs of one worker: run any `Rpc` by its service mapping.
 *
 * @internal
 */
export interface Calls {
  readonly invoke: <A>(
    rpc: Rpc<any, any, any, any, any, A>,
    args: ReadonlyArray<unknown>,
    options: CallOptions | undefined,
    span?: Tracer.Span,
  ) => Effect.Effect<A, CallError>
  /** Wire params and result as they are: no model id mapping. */
  readonly raw: <P, PI, R, RI>(
    rpc: Rpc<P, PI, R, RI>,
    params: P,
    options: CallOptions | undefined,
    span?: Tracer.Span,
  ) => Effect.Effect<R, CallError>
  readonly pid: () => number
  readonly generation: () => number
  readonly info: () => Hello
}

/** @internal */
export interface Manager extends Calls {
  readonly events: Stream.Stream<WorkerEvent>
  readonly queued: () => number
}

interface Instance {
  readonly generation: number
  readonly pid: number
  readonly info: Hello
  readonly capabilities: ReadonlySet<string>
  readonly connection: Connection
  readonly process: WorkerProcess
  readonly scope: Scope.CloseableScope
  readonly died: Deferred.Deferred<WorkerDeath>
}

type State = Data.TaggedEnum<{
  Running: { readonly instance: Instance }
  Restarting: { readonly generation: number }
  /** No worker any more: every call fails at once with `error(method)`. */
  Stopped: { readonly error: (method: string) => CallError }
  Closing: {}
}>
const State = Data.taggedEnum<State>()

/** A model id of another generation, thrown from `ModelIds.toWire` and caught by the call. */
class StaleId {
  constructor(readonly id: string, readonly generation: number) {}
}
/** A model id of another pool worker. */
class ForeignId {
  constructor(readonly id: string, readonly prefix: string) {}
}

const ID_TAG = /^((?:w\d+\.)?)g(\d+):/

/**
 * The pool prefix and generation a client model id names, if it is one.
 *
 * @internal
 */
export const parseModelId = (
  id: string,
): { readonly prefix: string; readonly generation: number; readonly raw: string } | undefined => {
  const match = ID_TAG.exec(id)
  return match === null ? undefined : { prefix: match[1], generation: Number(match[2]), raw: id.slice(match[0].length) }
}

const exitFields = (death: WorkerDeath) => ({
  pid: death.pid,
  exitCode: death.exitCode,
  signal: death.signal,
  stderrTail: death.stderrTail,
})

/** What a call that was on the wire gets when its worker died under it. */
const lostOnWire = (method: string, death: WorkerDeath, reason: CloseReason): CallError =>
  reason._tag === "Ended" && reason.truncated !== undefined
    ? new ProtocolError({
      method,
      id: null,
      pid: death.pid,
      reason: reason.truncated._tag,
      detail: describeFault(reason.truncated) +
        (death.exitCode !== null || death.signal !== null
          ? `; the worker then ${describeExit(death.exitCode, death.signal)}`
          : ""),
      stderrTail: death.stderrTail,
    })
    : reason._tag === "Closed"
    ? new WorkerClosedError({ method })
    : new WorkerExitedError({
      method,
      reason: death.exited ? "ProcessExited" : "ConnectionClosed",
      ...exitFields(death),
    })

/** What later calls get from a worker that is not restarted: as the death itself said. */
const afterDeath = (death: WorkerDeath, reason: CloseReason | undefined) => (method: string): CallError =>
  reason?._tag === "Faulted" || reason?._tag === "TimedOut"
    ? new WorkerClosedError({ method, cause: reason.error })
    : reason?._tag === "Ended" && reason.truncated !== undefined
    ? new WorkerClosedError({ method, cause: lostOnWire(method, death, reason) as ProtocolError })
    : new WorkerExitedError({
      method,
      reason: death.exited ? "ProcessExited" : "ConnectionClosed",
      ...exitFields(death),
    })

/** @internal */
export const make = <E>(options: ManagerOptions<E>): Effect.Effect<Manager, LaunchError | CallError | E, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    // The parent of every instance's scope, made before the polite stop is
    // registered so that it closes after it (a finalizer runs in reverse order).
    const instances = yield* Scope.fork(scope, ExecutionStrategy.sequential)
    const supervisors = yield* FiberSet.make()
    const events = yield* PubSub.unbounded<WorkerEvent>({ replay: EVENT_REPLAY })
    const deaths = new Map<number, WorkerDeath>()

    let state: State = State.Restarting({ generation: 1 })
    let changed = yield* Deferred.make<void>()
    let current: Instance | undefined
    let lastInstance: Instance | undefined
    let starts = 0

    const setState = (next: State) => {
      state = next
      current = next._tag === "Running" ? next.instance : undefined
      const previous = changed
      changed = Deferred.unsafeMake(FiberId.none)
      Deferred.unsafeDone(previous, Exit.void)
    }
    const emit = (event: WorkerEvent) => PubSub.publish(events, event)

    const modelIds = (generation: number): ModelIds => ({
      toWire: (id) => {
        const tag = parseModelId(id)
        if (tag === undefined) return id
        if (tag.prefix !== options.idPrefix) throw new ForeignId(id, tag.prefix)
        if (tag.generation !== generation) throw new StaleId(id, tag.generation)
        return tag.raw
      },
      fromWire: (raw) => `${options.idPrefix}g${generation}:${raw}`,
    })

    const deadlineOf = (
      method: string,
      callOptions: CallOptions | undefined,
    ): Effect.Effect<Timing, InvalidArgumentError> => {
      const timeout = callOptions?.timeout === undefined
        ? Either.right(options.callTimeout)
        : Either.map(decodeCallTimeout(method, callOptions.timeout), Option.some)
      if (Either.isLeft(timeout)) return Effect.fail(timeout.left)
      if (Option.isNone(timeout.right)) {
        return Effect.succeed({ deadline: undefined, timeoutMillis: 0, stats: newStats() })
      }
      const timeoutMillis = Duration.toMillis(timeout.right.value)
      return Effect.map(
        Clock.currentTimeMillis,
        (now) => ({ deadline: now + timeoutMillis, timeoutMillis, stats: newStats() }),
      )
    }

    /** One call on one instance; a `Lost` call that was never sent may be retried on the next. */
    const onInstance = <P, R, A>(
      instance: Instance,
      rpc: Rpc<P, any, R, any, any, A>,
      build: (ids: ModelIds) => P,
      finish: (result: R, ids: ModelIds) => A,
      timing: Timing,
    ): Effect.Effect<A, CallError | Lost> => {
      const { method } = rpc
      if (rpc.capability !== undefined && !instance.capabilities.has(rpc.capability)) {
        return Effect.fail(
          new MissingCapabilityError({ method, capability: rpc.capability, advertised: [...instance.capabilities] }),
        )
      }
      const ids = modelIds(instance.generation)
      let params: P
      try {
        params = build(ids)
      } catch (error) {
        if (error instanceof StaleId) return Effect.fail(modelLost(method, error, instance.generation))
        if (error instanceof ForeignId) {
          return Effect.fail(
            new InvalidArgumentError({
              where: method,
              detail: `model ${JSON.stringify(bounded(error.id))} belongs to another worker of the pool`,
            }),
          )
        }
        return Effect.fail(
          new InvalidArgumentError({ where: method, detail: `bad arguments: ${bounded(String(error), 500)}` }),
        )
      }
      const paramsJson = encodeParams(rpc, params, options.maxFrameBytes)
      if (Either.isLeft(paramsJson)) return Effect.fail(paramsJson.left)
      timing.stats.pid = instance.pid
      timing.stats.generation = instance.generation
      timing.stats.modelId = rpc.modelOf(params)
      timing.stats.connection = instance.connection
      return instance.connection.call(
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
      )
    }

    const modelLost = (method: string, stale: StaleId, currentGeneration: number) =>
      new ModelLostError({
        modelId: bounded(stale.id),
        generation: stale.generation,
        currentGeneration,
        method,
        died: Option.match(Option.fromNullable(deaths.get(stale.generation)), {
          onNone: () => "is not a worker process of this service",
          onSome: (death) => describeDeath(death),
        }),
      })

    /** The death of an instance, once the supervisor has it (bounded: it waits for the exit status). */
    const deathOf = (instance: Instance) => Deferred.await(instance.died)

    /** Runs a call on the current worker, waiting (within its deadline) while one restarts. */
    const run = <P, R, A>(
      rpc: Rpc<P, any, R, any, any, A>,
      build: (ids: ModelIds) => P,
      finish: (result: R, ids: ModelIds) => A,
      callOptions: CallOptions | undefined,
      span: Tracer.Span | undefined,
    ): Effect.Effect<A, CallError> =>
      Effect.flatMap(deadlineOf(rpc.method, callOptions), (timing) => {
        const attempt: Effect.Effect<A, CallError> = Effect.suspend(() => {
          switch (state._tag) {
            case "Stopped":
              return Effect.fail(state.error(rpc.method))
            case "Closing":
              return Effect.fail(new WorkerClosedError({ method: rpc.method }))
            case "Restarting":
              return Effect.zipRight(awaitChange(rpc.method, timing), attempt)
            case "Running": {
              const instance = state.instance
              return onInstance(instance, rpc, build, finish, timing).pipe(
                Effect.catchIf((error): error is Lost => error instanceof Lost, (lost) =>
                  state._tag === "Closing"
                    ? Effect.fail(new WorkerClosedError({ method: rpc.method }))
                    : Effect.flatMap(deathOf(instance), (death) => {
                      if (lost.sent) {
                        return Effect.fail(lostOnWire(rpc.method, death, lost.reason))
                      }
                      // Never sent: it runs on the next worker, once the supervisor has moved on.
                      const stale = state._tag === "Running" && state.instance.generation === instance.generation
                      return stale ? Effect.zipRight(awaitChange(rpc.method, timing), attempt) : attempt
                    })),
              )
            }
          }
        })
        return observe(rpc.method, timing.stats, span, attempt)
      })

    const awaitChange = (method: string, timing: Timing) => {
      const wait = Deferred.await(changed)
      if (timing.deadline === undefined) return wait
      const deadline = timing.deadline
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        wait.pipe(
          Effect.timeoutFail({
            duration: Math.max(0, deadline - now),
            onTimeout: () => new RpcTimeoutError({ method, id: null, pid: null, timeoutMillis: timing.timeoutMillis }),
          }),
        ))
    }

    const managerCalls: Calls = {
      invoke: (rpc, args, callOptions, span) =>
        run(rpc, (ids) => rpc.toParams(ids, ...args), (result, ids) => rpc.fromResult(result, ids), callOptions, span),
      raw: (rpc, params, callOptions, span) => run(rpc, () => params, (result) => result, callOptions, span),
      pid: () => (current ?? lastInstance!).pid,
      generation: () => (current ?? lastInstance!).generation,
      info: () => (current ?? lastInstance!).info,
    }

    /** Calls bound to one instance: what `onStart` gets, before the instance serves anyone else. */
    const instanceCalls = (instance: Instance): Calls => {
      const direct = <P, R, A>(
        rpc: Rpc<P, any, R, any, any, A>,
        build: (ids: ModelIds) => P,
        finish: (result: R, ids: ModelIds) => A,
        callOptions: CallOptions | undefined,
      ) =>
        Effect.flatMap(
          deadlineOf(rpc.method, callOptions),
          (timing) =>
            onInstance(instance, rpc, build, finish, timing).pipe(
              Effect.catchIf((error): error is Lost => error instanceof Lost, (lost) =>
                Effect.flatMap(deathOf(instance), (death) => Effect.fail(lostOnWire(rpc.method, death, lost.reason)))),
            ),
        )
      return {
        invoke: (rpc, args, callOptions) =>
          direct(rpc, (ids) => rpc.toParams(ids, ...args), (result, ids) => rpc.fromResult(result, ids), callOptions),
        raw: (rpc, params, callOptions) => direct(rpc, () => params, (result) => result, callOptions),
        pid: () => instance.pid,
        generation: () => instance.generation,
        info: () => instance.info,
      }
    }

    /** Launch, connect, `hello`, `onStart`: a ready instance, or the error that stopped it (its scope closed). */
    const start = (generation: number): Effect.Effect<Instance, LaunchError | CallError | OnStartFailure> =>
      Effect.gen(function* () {
        starts++
        const instanceScope = yield* Scope.fork(instances, ExecutionStrategy.sequential)
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
          }
          yield* FiberSet.run(supervisors, watch(instance))
          // The handshake is part of starting: without a callTimeout, what is
          // left of connectTimeout bounds it too.
          const now = yield* Clock.currentTimeMillis
          const helloTimeout = Option.getOrElse(
            Option.map(options.callTimeout, Duration.toMillis),
            () => Math.max(1, started + Duration.toMillis(options.connectTimeout) - now),
          )
          const info = yield* instanceCalls(instance).raw(Rpcs.hello, null, { timeout: helloTimeout })
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
          const ready: Instance = { ...instance, info, capabilities: new Set(info.capabilities) }
          // The supervisor holds `instance`; the fields it reads are the same.
          if (options.onStart !== undefined) {
            yield* options.onStart(instanceCalls(ready)).pipe(
              Effect.mapError((cause) => new OnStartFailure({ cause })),
              Effect.catchAllDefect((cause) => Effect.fail(new OnStartFailure({ cause }))),
            )
          }
          yield* Effect.logDebug(`worker ready: ${info.workloadName}, protocol ${info.protocolVersion}`)
          return ready
        }).pipe(Scope.extend(instanceScope))
        return yield* attempt.pipe(Effect.tapErrorCause(() => Scope.close(instanceScope, Exit.void)))
      }).pipe(Effect.annotateLogs({ generation }))

    /**
     * Watches one instance from its launch until it dies: the death, with
     * its exit status and stderr tail, for every caller that needs it.
     */
    const watch = (instance: Instance): Effect.Effect<void> =>
      Effect.gen(function* () {
        const why = yield* Effect.raceFirst(
          Effect.map(instance.connection.closed, Either.left),
          Effect.map(instance.process.exited, Either.right),
        )
        // A timeout or a protocol fault leaves the worker's state unknown: it is killed on purpose.
        if (Either.isLeft(why) && (why.left._tag === "TimedOut" || why.left._tag === "Faulted")) {
          instance.process.kill()
        }
        if (Either.isRight(why)) instance.connection.close({ _tag: "Ended", truncated: undefined })
        const status = yield* instance.process.exited.pipe(Effect.timeoutOption(EXIT_SETTLE))
        const stderrTail = yield* instance.process.stderrTail
        const reason = instance.connection.reason()
        const death: WorkerDeath = {
          generation: instance.generation,
          pid: instance.pid,
          exited: Option.isSome(status),
          exitCode: Option.isSome(status) ? status.value.exitCode : null,
          signal: Option.isSome(status) ? status.value.signal : null,
          stderrTail,
          cause: reason?._tag === "TimedOut" || reason?._tag === "Faulted" ? reason.error : undefined,
        }
        deaths.set(instance.generation, death)
        yield* Deferred.succeed(instance.died, death)
      }).pipe(
        // Interrupted (the service is closing): what is known so far, so that no caller waits for it.
        Effect.onInterrupt(() =>
          Effect.flatMap(instance.process.exitStatus, (status) =>
            Deferred.succeed(instance.died, {
              generation: instance.generation,
              pid: instance.pid,
              exited: Option.isSome(status),
              exitCode: Option.isSome(status) ? status.value.exitCode : null,
              signal: Option.isSome(status) ? status.value.signal : null,
              stderrTail: "",
              cause: undefined,
            }))
        ),
      )

    /** Once a serving instance has died: reap it and decide what comes next. */
    const supervise = (instance: Instance): Effect.Effect<void> =>
      Effect.gen(function* () {
        const death = yield* Deferred.await(instance.died)
        if (state._tag === "Closing") return
        yield* Effect.forkIn(Scope.close(instance.scope, Exit.void), scope)
        yield* onDeath(death, instance.connection.reason())
      })

    let scheduleState: unknown = options.restart === "never" ? undefined : options.restart.initial

    /** After a death: the next state, and the next start when the schedule says so. */
    const onDeath = (death: WorkerDeath, reason: CloseReason | undefined): Effect.Effect<void> =>
      Effect.gen(function* () {
        yield* emit({ _tag: "Exited", ...death })
        if (options.restart === "never") return setState(State.Stopped({ error: afterDeath(death, reason) }))
        const now = yield* Clock.currentTimeMillis
        const [nextState, , decision] = yield* options.restart.step(now, death, scheduleState)
        scheduleState = nextState
        if (ScheduleDecision.isDone(decision)) {
          yield* Effect.logError(
            `Python worker #${death.generation} (pid ${death.pid}) ${describeDeath(death)}; ` +
              `the restart schedule gave up after ${starts} starts`,
          )
          yield* emit({ _tag: "GaveUp", generation: death.generation, starts, death })
          return setState(State.Stopped({
            error: (method) => new WorkerGaveUpError({ method, starts, ...exitFields(death) }),
          }))
        }
        const delay = Math.max(MIN_RESTART_DELAY_MILLIS, ScheduleIntervals.start(decision.intervals) - now)
        const generation = death.generation + 1
        setState(State.Restarting({ generation }))
        yield* Effect.logWarning(
          `Python worker #${death.generation} (pid ${death.pid}) ${describeDeath(death)}; ` +
            `starting worker #${generation} in ${delay} ms`,
        )
        yield* emit({ _tag: "Restarting", generation, delayMillis: delay, after: death })
        yield* Metric.increment(Metrics.restarts)
        yield* FiberSet.run(supervisors, Effect.zipRight(Effect.sleep(delay), restart(generation)))
      })

    /** Starts `generation`; a failed start is a death like any other. */
    const restart = (generation: number): Effect.Effect<void> =>
      Effect.matchEffect(start(generation), {
        onSuccess: (instance) => becomeRunning(instance),
        onFailure: (error) =>
          Effect.gen(function* () {
            if (state._tag === "Closing") return
            const failed: WorkerDeath = {
              generation,
              pid: "pid" in error && typeof error.pid === "number" ? error.pid : -1,
              exited: true,
              exitCode: "exitCode" in error && typeof error.exitCode === "number" ? error.exitCode : null,
              signal: "signal" in error && typeof error.signal === "string" ? error.signal : null,
              stderrTail: "stderrTail" in error && typeof error.stderrTail === "string" ? error.stderrTail : "",
              cause: error,
            }
            deaths.set(generation, failed)
            yield* onDeath(failed, undefined)
          }),
      })

    const becomeRunning = (instance: Instance) =>
      Effect.gen(function* () {
        if (state._tag === "Closing") return yield* Scope.close(instance.scope, Exit.void)
        lastInstance = instance
        setState(State.Running({ instance }))
        yield* FiberSet.run(supervisors, supervise(instance))
        yield* emit({ _tag: "Started", generation: instance.generation, pid: instance.pid })
      })

    // The polite stop, registered before the first start so that it runs
    // after nothing else of ours: `shutdown` while the socket is open, then
    // the process's own SIGTERM/SIGKILL finalizer when its scope closes.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        const instance = current
        setState(State.Closing())
        if (instance === undefined) return
        if (instance.connection.reason() === undefined) {
          // No call deadline (which would SIGKILL at once): past shutdownTimeout
          // the worker still gets SIGTERM and a grace to clean up.
          const acknowledged = yield* instanceCalls(instance).raw(Rpcs.shutdown, null, undefined).pipe(
            Effect.interruptible,
            Effect.timeout(options.shutdownTimeout),
            Effect.isSuccess,
          )
          if (acknowledged) {
            yield* instance.process.exited.pipe(Effect.interruptible, Effect.timeoutOption(options.shutdownTimeout))
          }
        }
        instance.connection.close({ _tag: "Closed" })
        yield* Scope.close(instance.scope, Exit.void)
      })
    )

    const first = yield* start(1).pipe(
      Effect.catchTag("OnStartFailure", (failure) => Effect.fail(failure.cause as E)),
    )
    yield* becomeRunning(first)

    return {
      ...managerCalls,
      events: Stream.fromPubSub(events),
      queued: () => current?.connection.inFlight() ?? 0,
    } satisfies Manager
  })

interface Stats {
  requestBytes: number
  responseBytes: number
  pid: number | undefined
  generation: number | undefined
  modelId: string | undefined
  connection: Connection | undefined
}

interface Timing {
  readonly deadline: number | undefined
  readonly timeoutMillis: number
  readonly stats: Stats
}

const newStats = (): Stats => ({
  requestBytes: 0,
  responseBytes: 0,
  pid: undefined,
  generation: undefined,
  modelId: undefined,
  connection: undefined,
})

/**
 * One call's metrics and span attributes, recorded when it ends: duration,
 * bytes each way, the error tag, the worker's pid and generation, the model.
 */
const observe = <A>(
  method: string,
  stats: Stats,
  span: Tracer.Span | undefined,
  call: Effect.Effect<A, CallError>,
): Effect.Effect<A, CallError> => {
  const metrics = Metrics.forMethod(method)
  return Effect.flatMap(
    Clock.currentTimeNanos,
    (start) =>
      Effect.onExit(call, (exit) =>
        Effect.map(Clock.currentTimeNanos, (end) => {
          const outcome = Exit.isSuccess(exit)
            ? "ok"
            : exit.cause._tag === "Fail"
            ? exit.cause.error._tag
            : exit.cause._tag === "Interrupt"
            ? "interrupted"
            : "defect"
          Metrics.callDuration.unsafeUpdate(Number(end - start) / 1e6, metrics.labels)
          if (stats.requestBytes > 0) Metrics.requestBytes.unsafeUpdate(stats.requestBytes, metrics.labels)
          if (stats.responseBytes > 0) Metrics.responseBytes.unsafeUpdate(stats.responseBytes, metrics.labels)
          if (Exit.isFailure(exit)) Metrics.callErrors.unsafeUpdate(1, Metrics.errorLabels(metrics, outcome))
          if (stats.connection !== undefined && stats.pid !== undefined) {
            Metrics.queuedCalls.unsafeUpdate(stats.connection.inFlight(), Metrics.labelsOfPid(stats.pid))
          }
          if (span !== undefined) {
            span.attribute("rpc.outcome", outcome)
            span.attribute("rpc.request_bytes", stats.requestBytes)
            span.attribute("rpc.response_bytes", stats.responseBytes)
            if (stats.pid !== undefined) {
              span.attribute("worker.pid", stats.pid)
              span.attribute("worker.generation", stats.generation)
            }
            if (stats.modelId !== undefined) span.attribute("worker.model_id", stats.modelId)
          }
        })),
  )
}

/** `onStart` failed: for a restart, a death like any other. */
class OnStartFailure extends Data.TaggedError("OnStartFailure")<{ readonly cause: unknown }> {}

const describeDeath = (death: WorkerDeath): string =>
  death.cause !== undefined && typeof death.cause === "object" && death.cause !== null && "message" in death.cause
    ? `${describeExit(death.exitCode, death.signal)} after: ${bounded(String(death.cause.message), 300)}`
    : describeExit(death.exitCode, death.signal)
