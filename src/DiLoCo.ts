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
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as kernels from "./internal/aggregate.ts"
import {
  type ClassBase,
  type DefaultWire,
  defaultWire,
  type ErrorBase,
  type NoFields,
  quote,
  type TaggedClassBase,
  type Wire,
  wire,
} from "./internal/wire.ts"
import * as ParameterPack from "./ParameterPack.ts"

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

const /** @internal */ MeanBase: TaggedClassBase<Mean, "Mean", NoFields> = Schema.TaggedClass<Mean>()("Mean", {})
/**
 * The equal-weight average of the pseudo-gradients, summed in float64 in peer
 * order and rounded once to float32.
 *
 * @since 0.2.0
 * @category policies
 */
export class Mean extends MeanBase {}

const /** @internal */ CoordinateMedianBase: TaggedClassBase<CoordinateMedian, "CoordinateMedian", NoFields> = Schema
  .TaggedClass<
    CoordinateMedian
  >()("CoordinateMedian", {})
/**
 * The median per coordinate; for an even peer count, the mean of the two
 * middle values. Robust to a minority of bad peers. NaNs rank above +∞ (as
 * `Float32Array.prototype.sort` orders them), so a minority of NaNs does not
 * reach the result; a zero median is +0.
 *
 * @since 0.2.0
 * @category policies
 */
export class CoordinateMedian extends CoordinateMedianBase {}

/**
 * What `SignMajority` gives a coordinate where positives and negatives tie
 * for the most votes: 0, +1 or −1.
 *
 * @since 0.2.0
 * @category policies
 */
export const TieBreak: Schema.Literal<["Zero", "Positive", "Negative"]> = Schema.Literal("Zero", "Positive", "Negative")
/**
 * `"Zero" | "Positive" | "Negative"`.
 *
 * @since 0.2.0
 * @category policies
 */
export type TieBreak = typeof TieBreak.Type

const Share: Schema.filter<typeof Schema.Number> = Schema.Number.pipe(Schema.between(0, 1))

const /** @internal */ SignMajorityBase: TaggedClassBase<SignMajority, "SignMajority", {
  minimumAgreement: Wire<typeof Share, "minimum_agreement">
  tieBreak: Wire<typeof TieBreak, "tie_break">
}> = Schema.TaggedClass<SignMajority>()("SignMajority", {
  minimumAgreement: wire(Share, "minimum_agreement"),
  tieBreak: wire(TieBreak, "tie_break"),
})
/**
 * A vote per coordinate, with results in {−1, 0, +1}: count the positive,
 * negative and zero values; 0 if zeros hold or share the largest count; else,
 * if positives and negatives tie for it, `tieBreak` decides (+1, −1 or 0);
 * else the larger sign. A non-zero result whose votes are a share of the
 * peers below `minimumAgreement` (votes / peers < minimumAgreement) becomes 0.
 * A NaN votes for nothing but counts as a peer.
 *
 * @since 0.2.0
 * @category policies
 */
export class SignMajority extends SignMajorityBase {}

/**
 * The aggregation policies, tagged by `_tag`.
 *
 * @since 0.2.0
 * @category policies
 */
export const AggregationPolicy: Schema.Union<[typeof Mean, typeof CoordinateMedian, typeof SignMajority]> = Schema
  .Union(Mean, CoordinateMedian, SignMajority)
/**
 * `Mean | CoordinateMedian | SignMajority`.
 *
 * @since 0.2.0
 * @category policies
 */
export type AggregationPolicy = typeof AggregationPolicy.Type

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

const /** @internal */ PackMismatchErrorBase: ErrorBase<PackMismatchError, "PackMismatchError", {
  /** Which input: `"local pack 2 (/runs/r7/peer-2)"`, `"momentum"`, ... */
  subject: typeof Schema.String
  reason: Schema.Literal<["LayoutHash", "ParameterCount", "NoPeers"]>
  expected: Schema.optional<typeof Schema.String>
  actual: Schema.optional<typeof Schema.String>
}> = Schema.TaggedError<PackMismatchError>()("PackMismatchError", {
  subject: Schema.String,
  reason: Schema.Literal("LayoutHash", "ParameterCount", "NoPeers"),
  expected: Schema.optional(Schema.String),
  actual: Schema.optional(Schema.String),
})
/**
 * Inputs that cannot be combined: a local pack (or a buffer: momentum, an
 * output) whose layout hash or length differs from the base pack's, or no
 * peers at all. Nothing is computed.
 *
 * @since 0.2.0
 * @category errors
 */
