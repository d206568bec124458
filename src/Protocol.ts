/**
 * The wire protocol, declared once: every JSON shape of PROTOCOL.md as a
 * Schema (camelCase in TypeScript, snake_case on the wire) and, in `Rpcs`,
 * each method's wire name with its params and result schemas. The client,
 * the tests and the README's method table all read from here.
 *
 * Numbers: JSON cannot tell `1` from `1.0` once parsed in JavaScript, so every
 * metric and patch number is a plain `number`; integers past 2^53 lose
 * precision, and a JavaScript `1.0` reaches Python as the int `1`.
 *
 * @since 0.1.0
 */
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"

/**
 * The protocol versions this client speaks (protocol 2 is a superset of 1).
 *
 * @since 0.2.0
 * @category models
 */
export const PROTOCOL_VERSIONS: ReadonlyArray<number> = [1, 2]

/**
 * A field read from `Key` on the wire (snake_case) and named in camelCase in TypeScript.
 *
 * @internal
 */
type Wire<S extends Schema.Schema.All, Key extends string> = Schema.PropertySignature<
  ":",
  Schema.Schema.Type<S>,
  Key,
  ":",
  Schema.Schema.Encoded<S>,
  false,
  Schema.Schema.Context<S>
>

const wire = <S extends Schema.Schema.All, const Key extends string>(schema: S, key: Key): Wire<S, Key> =>
  Schema.propertySignature(schema).pipe(Schema.fromKey(key))

/**
 * What `Schema.Class<Self>(identifier)(fields)` returns, spelled out so that JSR need not infer it.
 *
 * @internal
 */
type ClassBase<Self, Fields extends Schema.Struct.Fields> = Schema.Class<
  Self,
  Fields,
  Schema.Struct.Encoded<Fields>,
  Schema.Struct.Context<Fields>,
  Schema.Struct.Constructor<Fields>,
  // Nothing inherited, no prototype: the `{}`s Schema.Class itself passes.
  // deno-lint-ignore ban-types
  {},
  // deno-lint-ignore ban-types
  {}
>

const /** @internal */ U32: Schema.filter<typeof Schema.Int> = Schema.Int.pipe(Schema.between(0, 0xffff_ffff))
const /** @internal */ U64: typeof Schema.NonNegativeInt = Schema.NonNegativeInt
/** JSON has no NaN or Infinity. */
const /** @internal */ F64: typeof Schema.JsonNumber = Schema.JsonNumber

/**
 * Any JSON value: what an opaque field (a batch payload, the workload config)
 * may hold so that it reaches Python unchanged.
 *
 * @since 0.1.0
 * @category models
 */
export const JsonValue: Schema.Schema<JsonValue> = Schema.Union(
  Schema.Null,
  Schema.Boolean,
  F64,
  Schema.String,
  Schema.Array(Schema.suspend(() => JsonValue)),
  Schema.Record({ key: Schema.String, value: Schema.suspend(() => JsonValue) }),
).annotations({ identifier: "JsonValue" })
/**
 * A JSON value, as `JsonValue` decodes it.
 *
 * @since 0.1.0
 * @category models
 */
export type JsonValue = null | boolean | number | string | ReadonlyArray<JsonValue> | {
  readonly [key: string]: JsonValue
}

/**
 * A metric value: an integer, a float, a bool or a string (serde's untagged
 * `MetricValue`). Integers and floats are both `number` here.
 *
 * @since 0.1.0
 * @category models
 */
export const MetricValue: Schema.Union<[typeof F64, typeof Schema.Boolean, typeof Schema.String]> = Schema.Union(
  F64,
  Schema.Boolean,
  Schema.String,
).annotations({ identifier: "MetricValue" })

/**
 * Training or evaluation metrics: a name for each `MetricValue`.
 *
 * @since 0.1.0
 * @category models
 */
export const Metrics: Schema.Record$<typeof Schema.String, typeof MetricValue> = Schema.Record({
  key: Schema.String,
  value: MetricValue,
}).annotations({ identifier: "Metrics" })
/**
 * A decoded `Metrics` record.
 *
 * @since 0.1.0
 * @category models
 */
export type Metrics = typeof Metrics.Type

