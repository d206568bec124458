/**
 * The layer's options: their schema, with every duration, size and count
 * range-checked, decoded before anything is spawned.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { Buffer } from "node:buffer"
import { InvalidArgumentError } from "../WorkerError.ts"
import { formatParseError } from "./codec.ts"
import { withFastPath } from "./fastCodec.ts"
import { jsonProblem } from "./json.ts"

/** @internal */
export const DEFAULT_WORKER_MODULE = "burn_p2p_python_runtime.worker"

/** Node's timers hold at most 2^31 - 1 ms (about 24.8 days). */
const MAX_TIMER_MILLIS = 2 ** 31 - 1
/** V8's longest string: a frame body longer than this could not be parsed. */
const MAX_FRAME_LIMIT = 2 ** 29 - 24
const MIN_FRAME_LIMIT = 1024
const MAX_STDERR_TAIL = 64 * 1024 * 1024
/** Linux's MAX_ARG_STRLEN: one argument, its terminating NUL included. */
const MAX_ARG_BYTES = 128 * 1024

const DurationInputDeclaration: Schema.declare<Duration.DurationInput> = Schema.declare(
  (u): u is Duration.DurationInput => Option.isSome(Duration.decodeUnknown(u)),
  { identifier: "DurationInput", description: 'a duration: milliseconds, "5 seconds", or a Duration' },
)

/**
 * The duration the caller wrote, in milliseconds, sign and NaN kept: Effect's
 * `Duration` makes 0 of NaN and of anything negative (-1, "-5 seconds"),
 * which would pass a check that allows 0.
 */
const givenMillis = (input: Duration.DurationInput): number => {
  if (typeof input === "number") return input
  if (typeof input === "bigint") return Number(input) / 1e6
  if (typeof input === "string") {
    const value = Number(/^\s*(-?[\d.]+)/.exec(input)?.[1])
    if (Number.isNaN(value) || value < 0) return value
  }
  if (Array.isArray(input)) {
    const [seconds, nanos] = input as unknown as [number, number]
    if (Number.isNaN(seconds) || Number.isNaN(nanos) || seconds < 0 || nanos < 0) return seconds * 1000 + nanos / 1e6
  }
  return Duration.toMillis(Duration.decode(input))
}

/** @internal */
export type BoundedDuration = Schema.transform<
  Schema.filter<Schema.declare<Duration.DurationInput>>,
  typeof Schema.DurationFromSelf
>

/**
 * A duration between `min` and about 24.8 days, finite; `inclusive` says
 * whether `min` itself is allowed. Judged on what the caller wrote, before
 * it becomes a `Duration`.
 *
 * @internal
 */
export const boundedDuration = (name: string, minMillis: number, inclusive: boolean): BoundedDuration =>
  Schema.transform(
    DurationInputDeclaration.pipe(
      Schema.filter((input) => {
        const millis = givenMillis(input)
        const ok = Number.isFinite(millis) && (inclusive ? millis >= minMillis : millis > minMillis) &&
          millis <= MAX_TIMER_MILLIS
        return ok ||
          `${name} must be ${
              inclusive ? "at least" : "more than"
            } ${minMillis} ms and at most ${MAX_TIMER_MILLIS} ms ` +
            `(about 24.8 days), got ${Number.isNaN(millis) ? "NaN" : `${millis} ms`}`
      }),
    ),
    Schema.DurationFromSelf,
    { strict: true, decode: (input) => Duration.decode(input), encode: (duration) => duration },
  )

const boundedInt = (name: string, min: number, max: number): Schema.filter<typeof Schema.Number> =>
  Schema.Number.pipe(
    Schema.filter((n) =>
      (Number.isInteger(n) && n >= min && n <= max) || `${name} must be an integer from ${min} to ${max}, got ${n}`
    ),
  )

/** An option that may be left out; `A` when decoded, `I` as given. */
type WithDefault<A, I> = Schema.optionalWith<Schema.Schema<A, I>, { default: () => NoInfer<A>; exact: true }>

const withDefault = <A, I>(schema: Schema.Schema<A, I>, value: () => NoInfer<A>): WithDefault<A, I> =>
  Schema.optionalWith(schema, { default: value, exact: true })