export class PackMismatchError extends PackMismatchErrorBase {
  /** Names the input and what differs; hashes are quoted to a bounded prefix. */
  override get message(): string {
    switch (this.reason) {
      case "NoPeers":
        return "nothing to aggregate: no local packs were given"
      case "LayoutHash":
        return `${this.subject}: layout_hash ${quote(this.actual ?? "")} differs from the base pack's ${
          quote(this.expected ?? "")
        }`
      default:
        return `${this.subject} holds ${this.actual} values, the base pack ${this.expected}`
    }
  }
}

// ---------------------------------------------------------------------------
// Pseudo-gradients and aggregation
// ---------------------------------------------------------------------------

const label = (pack: ParameterPack.ParameterPack, index: number): string =>
  pack.path === undefined ? `local pack ${index}` : `local pack ${index} (${pack.path})`

const checkLength = (subject: string, length: number, expected: number): Effect.Effect<void, PackMismatchError> =>
  length === expected ? Effect.void : new PackMismatchError({
    subject,
    reason: "ParameterCount",
    expected: String(expected),
    actual: String(length),
  })

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
): Effect.Effect<void, PackMismatchError> =>
  Effect.suspend(() => {
    if (locals.length === 0) return new PackMismatchError({ subject: "local packs", reason: "NoPeers" })
    const count = base.values.length
    if (base.manifest.parameterCount !== count) {
      return checkLength("the base pack's values", count, base.manifest.parameterCount)
    }
    for (let index = 0; index < locals.length; index++) {
      const local = locals[index]
      if (local.manifest.layoutHash !== base.manifest.layoutHash) {
        return new PackMismatchError({
          subject: label(local, index),
          reason: "LayoutHash",
          expected: base.manifest.layoutHash,
          actual: local.manifest.layoutHash,
        })
      }
      const length = local.manifest.parameterCount !== count ? local.manifest.parameterCount : local.values.length
      if (length !== count) return checkLength(label(local, index), length, count)
    }
    return Effect.void
  })

/** Runs `body` over [0, n) in chunks, yielding to other fibers between them. */
const inChunks = (n: number, body: (start: number, end: number) => void): Effect.Effect<void> =>
  Effect.suspend(() => {
    const step = (start: number): Effect.Effect<void> => {
      const end = Math.min(n, start + kernels.CHUNK)
      body(start, end)
      return end >= n ? Effect.void : Effect.zipRight(Effect.yieldNow(), Effect.suspend(() => step(end)))
    }
    return n === 0 ? Effect.void : step(0)
  })

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
) => Effect.Effect<Array<Float32Array>, PackMismatchError> = Effect.fn("DiLoCo.pseudoGradients")(
  function* (base: ParameterPack.ParameterPack, locals: ReadonlyArray<ParameterPack.ParameterPack>) {
    yield* checkCompatible(base, locals)
    const deltas: Array<Float32Array> = []
    for (const local of locals) {
      const delta = new Float32Array(base.values.length)
      yield* inChunks(delta.length, (start, end) => kernels.subtractRange(base.values, local.values, delta, start, end))
      deltas.push(delta)
    }
    return deltas
  },
)

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

const TIE_VALUE: Record<TieBreak, kernels.TieValue> = { Zero: 0, Positive: 1, Negative: -1 }