const /** @internal */ CapabilityEstimateBase: ClassBase<CapabilityEstimate, {
  preferredBackends: Wire<Schema.Array$<typeof Schema.String>, "preferred_backends">
  workUnitsPerSecond: Wire<typeof F64, "work_units_per_second">
  targetWindowSeconds: Wire<typeof U64, "target_window_seconds">
}> = Schema.Class<CapabilityEstimate>("CapabilityEstimate")({
  preferredBackends: wire(Schema.Array(Schema.String), "preferred_backends"),
  workUnitsPerSecond: wire(F64, "work_units_per_second"),
  targetWindowSeconds: wire(U64, "target_window_seconds"),
})
/**
 * The workload's own estimate of its throughput, inside `CapabilityProbe`.
 *
 * @since 0.1.0
 * @category models
 */
export class CapabilityEstimate extends CapabilityEstimateBase {}

const /** @internal */ HelloBase: ClassBase<Hello, {
  protocolVersion: Wire<typeof U32, "protocol_version">
  workloadName: Wire<typeof Schema.String, "workload_name">
  /** Sent by protocol 2 workers only. */
  capabilities: Schema.optionalWith<Schema.Array$<typeof Schema.String>, { default: () => ReadonlyArray<string> }>
}> = Schema.Class<Hello>("Hello")({
  protocolVersion: wire(U32, "protocol_version"),
  workloadName: wire(Schema.String, "workload_name"),
  capabilities: Schema.optionalWith(Schema.Array(Schema.String), { default: (): ReadonlyArray<string> => [] }),
})
/**
 * The worker's `hello`: its protocol version (1 or 2), its workload's name and, from a protocol 2
 * worker, its capabilities (see the README's "Protocol 2").
 *
 * @since 0.1.0
 * @category models
 */
export class Hello extends HelloBase {}

const /** @internal */ CapabilityProbeBase: ClassBase<CapabilityProbe, {
  runtimeDevice: Wire<typeof Schema.String, "runtime_device">
  capability: typeof CapabilityEstimate
}> = Schema.Class<CapabilityProbe>("CapabilityProbe")({
  runtimeDevice: wire(Schema.String, "runtime_device"),
  capability: CapabilityEstimate,
})
/**
 * `capabilityProbe`'s answer: the device the workload runs on and its `CapabilityEstimate`.
 *
 * @since 0.1.0
 * @category models
 */
export class CapabilityProbe extends CapabilityProbeBase {}

/**
 * `"Train" | "Validation" | "Test" | { Custom: name }`.
 *
 * @since 0.1.0
 * @category models
 */
export const EvalSplit: Schema.Union<[
  Schema.Literal<["Train", "Validation", "Test"]>,
  Schema.Struct<{ Custom: typeof Schema.String }>,
]> = Schema.Union(
  Schema.Literal("Train", "Validation", "Test"),
  Schema.Struct({ Custom: Schema.String }),
).annotations({ identifier: "EvalSplit" })
/**
 * A decoded `EvalSplit`.
 *
 * @since 0.1.0
 * @category models
 */
export type EvalSplit = typeof EvalSplit.Type

/**
 * How `mergeCandidateModels` combines the candidates: a named policy, or `{ Custom: name }`
 * for a workload that defines one.
 *
 * @since 0.1.0
 * @category models
 */
export const MergePolicy: Schema.Union<[
  Schema.Literal<["WeightedMean", "NormClippedWeightedMean", "TrimmedMean", "Ema", "QualityWeightedEma"]>,
  Schema.Struct<{ Custom: typeof Schema.String }>,
]> = Schema.Union(
  Schema.Literal("WeightedMean", "NormClippedWeightedMean", "TrimmedMean", "Ema", "QualityWeightedEma"),
  Schema.Struct({ Custom: Schema.String }),
).annotations({ identifier: "MergePolicy" })
/**
 * A decoded `MergePolicy`.
 *
 * @since 0.1.0
 * @category models
 */
export type MergePolicy = typeof MergePolicy.Type

/**
 * `"Replace"`, or `{ RootEma: { canonicalWeight } }`: the weight of the
 * incoming canonical model; the local model keeps `1 - canonicalWeight`.
 *
 * @since 0.1.0
 * @category models
 */
export const ReconcileStrategy: Schema.Union<[
  Schema.Literal<["Replace"]>,
  Schema.Struct<{
    RootEma: Schema.Struct<{ canonicalWeight: Wire<Schema.filter<typeof F64>, "canonical_weight"> }>
  }>,
]> = Schema.Union(
  Schema.Literal("Replace"),
  Schema.Struct({
    RootEma: Schema.Struct({ canonicalWeight: wire(F64.pipe(Schema.between(0, 1)), "canonical_weight") }),
  }),
).annotations({ identifier: "ReconcileStrategy" })
/**
 * A decoded `ReconcileStrategy`.
 *
 * @since 0.1.0
 * @category models
 */
