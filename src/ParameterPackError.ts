/**
 * `ParameterPackError`: why a pack could not be read, written or accepted.
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import { type ErrorBase, quote } from "./internal/wire.ts"
import { FORMAT, MANIFEST_FILE } from "./PackManifest.ts"

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
