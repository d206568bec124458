import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fc from "effect/FastCheck"
import * as Schema from "effect/Schema"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import * as DiLoCo from "../src/DiLoCo.ts"
import * as ParameterPack from "../src/ParameterPack.ts"

// ---------------------------------------------------------------------------
// Naive references: plain number arrays, a fresh sort per coordinate, the spec's words.
// ---------------------------------------------------------------------------

const column = (deltas: ReadonlyArray<ArrayLike<number>>, j: number): Array<number> => deltas.map((d) => d[j])

const naiveMean = (deltas: ReadonlyArray<ArrayLike<number>>, n: number): Array<number> =>
  Array.from({ length: n }, (_, j) => Math.fround(column(deltas, j).reduce((sum, x) => sum + x, 0) / deltas.length))

const naiveMedian = (deltas: ReadonlyArray<ArrayLike<number>>, n: number): Array<number> =>
  Array.from({ length: n }, (_, j) => {
    const sorted = Float32Array.from(column(deltas, j)).sort() // NaN last
    const k = sorted.length
    return k % 2 === 1 ? sorted[(k - 1) / 2] : Math.fround((sorted[k / 2 - 1] + sorted[k / 2]) / 2)
  })

const naiveSign = (
  deltas: ReadonlyArray<ArrayLike<number>>,
  n: number,
  policy: { minimumAgreement: number; tieBreak: DiLoCo.TieBreak },
): Array<number> =>
  Array.from({ length: n }, (_, j) => {
    const values = column(deltas, j)
    const positive = values.filter((x) => x > 0).length
    const negative = values.filter((x) => x < 0).length
    const zero = values.filter((x) => x === 0).length
    const largest = Math.max(positive, negative, zero)
    let result: number
    if (zero === largest) result = 0
    else if (positive === negative) result = { Zero: 0, Positive: 1, Negative: -1 }[policy.tieBreak]
    else result = positive > negative ? 1 : -1
    const votes = result > 0 ? positive : negative
    return result !== 0 && votes / values.length < policy.minimumAgreement ? 0 : result
  })

const naive = (policy: DiLoCo.AggregationPolicy, deltas: ReadonlyArray<ArrayLike<number>>, n: number) =>
  policy._tag === "Mean"
    ? naiveMean(deltas, n)
    : policy._tag === "CoordinateMedian"
    ? naiveMedian(deltas, n)
    : naiveSign(deltas, n, policy)

/** Equal as numbers, NaN equal to NaN, -0 equal to +0 (the sign of a zero aggregate is not specified). */
const sameValues = (actual: ArrayLike<number>, expected: ArrayLike<number>) => {
  const norm = (x: number) => Number.isNaN(x) ? "NaN" : x === 0 ? 0 : x
  expect(Array.from(actual, norm)).toEqual(Array.from(expected, norm))
}

// ---------------------------------------------------------------------------
// Arbitraries
// ---------------------------------------------------------------------------

/** Float32 values with many ties and zeros: a few small integers, ±0, a rare NaN or infinity, and any float. */
const valueArb = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: -3, max: 3 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, -0, 0.5, -0.5) },
  { weight: 1, arbitrary: fc.constantFrom(NaN, Infinity, -Infinity) },
  { weight: 3, arbitrary: fc.float({ noNaN: true }) },
)

/** k peers x n coordinates; k up to 40 so that both the insertion sort (k <= 24) and quickselect run. */
const peersArb = fc.record({
  k: fc.oneof(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 10, max: 40 })),
  n: fc.integer({ min: 1, max: 24 }),
}).chain(({ k, n }) =>
  fc.record({
    base: fc.array(valueArb, { minLength: n, maxLength: n }).map((v) => Float32Array.from(v)),
    locals: fc.array(fc.array(valueArb, { minLength: n, maxLength: n }).map((v) => Float32Array.from(v)), {
      minLength: k,
      maxLength: k,
    }),
  })
)

