/**
 * One connection to one worker: framing, request ids, the one-request wire
 * (a FIFO lock), matching answers to requests. It closes with a typed reason
 * and reports it; it never kills or waits for the process: what a close means
 * for the process is the manager's business.
 *
 * @internal
 */
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type * as Clock from "effect/Clock"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberSet from "effect/FiberSet"
import { constFalse } from "effect/Function"
import type * as Scope from "effect/Scope"
import { Buffer } from "node:buffer"
import { type CallError, ProtocolError, RpcTimeoutError } from "../WorkerError.ts"
import {
  describeFault,
  encodeRequestFrame,
  FrameDecoder,
  type FrameFault,
  HEADER_BYTES,
  PIECE_UNITS,
  requestFramePieces,
  splitFramePieces,
} from "./frame.ts"
import { bounded } from "./json.ts"
import type { SplitJson } from "./longStrings.ts"
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

/**
 * Where an unguarded call leaves what its interruption must run.
 *
 * @internal
 */
export interface CancelSlot {
  cancel: (() => void) | undefined
}

/**
 * An unguarded call, guarded: interrupted, it runs what its slot holds.
 *
 * @internal
 */
export const cancelOnInterrupt = <A, E>(self: Effect.Effect<A, E>, slot: CancelSlot): Effect.Effect<A, E> =>
  Effect.onInterrupt(self, () => Effect.sync(() => slot.cancel?.()))

/** @internal */
export interface Request {
  readonly method: string
  /**
   * The params as JSON text (or split around its long strings), already
   * checked against the frame limit. Emptied once framed: see `granted`.
   */
  paramsJson: string | SplitJson
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
  /**
   * `call` for a caller whose own mask sees its interruption: the caller
   * runs it where it can be interrupted and must run `slot.cancel` when it
   * is. A `Lost` call resumes with `lost`'s effect.
   */
  readonly unguarded: <A, E>(
    request: Request,
    settle: (envelope: Envelope, id: number) => Either.Either<A, CallError>,
    lost: (lost: Lost) => Effect.Effect<A, E>,
    slot: CancelSlot,
  ) => Effect.Effect<A, CallError | E>
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

/**
 * The frame's text, a leading byte order mark dropped as the strict decoder
 * drops it; throws a `TypeError` for bytes that are not UTF-8. Decoded
 * loosely first (~4x faster than the strict decoder): only a text that holds
 * U+FFFD, a replaced byte or a real one, is decoded again strictly.
 */
const textOf = (bytes: Uint8Array): string => {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8")
  if (text.includes("\uFFFD")) return utf8.decode(bytes)
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text
}

/** Each method's envelope text between the id and the params, made once for every connection. */
const methodParts = new Map<string, string>()

/** A request's envelope up to its params: `{"id":N,"method":"...","params":`. */
const headOf = (id: number, method: string): string => {
  let part = methodParts.get(method)
  if (part === undefined) {
    part = `,"method":${JSON.stringify(method)},"params":`
    methodParts.set(method, part)
  }
  return `{"id":${id}${part}`
}

/** Where a call is: waiting for the wire, written, or over. */
type Phase = "queued" | "sent" | "done"

/** The call on the wire: what its answer, or the connection's close, settles. */
interface Pending {
  readonly id: number | null
  readonly method: string
  readonly stats: { requestBytes: number; responseBytes: number } | undefined
  readonly answered: (envelope: Envelope) => void
  readonly failed: (error: CallError | Lost) => void
}

/** A call the wire is handed: it takes its id, and is then the one pending. */
interface Granted extends Pending {
  readonly request: Request
  readonly onWire: (id: number) => void
}

/** What a connection lends its calls: made once per connection. */
interface Wire {
  readonly pid: number
  readonly lock: Lock.Lock
  readonly clock: Clock.Clock
  readonly reason: () => CloseReason | undefined
  readonly close: (why: CloseReason) => void
  /** Puts a granted call on the wire: its id, then its frame. */
  readonly put: (call: Granted) => void
  /** A call is over: it leaves the count of calls in flight. */
  readonly left: () => void
}

/**
 * One call, as plain synchronous state: queued for the wire, then on it,
 * then done. Written by the grant of the permit, which the answer before
 * it releases in the same stack; settled in the stack that read its
 * answer; `resume` gets the outcome once. `cancel` is what an
 * interruption runs: a queued call leaves the queue; one on the wire
 * returns at once, but its answer still holds the wire until it comes (or
 * the connection closes), and its deadline still closes the connection.
 * One object with its methods, not a closure each: this runs on every call.
 * One class for every connection (a class per connection would give its
 * objects a shape each, and the calls' property reads would go megamorphic
 * as connections come and go).
 */
class Call<A, E> implements Pending {
  phase: Phase = "queued"
  abandoned = false
  id: number | null = null
  timer: Fiber.RuntimeFiber<void> | undefined = undefined
  leave: () => boolean = constFalse

