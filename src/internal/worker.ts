/**
 * `make`: the options checked, the runtime materialised, and the launcher,
 * the manager and the service put together; and the default restart policy.
 *
 * @internal
 */
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { PythonWorker, WorkerDeath } from "../PythonWorker.ts"
import { InvalidArgumentError, type StartError } from "../WorkerError.ts"
import * as launcher from "./launcher.ts"
import * as manager from "./manager.ts"
import * as internalOptions from "./options.ts"
import * as runtime from "./runtime.ts"
import * as service from "./service.ts"

/**
 * Up to 5 restarts, 250 ms after the first death and doubling to at most
 * 10 s; 3 minutes without a death renew the budget.
 *
 * @internal
 */
export const defaultRestart: Schedule.Schedule<unknown, WorkerDeath> = Schedule.exponential("250 millis").pipe(
  Schedule.union(Schedule.spaced("10 seconds")),
  Schedule.intersect(Schedule.recurs(5)),
  Schedule.resetAfter("3 minutes"),
)

/**
 * `make`, with model ids tagged by `idPrefix` (a pool's worker index).
 *
 * @internal
 */
export const make = <E>(
  options: PythonWorker.Options<E>,
  idPrefix: string,
): Effect.Effect<
  PythonWorker.Service,
  StartError | E,
  Scope.Scope | CommandExecutor.CommandExecutor
> =>
  Effect.gen(function* () {
    const { restart = defaultRestart, onStart, ...data } = options ?? {}
    if (restart !== "never" && !Schedule.isSchedule(restart)) {
      return yield* new InvalidArgumentError({
        where: "PythonWorker.layer",
        detail: 'restart must be a Schedule or "never"',
      })
    }
    if (onStart !== undefined && typeof onStart !== "function") {
      return yield* new InvalidArgumentError({ where: "PythonWorker.layer", detail: "onStart must be a function" })
    }
    const config = internalOptions.decode(data)
    if (Either.isLeft(config)) return yield* config.left
    // The runtime's files, written once per content hash into a per-user cache: first on PYTHONPATH.
    const runtimeRoot = yield* runtime.materialize
    // Only the executor: the caller's Scope must not stand in for each worker process's own.
    const context = Context.pick(CommandExecutor.CommandExecutor)(
      yield* Effect.context<CommandExecutor.CommandExecutor>(),
    )
    const supervised = yield* manager.make<E>({
      launch: () => Effect.provide(launcher.launch(config.right, runtimeRoot), context),
      maxFrameBytes: config.right.maxFrameBytes,
      connectTimeout: config.right.connectTimeout,
      callTimeout: config.right.callTimeout,
      shutdownTimeout: config.right.shutdownTimeout,
      restart,
      onStart: onStart === undefined ? undefined : (calls) => onStart(service.make(calls, Stream.empty)),
      idPrefix,
    })
    return service.make(supervised, supervised.events)
  }).pipe(Effect.withSpan("PythonWorker.make"))
