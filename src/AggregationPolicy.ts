/**
 * How DiLoCo's owner combines the peers' pseudo-gradients per coordinate:
 * `Mean`, `CoordinateMedian` or `SignMajority` (with its `TieBreak`).
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import { type NoFields, type TaggedClassBase, type Wire, wire } from "./internal/wire.ts"

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
