/**
 * DiLoCo's outer optimiser: SGD with momentum, Nesterov and weight decay,
 * the state it carries between rounds, and one outer step.
 *
 * @since 0.2.0
 */
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as internal from "./internal/diloco.ts"
import { type ClassBase, type DefaultWire, defaultWire, type Wire, wire } from "./internal/wire.ts"
import type { PackMismatchError } from "./PackMismatchError.ts"

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
) => Effect.Effect<OuterStepResult, PackMismatchError> = internal.outerStep
