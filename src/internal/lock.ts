/**
 * Hand-overs strictly in arrival order: a free list of items (a pool's
 * workers) and, as its one-item case, the one-permit lock of the wire.
 * Effect's `Semaphore` wakes every waiter on each release and lets a
 * newcomer take a freed permit first: with thousands of queued calls that is
 * quadratic (measured: 1000 queued calls took 5.9 s, 3000 ran out of memory)
 * and not first come, first served.
 *
 * Who holds an item is plain synchronous state on a ticket, not whether a
 * fiber saw its wake-up: a caller that gives up (interrupted, timed out) calls
 * `cancel`, which leaves the queue or, if an item was handed over in the
 * meantime, passes it on. So no race between a hand-over and a timeout can
 * lose an item.
 *
 * @internal
 */
import * as Effect from "effect/Effect"

/** @internal */
export interface Ticket<A = void> {
  /** Resumes with the item once this ticket holds one (at once if one was free). */
  readonly wait: Effect.Effect<A>
  /** For a caller that gives up: leaves the queue, or passes on an item it was handed. */
  readonly cancel: () => void
}

/** @internal */
export interface FreeList<A> {
  /** Joins the queue; a free item is taken at once. */
  readonly take: () => Ticket<A>
  /** Hands the item to the longest waiter, or frees it. */
  readonly give: (item: A) => void
  /** Callers waiting for an item. */
  readonly waiting: () => number
}

interface Waiter<A> {
  item: { readonly value: A } | undefined
  wake: ((resume: Effect.Effect<A>) => void) | undefined
}

/** @internal */
export const makeFreeList = <A>(items: Iterable<A>): FreeList<A> => {
  const free: Array<A> = [...items]
  // A Set iterates in insertion order and deletes in O(1).
  const waiters = new Set<Waiter<A>>()

  const give = (item: A) => {
    const next = waiters.values().next()
    if (next.done) {
      free.push(item)
      return
    }
    waiters.delete(next.value)
    next.value.item = { value: item }
    next.value.wake?.(Effect.succeed(item))
  }

  const take = (): Ticket<A> => {
    if (free.length > 0 && waiters.size === 0) {
      // Free: no waiting, and nothing to cancel but handing the item back.
      const item = free.shift()!
      let held = true
      return {
        wait: Effect.succeed(item),
        cancel: () => {
          if (held) give(item)
          held = false
        },
      }
    }
    const waiter: Waiter<A> = { item: undefined, wake: undefined }
    waiters.add(waiter)
    return {
      wait: Effect.async<A>((resume) => {
        if (waiter.item !== undefined) return resume(Effect.succeed(waiter.item.value))
        waiter.wake = resume
        return Effect.sync(() => {
          waiter.wake = undefined
        })
      }),
      cancel: () => {
        if (!waiters.delete(waiter) && waiter.item !== undefined) give(waiter.item.value)
      },
    }
  }

  return { take, give, waiting: () => waiters.size }
}

/** @internal */
export interface Lock {
  /** Joins the queue; the permit is taken at once when it is free. */
  readonly enqueue: () => Ticket
  /** Hands the permit to the longest waiter, or frees it. */
  readonly release: () => void
}

/** @internal */
export const make = (): Lock => {
  const permit = makeFreeList<void>([undefined])
  return { enqueue: permit.take, release: () => permit.give(undefined) }
}
