/**
 * A parameter pack's manifest and layout: the file names and format string,
 * the state-dict filter, the tensor layout, `manifest.json` itself, and the
 * layout hash as the Python worker computes it.
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import * as pythonJson from "./internal/pythonJson.ts"
import {
  type ClassBase,
  type DefaultWire,
  defaultWire,
  type OptionalWire,
  optionalWire,
  type Wire,
  wire,
} from "./internal/wire.ts"

/**
 * The `format` every pack manifest carries.
 *
 * @since 0.2.0
 * @category constants
 */
export const FORMAT = "burn-p2p-python-flattened-parameter-pack-v1" as const

/**
 * The manifest's file name inside a pack folder.
 *
 * @since 0.2.0
 * @category constants
 */
export const MANIFEST_FILE = "manifest.json" as const

/**
 * The values file name this module writes (and the reference always uses).
 *
 * @since 0.2.0
 * @category constants
 */
export const VALUES_FILE = "values.f32le" as const

const NonNegativeInt: typeof Schema.NonNegativeInt = Schema.NonNegativeInt
const Strings: Schema.Array$<typeof Schema.String> = Schema.Array(Schema.String)

const /** @internal */ StateDictFilterBase: ClassBase<StateDictFilter, {
  includeGlobs: DefaultWire<typeof Strings, "include_globs">
  excludeGlobs: DefaultWire<typeof Strings, "exclude_globs">
}> = Schema.Class<StateDictFilter>("StateDictFilter")({
  includeGlobs: defaultWire(Strings, "include_globs", () => []),
  excludeGlobs: defaultWire(Strings, "exclude_globs", () => []),
})
/**
 * Which state-dict entries a pack holds: kept when `includeGlobs` is empty or
 * one matches, and no `excludeGlobs` entry matches (Python `fnmatchcase`).
 * Both default to `[]` on the wire.
 *
 * @since 0.2.0
 * @category models
 */
export class StateDictFilter extends StateDictFilterBase {}

const /** @internal */ TensorLayoutBase: ClassBase<TensorLayout, {
  name: typeof Schema.String
  shape: Schema.Array$<typeof NonNegativeInt>
  dtype: typeof Schema.String
  numel: typeof NonNegativeInt
}> = Schema.Class<TensorLayout>("TensorLayout")({
  name: Schema.String,
  shape: Schema.Array(NonNegativeInt),
  dtype: Schema.String,
  numel: NonNegativeInt,
})
/**
 * One kept tensor of a layout: its state-dict name (`KEY` or `MODULE.KEY`),
 * shape, torch dtype spelling (`"torch.float32"`) and element count.
 *
 * @since 0.2.0
 * @category models
 */
export class TensorLayout extends TensorLayoutBase {}

/**
 * A layout: the kept tensors in pack order.
 *
 * @since 0.2.0
 * @category models
 */
export const Layout: Schema.Array$<typeof TensorLayout> = Schema.Array(TensorLayout)

/**
 * A layout entry as plain data: a decoded `TensorLayout` or an object literal.
 *
 * @since 0.2.0
 * @category models
 */
export interface TensorLayoutLike {
  /** The state-dict name, `KEY` or `MODULE.KEY`. */
  readonly name: string
  /** The tensor's shape (ints). */
  readonly shape: ReadonlyArray<number>
  /** torch's spelling: `"torch.float32"`, `"torch.float16"`, ... */
  readonly dtype: string
  /** The element count (the product of `shape`). */
  readonly numel: number
}

const /** @internal */ ParameterPackManifestBase: ClassBase<ParameterPackManifest, {
  format: typeof Schema.String
  modelSchemaHash: Wire<typeof Schema.String, "model_schema_hash">
  layoutHash: Wire<typeof Schema.String, "layout_hash">
  parameterCount: Wire<typeof NonNegativeInt, "parameter_count">
  valuesF32Le: Wire<typeof Schema.String, "values_f32_le">
  stateDictFilter: OptionalWire<typeof StateDictFilter, "state_dict_filter">
  includedKeys: OptionalWire<typeof Strings, "included_keys">
  excludedFloatKeys: OptionalWire<typeof Strings, "excluded_float_keys">
  ignoredNonFloatKeys: OptionalWire<typeof Strings, "ignored_non_float_keys">
}> = Schema.Class<ParameterPackManifest>("ParameterPackManifest")({
  format: Schema.String,
  modelSchemaHash: wire(Schema.String, "model_schema_hash"),
  layoutHash: wire(Schema.String, "layout_hash"),
  parameterCount: wire(NonNegativeInt, "parameter_count"),
  valuesF32Le: wire(Schema.String, "values_f32_le"),
  stateDictFilter: optionalWire(StateDictFilter, "state_dict_filter"),
  includedKeys: optionalWire(Strings, "included_keys"),
  excludedFloatKeys: optionalWire(Strings, "excluded_float_keys"),
  ignoredNonFloatKeys: optionalWire(Strings, "ignored_non_float_keys"),
})
/**
 * `manifest.json`. The worker writes every field; the owner, writing the next
 * global parameters, writes only the first five, so the filter and key lists
 * are optional. `format` is any string here: `read` and `validate` check it.
 *
 * @since 0.2.0
 * @category models
 */
export class ParameterPackManifest extends ParameterPackManifestBase {}

/**
 * The layout hash, exactly as the Python worker computes it:
 * `"torch-layout-" + sha256(json.dumps(layout, sort_keys=True,
 * separators=(",", ":"))).hexdigest()`, with Python's default
 * `ensure_ascii=True` (non-ASCII as lowercase `\uXXXX`, astral characters as
 * surrogate pairs) and keys sorted by code point. Integral numbers are
 * written as Python ints (shapes, numels): the hash is Python's over
 * `json.loads(JSON.stringify(layout))`. Every own key of each entry is hashed, as Python
 * hashes whatever its dicts hold.
 *
 * @since 0.2.0
 * @category layout
 */
export const layoutHash = (layout: ReadonlyArray<TensorLayoutLike>): string =>
  pythonJson.layoutHash(layout as unknown as pythonJson.PythonJson)
