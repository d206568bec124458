import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Lock from "../src/internal/lock.ts"

describe("the wire lock", () => {
  it.effect("hands the permit over in arrival order", () =>
    Effect.gen(function* () {
      const lock = Lock.make()
      const order: Array<number> = []
      const first = lock.enqueue()
      yield* first.wait
      const fibers = yield* Effect.forEach(
        [1, 2, 3, 4],
        (n) =>
          Effect.fork(Effect.gen(function* () {
            const ticket = lock.enqueue()
            yield* ticket.wait
            order.push(n)
            lock.release()
          })),
      )
      lock.release()
      yield* Fiber.joinAll(fibers)
      expect(order).toEqual([1, 2, 3, 4])
    }))

  it.effect("a waiter that gives up leaves the queue; one that was already handed the permit passes it on", () =>
    Effect.gen(function* () {
      const lock = Lock.make()
      yield* lock.enqueue().wait
      const leaving = lock.enqueue()
      const handed = lock.enqueue()
      const last = lock.enqueue()
      leaving.cancel()
      lock.release() // to `handed`, which gives up before it ran: the permit must reach `last`
      handed.cancel()
      yield* last.wait
      lock.release()
      // Free again: a newcomer gets it at once.
      yield* lock.enqueue().wait
    }))

  it.effect("an interrupted waiter does not hold the permit", () =>
    Effect.gen(function* () {
      const lock = Lock.make()
      yield* lock.enqueue().wait
      const ticket = lock.enqueue()
      const waiting = yield* Effect.fork(Effect.onInterrupt(ticket.wait, () => Effect.sync(ticket.cancel)))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(waiting)
      lock.release()
      yield* lock.enqueue().wait
    }))
})
