// deno-lint-ignore-file no-explicit-any
/**
 * `Rpc` types where some of its parameters do not matter: one place for the
 * `any`s that variance makes necessary.
 *
 * @internal
 */
import type * as Schema from "effect/Schema"
import type { Rpc } from "../Rpc.ts"

/**
 * An `Rpc` known by its params, result and service result only.
 *
 * @internal
 */
export type RpcFor<P, R, A> = Rpc<P, any, R, any, any, A>

/**
 * Any `Rpc`.
 *
 * @internal
 */
export type AnyRpc = Rpc<any, any, any, any, any, any>

/**
 * Any `Rpc` whose service method gives `A`.
 *
 * @internal
 */
export type RpcGiving<A> = Rpc<any, any, any, any, any, A>

/**
 * The `Rpc` sending `Params` and answering `Result`, called with `Args` and giving `A`.
 *
 * @internal
 */
export type RpcOf<
  Params extends Schema.Schema.Any,
  Result extends Schema.Schema.Any,
  Args extends ReadonlyArray<any>,
  A,
> = Rpc<
  Schema.Schema.Type<Params>,
  Schema.Schema.Encoded<Params>,
  Schema.Schema.Type<Result>,
  Schema.Schema.Encoded<Result>,
  Args,
  A
>