export type ReconcileStrategy = typeof ReconcileStrategy.Type

/**
 * What the worker did with a runtime patch: `"Applied"`, `"RequiresRestart"` or
 * `{ Rejected: reason }`.
 *
 * @since 0.1.0
 * @category models
 */
export const PatchOutcome: Schema.Union<[
  Schema.Literal<["Applied", "RequiresRestart"]>,
  Schema.Struct<{ Rejected: typeof Schema.String }>,
]> = Schema.Union(
  Schema.Literal("Applied", "RequiresRestart"),
  Schema.Struct({ Rejected: Schema.String }),
).annotations({ identifier: "PatchOutcome" })
/**
 * A decoded `PatchOutcome`.
 *
 * @since 0.1.0
 * @category models
 */
export type PatchOutcome = typeof PatchOutcome.Type

/**
 * One value of a runtime patch: a bool, a number, a string or a list of strings.
 *
 * @since 0.1.0
 * @category models
 */
export const PatchValue: Schema.Union<[
  typeof Schema.Boolean,
  typeof F64,
  typeof Schema.String,
  Schema.Array$<typeof Schema.String>,
]> = Schema.Union(
  Schema.Boolean,
  F64,
  Schema.String,
  Schema.Array(Schema.String),
).annotations({ identifier: "PatchValue" })

/**
 * A runtime patch, `applyPatch`'s params: its id, class (`"Hot"`, `"Warm"`, `"Cold"`), summary,
 * values and the client capabilities it needs.
 *
 * @since 0.1.0
 * @category models
 */
export const RuntimePatch: Schema.Struct<{
  patchId: Wire<typeof Schema.String, "patch_id">
  class: Schema.Literal<["Hot", "Warm", "Cold"]>
  summary: typeof Schema.String
  values: Schema.Record$<typeof Schema.String, typeof PatchValue>
  requiredClientCapabilities: Wire<Schema.Array$<typeof Schema.String>, "required_client_capabilities">
}> = Schema.Struct({
  patchId: wire(Schema.String, "patch_id"),
  class: Schema.Literal("Hot", "Warm", "Cold"),
  summary: Schema.String,
  values: Schema.Record({ key: Schema.String, value: PatchValue }),
  requiredClientCapabilities: wire(Schema.Array(Schema.String), "required_client_capabilities"),
}).annotations({ identifier: "RuntimePatch" })
/**
 * A decoded `RuntimePatch`.
 *
 * @since 0.1.0
 * @category models
 */
export type RuntimePatch = typeof RuntimePatch.Type

/**
 * One model offered to `mergeCandidateModels`, with its peer, head and artifact ids and its
 * sample and quality weights. `modelId` is a model of this worker.
 *
 * @since 0.1.0
 * @category models
 */
export const MergeCandidate: Schema.Struct<{
  peerId: Wire<typeof Schema.String, "peer_id">
  headId: Wire<typeof Schema.String, "head_id">
  artifactId: Wire<typeof Schema.String, "artifact_id">
  modelId: Wire<typeof Schema.String, "model_id">
  sampleWeight: Wire<typeof F64, "sample_weight">
  qualityWeight: Wire<typeof F64, "quality_weight">
}> = Schema.Struct({
  peerId: wire(Schema.String, "peer_id"),
  headId: wire(Schema.String, "head_id"),
  artifactId: wire(Schema.String, "artifact_id"),
  modelId: wire(Schema.String, "model_id"),
  sampleWeight: wire(F64, "sample_weight"),
  qualityWeight: wire(F64, "quality_weight"),
}).annotations({ identifier: "MergeCandidate" })
/**
 * A decoded `MergeCandidate`.
 *
 * @since 0.1.0
 * @category models
 */
export type MergeCandidate = typeof MergeCandidate.Type

/**
 * Shard files on disk, consumed together.
 *
 * @since 0.1.0
 * @category models
 */
export const CachedMicroshardGroup: Schema.Struct<{
  kind: Schema.Literal<["cached_microshard_group"]>
  shardPaths: Wire<Schema.Array$<typeof Schema.String>, "shard_paths">
  microshardIds: Wire<Schema.Array$<typeof Schema.String>, "microshard_ids">
  ordinals: Schema.Array$<typeof U32>
  bytesLen: Wire<typeof U64, "bytes_len">
}> = Schema.Struct({
  kind: Schema.Literal("cached_microshard_group"),
  shardPaths: wire(Schema.Array(Schema.String), "shard_paths"),
  microshardIds: wire(Schema.Array(Schema.String), "microshard_ids"),
  ordinals: Schema.Array(U32),
  bytesLen: wire(U64, "bytes_len"),
}).annotations({ identifier: "CachedMicroshardGroup" })

