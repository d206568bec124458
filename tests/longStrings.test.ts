/**
 * Params JSON split around its long strings (`longStrings.ts`): whatever the
 * value, the frame built from the split is the one built from
 * `JSON.stringify(value)`, byte for byte. The tests lower the length that
 * makes a string long, so that short arbitrary strings take the split path.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "effect/FastCheck"
import { Buffer } from "node:buffer"
import { encodeRequestFrame, splitFramePieces } from "../src/internal/frame.ts"
import { splitJson } from "../src/internal/longStrings.ts"

const HEAD = `{"id":7,"method":"train_window","params":`

const joined = (pieces: Iterator<Uint8Array>): Buffer => {
  const out: Array<Uint8Array> = []
  for (let piece = pieces.next(); !piece.done; piece = pieces.next()) out.push(piece.value)
  return Buffer.concat(out)
}

/**
 * Mostly characters that need no escaping, so that many strings take the
 * split path; then those that need it, and the hard cases for a client that
 * encodes bytes itself.
 */
const text = fc.string({
  unit: fc.oneof(
    { weight: 12, arbitrary: fc.constantFrom("a", "b", "z", " ", "é", "€", "😀", "\u007f") },
    { weight: 1, arbitrary: fc.constantFrom('"', "\\", "\n", "\u0000", "\u001f", "\uD800", "\uDC00") },
  ),
  maxLength: 24,
})

/** JSON-shaped values, with what `JSON.stringify` drops or turns into `null` along the way. */
const { value } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    text,
    text,
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.array(tie("value"), { maxLength: 5 }),
    fc.dictionary(text, tie("value"), { maxKeys: 5 }),
  ),
}))

const expectSameFrame = (input: unknown, minUnits: number, nonce?: string) => {
  const whole = encodeRequestFrame(HEAD, JSON.stringify(input))
  const split = splitJson(input, minUnits, nonce === undefined ? undefined : () => nonce)
  if (split === undefined) return false
  for (const pieceBytes of [1, 3, 1 << 20]) {
    const { bytes, pieces } = splitFramePieces(HEAD, split, pieceBytes)
    const frame = joined(pieces)
    expect(frame.toString("utf8")).toBe(whole.toString("utf8"))
    expect(frame.equals(whole)).toBe(true)
    expect(bytes).toBe(whole.length)
  }
  return true
}

