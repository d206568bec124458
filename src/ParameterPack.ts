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
import type * as FileSystem from "@effect/platform/FileSystem"
import type * as Path from "@effect/platform/Path"
import type * as Effect from "effect/Effect"
import * as internal from "./internal/packIo.ts"
import {
  FORMAT,
  ParameterPackManifest,
  type StateDictFilter,
  type TensorLayoutLike,
  VALUES_FILE,
} from "./PackManifest.ts"
import type { ParameterPackError } from "./ParameterPackError.ts"

export * from "./PackManifest.ts"
export * from "./ParameterPackError.ts"

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
): Effect.Effect<void, ParameterPackError> => internal.validate(path, manifest, byteLength, options)

/**
 * Reads and checks `manifest.json` alone.
 *
 * @since 0.2.0
 * @category io
 */
export const readManifest: (
  path: string,
  options?: ValidateOptions,
) => Effect.Effect<ParameterPackManifest, ParameterPackError, FileSystem.FileSystem | Path.Path> = internal.readManifest

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
) => Effect.Effect<ParameterPack, ParameterPackError, FileSystem.FileSystem | Path.Path> = internal.read

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
) => Effect.Effect<void, ParameterPackError, FileSystem.FileSystem | Path.Path> = internal.write
