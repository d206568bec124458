/**
 * Each method's params to JSON text and answers back to values: the schema
 * codecs (built once per method), the checks that run before anything is
 * sent, and the reading of Python's error answers.
 *
 * @internal
 */
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { Buffer } from "node:buffer"
import { type Rpc, Rpcs } from "../Protocol.ts"
import { type CallError, InvalidArgumentError, ProtocolError, RemoteError } from "../WorkerError.ts"
import type { Envelope } from "./connection.ts"
import { withFastPath } from "./fastCodec.ts"
import { requestBytes } from "./frame.ts"
import { type SplitJson, splitJson } from "./longStrings.ts"
import { bounded, jsonProblem } from "./json.ts"

/** Longest remote message and traceback kept in a `RemoteError`. */
const REMOTE_TEXT_CHARS = 64 * 1024
/** Longest schema complaint kept in an error: it may quote the offending value. */
const DETAIL_CHARS = 2000

const TRACEBACK_HEADER = "Traceback (most recent call last):"

/** Keeps the head and the tail (where Python names the exception) of a long text. */
const headAndTail = (text: string, max: number): string =>
  text.length <= max
    ? text
    : `${text.slice(0, max / 2)}\n...(${text.length - max} chars cut)...\n${text.slice(text.length - max / 2)}`

/**
 * The exception a Python traceback ends with: the first unindented line after
 * the last indented (frame) line, `module.Type: message` with the message
 * possibly running over several lines.
 */
const raisedBy = (traceback: string): { readonly type: string; readonly message: string } | undefined => {
  const lines = traceback.trimEnd().split("\n")
  const lastFrameLine = lines.findLastIndex((line) => /^\s/.test(line))
  const match = /^([A-Za-z_][\w.]*)(?::\s?(.*))?$/.exec(lines[lastFrameLine + 1] ?? "")
  if (lastFrameLine < 0 || match === null) return undefined
  return {
    type: match[1].slice(match[1].lastIndexOf(".") + 1),
    message: [match[2] ?? "", ...lines.slice(lastFrameLine + 2)].join("\n").trim(),
  }
}

/**
 * Our worker sends `error` ("Type: message" then the traceback), `error_type`
 * and `traceback`; the reference worker sends only `error` (`str(exc)` then
 * the traceback), so the type comes from the traceback's last exception.
 *
 * @internal
 */
export const remoteError = (method: string, id: number, envelope: Envelope): RemoteError => {
  const text = typeof envelope.error === "string" ? envelope.error : JSON.stringify(envelope.error ?? null)
  const at = text.indexOf(TRACEBACK_HEADER)
  const traceback = typeof envelope.traceback === "string" ? envelope.traceback : at >= 0 ? text.slice(at) : ""
  const head = (at >= 0 ? text.slice(0, at) : text).trimEnd()
  const raised = raisedBy(traceback)
  const errorType = typeof envelope.error_type === "string" ? envelope.error_type : raised?.type ?? "Exception"
  const prefix = `${errorType}:`
  const remoteMessage = head.startsWith(prefix)
    ? head.slice(prefix.length).replace(/^ /, "")
    : head === errorType || head === ""
    ? raised?.message ?? ""
    : head
  return new RemoteError({
    method,
    id,
    errorType: bounded(errorType, 200),
    remoteMessage: headAndTail(remoteMessage, REMOTE_TEXT_CHARS),
    traceback: headAndTail(traceback, REMOTE_TEXT_CHARS),
  })
}

/**
 * A schema complaint, bounded.
 *
 * @internal
 */
export const formatParseError = (error: ParseResult.ParseError): string =>
  headAndTail(ParseResult.TreeFormatter.formatErrorSync(error), DETAIL_CHARS)

const NULL_JSON: Either.Either<string, never> = Either.right("null")

interface Codecs {
  readonly encode: (params: unknown) => Either.Either<unknown, ParseResult.ParseError>
  readonly decode: (result: unknown) => Either.Either<unknown, ParseResult.ParseError>
}

/** Each method's codecs, built on its first call rather than on every call. */
const codecs = new WeakMap<object, Codecs>()

