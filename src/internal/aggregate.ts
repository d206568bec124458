/**
 * Per-coordinate aggregation kernels over Float32Arrays. Each works on a range
 * of coordinates `[start, end)`, so the caller can yield between chunks, and
 * takes either pseudo-gradients already formed (`base` undefined) or the base
 * pack and the local packs, forming Δᵢ[j] = fround(θ[j] − θᵢ[j]) on the fly
 * (exactly the float32 subtraction, without a buffer per peer).
 *
 * @internal
 */

/** Coordinates per chunk between yields to other fibers (a few ms of work for 8 peers). */
export const CHUNK = 1 << 20

/** Peer counts up to this use insertion sort per coordinate; above, quickselect. */
export const INSERTION_SORT_MAX = 24

const fround = Math.fround

/** Coordinates summed per pass over the peers in `meanRange`: the float64 accumulator stays in L1. */
export const MEAN_BLOCK = 2048

/**
 * out[j] = (Σᵢ Δᵢ[j]) / k, summed in float64 in peer order, rounded once to
 * float32. Peers are walked block by block, each block's sums held in `acc`
 * (MEAN_BLOCK long), so every input is read sequentially.
 */
export const meanRange = (
  base: Float32Array | undefined,
  inputs: ReadonlyArray<Float32Array>,
  out: Float32Array,
  start: number,
  end: number,
  acc: Float64Array,
): void => {
  const k = inputs.length
  for (let from = start; from < end; from += MEAN_BLOCK) {
    const n = Math.min(MEAN_BLOCK, end - from)
    acc.fill(0, 0, n)
    for (let i = 0; i < k; i++) {
      const input = inputs[i]
      if (base === undefined) {
        for (let j = 0; j < n; j++) acc[j] += input[from + j]
      } else {
        for (let j = 0; j < n; j++) acc[j] += fround(base[from + j] - input[from + j])
      }
    }
    for (let j = 0; j < n; j++) out[from + j] = acc[j] / k
  }
}

/** Sorts `s[0..m)` ascending in place (no NaNs in it). */
const insertionSort = (s: Float64Array, m: number): void => {
  for (let i = 1; i < m; i++) {
    const x = s[i]
    let p = i - 1
    while (p >= 0 && s[p] > x) {
      s[p + 1] = s[p]
      p--
    }
    s[p + 1] = x
  }
}

/** Rearranges `s[0..m)` so that `s[t]` is its t-th smallest, smaller ones before, larger after. */
const quickselect = (s: Float64Array, m: number, t: number): void => {
  let lo = 0
  let hi = m - 1
  while (hi > lo) {
    if (hi - lo < 16) {
      for (let i = lo + 1; i <= hi; i++) {
        const x = s[i]
        let p = i - 1
        while (p >= lo && s[p] > x) {
          s[p + 1] = s[p]
          p--
        }
        s[p + 1] = x
      }
      return
    }
    const mid = (lo + hi) >>> 1
    // Median of three as the pivot.
    const a = s[lo], b = s[mid], c = s[hi]
    const pivot = a < b ? (b < c ? b : a < c ? c : a) : (a < c ? a : b < c ? c : b)
    let i = lo
    let j = hi
    while (i <= j) {
      while (s[i] < pivot) i++
      while (s[j] > pivot) j--
      if (i <= j) {
        const x = s[i]
        s[i] = s[j]
        s[j] = x
        i++
        j--
      }
    }
    if (t <= j) hi = j
    else if (t >= i) lo = i
    else return
  }
}

/**
 * The median of Δ₀[j] … Δₖ₋₁[j], as if the k values were sorted with NaN
 * above +∞ (Float32Array's own sort order), the mean of the two middle values
 * for an even k. Zeros are loaded as +0, so a zero median is +0.
 * `scratch` holds k values and is reused for every coordinate.
 */
export const medianRange = (
  base: Float32Array | undefined,
  inputs: ReadonlyArray<Float32Array>,
  out: Float32Array,
  start: number,
  end: number,
  scratch: Float64Array,
): void => {
  const k = inputs.length
  const odd = (k & 1) === 1
  const lower = odd ? (k - 1) >>> 1 : (k >>> 1) - 1
  const upper = odd ? lower : lower + 1
  const small = k <= INSERTION_SORT_MAX
  for (let j = start; j < end; j++) {
    let m = 0
    if (base === undefined) {
      for (let i = 0; i < k; i++) {
        const x = inputs[i][j]
        if (x === x) scratch[m++] = x + 0
      }
    } else {
      const b = base[j]
      for (let i = 0; i < k; i++) {
        const x = fround(b - inputs[i][j])
        if (x === x) scratch[m++] = x + 0
      }
    }
    if (upper >= m) {
      out[j] = NaN
      continue
    }
    if (small) {
      insertionSort(scratch, m)
      out[j] = odd ? scratch[lower] : (scratch[lower] + scratch[upper]) / 2
    } else {
      quickselect(scratch, m, lower)
      if (odd) {
        out[j] = scratch[lower]
      } else {
        let next = scratch[lower + 1]
        for (let p = lower + 2; p < m; p++) if (scratch[p] < next) next = scratch[p]
        out[j] = (scratch[lower] + next) / 2
      }
    }
  }
}

