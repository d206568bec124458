/**
 * The `CommandExecutor` that `make` needs, built once per process: Node's,
 * with plain commands started without a fork (`executor.ts`). The layers are
 * stateless, and providing them on every build costs ~0.3 ms of each worker's
 * start, before Python is spawned.
 *
 * @internal
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Executor from "./executor.ts"

let built: Context.Context<CommandExecutor.CommandExecutor> | undefined

const nodeServices = (): Context.Context<CommandExecutor.CommandExecutor> =>
  built ??= Effect.runSync(Effect.scoped(Layer.build(Executor.layer)))

/** `effect` with that `CommandExecutor`. @internal */
export const provideNode = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
): Effect.Effect<A, E, Exclude<R, CommandExecutor.CommandExecutor>> =>
  Effect.suspend(() => Effect.provide(effect, nodeServices()))
