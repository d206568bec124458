/**
 * The protocol client: request ids, one call on the wire at a time, the
 * pending call, and the one-way trip from "open" to "closed with a cause".
 *
 * Frames are handled synchronously in the socket's `data` callback (no queue
 * hop on the hot path). Anything that breaks the stream, or a call that passes
 * its deadline on the wire, closes the client: the pending call fails with the
 * cause, the worker is killed, and every later call fails at once.
 *
 * An interrupted caller returns at once, but keeps the wire's permit until the
 * worker answers the abandoned request (or the call's deadline passes, which
 * closes the client), so the next request never reads a stale answer.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { Buffer } from "node:buffer"
import type * as Net from "node:net"
import type { Rpc } from "../Protocol.ts"
import {
  type CallError,
  InvalidArgumentError,
  ProtocolError,
  RemoteError,
  RpcTimeoutError,
  WorkerClosedError,
  WorkerExitedError,
} from "../WorkerError.ts"
import { encodeRequestFrame, FrameDecoder, type FrameFault, HEADER_BYTES } from "./frame.ts"
import * as Lock from "./lock.ts"
import type { WorkerProcess } from "./process.ts"

/** Why the client closed. `ScopeClosed` is the orderly end. */
export type CloseCause = WorkerExitedError | RpcTimeoutError | ProtocolError | { readonly _tag: "ScopeClosed" }

interface Envelope {
  readonly id: number
  readonly ok: boolean
  readonly result?: unknown
  readonly error?: unknown
  readonly error_type?: unknown
  readonly traceback?: unknown
}

interface Pending {
  readonly id: number
  readonly method: string
  readonly answer: Deferred.Deferred<Envelope, CloseCause>
}

/** @internal */
export interface Client {
  readonly call: <P, PI, R, RI>(
    rpc: Rpc<P, PI, R, RI>,
    params: P,
    timeout: Option.Option<Duration.Duration>,
  ) => Effect.Effect<R, CallError>
  /** Closes the client (idempotent); the pending call, if any, fails with `WorkerClosedError`. */
  readonly close: Effect.Effect<void>
}

/** How long the client waits, after the socket closes, for the exit status that explains it. */
const EXIT_SETTLE = Duration.seconds(1)

/** Longest `{"id":N,"method":` prefix digits: ids are JavaScript integers. */
const MAX_ID_DIGITS = 16

const utf8 = new TextDecoder("utf-8", { fatal: true })

const describeFault = (fault: FrameFault): string =>
  fault._tag === "FrameTooLarge"
    ? `frame header announces ${fault.length} bytes, above maxFrameBytes ${fault.maxFrameBytes}; nothing was allocated`
    : `the connection ended ${fault.received} bytes into a ${fault.expected}-byte frame`

const TRACEBACK_HEADER = "Traceback (most recent call last):"

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
 */
const remoteError = (method: string, id: number, envelope: Envelope): RemoteError => {
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
  return new RemoteError({ method, id, errorType, remoteMessage, traceback })
}

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
      encode: Schema.encodeEither(rpc.params) as Codecs["encode"],
      decode: Schema.decodeUnknownEither(rpc.result),
    }
    codecs.set(rpc, found)
  }
  return found as {
    readonly encode: (params: P) => Either.Either<PI, ParseResult.ParseError>
    readonly decode: (result: unknown) => Either.Either<R, ParseResult.ParseError>
  }
}

