/**
 * Parameter packs (protocol 2): a folder holding `manifest.json` and
 * `values.f32le`, every kept float tensor of a model flattened into one
 * little-endian float32 vector. Read, validate and write them as
 * `Float32Array`s, and compute the layout hash exactly as the Python worker
 * does. Needs no worker: only `FileSystem` and `Path` from `@effect/platform`
 * (`NodeFileSystem.layer`, `NodePath.layer` or `NodeContext.layer`).
 *
 * @since 0.2.0
 * @module
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { randomUUID } from "node:crypto"
import { toFloat32, toLittleEndianBytes } from "./internal/packBytes.ts"
import * as pythonJson from "./internal/pythonJson.ts"
import {
  type ClassBase,
  type DefaultWire,
  defaultWire,
  type ErrorBase,
  type OptionalWire,
  optionalWire,
  quote,
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
 * A pack in memory: its manifest and its values (`manifest.parameterCount`
 * float32s, in layout order).
 *
 * @since 0.2.0
 * @category models
 */
export interface ParameterPack {
  /** The manifest; `parameterCount` is `values.length`. */
  readonly manifest: ParameterPackManifest
  /** Every kept tensor, flattened row-major, in layout order. */
  readonly values: Float32Array
  /** The folder it was read from, when it was: errors name it. */
  readonly path?: string | undefined
}

/**
 * What `make` takes besides the values.
 *
 * @since 0.2.0
 * @category models
 */
export interface MakeOptions {
  /** The workload's model schema hash, passed through unchanged. */
  readonly modelSchemaHash: string
  /** The layout hash (`layoutHash(layout)`). */
  readonly layoutHash: string
  /** The filter the pack was made with, when known (the owner usually leaves it out). */
  readonly stateDictFilter?: StateDictFilter | undefined
  /** The state-dict keys packed, when known. */
  readonly includedKeys?: ReadonlyArray<string> | undefined
  /** Float entries the filter dropped, when known. */
  readonly excludedFloatKeys?: ReadonlyArray<string> | undefined
  /** Integer and boolean entries, never packed, when known. */
  readonly ignoredNonFloatKeys?: ReadonlyArray<string> | undefined
}

/**
 * A pack over `values` (not copied), its `parameterCount` their length.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (values: Float32Array, options: MakeOptions): ParameterPack => ({
  manifest: new ParameterPackManifest({
    format: FORMAT,
    modelSchemaHash: options.modelSchemaHash,
    layoutHash: options.layoutHash,
    parameterCount: values.length,
    valuesF32Le: VALUES_FILE,
    ...(options.stateDictFilter === undefined ? {} : { stateDictFilter: options.stateDictFilter }),
    ...(options.includedKeys === undefined ? {} : { includedKeys: options.includedKeys }),
    ...(options.excludedFloatKeys === undefined ? {} : { excludedFloatKeys: options.excludedFloatKeys }),
    ...(options.ignoredNonFloatKeys === undefined ? {} : { ignoredNonFloatKeys: options.ignoredNonFloatKeys }),
  }),
  values,
})

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

/**
 * Why a pack could not be read, written or accepted.
 *
 * @since 0.2.0
 * @category errors
 */
export type ParameterPackErrorReason =
  | "NotFound"
  | "ReadFailed"
  | "WriteFailed"
  | "InvalidManifest"
  | "Format"
  | "ByteLength"
  | "LayoutHash"

const /** @internal */ ParameterPackErrorBase: ErrorBase<ParameterPackError, "ParameterPackError", {
  /** The pack folder. */
  path: typeof Schema.String
  reason: Schema.Literal<
    ["NotFound", "ReadFailed", "WriteFailed", "InvalidManifest", "Format", "ByteLength", "LayoutHash"]
  >
  /** What was expected (the format, the byte count, the model's layout hash). */
  expected: Schema.optional<typeof Schema.String>
  /** What the pack holds instead. */
  actual: Schema.optional<typeof Schema.String>
  detail: Schema.optional<typeof Schema.String>
  cause: Schema.optional<typeof Schema.Defect>
}> = Schema.TaggedError<ParameterPackError>()("ParameterPackError", {
  path: Schema.String,
  reason: Schema.Literal(
    "NotFound",
    "ReadFailed",
    "WriteFailed",
    "InvalidManifest",
    "Format",
    "ByteLength",
    "LayoutHash",
  ),
  expected: Schema.optional(Schema.String),
  actual: Schema.optional(Schema.String),
  detail: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect),
})
/**
 * A pack folder could not be read or written, or its content is not a pack the
 * caller can use. Never a partial result: nothing is returned on error.
 *
 * @since 0.2.0
 * @category errors
 */