/**
 * A descriptor the workload turns into data itself (indices, generator seeds).
 *
 * @since 0.1.0
 * @category models
 */
export const MicroEpoch: Schema.Struct<{
  kind: Schema.Literal<["micro_epoch"]>
  leaseId: Wire<typeof Schema.String, "lease_id">
  microshardIds: Wire<Schema.Array$<typeof Schema.String>, "microshard_ids">
  ordinals: Schema.Array$<typeof U32>
  bytesLen: Wire<typeof U64, "bytes_len">
  pipelineKind: Wire<
    Schema.Literal<["sharded-static", "indexed-dataset", "generated-dataset", "custom"]>,
    "pipeline_kind"
  >
  payload: typeof JsonValue
}> = Schema.Struct({
  kind: Schema.Literal("micro_epoch"),
  leaseId: wire(Schema.String, "lease_id"),
  microshardIds: wire(Schema.Array(Schema.String), "microshard_ids"),
  ordinals: Schema.Array(U32),
  bytesLen: wire(U64, "bytes_len"),
  pipelineKind: wire(
    Schema.Literal("sharded-static", "indexed-dataset", "generated-dataset", "custom"),
    "pipeline_kind",
  ),
  payload: JsonValue,
}).annotations({ identifier: "MicroEpoch" })

/**
 * One batch of a `trainWindow` or `runInnerLoop`: a `CachedMicroshardGroup` (shard files) or
 * a `MicroEpoch` (a descriptor), told apart by `kind`.
 *
 * @since 0.1.0
 * @category models
 */
export const BatchRef: Schema.Union<[typeof CachedMicroshardGroup, typeof MicroEpoch]> = Schema.Union(
  CachedMicroshardGroup,
  MicroEpoch,
).annotations({ identifier: "BatchRef" })
/**
 * A decoded `BatchRef`.
 *
 * @since 0.1.0
 * @category models
 */
export type BatchRef = typeof BatchRef.Type

/** @internal */
type ModelIdField = { modelId: Wire<typeof Schema.String, "model_id"> }

const /** @internal */ ModelHandle: Schema.Struct<ModelIdField> = Schema.Struct({
  modelId: wire(Schema.String, "model_id"),
})
/** serde reads a missing `model_id` as None, so absent is null too. */
const /** @internal */ OptionalModelHandle: Schema.Struct<{
  modelId: Schema.PropertySignature<":", string | null, "model_id", "?:", string | null | undefined, true, never>
}> = Schema.Struct({
  modelId: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }).pipe(Schema.fromKey("model_id")),
})
const /** @internal */ MetricsResult: Schema.Struct<{ metrics: typeof Metrics }> = Schema.Struct({ metrics: Metrics })
/** Acks are `{}` (extra fields ignored); a missing result reads as null, which is accepted too. */
const /** @internal */ Ack: Schema.transform<
  Schema.Union<[typeof Schema.Null, Schema.Record$<typeof Schema.String, typeof Schema.Unknown>]>,
  typeof Schema.Void
