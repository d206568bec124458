/**
 * One connection to one worker: framing, request ids, the one-request wire
 * (a FIFO lock), matching answers to requests. It closes with a typed reason
 * and reports it; it never kills or waits for the process: what a close means
 * for the process is the manager's business.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as FiberSet from "effect/FiberSet"
import type * as Scope from "effect/Scope"
import { Buffer } from "node:buffer"
import { type CallError, ProtocolError, RpcTimeoutError } from "../WorkerError.ts"
import { describeFault, encodeRequestFrame, FrameDecoder, type FrameFault, HEADER_BYTES } from "./frame.ts"
import { bounded } from "./json.ts"
import * as Lock from "./lock.ts"
import type { Transport } from "./transport.ts"

/**
 * Why a connection closed.
 *
 * @internal
 */
export type CloseReason = Data.TaggedEnum<{
  /** The worker's end closed or broke; `truncated` when a frame was cut short. */
  Ended: { readonly truncated: FrameFault | undefined }
  /** The worker broke the protocol: the stream cannot be trusted. */
  Faulted: { readonly error: ProtocolError }
  /** An answer did not come in time: the worker's state cannot be trusted. */
  TimedOut: { readonly error: RpcTimeoutError }
  /** Closed by its owner. */
  // deno-lint-ignore ban-types
  Closed: {}
}>

/** @internal */
export const CloseReason = Data.taggedEnum<CloseReason>()

/**
 * A call that got no answer because the connection closed; `sent` says
 * whether its request reached the wire.
 *
 * @internal
 */
export class Lost extends Data.TaggedError("Lost")<{
  readonly reason: CloseReason
  readonly sent: boolean
  readonly method: string
  readonly id: number | null
}> {}

/** @internal */
export interface Envelope {
  readonly id?: unknown
  readonly ok?: unknown
  readonly result?: unknown
  readonly error?: unknown
  readonly error_type?: unknown
  readonly traceback?: unknown
}

/** @internal */
export interface Request {
  readonly method: string
  /** The params as JSON text, already checked against the frame limit. */
  readonly paramsJson: string
  /** Absolute, in `Clock` milliseconds; `undefined` for no deadline. */
  readonly deadline: number | undefined
  readonly timeoutMillis: number
  /** Filled in as the frames go by, for spans and metrics. */
  readonly stats?: { requestBytes: number; responseBytes: number } | undefined
}

/** @internal */
export interface Connection {
  /**
   * Sends one request when the wire is free and settles its answer with
   * `settle` before the wire passes on (a result that breaks its schema
   * closes the connection before another request is written).
   */
  readonly call: <A>(
    request: Request,
    settle: (envelope: Envelope, id: number) => Either.Either<A, CallError>,
  ) => Effect.Effect<A, CallError | Lost>
  /** Resolves with the reason once the connection has closed. */
  readonly closed: Effect.Effect<CloseReason>
  /** The reason, once closed. */
  readonly reason: () => CloseReason | undefined
  readonly close: (reason: CloseReason) => void
  /** Calls waiting for the wire, the one on it included. */
  readonly inFlight: () => number
  /** Closes as the stream's end would: `Ended`, with the frame cut short if one was. */
  readonly end: () => void
}

const utf8 = new TextDecoder("utf-8", { fatal: true })

interface Pending {
  readonly id: number
  readonly method: string
  readonly answer: Deferred.Deferred<Envelope, CallError | Lost>
  readonly stats: { requestBytes: number; responseBytes: number } | undefined
}