const Identifier = /[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*/.source

/** @internal */
export type OptionsSchema = Schema.Struct<{
  workloadFactory: Schema.filter<typeof Schema.String>
  workloadConfig: Schema.optional<typeof Schema.Unknown>
  pythonExecutable: WithDefault<string, string>
  workerModule: WithDefault<string, string>
  moduleSearchRoots: WithDefault<ReadonlyArray<string>, ReadonlyArray<string>>
  env: WithDefault<{ readonly [name: string]: string }, { readonly [name: string]: string }>
  connectTimeout: WithDefault<Duration.Duration, Duration.DurationInput>
  shutdownTimeout: WithDefault<Duration.Duration, Duration.DurationInput>
  terminateGrace: WithDefault<Duration.Duration, Duration.DurationInput>
  callTimeout: Schema.optionalWith<BoundedDuration, { as: "Option"; exact: true }>
  maxFrameBytes: WithDefault<number, number>
  stderrTailBytes: WithDefault<number, number>
  exitWithParent: WithDefault<boolean, boolean>
  configVia: Schema.optionalWith<Schema.Literal<["file", "argv"]>, { exact: true }>
  verifyConnection: Schema.optionalWith<Schema.Literal<["token", "processGroup"]>, { exact: true }>
}>

/** @internal */
export const Options: OptionsSchema = Schema.Struct({
  workloadFactory: Schema.String.pipe(
    Schema.pattern(new RegExp(`^${Identifier}:${Identifier}$`), {
      message: (issue) =>
        `expected "module:attr" (e.g. "my_pkg.workload:make"), got ${JSON.stringify(issue.actual).slice(0, 200)}`,
    }),
  ),
  // Checked apart (`jsonProblem`), so that no error ever quotes it: it may hold credentials.
  workloadConfig: Schema.optional(Schema.Unknown),
  pythonExecutable: withDefault(Schema.NonEmptyString, () => "python3"),
  workerModule: withDefault(Schema.NonEmptyString, () => DEFAULT_WORKER_MODULE),
  moduleSearchRoots: withDefault(Schema.Array(Schema.String), () => []),
  env: withDefault(Schema.Record({ key: Schema.String, value: Schema.String }), () => ({})),
  connectTimeout: withDefault(boundedDuration("connectTimeout", 0, false), () => Duration.seconds(10)),
  shutdownTimeout: withDefault(boundedDuration("shutdownTimeout", 0, true), () => Duration.seconds(5)),
  terminateGrace: withDefault(boundedDuration("terminateGrace", 0, true), () => Duration.seconds(2)),
  callTimeout: Schema.optionalWith(boundedDuration("callTimeout", 0, false), { as: "Option", exact: true }),
  maxFrameBytes: withDefault(boundedInt("maxFrameBytes", MIN_FRAME_LIMIT, MAX_FRAME_LIMIT), () => 256 * 1024 * 1024),
  stderrTailBytes: withDefault(boundedInt("stderrTailBytes", 0, MAX_STDERR_TAIL), () => 64 * 1024),
  exitWithParent: withDefault(Schema.Boolean, () => true),
  configVia: Schema.optionalWith(Schema.Literal("file", "argv"), { exact: true }),
  verifyConnection: Schema.optionalWith(Schema.Literal("token", "processGroup"), { exact: true }),
})

/** @internal */
export type Decoded = Omit<typeof Options.Type, "workloadConfig" | "configVia" | "verifyConnection"> & {
  readonly configJson: string
  readonly configVia: "file" | "argv"
  readonly verifyConnection: "token" | "processGroup"
}

const WHERE = "PythonWorker.layer"

/** The schema's decoding, its compiled fast path first (~3.5x faster: this runs before every spawn). */
const decodeOptions = withFastPath(
  Options.ast,
  true,
  Schema.decodeUnknownEither(Options, { onExcessProperty: "error" }),
  { onExcessProperty: "error" },
)

/**
 * The options decoded, or an `InvalidArgumentError` naming the option and
 * the accepted range. The workload config is never quoted.
 *
 * @internal
 */
export const decode = (options: typeof Options.Encoded): Either.Either<Decoded, InvalidArgumentError> => {
  const invalid = (detail: string) => Either.left(new InvalidArgumentError({ where: WHERE, detail }))
  if (typeof options !== "object" || options === null) return invalid("the options must be an object")
  const { workloadConfig = {}, ...rest } = options
  const configProblem = jsonProblem(workloadConfig, { plainJson: true })
  if (configProblem !== undefined) return invalid(`workloadConfig must be plain JSON: ${configProblem}`)
  const decoded = decodeOptions(rest)
  if (Either.isLeft(decoded)) return invalid(formatParseError(decoded.left))
  const ours = decoded.right.workerModule === DEFAULT_WORKER_MODULE
  const configJson = JSON.stringify(workloadConfig)
  const configVia = decoded.right.configVia ?? (ours ? "file" : "argv")
  const argBytes = Buffer.byteLength(configJson, "utf8") + 1
  if (configVia === "argv" && argBytes > MAX_ARG_BYTES) {
    return invalid(
      `workloadConfig takes ${argBytes} bytes as one --config-json argument; Linux allows ${MAX_ARG_BYTES} per ` +
        'argument: use configVia: "file" (a worker built on our runtime reads --config-file)',
    )
  }
  return Either.right({
    ...decoded.right,
    configJson,
    configVia,
    verifyConnection: decoded.right.verifyConnection ?? (ours ? "token" : "processGroup"),
  })
}

const decodeTimeout = Schema.decodeUnknownEither(boundedDuration("timeout", 0, false))

/**
 * A call's own timeout, range-checked like `callTimeout`.
 *
 * @internal
 */
export const decodeCallTimeout = (
  where: string,
  timeout: Duration.DurationInput,
): Either.Either<Duration.Duration, InvalidArgumentError> =>
  Either.mapLeft(
    decodeTimeout(timeout),
    (error) => new InvalidArgumentError({ where, detail: formatParseError(error) }),
  )
