/**
 * The RPCs: what one is (`Rpc`, with the `ModelIds` its service method maps
 * through) and every method's descriptor (`Rpcs`), the one declaration the
 * client, the tests and the README's method table read.
 *
 * @since 0.2.0
 */
import type * as Option from "effect/Option"
import type * as Schema from "effect/Schema"
import type { BatchRef } from "./BatchRef.ts"
import type {
  CapabilityProbe,
  EvalSplit,
  Hello,
  MergeCandidate,
  MergePolicy,
  Metrics,
  PatchOutcome,
  ReconcileStrategy,
  RuntimePatch,
} from "./Messages.ts"
import type { InnerLoopOptions, InnerLoopResult, ParameterPackPlan, StateDictFilter } from "./PackMessages.ts"
import type {
  Ack,
  ArtifactParams,
  EvaluateParams,
  ExportPackParams,
  ImportPackParams,
  InitModelParams,
  InnerLoopParams,
  MergeParams,
  MetricsResult,
  ModelHandle,
  ModelRef,
  OptionalModelHandle,
  PackPlanParams,
  ReconcileParams,
  RootEmaParams,
  TrainWindowParams,
} from "./internal/params.ts"
import * as internal from "./internal/rpcs.ts"
import type { RpcOf } from "./internal/rpcTypes.ts"

/**
 * How a service method's model ids reach the wire and come back. Ids the
 * client hands out name the worker process that minted them, so an id from
 * a process that has since died is refused before anything is sent.
 *
 * @since 0.2.0
 * @category models
 */
export interface ModelIds {
  /** The worker's own id for a model id the caller holds (fails the call for a lost model). */
  readonly toWire: (id: string) => string
  /** The id the caller gets for an id the worker minted. */
  readonly fromWire: (id: string) => string
}

/**
 * One RPC: its wire name, what it sends and what it answers, and how the
 * service method built from it maps its positional arguments to the params
 * (`toParams`, `arity` arguments before the call options) and the result to
 * what the caller gets (`fromResult`).
 *
 * @since 0.1.0
 * @category models
 */
// deno-lint-ignore no-explicit-any
export interface Rpc<P, PI, R, RI, Args extends ReadonlyArray<any> = any, A = any> {
  /** The wire name, snake_case (`"train_window"`). */
  readonly method: string
  /** The params' schema: `P` in TypeScript, `PI` on the wire. */
  readonly params: Schema.Schema<P, PI>
  /** The result's schema: `R` in TypeScript, `RI` on the wire. */
  readonly result: Schema.Schema<R, RI>
  /** One line on what the method does, for the README's method table. */
  readonly doc: string
  /** How many positional arguments the service method takes before its `CallOptions`. */
  readonly arity: number
  /** The params from the service method's arguments, model ids mapped to the worker's. */
  readonly toParams: (ids: ModelIds, ...args: Args) => P
  /** What the service method returns for a result, minted model ids tagged with the generation. */
  readonly fromResult: (result: R, ids: ModelIds) => A
  /** The model the call is about, for its span. */
  readonly modelOf: (params: P) => string | undefined
  /** The capability a worker must advertise in `hello` before this method is sent. */
  readonly capability: string | undefined
  /** What is wrong with a result that decoded but does not answer these params, if anything. */
  readonly verify: (params: P, result: R) => string | undefined
}

/**
 * The descriptors in `Rpcs`: each method's params and result types.
 *
 * @since 0.1.0
 * @category models
 */