export class ParameterPackError extends ParameterPackErrorBase {
  /** The path, the reason and what differs; any value from the pack is quoted to a bounded prefix. */
  override get message(): string {
    const where = `parameter pack ${this.path}`
    const detail = this.detail === undefined ? "" : `: ${quoteDetail(this.detail)}`
    switch (this.reason) {
      case "NotFound":
        return `${where}: not found${detail}`
      case "ReadFailed":
        return `cannot read ${where}${detail}`
      case "WriteFailed":
        return `cannot write ${where}${detail}`
      case "InvalidManifest":
        return `${where}: ${MANIFEST_FILE} is not a valid manifest${detail}`
      case "Format":
        return `${where}: manifest format is ${quote(this.actual ?? "")}, expected ${quote(this.expected ?? FORMAT)}`
      case "ByteLength":
        return `${where}: the values file holds ${this.actual} bytes, but parameter_count needs ${this.expected}`
      default:
        return `${where}: layout_hash ${quote(this.actual ?? "")} differs from the model's ${
          quote(this.expected ?? "")
        }`
    }
  }
}

/** Details are ours or a parser's; cut them all the same. */
const quoteDetail = (detail: string): string => detail.length <= 400 ? detail : `${detail.slice(0, 400)}… (cut)`

/**
 * What a pack is checked against, besides its own consistency.
 *
 * @since 0.2.0
 * @category models
 */
export interface ValidateOptions {
  /** The receiving model's layout: its hash must equal the manifest's. */
  readonly layout?: ReadonlyArray<TensorLayoutLike> | undefined
  /** The receiving model's layout hash, when the layout itself is not at hand. */
  readonly layoutHash?: string | undefined
}

const expectedHash = (options: ValidateOptions | undefined): string | undefined =>
  options?.layout !== undefined ? layoutHash(options.layout) : options?.layoutHash

/**
 * The import checks of the Python worker, on a manifest and the size of its
 * values file: the format string, `byteLength == 4 * parameterCount`, and the
 * layout hash when a layout (or its hash) is given. `byteLength` may be left
 * out to check the manifest alone.
 *
 * @since 0.2.0
 * @category validation
 */
export const validate = (
  path: string,
  manifest: ParameterPackManifest,
  byteLength: number | undefined,
  options?: ValidateOptions,
): Effect.Effect<void, ParameterPackError> =>
  Effect.suspend(() => {
    if (manifest.format !== FORMAT) {
      return new ParameterPackError({ path, reason: "Format", expected: FORMAT, actual: manifest.format })
    }
    const wanted = expectedHash(options)
    if (wanted !== undefined && manifest.layoutHash !== wanted) {
      return new ParameterPackError({ path, reason: "LayoutHash", expected: wanted, actual: manifest.layoutHash })
    }
    if (byteLength !== undefined && byteLength !== 4 * manifest.parameterCount) {
      return new ParameterPackError({
        path,
        reason: "ByteLength",
        expected: `4 * ${manifest.parameterCount} = ${4 * manifest.parameterCount}`,
        actual: String(byteLength),
      })
    }
    return Effect.void
  })

const decodeManifestJson: (
  text: string,
) => Effect.Effect<ParameterPackManifest, ParseResult.ParseError> = Schema.decode(
  Schema.parseJson(ParameterPackManifest),
)

const encodeManifest: (manifest: ParameterPackManifest) => typeof ParameterPackManifest.Encoded = Schema.encodeSync(
  ParameterPackManifest,
)

/** A values file name must stay inside the pack folder. */
const isPlainFileName = (name: string): boolean =>
  name !== "" && name !== "." && name !== ".." && !name.includes("/") && !name.includes("\\") && !name.includes("\0")

const isNotFound = (error: unknown): boolean =>
  typeof error === "object" && error !== null && "reason" in error && error.reason === "NotFound"

const describe = (error: unknown): string => error instanceof Error ? error.message : String(error)

/**
 * Reads and checks `manifest.json` alone.
 *
 * @since 0.2.0
 * @category io
 */
export const readManifest: (
  path: string,
  options?: ValidateOptions,
) => Effect.Effect<ParameterPackManifest, ParameterPackError, FileSystem.FileSystem | Path.Path> = Effect.fn(
  "ParameterPack.readManifest",
)(function* (path: string, options?: ValidateOptions) {
  const fs = yield* FileSystem.FileSystem
  const paths = yield* Path.Path
  const file = paths.join(path, MANIFEST_FILE)
  const text = yield* fs.readFileString(file).pipe(
    Effect.mapError((cause) =>
      new ParameterPackError({
        path,
        reason: isNotFound(cause) ? "NotFound" : "ReadFailed",
        detail: `${MANIFEST_FILE}: ${describe(cause)}`,
        cause,
      })
    ),
  )
  const manifest = yield* decodeManifestJson(text).pipe(
    Effect.mapError((cause) =>
      new ParameterPackError({
        path,
        reason: "InvalidManifest",
        detail: ParseResult.ArrayFormatter.formatErrorSync(cause)
          .map((issue) => issue.path.length === 0 ? issue.message : `${issue.path.join(".")}: ${issue.message}`)
          .join("; "),
      })
    ),
  )
  if (!isPlainFileName(manifest.valuesF32Le)) {
    return yield* new ParameterPackError({
      path,
      reason: "InvalidManifest",
      detail: `values_f32_le ${quote(manifest.valuesF32Le)} is not a file name inside the pack folder`,
    })
  }
  yield* validate(path, manifest, undefined, options)
  return manifest
})

