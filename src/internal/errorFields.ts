/**
 * What the worker's errors share: the exit-status fields and how a message
 * quotes the stderr tail.
 *
 * @internal
 */
import * as Schema from "effect/Schema"

/** Lines of the stderr tail quoted in messages; the field keeps the whole tail. */
const MESSAGE_STDERR_LINES = 12

/**
 * The last lines of `stderrTail`, indented, for the end of a message; empty when there are none.
 *
 * @internal
 */
export const quoteStderr = (stderrTail: string): string => {
  const lines = stderrTail.trimEnd().split("\n")
  if (lines.length === 1 && lines[0] === "") return ""
  const shown = lines.slice(-MESSAGE_STDERR_LINES).map((line) => `  | ${line}`).join("\n")
  return `\n  worker stderr (last ${Math.min(lines.length, MESSAGE_STDERR_LINES)} lines):\n${shown}`
}

/**
 * How a worker process ended: its pid, exit code or signal, and its stderr tail.
 *
 * @internal
 */
export type ExitFields = {
  pid: Schema.NullOr<typeof Schema.Number>
  exitCode: Schema.NullOr<typeof Schema.Number>
  signal: Schema.NullOr<typeof Schema.String>
  stderrTail: typeof Schema.String
}

/** @internal */
export const ExitFields: ExitFields = {
  pid: Schema.NullOr(Schema.Number),
  exitCode: Schema.NullOr(Schema.Number),
  signal: Schema.NullOr(Schema.String),
  stderrTail: Schema.String,
}

/**
 * A stderr tail that may be left out (empty then).
 *
 * Built outside the fields object: written inline, TypeScript infers the
 * fields from the annotation instead and rejects the object.
 *
 * @internal
 */
export const stderrTailOrEmpty: Schema.optionalWith<typeof Schema.String, { default: () => string }> = Schema
  .optionalWith(Schema.String, { default: () => "" })
