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
import * as Schema from "effect/Schema"

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 1

const wire = <S extends Schema.Schema.All, const Key extends string>(schema: S, key: Key) =>
  Schema.propertySignature(schema).pipe(Schema.fromKey(key))

const U32 = Schema.Int.pipe(Schema.between(0, 0xffff_ffff))
const U64 = Schema.NonNegativeInt
/** JSON has no NaN or Infinity. */
const F64 = Schema.JsonNumber

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
export const MetricValue = Schema.Union(F64, Schema.Boolean, Schema.String).annotations({ identifier: "MetricValue" })

/**
 * @since 0.1.0
 * @category models
 */
export const Metrics = Schema.Record({ key: Schema.String, value: MetricValue }).annotations({ identifier: "Metrics" })
/**
 * @since 0.1.0
 * @category models
 */
export type Metrics = typeof Metrics.Type

/**
 * @since 0.1.0
 * @category models
 */
export class CapabilityEstimate extends Schema.Class<CapabilityEstimate>("CapabilityEstimate")({
  preferredBackends: wire(Schema.Array(Schema.String), "preferred_backends"),
  workUnitsPerSecond: wire(F64, "work_units_per_second"),
  targetWindowSeconds: wire(U64, "target_window_seconds"),
}) {}

/**
 * @since 0.1.0
 * @category models
 */
export class Hello extends Schema.Class<Hello>("Hello")({
  protocolVersion: wire(U32, "protocol_version"),
  workloadName: wire(Schema.String, "workload_name"),
  /** Sent by protocol 2 workers only. */
  capabilities: Schema.optional(Schema.Array(Schema.String)),
}) {}

/**
 * @since 0.1.0
 * @category models
 */
export class CapabilityProbe extends Schema.Class<CapabilityProbe>("CapabilityProbe")({
  runtimeDevice: wire(Schema.String, "runtime_device"),
  capability: CapabilityEstimate,
}) {}

/**
 * `"Train" | "Validation" | "Test" | { Custom: name }`.
 *
 * @since 0.1.0
 * @category models
 */
export const EvalSplit = Schema.Union(
  Schema.Literal("Train", "Validation", "Test"),
  Schema.Struct({ Custom: Schema.String }),
).annotations({ identifier: "EvalSplit" })
/**
 * @since 0.1.0
 * @category models
 */
export type EvalSplit = typeof EvalSplit.Type

/**
 * @since 0.1.0
 * @category models
 */
export const MergePolicy = Schema.Union(
  Schema.Literal("WeightedMean", "NormClippedWeightedMean", "TrimmedMean", "Ema", "QualityWeightedEma"),
  Schema.Struct({ Custom: Schema.String }),
).annotations({ identifier: "MergePolicy" })
/**
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
export const ReconcileStrategy = Schema.Union(
  Schema.Literal("Replace"),
  Schema.Struct({
    RootEma: Schema.Struct({ canonicalWeight: wire(F64.pipe(Schema.between(0, 1)), "canonical_weight") }),
  }),
).annotations({ identifier: "ReconcileStrategy" })
/**
 * @since 0.1.0
 * @category models
 */
export type ReconcileStrategy = typeof ReconcileStrategy.Type

/**
 * @since 0.1.0
 * @category models
 */
export const PatchOutcome = Schema.Union(
  Schema.Literal("Applied", "RequiresRestart"),
  Schema.Struct({ Rejected: Schema.String }),
).annotations({ identifier: "PatchOutcome" })
/**
 * @since 0.1.0
 * @category models
 */
export type PatchOutcome = typeof PatchOutcome.Type

/**
 * @since 0.1.0
 * @category models
 */
export const PatchValue = Schema.Union(
  Schema.Boolean,
  F64,
  Schema.String,
  Schema.Array(Schema.String),
).annotations({ identifier: "PatchValue" })

/**
 * @since 0.1.0
 * @category models
 */
export const RuntimePatch = Schema.Struct({
  patchId: wire(Schema.String, "patch_id"),
  class: Schema.Literal("Hot", "Warm", "Cold"),
  summary: Schema.String,
  values: Schema.Record({ key: Schema.String, value: PatchValue }),
  requiredClientCapabilities: wire(Schema.Array(Schema.String), "required_client_capabilities"),
}).annotations({ identifier: "RuntimePatch" })
/**
 * @since 0.1.0
 * @category models
 */
export type RuntimePatch = typeof RuntimePatch.Type

/**
 * @since 0.1.0
 * @category models
 */
export const MergeCandidate = Schema.Struct({
  peerId: wire(Schema.String, "peer_id"),
  headId: wire(Schema.String, "head_id"),
  artifactId: wire(Schema.String, "artifact_id"),
  modelId: wire(Schema.String, "model_id"),
  sampleWeight: wire(F64, "sample_weight"),
  qualityWeight: wire(F64, "quality_weight"),
}).annotations({ identifier: "MergeCandidate" })
/**
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
export const CachedMicroshardGroup = Schema.Struct({
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
export const MicroEpoch = Schema.Struct({
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
 * @since 0.1.0
 * @category models
 */