/**
 * Reads a pack: the manifest, checked (format, layout hash when `options`
 * gives one), then the values file it names, whose size must be
 * `4 * parameterCount` (checked before and after reading it). The file is read
 * into one buffer and viewed as a Float32Array when 4-byte aligned, else
 * copied once; on a big-endian host it is byteswapped in place. Node's
 * `readFile` caps a file at 2 GiB (536M parameters).
 *
 * @example
 * ```ts
 * import { NodeContext } from "@effect/platform-node"
 * import { Effect } from "effect"
 * import { ParameterPack } from "@burn-p2p/python-worker"
 *
 * const program = Effect.gen(function* () {
 *   // Refused (`LayoutHash`) unless the pack was made for this layout.
 *   const pack = yield* ParameterPack.read("/runs/r7/peer-0", { layoutHash: "torch-layout-3f2a..." })
 *   return pack.values.length === pack.manifest.parameterCount
 * }).pipe(Effect.provide(NodeContext.layer))
 * ```
 *
 * @since 0.2.0
 * @category io
 */
export const read: (
  path: string,
  options?: ValidateOptions,
) => Effect.Effect<ParameterPack, ParameterPackError, FileSystem.FileSystem | Path.Path> = Effect.fn(
  "ParameterPack.read",
)(function* (path: string, options?: ValidateOptions) {
  const fs = yield* FileSystem.FileSystem
  const paths = yield* Path.Path
  const manifest = yield* readManifest(path, options)
  const file = paths.join(path, manifest.valuesF32Le)
  const fail = (cause: unknown) =>
    new ParameterPackError({
      path,
      reason: isNotFound(cause) ? "NotFound" : "ReadFailed",
      detail: `${manifest.valuesF32Le}: ${describe(cause)}`,
      cause,
    })
  const info = yield* fs.stat(file).pipe(Effect.mapError(fail))
  yield* validate(path, manifest, Number(info.size))
  const bytes = yield* fs.readFile(file).pipe(Effect.mapError(fail))
  yield* validate(path, manifest, bytes.byteLength)
  return { manifest, values: toFloat32(bytes), path }
})

/**
 * Writes `bytes` to `target` atomically: into a temporary file beside it,
 * then renamed over it. The temporary file is removed if anything fails.
 */
const writeAtomic = (fs: FileSystem.FileSystem, target: string, bytes: Uint8Array, path: string) => {
  const temporary = `${target}.${randomUUID()}.tmp`
  return fs.writeFile(temporary, bytes).pipe(
    Effect.zipRight(fs.rename(temporary, target)),
    Effect.tapError(() => fs.remove(temporary).pipe(Effect.ignore)),
    Effect.mapError((cause) => new ParameterPackError({ path, reason: "WriteFailed", detail: describe(cause), cause })),
  )
}

/**
 * Writes a pack into the folder `path` (created if missing): the values to
 * `values.f32le` (little-endian; no copy on a little-endian host), then
 * `manifest.json` pretty-printed with a two-space indent, holding the
 * filter and key lists only when the pack's manifest has them. Each file is
 * written to a temporary name and renamed into place, the manifest last, so a
 * reader never sees a manifest before its values, nor half a file. (No
 * fsync: atomic for readers, not durable across a power cut.)
 *
 * @example
 * ```ts
 * import { NodeContext } from "@effect/platform-node"
 * import { Effect } from "effect"
 * import { ParameterPack } from "@burn-p2p/python-worker"
 *
 * const layout = [{ name: "weight", shape: [2, 3], dtype: "torch.float32", numel: 6 }]
 * const pack = ParameterPack.make(new Float32Array(6), {
 *   modelSchemaHash: "schema-v1",
 *   layoutHash: ParameterPack.layoutHash(layout),
 * })
 * const program = ParameterPack.write("/runs/r7/global-0", pack).pipe(Effect.provide(NodeContext.layer))
 * ```
 *
 * @since 0.2.0
 * @category io
 */
export const write: (
  path: string,
  pack: ParameterPack,
) => Effect.Effect<void, ParameterPackError, FileSystem.FileSystem | Path.Path> = Effect.fn(
  "ParameterPack.write",
)(function* (path: string, pack: ParameterPack) {
  const fs = yield* FileSystem.FileSystem
  const paths = yield* Path.Path
  const manifest = new ParameterPackManifest({ ...pack.manifest, valuesF32Le: VALUES_FILE })
  yield* validate(path, manifest, pack.values.byteLength)
  yield* fs.makeDirectory(path, { recursive: true }).pipe(
    Effect.mapError((cause) => new ParameterPackError({ path, reason: "WriteFailed", detail: describe(cause), cause })),
  )
  yield* writeAtomic(fs, paths.join(path, VALUES_FILE), toLittleEndianBytes(pack.values), path)
  const text = JSON.stringify(encodeManifest(manifest), null, 2)
  yield* writeAtomic(fs, paths.join(path, MANIFEST_FILE), new TextEncoder().encode(text), path)
})