/** `tieBreak` as a number: what a coordinate becomes when positives and negatives tie for the most votes. */
export type TieValue = 1 | -1 | 0

/** Vote counters for `signMajorityRange`, MEAN_BLOCK coordinates each. */
export interface SignCounters {
  readonly positive: Int32Array
  readonly negative: Int32Array
  readonly zero: Int32Array
}

/** @internal */
export const makeSignCounters = (): SignCounters => ({
  positive: new Int32Array(MEAN_BLOCK),
  negative: new Int32Array(MEAN_BLOCK),
  zero: new Int32Array(MEAN_BLOCK),
})

/**
 * Sign majority per coordinate (PROTOCOL.md): 0 when zeros hold or share the
 * largest count; ±1 for the larger sign; `tie` when positives and negatives
 * tie for it; a non-zero result backed by a share of the k peers below
 * `minimumAgreement` becomes 0. A NaN abstains (counts toward k only).
 * Votes are counted block by block, peer by peer (sequential reads, counts
 * added without branches); the sign of θ − θᵢ in float64 is the sign of its
 * float32 rounding, so Δᵢ need not be rounded here.
 */
export const signMajorityRange = (
  base: Float32Array | undefined,
  inputs: ReadonlyArray<Float32Array>,
  out: Float32Array,
  start: number,
  end: number,
  minimumAgreement: number,
  tie: TieValue,
  counters: SignCounters,
): void => {
  const k = inputs.length
  const { positive: pos, negative: neg, zero: zer } = counters
  for (let from = start; from < end; from += MEAN_BLOCK) {
    const n = Math.min(MEAN_BLOCK, end - from)
    pos.fill(0, 0, n)
    neg.fill(0, 0, n)
    zer.fill(0, 0, n)
    for (let i = 0; i < k; i++) {
      const input = inputs[i]
      if (base === undefined) {
        for (let j = 0; j < n; j++) {
          const x = input[from + j]
          pos[j] += +(x > 0)
          neg[j] += +(x < 0)
          zer[j] += +(x === 0)
        }
      } else {
        for (let j = 0; j < n; j++) {
          const x = base[from + j] - input[from + j]
          pos[j] += +(x > 0)
          neg[j] += +(x < 0)
          zer[j] += +(x === 0)
        }
      }
    }
    for (let j = 0; j < n; j++) {
      const positive = pos[j]
      const negative = neg[j]
      const zero = zer[j]
      let sign: number
      let votes: number
      if (zero >= positive && zero >= negative) {
        sign = 0
        votes = zero
      } else if (positive === negative) {
        sign = tie
        votes = positive
      } else if (positive > negative) {
        sign = 1
        votes = positive
      } else {
        sign = -1
        votes = negative
      }
      out[from + j] = sign !== 0 && votes / k < minimumAgreement ? 0 : sign
    }
  }
}

/** Δᵢ = θ − θᵢ into `out` (may be θᵢ itself). */
export const subtractRange = (
  base: Float32Array,
  input: Float32Array,
  out: Float32Array,
  start: number,
  end: number,
): void => {
  for (let j = start; j < end; j++) out[j] = base[j] - input[j]
}

/**
 * One outer SGD step per coordinate, as torch.optim.SGD does it with the
 * aggregated pseudo-gradient as `.grad`: g = Δ̄ + wd·θ; with momentum
 * v ← μ·v + g and step = g + μ·v (Nesterov) or v; θ ← θ − lr·step.
 * Arithmetic is float64 per coordinate; θ and v are rounded to float32 when
 * stored, and the Nesterov step uses v as stored. `out` may alias `theta` or `update`.
 */
export const outerStepRange = (
  theta: Float32Array,
  update: Float32Array,
  out: Float32Array,
  velocity: Float32Array | undefined,
  learningRate: number,
  momentum: number,
  nesterov: boolean,
  weightDecay: number,
  start: number,
  end: number,
): void => {
  for (let j = start; j < end; j++) {
    const t = theta[j]
    const g = weightDecay === 0 ? update[j] : update[j] + weightDecay * t
    let step = g
    if (velocity !== undefined) {
      velocity[j] = momentum * velocity[j] + g
      const v = velocity[j]
      step = nesterov ? g + momentum * v : v
    }
    out[j] = t - learningRate * step
  }
}
