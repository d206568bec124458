/**
 * The `PythonWorker` service: a supervised Python worker process behind typed
 * RPCs. This module is the contract (the tag, the options, the types, `make`
 * and `layer`); the launcher, the connection and the manager live under
 * `internal/`.
 *
 * `layer(options)` is scoped: acquiring it listens on 127.0.0.1, spawns the
 * worker, accepts its connection and checks `hello`; releasing it (on success,
 * failure or interruption) sends `shutdown`, then terminates and reaps the
 * process group. Release never hangs: every step is bounded. A worker that
 * dies is started again under the `restart` schedule.
 *
 * @since 0.1.0
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import * as internalOptions from "./internal/options.ts"
import { provideNode } from "./internal/platform.ts"
import * as internalWorker from "./internal/worker.ts"
import type { Hello, Rpc, Rpcs } from "./Protocol.ts"
import type { CallError, StartError } from "./WorkerError.ts"

/**
 * The layer's data options, checked before anything is spawned: every
 * duration, size and count is range-checked. `PythonWorker.Options` is its
 * encoded side (what you write) plus `restart` and `onStart`; the README's
 * options table lists every field with its default and range.
 *
 * @example
 * ```ts
 * import type { Options } from "@burn-p2p/python-worker"
 *
 * // Options read from a file, typed as the layer takes them.
 * const options: typeof Options.Encoded = {
 *   workloadFactory: "burn_p2p_python_runtime.torch_workload:make",
 *   workloadConfig: { learning_rate: 0.05, dataset_seed: 0 },
 *   pythonExecutable: "/usr/bin/python3",
 *   connectTimeout: "30 seconds",
 *   maxFrameBytes: 64 * 1024 * 1024,
 * }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export const Options: internalOptions.OptionsSchema = internalOptions.Options

/**
 * The last, optional argument of every service method.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const worker = yield* PythonWorker
 *   const model = yield* worker.initModel("cpu", { timeout: "2 minutes" })
 *   return yield* worker.evaluate(model, "Validation", { timeout: 30_000 })
 * })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface CallOptions {
  /** This call's deadline; overrides `callTimeout`. More than 0 ms, at most about 24.8 days. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * How one worker process ended.
 *
 * @since 0.2.0
 * @category models
 */
export interface WorkerDeath {
  /** Which process of the service: 1 for the first, then one more per restart. */
  readonly generation: number
  /** Its pid; -1 when a restart failed before a process existed (a spawn error). */
  readonly pid: number
  /** False when the process could not be reaped in time (the status fields are then null). */
  readonly exited: boolean
  /** The exit code, or null when it died by a signal. */
  readonly exitCode: number | null
  /** The signal that killed it (`"SIGKILL"`), or null when it exited with a code. */
  readonly signal: string | null
  /** The last `stderrTailBytes` of its stderr. */
  readonly stderrTail: string
  /** What made the manager kill it (a timeout, a protocol fault) or stopped its start, if anything. */
  readonly cause: unknown
}

/**
 * The lifecycle of a supervised worker, as `Service.events` streams it.
 *
 * @since 0.2.0
 * @category models
 */
export type WorkerEvent =
  | { readonly _tag: "Started"; readonly generation: number; readonly pid: number }
  | ({ readonly _tag: "Exited" } & WorkerDeath)
  | {
    readonly _tag: "Restarting"
    readonly generation: number
    readonly delayMillis: number
    readonly after: WorkerDeath
  }
  | { readonly _tag: "GaveUp"; readonly generation: number; readonly starts: number; readonly death: WorkerDeath }

/**
 * The default restart policy, a crash budget in the manner of
 * vscode-languageclient (5 crashes in 3 minutes) and jupyter_client (at most
 * 5 restarts): up to 5 restarts, 250 ms after the first death and doubling to
 * at most 10 s; 3 minutes without a death renew the budget.
 *
 * @example
 * ```ts
 * import { Schedule } from "effect"
 * import { defaultRestart, PythonWorker } from "@burn-p2p/python-worker"
 *
 * // The default budget, but never sooner than 2 s after a death (`intersect` waits for the longer delay).
 * const layer = PythonWorker.layer({
 *   workloadFactory: "my_pkg.workload:make",
 *   restart: Schedule.intersect(defaultRestart, Schedule.spaced("2 seconds")),
 * })
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const defaultRestart: Schedule.Schedule<unknown, WorkerDeath> = internalWorker.defaultRestart

/**
 * The types of the `PythonWorker` service: its options, its methods, the
 * service itself.
 *
 * @since 0.1.0
 * @category models
 */