const policyArb: fc.Arbitrary<DiLoCo.AggregationPolicy> = fc.oneof(
  fc.constant(new DiLoCo.Mean()),
  fc.constant(new DiLoCo.CoordinateMedian()),
  fc.record({
    minimumAgreement: fc.oneof(fc.constantFrom(0, 0.5, 1, 1 / 3, 2 / 3), fc.double({ min: 0, max: 1, noNaN: true })),
    tieBreak: fc.constantFrom("Zero" as const, "Positive" as const, "Negative" as const),
  }).map((fields) => new DiLoCo.SignMajority(fields)),
)

const HASH = "torch-layout-test"
const pack = (values: Float32Array, layoutHash = HASH, path?: string): ParameterPack.ParameterPack => ({
  ...ParameterPack.make(values, { modelSchemaHash: "s", layoutHash }),
  path,
})

// ---------------------------------------------------------------------------

describe("aggregation", () => {
  it.effect.prop(
    "each policy equals its naive definition, from packs (fused) and from pseudo-gradients",
    [peersArb, policyArb],
    ([{ base, locals }, policy]) =>
      Effect.gen(function* () {
        const n = base.length
        const deltas = locals.map((local) => Array.from(local, (x, j) => Math.fround(base[j] - x)))
        const expected = naive(policy, deltas, n)

        const fused = yield* DiLoCo.aggregatePseudoGradients(pack(base), locals.map((l) => pack(l)), policy)
        sameValues(fused, expected)

        const materialised = yield* DiLoCo.pseudoGradients(pack(base), locals.map((l) => pack(l)))
        sameValues(materialised.flatMap((d) => [...d]), deltas.flat())
        const given = yield* DiLoCo.aggregate(materialised, policy)
        sameValues(given, expected)

        // In place: the output may be one of the inputs.
        const inPlace = yield* DiLoCo.aggregate(materialised, policy, { out: materialised[0] })
        expect(inPlace).toBe(materialised[0])
        sameValues(inPlace, expected)
      }),
    { fastCheck: { numRuns: 400 } },
  )

  it.effect("worked examples from PROTOCOL.md", () =>
    Effect.gen(function* () {
      const deltas = (...columns: Array<Array<number>>) =>
        columns[0].map((_, i) => Float32Array.from(columns.map((c) => c[i])))
      const run = (policy: DiLoCo.AggregationPolicy, ...columns: Array<Array<number>>) =>
        Effect.map(DiLoCo.aggregate(deltas(...columns), policy), (out) => [...out])
      expect(yield* run(new DiLoCo.Mean(), [1, 2, 3, 6])).toEqual([3])
      expect(yield* run(new DiLoCo.CoordinateMedian(), [5, 1, 100])).toEqual([5])
      expect(yield* run(new DiLoCo.CoordinateMedian(), [4, 1, 2, 100])).toEqual([3])
      const sign = (minimumAgreement: number, tieBreak: DiLoCo.TieBreak) =>
        new DiLoCo.SignMajority({ minimumAgreement, tieBreak })
      // Zeros share the largest count: 0. Plus wins: +1. Minus wins: -1.
      expect(yield* run(sign(0, "Positive"), [0, 0, 1, 1], [1, 1, -1], [-2, -1, 3])).toEqual([0, 1, -1])
      // Positives and negatives tie for the most votes: the tie break decides.
      expect(yield* run(sign(0, "Positive"), [1, -1, 2, -2, 0])).toEqual([1])
      expect(yield* run(sign(0, "Negative"), [1, -1, 2, -2, 0])).toEqual([-1])
      expect(yield* run(sign(0, "Zero"), [1, -1, 2, -2, 0])).toEqual([0])
      // One of each: zeros share the largest count, so 0 whatever the tie break.
      expect(yield* run(sign(0, "Positive"), [1, -1, 0])).toEqual([0])
      // 2 of 3 agree: kept at 2/3, dropped above it.
      expect(yield* run(sign(2 / 3, "Zero"), [1, 1, -1])).toEqual([1])
      expect(yield* run(sign(0.7, "Zero"), [1, 1, -1])).toEqual([0])
    }))

  it.effect("policies decode from the wire with snake_case fields", () =>
    Effect.gen(function* () {
      const decode = Schema.decodeUnknown(DiLoCo.AggregationPolicy)
      const policy = yield* decode({ _tag: "SignMajority", minimum_agreement: 0.6, tie_break: "Negative" })
      expect(policy).toEqual(new DiLoCo.SignMajority({ minimumAgreement: 0.6, tieBreak: "Negative" }))
      expect(Schema.encodeSync(DiLoCo.AggregationPolicy)(policy)).toEqual({
        _tag: "SignMajority",
        minimum_agreement: 0.6,
        tie_break: "Negative",
      })
      expect(yield* decode({ _tag: "Mean" })).toEqual(new DiLoCo.Mean())
      yield* Effect.flip(decode({ _tag: "SignMajority", minimum_agreement: 1.5, tie_break: "Zero" }))
      yield* Effect.flip(decode({ _tag: "TrimmedMean" }))
    }))

  it.effect("refuses inputs that do not fit, naming which", () =>
    Effect.gen(function* () {
      const base = pack(Float32Array.of(1, 2, 3))
      const ok = pack(Float32Array.of(1, 2, 3))
      const mean = new DiLoCo.Mean()

      const none = yield* Effect.flip(DiLoCo.aggregatePseudoGradients(base, [], mean))
      expect(none.reason).toBe("NoPeers")
      expect((yield* Effect.flip(DiLoCo.aggregate([], mean))).reason).toBe("NoPeers")

      const otherLayout = pack(Float32Array.of(1, 2, 3), "torch-layout-other", "/runs/peer-1")
      const hash = yield* Effect.flip(DiLoCo.pseudoGradients(base, [ok, otherLayout]))
      expect(hash.reason).toBe("LayoutHash")
      expect(hash.subject).toBe("local pack 1 (/runs/peer-1)")
      expect(hash.message).toContain(`"torch-layout-other"`)
      expect(hash.message).toContain(`"${HASH}"`)

      const shorter = pack(Float32Array.of(1, 2))
      const count = yield* Effect.flip(DiLoCo.aggregatePseudoGradients(base, [ok, ok, shorter], mean))
      expect(count.reason).toBe("ParameterCount")
      expect(count.message).toBe("local pack 2 holds 2 values, the base pack 3")

      const lying = { ...ok, values: Float32Array.of(1, 2) } // manifest says 3
      expect((yield* Effect.flip(DiLoCo.aggregatePseudoGradients(base, [lying], mean))).subject).toBe("local pack 0")

      const ragged = yield* Effect.flip(DiLoCo.aggregate([Float32Array.of(1, 2), Float32Array.of(1)], mean))
      expect(ragged.subject).toBe("pseudo-gradient 1")

      const out = yield* Effect.flip(DiLoCo.aggregate([Float32Array.of(1, 2)], mean, { out: new Float32Array(3) }))
      expect(out.subject).toBe("the output buffer")
    }))
})