const run = (
  base: Float32Array | undefined,
  inputs: ReadonlyArray<Float32Array>,
  policy: AggregationPolicy,
  out: Float32Array,
): Effect.Effect<Float32Array> => {
  const n = out.length
  switch (policy._tag) {
    case "Mean": {
      const acc = new Float64Array(kernels.MEAN_BLOCK)
      return Effect.as(inChunks(n, (start, end) => kernels.meanRange(base, inputs, out, start, end, acc)), out)
    }
    case "CoordinateMedian": {
      const scratch = new Float64Array(inputs.length)
      return Effect.as(inChunks(n, (start, end) => kernels.medianRange(base, inputs, out, start, end, scratch)), out)
    }
    case "SignMajority": {
      const tie = TIE_VALUE[policy.tieBreak]
      const agreement = policy.minimumAgreement
      const counters = kernels.makeSignCounters()
      return Effect.as(
        inChunks(n, (start, end) => kernels.signMajorityRange(base, inputs, out, start, end, agreement, tie, counters)),
        out,
      )
    }
  }
}

const outputFor = (options: AggregateOptions | undefined, n: number): Effect.Effect<Float32Array, PackMismatchError> =>
  options?.out === undefined
    ? Effect.sync(() => new Float32Array(n))
    : Effect.as(checkLength("the output buffer", options.out.length, n), options.out)

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
) => Effect.Effect<Float32Array, PackMismatchError> = Effect.fn("DiLoCo.aggregate")(
  function* (deltas: ReadonlyArray<Float32Array>, policy: AggregationPolicy, options?: AggregateOptions) {
    if (deltas.length === 0) return yield* new PackMismatchError({ subject: "pseudo-gradients", reason: "NoPeers" })
    const n = deltas[0].length
    for (let index = 1; index < deltas.length; index++) {
      yield* checkLength(`pseudo-gradient ${index}`, deltas[index].length, n)
    }
    const out = yield* outputFor(options, n)
    return yield* run(undefined, deltas, policy, out)
  },
)

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
) => Effect.Effect<Float32Array, PackMismatchError> = Effect.fn("DiLoCo.aggregatePseudoGradients")(
  function* (
    base: ParameterPack.ParameterPack,
    locals: ReadonlyArray<ParameterPack.ParameterPack>,
    policy: AggregationPolicy,
    options?: AggregateOptions,
  ) {
    yield* checkCompatible(base, locals)
    const out = yield* outputFor(options, base.values.length)
    return yield* run(base.values, locals.map((local) => local.values), policy, out)
  },
)

// ---------------------------------------------------------------------------
// Outer optimiser
// ---------------------------------------------------------------------------

const NonNegative: Schema.filter<typeof Schema.Number> = Schema.Number.pipe(Schema.nonNegative())

const /** @internal */ OuterOptimizerBase: ClassBase<OuterOptimizer, {
  learningRate: Wire<typeof NonNegative, "learning_rate">
  momentum: DefaultWire<typeof NonNegative, "momentum">
  nesterov: DefaultWire<typeof Schema.Boolean, "nesterov">
  weightDecay: DefaultWire<typeof NonNegative, "weight_decay">
}> = Schema.Class<OuterOptimizer>("OuterOptimizer")({
  learningRate: wire(NonNegative, "learning_rate"),
  momentum: defaultWire(NonNegative, "momentum", () => 0),
  nesterov: defaultWire(Schema.Boolean, "nesterov", () => false),
  weightDecay: defaultWire(NonNegative, "weight_decay", () => 0),
})
/**
 * The outer optimiser: SGD on the aggregated pseudo-gradient Δ̄, exactly as
 * `torch.optim.SGD(lr, momentum, nesterov=..., weight_decay=...)` steps when
 * Δ̄ is the parameters' `.grad` (dampening 0), which is how DiLoCo
 * implementations run their outer step:
 *
 * - g = Δ̄ + weightDecay · θ: weight decay is **coupled** (L2, added to the
 *   gradient, so it passes through momentum), as torch's SGD applies it.
 *   Chosen so that a run can switch between this owner-side step and a torch
 *   outer optimiser without changing its hyperparameters. (Decoupled decay,
 *   θ ← θ − lr·wd·θ, would differ once μ > 0.)
 * - momentum μ > 0: v ← μ·v + g (v starts at 0, so the first v is g), and
 *   step = g + μ·v with `nesterov`, else v. With μ = 0, step = g and no
 *   state is kept (`nesterov` is then moot).
 * - θ ← θ − learningRate · step. learningRate 1, μ 0, no decay, with `Mean`:
 *   plain model averaging. DiLoCo's paper: learningRate 0.7, μ 0.9, Nesterov.
 *
 * Per coordinate the arithmetic is float64; θ and v are rounded to float32
 * when stored, and the Nesterov step uses v as stored.
 *
 * @since 0.2.0
 * @category outer optimizer
 */
