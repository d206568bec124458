/**
 * What a caller needs of one worker, supervised or one process of it: any
 * `Rpc` run by its service mapping, or with its wire params as they are.
 *
 * @internal
 */
import type * as Effect from "effect/Effect"
import type { Hello, Rpc } from "../Protocol.ts"
import type { CallOptions } from "../PythonWorker.ts"
import type { CallError } from "../WorkerError.ts"
import type { SpanSpec } from "./observe.ts"
import type { RpcGiving } from "./rpcTypes.ts"

/**
 * What a caller needs of one worker: run any `Rpc` by its service mapping,
 * in the span `span` names (made and ended by the call, around all of it).
 *
 * @internal
 */
export interface Calls {
  readonly invoke: <A>(
    rpc: RpcGiving<A>,
    args: ReadonlyArray<unknown>,
    options: CallOptions | undefined,
    span?: SpanSpec,
  ) => Effect.Effect<A, CallError>
  /** Wire params and result as they are: no model id mapping. */
  readonly raw: <P, PI, R, RI>(
    rpc: Rpc<P, PI, R, RI>,
    params: P,
    options: CallOptions | undefined,
    span?: SpanSpec,
  ) => Effect.Effect<R, CallError>
  readonly pid: () => number
  readonly generation: () => number
  readonly info: () => Hello
}