// ---------------------------------------------------------------------------

/** The outer step from its formula, float64 arithmetic with θ and v kept in float32. */
const naiveOuter = (
  theta: Array<number>,
  velocity: Array<number>,
  update: ArrayLike<number>,
  o: { learningRate: number; momentum: number; nesterov: boolean; weightDecay: number },
) => {
  for (let j = 0; j < theta.length; j++) {
    const g = update[j] + o.weightDecay * theta[j]
    let step = g
    if (o.momentum !== 0) {
      velocity[j] = Math.fround(o.momentum * velocity[j] + g)
      step = o.nesterov ? g + o.momentum * velocity[j] : velocity[j]
    }
    theta[j] = Math.fround(theta[j] - o.learningRate * step)
  }
}

const optimizerArb = fc.record({
  learningRate: fc.oneof(fc.constantFrom(1, 0.7), fc.double({ min: 0, max: 2, noNaN: true })),
  momentum: fc.oneof(fc.constantFrom(0, 0.9), fc.double({ min: 0, max: 0.99, noNaN: true })),
  nesterov: fc.boolean(),
  weightDecay: fc.oneof(fc.constant(0), fc.double({ min: 0, max: 0.1, noNaN: true })),
})

describe("outer optimiser", () => {
  it.effect.prop(
    "several rounds follow v ← μ·v + g, step = g + μ·v (Nesterov) or v, θ ← θ − lr·step, g = Δ̄ + wd·θ",
    [
      optimizerArb,
      fc.integer({ min: 1, max: 16 }).chain((n) =>
        fc.array(
          fc.array(fc.float({ noNaN: true, noDefaultInfinity: true, min: -10, max: 10 }), {
            minLength: n,
            maxLength: n,
          }),
          {
            minLength: 2,
            maxLength: 6,
          },
        )
      ),
    ],
    ([fields, rounds]) =>
      Effect.gen(function* () {
        const optimizer = new DiLoCo.OuterOptimizer(fields)
        const [start, ...updates] = rounds
        const expectedTheta = [...start]
        const expectedVelocity = start.map(() => 0)
        let theta: Float32Array = Float32Array.from(start)
        let state = DiLoCo.initialState
        for (const raw of updates) {
          const update = Float32Array.from(raw)
          naiveOuter(expectedTheta, expectedVelocity, update, fields)
          const result = yield* DiLoCo.outerStep(theta, update, optimizer, state)
          theta = result.parameters
          state = result.state
          sameValues(theta, expectedTheta)
          if (fields.momentum === 0) expect(state.velocity).toBeUndefined()
          else sameValues(state.velocity!, expectedVelocity)
        }
        expect(state.round).toBe(updates.length)
      }),
    { fastCheck: { numRuns: 300 } },
  )

  it.effect("hand-computed: plain averaging, and DiLoCo's Nesterov momentum over two rounds", () =>
    Effect.gen(function* () {
      // lr 1, no momentum, Mean: θ' = mean of the local θᵢ.
      const averaging = new DiLoCo.OuterOptimizer({ learningRate: 1 })
      expect(averaging.momentum).toBe(0)
      expect(averaging.nesterov).toBe(false)
      const base = pack(Float32Array.of(1, 10))
      const update = yield* DiLoCo.aggregatePseudoGradients(
        base,
        [pack(Float32Array.of(0, 8)), pack(Float32Array.of(1, 6))],
        new DiLoCo.Mean(),
      )
      const averaged = yield* DiLoCo.outerStep(base.values, update, averaging, DiLoCo.initialState)
      expect([...averaged.parameters]).toEqual([0.5, 7])

      // θ = 1, Δ̄ = 0.5 twice, μ 0.5, lr 0.5, Nesterov: v = 0.5, step 0.75, θ 0.625; v = 0.75, step 0.875, θ 0.1875.
      const nesterov = new DiLoCo.OuterOptimizer({ learningRate: 0.5, momentum: 0.5, nesterov: true })
      const first = yield* DiLoCo.outerStep(Float32Array.of(1), Float32Array.of(0.5), nesterov, DiLoCo.initialState)
      expect([...first.parameters, ...first.state.velocity!]).toEqual([0.625, 0.5])
      const second = yield* DiLoCo.outerStep(first.parameters, Float32Array.of(0.5), nesterov, first.state)
      expect([...second.parameters, ...second.state.velocity!]).toEqual([0.1875, 0.75])

      // Weight decay is coupled: g = Δ̄ + wd·θ = 0 + 0.5·2 = 1, θ = 2 − 0.5·1 = 1.5.
      const decay = new DiLoCo.OuterOptimizer({ learningRate: 0.5, weightDecay: 0.5 })
      expect([
        ...(yield* DiLoCo.outerStep(Float32Array.of(2), Float32Array.of(0), decay, DiLoCo.initialState))
          .parameters,
      ]).toEqual([1.5])

      // In place into the update's buffer.
      const buffer = Float32Array.of(0.5)
      const inPlace = yield* DiLoCo.outerStep(Float32Array.of(1), buffer, averaging, DiLoCo.initialState, {
        out: buffer,
      })
      expect(inPlace.parameters).toBe(buffer)
      expect([...buffer]).toEqual([0.5])
    }))

  it.effect("refuses an update, momentum or output of another length", () =>
    Effect.gen(function* () {
      const optimizer = new DiLoCo.OuterOptimizer({ learningRate: 1, momentum: 0.9 })
      const theta = Float32Array.of(1, 2)
      const update = yield* Effect.flip(DiLoCo.outerStep(theta, Float32Array.of(1), optimizer, DiLoCo.initialState))
      expect(update.subject).toBe("the aggregated update")
      const state = { round: 3, velocity: new Float32Array(5) }
      expect((yield* Effect.flip(DiLoCo.outerStep(theta, theta, optimizer, state))).message).toBe(
        "the momentum buffer holds 5 values, the base pack 2",
      )
      const out = yield* Effect.flip(
        DiLoCo.outerStep(theta, theta, optimizer, DiLoCo.initialState, { out: new Float32Array(1) }),
      )
      expect(out.subject).toBe("the output buffer")
      yield* Effect.flip(Schema.decodeUnknown(DiLoCo.OuterOptimizer)({ learning_rate: -1 }))
      expect(yield* Schema.decodeUnknown(DiLoCo.OuterOptimizer)({ learning_rate: 0.7, momentum: 0.9, nesterov: true }))
        .toEqual(new DiLoCo.OuterOptimizer({ learningRate: 0.7, momentum: 0.9, nesterov: true, weightDecay: 0 }))
    }))
})

