/**
 * Params JSON with its long strings kept as their UTF-8 bytes. A long string
 * that needs no escaping (no `"`, `\`, control character or lone surrogate)
 * is its own JSON text between quotes, so its bytes can go on the wire as
 * they are: `JSON.stringify` spends ~2 ns per unit on such a string and the
 * UTF-8 encoding of the whole text another ~0.7, where encoding the string
 * alone and checking its bytes takes ~0.9 (a 64 MiB payload: ~60 ms instead
 * of ~170). The rest of the value goes through `JSON.stringify` as before,
 * with a marker where each long string was, and the output is cut at the
 * markers: the bytes are exactly those of `JSON.stringify(value)`.
 *
 * @internal
 */
import { Buffer } from "node:buffer"
import { randomBytes } from "node:crypto"
import { types } from "node:util"
import { scratch } from "./plainScan.ts"

/** Strings at least this long (UTF-16 units) are looked at. */
export const LONG_STRING_UNITS = 1 << 20

/** At most this many values are looked at for long strings; an array longer than what is left is not opened. */
const WALK_BUDGET = 4096

/**
 * `JSON.stringify(value)` as text pieces with long strings between them:
 * `texts[0] + strings[0] + texts[1] + ... + texts[n]`, where each string is
 * the UTF-8 bytes of the JSON string's content (the quotes are in the texts).
 *
 * @internal
 */
export interface SplitJson {
  readonly texts: ReadonlyArray<string>
  readonly strings: ReadonlyArray<Uint8Array>
  /** UTF-8 bytes of the whole JSON text. */
  readonly bytes: number
}

const encoder = new TextEncoder()

/** The UTF-8 bytes of `text` when it is its own JSON string content, else `undefined`. */
const plainBytes = (text: string): Uint8Array | undefined => {
  if (!(text as string & { isWellFormed(): boolean }).isWellFormed()) return undefined
  const { bytes, plain } = scratch(Buffer.byteLength(text, "utf8"))
  encoder.encodeInto(text, bytes)
  return plain() ? bytes : undefined
}

/**
 * The values `JSON.stringify` would read (the elements, or the values of
 * `keys`), read from their descriptors so that no getter runs here:
 * `undefined` when one is a getter, and the container is left whole to
 * `JSON.stringify`, which runs it once.
 */
const valuesOf = (node: object, keys: ReadonlyArray<string> | undefined, count: number): Array<unknown> | undefined => {
  const items = new Array<unknown>(count)
  for (let i = 0; i < count; i++) {
    const descriptor = Object.getOwnPropertyDescriptor(node, keys === undefined ? i : keys[i])
    // A hole in an array reads as `undefined`.
    if (descriptor === undefined) continue
    if (descriptor.get !== undefined || descriptor.set !== undefined) return undefined
    items[i] = descriptor.value
  }
  return items
}

/** The container again, with `items` for its values (an object's keys in the same order). */
const copyOf = (items: Array<unknown>, keys: ReadonlyArray<string> | undefined): unknown => {
  if (keys === undefined) return items
  const copy: Record<string, unknown> = {}
  for (let i = 0; i < keys.length; i++) {
    // Assigned, `__proto__` would set the prototype instead of a key.
    if (keys[i] === "__proto__") {
      Object.defineProperty(copy, "__proto__", {
        value: items[i],
        enumerable: true,
        writable: true,
        configurable: true,
      })
    } else copy[keys[i]] = items[i]
  }
  return copy
}

/** Read by `JSON.stringify` as its own keys alone, so a copy with the same keys reads the same. */
const isPlain = (value: object, proto: object): boolean => {
  const actual = Object.getPrototypeOf(value)
  return (actual === proto || (proto === Object.prototype && actual === null)) && !Object.hasOwn(value, "toJSON")
}

/**
 * `JSON.stringify(value)` split around its long strings that need no
 * escaping, found in plain objects and arrays; `undefined` when there is
 * none (or a marker's text turns up in the value itself), for the caller to
 * stringify the value whole. Throws what `JSON.stringify` throws.
 *
 * @internal
 */
export const splitJson = (
  value: unknown,
  minUnits: number = LONG_STRING_UNITS,
  nonceOf: () => string = () => randomBytes(16).toString("hex"),
): SplitJson | undefined => {
  const strings: Array<Uint8Array> = []
  let budget = WALK_BUDGET
  // Drawn with the first long string: most params have none.
  let nonce: string | undefined
  // A copy of each container on the way to a long string; the rest is shared with `value`.
  const swap = (node: unknown): unknown => {
    if (typeof node === "string") {
      if (node.length < minUnits) return node
      const bytes = plainBytes(node)
      if (bytes === undefined) return node
      strings.push(bytes)
      nonce ??= nonceOf()
      return `${nonce}.${strings.length - 1}`
    }
    if (typeof node !== "object" || node === null || types.isProxy(node)) return node
    const isArray = Array.isArray(node)
    if (!isPlain(node, isArray ? Array.prototype : Object.prototype)) return node
    const keys = isArray ? undefined : Object.keys(node)
    const count = keys === undefined ? (node as Array<unknown>).length : keys.length
    // A long array (numbers, say) costs JSON.stringify less than a walk through it would.
    if (count > budget) return node
    budget -= count
    const items = valuesOf(node, keys, count)
    if (items === undefined) return node
    let changed = false
    for (let i = 0; i < count; i++) {
      const swapped = swap(items[i])
      if (swapped !== items[i]) {
        items[i] = swapped
        changed = true
      }
    }
    return changed ? copyOf(items, keys) : node
  }
  const swapped = swap(value)
  if (strings.length === 0) return undefined
  const text = JSON.stringify(swapped)
  const texts: Array<string> = []
  let from = 0
  for (let k = 0; k < strings.length; k++) {
    const marker = `"${nonce}.${k}"`
    const at = text.indexOf(marker)
    // Each marker is where its string was, in order, and only there: else the value holds a marker's text.
    if (at < from || text.indexOf(marker, at + 1) !== -1) return undefined
    texts.push(text.slice(from, at + 1))
    from = at + marker.length - 1
  }
  texts.push(text.slice(from))
  let bytes = 0
  for (const piece of texts) bytes += Buffer.byteLength(piece, "utf8")
  for (const piece of strings) bytes += piece.length
  return { texts, strings, bytes }
}