/** @internal */
export const make = (options: {
  readonly transport: Transport
  readonly maxFrameBytes: number
  readonly pid: number
}): Effect.Effect<Connection, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { transport, pid } = options
    // Abandoned answers are awaited here: closing the scope interrupts them.
    const drains = yield* FiberSet.make()
    const lock = Lock.make()
    const closedWith = yield* Deferred.make<CloseReason>()
    const decoder = new FrameDecoder(options.maxFrameBytes)

    let nextId = 1
    let pending: Pending | undefined
    let reason: CloseReason | undefined
    let waitingCalls = 0

    const close = (why: CloseReason) => {
      if (reason !== undefined) return
      reason = why
      transport.destroy()
      const waiting = pending
      pending = undefined
      if (waiting !== undefined) Deferred.unsafeDone(waiting.answer, Exit.fail(pendingFailure(waiting, why)))
      Deferred.unsafeDone(closedWith, Exit.succeed(why))
    }

    /** What the call on the wire gets when the connection closes under it: a fault or timeout itself. */
    const pendingFailure = (waiting: Pending, why: CloseReason): CallError | Lost =>
      why._tag === "Faulted" || why._tag === "TimedOut"
        ? why.error
        : new Lost({ reason: why, sent: true, method: waiting.method, id: waiting.id })

    const protocolFault = (reasonTag: ProtocolError["reason"], detail: string, id = pending?.id ?? null) =>
      close(CloseReason.Faulted({
        error: new ProtocolError({ method: pending?.method ?? null, id, pid, reason: reasonTag, detail }),
      }))

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
        return protocolFault("InvalidEnvelope", `frame is not a JSON object: ${bounded(JSON.stringify(envelope), 120)}`)
      }
      const message = envelope as Envelope
      const waiting = pending
      if (waiting === undefined) {
        return protocolFault(
          "UnsolicitedFrame",
          `a frame with id ${bounded(JSON.stringify(message.id) ?? "undefined", 40)} arrived while no call was waiting`,
          null,
        )
      }
      if (message.id === null && message.ok === false) {
        // The worker could not read a request at all: it answers once without an id.
        const said = typeof message.error === "string" ? message.error.split("\n")[0] : JSON.stringify(message.error)
        return protocolFault(
          "UnexpectedId",
          `the worker refused the request #${waiting.id} without an id: ${bounded(said ?? "", 300)}`,
        )
      }
      if (message.id !== waiting.id) {
        return protocolFault(
          "UnexpectedId",
          `expected the answer to id ${waiting.id}, got id ${bounded(JSON.stringify(message.id) ?? "undefined", 40)}`,
        )
      }
      if (typeof message.ok !== "boolean") {
        return protocolFault("InvalidEnvelope", "the answer's `ok` field is missing or not a boolean")
      }
      pending = undefined
      if (waiting.stats !== undefined) waiting.stats.responseBytes = HEADER_BYTES + bytes.length
      Deferred.unsafeDone(waiting.answer, Exit.succeed(message))
    }

    transport.listen({
      data: (chunk) => {
        if (reason !== undefined) return
        const { fault, frames } = decoder.push(chunk)
        for (const frame of frames) {
          if (reason !== undefined) return
          onFrame(frame)
        }
        if (fault !== undefined) protocolFault(fault._tag, describeFault(fault))
      },
      end: () => close(CloseReason.Ended({ truncated: decoder.end() })),
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => close(CloseReason.Closed())))

    const remaining = (deadline: number) => Effect.map(Clock.currentTimeMillis, (now) => Math.max(0, deadline - now))

    /** Awaits the answer within the deadline; past it the connection closes, since the worker's state is unknown. */
    const settleAnswer = (waiting: Pending, request: Request) =>
      request.deadline === undefined ? Deferred.await(waiting.answer) : Effect.flatMap(
        remaining(request.deadline),
        (left) =>
          Deferred.await(waiting.answer).pipe(
            // Interruptible even when the caller is not (the manager calls
            // `shutdown` from a finalizer): otherwise the timeout could not fire.
            Effect.interruptible,
            Effect.timeoutFail({
              duration: left,
              onTimeout: () => {
                const error = new RpcTimeoutError({
                  method: waiting.method,
                  id: waiting.id,
                  pid,
                  timeoutMillis: request.timeoutMillis,
                })
                close(CloseReason.TimedOut({ error }))
                return error
              },
            }),
          ),
      )

    const release = () => {
      waitingCalls--
      lock.release()
    }

    /** Written and settled once the call holds the wire. Plain combinators: this runs on every call. */
    const onWire = <A>(
      request: Request,
      settle: (envelope: Envelope, id: number) => Either.Either<A, CallError>,
      restore: <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.Effect<X, E, R>,
    ): Effect.Effect<A, CallError | Lost> => {
      const { method } = request
      if (reason !== undefined) {
        release()
        return Effect.fail(new Lost({ reason, sent: false, method, id: null }))
      }
      const id = nextId++
      const waiting: Pending = { id, method, answer: Deferred.unsafeMake(FiberId.none), stats: request.stats }
      pending = waiting
      const frame = encodeRequestFrame(`{"id":${id},"method":${JSON.stringify(method)},"params":`, request.paramsJson)
      if (request.stats !== undefined) request.stats.requestBytes = frame.length
      transport.write(frame)
      return Effect.matchCauseEffect(restore(settleAnswer(waiting, request)), {
        onFailure: (cause) => {
          if (Cause.isInterruptedOnly(cause)) {
            // The abandoned answer still holds the wire: the next request
            // goes out only once it has come (or the connection has closed).
            return Effect.zipRight(
              FiberSet.run(drains, Effect.ensuring(Effect.exit(settleAnswer(waiting, request)), Effect.sync(release))),
              Effect.interrupt,
            )
          }
          release()
          return cause._tag === "Fail" ? Effect.fail(cause.error) : Effect.failCause(cause)
        },
        onSuccess: (envelope) => {
          const result = settle(envelope, id)
          // Settled before the wire passes on: a result that breaks its schema
          // closes the connection before the next request could be written.
          if (Either.isLeft(result) && result.left._tag === "ProtocolError") {
            close(CloseReason.Faulted({ error: result.left }))
          }
          release()
          return result
        },
      })
    }

    const call = <A>(
      request: Request,
      settle: (envelope: Envelope, id: number) => Either.Either<A, CallError>,
    ): Effect.Effect<A, CallError | Lost> =>
      Effect.uninterruptibleMask((restore) => {
        const { method } = request
        if (reason !== undefined) return Effect.fail(new Lost({ reason, sent: false, method, id: null }))
        const queuedTimeout = () => new RpcTimeoutError({ method, id: null, pid, timeoutMillis: request.timeoutMillis })
        // A queued call that times out never reached the wire: the connection stays open.
        waitingCalls++
        const ticket = lock.enqueue()
        const deadline = request.deadline
        const queued = deadline === undefined ? ticket.wait : Effect.flatMap(
          remaining(deadline),
          (left) =>
            ticket.wait.pipe(Effect.interruptible, Effect.timeoutFail({ duration: left, onTimeout: queuedTimeout })),
        )
        return Effect.matchCauseEffect(restore(queued), {
          onFailure: (cause) => {
            waitingCalls--
            ticket.cancel()
            return Effect.failCause(cause)
          },
          onSuccess: () =>
            deadline === undefined ? onWire(request, settle, restore) : Effect.flatMap(remaining(deadline), (left) => {
              // Writing with no time left would only make the worker's state untrustworthy.
              if (left > 0) return onWire(request, settle, restore)
              release()
              return Effect.fail(queuedTimeout())
            }),
        })
      })

    return {
      call,
      closed: Deferred.await(closedWith),
      reason: () => reason,
      close,
      inFlight: () => waitingCalls,
      end: () => close(CloseReason.Ended({ truncated: decoder.end() })),
    } satisfies Connection
  })
