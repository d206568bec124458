/**
 * The value of `Rpcs`: every method's descriptor, built with `rpc`.
 *
 * @internal
 */
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type { BatchRef } from "../BatchRef.ts"
import {
  CapabilityProbe,
  type EvalSplit,
  Hello,
  type MergeCandidate,
  type MergePolicy,
  type Metrics,
  PatchOutcome,
  type ReconcileStrategy,
  RuntimePatch,
} from "../Messages.ts"
import { type InnerLoopOptions, InnerLoopResult, ParameterPackPlan, type StateDictFilter } from "../PackMessages.ts"
import type { ModelIds, Rpc, Rpcs } from "../Rpc.ts"
import {
  Ack,
  ArtifactParams,
  EvaluateParams,
  ExportPackParams,
  ImportPackParams,
  InitModelParams,
  InnerLoopParams,
  keepAll,
  MergeParams,
  MetricsResult,
  ModelHandle,
  ModelRef,
  OptionalModelHandle,
  PackPlanParams,
  ReconcileParams,
  RootEmaParams,
  TrainWindowParams,
} from "./params.ts"

// deno-lint-ignore no-explicit-any
const rpc = <P, PI, R, RI, const Args extends ReadonlyArray<any>, A>(
  method: string,
  params: Schema.Schema<P, PI>,
  result: Schema.Schema<R, RI>,
  service: {
    readonly doc: string
    readonly arity: number
    readonly toParams: (ids: ModelIds, ...args: Args) => P
    readonly fromResult: (result: R, ids: ModelIds) => A
    readonly modelOf?: (params: P) => string | undefined
    readonly capability?: string
    readonly verify?: (params: P, result: R) => string | undefined
  },
): Rpc<P, PI, R, RI, Args, A> => ({
  method,
  params,
  result,
  doc: service.doc,
  arity: service.arity,
  toParams: service.toParams,
  fromResult: service.fromResult,
  modelOf: service.modelOf ?? (() => undefined),
  capability: service.capability,
  verify: service.verify ?? (() => undefined),
})

const none = (): null => null
const same = <A>(result: A): A => result
const nothing = (): void => undefined
const mintedId = (result: { readonly modelId: string }, ids: ModelIds): string => ids.fromWire(result.modelId)
const metricsOf = (result: { readonly metrics: Metrics }): Metrics => result.metrics
const modelIdOf = (params: { readonly modelId: string }): string => params.modelId