export interface Rpcs {
  /** `hello`: the protocol version, the workload name and the capabilities. */
  readonly hello: RpcOf<typeof Schema.Null, typeof Hello, [], Hello>
  /** `capability_probe`: the workload's device and throughput estimate. */
  readonly capabilityProbe: RpcOf<typeof Schema.Null, typeof CapabilityProbe, [], CapabilityProbe>
  /** `init_model`: a new model on a device; its id. */
  readonly initModel: RpcOf<typeof InitModelParams, typeof ModelHandle, [device: string], string>
  /** `train_window`: trains a model on batches; training metrics. */
  readonly trainWindow: RpcOf<
    typeof TrainWindowParams,
    typeof MetricsResult,
    [modelId: string, batches: ReadonlyArray<BatchRef>],
    Metrics
  >
  /** `evaluate`: evaluates a model on a split; metrics. */
  readonly evaluate: RpcOf<typeof EvaluateParams, typeof MetricsResult, [modelId: string, split: EvalSplit], Metrics>
  /** `apply_patch`: applies a runtime patch; what came of it. */
  readonly applyPatch: RpcOf<typeof RuntimePatch, typeof PatchOutcome, [patch: RuntimePatch], PatchOutcome>
  /** `load_model_artifact`: replaces a model's weights with an artifact file's. */
  readonly loadModelArtifact: RpcOf<typeof ArtifactParams, typeof Ack, [modelId: string, path: string], void>
  /** `materialize_model_artifact`: writes a model's weights to an artifact file. */
  readonly materializeModelArtifact: RpcOf<typeof ArtifactParams, typeof Ack, [modelId: string, path: string], void>
  /** `merge_candidate_models`: merges candidates into a new model, or none. */
  readonly mergeCandidateModels: RpcOf<
    typeof MergeParams,
    typeof OptionalModelHandle,
    [baseModelId: string, candidates: ReadonlyArray<MergeCandidate>, policy: MergePolicy],
    Option.Option<string>
  >
  /** `apply_single_root_ema`: moves the merged model toward the base; the merged id. */
  readonly applySingleRootEma: RpcOf<
    typeof RootEmaParams,
    typeof ModelHandle,
    [baseModelId: string, mergedModelId: string, policy: MergePolicy],
    string
  >
  /** `reconcile_canonical_model`: reconciles the canonical model with the local one; the canonical id. */
  readonly reconcileCanonicalModel: RpcOf<
    typeof ReconcileParams,
    typeof ModelHandle,
    [localModelId: string, canonicalModelId: string, strategy: ReconcileStrategy],
    string
  >
  /** `release_model`: frees a model (an unknown id is not an error). */
  readonly releaseModel: RpcOf<typeof ModelRef, typeof Ack, [modelId: string], void>
  /** `parameter_pack_plan` (protocol 2, `parameter_pack_export`): what a pack of a fresh model would hold. */
  readonly parameterPackPlan: RpcOf<
    typeof PackPlanParams,
    typeof ParameterPackPlan,
    [device: string, filter?: StateDictFilter | undefined],
    ParameterPackPlan
  >
  /** `export_parameter_pack` (protocol 2, `parameter_pack_export`): writes a model as a pack folder. */
  readonly exportParameterPack: RpcOf<
    typeof ExportPackParams,
    typeof Ack,
    [modelId: string, path: string, modelSchemaHash: string, filter?: StateDictFilter | undefined],
    void
  >
  /** `import_parameter_pack` (protocol 2, `parameter_pack_import`): a new model from a pack folder; its id. */
  readonly importParameterPack: RpcOf<
    typeof ImportPackParams,
    typeof ModelHandle,
    [device: string, path: string, filter?: StateDictFilter | undefined],
    string
  >
  /** `run_inner_loop` (protocol 2, `diloco_checkpoint_job`): DiLoCo's inner loop, its result written as a pack. */
  readonly runInnerLoop: RpcOf<
    typeof InnerLoopParams,
    typeof InnerLoopResult,
    [modelId: string, batches: ReadonlyArray<BatchRef>, options: InnerLoopOptions],
    InnerLoopResult
  >
  /** `shutdown`: the worker answers, then exits; sent by the layer on release, not a service method. */
  readonly shutdown: RpcOf<typeof Schema.Null, typeof Ack, [], void>
}

/**
 * Every method, keyed by the client's camelCase name. Each entry is the one
 * declaration of its method: the service's method of the same name, its
 * types, the codecs and the README's method table all come from it.
 *
 * @since 0.1.0
 * @category models
 */
export const Rpcs: Rpcs = internal.rpcs
