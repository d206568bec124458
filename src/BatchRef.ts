/**
 * The batches of `trainWindow` and `runInnerLoop`: shard files on disk
 * (`CachedMicroshardGroup`) or a descriptor the workload turns into data
 * (`MicroEpoch`), told apart by `kind`.
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import { U32, U64, type Wire, wire } from "./internal/wire.ts"
import { JsonValue } from "./Messages.ts"

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
