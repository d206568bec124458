/**
 * The `PythonWorker` service: a Python worker process behind typed RPCs.
 *
 * `layer(options)` is scoped: acquiring it listens on 127.0.0.1, spawns the
 * worker, accepts its connection and checks `hello`; releasing it (on success,
 * failure or interruption) sends `shutdown`, then terminates and reaps the
 * process group. Release never hangs: every step is bounded.
 *
 * @since 0.1.0
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as NodeCommandExecutor from "@effect/platform-node/NodeCommandExecutor"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { randomUUID } from "node:crypto"
import { rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import process from "node:process"
import * as accept from "./internal/accept.ts"
import * as client from "./internal/client.ts"
import * as workerProcess from "./internal/process.ts"
import * as runtime from "./internal/runtime.ts"
import {
  type BatchRef,
  type CapabilityProbe,
  type EvalSplit,
  type Hello,
  JsonValue,
  type MergeCandidate,
  type MergePolicy,
  type Metrics,
  type PatchOutcome,
  PROTOCOL_VERSION,
  type ReconcileStrategy,
  type Rpc,
  Rpcs,
  type RuntimePatch,
} from "./Protocol.ts"
import {
  type CallError,
  InvalidArgumentError,
  ProtocolError,
  type StartError,
  WorkerConnectError,
} from "./WorkerError.ts"

const DEFAULT_WORKER_MODULE = "burn_p2p_python_runtime.worker"

/**
 * A file only this user can read, holding `text`; removed by `remove` or when
 * the scope closes, whichever comes first.
 */
const privateFile = (text: string) =>
  Effect.acquireRelease(
    Effect.try({
      try: () => {
        const path = join(tmpdir(), `burn-p2p-worker-config-${randomUUID()}.json`)
        // "wx": a fresh file, never one planted under the same name.
        writeFileSync(path, text, { mode: 0o600, flag: "wx" })
        const remove = () => {
          try {
            rmSync(path, { force: true })
          } catch {
            // Left in the temporary directory: nothing more to do about it here.
          }
        }
        return { path, remove }
      },
      catch: (error) =>
        new InvalidArgumentError({
          where: "PythonWorker.layer",
          detail: `cannot write the workload config to a temporary file: ${(error as Error).message}`,
        }),
    }),
    (file) => Effect.sync(file.remove),
  )

/** Any `Duration.DurationInput` in, a `Duration` out. */
type DurationInputSchema = Schema.transform<Schema.declare<Duration.DurationInput>, typeof Schema.DurationFromSelf>

const DurationInput: DurationInputSchema = Schema.transform(
  Schema.declare((u): u is Duration.DurationInput => Option.isSome(Duration.decodeUnknown(u)), {
    identifier: "DurationInput",
    description: 'a duration: milliseconds, "5 seconds", or a Duration',
  }),
  Schema.DurationFromSelf,
  { strict: true, decode: (input) => Duration.decode(input), encode: (duration) => duration },
)

/** An option that may be left out; `A` when decoded, `I` as given. */
type WithDefault<A, I> = Schema.optionalWith<Schema.Schema<A, I>, { default: () => NoInfer<A>; exact: true }>

const withDefault = <A, I>(schema: Schema.Schema<A, I>, value: () => NoInfer<A>): WithDefault<A, I> =>
  Schema.optionalWith(schema, { default: value, exact: true })

