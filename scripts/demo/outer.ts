/**
 * DiLoCo's outer step as the demo runs it, in TypeScript on the packs the
 * peers exported (`DiLoCo.aggregatePseudoGradients`, `DiLoCo.outerStep`,
 * `ParameterPack.read`/`write`), and the byzantine peer's forged update.
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as DiLoCo from "../../src/DiLoCo.ts"
import * as ParameterPack from "../../src/ParameterPack.ts"

export type Aggregation = "mean" | "median" | "sign"

export const AGGREGATIONS: ReadonlyArray<Aggregation> = ["mean", "median", "sign"]

export interface OuterSettings {
  readonly learningRate: number
  readonly momentum: number
  readonly nesterov: boolean
}

export const policyOf = (aggregation: Aggregation): DiLoCo.AggregationPolicy =>
  aggregation === "mean"
    ? new DiLoCo.Mean()
    : aggregation === "median"
    ? new DiLoCo.CoordinateMedian()
    : new DiLoCo.SignMajority({ minimumAgreement: 0, tieBreak: "Zero" })

/** How the policy is named in the reference (and in `DiLoCo`). */
export const policyName = (aggregation: Aggregation): string => policyOf(aggregation)._tag

export interface OuterRound {
  readonly next: string
  readonly state: DiLoCo.OuterOptimizerState
  /** Root mean square of the step's aggregated pseudo-gradient, before the outer learning rate. */
  readonly updateRms: number
}

const meanAbs = (values: Float32Array) => {
  let sum = 0
  for (let index = 0; index < values.length; index++) sum += Math.abs(values[index])
  return values.length === 0 ? 0 : sum / values.length
}

const rms = (values: Float32Array) => {
  let sum = 0
  for (let index = 0; index < values.length; index++) sum += values[index] * values[index]
  return values.length === 0 ? 0 : Math.sqrt(sum / values.length)
}

/**
 * One outer round: Δᵢ = θ − θᵢ aggregated per coordinate under the policy,
 * the outer SGD step, the next global pack written to `next`.
 *
 * `sign` votes give a step of ±1 per coordinate, far larger than any
 * pseudo-gradient; the vote is therefore scaled by the mean |Δ| of the
 * coordinate-wise median (itself robust to a minority of bad peers), so the
 * same outer learning rate serves every policy.
 */
export const outerRound = (options: {
  readonly base: string
  readonly locals: ReadonlyArray<string>
  readonly next: string
  readonly aggregation: Aggregation
  readonly outer: OuterSettings
  readonly state: DiLoCo.OuterOptimizerState
}): Effect.Effect<
  OuterRound,
  ParameterPack.ParameterPackError | DiLoCo.PackMismatchError,
  FileSystem.FileSystem | Path.Path
> =>
  Effect.gen(function* () {
    const base = yield* ParameterPack.read(options.base)
    const guard = { layoutHash: base.manifest.layoutHash }
    const locals = yield* Effect.forEach(options.locals, (path) => ParameterPack.read(path, guard))
    const update = yield* DiLoCo.aggregatePseudoGradients(base, locals, policyOf(options.aggregation))
    if (options.aggregation === "sign") {
      const median = yield* DiLoCo.aggregatePseudoGradients(base, locals, new DiLoCo.CoordinateMedian())
      const scale = meanAbs(median)
      for (let index = 0; index < update.length; index++) update[index] *= scale
    }
    const updateRms = rms(update)
    const optimizer = new DiLoCo.OuterOptimizer({
      learningRate: options.outer.learningRate,
      momentum: options.outer.momentum,
      nesterov: options.outer.nesterov,
      weightDecay: 0,
    })
    const { parameters, state } = yield* DiLoCo.outerStep(base.values, update, optimizer, options.state, {
      out: update,
    })
    yield* ParameterPack.write(
      options.next,
      ParameterPack.make(parameters, {
        modelSchemaHash: base.manifest.modelSchemaHash,
        layoutHash: base.manifest.layoutHash,
      }),
    )
    return { next: options.next, state, updateRms }
  })

/**
 * A byzantine peer's update: the pack at `local` is overwritten with
 * θ − scale·(θᵢ − θ), i.e. its pseudo-gradient flipped in sign and scaled by
 * `scale` (the honest model stays in the worker; only what is sent is forged).
 */
export const forgeUpdate = (options: {
  readonly base: string
  readonly local: string
  readonly output: string
  readonly scale: number
}): Effect.Effect<
  void,
  ParameterPack.ParameterPackError | DiLoCo.PackMismatchError,
  FileSystem.FileSystem | Path.Path
> =>
  Effect.gen(function* () {
    const base = yield* ParameterPack.read(options.base)
    const local = yield* ParameterPack.read(options.local, { layoutHash: base.manifest.layoutHash })
    yield* DiLoCo.checkCompatible(base, [local])
    const forged = new Float32Array(base.values.length)
    for (let index = 0; index < forged.length; index++) {
      forged[index] = base.values[index] - options.scale * (local.values[index] - base.values[index])
    }
    yield* ParameterPack.write(
      options.output,
      ParameterPack.make(forged, {
        modelSchemaHash: local.manifest.modelSchemaHash,
        layoutHash: local.manifest.layoutHash,
      }),
    )
  })
