/**
 * Protocol 1's JSON shapes, apart from the batches (`BatchRef.ts`): JSON
 * values and metrics, `hello` and the capability probe, evaluation splits,
 * merge and reconcile policies, runtime patches and merge candidates. Each is
 * a Schema, camelCase in TypeScript and snake_case on the wire.
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import { type ClassBase, F64, U32, U64, type Wire, wire } from "./internal/wire.ts"

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
