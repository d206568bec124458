/**
 * Hand-overs strictly in arrival order: a free list of items (a pool's
 * workers) and, as its one-item case, the one-permit lock of the wire.
 * Effect's `Semaphore` wakes every waiter on each release and lets a
 * newcomer take a freed permit first: with thousands of queued calls that is
 * quadratic (measured: 1000 queued calls took 5.9 s, 3000 ran out of memory)
 * and not first come, first served.
 *
 * Who holds an item is plain synchronous state, not whether a fiber saw its
 * wake-up. At the core a waiter is a callback run in the giver's own call
 * stack: the wire's next request is written by the release of the one before
 * it, with no scheduler hop between them. A waiter may decline (its call was
 * failed meanwhile), and the item goes on to the next; a caller that gives up
 * leaves the queue, or passes on an item it was handed. So no race between a
 * hand-over and a timeout can lose an item.
 *
 * @internal
 */
import * as Effect from "effect/Effect"

/**
 * Run once when the item is this waiter's, synchronously, in the giver's call
 * stack; `false` declines it, and it goes on to the next waiter.
 *
 * @internal
 */
export type Granted<A> = (item: A) => boolean

/** @internal */
export interface Ticket<A = void> {
  /** Resumes with the item once this ticket holds one (at once if one was free). */
  readonly wait: Effect.Effect<A>
  /** For a caller that gives up: leaves the queue, or passes on an item it was handed. */
  readonly cancel: () => void
}

/** @internal */
export interface FreeList<A> {
  /**
   * Queues `granted` (runs it now when an item is free and nobody waits);
   * returns the waiter's way out: `true` if it left the queue, `false` if it
   * had been granted already.
   */
  readonly request: (granted: Granted<A>) => () => boolean
  /** Joins the queue as a fiber; a free item is taken at once. */
  readonly take: () => Ticket<A>
  /** Hands the item to the longest waiter, or frees it. */
  readonly give: (item: A) => void
  /** Callers waiting for an item. */
  readonly waiting: () => number
}

const constFalse = () => false

/** A waiter in the queue: a doubly linked list leaves from anywhere in O(1), and hands over from its head. */
interface Waiter<A> {
  readonly granted: Granted<A>
  prev: Waiter<A> | undefined
  next: Waiter<A> | undefined
  queued: boolean
}

/** @internal */
export const makeFreeList = <A>(items: Iterable<A>): FreeList<A> => {
  const free: Array<A> = [...items]
  let head: Waiter<A> | undefined
  let tail: Waiter<A> | undefined
  let size = 0
  // A waiter's callback may give again (an answer that comes at once): the
  // outer loop hands those on, so the stack stays flat however long the queue.
  const given: Array<A> = []
  let giving = false

  const unlink = (waiter: Waiter<A>) => {
    if (waiter.prev === undefined) head = waiter.next
    else waiter.prev.next = waiter.next
    if (waiter.next === undefined) tail = waiter.prev
    else waiter.next.prev = waiter.prev
    waiter.prev = waiter.next = undefined
    waiter.queued = false
    size--
  }

  const give = (item: A) => {
    given.push(item)
    if (giving) return
    giving = true
    try {
      while (given.length > 0) {
        const next = given.shift()!
        let taken = false
        while (!taken && head !== undefined) {
          const waiter = head
          unlink(waiter)
          taken = waiter.granted(next)
        }
        if (!taken) free.push(next)
      }
    } finally {
      giving = false
    }
  }

  const request = (granted: Granted<A>): () => boolean => {
    if (free.length > 0 && size === 0) {
      const item = free.shift()!
      if (!granted(item)) give(item)
      return constFalse
    }
    const waiter: Waiter<A> = { granted, prev: tail, next: undefined, queued: true }
    if (tail === undefined) head = waiter
    else tail.next = waiter
    tail = waiter
    size++
    return () => {
      if (!waiter.queued) return false
      unlink(waiter)
      return true
    }
  }

  const take = (): Ticket<A> => {
    let held: { readonly value: A } | undefined
    let wake: ((resume: Effect.Effect<A>) => void) | undefined
    const leave = request((item) => {
      held = { value: item }
      wake?.(Effect.succeed(item))
      return true
    })
    return {
      wait: held !== undefined ? Effect.succeed(held.value) : Effect.async<A>((resume) => {
        if (held !== undefined) return resume(Effect.succeed(held.value))
        wake = resume
        return Effect.sync(() => {
          wake = undefined
        })
      }),
      cancel: () => {
        if (!leave() && held !== undefined) {
          const item = held.value
          held = undefined
          give(item)
        }
      },
    }
  }

  return { request, take, give, waiting: () => size }
}

/** @internal */
export interface Lock {
  /** Queues `granted` for the permit, run at once when it is free; returns the way out of the queue. */
  readonly acquire: (granted: () => boolean) => () => boolean
  /** Hands the permit to the longest waiter, or frees it. */
  readonly release: () => void
}

/** @internal */
export const make = (): Lock => {
  const permit = makeFreeList<void>([undefined])
  return { acquire: permit.request, release: () => permit.give(undefined) }
}
