/**
 * Protocol 2's JSON shapes, all about parameter packs: which state-dict
 * entries a pack holds (`StateDictFilter`), what a pack would hold
 * (`ParameterPackPlan`), and DiLoCo's inner loop, which ends in a pack
 * (`InnerLoopOptions`, `InnerLoopResult`).
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import { type ClassBase, U32, U64, type Wire, wire } from "./internal/wire.ts"
import { Metrics } from "./Messages.ts"

/**
 * Which state-dict entries a parameter pack holds (protocol 2): an entry is
 * kept when `includeGlobs` is empty or one matches, and no `excludeGlobs`
 * entry matches (Python's `fnmatchcase`; excludes win).
 *
 * @since 0.2.0
 * @category models
 */
export const StateDictFilter: Schema.Struct<{
  includeGlobs: Wire<Schema.Array$<typeof Schema.String>, "include_globs">
  excludeGlobs: Wire<Schema.Array$<typeof Schema.String>, "exclude_globs">
}> = Schema.Struct({
  includeGlobs: wire(Schema.Array(Schema.String), "include_globs"),
  excludeGlobs: wire(Schema.Array(Schema.String), "exclude_globs"),
}).annotations({ identifier: "StateDictFilter" })
/**
 * A decoded `StateDictFilter`.
 *
 * @since 0.2.0
 * @category models
 */
export type StateDictFilter = typeof StateDictFilter.Type

/**
 * A list that may be missing on the wire (an empty list then).
 *
 * @internal
 */
type DefaultList<Key extends string> = Schema.PropertySignature<
  ":",
  ReadonlyArray<string>,
  Key,
  "?:",
  ReadonlyArray<string> | undefined,
  true,
  never
>
const defaultList = <const Key extends string>(key: Key): DefaultList<Key> =>
  Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }).pipe(Schema.fromKey(key))

const /** @internal */ ParameterPackPlanBase: ClassBase<ParameterPackPlan, {
  usesCustomParameterPackHooks: Wire<typeof Schema.Boolean, "uses_custom_parameter_pack_hooks">
  layoutHash: Schema.PropertySignature<":", string | null, "layout_hash", "?:", string | null | undefined, true, never>
  includedKeys: DefaultList<"included_keys">
  excludedFloatKeys: DefaultList<"excluded_float_keys">
  ignoredNonFloatKeys: DefaultList<"ignored_non_float_keys">
  parameterCount: Schema.PropertySignature<":", number, "parameter_count", "?:", number | undefined, true, never>
  genericPlanError: Schema.PropertySignature<
    "?:",
    string | undefined,
    "generic_plan_error",
    "?:",
    string | undefined,
    false,
    never
  >
}> = Schema.Class<ParameterPackPlan>("ParameterPackPlan")({
  usesCustomParameterPackHooks: wire(Schema.Boolean, "uses_custom_parameter_pack_hooks"),
  layoutHash: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }).pipe(
    Schema.fromKey("layout_hash"),
  ),
  includedKeys: defaultList("included_keys"),
  excludedFloatKeys: defaultList("excluded_float_keys"),
  ignoredNonFloatKeys: defaultList("ignored_non_float_keys"),
  parameterCount: Schema.optionalWith(U64, { default: () => 0 }).pipe(Schema.fromKey("parameter_count")),
  genericPlanError: Schema.optional(Schema.String).pipe(Schema.fromKey("generic_plan_error")),
})
/**
 * What a parameter pack of a fresh model would hold (protocol 2): the
 * layout hash, the kept, excluded and ignored keys, and the parameter count.
 *
 * @since 0.2.0
 * @category models
 */
export class ParameterPackPlan extends ParameterPackPlanBase {}

const /** @internal */ InnerLoopResultBase: ClassBase<InnerLoopResult, {
  stepsCompleted: Wire<typeof U32, "steps_completed">
  metrics: typeof Metrics
  innerOptimizerStatePath: Schema.PropertySignature<
    "?:",
    string | null | undefined,
    "inner_optimizer_state_path",
    "?:",
    string | null | undefined,
    false,
    never
  >
  innerOptimizerStateEncoding: Schema.PropertySignature<
    "?:",
    string | null | undefined,
    "inner_optimizer_state_encoding",
    "?:",
    string | null | undefined,
    false,
    never
  >
}> = Schema.Class<InnerLoopResult>("InnerLoopResult")({
  stepsCompleted: wire(U32, "steps_completed"),
  metrics: Metrics,
  innerOptimizerStatePath: Schema.optional(Schema.NullOr(Schema.String)).pipe(
    Schema.fromKey("inner_optimizer_state_path"),
  ),
  innerOptimizerStateEncoding: Schema.optional(Schema.NullOr(Schema.String)).pipe(
    Schema.fromKey("inner_optimizer_state_encoding"),
  ),
})
/**
 * What `runInnerLoop` did: the steps it ran, its metrics, and where the
 * inner optimiser's state now is (pass it to the next round).
 *
 * @since 0.2.0
 * @category models
 */
export class InnerLoopResult extends InnerLoopResultBase {}

/**
 * The options of one DiLoCo inner loop.
 *
 * @since 0.2.0
 * @category models
 */
export interface InnerLoopOptions {
  /** The local steps to run (H in DiLoCo), an unsigned 32-bit integer. */
  readonly numInnerSteps: number
  /** The folder the worker writes the model to, as a parameter pack, when the loop ends. */
  readonly outputParameterPackPath: string
  /** The workload's model schema hash, written into the pack's manifest unchanged. */
  readonly modelSchemaHash: string
  /** The previous round's optimiser state; none on the first round. */
  readonly innerOptimizerStatePath?: string | null | undefined
  /** A different step count is an error, on both sides. */
  readonly requireExactSteps?: boolean | undefined
  /** Which state-dict entries the pack holds; everything when left out. */
  readonly filter?: StateDictFilter | undefined
}
