/**
 * The error of the runtime cache: the per-user directory into which the
 * Python runtime shipped inside this module is written before a worker starts.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/** Why the cache could not be used. */
type Reason = Schema.Literal<["Insecure", "NoCacheDirectory", "PermissionDenied", "Io"]>

const /** @internal */ RuntimeCacheErrorBase: Schema.TaggedErrorClass<RuntimeCacheError, "RuntimeCacheError", {
  readonly _tag: Schema.tag<"RuntimeCacheError">
  reason: Reason
  path: typeof Schema.String
  detail: typeof Schema.String
}> = Schema.TaggedError<RuntimeCacheError>()("RuntimeCacheError", {
  reason: Schema.Literal("Insecure", "NoCacheDirectory", "PermissionDenied", "Io"),
  path: Schema.String,
  detail: Schema.String,
})

/**
 * The Python runtime could not be written to, or read from, its cache
 * directory (`$BURN_P2P_RUNTIME_CACHE`, else `$XDG_CACHE_HOME/burn-p2p-python-worker`,
 * else `~/.cache/burn-p2p-python-worker`); nothing was spawned. `reason`:
 * `Insecure` (the directory is writable by other users, or owned by another
 * user: a worker would run code they control), `NoCacheDirectory` (no
 * variable names a home or cache directory), `PermissionDenied` (the
 * operating system refused, or Deno did: a missing `--allow-read`,
 * `--allow-write`, `--allow-env` or `--allow-sys=uid`, named in `detail`),
 * `Io` (any other file system error).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { PythonWorker } from "@burn-p2p/python-worker"
 *
 * const program = Effect.flatMap(PythonWorker, (worker) => worker.hello()).pipe(
 *   Effect.provide(PythonWorker.layer({ workloadFactory: "my_pkg.workload:make" })),
 *   // The message names the path and the fix (`chmod 700`, a permission flag, BURN_P2P_RUNTIME_CACHE).
 *   Effect.catchTag("RuntimeCacheError", (error) => Effect.logError(error.reason, error.path, error.message)),
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class RuntimeCacheError extends RuntimeCacheErrorBase {
  /** The path, what is wrong with it, and the fix. */
  override get message(): string {
    switch (this.reason) {
      case "Insecure":
        return `refusing the Python runtime cache ${this.path}: it ${this.detail}, so another user could change ` +
          `the code the worker runs. Fix: \`chmod 700 ${this.path}\` if it is yours, or remove it, or set ` +
          `BURN_P2P_RUNTIME_CACHE to a directory only you can write`
      case "NoCacheDirectory":
        return `no directory for the Python runtime cache: ${this.detail}. Fix: set BURN_P2P_RUNTIME_CACHE ` +
          `(or XDG_CACHE_HOME, or HOME)`
      case "PermissionDenied":
        return `cannot use the Python runtime cache${this.path === "" ? "" : ` ${this.path}`}: ${this.detail}. ` +
          `Fix: under Deno, grant what it names (README, "Permissions": --allow-read and --allow-write on the cache ` +
          `directory, --allow-env, --allow-sys=uid); else make the directory yours, or set BURN_P2P_RUNTIME_CACHE ` +
          `to a directory you can write`
      default:
        return `cannot write the Python runtime to its cache ${this.path}: ${this.detail}. Fix: make it writable, ` +
          `or set BURN_P2P_RUNTIME_CACHE to a directory you can write`
    }
  }
}