const Identifier = /[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*/.source

/**
 * The layer's options, checked before anything is spawned.
 *
 * @since 0.1.0
 * @category models
 */
export const Options: Schema.Struct<{
  /** `module:attr` of the workload factory, called with `workloadConfig`. */
  workloadFactory: Schema.filter<typeof Schema.String>
  workloadConfig: WithDefault<JsonValue, JsonValue>
  pythonExecutable: WithDefault<string, string>
  workerModule: WithDefault<string, string>
  moduleSearchRoots: WithDefault<ReadonlyArray<string>, ReadonlyArray<string>>
  env: WithDefault<{ readonly [name: string]: string }, { readonly [name: string]: string }>
  connectTimeout: WithDefault<Duration.Duration, Duration.DurationInput>
  shutdownTimeout: WithDefault<Duration.Duration, Duration.DurationInput>
  /** Between SIGTERM and SIGKILL when the worker must be stopped by force. */
  terminateGrace: WithDefault<Duration.Duration, Duration.DurationInput>
  /** Deadline of every call unless the call gives its own; none by default. */
  callTimeout: Schema.optionalWith<DurationInputSchema, { as: "Option"; exact: true }>
  maxFrameBytes: WithDefault<number, number>
  stderrTailBytes: WithDefault<number, number>
  /** The worker exits when this process dies (it watches its stdin pipe for EOF). */
  exitWithParent: WithDefault<boolean, boolean>
  /**
   * How the config reaches the worker: `"file"` (a private temporary file,
   * removed once the worker has connected) keeps it out of argv; `"argv"`
   * (`--config-json`) is what the reference worker understands. Default:
   * `"file"` for our worker module, `"argv"` for any other.
   */
  configVia: Schema.optionalWith<Schema.Literal<["file", "argv"]>, { exact: true }>
}> = Schema.Struct({
  workloadFactory: Schema.String.pipe(
    Schema.pattern(new RegExp(`^${Identifier}:${Identifier}$`), {
      message: (issue) => `expected "module:attr" (e.g. "my_pkg.workload:make"), got ${JSON.stringify(issue.actual)}`,
    }),
  ),
  workloadConfig: withDefault(JsonValue, () => ({})),
  pythonExecutable: withDefault(Schema.NonEmptyString, () => "python3"),
  workerModule: withDefault(Schema.NonEmptyString, () => DEFAULT_WORKER_MODULE),
  moduleSearchRoots: withDefault(Schema.Array(Schema.String), () => []),
  env: withDefault(Schema.Record({ key: Schema.String, value: Schema.String }), () => ({})),
  connectTimeout: withDefault(DurationInput, () => Duration.seconds(10)),
  shutdownTimeout: withDefault(DurationInput, () => Duration.seconds(5)),
  terminateGrace: withDefault(DurationInput, () => Duration.seconds(2)),
  callTimeout: Schema.optionalWith(DurationInput, { as: "Option", exact: true }),
  maxFrameBytes: withDefault(Schema.Int.pipe(Schema.between(1, Number.MAX_SAFE_INTEGER)), () => 256 * 1024 * 1024),
  stderrTailBytes: withDefault(Schema.Int.pipe(Schema.positive()), () => 64 * 1024),
  exitWithParent: withDefault(Schema.Boolean, () => true),
  configVia: Schema.optionalWith(Schema.Literal("file", "argv"), { exact: true }),
})

/**
 * @since 0.1.0
 * @category models
 */
export interface CallOptions {
  /** This call's deadline; overrides `callTimeout`. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export declare namespace PythonWorker {
  /**
   * @since 0.1.0
   * @category models
   */
  export type Options = typeof Options.Encoded

  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    readonly pid: number
    /** The worker's `hello`, as checked at start. */
    readonly info: Hello
    readonly hello: (options?: CallOptions) => Effect.Effect<Hello, CallError>
    readonly capabilityProbe: (options?: CallOptions) => Effect.Effect<CapabilityProbe, CallError>
    readonly initModel: (device: string, options?: CallOptions) => Effect.Effect<string, CallError>
    readonly trainWindow: (
      modelId: string,
      batches: ReadonlyArray<BatchRef>,
      options?: CallOptions,
    ) => Effect.Effect<Metrics, CallError>
    readonly evaluate: (modelId: string, split: EvalSplit, options?: CallOptions) => Effect.Effect<Metrics, CallError>
    readonly applyPatch: (patch: RuntimePatch, options?: CallOptions) => Effect.Effect<PatchOutcome, CallError>
    readonly loadModelArtifact: (modelId: string, path: string, options?: CallOptions) => Effect.Effect<void, CallError>
    readonly materializeModelArtifact: (
      modelId: string,
      path: string,
      options?: CallOptions,
    ) => Effect.Effect<void, CallError>
    readonly mergeCandidateModels: (
      baseModelId: string,
      candidates: ReadonlyArray<MergeCandidate>,
      policy: MergePolicy,
      options?: CallOptions,
    ) => Effect.Effect<Option.Option<string>, CallError>
    readonly applySingleRootEma: (
      baseModelId: string,
      mergedModelId: string,
      policy: MergePolicy,
      options?: CallOptions,
    ) => Effect.Effect<string, CallError>
    readonly reconcileCanonicalModel: (
      localModelId: string,
      canonicalModelId: string,
      strategy: ReconcileStrategy,
      options?: CallOptions,
    ) => Effect.Effect<string, CallError>
    readonly releaseModel: (modelId: string, options?: CallOptions) => Effect.Effect<void, CallError>
    /** Any method of `Rpcs` by its descriptor: the typed escape hatch the methods above are built on. */
    readonly call: <P, PI, R, RI>(
      rpc: Rpc<P, PI, R, RI>,
      params: P,
      options?: CallOptions,
    ) => Effect.Effect<R, CallError>
  }
}

