/**
 * Model ids as the client hands them out: the worker's own id behind a tag
 * naming the process that made it (`g2:m1`), and in a pool the worker too
 * (`w1.g2:m1`). An id from an earlier process is refused before anything
 * is sent; an untagged id passes through as it is.
 *
 * @internal
 */
import type { ModelIds } from "../Protocol.ts"

/**
 * A model id of another generation, thrown from `ModelIds.toWire` and caught by the call.
 *
 * @internal
 */
export class StaleId {
  constructor(readonly id: string, readonly generation: number) {}
}

/**
 * A model id of another pool worker.
 *
 * @internal
 */
export class ForeignId {
  constructor(readonly id: string, readonly prefix: string) {}
}

const ID_TAG = /^((?:w\d+\.)?)g(\d+):/

/**
 * The pool prefix and generation a client model id names, if it is one.
 *
 * @internal
 */
export const parseModelId = (
  id: string,
): { readonly prefix: string; readonly generation: number; readonly raw: string } | undefined => {
  const match = ID_TAG.exec(id)
  return match === null ? undefined : { prefix: match[1], generation: Number(match[2]), raw: id.slice(match[0].length) }
}

/**
 * The ids of one worker process: `prefix` names the pool's worker, if any.
 *
 * @internal
 */
export const make = (prefix: string, generation: number): ModelIds => ({
  toWire: (id) => {
    const tag = parseModelId(id)
    if (tag === undefined) return id
    if (tag.prefix !== prefix) throw new ForeignId(id, tag.prefix)
    if (tag.generation !== generation) throw new StaleId(id, tag.generation)
    return tag.raw
  },
  fromWire: (raw) => `${prefix}g${generation}:${raw}`,
})
