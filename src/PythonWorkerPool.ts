/**
 * A pool of supervised Python workers: one per GPU, or per core. Each worker
 * has options of its own (its index picks a device), the workers start
 * concurrently and stop together, and `withWorker` hands out free workers
 * first come, first served. A model lives in the worker that made it: its id
 * names that worker, and `workerOf` finds it again.
 *
 * @since 0.2.0
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { provideNode } from "./internal/platform.ts"
import * as internal from "./internal/pool.ts"
import type { PythonWorker } from "./PythonWorker.ts"
import type { InvalidArgumentError, StartError } from "./WorkerError.ts"

/**
 * The types of the `PythonWorkerPool` service: its options and the service.
 *
 * @since 0.2.0
 * @category models
 */
export declare namespace PythonWorkerPool {
  /**
   * What `PythonWorkerPool.layer` and `make` take: the size, and each
   * worker's `PythonWorker.Options` by index. `E` is what an `onStart` may
   * fail with.
   *
   * @since 0.2.0
   * @category models
   */
  export interface Options<E = never> {
    /** How many workers: an integer from 1 to 1024. */
    readonly size: number
    /** Each worker's options, by its index (0 to size - 1): e.g. `env: { CUDA_VISIBLE_DEVICES: String(index) }`. */
    readonly options: (index: number) => PythonWorker.Options<E>
  }

  /**
   * What the `PythonWorkerPool` tag holds: the workers (each supervised and
   * restarted on its own), a first-come-first-served `withWorker`, and
   * `workerOf` to find the worker holding a model. A pool worker's model ids
   * carry its index (`w2.g1:m3`); a call to another worker with such an id is
   * an `InvalidArgumentError`.
   *
   * @since 0.2.0
   * @category models
   */
  export interface Service {
    /** The workers, in index order. */
    readonly workers: ReadonlyArray<PythonWorker.Service>
    /**
     * Runs `f` on a free worker, waiting (first come, first served across
     * callers) while every worker is busy with another `withWorker`.
     */
    readonly withWorker: <A, E, R>(
      f: (worker: PythonWorker.Service, index: number) => Effect.Effect<A, E, R>,
    ) => Effect.Effect<A, E, R>
    /** The worker holding a model made through this pool; its calls must go there. */
    readonly workerOf: (modelId: string) => Effect.Effect<PythonWorker.Service, InvalidArgumentError>
    /** Callers waiting in `withWorker` for a free worker. */
    readonly waiting: () => number
  }
}

const /** @internal */ PythonWorkerPoolBase: Context.TagClass<
  PythonWorkerPool,
  "burn-p2p/PythonWorkerPool",
  PythonWorkerPool.Service
> = Context.Tag("burn-p2p/PythonWorkerPool")<PythonWorkerPool, PythonWorkerPool.Service>()

/**
 * Starts `size` supervised workers concurrently; if one fails to start, the
 * others are stopped and the whole fails. The scope owns them all and stops
 * them together.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make: <E = never>(
  options: PythonWorkerPool.Options<E>,
) => Effect.Effect<
  PythonWorkerPool.Service,
  StartError | E,
  Scope.Scope | CommandExecutor.CommandExecutor
> = internal.make

/**
 * A scoped layer owning the pool's workers, with its own Node platform services.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorkerPool } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   const pool = yield* PythonWorkerPool
 *   // Four jobs on two workers: each waits for a free one.
 *   const models = yield* Effect.forEach(
 *     [0, 1, 2, 3],
 *     () => pool.withWorker((worker) => worker.initModel("cpu")),
 *     { concurrency: "unbounded" },
 *   )
 *   // A model's calls go to the worker that made it.
 *   const holder = yield* pool.workerOf(models[0])
 *   return yield* holder.evaluate(models[0], "Validation")
 * }).pipe(
 *   Effect.provide(PythonWorkerPool.layer({
 *     size: 2,
 *     options: (index) => ({
 *       workloadFactory: "burn_p2p_python_runtime.torch_workload:make",
 *       env: { CUDA_VISIBLE_DEVICES: String(index) },
 *     }),
 *   })),
 * )
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = <E = never>(options: PythonWorkerPool.Options<E>): Layer.Layer<PythonWorkerPool, StartError | E> =>
  Layer.scoped(PythonWorkerPool, provideNode(make(options)))

/**
 * The pool's tag. `PythonWorkerPool.layer` and `PythonWorkerPool.make` are
 * the module's `layer` and `make`.
 *
 * @since 0.2.0
 * @category tags
 */
export class PythonWorkerPool extends PythonWorkerPoolBase {
  /**
   * The module's `layer`.
   *
   * @since 0.2.0
   * @category layers
   */
  static readonly layer: typeof layer = layer
  /**
   * The module's `make`.
   *
   * @since 0.2.0
   * @category constructors
   */
  static readonly make: typeof make = make
}