const PythonWorkerBase: Context.TagClass<PythonWorker, "burn-p2p/PythonWorker", PythonWorker.Service> = Context.Tag(
  "burn-p2p/PythonWorker",
)<PythonWorker, PythonWorker.Service>()

/**
 * The service tag; `PythonWorker.layer(options)` provides it.
 *
 * @since 0.1.0
 * @category tags
 */
export class PythonWorker extends PythonWorkerBase {
  /**
   * A scoped layer owning one worker process. Provides its own Node platform
   * services; use `make` to bring your own `CommandExecutor`.
   *
   * @since 0.1.0
   * @category layers
   */
  static layer(options: PythonWorker.Options): Layer.Layer<PythonWorker, StartError> {
    // Only what `make` needs: the whole NodeContext takes ~2 ms longer to build.
    return Layer.scoped(PythonWorker, make(options)).pipe(
      Layer.provide(NodeCommandExecutor.layer),
      Layer.provide(NodeFileSystem.layer),
    )
  }

  /**
   * The service without a layer: the scope owns the process; bring your own
   * `CommandExecutor` (e.g. `NodeContext.layer`).
   *
   * @since 0.1.0
   * @category constructors
   */
  static make(
    options: PythonWorker.Options,
  ): Effect.Effect<PythonWorker.Service, StartError, Scope.Scope | CommandExecutor.CommandExecutor> {
    return make(options)
  }
}

const decodeOptions = (options: PythonWorker.Options) =>
  Either.flatMap(
    Either.mapLeft(
      Schema.decodeUnknownEither(Options, { onExcessProperty: "error" })(options),
      (error) => ParseResult.TreeFormatter.formatErrorSync(error),
    ),
    (decoded) => {
      try {
        return Either.right({ ...decoded, configJson: JSON.stringify(decoded.workloadConfig) ?? "null" })
      } catch (error) {
        return Either.left(`workloadConfig is not JSON-serializable: ${(error as Error).message}`)
      }
    },
  ).pipe(Either.mapLeft((detail) => new InvalidArgumentError({ where: "PythonWorker.layer", detail })))