export class OuterOptimizer extends OuterOptimizerBase {}

/**
 * What the outer optimiser carries from one round to the next: the momentum
 * buffer (absent until the first step with μ > 0) and the rounds taken. A
 * plain value the caller keeps (and may persist, e.g. as a pack).
 *
 * @since 0.2.0
 * @category outer optimizer
 */
export interface OuterOptimizerState {
  /** Outer steps taken so far. */
  readonly round: number
  /** The momentum buffer v, `parameterCount` long; undefined before the first step with μ > 0. */
  readonly velocity: Float32Array | undefined
}

/**
 * The state before the first round.
 *
 * @since 0.2.0
 * @category outer optimizer
 */
export const initialState: OuterOptimizerState = { round: 0, velocity: undefined }

/**
 * Where `outerStep` writes.
 *
 * @since 0.2.0
 * @category outer optimizer
 */
export interface OuterStepOptions {
  /** Where θ' goes, `parameterCount` long; may be `theta` or `update` itself (in place). Allocated when absent. */
  readonly out?: Float32Array | undefined
}

/**
 * What `outerStep` gives back.
 *
 * @since 0.2.0
 * @category outer optimizer
 */
export interface OuterStepResult {
  /** θ', the next global parameters. */
  readonly parameters: Float32Array
  /** The state to pass to the next round's step. */
  readonly state: OuterOptimizerState
}

/**
 * One outer step: θ' from θ (`theta`) and the aggregated pseudo-gradient
 * (`update`), per `OuterOptimizer`. The returned state's velocity is the
 * given state's buffer updated in place (allocated on the first step with
 * μ > 0): keep the returned state, not the old one.
 *
 * @since 0.2.0
 * @category outer optimizer
 */
export const outerStep: (
  theta: Float32Array,
  update: Float32Array,
  optimizer: OuterOptimizer,
  state: OuterOptimizerState,
  options?: OuterStepOptions,
) => Effect.Effect<OuterStepResult, PackMismatchError> = Effect.fn("DiLoCo.outerStep")(
  function* (
    theta: Float32Array,
    update: Float32Array,
    optimizer: OuterOptimizer,
    state: OuterOptimizerState,
    options?: OuterStepOptions,
  ) {
    const n = theta.length
    yield* checkLength("the aggregated update", update.length, n)
    if (state.velocity !== undefined) yield* checkLength("the momentum buffer", state.velocity.length, n)
    const out = options?.out ?? new Float32Array(n)
    yield* checkLength("the output buffer", out.length, n)
    const velocity = optimizer.momentum === 0 ? undefined : (state.velocity ?? new Float32Array(n))
    const { learningRate, momentum, nesterov, weightDecay } = optimizer
    yield* inChunks(
      n,
      (start, end) =>
        kernels.outerStepRange(
          theta,
          update,
          out,
          velocity,
          learningRate,
          momentum,
          nesterov,
          weightDecay,
          start,
          end,
        ),
    )
    return { parameters: out, state: { round: state.round + 1, velocity: velocity ?? state.velocity } }
  },
)

// ---------------------------------------------------------------------------
// A whole round
// ---------------------------------------------------------------------------

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
> = Effect.fn("DiLoCo.round")(function* (options: RoundOptions) {
  const guard = { layout: options.layout, layoutHash: options.layoutHash }
  const base = yield* ParameterPack.read(options.base, guard)
  const locals = yield* Effect.forEach(options.locals, (path) => ParameterPack.read(path, guard))
  const update = yield* aggregatePseudoGradients(base, locals, options.policy)
  const { parameters, state } = yield* outerStep(base.values, update, options.optimizer, options.state, {
    out: update,
  })
  const next = ParameterPack.make(parameters, {
    modelSchemaHash: base.manifest.modelSchemaHash,
    layoutHash: base.manifest.layoutHash,
  })
  yield* ParameterPack.write(options.output, next)
  return { next: { ...next, path: options.output }, state }
})
