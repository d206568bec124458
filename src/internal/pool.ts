/**
 * The pool: N managed workers, a FIFO free list of them, and the routing of
 * a model's calls to the worker that made it.
 *
 * @internal
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import type { PythonWorker } from "../PythonWorker.ts"
import { make as makeWith } from "./worker.ts"
import type { PythonWorkerPool } from "../PythonWorkerPool.ts"
import { InvalidArgumentError, type StartError } from "../WorkerError.ts"
import { bounded } from "./json.ts"
import { makeFreeList } from "./lock.ts"
import { parseModelId } from "./modelIds.ts"

const MAX_SIZE = 1024

/** @internal */
export const make = <E = never>(
  options: PythonWorkerPool.Options<E>,
): Effect.Effect<
  PythonWorkerPool.Service,
  StartError | E,
  Scope.Scope | CommandExecutor.CommandExecutor
> =>
  Effect.gen(function* () {
    const { size } = options
    if (!Number.isInteger(size) || size < 1 || size > MAX_SIZE) {
      return yield* new InvalidArgumentError({
        where: "PythonWorkerPool.layer",
        detail: `size must be an integer from 1 to ${MAX_SIZE}, got ${size}`,
      })
    }
    if (typeof options.options !== "function") {
      return yield* new InvalidArgumentError({
        where: "PythonWorkerPool.layer",
        detail: "options must be a function from a worker's index to its options",
      })
    }
    // Closed in parallel: the workers stop together, each with its own bounded sequence.
    const all = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.parallel)
    const workers = yield* Effect.forEach(
      Array.from({ length: size }, (_, index) => index),
      (index) =>
        Effect.flatMap(
          Scope.fork(all, ExecutionStrategy.sequential),
          (scope) => makeWith(options.options(index), `w${index}.`).pipe(Scope.extend(scope)),
        ),
      { concurrency: "unbounded" },
    ).pipe(
      // The workers that did start stop now, not when the caller's scope closes.
      Effect.tapErrorCause((cause) => Scope.close(all, Exit.failCause(cause))),
    )
    const free = makeFreeList(workers.map((_, index) => index))

    const withWorker = <A, E2, R>(
      f: (worker: PythonWorker.Service, index: number) => Effect.Effect<A, E2, R>,
    ): Effect.Effect<A, E2, R> =>
      Effect.uninterruptibleMask((restore) => {
        const ticket = free.take()
        return Effect.flatMap(
          restore(ticket.wait).pipe(Effect.onInterrupt(() => Effect.sync(ticket.cancel))),
          (index) => Effect.ensuring(restore(f(workers[index], index)), Effect.sync(() => free.give(index))),
        )
      })

    const workerOf = (modelId: string): Effect.Effect<PythonWorker.Service, InvalidArgumentError> => {
      const tag = parseModelId(modelId)
      const index = tag !== undefined && /^w(?:0|[1-9]\d*)\.$/.test(tag.prefix) ? Number(tag.prefix.slice(1, -1)) : NaN
      return Number.isInteger(index) && index >= 0 && index < workers.length
        ? Effect.succeed(workers[index])
        : Effect.fail(
          new InvalidArgumentError({
            where: "PythonWorkerPool.workerOf",
            detail: `${JSON.stringify(bounded(modelId))} is not a model id made by a worker of this pool`,
          }),
        )
    }

    return { workers, withWorker, workerOf, waiting: free.waiting } satisfies PythonWorkerPool.Service
  }).pipe(Effect.withSpan("PythonWorkerPool.make"))