  constructor(
    readonly wire: Wire,
    readonly request: Request,
    readonly settle: (envelope: Envelope, id: number) => Either.Either<A, CallError>,
    readonly lost: (lost: Lost) => Effect.Effect<A, E>,
    /** Dropped with the outcome: a finished call keeps nothing reachable (see `unguarded`). */
    private resume: ((outcome: Effect.Effect<A, CallError | E>) => void) | undefined,
  ) {}

  get method() {
    return this.request.method
  }
  get stats() {
    return this.request.stats
  }

  onWire(id: number) {
    this.id = id
    this.phase = "sent"
  }

  /** Resumes the caller, once. */
  outcome(outcome: Effect.Effect<A, CallError | E>) {
    const resume = this.resume
    this.resume = undefined
    resume?.(outcome)
  }

  queuedTimeout() {
    return new RpcTimeoutError({
      method: this.request.method,
      id: null,
      pid: this.wire.pid,
      timeoutMillis: this.request.timeoutMillis,
    })
  }

  /** The call is over: it leaves the count, and its timer stops. */
  finish() {
    this.phase = "done"
    this.wire.left()
    if (this.timer !== undefined) this.timer.unsafeInterruptAsFork(FiberId.none)
  }

  /** Over, and the wire passes on before the caller resumes: the next request goes out first. */
  complete(outcome: Effect.Effect<A, CallError | E> | undefined) {
    this.finish()
    this.wire.lock.release()
    if (outcome === undefined || this.abandoned) this.resume = undefined
    else this.outcome(outcome)
  }

  answered(envelope: Envelope) {
    if (this.abandoned) return this.complete(undefined)
    let outcome: Effect.Effect<A, CallError>
    try {
      const result = this.settle(envelope, this.id!)
      // Settled before the wire passes on: a result that breaks its schema
      // closes the connection before the next request could be written.
      if (Either.isLeft(result) && result.left._tag === "ProtocolError") {
        this.wire.close(CloseReason.Faulted({ error: result.left }))
      }
      outcome = result
    } catch (defect) {
      outcome = Effect.die(defect)
    }
    this.complete(outcome)
  }

  failed(error: CallError | Lost) {
    this.complete(error instanceof Lost ? this.lost(error) : Effect.fail(error))
  }

  /**
   * Why the call cannot be written now, as its outcome: the connection
   * closed, or its deadline passed (writing with no time left would only make
   * the worker's state untrustworthy). `undefined` when it can.
   */
  unsendable(): Effect.Effect<A, CallError | E> | undefined {
    const { request, wire } = this
    const reason = wire.reason()
    if (reason !== undefined) return this.lost(new Lost({ reason, sent: false, method: request.method, id: null }))
    if (request.deadline !== undefined && wire.clock.unsafeCurrentTimeMillis() >= request.deadline) {
      return Effect.fail(this.queuedTimeout())
    }
    return undefined
  }

  granted(): boolean {
    const refused = this.unsendable()
    if (refused !== undefined) {
      this.finish()
      this.outcome(refused)
      return false
    }
    this.wire.put(this)
    return true
  }

  deadlinePassed() {
    this.timer = undefined
    if (this.phase === "queued") {
      // Never written: the connection stays open.
      this.leave()
      this.finish()
      this.outcome(Effect.fail(this.queuedTimeout()))
    } else if (this.phase === "sent") {
      this.wire.close(CloseReason.TimedOut({
        error: new RpcTimeoutError({
          method: this.request.method,
          id: this.id,
          pid: this.wire.pid,
          timeoutMillis: this.request.timeoutMillis,
        }),
      }))
    }
  }

  cancel() {
    if (this.phase === "queued") {
      this.leave()
      this.finish()
      this.resume = undefined
    } else if (this.phase === "sent") {
      this.abandoned = true
    }
  }
}

/** @internal */
export const make = (options: {
  readonly transport: Transport
  readonly maxFrameBytes: number
  readonly pid: number
}): Effect.Effect<Connection, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { transport, pid } = options
    // Deadline timers run here, on the owner's clock: closing the scope interrupts them.
    const timers = yield* FiberSet.make()
    const runTimer = yield* FiberSet.runtime(timers)()
    const clock = yield* Effect.clock
    const lock = Lock.make()
    const closedWith = yield* Deferred.make<CloseReason>()
    const decoder = new FrameDecoder(options.maxFrameBytes)

    let nextId = 1
    let pending: Pending | undefined
    let reason: CloseReason | undefined
    let waitingCalls = 0
    // A request still going out in pieces: no answer can be its own yet.
    let writing = false

