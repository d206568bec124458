/**
 * Run a Python (PyTorch) training worker as a child process and drive it over
 * the burn_p2p worker protocol, as an Effect service.
 *
 * @module
 */
export * from "./Protocol.ts"
export {
  type CallOptions,
  defaultRestart,
  layer,
  make,
  Options,
  PythonWorker,
  type WorkerDeath,
  type WorkerEvent,
} from "./PythonWorker.ts"
export { RuntimeCacheError } from "./RuntimeCache.ts"
export * from "./WorkerError.ts"
export * as DiLoCo from "./DiLoCo.ts"
export * as ParameterPack from "./ParameterPack.ts"
export { PythonWorkerPool } from "./PythonWorkerPool.ts"