> = Schema.transform(
  Schema.Union(Schema.Null, Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  Schema.Void,
  { strict: true, decode: () => undefined, encode: () => ({}) },
)
const /** @internal */ ModelRef: Schema.Struct<ModelIdField> = Schema.Struct({
  modelId: wire(Schema.String, "model_id"),
})
const /** @internal */ ArtifactParams: Schema.Struct<{
  modelId: Wire<typeof Schema.String, "model_id">
  artifactPath: Wire<typeof Schema.String, "artifact_path">
}> = Schema.Struct({
  modelId: wire(Schema.String, "model_id"),
  artifactPath: wire(Schema.String, "artifact_path"),
})
const /** @internal */ InitModelParams: Schema.Struct<{ device: typeof Schema.String }> = Schema.Struct({
  device: Schema.String,
})
const /** @internal */ TrainWindowParams: Schema.Struct<{
  modelId: Wire<typeof Schema.String, "model_id">
  batches: Schema.Array$<typeof BatchRef>
}> = Schema.Struct({ modelId: wire(Schema.String, "model_id"), batches: Schema.Array(BatchRef) })
const /** @internal */ EvaluateParams: Schema.Struct<{
  modelId: Wire<typeof Schema.String, "model_id">
  split: typeof EvalSplit
}> = Schema.Struct({ modelId: wire(Schema.String, "model_id"), split: EvalSplit })
const /** @internal */ MergeParams: Schema.Struct<{
  baseModelId: Wire<typeof Schema.String, "base_model_id">
  candidates: Schema.Array$<typeof MergeCandidate>
  policy: typeof MergePolicy
}> = Schema.Struct({
  baseModelId: wire(Schema.String, "base_model_id"),
  candidates: Schema.Array(MergeCandidate),
  policy: MergePolicy,
})
const /** @internal */ RootEmaParams: Schema.Struct<{
  baseModelId: Wire<typeof Schema.String, "base_model_id">
  mergedModelId: Wire<typeof Schema.String, "merged_model_id">
  policy: typeof MergePolicy
}> = Schema.Struct({
  baseModelId: wire(Schema.String, "base_model_id"),
  mergedModelId: wire(Schema.String, "merged_model_id"),
  policy: MergePolicy,
})
const /** @internal */ ReconcileParams: Schema.Struct<{
  localModelId: Wire<typeof Schema.String, "local_model_id">
  canonicalModelId: Wire<typeof Schema.String, "canonical_model_id">
  strategy: typeof ReconcileStrategy
}> = Schema.Struct({
  localModelId: wire(Schema.String, "local_model_id"),
  canonicalModelId: wire(Schema.String, "canonical_model_id"),
  strategy: ReconcileStrategy,
})

/**
 * Which state-dict entries a parameter pack holds (protocol 2): an entry is
 * kept when `includeGlobs` is empty or one matches, and no `excludeGlobs`
 * entry matches (Python's `fnmatchcase`; excludes win).
 *
 * @since 0.2.0
 * @category models
 */
export const StateDictFilter: Schema.Struct<{
  includeGlobs: Wire<Schema.Array$<typeof Schema.String>, "include_globs">
  excludeGlobs: Wire<Schema.Array$<typeof Schema.String>, "exclude_globs">
}> = Schema.Struct({
  includeGlobs: wire(Schema.Array(Schema.String), "include_globs"),
  excludeGlobs: wire(Schema.Array(Schema.String), "exclude_globs"),
}).annotations({ identifier: "StateDictFilter" })
/**
 * A decoded `StateDictFilter`.
 *
 * @since 0.2.0
 * @category models
 */
export type StateDictFilter = typeof StateDictFilter.Type

/** Left out, everything is kept. */
const keepAll: StateDictFilter = { includeGlobs: [], excludeGlobs: [] }

/**
 * A list that may be missing on the wire (an empty list then).
 *
 * @internal
 */
type DefaultList<Key extends string> = Schema.PropertySignature<
  ":",
  ReadonlyArray<string>,
  Key,
  "?:",
  ReadonlyArray<string> | undefined,
  true,
  never
>
const defaultList = <const Key extends string>(key: Key): DefaultList<Key> =>
  Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }).pipe(Schema.fromKey(key))

const /** @internal */ ParameterPackPlanBase: ClassBase<ParameterPackPlan, {
  usesCustomParameterPackHooks: Wire<typeof Schema.Boolean, "uses_custom_parameter_pack_hooks">
  layoutHash: Schema.PropertySignature<":", string | null, "layout_hash", "?:", string | null | undefined, true, never>
  includedKeys: DefaultList<"included_keys">
  excludedFloatKeys: DefaultList<"excluded_float_keys">
  ignoredNonFloatKeys: DefaultList<"ignored_non_float_keys">
  parameterCount: Schema.PropertySignature<":", number, "parameter_count", "?:", number | undefined, true, never>
  genericPlanError: Schema.PropertySignature<
    "?:",
    string | undefined,
    "generic_plan_error",
    "?:",
    string | undefined,
    false,
    never
  >
}> = Schema.Class<ParameterPackPlan>("ParameterPackPlan")({
  usesCustomParameterPackHooks: wire(Schema.Boolean, "uses_custom_parameter_pack_hooks"),
  layoutHash: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }).pipe(
    Schema.fromKey("layout_hash"),
  ),
  includedKeys: defaultList("included_keys"),
  excludedFloatKeys: defaultList("excluded_float_keys"),
  ignoredNonFloatKeys: defaultList("ignored_non_float_keys"),
  parameterCount: Schema.optionalWith(U64, { default: () => 0 }).pipe(Schema.fromKey("parameter_count")),
  genericPlanError: Schema.optional(Schema.String).pipe(Schema.fromKey("generic_plan_error")),
})
/**
 * What a parameter pack of a fresh model would hold (protocol 2): the
 * layout hash, the kept, excluded and ignored keys, and the parameter count.
 *
 * @since 0.2.0
 * @category models
 */
