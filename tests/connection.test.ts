/**
 * The connection against the in-memory fake worker, under `TestClock`:
 * deadlines, interruption while queued and on the wire, abandoned answers,
 * close reasons, FIFO order. No Python, no sockets, no real time.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import { Buffer } from "node:buffer"
import * as Connection from "../src/internal/connection.ts"
import { encodeRequestFrame, PIECE_UNITS } from "../src/internal/frame.ts"
import type { Transport } from "../src/internal/transport.ts"
import { ProtocolError, RemoteError } from "../src/WorkerError.ts"
import {
  answer,
  bytes,
  end,
  frameOf,
  garbage,
  header,
  late,
  never,
  remoteFailure,
  type Script,
  send,
  wrongId,
} from "./fake.ts"
import { makeWorker } from "./fake.ts"

const MAX_FRAME_BYTES = 1 << 16
/** Fails a test that would otherwise hang on a fiber that never completes. */
const FAST = 1_000

const setup = (script?: Script) =>
  Effect.gen(function* () {
    const worker = yield* makeWorker(script)
    const connection = yield* Connection.make({
      transport: worker.transport,
      maxFrameBytes: MAX_FRAME_BYTES,
      pid: worker.process.pid,
    })
    return { worker, connection }
  })

/** The worker's `result` as it came, or a `RemoteError` for `ok: false`. */
const settle = (envelope: Connection.Envelope, id: number) =>
  envelope.ok === true ? Either.right(envelope.result) : Either.left(
    new RemoteError({ method: "m", id, errorType: "Exception", remoteMessage: String(envelope.error), traceback: "" }),
  )

/** One call of `method` with `params`, and a deadline `timeout` ms from now if given. */
const call = (connection: Connection.Connection, method: string, params: unknown = null, timeout?: number) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    connection.call({
      method,
      paramsJson: JSON.stringify(params),
      deadline: timeout === undefined ? undefined : now + timeout,
      timeoutMillis: timeout ?? 0,
    }, settle))

/** The typed failure of an exit; throws on success or on a cause without one. */
const failure = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error(`expected a failure, got ${JSON.stringify(exit.value)}`)
  const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
  if (error === undefined) throw new Error(`expected one typed failure, got ${exit.cause}`)
  return error
}

/** Lets every forked fiber run until it suspends (daemon fibers included, which `TestClock` does not wait for). */
const settleFibers = Effect.repeatN(Effect.yieldNow(), 20)

/** Moves the `TestClock` on, then lets what woke up run. */
const advance = (millis: number) =>
  Effect.zipRight(settleFibers, Effect.zipRight(TestClock.adjust(millis), settleFibers))

/** A script answering each request after `millis`, echoing its params as the result. */
const echoAfter = (millis: number): Script => (request) =>
  millis === 0 ? answer(request, request.params) : late(millis, request, request.params)

