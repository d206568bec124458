/**
 * DiLoCo's outer step, done by the owner (PROTOCOL.md, protocol 2): from the
 * global parameters θ and the peers' local θᵢ, form pseudo-gradients
 * Δᵢ = θ − θᵢ, aggregate them per coordinate (`Mean`, `CoordinateMedian`,
 * `SignMajority`), apply an outer SGD step (learning rate, momentum,
 * Nesterov, weight decay) and write the next global pack.
 *
 * Everything runs on Float32Arrays, into preallocated outputs, in chunks of
 * 2^20 coordinates with a yield to other fibers between them (so a long
 * aggregation can be interrupted).
 *
 * @since 0.2.0
 * @module
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import type * as Effect from "effect/Effect"
import type { AggregationPolicy } from "./AggregationPolicy.ts"
import * as internal from "./internal/diloco.ts"
import type { OuterOptimizer, OuterOptimizerState } from "./OuterOptimizer.ts"
import type { PackMismatchError } from "./PackMismatchError.ts"
import type * as ParameterPack from "./ParameterPack.ts"

export * from "./AggregationPolicy.ts"
export * from "./OuterOptimizer.ts"
export * from "./PackMismatchError.ts"

/**
 * Refuses local packs that cannot be subtracted from `base`: another layout
 * hash, or another parameter count (of the manifest or of the values). The
 * error names the first such pack.
 *
 * @since 0.2.0
 * @category pseudo-gradients
 */
export const checkCompatible = (
  base: ParameterPack.ParameterPack,
  locals: ReadonlyArray<ParameterPack.ParameterPack>,
): Effect.Effect<void, PackMismatchError> => internal.checkCompatible(base, locals)

/**
 * The pseudo-gradients Δᵢ = θ − θᵢ (float32 subtraction), one new array per
 * local pack. `aggregatePseudoGradients` does not need them materialised.
 *
 * @since 0.2.0
 * @category pseudo-gradients
 */
export const pseudoGradients: (
  base: ParameterPack.ParameterPack,
  locals: ReadonlyArray<ParameterPack.ParameterPack>,
) => Effect.Effect<Array<Float32Array>, PackMismatchError> = internal.pseudoGradients

/**
 * Where an aggregation writes.
 *
 * @since 0.2.0
 * @category aggregation
 */
export interface AggregateOptions {
  /**
   * A preallocated output, `parameterCount` long; allocated when absent. It may
   * be one of the inputs (in place): every kernel reads a coordinate's inputs
   * before it writes that coordinate.
   */
  readonly out?: Float32Array | undefined
}

/**
 * Aggregates pseudo-gradients already formed (all of one length) per
 * coordinate under `policy`.
 *
 * @since 0.2.0
 * @category aggregation
 */
export const aggregate: (
  deltas: ReadonlyArray<Float32Array>,
  policy: AggregationPolicy,
  options?: AggregateOptions,
) => Effect.Effect<Float32Array, PackMismatchError> = internal.aggregate

/**
 * Aggregates the pseudo-gradients θ − θᵢ of `locals` against `base` without
 * materialising them: each Δᵢ[j] is formed (float32 subtraction, the same
 * value `pseudoGradients` holds) as the coordinate is aggregated. Same result
 * as `aggregate(pseudoGradients(base, locals), policy)`, with no memory per peer.
 *
 * @since 0.2.0
 * @category aggregation
 */
export const aggregatePseudoGradients: (
  base: ParameterPack.ParameterPack,
  locals: ReadonlyArray<ParameterPack.ParameterPack>,
  policy: AggregationPolicy,
  options?: AggregateOptions,
) => Effect.Effect<Float32Array, PackMismatchError> = internal.aggregatePseudoGradients

/**
 * The inputs of `round`.
 *
 * @since 0.2.0
 * @category rounds
 */
export interface RoundOptions {
  /** The global pack θ every peer started from. */
  readonly base: string
  /** The peers' exported packs θᵢ. */
  readonly locals: ReadonlyArray<string>
  /** Where the next global pack goes (a folder, created if missing). */
  readonly output: string
  /** How the pseudo-gradients are combined. */
  readonly policy: AggregationPolicy
  /** The outer SGD's hyperparameters. */
  readonly optimizer: OuterOptimizer
  /** The state the previous round returned (`initialState` on the first). */
  readonly state: OuterOptimizerState
  /** The model's layout, whose hash every pack must carry; else the base pack's hash is the guard. */
  readonly layout?: ReadonlyArray<ParameterPack.TensorLayoutLike> | undefined
  /** The model's layout hash, when the layout itself is not at hand. */
  readonly layoutHash?: string | undefined
}

/**
 * What `round` gives back.
 *
 * @since 0.2.0
 * @category rounds
 */
export interface RoundResult {
  /** The next global pack, as written (manifest with the five owner fields only). */
  readonly next: ParameterPack.ParameterPack
  /** The state to keep for the next round. */
  readonly state: OuterOptimizerState
}

/**
 * One DiLoCo outer round from files: read and check the base and local packs,
 * aggregate their pseudo-gradients (not materialised), take the outer step
 * into the aggregate's buffer, and write the next global pack (manifest:
 * `format`, `model_schema_hash`, `layout_hash`, `parameter_count`,
 * `values_f32_le`, as the reference owner writes it). Memory: the base, the
 * locals, one output and the momentum buffer.
 *
 * @example
 * ```ts
 * import { NodeContext } from "@effect/platform-node"
 * import { Effect } from "effect"
 * import { DiLoCo } from "@burn-p2p/python-worker"
 *
 * // DiLoCo's outer optimiser: Nesterov momentum 0.9, learning rate 0.7, over the mean pseudo-gradient.
 * const optimizer = new DiLoCo.OuterOptimizer({ learningRate: 0.7, momentum: 0.9, nesterov: true, weightDecay: 0 })
 * const program = Effect.gen(function* () {
 *   let state = DiLoCo.initialState
 *   for (let round = 1; round <= 3; round++) {
 *     // ... each peer runs `runInnerLoop` from global-(round-1) and exports runs/round-N/peer-I ...
 *     const result = yield* DiLoCo.round({
 *       base: `/runs/global-${round - 1}`,
 *       locals: [0, 1, 2, 3].map((peer) => `/runs/round-${round}/peer-${peer}`),
 *       output: `/runs/global-${round}`,
 *       policy: new DiLoCo.Mean(),
 *       optimizer,
 *       state,
 *     })
 *     state = result.state
 *   }
 * }).pipe(Effect.provide(NodeContext.layer))
 * ```
 *
 * @since 0.2.0
 * @category rounds
 */
export const round: (
  options: RoundOptions,
) => Effect.Effect<
  RoundResult,
  ParameterPack.ParameterPackError | PackMismatchError,
  FileSystem.FileSystem | Path.Path
> = internal.round