export declare namespace PythonWorker {
  /**
   * What `layer` and `make` take: the data options (`Options`, range-checked
   * before anything is spawned) plus `restart` and `onStart`. `E` is what
   * `onStart` may fail with.
   *
   * @example
   * ```ts
   * import { Effect, Schedule } from "effect"
   * import { type CallError, PythonWorker } from "@burn-p2p/python-worker"
   *
   * const options: PythonWorker.Options<CallError> = {
   *   workloadFactory: "burn_p2p_python_runtime.reference_workload:make",
   *   workloadConfig: { learning_rate: 0.1 },
   *   pythonExecutable: "/usr/bin/python3",
   *   env: { CUDA_VISIBLE_DEVICES: "0" },
   *   callTimeout: "5 minutes",
   *   // At most 3 restarts, 1 s apart; `"never"` fails every call after a death.
   *   restart: Schedule.spaced("1 second").pipe(Schedule.intersect(Schedule.recurs(3))),
   *   // Runs on every fresh worker before it serves a call.
   *   onStart: (worker) => Effect.asVoid(worker.capabilityProbe()),
   * }
   * ```
   *
   * @since 0.1.0
   * @category models
   */
  export type Options<E = never> = typeof Options.Encoded & {
    /**
     * Whether and when a dead worker is started again: a `Schedule` fed each
     * `WorkerDeath`, or `"never"` (the service then fails every later call).
     * Default: `defaultRestart`. A restart never comes sooner than 100 ms.
     */
    readonly restart?: Schedule.Schedule<unknown, WorkerDeath> | "never" | undefined
    /**
     * Run against each fresh worker (the first included) before it serves
     * any call: reload a checkpoint, re-create models. A failure fails the
     * layer on the first start and counts as a death on a restart.
     */
    readonly onStart?: ((worker: Service) => Effect.Effect<unknown, E>) | undefined
  }

  /**
   * The service method an `Rpc` entry describes: its positional arguments,
   * then the call options.
   *
   * @since 0.2.0
   * @category models
   */
  // deno-lint-ignore no-explicit-any
  export type Method<T> = T extends Rpc<any, any, any, any, infer Args, infer A>
    ? (...args: [...Args, options?: CallOptions]) => Effect.Effect<A, CallError>
    : never

  /**
   * One method per entry of `Rpcs` (but `shutdown`, which the layer sends).
   *
   * @since 0.2.0
   * @category models
   */
  export type Methods = { readonly [K in Exclude<keyof Rpcs, "shutdown">]: Method<Rpcs[K]> }

  /**
   * What the `PythonWorker` tag holds: a method per `Rpcs` entry (the
   * worker's models named by generation-tagged ids), the serving process's
   * `pid`, `generation` and `hello`, the lifecycle `events`, scoped models
   * and the raw `call`. It stays the same object across restarts.
   *
   * @since 0.1.0
   * @category models
   */
  export interface Service extends Methods {
    /** The pid of the worker process serving now. */
    readonly pid: number
    /** Which worker process serves now: 1, then one more per restart. */
    readonly generation: number
    /** The `hello` of the worker serving now. */
    readonly info: Hello
    /** Started, exited, restarting, gave up; the last 64 events are replayed to a new subscriber. */
    readonly events: Stream.Stream<WorkerEvent>
    /** A model as a scoped resource: `releaseModel` runs when the scope closes, and never fails. */
    readonly model: (device: string, options?: CallOptions) => Effect.Effect<string, CallError, Scope.Scope>
    /**
     * Any method of `Rpcs` by its descriptor, with wire params and result as
     * they are (model ids unmapped): the typed escape hatch.
     */
    readonly call: <P, PI, R, RI>(
      rpc: Rpc<P, PI, R, RI>,
      params: P,
      options?: CallOptions,
    ) => Effect.Effect<R, CallError>
  }
}

/**
 * Starts a supervised worker and returns the service; the scope owns every
 * process it starts. Bring your own `CommandExecutor` (e.g.
 * `NodeContext.layer`), or use `layer`, whose executor starts Python without
 * forking the client under Deno (Node's forks it, ~1 ms per start in a small
 * client, ~24 ms in one holding 500 MB).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <E = never>(
  options: PythonWorker.Options<E>,
): Effect.Effect<
  PythonWorker.Service,
  StartError | E,
  Scope.Scope | CommandExecutor.CommandExecutor
> => internalWorker.make(options, "")

/**
 * A scoped layer owning one supervised worker. Provides its own Node platform
 * services; use `make` to bring your own.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const worker = yield* PythonWorker
 *   const model = yield* worker.initModel("cpu")
 *   return yield* worker.evaluate(model, "Validation")
 * })
 *
 * program.pipe(
 *   Effect.provide(PythonWorker.layer({
 *     workloadFactory: "burn_p2p_python_runtime.reference_workload:make",
 *     pythonExecutable: "/usr/bin/python3",
 *   })),
 *   NodeRuntime.runMain,
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <E = never>(options: PythonWorker.Options<E>): Layer.Layer<PythonWorker, StartError | E> =>
  Layer.scoped(PythonWorker, provideNode(make(options)))

const /** @internal */ PythonWorkerBase: Context.TagClass<PythonWorker, "burn-p2p/PythonWorker", PythonWorker.Service> =
  Context.Tag(
    "burn-p2p/PythonWorker",
  )<PythonWorker, PythonWorker.Service>()

/**
 * The service tag. `PythonWorker.layer` and `PythonWorker.make` are the
 * module's `layer` and `make`.
 *
 * @since 0.1.0
 * @category tags
 */
export class PythonWorker extends PythonWorkerBase {
  /**
   * The module's `layer`.
   *
   * @since 0.1.0
   * @category layers
   */
  static readonly layer: typeof layer = layer
  /**
   * The module's `make`.
   *
   * @since 0.1.0
   * @category constructors
   */
  static readonly make: typeof make = make
}