    const close = (why: CloseReason) => {
      if (reason !== undefined) return
      reason = why
      transport.destroy()
      const waiting = pending
      pending = undefined
      if (waiting !== undefined) waiting.failed(pendingFailure(waiting, why))
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
        envelope = JSON.parse(textOf(bytes))
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
      if (writing) {
        return protocolFault(
          "UnsolicitedFrame",
          `an answer to #${waiting.id} arrived before its request was written whole`,
        )
      }
      pending = undefined
      if (waiting.stats !== undefined) waiting.stats.responseBytes = HEADER_BYTES + bytes.length
      waiting.answered(message)
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

    /** Writes the pieces as the stream takes them, each encoded only then; stops if the connection closes. */
    const send = (pieces: Iterator<Uint8Array>, next = pieces.next()): void => {
      writing = true
      let piece = next
      try {
        while (reason === undefined && !piece.done) {
          const more = transport.write(piece.value)
          // Taken one ahead: once the last is handed to the stream, the request is written whole.
          piece = pieces.next()
          if (!more && !piece.done) {
            const waiting = piece
            return transport.onDrain(() => send(pieces, waiting))
          }
        }
      } catch {
        return refused()
      }
      writing = false
    }

    /** The stream threw on a write: what went out of the request is unknown, so nothing more can. */
    const refused = () => {
      writing = false
      close(CloseReason.Ended({ truncated: undefined }))
    }

    const put = (call: Granted) => {
      const { request } = call
      const id = nextId++
      call.onWire(id)
      pending = call
      const head = headOf(id, request.method)
      const params = request.paramsJson
      // Framed, the text is not needed. V8 may allocate requests in the old generation (it
      // moves an object literal's site there once it has seen its objects alive at a
      // scavenge), and a dead old request keeps what it points to through every scavenge
      // until a full collection: measured, ~2 KB promoted per 1 KiB `trainWindow`.
      request.paramsJson = ""
      if (typeof params === "string" && params.length <= PIECE_UNITS) {
        const frame = encodeRequestFrame(head, params)
        if (request.stats !== undefined) request.stats.requestBytes = frame.length
        try {
          transport.write(frame)
        } catch {
          refused()
        }
      } else {
        const { bytes, pieces } = typeof params === "string"
          ? requestFramePieces(head, params)
          : splitFramePieces(head, params)
        if (request.stats !== undefined) request.stats.requestBytes = bytes
        send(pieces)
      }
    }
    const wire: Wire = {
      pid,
      lock,
      clock,
      reason: () => reason,
      close,
      put,
      left: () => {
        waitingCalls--
      },
    }

    /** Starts `call`: false when it is over at once (closed, or out of time before it could queue). */
    const register = <A, E>(call: Call<A, E>): boolean => {
      const refused = call.unsendable()
      if (refused !== undefined) {
        call.outcome(refused)
        return false
      }
      const { deadline } = call.request
      waitingCalls++
      call.leave = lock.acquire(() => call.granted())
      if (call.phase === "done") return false
      if (deadline !== undefined) {
        // Its own fiber, not the caller's: an abandoned call's deadline still holds.
        call.timer = runTimer(Effect.zipRight(
          clock.sleep(Duration.millis(deadline - clock.unsafeCurrentTimeMillis())),
          Effect.sync(() => call.deadlinePassed()),
        ))
      }
      return true
    }

    // No canceler, so no `onInterrupt` of `Effect.async`'s own (six steps of
    // the fiber on every call): the caller's mask runs `slot.cancel` instead.
    const unguarded = <A, E>(
      request: Request,
      settle: (envelope: Envelope, id: number) => Either.Either<A, CallError>,
      lost: (lost: Lost) => Effect.Effect<A, E>,
      slot: CancelSlot,
    ): Effect.Effect<A, CallError | E> =>
      Effect.async<A, CallError | E>((resume) => {
        // Dropped once the call is over (or never kept, when it is over at once): a canceler
        // held by the slot keeps the whole call reachable, and V8 then promotes every call's
        // garbage (scavenges of 5-8 ms, not 1).
        const call = new Call(wire, request, settle, lost, (outcome) => {
          slot.cancel = undefined
          resume(outcome)
        })
        if (register(call)) slot.cancel = () => call.cancel()
      })

    const call = <A>(
      request: Request,
      settle: (envelope: Envelope, id: number) => Either.Either<A, CallError>,
    ): Effect.Effect<A, CallError | Lost> =>
      Effect.suspend(() => {
        const slot: CancelSlot = { cancel: undefined }
        return cancelOnInterrupt(unguarded(request, settle, Effect.fail<Lost>, slot), slot)
      })

    return {
      call,
      unguarded,
      closed: Deferred.await(closedWith),
      reason: () => reason,
      close,
      inFlight: () => waitingCalls,
      end: () => close(CloseReason.Ended({ truncated: decoder.end() })),
    } satisfies Connection
  })
