import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Lock from "../src/internal/lock.ts"

/** A lock that hands the permit to the newest waiter: what the arrival-order test must catch. */
const makeLifo = (): Lock.Lock => {
  let held = false
  const waiters: Array<() => boolean> = []
  const release = () => {
    const next = waiters.pop()
    if (next === undefined) held = false
    else if (!next()) release()
  }
  return {
    acquire: (granted) => {
      if (held) {
        waiters.push(granted)
        return () => false
      }
      held = true
      if (!granted()) release()
      return () => false
    },
    release,
  }
}

/** The order in which four queued waiters get the permit; each releases it from inside its grant. */
const handOverOrder = (make: () => Lock.Lock) => {
  const lock = make()
  const order: Array<number> = []
  lock.acquire(() => true)
  for (const n of [1, 2, 3, 4]) {
    lock.acquire(() => {
      order.push(n)
      lock.release()
      return true
    })
  }
  expect(order).toEqual([])
  lock.release()
  return order
}

describe("the wire lock", () => {
  it("hands the permit over in arrival order", () => {
    expect(handOverOrder(Lock.make)).toEqual([1, 2, 3, 4])
  })

  it("the arrival-order check fails for a LIFO lock (negative control)", () => {
    expect(handOverOrder(makeLifo)).toEqual([4, 3, 2, 1])
  })

  it("a free permit is granted at once, in the caller's stack", () => {
    const lock = Lock.make()
    let granted = false
    lock.acquire(() => (granted = true))
    expect(granted).toBe(true)
  })

  it("a declined grant goes on to the next waiter; one that left the queue is skipped", () => {
    const lock = Lock.make()
    const seen: Array<string> = []
    lock.acquire(() => true)
    lock.acquire(() => (seen.push("declines"), false))
    const leave = lock.acquire(() => (seen.push("left"), true))
    lock.acquire(() => (seen.push("takes"), true))
    expect(leave()).toBe(true)
    lock.release()
    expect(seen).toEqual(["declines", "takes"])
    // Held by "takes": a newcomer waits; once released, it is free again.
    let newcomer = false
    lock.acquire(() => (newcomer = true))
    expect(newcomer).toBe(false)
    lock.release()
    expect(newcomer).toBe(true)
  })

  it("leaving after the grant says so and changes nothing", () => {
    const lock = Lock.make()
    const leave = lock.acquire(() => true)
    expect(leave()).toBe(false)
    let next = false
    lock.acquire(() => (next = true))
    expect(next).toBe(false)
  })

  it("a long queue released from inside each grant keeps the stack flat", () => {
    const lock = Lock.make()
    let served = 0
    lock.acquire(() => true)
    for (let i = 0; i < 200_000; i++) {
      lock.acquire(() => {
        served++
        lock.release()
        return true
      })
    }
    lock.release()
    expect(served).toBe(200_000)
  })
})

describe("the free list's tickets", () => {
  it.effect("a waiter that gives up leaves the queue; one that was already handed the item passes it on", () =>
    Effect.gen(function* () {
      const list = Lock.makeFreeList(["item"])
      yield* list.take().wait
      const leaving = list.take()
      const handed = list.take()
      const last = list.take()
      leaving.cancel()
      list.give("item") // to `handed`, which gives up before it ran: the item must reach `last`
      handed.cancel()
      expect(yield* last.wait).toBe("item")
      list.give("item")
      // Free again: a newcomer gets it at once.
      expect(yield* list.take().wait).toBe("item")
    }))

  it.effect("an interrupted waiter does not hold the item", () =>
    Effect.gen(function* () {
      const list = Lock.makeFreeList([1])
      yield* list.take().wait
      const ticket = list.take()
      const waiting = yield* Effect.fork(Effect.onInterrupt(ticket.wait, () => Effect.sync(ticket.cancel)))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(waiting)
      list.give(1)
      expect(list.waiting()).toBe(0)
      expect(yield* list.take().wait).toBe(1)
    }))

  it.effect("items go to waiters in arrival order", () =>
    Effect.gen(function* () {
      const list = Lock.makeFreeList<string>([])
      const order: Array<string> = []
      const fibers = []
      for (const n of ["a", "b", "c"]) {
        const ticket = list.take()
        fibers.push(yield* Effect.fork(Effect.map(ticket.wait, (item) => order.push(`${n}:${item}`))))
      }
      list.give("x")
      list.give("y")
      list.give("z")
      yield* Fiber.joinAll(fibers)
      expect(order).toEqual(["a:x", "b:y", "c:z"])
    }))
})