describe("deadlines", () => {
  it.scoped(
    "a deadline on the wire fails with RpcTimeoutError and its id; the connection closes TimedOut",
    () =>
      Effect.gen(function* () {
        const { connection, worker } = yield* setup(() => never)
        const fiber = yield* Effect.fork(call(connection, "train_window", { n: 1 }, 1_000))
        yield* settleFibers
        expect(worker.requests.map((r) => r.method)).toEqual(["train_window"])
        yield* advance(999)
        expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
        yield* advance(1)
        const error = failure(yield* Fiber.await(fiber))
        expect(error).toMatchObject({ _tag: "RpcTimeoutError", method: "train_window", id: 1, timeoutMillis: 1_000 })
        const reason = connection.reason()
        expect(reason?._tag).toBe("TimedOut")
        expect(reason?._tag === "TimedOut" && reason.error).toBe(error)
        expect(worker.destroyed()).toBe(true)
        // Later calls never reach the wire.
        const after = failure(yield* Effect.exit(call(connection, "hello")))
        expect(after).toMatchObject({ _tag: "Lost", sent: false, id: null, reason: { _tag: "TimedOut" } })
        expect(worker.requests.length).toBe(1)
      }),
    FAST,
  )

  it.scoped(
    "a deadline while queued fails with id null; the call never reaches the wire and the connection stays open",
    () =>
      Effect.gen(function* () {
        const { connection, worker } = yield* setup(echoAfter(500))
        const slow = yield* Effect.fork(call(connection, "slow", "slow"))
        yield* settleFibers
        const queued = yield* Effect.fork(call(connection, "queued", "queued", 100))
        yield* settleFibers
        expect(connection.inFlight()).toBe(2)
        yield* advance(100)
        const error = failure(yield* Fiber.await(queued))
        expect(error).toMatchObject({ _tag: "RpcTimeoutError", method: "queued", id: null, timeoutMillis: 100 })
        expect(connection.reason()).toBeUndefined()
        expect(connection.inFlight()).toBe(1)
        yield* advance(400)
        expect(yield* Fiber.join(slow)).toBe("slow")
        const next = yield* Effect.fork(call(connection, "next", "next"))
        yield* advance(500)
        expect(yield* Fiber.join(next)).toBe("next")
        expect(worker.requests.map((r) => r.method)).toEqual(["slow", "next"])
        expect(connection.reason()).toBeUndefined()
      }),
    FAST,
  )

  it.scoped("an answer just inside the deadline is the call's result", () =>
    Effect.gen(function* () {
      const { connection } = yield* setup(echoAfter(999))
      const fiber = yield* Effect.fork(call(connection, "m", "in time", 1_000))
      yield* settleFibers
      yield* advance(999)
      expect(yield* Fiber.join(fiber)).toBe("in time")
      expect(connection.reason()).toBeUndefined()
    }), FAST)

  it.scoped(
    "the deadline counts from the call, not from when the call reached the wire",
    () =>
      Effect.gen(function* () {
        const { connection, worker } = yield* setup(echoAfter(300))
        const first = yield* Effect.fork(call(connection, "first", 1))
        yield* settleFibers
        // Queued 300 ms, then 300 ms on the wire: past its 500 ms deadline, 200 ms after it was written.
        const second = yield* Effect.fork(call(connection, "second", 2, 500))
        yield* settleFibers
        yield* advance(300)
        expect(yield* Fiber.join(first)).toBe(1)
        yield* advance(199)
        expect(Option.isNone(yield* Fiber.poll(second))).toBe(true)
        yield* advance(1)
        expect(failure(yield* Fiber.await(second))).toMatchObject({ _tag: "RpcTimeoutError", id: 2 })
        expect(worker.requestTimes).toEqual([0, 300])
      }),
    FAST,
  )
})

describe("memory", () => {
  it.scoped(
    "a request gives up its params text once framed: the frame carries it, the finished call keeps none",
    () =>
      Effect.gen(function* () {
        const { connection } = yield* setup(echoAfter(0))
        const text = JSON.stringify({ padding: "x".repeat(4096) })
        const request: Connection.Request = { method: "m", paramsJson: text, deadline: undefined, timeoutMillis: 0 }
        expect(yield* connection.call(request, settle)).toEqual({ padding: "x".repeat(4096) })
        // A finished call's request survives scavenges for a while: holding the text, it promoted it too.
        expect(request.paramsJson).toBe("")
      }),
    FAST,
  )
})