export const BatchRef = Schema.Union(CachedMicroshardGroup, MicroEpoch).annotations({ identifier: "BatchRef" })
/**
 * @since 0.1.0
 * @category models
 */
export type BatchRef = typeof BatchRef.Type

const ModelHandle = Schema.Struct({ modelId: wire(Schema.String, "model_id") })
/** serde reads a missing `model_id` as None, so absent is null too. */
const OptionalModelHandle = Schema.Struct({
  modelId: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }).pipe(Schema.fromKey("model_id")),
})
const MetricsResult = Schema.Struct({ metrics: Metrics })
/** Acks are `{}` (extra fields ignored); a missing result reads as null, which is accepted too. */
const Ack = Schema.transform(
  Schema.Union(Schema.Null, Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  Schema.Void,
  { strict: true, decode: () => undefined, encode: () => ({}) },
)
const ModelRef = Schema.Struct({ modelId: wire(Schema.String, "model_id") })
const ArtifactParams = Schema.Struct({
  modelId: wire(Schema.String, "model_id"),
  artifactPath: wire(Schema.String, "artifact_path"),
})

/**
 * One RPC: its wire name, what it sends and what it answers.
 *
 * @since 0.1.0
 * @category models
 */
export interface Rpc<P, PI, R, RI> {
  readonly method: string
  readonly params: Schema.Schema<P, PI>
  readonly result: Schema.Schema<R, RI>
  readonly doc: string
}

const rpc = <P, PI, R, RI>(
  method: string,
  params: Schema.Schema<P, PI>,
  result: Schema.Schema<R, RI>,
  doc: string,
): Rpc<P, PI, R, RI> => ({ method, params, result, doc })

/**
 * Every method of protocol 1, keyed by the client's camelCase name.
 *
 * @since 0.1.0
 * @category models
 */
export const Rpcs = {
  hello: rpc("hello", Schema.Null, Hello, "protocol version and workload name; the client requires version 1"),
  capabilityProbe: rpc(
    "capability_probe",
    Schema.Null,
    CapabilityProbe,
    "the device the workload runs on and its measured throughput",
  ),
  initModel: rpc("init_model", Schema.Struct({ device: Schema.String }), ModelHandle, "a new model; its id"),
  trainWindow: rpc(
    "train_window",
    Schema.Struct({ modelId: wire(Schema.String, "model_id"), batches: Schema.Array(BatchRef) }),
    MetricsResult,
    "trains the model on the batches; training metrics",
  ),
  evaluate: rpc(
    "evaluate",
    Schema.Struct({ modelId: wire(Schema.String, "model_id"), split: EvalSplit }),
    MetricsResult,
    "evaluates the model on a split; metrics",
  ),
  applyPatch: rpc(
    "apply_patch",
    RuntimePatch,
    PatchOutcome,
    "applies a runtime patch (the patch object is the params)",
  ),
  loadModelArtifact: rpc(
    "load_model_artifact",
    ArtifactParams,
    Ack,
    "replaces the model's weights with the artifact file's",
  ),
  materializeModelArtifact: rpc(
    "materialize_model_artifact",
    ArtifactParams,
    Ack,
    "writes the model's weights to an artifact file",
  ),
  mergeCandidateModels: rpc(
    "merge_candidate_models",
    Schema.Struct({
      baseModelId: wire(Schema.String, "base_model_id"),
      candidates: Schema.Array(MergeCandidate),
      policy: MergePolicy,
    }),
    OptionalModelHandle,
    "merges candidate models into a new model, or none",
  ),
  applySingleRootEma: rpc(
    "apply_single_root_ema",
    Schema.Struct({
      baseModelId: wire(Schema.String, "base_model_id"),
      mergedModelId: wire(Schema.String, "merged_model_id"),
      policy: MergePolicy,
    }),
    ModelHandle,
    "moves the merged model toward the base (updated in place); the merged id",
  ),
  reconcileCanonicalModel: rpc(
    "reconcile_canonical_model",
    Schema.Struct({
      localModelId: wire(Schema.String, "local_model_id"),
      canonicalModelId: wire(Schema.String, "canonical_model_id"),
      strategy: ReconcileStrategy,
    }),
    ModelHandle,
    "reconciles the canonical model with the local one (updated in place); the canonical id",
  ),
  releaseModel: rpc("release_model", ModelRef, Ack, "frees the model; an unknown id is not an error"),
  shutdown: rpc("shutdown", Schema.Null, Ack, "the worker answers, then exits (sent by the layer on release)"),
} as const

/**
 * @since 0.1.0
 * @category models
 */
export type Rpcs = typeof Rpcs