/** @internal */
export const make = (options: {
  readonly socket: Net.Socket
  readonly process: WorkerProcess
  readonly maxFrameBytes: number
}): Effect.Effect<Client, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { socket, process: proc } = options
    const pid = proc.pid
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const lock = Lock.make()
    const closedWith = yield* Deferred.make<CloseCause>()
    const decoder = new FrameDecoder(options.maxFrameBytes)

    let nextId = 1
    let pending: Pending | undefined
    let cause: CloseCause | undefined
    // Set the moment the stream is known to be ending, before the cause is
    // known (it waits for the exit status): calls then wait instead of writing.
    let ending = false

    const close = (why: CloseCause) => {
      if (cause !== undefined) return
      cause = why
      ending = true
      if (why._tag === "RpcTimeoutError" || why._tag === "ProtocolError") proc.signalGroup("SIGKILL")
      socket.destroy()
      const waiting = pending
      pending = undefined
      if (waiting !== undefined) Deferred.unsafeDone(waiting.answer, Exit.fail(why))
      Deferred.unsafeDone(closedWith, Exit.succeed(why))
    }

    const protocolFault = (reason: ProtocolError["reason"], detail: string, id: number | null = pending?.id ?? null) =>
      close(new ProtocolError({ method: pending?.method ?? null, id, pid, reason, detail }))

    // The socket ended or the process exited: wait briefly for the exit
    // status and the stderr tail, so the error says why. A frame cut short by
    // the end is still a ProtocolError, told with the same facts.
    const workerGone = (reason: WorkerExitedError["reason"], truncated?: FrameFault) => {
      if (ending) return
      ending = true
      runFork(Effect.gen(function* () {
        const status = yield* proc.exited.pipe(Effect.timeoutOption(EXIT_SETTLE))
        const stderrTail = yield* proc.stderrTail
        const exit = {
          pid,
          exitCode: Option.isSome(status) ? status.value.exitCode : null,
          signal: Option.isSome(status) ? status.value.signal : null,
          stderrTail,
        }
        if (truncated !== undefined) {
          const after = exit.signal !== null
            ? `; the worker was then killed by ${exit.signal}`
            : exit.exitCode !== null
            ? `; the worker then exited with code ${exit.exitCode}`
            : ""
          return close(
            new ProtocolError({
              method: pending?.method ?? null,
              id: pending?.id ?? null,
              pid,
              reason: truncated._tag,
              detail: describeFault(truncated) + after,
              stderrTail,
            }),
          )
        }
        close(
          new WorkerExitedError({
            method: pending?.method ?? null,
            reason: Option.isSome(status) ? "ProcessExited" : reason,
            ...exit,
          }),
        )
      }))
    }

    const onFrame = (bytes: Uint8Array) => {
      let envelope: unknown
      try {
        envelope = JSON.parse(utf8.decode(bytes))
      } catch (error) {
        const isUtf8 = error instanceof TypeError
        return protocolFault(
          isUtf8 ? "InvalidUtf8" : "InvalidJson",
          isUtf8
            ? `a ${bytes.length}-byte frame is not valid UTF-8`
            : `${(error as Error).message}; frame starts ${
              JSON.stringify(Buffer.from(bytes.subarray(0, 120)).toString())
            }`,
        )
      }
      if (typeof envelope !== "object" || envelope === null || Array.isArray(envelope)) {
        return protocolFault(
          "InvalidEnvelope",
          `frame is not a JSON object: ${JSON.stringify(envelope)?.slice(0, 120)}`,
        )
      }
      const message = envelope as Envelope
      const waiting = pending
      if (waiting === undefined) {
        return protocolFault(
          "UnsolicitedFrame",
          `a frame with id ${JSON.stringify(message.id)} arrived while no call was waiting`,
          null,
        )
      }
      if (message.id === null && message.ok === false) {
        // The worker could not read a request: it answers once without an id.
        const said = typeof message.error === "string" ? message.error.split("\n")[0] : JSON.stringify(message.error)
        return protocolFault("UnexpectedId", `the worker refused the request #${waiting.id} without an id: ${said}`)
      }
      if (message.id !== waiting.id) {
        return protocolFault(
          "UnexpectedId",
          `expected the answer to id ${waiting.id}, got id ${JSON.stringify(message.id)}`,
        )
      }
      if (typeof message.ok !== "boolean") {
        return protocolFault("InvalidEnvelope", "the answer's `ok` field is missing or not a boolean")
      }
      pending = undefined
      Deferred.unsafeDone(waiting.answer, Exit.succeed(message))
    }

    socket.on("data", (chunk: Uint8Array) => {
      if (cause !== undefined) return
      const { fault, frames } = decoder.push(chunk)
      for (const frame of frames) {
        if (cause !== undefined) return
        onFrame(frame)
      }
      if (fault !== undefined) protocolFault(fault._tag, describeFault(fault))
    })
    socket.on("end", () => workerGone("ConnectionClosed", decoder.end()))
    socket.on("error", () => workerGone("ConnectionClosed"))
    socket.on("close", () => workerGone("ConnectionClosed"))
    yield* Effect.forkScoped(Effect.zipRight(proc.exited, Effect.sync(() => workerGone("ProcessExited"))))
    yield* Effect.addFinalizer(() => Effect.sync(() => close({ _tag: "ScopeClosed" })))

    /** What a call gets once the client is closed. */
    const closedError = (method: string, why: CloseCause): CallError =>
      why._tag === "WorkerExitedError"
        ? new WorkerExitedError({ ...why, method })
        : why._tag === "ScopeClosed"
        ? new WorkerClosedError({ method })
        : new WorkerClosedError({ method, cause: why })

    /** What the call on the wire gets when the client closes under it: the cause itself. */
    const pendingError = (method: string, why: CloseCause): CallError =>
      why._tag === "RpcTimeoutError" || why._tag === "ProtocolError" ? why : closedError(method, why)

    /**
     * Awaits the answer within the deadline; past it, the worker's state
     * cannot be trusted, so the client closes.
     */
    const settle = (waiting: Pending, deadline: number | undefined, timeoutMillis: number) =>
      deadline === undefined ? Deferred.await(waiting.answer) : Deferred.await(waiting.answer).pipe(
        // Interruptible even when the caller is not (the layer's release calls
        // `shutdown` from a finalizer): otherwise the timeout could not fire.
        Effect.interruptible,
        Effect.timeoutFail({
          duration: Math.max(0, deadline - Date.now()),
          onTimeout: () => {
            const error = new RpcTimeoutError({ method: waiting.method, id: waiting.id, pid, timeoutMillis })
            close(error)
            return error
          },
        }),
      )

    const encodeParams = <P, PI, R, RI>(
      rpc: Rpc<P, PI, R, RI>,
      params: P,
    ): Either.Either<string, InvalidArgumentError> => {
      const invalid = (detail: string) => Either.left(new InvalidArgumentError({ where: rpc.method, detail }))
      const encoded = codecsOf(rpc).encode(params)
      if (Either.isLeft(encoded)) return invalid(ParseResult.TreeFormatter.formatErrorSync(encoded.left))
      let json: string
      try {
        json = JSON.stringify(encoded.right)
      } catch (error) {
        return invalid(`the params cannot be encoded as JSON: ${(error as Error).message}`)
      }
      // Checked here, before anything is written: the worker enforces the same limit.
      const bytes = HEADER_BYTES + `{"id":,"method":${JSON.stringify(rpc.method)},"params":}`.length + MAX_ID_DIGITS +
        Buffer.byteLength(json, "utf8")
      return bytes > options.maxFrameBytes
        ? invalid(`the request takes ${bytes} bytes, above maxFrameBytes ${options.maxFrameBytes}`)
        : Either.right(json)
    }

    /** Success, a RemoteError, or (closing the client) a ProtocolError for a result that breaks its schema. */
    const outcome = <R, RI>(
      rpc: Rpc<unknown, unknown, R, RI>,
      id: number,
      envelope: Envelope,
    ): Effect.Effect<R, CallError> => {
      if (!envelope.ok) return Effect.fail(remoteError(rpc.method, id, envelope))
      const decoded = codecsOf(rpc).decode(envelope.result ?? null)
      if (Either.isRight(decoded)) return Effect.succeed(decoded.right)
      const error = new ProtocolError({
        method: rpc.method,
        id,
        pid,
        reason: "InvalidResult",
        detail: ParseResult.TreeFormatter.formatErrorSync(decoded.left),
      })
      close(error)
      return Effect.fail(error)
    }

    const call = <P, PI, R, RI>(
      rpc: Rpc<P, PI, R, RI>,
      params: P,
      timeout: Option.Option<Duration.Duration>,
    ): Effect.Effect<R, CallError> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          const method = rpc.method
          if (cause !== undefined) return yield* Effect.fail(closedError(method, cause))
          const paramsJson = encodeParams(rpc, params)
          if (Either.isLeft(paramsJson)) return yield* paramsJson.left
          const timeoutMillis = Option.isSome(timeout) ? Duration.toMillis(timeout.value) : 0
          const deadline = Option.isSome(timeout) ? Date.now() + timeoutMillis : undefined
          const queuedTimeout = () => new RpcTimeoutError({ method, id: null, pid, timeoutMillis })

          // A queued call that times out never reached the wire: the service stays open.
          const ticket = lock.enqueue()
          const queued = yield* Effect.exit(restore(
            deadline === undefined ? ticket.wait : ticket.wait.pipe(
              Effect.interruptible,
              Effect.timeoutFail({ duration: timeoutMillis, onTimeout: queuedTimeout }),
            ),
          ))
          if (Exit.isFailure(queued)) {
            ticket.cancel()
            return yield* Effect.failCause(queued.cause)
          }
          if (ending) {
            lock.release()
            return yield* restore(
              Effect.flatMap(Deferred.await(closedWith), (why) => Effect.fail(closedError(method, why))),
            )
          }
          // Writing with no time left would only make the worker's state untrustworthy.
          if (deadline !== undefined && deadline - Date.now() <= 0) {
            lock.release()
            return yield* queuedTimeout()
          }

          const id = nextId++
          let frame: Buffer
          try {
            frame = encodeRequestFrame(`{"id":${id},"method":${JSON.stringify(method)},"params":`, paramsJson.right)
          } catch (error) {
            lock.release()
            return yield* new InvalidArgumentError({
              where: method,
              detail: `the request cannot be encoded: ${(error as Error).message}`,
            })
          }
          const waiting: Pending = { id, method, answer: Deferred.unsafeMake(FiberId.none) }
          pending = waiting
          socket.write(frame)

          const answered = yield* Effect.exit(restore(settle(waiting, deadline, timeoutMillis)))
          if (Exit.isInterrupted(answered)) {
            // Not tied to a scope, whose closing would interrupt it before the
            // `shutdown` request is written: it always ends, because `close`
            // fails the pending answer.
            yield* Effect.forkDaemon(
              Effect.ensuring(Effect.exit(settle(waiting, deadline, timeoutMillis)), Effect.sync(lock.release)),
            )
            return yield* Effect.interrupt
          }
          // Settled before the permit passes on: a result that breaks its schema
          // closes the client before the next request could be written.
          const result: Effect.Effect<R, CallError> = Exit.isSuccess(answered)
            ? outcome(rpc as Rpc<unknown, unknown, R, RI>, id, answered.value)
            : Option.match(Cause.failureOption(answered.cause), {
              onNone: () => Effect.failCause(answered.cause as Cause.Cause<never>),
              onSome: (why) => Effect.fail(pendingError(method, why)),
            })
          lock.release()
          return yield* result
        })
      )

    return {
      call,
      close: Effect.sync(() => close({ _tag: "ScopeClosed" })),
    } satisfies Client
  })