describe("interruption", () => {
  it.scoped(
    "the cancel slot holds the call's canceler while it runs and drops it once the call is over",
    () =>
      Effect.gen(function* () {
        const { connection } = yield* setup(echoAfter(0))
        const request = { method: "m", paramsJson: "1", deadline: undefined, timeoutMillis: 0 }
        const slot: Connection.CancelSlot = { cancel: undefined }
        const running = yield* Effect.fork(connection.unguarded(request, settle, Effect.fail, slot))
        yield* Effect.yieldNow()
        expect(slot.cancel).toBeTypeOf("function")
        expect(yield* Fiber.join(running)).toBe(1)
        // Held on, it would keep the whole finished call reachable (and V8 would promote every call's garbage).
        expect(slot.cancel).toBeUndefined()
        // Over before it was registered (the connection closed): nothing is kept at all.
        connection.close({ _tag: "Closed" })
        const late: Connection.CancelSlot = { cancel: undefined }
        expect(Exit.isFailure(yield* Effect.exit(connection.unguarded(request, settle, Effect.fail, late)))).toBe(true)
        expect(late.cancel).toBeUndefined()
      }),
    FAST,
  )

  it.scoped(
    "interrupted while queued, a call leaves the queue: it is never written and the next caller goes on",
    () =>
      Effect.gen(function* () {
        const { connection, worker } = yield* setup(echoAfter(500))
        const first = yield* Effect.fork(call(connection, "first", "first"))
        yield* settleFibers
        const leaving = yield* Effect.fork(call(connection, "leaving", "leaving"))
        const third = yield* Effect.fork(call(connection, "third", "third"))
        yield* settleFibers
        expect(connection.inFlight()).toBe(3)
        yield* Fiber.interrupt(leaving)
        expect(connection.inFlight()).toBe(2)
        yield* advance(500)
        expect(yield* Fiber.join(first)).toBe("first")
        yield* advance(500)
        expect(yield* Fiber.join(third)).toBe("third")
        expect(worker.requests.map((r) => r.method)).toEqual(["first", "third"])
        expect(connection.inFlight()).toBe(0)
      }),
    FAST,
  )

  it.scoped(
    "interrupted on the wire, a caller returns at once; the next request goes out only after the abandoned answer",
    () =>
      Effect.gen(function* () {
        const { connection, worker } = yield* setup(echoAfter(500))
        const abandoned = yield* Effect.fork(call(connection, "abandoned", "abandoned"))
        yield* settleFibers
        expect(worker.requests.length).toBe(1)
        yield* advance(100)
        // Returns without the clock moving: the caller does not wait for the answer.
        expect(Exit.isInterrupted(yield* Fiber.interrupt(abandoned))).toBe(true)
        const next = yield* Effect.fork(call(connection, "next", "next"))
        yield* settleFibers
        expect(worker.requests.length).toBe(1)
        yield* advance(399)
        expect(worker.requests.length).toBe(1)
        yield* advance(1)
        // The abandoned answer came (and was dropped): now the next request is written.
        expect(worker.requests.map((r) => r.method)).toEqual(["abandoned", "next"])
        expect(worker.requestTimes).toEqual([0, 500])
        yield* advance(500)
        expect(yield* Fiber.join(next)).toBe("next")
        expect(worker.maxOutstanding()).toBe(1)
        expect(connection.reason()).toBeUndefined()
      }),
    FAST,
  )

  it.scoped(
    "an abandoned call's deadline still holds: past it the connection closes TimedOut and the next caller is Lost unsent",
    () =>
      Effect.gen(function* () {
        const { connection, worker } = yield* setup(() => never)
        const abandoned = yield* Effect.fork(call(connection, "abandoned", null, 1_000))
        yield* settleFibers
        yield* Fiber.interrupt(abandoned)
        const next = yield* Effect.fork(call(connection, "next"))
        yield* advance(1_000)
        expect(connection.reason()?._tag).toBe("TimedOut")
        expect(failure(yield* Fiber.await(next))).toMatchObject({ _tag: "Lost", sent: false, method: "next" })
        expect(worker.requests.map((r) => r.method)).toEqual(["abandoned"])
      }),
    FAST,
  )

  it.scoped(
    "callers are served one at a time in the order they called, each with its own answer",
    () =>
      Effect.gen(function* () {
        // Answered at once: the others queue while the first is on the wire (the worker's fiber runs after theirs).
        const { connection, worker } = yield* setup(echoAfter(0))
        const callers = Array.from({ length: 100 }, (_, i) => i)
        const all = yield* Effect.fork(
          Effect.forEach(callers, (i) => call(connection, `m${i}`, i), { concurrency: "unbounded" }),
        )
        expect(yield* Fiber.join(all)).toEqual(callers)
        expect(worker.requests.map((r) => r.params)).toEqual(callers)
        expect(worker.requests.map((r) => r.id)).toEqual(callers.map((i) => i + 1))
        expect(worker.maxOutstanding()).toBe(1)
      }),
    FAST,
  )
})

