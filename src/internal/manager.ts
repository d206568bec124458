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
import type * as Duration from "effect/Duration"
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
import { type ModelIds, Rpcs } from "../Protocol.ts"
import type { CallOptions, WorkerDeath, WorkerEvent } from "../PythonWorker.ts"
import {
  type CallError,
  ModelLostError,
  RpcTimeoutError,
  WorkerClosedError,
  WorkerGaveUpError,
} from "../WorkerError.ts"
import type { CloseReason } from "./connection.ts"
import { afterDeath, awaitDeath, describeDeath, exitFields, lostOnWire } from "./death.ts"
import {
  type CallContext,
  callOn,
  type Instance,
  instanceCalls,
  type OnStartFailure,
  startInstance,
} from "./instance.ts"
import { bounded } from "./json.ts"
import type { Calls } from "./calls.ts"
import type { Launched, LaunchError } from "./launcher.ts"
import * as Metrics from "./metrics.ts"
import * as ModelIdTags from "./modelIds.ts"
import { observe, type SpanSpec, type Timing, timingOf } from "./observe.ts"
import type { RpcFor } from "./rpcTypes.ts"

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

/** @internal */
export interface Manager extends Calls {
  readonly events: Stream.Stream<WorkerEvent>
}

type State = Data.TaggedEnum<{
  Running: { readonly instance: Instance }
  Restarting: { readonly generation: number }
  /** No worker any more: every call fails at once with `error(method)`. */
  Stopped: { readonly error: (method: string) => CallError }
  // deno-lint-ignore ban-types
  Closing: {}
}>
const State = Data.taggedEnum<State>()

/** @internal */
export const make = <E>(options: ManagerOptions<E>): Effect.Effect<Manager, LaunchError | CallError | E, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    // The parent of every instance's scope, made before the polite stop is
    // registered so that it closes after it (a finalizer runs in reverse order).
    const instances = yield* Scope.fork(scope, ExecutionStrategy.sequential)
    const supervisors = yield* FiberSet.make()
    const events = yield* PubSub.unbounded<WorkerEvent>({ replay: EVENT_REPLAY })
    // How each generation died, for `ModelLostError`: a line, not the whole death (its stderr tail).
    const deaths = new Map<number, string>()

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

    const clock = yield* Effect.clock

    const context: CallContext = {
      clock,
      maxFrameBytes: options.maxFrameBytes,
      idPrefix: options.idPrefix,
      modelLost: (method, stale, currentGeneration) =>
        new ModelLostError({
          modelId: bounded(stale.id),
          generation: stale.generation,
          currentGeneration,
          method,
          died: deaths.get(stale.generation) ?? "is not a worker process of this service",
        }),
    }
    /** The death of an instance, once the supervisor has it (bounded: it waits for the exit status). */
    const deathOf = (instance: Instance) => Deferred.await(instance.died)

    /** Runs a call on the current worker, waiting (within its deadline) while one restarts. */
    const run = <P, R, A>(
      rpc: RpcFor<P, R, A>,
      build: (ids: ModelIds) => P,
      finish: (result: R, ids: ModelIds) => A,
      callOptions: CallOptions | undefined,
      span: SpanSpec | undefined,
    ): Effect.Effect<A, CallError> =>
      // Suspended: the deadline counts from when the call runs, not from when its Effect was built.
      observe(clock, rpc.method, span, (stats) => {
        const timed = timingOf(clock, options.callTimeout, rpc.method, callOptions, stats)
        if (Either.isLeft(timed)) return Effect.fail(timed.left)
        const timing = timed.right
        const tryOnce = (): Effect.Effect<A, CallError> => {
          switch (state._tag) {
            case "Stopped":
              return Effect.fail(state.error(rpc.method))
            case "Closing":
              return Effect.fail(new WorkerClosedError({ method: rpc.method }))
            case "Restarting": {
              // A model of a dead process is lost whatever starts next: no need to wait for it.
              try {
                build(ModelIdTags.make(options.idPrefix, state.generation))
              } catch (error) {
                if (error instanceof ModelIdTags.StaleId) {
                  return Effect.fail(context.modelLost(rpc.method, error, state.generation))
                }
              }
              return Effect.zipRight(awaitChange(rpc.method, timing), attempt)
            }
            case "Running": {
              const instance = state.instance
              return callOn(context, instance, rpc, build, finish, timing, (lost) =>
                state._tag === "Closing"
                  ? Effect.fail(new WorkerClosedError({ method: rpc.method }))
                  : Effect.flatMap(deathOf(instance), (death) => {
                    if (lost.sent) {
                      return Effect.fail(lostOnWire(rpc.method, death, lost.reason))
                    }
                    // Never sent: it runs on the next worker, once the supervisor has moved on.
                    const stale = state._tag === "Running" && state.instance.generation === instance.generation
                    return stale ? Effect.zipRight(awaitChange(rpc.method, timing), attempt) : attempt
                  }))
            }
          }
        }
        // The first attempt at once (this already runs when the call does); retries suspended.
        const attempt: Effect.Effect<A, CallError> = Effect.suspend(tryOnce)
        return tryOnce()
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

    const calls = (instance: Instance): Calls => instanceCalls(context, options.callTimeout, instance)

    const start = (generation: number): Effect.Effect<Instance, LaunchError | CallError | OnStartFailure> => {
      starts++
      return startInstance({
        ...options,
        generation,
        parent: instances,
        watch: (instance) => FiberSet.run(supervisors, watch(instance)),
        calls,
      })
    }

    /** Watches one instance from its launch until it dies; its death, for every caller that needs it. */
    const watch = (instance: Instance): Effect.Effect<void> =>
      awaitDeath(instance.generation, instance.process, instance.connection, (death) => {
        deaths.set(instance.generation, describeDeath(death))
        return Deferred.succeed(instance.died, death)
      })

    /** Once a serving instance has died: reap it and decide what comes next. */
    const supervise = (instance: Instance): Effect.Effect<void> =>
      Effect.gen(function* () {
        const death = yield* Deferred.await(instance.died)
        Metrics.forgetPid(instance.pid)
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
            error: (method) =>
              new WorkerGaveUpError({
                method,
                starts,
                ...exitFields(death),
                ...(death.cause === undefined ? {} : { cause: death.cause }),
              }),
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
            deaths.set(generation, describeDeath(failed))
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
          const acknowledged = yield* instanceCalls(context, Option.none(), instance).raw(
            Rpcs.shutdown,
            null,
            undefined,
          )
            .pipe(
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
    } satisfies Manager
  })