describe("long strings as their bytes", () => {
  let splits = 0
  let runs = 0
  it.prop(
    "the split frame is JSON.stringify's frame byte for byte, whatever the value",
    // Params are an object or an array (never `undefined`, which JSON.stringify does not encode at all).
    [
      fc.oneof(fc.dictionary(text, value, { maxKeys: 6 }), fc.array(value, { maxLength: 6 })),
      fc.integer({ min: 1, max: 6 }),
    ],
    ([input, minUnits]) => {
      runs++
      if (expectSameFrame(input, minUnits)) splits++
    },
    { fastCheck: { numRuns: 2000 } },
  )

  it("the values generated above took the split path often enough to mean something", () => {
    expect(runs).toBe(2000)
    expect(splits / runs).toBeGreaterThan(0.2)
  })

  it("takes exactly the strings that need no escaping, and leaves the rest to JSON.stringify", () => {
    const input = {
      plain: "a".repeat(9),
      quoted: `${"a".repeat(8)}"`,
      control: `${"a".repeat(8)}\u0001`,
      lone: `${"a".repeat(8)}\uD800`,
      wide: "é😀".repeat(5),
      short: "abc",
      nested: [{ deep: "b".repeat(10) }],
    }
    const split = splitJson(input, 8)!
    expect(split.strings.map((bytes) => Buffer.from(bytes).toString("utf8"))).toEqual([
      "a".repeat(9),
      "é😀".repeat(5),
      "b".repeat(10),
    ])
    expect(expectSameFrame(input, 8)).toBe(true)
  })

  it("a byte to escape anywhere in a word is found: at each offset of a long string", () => {
    for (const special of ['"', "\\", "\u0000", "\u0008", "\u001f", "\n"]) {
      for (let at = 0; at < 11; at++) {
        const long = `${"x".repeat(at)}${special}${"y".repeat(10 - at)}`
        expect(splitJson([long], 4), JSON.stringify(long)).toBeUndefined()
      }
    }
    // Bytes just above the escaped ones are not escaped.
    expect(splitJson([" !#[]^_\u007f".repeat(2)], 4)).toBeDefined()
  })

  it("is left to JSON.stringify when the value holds a marker's text, or has no long string", () => {
    const nonce = "feedface"
    expect(splitJson({ a: "x".repeat(16), b: `${nonce}.0` }, 16, () => nonce)).toBeUndefined()
    expect(splitJson({ a: "x".repeat(16), [`${nonce}.0`]: 1 }, 16, () => nonce)).toBeUndefined()
    expect(splitJson({ a: "x".repeat(15) }, 16, () => nonce)).toBeUndefined()
    expect(expectSameFrame({ a: "x".repeat(16), b: `${nonce}.1` }, 16, nonce)).toBe(true)
  })

  it("leaves alone what JSON.stringify would not read as plain data: toJSON, class instances, Array subclasses", () => {
    class Holder {
      constructor(readonly s: string) {}
    }
    class Listed extends Array<string> {
      toJSON() {
        return "listed"
      }
    }
    const listed = new Listed()
    listed.push("w".repeat(8))
    let reads = 0
    const opaque: Record<string, unknown> = {
      viaToJSON: { s: "x".repeat(8), toJSON: () => "replaced" },
      arrayViaToJSON: Object.assign(["v".repeat(8)], { toJSON: () => "replaced too" }),
      listed,
      instance: new Holder("y".repeat(8)),
      date: new Date(0),
      // A getter runs once, in JSON.stringify: never read here, and its object not copied.
      getter: {
        s: "u".repeat(8),
        get n() {
          return ++reads
        },
      },
      getterInArray: Object.defineProperty(["t".repeat(8), 0], 1, { get: () => ++reads, enumerable: true }),
      // A Proxy may list its keys in an order no plain object keeps.
      proxy: new Proxy({ 1: "a", 2: "s".repeat(8) }, { ownKeys: () => ["2", "1"] }),
    }
    for (const [name, item] of Object.entries(opaque)) {
      expect(splitJson({ item }, 8), name).toBeUndefined()
      expect(splitJson([item], 8), name).toBeUndefined()
    }
    // Beside a long string, they go through JSON.stringify as they are: each getter runs once.
    const withPlain = { ...opaque, plain: "z".repeat(8) }
    reads = 0
    const expected = encodeRequestFrame(HEAD, JSON.stringify(withPlain))
    reads = 0
    const split = splitJson(withPlain, 8)!
    expect(split.strings).toHaveLength(1)
    expect(reads).toBe(2)
    expect(joined(splitFramePieces(HEAD, split).pieces).equals(expected)).toBe(true)
  })

  it("does not walk through a long array: it is left whole to JSON.stringify, and the strings beside it are still taken", () => {
    const numbers = Array.from({ length: 5000 }, (_, i) => i)
    expect(splitJson([...numbers, "x".repeat(8)], 8)).toBeUndefined()
    const input = { numbers, inside: [...numbers, "y".repeat(8)], payload: "x".repeat(8) }
    expect(splitJson(input, 8)!.strings).toHaveLength(1)
    expect(expectSameFrame(input, 8)).toBe(true)
  })

  it("copies an own `__proto__` key as a key, and keeps integer keys and holes where JSON.stringify puts them", () => {
    const input = JSON.parse(`{"b":1,"__proto__":{"p":"${"q".repeat(8)}"},"2":"${"r".repeat(8)}","1":0}`)
    // deno-lint-ignore no-sparse-arrays
    const holes = [, "h".repeat(8), , undefined, () => 1]
    // As in Node, whatever this runtime does: assigned, `__proto__` sets the prototype.
    const saved = Object.getOwnPropertyDescriptor(Object.prototype, "__proto__")
    Object.defineProperty(Object.prototype, "__proto__", {
      get(this: object) {
        return Object.getPrototypeOf(this)
      },
      set(this: object, proto: object | null) {
        Object.setPrototypeOf(this, proto)
      },
      configurable: true,
    })
    try {
      for (const value of [input, { input, holes }]) {
        expect(splitJson(value, 8)!.strings.length).toBeGreaterThan(0)
        expect(expectSameFrame(value, 8)).toBe(true)
      }
    } finally {
      // deno-lint-ignore no-explicit-any
      if (saved === undefined) delete (Object.prototype as any).__proto__
      else Object.defineProperty(Object.prototype, "__proto__", saved)
    }
  })

  it("does not change the value it splits", () => {
    const input = { batches: [{ payload: "p".repeat(16), ids: [1, 2] }], model_id: "m1" }
    const before = structuredClone(input)
    const split = splitJson(input, 8)!
    expect(split.strings).toHaveLength(1)
    expect(input).toEqual(before)
  })
})