describe("close reasons", () => {
  it.scoped(
    "a stream that ends mid-frame: Ended with the truncated frame; the call on the wire is Lost, sent",
    () =>
      Effect.gen(function* () {
        const { connection } = yield* setup(() => [bytes(header(100)), bytes(new Uint8Array(10)), end])
        const error = failure(yield* Effect.exit(call(connection, "cut")))
        expect(error).toMatchObject({
          _tag: "Lost",
          sent: true,
          method: "cut",
          id: 1,
          reason: { _tag: "Ended", truncated: { _tag: "TruncatedFrame", expected: 108, received: 18 } },
        })
        expect(connection.reason()).toBe(error._tag === "Lost" && error.reason)
      }),
    FAST,
  )

  it.scoped("a stream that ends between frames: Ended without a truncated frame", () =>
    Effect.gen(function* () {
      const { connection } = yield* setup(() => [end])
      const error = failure(yield* Effect.exit(call(connection, "gone")))
      expect(error).toMatchObject({ _tag: "Lost", sent: true, id: 1, reason: { _tag: "Ended", truncated: undefined } })
      expect(yield* connection.closed).toMatchObject({ _tag: "Ended" })
    }), FAST)

  const faults: ReadonlyArray<
    readonly [name: string, script: Script, expected: Partial<Pick<ProtocolError, "reason" | "id" | "method">>]
  > = [
    ["bad JSON", () => garbage("{not json"), { reason: "InvalidJson", id: 1, method: "train_window" }],
    ["bad UTF-8", () => [bytes(frameOf(new Uint8Array([0x22, 0xff, 0xfe, 0x22])))], { reason: "InvalidUtf8" }],
    ["a frame that is not an object", () => [send([1, 2, 3])], { reason: "InvalidEnvelope" }],
    ["an answer with the wrong id", (request) => wrongId(request), { reason: "UnexpectedId", id: 1 }],
    ["an answer without `ok`", (request) => [send({ id: request.id, result: {} })], { reason: "InvalidEnvelope" }],
    ["an oversize header", () => [bytes(header(MAX_FRAME_BYTES + 1))], { reason: "FrameTooLarge" }],
    ["a header past 2^32", () => [bytes(header(2 ** 40))], { reason: "FrameTooLarge" }],
  ]

  // One test for the seven faults (each on a connection of its own): a test's fixed cost is ~15 ms.
  it.effect(
    `${faults.map(([name]) => name).join(", ")}: Faulted with a ProtocolError, which the call on the wire gets`,
    () =>
      Effect.forEach(faults, ([name, script, expected]) =>
        Effect.scoped(Effect.gen(function* () {
          const { connection, worker } = yield* setup(script)
          const error = failure(yield* Effect.exit(call(connection, "train_window")))
          expect(error, name).toBeInstanceOf(ProtocolError)
          expect(error, name).toMatchObject({ pid: worker.process.pid, ...expected })
          const reason = connection.reason()
          expect(reason?._tag, name).toBe("Faulted")
          expect(reason?._tag === "Faulted" && reason.error, name).toBe(error)
          expect(worker.destroyed(), name).toBe(true)
          expect(failure(yield* Effect.exit(call(connection, "hello"))), name).toMatchObject({
            _tag: "Lost",
            sent: false,
            reason: { _tag: "Faulted" },
          })
        }))),
    FAST,
  )

  it.effect(
    "every kind of malformed UTF-8 is InvalidUtf8; a U+FFFD the worker sent is a character, a leading BOM is dropped",
    () =>
      Effect.gen(function* () {
        const prefix = Buffer.from(`{"id":1,"ok":true,"result":"`)
        const malformed = [[0x80], [0xc3], [0xe2, 0x82], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [
          0xfe,
        ]]
        for (const sequence of malformed) {
          const body = Buffer.concat([prefix, Buffer.from(sequence), Buffer.from(`"}`)])
          const exit = yield* Effect.scoped(Effect.flatMap(
            setup(() => [bytes(frameOf(body))]),
            ({ connection }) => Effect.exit(call(connection, "m")),
          ))
          expect(failure(exit), JSON.stringify(sequence)).toMatchObject({
            _tag: "ProtocolError",
            reason: "InvalidUtf8",
          })
        }
        const text = "a \uFFFD b é 😀"
        const answered = yield* Effect.scoped(Effect.flatMap(
          setup((request) => answer(request, text)),
          ({ connection }) => call(connection, "m"),
        ))
        expect(answered).toBe(text)
        // A byte order mark before the JSON is dropped, with or without a U+FFFD after it.
        for (const result of ["plain", "\uFFFD"]) {
          const body = Buffer.concat([
            Buffer.from([0xef, 0xbb, 0xbf]),
            Buffer.from(JSON.stringify({ id: 1, ok: true, result })),
          ])
          const withBom = yield* Effect.scoped(Effect.flatMap(
            setup(() => [bytes(frameOf(body))]),
            ({ connection }) => call(connection, "m"),
          ))
          expect(withBom).toBe(result)
        }
      }),
    FAST,
  )

  it.scoped(
    "a frame while no call waits: Faulted UnsolicitedFrame (id null); the answered call keeps its answer",
    () =>
      Effect.gen(function* () {
        const { connection, worker } = yield* setup((request) => [...answer(request, "ok"), send({ id: 99, ok: true })])
        expect(yield* call(connection, "first")).toBe("ok")
        yield* settleFibers
        const reason = connection.reason()
        expect(reason).toMatchObject({ _tag: "Faulted", error: { reason: "UnsolicitedFrame", id: null, method: null } })
        expect(failure(yield* Effect.exit(call(connection, "second")))).toMatchObject({ _tag: "Lost", sent: false })
        expect(worker.requests.length).toBe(1)
      }),
    FAST,
  )

  it.scoped(
    "a result that breaks its schema closes the connection Faulted before the next request",
    () =>
      Effect.gen(function* () {
        const { connection, worker } = yield* setup()
        const invalid = new ProtocolError({ method: "m", id: 1, pid: 1, reason: "InvalidResult", detail: "bad" })
        const error = failure(
          yield* Effect.exit(connection.call({
            method: "hello",
            paramsJson: "null",
            deadline: undefined,
            timeoutMillis: 0,
          }, () => Either.left(invalid))),
        )
        expect(error).toBe(invalid)
        expect(connection.reason()).toMatchObject({ _tag: "Faulted", error: invalid })
        expect(failure(yield* Effect.exit(call(connection, "next")))).toMatchObject({ _tag: "Lost", sent: false })
        expect(worker.requests.length).toBe(1)
      }),
    FAST,
  )

  it.scoped("an `ok: false` answer is the call's error; the connection stays open", () =>
    Effect.gen(function* () {
      const { connection } = yield* setup((request, index) => index === 0 ? remoteFailure(request, "boom") : undefined)
      expect(failure(yield* Effect.exit(call(connection, "m")))).toMatchObject({ _tag: "RemoteError", id: 1 })
      expect(connection.reason()).toBeUndefined()
      expect(yield* call(connection, "release_model", { model_id: "m1" })).toEqual({})
    }), FAST)

  it.scoped(
    "closed by its owner: Closed; the call on the wire is Lost sent, the queued one Lost unsent",
    () =>
      Effect.gen(function* () {
        const { connection, worker } = yield* setup(() => never)
        const onWire = yield* Effect.fork(call(connection, "on_wire"))
        yield* settleFibers
        const queued = yield* Effect.fork(call(connection, "queued"))
        yield* settleFibers
        connection.close(Connection.CloseReason.Closed())
        expect(failure(yield* Fiber.await(onWire))).toMatchObject({
          _tag: "Lost",
          sent: true,
          id: 1,
          method: "on_wire",
          reason: { _tag: "Closed" },
        })
        expect(failure(yield* Fiber.await(queued))).toMatchObject({
          _tag: "Lost",
          sent: false,
          id: null,
          method: "queued",
          reason: { _tag: "Closed" },
        })
        expect(worker.destroyed()).toBe(true)
        expect(worker.requests.map((r) => r.method)).toEqual(["on_wire"])
        // The first reason stays.
        connection.close(Connection.CloseReason.Ended({ truncated: undefined }))
        expect(connection.reason()?._tag).toBe("Closed")
      }),
    FAST,
  )

  it.effect(
    "closing the connection's scope closes it Closed and fails the call on the wire",
    () =>
      Effect.gen(function* () {
        let connection: Connection.Connection | undefined
        const onWire = yield* Effect.fork(Effect.scoped(Effect.gen(function* () {
          const made = yield* setup(() => never)
          connection = made.connection
          const fiber = yield* Effect.fork(call(made.connection, "on_wire"))
          yield* settleFibers
          return fiber
        })))
        const fiber = yield* Fiber.join(onWire)
        expect(failure(yield* Fiber.await(fiber))).toMatchObject({
          _tag: "Lost",
          sent: true,
          reason: { _tag: "Closed" },
        })
        expect(connection?.reason()?._tag).toBe("Closed")
      }),
    FAST,
  )

  it.scoped(
    "params above a piece go out in pieces, each after the stream drained; the worker reads them whole, in order",
    () =>
      Effect.gen(function* () {
        const worker = yield* makeWorker((request) => answer(request, request.params), { congested: true })
        const connection = yield* Connection.make({ transport: worker.transport, maxFrameBytes: 1 << 24, pid: 1 })
        // Multi-byte text, and a surrogate pair right at the first cut.
        const big = `${"é".repeat(PIECE_UNITS - 3)}😀${"x".repeat(PIECE_UNITS + 5)}`
        const stats = { requestBytes: 0, responseBytes: 0 }
        const [first, second] = yield* Effect.all([
          connection.call({
            method: "big",
            paramsJson: JSON.stringify(big),
            deadline: undefined,
            timeoutMillis: 0,
            stats,
          }, settle),
          call(connection, "after", "small"),
        ], { concurrency: "unbounded" })
        expect(first).toBe(big)
        expect(second).toBe("small")
        expect(worker.requests.map((r) => r.method)).toEqual(["big", "after"])
        // The header piece, three pieces of params, then the small call in one.
        expect(worker.writes()).toBe(5)
        expect(stats.requestBytes).toBe(
          encodeRequestFrame(`{"id":1,"method":"big","params":`, JSON.stringify(big)).length,
        )
      }),
    FAST * 10,
  )

  /** A stream that takes each write and then never drains, or throws on every write. */
  const stuckTransport = (mode: "never drains" | "throws") => {
    let handlers: Parameters<Transport["listen"]>[0] | undefined
    let destroyed = false
    const transport: Transport = {
      write: () => {
        if (mode === "throws") throw new Error("EPIPE")
        return false
      },
      onDrain: () => {},
      destroy: () => {
        destroyed = true
      },
      listen: (next) => {
        handlers = next
      },
    }
    return { transport, deliver: (bytes: Uint8Array) => handlers!.data(bytes), destroyed: () => destroyed }
  }

  it.scoped(
    "an answer before the request went out whole is a protocol fault: the call fails, the stream closes",
    () =>
      Effect.gen(function* () {
        const stuck = stuckTransport("never drains")
        const connection = yield* Connection.make({ transport: stuck.transport, maxFrameBytes: 1 << 24, pid: 1 })
        const big = "x".repeat(PIECE_UNITS + 1)
        const fiber = yield* Effect.fork(call(connection, "big", big))
        yield* Effect.yieldNow()
        stuck.deliver(frameOf(JSON.stringify({ id: 1, ok: true, result: "too soon" })))
        expect(failure(yield* Fiber.await(fiber))).toMatchObject({
          _tag: "ProtocolError",
          reason: "UnsolicitedFrame",
          id: 1,
        })
        expect(connection.reason()?._tag).toBe("Faulted")
        expect(stuck.destroyed()).toBe(true)
      }),
    FAST,
  )

  it.scoped(
    "a stream that throws on a write closes: the call is Lost as sent, the next one never written",
    () =>
      Effect.gen(function* () {
        const stuck = stuckTransport("throws")
        const connection = yield* Connection.make({ transport: stuck.transport, maxFrameBytes: 1 << 24, pid: 1 })
        expect(failure(yield* Effect.exit(call(connection, "first")))).toMatchObject({ _tag: "Lost", sent: true })
        expect(connection.reason()?._tag).toBe("Ended")
        expect(failure(yield* Effect.exit(call(connection, "second")))).toMatchObject({ _tag: "Lost", sent: false })
        expect(connection.inFlight()).toBe(0)
      }),
    FAST,
  )

  it.scoped("frames split across chunks and joined in one chunk are reassembled", () =>
    Effect.gen(function* () {
      const { connection } = yield* setup((request) => {
        const frame = frameOf(JSON.stringify({ id: request.id, ok: true, result: `answer ${request.id}` }))
        return [bytes(frame.subarray(0, 3)), bytes(frame.subarray(3, 11)), bytes(frame.subarray(11))]
      })
      expect(yield* call(connection, "a")).toBe("answer 1")
      expect(yield* call(connection, "b")).toBe("answer 2")
      expect(connection.reason()).toBeUndefined()
    }), FAST)
})
