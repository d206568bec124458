// deno-lint-ignore-file no-explicit-any
/**
 * `Rpc` types where some of its parameters do not matter: one place for the
 * `any`s that variance makes necessary.
 *
 * @internal
 */
import type { Rpc } from "../Protocol.ts"

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
