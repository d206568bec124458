/**
 * `PackMismatchError`: DiLoCo inputs that cannot be combined.
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import { type ErrorBase, quote } from "./internal/wire.ts"

const /** @internal */ PackMismatchErrorBase: ErrorBase<PackMismatchError, "PackMismatchError", {
  /** Which input: `"local pack 2 (/runs/r7/peer-2)"`, `"momentum"`, ... */
  subject: typeof Schema.String
  reason: Schema.Literal<["LayoutHash", "ParameterCount", "NoPeers"]>
  expected: Schema.optional<typeof Schema.String>
  actual: Schema.optional<typeof Schema.String>
}> = Schema.TaggedError<PackMismatchError>()("PackMismatchError", {
  subject: Schema.String,
  reason: Schema.Literal("LayoutHash", "ParameterCount", "NoPeers"),
  expected: Schema.optional(Schema.String),
  actual: Schema.optional(Schema.String),
})
/**
 * Inputs that cannot be combined: a local pack (or a buffer: momentum, an
 * output) whose layout hash or length differs from the base pack's, or no
 * peers at all. Nothing is computed.
 *
 * @since 0.2.0
 * @category errors
 */
export class PackMismatchError extends PackMismatchErrorBase {
  /** Names the input and what differs; hashes are quoted to a bounded prefix. */
  override get message(): string {
    switch (this.reason) {
      case "NoPeers":
        return "nothing to aggregate: no local packs were given"
      case "LayoutHash":
        return `${this.subject}: layout_hash ${quote(this.actual ?? "")} differs from the base pack's ${
          quote(this.expected ?? "")
        }`
      default:
        return `${this.subject} holds ${this.actual} values, the base pack ${this.expected}`
    }
  }
}
