import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Lock from "../src/internal/lock.ts"

/** A lock that hands the permit to the newest waiter: what the arrival-order test must catch. */
const makeLifo = (): Lock.Lock => {
  let held = false
  const waiters: Array<{ granted: boolean; wake: ((resume: Effect.Effect<void>) => void) | undefined }> = []
  return {
    enqueue: () => {
      const waiter = { granted: !held, wake: undefined as ((resume: Effect.Effect<void>) => void) | undefined }
      if (held) waiters.push(waiter)
      held = true
      return {
        wait: Effect.async<void>((resume) => {
          if (waiter.granted) return resume(Effect.void)
          waiter.wake = resume
        }),
        cancel: () => {},
      }
    },
    release: () => {
      const next = waiters.pop()
      if (next === undefined) {
        held = false
        return
      }
      next.granted = true
      next.wake?.(Effect.void)
    },
  }
}

describe("the wire lock", () => {
  /**
   * The order in which four waiters get the permit. Each is forked and left
   * to run until it waits on its ticket before the next is forked, and the
   * permit is released only once all four are queued: so the hand-over
   * order, not the scheduler's, decides.
   */
  const handOverOrder = (make: () => Lock.Lock) =>
    Effect.gen(function* () {
      const lock = make()
      const order: Array<number> = []
      yield* lock.enqueue().wait
      const fibers: Array<Fiber.RuntimeFiber<void>> = []
      for (const n of [1, 2, 3, 4]) {
        fibers.push(
          yield* Effect.fork(Effect.gen(function* () {
            yield* lock.enqueue().wait
            order.push(n)
            lock.release()
          })),
        )
        yield* Effect.yieldNow()
      }
      expect(order).toEqual([])
      lock.release()
      yield* Fiber.joinAll(fibers)
      return order
    })

  it.effect("hands the permit over in arrival order", () =>
    Effect.gen(function* () {
      expect(yield* handOverOrder(Lock.make)).toEqual([1, 2, 3, 4])
    }))

  it.effect("the arrival-order check fails for a LIFO lock (negative control)", () =>
    Effect.gen(function* () {
      expect(yield* handOverOrder(makeLifo)).toEqual([4, 3, 2, 1])
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
