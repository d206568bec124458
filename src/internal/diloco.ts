/**
 * DiLoCo's outer step over Float32Arrays: the checks, the chunked loops over
 * the kernels of `aggregate.ts`, and a round from files.
 *
 * @internal
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import type { AggregationPolicy, TieBreak } from "../AggregationPolicy.ts"
import type { AggregateOptions, RoundOptions, RoundResult } from "../DiLoCo.ts"
import type { OuterOptimizer, OuterOptimizerState, OuterStepOptions, OuterStepResult } from "../OuterOptimizer.ts"
import { PackMismatchError } from "../PackMismatchError.ts"
import * as ParameterPack from "../ParameterPack.ts"
import * as kernels from "./aggregate.ts"

const label = (pack: ParameterPack.ParameterPack, index: number): string =>
  pack.path === undefined ? `local pack ${index}` : `local pack ${index} (${pack.path})`

const checkLength = (subject: string, length: number, expected: number): Effect.Effect<void, PackMismatchError> =>
  length === expected ? Effect.void : new PackMismatchError({
    subject,
    reason: "ParameterCount",
    expected: String(expected),
    actual: String(length),
  })

/** @internal */
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

/** @internal */
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

/** @internal */
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

/** @internal */
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

/** @internal */
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

/** @internal */
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
