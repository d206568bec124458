import { describe, expect, it } from "@effect/vitest"
import * as fc from "effect/FastCheck"
import { Buffer } from "node:buffer"
import { encodeRequestFrame, FrameDecoder, requestFramePieces } from "../src/internal/frame.ts"
import { cut } from "./helpers.ts"

/** The reference encoding, written independently of src/: u64 big-endian length, then the UTF-8 body. */
const encodeFrame = (text: string): Buffer => {
  const body = Buffer.from(text, "utf8")
  const header = Buffer.alloc(8)
  header.writeBigUInt64BE(BigInt(body.length))
  return Buffer.concat([header, body])
}

const decodeAll = (decoder: FrameDecoder, chunks: ReadonlyArray<Uint8Array>) => {
  const frames: Array<string> = []
  for (const chunk of chunks) {
    const { fault, frames: done } = decoder.push(chunk)
    for (const frame of done) frames.push(Buffer.from(frame).toString("utf8"))
    if (fault !== undefined) return { frames, fault }
  }
  return { frames, fault: decoder.end() }
}

/** Every piece, in order. */
const allPieces = (pieces: Iterator<Uint8Array>): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  for (let piece = pieces.next(); !piece.done; piece = pieces.next()) out.push(piece.value)
  return out
}

describe("framing", () => {
  it.prop(
    "a frame in pieces is the one-buffer frame byte for byte, however small the pieces and whatever the text",
    [
      fc.string({ unit: "binary", maxLength: 40 }),
      fc.string({ unit: fc.constantFrom("a", "é", "€", "😀", "\uD800", "\uDC00"), maxLength: 60 }),
      fc.integer({ min: 1, max: 9 }),
    ],
    ([head, params, pieceUnits]) => {
      const { bytes, pieces } = requestFramePieces(head, params, pieceUnits)
      const joined = Buffer.concat(allPieces(pieces))
      const whole = encodeRequestFrame(head, params)
      expect(joined.equals(whole)).toBe(true)
      expect(bytes).toBe(whole.length)
    },
    { fastCheck: { numRuns: 500 } },
  )

  it("a surrogate pair at a cut travels whole: no piece holds half of it", () => {
    const { pieces } = requestFramePieces("{", "ab😀cd", 3)
    const texts = allPieces(pieces).slice(1).map((piece) => Buffer.from(piece).toString("utf8"))
    expect(texts).toEqual(["ab", "😀c", "d}"])
  })

  it.prop(
    "frames are the reference encoding, and stay so while later frames are encoded (small ones share memory)",
    [
      fc.array(
        fc.tuple(
          fc.string({ unit: fc.constantFrom("a", '"', "é", "€", "😀"), maxLength: 12 }),
          fc.oneof(
            fc.string({ unit: fc.constantFrom("a", "é", "€", "😀", "\uD800"), maxLength: 200 }),
            // Around the size where a frame stops being small (8 KiB by the 3-bytes-per-unit bound).
            fc.integer({ min: 2700, max: 2750 }).map((units) => "€".repeat(units)),
            fc.integer({ min: 8150, max: 8200 }).map((units) => "a".repeat(units)),
          ),
        ),
        { minLength: 1, maxLength: 40 },
      ),
    ],
    ([requests]) => {
      const frames = requests.map(([head, params]) => encodeRequestFrame(head, params))
      // Checked only once all are made: a frame written over by a later one fails here.
      requests.forEach(([head, params], i) => {
        expect(frames[i].equals(encodeFrame(`${head}${params}}`))).toBe(true)
      })
    },
    { fastCheck: { numRuns: 300 } },
  )

  it("thousands of small frames in a row each keep their own bytes", () => {
    const texts = Array.from({ length: 5000 }, (_, i) => `{"id":${i},"method":"m${"é".repeat(i % 50)}","params":`)
    const frames = texts.map((head, i) => encodeRequestFrame(head, String(i)))
    texts.forEach((head, i) => expect(frames[i].equals(encodeFrame(`${head}${i}}`))).toBe(true))
  })

  it("encodes an 8-byte big-endian length, then the UTF-8 body", () => {
    const frame = encodeRequestFrame(`{"a":`, `"é"`)
    expect([...frame.subarray(0, 8)]).toEqual([0, 0, 0, 0, 0, 0, 0, 10])
    expect(frame.subarray(8).toString("utf8")).toBe(`{"a":"é"}`)
  })

  it.prop(
    "any split of any sequence of frames decodes to the same frames",
    [fc.array(fc.string({ unit: "binary", maxLength: 300 }), { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 40 })],
    ([texts, offsets]) => {
      const stream = Buffer.concat(texts.map(encodeFrame))
      const { fault, frames } = decodeAll(new FrameDecoder(1 << 20), cut(stream, offsets))
      expect(fault).toBeUndefined()
      expect(frames).toEqual(texts)
    },
    { fastCheck: { numRuns: 300 } },
  )

  it.prop(
    "a header above the limit is refused before any body arrives, however the header is split",
    [fc.integer({ min: 65, max: 2 ** 53 }), fc.array(fc.nat(), { maxLength: 8 })],
    ([length, offsets]) => {
      const header = Buffer.alloc(8)
      header.writeBigUInt64BE(BigInt(length))
      const { fault, frames } = decodeAll(new FrameDecoder(64), cut(header, offsets))
      expect(frames).toEqual([])
      expect(fault).toEqual({ _tag: "FrameTooLarge", length, maxFrameBytes: 64 })
    },
  )

  it("refuses a header announcing 2^63 bytes (beyond exact JavaScript numbers)", () => {
    const header = Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 1])
    const { fault } = new FrameDecoder(256 * 1024 * 1024).push(header)
    expect(fault?._tag).toBe("FrameTooLarge")
  })

  it("reports a frame cut short by the end of the stream", () => {
    const frame = encodeFrame(`{"id":1}`)
    const decoder = new FrameDecoder(1024)
    expect(decoder.push(frame.subarray(0, 11)).frames).toEqual([])
    expect(decoder.end()).toEqual({ _tag: "TruncatedFrame", expected: 16, received: 11 })
    expect(new FrameDecoder(1024).end()).toBeUndefined()
  })

  it("accepts a frame of exactly the limit and refuses one byte more", () => {
    const text = "x".repeat(32)
    expect(new FrameDecoder(32).push(encodeFrame(text)).frames.length).toBe(1)
    expect(new FrameDecoder(31).push(encodeFrame(text)).fault?._tag).toBe("FrameTooLarge")
  })
})

describe("request frames", () => {
  it.prop(
    "encodeRequestFrame(head, params) is the frame of head + params + '}'",
    [fc.string({ unit: "binary", maxLength: 100 }), fc.string({ unit: "binary", maxLength: 300 })],
    ([head, params]) => {
      expect(encodeRequestFrame(head, params)).toEqual(encodeFrame(`${head}${params}}`))
    },
  )
})
