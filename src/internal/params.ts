/**
 * The params and results of the RPCs that no caller builds by hand: model
 * handles, acks, and each method's params struct. `Rpcs` names them.
 *
 * @internal
 */
import * as Schema from "effect/Schema"
import { BatchRef } from "../BatchRef.ts"
import { EvalSplit, MergeCandidate, MergePolicy, Metrics, ReconcileStrategy } from "../Messages.ts"
import { StateDictFilter } from "../PackMessages.ts"
import { U32, type Wire, wire } from "./wire.ts"

/** @internal */
export type ModelIdField = { modelId: Wire<typeof Schema.String, "model_id"> }

/** @internal */
export const ModelHandle: Schema.Struct<ModelIdField> = Schema.Struct({
  modelId: wire(Schema.String, "model_id"),
})
/**
 * serde reads a missing `model_id` as None, so absent is null too.
 *
 * @internal
 */
export const OptionalModelHandle: Schema.Struct<{
  modelId: Schema.PropertySignature<":", string | null, "model_id", "?:", string | null | undefined, true, never>
}> = Schema.Struct({
  modelId: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }).pipe(Schema.fromKey("model_id")),
})
/** @internal */
export const MetricsResult: Schema.Struct<{ metrics: typeof Metrics }> = Schema.Struct({ metrics: Metrics })
/**
 * Acks are `{}` (extra fields ignored); a missing result reads as null, which is accepted too.
 *
 * @internal
 */
export const Ack: Schema.transform<
  Schema.Union<[typeof Schema.Null, Schema.Record$<typeof Schema.String, typeof Schema.Unknown>]>,
  typeof Schema.Void
> = Schema.transform(
  Schema.Union(Schema.Null, Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  Schema.Void,
  { strict: true, decode: () => undefined, encode: () => ({}) },
)
/** @internal */
export const ModelRef: Schema.Struct<ModelIdField> = Schema.Struct({
  modelId: wire(Schema.String, "model_id"),
})
/** @internal */
export const ArtifactParams: Schema.Struct<{
  modelId: Wire<typeof Schema.String, "model_id">
  artifactPath: Wire<typeof Schema.String, "artifact_path">
}> = Schema.Struct({
  modelId: wire(Schema.String, "model_id"),
  artifactPath: wire(Schema.String, "artifact_path"),
})
/** @internal */
export const InitModelParams: Schema.Struct<{ device: typeof Schema.String }> = Schema.Struct({
  device: Schema.String,
})
/** @internal */
export const TrainWindowParams: Schema.Struct<{
  modelId: Wire<typeof Schema.String, "model_id">
  batches: Schema.Array$<typeof BatchRef>
}> = Schema.Struct({ modelId: wire(Schema.String, "model_id"), batches: Schema.Array(BatchRef) })
/** @internal */
export const EvaluateParams: Schema.Struct<{
  modelId: Wire<typeof Schema.String, "model_id">
  split: typeof EvalSplit
}> = Schema.Struct({ modelId: wire(Schema.String, "model_id"), split: EvalSplit })
/** @internal */
export const MergeParams: Schema.Struct<{
  baseModelId: Wire<typeof Schema.String, "base_model_id">
  candidates: Schema.Array$<typeof MergeCandidate>
  policy: typeof MergePolicy
}> = Schema.Struct({
  baseModelId: wire(Schema.String, "base_model_id"),
  candidates: Schema.Array(MergeCandidate),
  policy: MergePolicy,
})
/** @internal */
export const RootEmaParams: Schema.Struct<{
  baseModelId: Wire<typeof Schema.String, "base_model_id">
  mergedModelId: Wire<typeof Schema.String, "merged_model_id">
  policy: typeof MergePolicy
}> = Schema.Struct({
  baseModelId: wire(Schema.String, "base_model_id"),
  mergedModelId: wire(Schema.String, "merged_model_id"),
  policy: MergePolicy,
})
/** @internal */
export const ReconcileParams: Schema.Struct<{
  localModelId: Wire<typeof Schema.String, "local_model_id">
  canonicalModelId: Wire<typeof Schema.String, "canonical_model_id">
  strategy: typeof ReconcileStrategy
}> = Schema.Struct({
  localModelId: wire(Schema.String, "local_model_id"),
  canonicalModelId: wire(Schema.String, "canonical_model_id"),
  strategy: ReconcileStrategy,
})

/**
 * Left out, everything is kept.
 *
 * @internal
 */
export const keepAll: StateDictFilter = { includeGlobs: [], excludeGlobs: [] }

/** @internal */
export const PackPlanParams: Schema.Struct<{
  device: typeof Schema.String
  stateDictFilter: Wire<typeof StateDictFilter, "state_dict_filter">
}> = Schema.Struct({ device: Schema.String, stateDictFilter: wire(StateDictFilter, "state_dict_filter") })
/** @internal */
export const ExportPackParams: Schema.Struct<{
  modelId: Wire<typeof Schema.String, "model_id">
  parameterPackPath: Wire<typeof Schema.String, "parameter_pack_path">
  modelSchemaHash: Wire<typeof Schema.String, "model_schema_hash">
  stateDictFilter: Wire<typeof StateDictFilter, "state_dict_filter">
}> = Schema.Struct({
  modelId: wire(Schema.String, "model_id"),
  parameterPackPath: wire(Schema.String, "parameter_pack_path"),
  modelSchemaHash: wire(Schema.String, "model_schema_hash"),
  stateDictFilter: wire(StateDictFilter, "state_dict_filter"),
})
/** @internal */
export const ImportPackParams: Schema.Struct<{
  device: typeof Schema.String
  parameterPackPath: Wire<typeof Schema.String, "parameter_pack_path">
  stateDictFilter: Wire<typeof StateDictFilter, "state_dict_filter">
}> = Schema.Struct({
  device: Schema.String,
  parameterPackPath: wire(Schema.String, "parameter_pack_path"),
  stateDictFilter: wire(StateDictFilter, "state_dict_filter"),
})
/** @internal */
export const InnerLoopParams: Schema.Struct<{
  modelId: Wire<typeof Schema.String, "model_id">
  batches: Schema.Array$<typeof BatchRef>
  numInnerSteps: Wire<typeof U32, "num_inner_steps">
  innerOptimizerStatePath: Wire<Schema.NullOr<typeof Schema.String>, "inner_optimizer_state_path">
  outputParameterPackPath: Wire<typeof Schema.String, "output_parameter_pack_path">
  modelSchemaHash: Wire<typeof Schema.String, "model_schema_hash">
  requireExactSteps: Wire<typeof Schema.Boolean, "require_exact_steps">
  stateDictFilter: Wire<typeof StateDictFilter, "state_dict_filter">
}> = Schema.Struct({
  modelId: wire(Schema.String, "model_id"),
  batches: Schema.Array(BatchRef),
  numInnerSteps: wire(U32, "num_inner_steps"),
  innerOptimizerStatePath: wire(Schema.NullOr(Schema.String), "inner_optimizer_state_path"),
  outputParameterPackPath: wire(Schema.String, "output_parameter_pack_path"),
  modelSchemaHash: wire(Schema.String, "model_schema_hash"),
  requireExactSteps: wire(Schema.Boolean, "require_exact_steps"),
  stateDictFilter: wire(StateDictFilter, "state_dict_filter"),
})