export class ParameterPackPlan extends ParameterPackPlanBase {}

const /** @internal */ InnerLoopResultBase: ClassBase<InnerLoopResult, {
  stepsCompleted: Wire<typeof U32, "steps_completed">
  metrics: typeof Metrics
  innerOptimizerStatePath: Schema.PropertySignature<
    "?:",
    string | null | undefined,
    "inner_optimizer_state_path",
    "?:",
    string | null | undefined,
    false,
    never
  >
  innerOptimizerStateEncoding: Schema.PropertySignature<
    "?:",
    string | null | undefined,
    "inner_optimizer_state_encoding",
    "?:",
    string | null | undefined,
    false,
    never
  >
}> = Schema.Class<InnerLoopResult>("InnerLoopResult")({
  stepsCompleted: wire(U32, "steps_completed"),
  metrics: Metrics,
  innerOptimizerStatePath: Schema.optional(Schema.NullOr(Schema.String)).pipe(
    Schema.fromKey("inner_optimizer_state_path"),
  ),
  innerOptimizerStateEncoding: Schema.optional(Schema.NullOr(Schema.String)).pipe(
    Schema.fromKey("inner_optimizer_state_encoding"),
  ),
})
/**
 * What `runInnerLoop` did: the steps it ran, its metrics, and where the
 * inner optimiser's state now is (pass it to the next round).
 *
 * @since 0.2.0
 * @category models
 */
export class InnerLoopResult extends InnerLoopResultBase {}

/**
 * The options of one DiLoCo inner loop.
 *
 * @since 0.2.0
 * @category models
 */
export interface InnerLoopOptions {
  /** The local steps to run (H in DiLoCo), an unsigned 32-bit integer. */
  readonly numInnerSteps: number
  /** The folder the worker writes the model to, as a parameter pack, when the loop ends. */
  readonly outputParameterPackPath: string
  /** The workload's model schema hash, written into the pack's manifest unchanged. */
  readonly modelSchemaHash: string
  /** The previous round's optimiser state; none on the first round. */
  readonly innerOptimizerStatePath?: string | null | undefined
  /** A different step count is an error, on both sides. */
  readonly requireExactSteps?: boolean | undefined
  /** Which state-dict entries the pack holds; everything when left out. */
  readonly filter?: StateDictFilter | undefined
}

const /** @internal */ PackPlanParams: Schema.Struct<{
  device: typeof Schema.String
  stateDictFilter: Wire<typeof StateDictFilter, "state_dict_filter">
}> = Schema.Struct({ device: Schema.String, stateDictFilter: wire(StateDictFilter, "state_dict_filter") })
const /** @internal */ ExportPackParams: Schema.Struct<{
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
const /** @internal */ ImportPackParams: Schema.Struct<{
  device: typeof Schema.String
  parameterPackPath: Wire<typeof Schema.String, "parameter_pack_path">
  stateDictFilter: Wire<typeof StateDictFilter, "state_dict_filter">
}> = Schema.Struct({
  device: Schema.String,
  parameterPackPath: wire(Schema.String, "parameter_pack_path"),
  stateDictFilter: wire(StateDictFilter, "state_dict_filter"),
})
const /** @internal */ InnerLoopParams: Schema.Struct<{
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

/**
 * The `Rpc` sending `Params` and answering `Result`, called with `Args` and giving `A`.
 *
 * @internal
 */
type RpcOf<
  Params extends Schema.Schema.Any,
  Result extends Schema.Schema.Any,
  // deno-lint-ignore no-explicit-any
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

const none = (): null => null
const same = <A>(result: A): A => result
const nothing = (): void => undefined
const mintedId = (result: { readonly modelId: string }, ids: ModelIds): string => ids.fromWire(result.modelId)
const metricsOf = (result: { readonly metrics: Metrics }): Metrics => result.metrics
const modelIdOf = (params: { readonly modelId: string }): string => params.modelId

/**
 * Every method, keyed by the client's camelCase name. Each entry is the one
 * declaration of its method: the service's method of the same name, its
 * types, the codecs and the README's method table all come from it.
 *
 * @since 0.1.0
 * @category models
 */
export const Rpcs: Rpcs = {
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