/**
 * Starts a worker and returns the service; the scope owns the process.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: PythonWorker.Options,
): Effect.Effect<PythonWorker.Service, StartError, Scope.Scope | CommandExecutor.CommandExecutor> =>
  Effect.gen(function* () {
    const config = yield* decodeOptions(options)
    const listener = yield* accept.listen
    // A PYTHONPATH in `env` adds to the path rather than hiding the runtime's own folder.
    const { PYTHONPATH: extraPythonPath, ...env } = config.env
    // The folder holding `burn_p2p_python_runtime`, written to the runtime cache on first use, comes first.
    const runtimeRoot = yield* runtime.materialize
    const pythonPath = [runtimeRoot, ...config.moduleSearchRoots, extraPythonPath, process.env.PYTHONPATH].filter(
      (entry): entry is string => entry !== undefined && entry !== "",
    )
    const configVia = config.configVia ?? (config.workerModule === DEFAULT_WORKER_MODULE ? "file" : "argv")
    const configFile = configVia === "file" ? yield* privateFile(config.configJson) : undefined
    const proc = yield* workerProcess.spawn({
      executable: config.pythonExecutable,
      args: [
        "-m",
        config.workerModule,
        "--factory",
        config.workloadFactory,
        ...(configFile === undefined ? ["--config-json", config.configJson] : ["--config-file", configFile.path]),
        "--connect-host",
        "127.0.0.1",
        "--connect-port",
        String(listener.port),
      ],
      env: {
        PYTHONPATH: pythonPath.join(":"),
        PYTHONUNBUFFERED: "1",
        BURN_P2P_WORKER_MAX_FRAME_BYTES: String(config.maxFrameBytes),
        ...(config.exitWithParent ? { BURN_P2P_WORKER_EXIT_ON_STDIN_EOF: "1" } : {}),
        ...env,
      },
      terminateGrace: config.terminateGrace,
      stderrTailBytes: config.stderrTailBytes,
    })
    const pid = proc.pid

    const connectFailure = (reason: "Exited" | "Timeout", detail: string) =>
      Effect.flatMap(
        Effect.zip(proc.exitStatus, proc.stderrTail),
        ([status, stderrTail]) =>
          Effect.fail(
            new WorkerConnectError({
              reason,
              timeoutMillis: Duration.toMillis(config.connectTimeout),
              detail,
              pid,
              exitCode: Option.isSome(status) ? status.value.exitCode : null,
              signal: Option.isSome(status) ? status.value.signal : null,
              stderrTail,
            }),
          ),
      )
    const connectDeadline = Date.now() + Duration.toMillis(config.connectTimeout)
    const socket = yield* listener.accept(pid).pipe(
      Effect.timeoutOption(config.connectTimeout),
      Effect.raceFirst(Effect.zipRight(proc.exited, connectFailure("Exited", "the process exited"))),
      Effect.flatMap(Option.match({
        // Stopped first, so the error quotes its complete stderr without waiting for it.
        onNone: () => Effect.zipRight(proc.terminate, connectFailure("Timeout", "deadline passed")),
        onSome: Effect.succeed,
      })),
    )

    const wire = yield* client.make({ socket, process: proc, maxFrameBytes: config.maxFrameBytes })
    // Registered last, so it runs first on release: a polite `shutdown` while
    // the socket is open, then the process finalizer's SIGTERM/SIGKILL.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        // No call deadline (which would SIGKILL at once): past shutdownTimeout
        // the worker still gets SIGTERM and a grace to clean up.
        const acknowledged = yield* wire.call(Rpcs.shutdown, null, Option.none()).pipe(
          Effect.interruptible,
          Effect.timeout(config.shutdownTimeout),
          Effect.isSuccess,
        )
        if (acknowledged) yield* proc.exited.pipe(Effect.interruptible, Effect.timeoutOption(config.shutdownTimeout))
        yield* wire.close
        yield* proc.terminate
      })
    )

    const call = <P, PI, R, RI>(rpc: Rpc<P, PI, R, RI>, params: P, options?: CallOptions) => {
      if (options?.timeout === undefined) return wire.call(rpc, params, config.callTimeout)
      const timeout = Duration.decodeUnknown(options.timeout)
      return Option.isSome(timeout) ? wire.call(rpc, params, timeout) : Effect.fail(
        new InvalidArgumentError({
          where: rpc.method,
          detail: `timeout ${
            JSON.stringify(options.timeout)
          } is not a duration (milliseconds, "5 seconds", a Duration)`,
        }),
      )
    }

    // The handshake is part of starting: without a callTimeout, what is left
    // of connectTimeout bounds it too.
    const info = yield* call(Rpcs.hello, null, {
      timeout: Option.getOrElse(config.callTimeout, () => Math.max(1, connectDeadline - Date.now())),
    })
    // The worker that answered `hello` has read its config.
    configFile?.remove()
    if (info.protocolVersion !== PROTOCOL_VERSION) {
      return yield* new ProtocolError({
        method: "hello",
        id: 1,
        pid,
        reason: "UnsupportedVersion",
        detail: `the worker speaks protocol ${info.protocolVersion}; this client speaks ${PROTOCOL_VERSION}`,
      })
    }
    yield* Effect.logDebug(`worker ready: ${info.workloadName}, protocol ${info.protocolVersion}`)

    const service: PythonWorker.Service = {
      pid,
      info,
      call,
      hello: Effect.fn("PythonWorker.hello")(function* (options?: CallOptions) {
        return yield* call(Rpcs.hello, null, options)
      }),
      capabilityProbe: Effect.fn("PythonWorker.capabilityProbe")(function* (options?: CallOptions) {
        return yield* call(Rpcs.capabilityProbe, null, options)
      }),
      initModel: Effect.fn("PythonWorker.initModel")(function* (device: string, options?: CallOptions) {
        return (yield* call(Rpcs.initModel, { device }, options)).modelId
      }),
      trainWindow: Effect.fn("PythonWorker.trainWindow")(
        function* (modelId: string, batches: ReadonlyArray<BatchRef>, options?: CallOptions) {
          return (yield* call(Rpcs.trainWindow, { modelId, batches }, options)).metrics
        },
      ),
      evaluate: Effect.fn("PythonWorker.evaluate")(
        function* (modelId: string, split: EvalSplit, options?: CallOptions) {
          return (yield* call(Rpcs.evaluate, { modelId, split }, options)).metrics
        },
      ),
      applyPatch: Effect.fn("PythonWorker.applyPatch")(function* (patch: RuntimePatch, options?: CallOptions) {
        return yield* call(Rpcs.applyPatch, patch, options)
      }),
      loadModelArtifact: Effect.fn("PythonWorker.loadModelArtifact")(
        function* (modelId: string, artifactPath: string, options?: CallOptions) {
          yield* call(Rpcs.loadModelArtifact, { modelId, artifactPath }, options)
        },
      ),
      materializeModelArtifact: Effect.fn("PythonWorker.materializeModelArtifact")(
        function* (modelId: string, artifactPath: string, options?: CallOptions) {
          yield* call(Rpcs.materializeModelArtifact, { modelId, artifactPath }, options)
        },
      ),
      mergeCandidateModels: Effect.fn("PythonWorker.mergeCandidateModels")(
        function* (
          baseModelId: string,
          candidates: ReadonlyArray<MergeCandidate>,
          policy: MergePolicy,
          options?: CallOptions,
        ) {
          const result = yield* call(Rpcs.mergeCandidateModels, { baseModelId, candidates, policy }, options)
          return Option.fromNullable(result.modelId)
        },
      ),
      applySingleRootEma: Effect.fn("PythonWorker.applySingleRootEma")(
        function* (baseModelId: string, mergedModelId: string, policy: MergePolicy, options?: CallOptions) {
          return (yield* call(Rpcs.applySingleRootEma, { baseModelId, mergedModelId, policy }, options)).modelId
        },
      ),
      reconcileCanonicalModel: Effect.fn("PythonWorker.reconcileCanonicalModel")(
        function* (localModelId: string, canonicalModelId: string, strategy: ReconcileStrategy, options?: CallOptions) {
          return (yield* call(Rpcs.reconcileCanonicalModel, { localModelId, canonicalModelId, strategy }, options))
            .modelId
        },
      ),
      releaseModel: Effect.fn("PythonWorker.releaseModel")(function* (modelId: string, options?: CallOptions) {
        yield* call(Rpcs.releaseModel, { modelId }, options)
      }),
    }
    return service
  }).pipe(Effect.withSpan("PythonWorker.make"))