describe("a round from files", () => {
  it.effect("reads the packs, aggregates, steps and writes the next global pack", () =>
    Effect.scoped(Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "diloco-test-" })
      const layout = [{ name: "w", shape: [2, 2], dtype: "torch.float32", numel: 4 }]
      const layoutHash = ParameterPack.layoutHash(layout)
      const theta = Float32Array.of(1, 2, 3, 4)
      const make = (values: Float32Array) => ParameterPack.make(values, { modelSchemaHash: "schema", layoutHash })
      yield* ParameterPack.write(join(dir, "base"), make(theta))
      const locals = [Float32Array.of(0, 2, 3, 5), Float32Array.of(1, 1, 3, 5), Float32Array.of(0, 2, 2, 4)]
      yield* Effect.forEach(locals, (values, i) => ParameterPack.write(join(dir, `peer-${i}`), make(values)))

      const optimizer = new DiLoCo.OuterOptimizer({ learningRate: 0.7, momentum: 0.9, nesterov: true })
      const policy = new DiLoCo.CoordinateMedian()
      const { next, state } = yield* DiLoCo.round({
        base: join(dir, "base"),
        locals: locals.map((_, i) => join(dir, `peer-${i}`)),
        output: join(dir, "next"),
        policy,
        optimizer,
        state: DiLoCo.initialState,
        layout,
      })
      const update = yield* DiLoCo.aggregatePseudoGradients(pack(theta), locals.map((l) => pack(l)), policy)
      expect([...update]).toEqual([1, 0, 0, -1])
      const expected = yield* DiLoCo.outerStep(theta, update, optimizer, DiLoCo.initialState)
      expect([...next.values]).toEqual([...expected.parameters])
      expect([...state.velocity!]).toEqual([...expected.state.velocity!])
      const written = yield* ParameterPack.read(join(dir, "next"), { layout })
      expect([...written.values]).toEqual([...expected.parameters])
      expect(Object.keys(JSON.parse(readFileSync(join(dir, "next", "manifest.json"), "utf8")))).toEqual([
        "format",
        "model_schema_hash",
        "layout_hash",
        "parameter_count",
        "values_f32_le",
      ])

      // A peer with another layout fails the round, and nothing is written.
      yield* ParameterPack.write(
        join(dir, "odd"),
        ParameterPack.make(theta, { modelSchemaHash: "schema", layoutHash: "torch-layout-other" }),
      )
      const error = yield* Effect.flip(DiLoCo.round({
        base: join(dir, "base"),
        locals: [join(dir, "peer-0"), join(dir, "odd")],
        output: join(dir, "never"),
        policy,
        optimizer,
        state,
      }))
      expect(error._tag).toBe("PackMismatchError")
      expect(error.message).toContain(join(dir, "odd"))
      expect(yield* fs.exists(join(dir, "never"))).toBe(false)
      // With the model's layout given, the same peer is refused as it is read.
      const guarded = yield* Effect.flip(DiLoCo.round({
        base: join(dir, "base"),
        locals: [join(dir, "odd")],
        output: join(dir, "never"),
        policy,
        optimizer,
        state,
        layout,
      }))
      expect(guarded._tag === "ParameterPackError" && guarded.reason).toBe("LayoutHash")
    })).pipe(Effect.provide(NodeContext.layer)))
})
