/**
 * Parameter packs on disk: reading, checking and writing them atomically.
 *
 * @internal
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { randomUUID } from "node:crypto"
import { FORMAT, layoutHash, MANIFEST_FILE, ParameterPackManifest, VALUES_FILE } from "../PackManifest.ts"
import type { ParameterPack, ValidateOptions } from "../ParameterPack.ts"
import { ParameterPackError } from "../ParameterPackError.ts"
import { toFloat32, toLittleEndianBytes } from "./packBytes.ts"
import { quote } from "./wire.ts"

const expectedHash = (options: ValidateOptions | undefined): string | undefined =>
  options?.layout !== undefined ? layoutHash(options.layout) : options?.layoutHash

/** @internal */
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

/** @internal */
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

/** @internal */
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

/** @internal */
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