/** @internal */
export const rpcs: Rpcs = {
  hello: rpc("hello", Schema.Null, Hello, {
    doc: "protocol version, workload name and capabilities; the client accepts versions 1 and 2",
    arity: 0,
    toParams: none,
    fromResult: same,
  }),
  capabilityProbe: rpc("capability_probe", Schema.Null, CapabilityProbe, {
    doc: "the device the workload runs on and its measured throughput",
    arity: 0,
    toParams: none,
    fromResult: same,
  }),
  initModel: rpc("init_model", InitModelParams, ModelHandle, {
    doc: "a new model; its id",
    arity: 1,
    toParams: (_ids, device: string) => ({ device }),
    fromResult: mintedId,
  }),
  trainWindow: rpc("train_window", TrainWindowParams, MetricsResult, {
    doc: "trains the model on the batches; training metrics",
    arity: 2,
    toParams: (ids, modelId: string, batches: ReadonlyArray<BatchRef>) => ({ modelId: ids.toWire(modelId), batches }),
    fromResult: metricsOf,
    modelOf: modelIdOf,
  }),
  evaluate: rpc("evaluate", EvaluateParams, MetricsResult, {
    doc: "evaluates the model on a split; metrics",
    arity: 2,
    toParams: (ids, modelId: string, split: EvalSplit) => ({ modelId: ids.toWire(modelId), split }),
    fromResult: metricsOf,
    modelOf: modelIdOf,
  }),
  applyPatch: rpc("apply_patch", RuntimePatch, PatchOutcome, {
    doc: "applies a runtime patch (the patch object is the params)",
    arity: 1,
    toParams: (_ids, patch: RuntimePatch) => patch,
    fromResult: same,
  }),
  loadModelArtifact: rpc("load_model_artifact", ArtifactParams, Ack, {
    doc: "replaces the model's weights with the artifact file's",
    arity: 2,
    toParams: (ids, modelId: string, artifactPath: string) => ({ modelId: ids.toWire(modelId), artifactPath }),
    fromResult: nothing,
    modelOf: modelIdOf,
  }),
  materializeModelArtifact: rpc("materialize_model_artifact", ArtifactParams, Ack, {
    doc: "writes the model's weights to an artifact file",
    arity: 2,
    toParams: (ids, modelId: string, artifactPath: string) => ({ modelId: ids.toWire(modelId), artifactPath }),
    fromResult: nothing,
    modelOf: modelIdOf,
  }),
  mergeCandidateModels: rpc("merge_candidate_models", MergeParams, OptionalModelHandle, {
    doc: "merges candidate models into a new model, or none",
    arity: 3,
    toParams: (ids, baseModelId: string, candidates: ReadonlyArray<MergeCandidate>, policy: MergePolicy) => ({
      baseModelId: ids.toWire(baseModelId),
      candidates: candidates.map((candidate) => ({ ...candidate, modelId: ids.toWire(candidate.modelId) })),
      policy,
    }),
    fromResult: (result, ids) => Option.map(Option.fromNullable(result.modelId), ids.fromWire),
    modelOf: (params) => params.baseModelId,
  }),
  applySingleRootEma: rpc("apply_single_root_ema", RootEmaParams, ModelHandle, {
    doc: "moves the merged model toward the base (updated in place); the merged id",
    arity: 3,
    toParams: (ids, baseModelId: string, mergedModelId: string, policy: MergePolicy) => ({
      baseModelId: ids.toWire(baseModelId),
      mergedModelId: ids.toWire(mergedModelId),
      policy,
    }),
    fromResult: mintedId,
    modelOf: (params) => params.mergedModelId,
  }),
  reconcileCanonicalModel: rpc("reconcile_canonical_model", ReconcileParams, ModelHandle, {
    doc: "reconciles the canonical model with the local one (updated in place); the canonical id",
    arity: 3,
    toParams: (ids, localModelId: string, canonicalModelId: string, strategy: ReconcileStrategy) => ({
      localModelId: ids.toWire(localModelId),
      canonicalModelId: ids.toWire(canonicalModelId),
      strategy,
    }),
    fromResult: mintedId,
    modelOf: (params) => params.canonicalModelId,
  }),
  releaseModel: rpc("release_model", ModelRef, Ack, {
    doc: "frees the model; an unknown id is not an error",
    arity: 1,
    toParams: (ids, modelId: string) => ({ modelId: ids.toWire(modelId) }),
    fromResult: nothing,
    modelOf: modelIdOf,
  }),
  parameterPackPlan: rpc("parameter_pack_plan", PackPlanParams, ParameterPackPlan, {
    doc: "what a pack of a fresh model on the device would hold (protocol 2)",
    arity: 2,
    toParams: (_ids, device: string, filter?: StateDictFilter) => ({ device, stateDictFilter: filter ?? keepAll }),
    fromResult: same,
    capability: "parameter_pack_export",
  }),
  exportParameterPack: rpc("export_parameter_pack", ExportPackParams, Ack, {
    doc: "writes the model as a parameter pack folder (protocol 2)",
    arity: 4,
    toParams: (ids, modelId: string, path: string, modelSchemaHash: string, filter?: StateDictFilter) => ({
      modelId: ids.toWire(modelId),
      parameterPackPath: path,
      modelSchemaHash,
      stateDictFilter: filter ?? keepAll,
    }),
    fromResult: nothing,
    modelOf: modelIdOf,
    capability: "parameter_pack_export",
  }),
  importParameterPack: rpc("import_parameter_pack", ImportPackParams, ModelHandle, {
    doc: "a new model loaded from a parameter pack folder, checked against its layout hash; its id (protocol 2)",
    arity: 3,
    toParams: (_ids, device: string, path: string, filter?: StateDictFilter) => ({
      device,
      parameterPackPath: path,
      stateDictFilter: filter ?? keepAll,
    }),
    fromResult: mintedId,
    capability: "parameter_pack_import",
  }),
  runInnerLoop: rpc("run_inner_loop", InnerLoopParams, InnerLoopResult, {
    doc: "DiLoCo's inner loop: N local steps, then the model written as a pack (protocol 2)",
    arity: 3,
    toParams: (ids, modelId: string, batches: ReadonlyArray<BatchRef>, options: InnerLoopOptions) => ({
      modelId: ids.toWire(modelId),
      batches,
      numInnerSteps: options.numInnerSteps,
      innerOptimizerStatePath: options.innerOptimizerStatePath ?? null,
      outputParameterPackPath: options.outputParameterPackPath,
      modelSchemaHash: options.modelSchemaHash,
      requireExactSteps: options.requireExactSteps ?? false,
      stateDictFilter: options.filter ?? keepAll,
    }),
    fromResult: same,
    modelOf: modelIdOf,
    capability: "diloco_checkpoint_job",
    verify: (params, result) =>
      params.requireExactSteps && result.stepsCompleted !== params.numInnerSteps
        ? `the worker ran ${result.stepsCompleted} inner steps; exactly ${params.numInnerSteps} were required`
        : undefined,
  }),
  shutdown: rpc("shutdown", Schema.Null, Ack, {
    doc: "the worker answers, then exits (sent by the layer on release)",
    arity: 0,
    toParams: none,
    fromResult: nothing,
  }),
}
