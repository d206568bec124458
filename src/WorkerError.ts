/**
 * The errors of the Python worker service. Each carries, as fields, what a
 * person needs to act on it (method, pid, exit status, stderr tail, Python
 * exception), and builds its message from them. They live by kind in
 * `ProcessErrors.ts`, `ConnectionErrors.ts` and `RequestErrors.ts`; this
 * module gathers them with the unions `CallError` and `StartError`.
 *
 * @since 0.1.0
 */
import type { ProtocolError, RpcTimeoutError, WorkerClosedError } from "./ConnectionErrors.ts"
import type { WorkerConnectError, WorkerExitedError, WorkerGaveUpError, WorkerSpawnError } from "./ProcessErrors.ts"
import type {
  InvalidArgumentError,
  MissingCapabilityError,
  ModelLostError,
  RemoteError,
  ResultMismatchError,
} from "./RequestErrors.ts"
import type { RuntimeCacheError } from "./RuntimeCache.ts"

export * from "./ConnectionErrors.ts"
export * from "./ProcessErrors.ts"
export * from "./RequestErrors.ts"

/**
 * What an RPC can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type CallError =
  | WorkerExitedError
  | RemoteError
  | ProtocolError
  | RpcTimeoutError
  | WorkerClosedError
  | InvalidArgumentError
  | ModelLostError
  | WorkerGaveUpError
  | MissingCapabilityError
  | ResultMismatchError

/**
 * What acquiring the service can fail with (the first `hello` included).
 *
 * @since 0.1.0
 * @category errors
 */
export type StartError = RuntimeCacheError | WorkerSpawnError | WorkerConnectError | CallError