const codecsOf = <P, PI, R, RI>(rpc: Rpc<P, PI, R, RI>) => {
  let found = codecs.get(rpc)
  if (found === undefined) {
    found = {
      encode: withFastPath(rpc.params.ast, false, Schema.encodeEither(rpc.params) as Codecs["encode"]),
      decode: withFastPath(rpc.result.ast, true, Schema.decodeUnknownEither(rpc.result)),
    }
    codecs.set(rpc, found)
  }
  return found as {
    readonly encode: (params: P) => Either.Either<PI, ParseResult.ParseError>
    readonly decode: (result: unknown) => Either.Either<R, ParseResult.ParseError>
  }
}

/** `value`, or the error of a request above the frame limit: checked before anything is written, as the worker checks it. */
const withinLimit = <A>(
  method: string,
  maxFrameBytes: number,
  bodyBytes: number,
  value: A,
): Either.Either<A, InvalidArgumentError> => {
  const bytes = requestBytes(method, bodyBytes)
  return bytes > maxFrameBytes
    ? Either.left(
      new InvalidArgumentError({
        where: method,
        detail: `the request takes ${bytes} bytes, above maxFrameBytes ${maxFrameBytes}`,
      }),
    )
    : Either.right(value)
}

/**
 * The params as JSON text (its long strings as their bytes, when they need
 * no escaping: see `longStrings.ts`), or why they cannot be sent: too deep or circular
 * (checked first: the schema itself would overflow the stack), breaking the
 * schema, not JSON, or above the frame limit.
 *
 * @internal
 */
export const encodeParams = <P, PI, R, RI>(
  rpc: Rpc<P, PI, R, RI>,
  params: P,
  maxFrameBytes: number,
): Either.Either<string | SplitJson, InvalidArgumentError> => {
  // `hello`, `capability_probe`, `shutdown`: nothing to check or encode.
  if (params === null && rpc.params === (Schema.Null as unknown)) return NULL_JSON
  const invalid = (detail: string) => Either.left(new InvalidArgumentError({ where: rpc.method, detail }))
  const problem = typeof params === "object" ? jsonProblem(params, { plainJson: false }) : undefined
  if (problem !== undefined) return invalid(`the params cannot be sent: ${problem}`)
  const encoded = codecsOf(rpc).encode(params)
  if (Either.isLeft(encoded)) return invalid(formatParseError(encoded.left))
  let json: string
  try {
    const split = splitJson(encoded.right)
    if (split !== undefined) return withinLimit(rpc.method, maxFrameBytes, split.bytes, split)
    json = JSON.stringify(encoded.right)
  } catch (error) {
    return invalid(`the params cannot be encoded as JSON: ${bounded((error as Error).message)}`)
  }
  // A UTF-16 unit is at most 3 UTF-8 bytes: most requests need no exact count.
  if (requestBytes(rpc.method, json.length * 3) <= maxFrameBytes) return Either.right(json)
  return withinLimit(rpc.method, maxFrameBytes, Buffer.byteLength(json, "utf8"), json)
}

/**
 * The answer as the method's result: a `RemoteError` for `ok: false`, a
 * `ProtocolError` for a result that breaks the schema.
 *
 * @internal
 */
export const decodeAnswer = <P, PI, R, RI>(
  rpc: Rpc<P, PI, R, RI>,
  envelope: Envelope,
  id: number,
  pid: number,
): Either.Either<R, CallError> => {
  if (envelope.ok !== true) return Either.left(remoteError(rpc.method, id, envelope))
  const decoded = codecsOf(rpc).decode(envelope.result ?? null)
  return Either.isRight(decoded) ? Either.right(decoded.right) : Either.left(
    new ProtocolError({ method: rpc.method, id, pid, reason: "InvalidResult", detail: formatParseError(decoded.left) }),
  )
}

/** A `hello` answer as a protocol 1 worker sends it. */
const SAMPLE_HELLO = { protocol_version: 1, workload_name: "" }

/**
 * Builds `hello`'s codecs and runs their code once (~2 ms the first time in
 * a process, mostly the schema's compilation): the launcher calls it while
 * Python boots (~80 ms), so the handshake costs what any later `hello` does.
 *
 * @internal
 */
export const prepareHandshake = (): void => {
  codecsOf(Rpcs.hello).decode(SAMPLE_HELLO)
}
