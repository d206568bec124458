/**
 * Length-prefixed framing: an 8-byte big-endian unsigned length, then that
 * many bytes. TCP delivers arbitrary splits, so the decoder reassembles, and it
 * checks the announced length before allocating anything.
 *
 * @internal
 */
import { Buffer } from "node:buffer"
import type { SplitJson } from "./longStrings.ts"

/** @internal */
export const HEADER_BYTES = 8

/** @internal */
export type FrameFault =
  | { readonly _tag: "FrameTooLarge"; readonly length: number; readonly maxFrameBytes: number }
  | { readonly _tag: "TruncatedFrame"; readonly expected: number; readonly received: number }

/** The 8-byte big-endian length of a `bodyLength` body, at `offset`. */
const writeHeader = (frame: Buffer, bodyLength: number, offset = 0) => {
  frame.writeUInt32BE(Math.floor(bodyLength / 0x1_0000_0000), offset)
  frame.writeUInt32BE(bodyLength >>> 0, offset + 4)
}

/** Frames of at most this many bytes (by the 3-bytes-per-unit bound) are cut from a shared slab. */
const SMALL_FRAME_BYTES = 8 * 1024
const SLAB_BYTES = 64 * 1024

/**
 * Where small frames are encoded, one after another, never over each other:
 * one allocation per 64 KiB of frames instead of one per frame (a fresh
 * `Uint8Array` costs ~0.6 µs under Deno), as Node's `Buffer` pool does.
 * `slabView` is the same memory as a plain `Uint8Array`, whose `subarray` is
 * cheaper than a `Buffer`'s for `encodeInto`'s targets.
 */
let slab = Buffer.allocUnsafeSlow(SLAB_BYTES)
let slabView = new Uint8Array(slab.buffer, slab.byteOffset, SLAB_BYTES)
let slabUsed = 0

/**
 * Encodes `head + params + "}"` as one frame in one buffer, so the socket
 * sees one write (split header and body writes cost ~44 ms per call with
 * Nagle), without concatenating the strings first: joining a large params
 * text to the envelope makes V8 flatten and copy it (measured: 74 ms instead
 * of 37 ms for 64 MiB). A small frame is encoded once, into the slab, with
 * no count of its bytes first: ~0.4 µs instead of ~1.4 µs.
 *
 * @internal
 */
export const encodeRequestFrame = (head: string, params: string): Buffer => {
  const most = HEADER_BYTES + (head.length + params.length + 1) * 3
  if (most > SMALL_FRAME_BYTES) return exactFrame(head, params)
  if (slabUsed + most > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES)
    slabView = new Uint8Array(slab.buffer, slab.byteOffset, SLAB_BYTES)
    slabUsed = 0
  }
  const start = slabUsed
  const headEnd = start + HEADER_BYTES + encoder.encodeInto(head, slabView.subarray(start + HEADER_BYTES)).written
  const paramsEnd = headEnd + encoder.encodeInto(params, slabView.subarray(headEnd)).written
  slabView[paramsEnd] = 0x7d // "}"
  const end = paramsEnd + 1
  writeHeader(slab, end - start - HEADER_BYTES, start)
  slabUsed = end
  return slab.subarray(start, end)
}

/** A larger frame in a buffer of its exact size: its bytes counted first. */
const exactFrame = (head: string, params: string): Buffer => {
  const headLength = Buffer.byteLength(head, "utf8")
  const paramsLength = Buffer.byteLength(params, "utf8")
  const bodyLength = headLength + paramsLength + 1
  const frame = Buffer.allocUnsafe(HEADER_BYTES + bodyLength)
  writeHeader(frame, bodyLength)
  frame.write(head, HEADER_BYTES, "utf8")
  frame.write(params, HEADER_BYTES + headLength, "utf8")
  frame[HEADER_BYTES + bodyLength - 1] = 0x7d // "}"
  return frame
}

/**
 * Params longer than this many UTF-16 units are sent in pieces of this size
 * (up to 3 MiB of UTF-8 each), not as one buffer: the client then holds the
 * params text and one piece, not the text and a copy of the whole frame, and
 * the worker starts reading while the rest is encoded.
 *
 * @internal
 */
export const PIECE_UNITS = 1 << 20

/**
 * A request frame as pieces: its size, and the pieces in order, each made
 * when it is taken.
 *
 * @internal
 */
export interface FramePieces {
  readonly bytes: number
  readonly pieces: Iterator<Uint8Array>
}

/**
 * The frame of `head + params + "}"` in pieces, each encoded when it is
 * taken: the header with `head`, then the params cut every `pieceUnits`
 * (never inside a surrogate pair), the last with the closing brace. For
 * params longer than `PIECE_UNITS`; shorter ones go in one buffer
 * (`encodeRequestFrame`).
 *
 * @internal
 */
export const requestFramePieces = (
  head: string,
  params: string,
  pieceUnits: number = PIECE_UNITS,
): FramePieces => {
  const headLength = Buffer.byteLength(head, "utf8")
  const bodyLength = headLength + Buffer.byteLength(params, "utf8") + 1
  let start = -1
  return {
    bytes: HEADER_BYTES + bodyLength,
    pieces: {
      next: () => {
        if (start === -1) {
          start = 0
          return { done: false, value: firstPiece(bodyLength, head, headLength, "") }
        }
        if (start > params.length) return { done: true, value: undefined }
        let end = Math.min(params.length, start + pieceUnits)
        // A pair of surrogates is never cut: its high half goes to the next piece (or, alone, takes its low half).
        const last = params.charCodeAt(end - 1)
        const next = params.charCodeAt(end)
        if (last >= 0xd800 && last <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) end += end - start > 1 ? -1 : 1
        const text = end === params.length ? `${params.slice(start)}}` : params.slice(start, end)
        start = end === params.length ? params.length + 1 : end
        return { done: false, value: utf8Of(text) }
      },
    },
  }
}

/** A piece frame's first piece: the header of a `bodyLength` body, then `head` and `text`. */
const firstPiece = (bodyLength: number, head: string, headLength: number, text: string): Buffer => {
  const piece = Buffer.allocUnsafe(HEADER_BYTES + headLength + Buffer.byteLength(text, "utf8"))
  writeHeader(piece, bodyLength)
  piece.write(head, HEADER_BYTES, "utf8")
  if (text !== "") piece.write(text, HEADER_BYTES + headLength, "utf8")
  return piece
}

const encoder = new TextEncoder()

/** `Buffer.from(text, "utf8")`, ~3x faster on long text under Deno. */
const utf8Of = (text: string): Buffer => {
  const out = Buffer.allocUnsafe(Buffer.byteLength(text, "utf8"))
  encoder.encodeInto(text, out)
  return out
}

/**
 * The frame of `head + params + "}"` for params split around long strings
 * (`longStrings.ts`), in pieces: the header with `head` and the first text,
 * then each string's bytes (as views, `pieceBytes` at a time) and the text
 * after it, the last with the closing brace.
 *
 * @internal
 */
export const splitFramePieces = (
  head: string,
  params: SplitJson,
  pieceBytes: number = PIECE_UNITS,
): FramePieces => {
  const headLength = Buffer.byteLength(head, "utf8")
  const bodyLength = headLength + params.bytes + 1
  const { strings, texts } = params
  const last = texts.length - 1
  // Where the next piece starts: text `k`, or string `k` at `offset`.
  let k = 0
  let inString = false
  let offset = 0
  return {
    bytes: HEADER_BYTES + bodyLength,
    pieces: {
      next: () => {
        if (k > last) return { done: true, value: undefined }
        if (inString) {
          const bytes = strings[k]
          const end = Math.min(bytes.length, offset + pieceBytes)
          const value = bytes.subarray(offset, end)
          offset = end
          if (end === bytes.length) {
            inString = false
            k++
          }
          return { done: false, value }
        }
        const text = k === last ? `${texts[k]}}` : texts[k]
        const value = k === 0 ? firstPiece(bodyLength, head, headLength, text) : utf8Of(text)
        if (k === last) k++
        else {
          inString = true
          offset = 0
        }
        return { done: false, value }
      },
    },
  }
}

/**
 * Incremental decoder. `push` returns the frames completed by a chunk, or the
 * fault that makes the stream unusable; after a fault it accepts nothing more.
 *
 * @internal
 */
export class FrameDecoder {
  private readonly header = new Uint8Array(HEADER_BYTES)
  private headerFilled = 0
  private body: Uint8Array | undefined
  private bodyFilled = 0
  private fault: FrameFault | undefined

  constructor(readonly maxFrameBytes: number) {}

  /** Bytes of an unfinished frame held so far: non-zero at EOF means a truncated frame. */
  get buffered(): number {
    return this.body === undefined ? this.headerFilled : HEADER_BYTES + this.bodyFilled
  }

  push(chunk: Uint8Array): { readonly frames: Array<Uint8Array>; readonly fault?: FrameFault } {
    const frames: Array<Uint8Array> = []
    if (this.fault !== undefined) return { frames, fault: this.fault }
    let offset = 0
    while (offset < chunk.length) {
      if (this.body === undefined) {
        // Fast path: a whole frame inside the chunk is returned as a view, no copy.
        if (this.headerFilled === 0 && chunk.length - offset >= HEADER_BYTES) {
          const length = this.readLength(chunk, offset)
          if (length === undefined) return { frames, fault: this.fault }
          if (chunk.length - offset - HEADER_BYTES >= length) {
            frames.push(chunk.subarray(offset + HEADER_BYTES, offset + HEADER_BYTES + length))
            offset += HEADER_BYTES + length
            continue
          }
          this.body = new Uint8Array(length)
          offset += HEADER_BYTES
          continue
        }
        const take = Math.min(HEADER_BYTES - this.headerFilled, chunk.length - offset)
        this.header.set(chunk.subarray(offset, offset + take), this.headerFilled)
        this.headerFilled += take
        offset += take
        if (this.headerFilled < HEADER_BYTES) break
        const length = this.readLength(this.header, 0)
        if (length === undefined) return { frames, fault: this.fault }
        this.body = new Uint8Array(length)
      }
      const take = Math.min(this.body.length - this.bodyFilled, chunk.length - offset)
      this.body.set(chunk.subarray(offset, offset + take), this.bodyFilled)
      this.bodyFilled += take
      offset += take
      if (this.bodyFilled === this.body.length) {
        frames.push(this.body)
        this.body = undefined
        this.bodyFilled = 0
        this.headerFilled = 0
      }
    }
    return { frames }
  }

  /** The fault to report when the stream ends now, if a frame was cut short. */
  end(): FrameFault | undefined {
    if (this.fault !== undefined || this.buffered === 0) return this.fault
    return {
      _tag: "TruncatedFrame",
      expected: this.body === undefined ? HEADER_BYTES : HEADER_BYTES + this.body.length,
      received: this.buffered,
    }
  }

  private readLength(bytes: Uint8Array, offset: number): number | undefined {
    // Read byte by byte: a `DataView` per frame cost more than the read.
    const high = (bytes[offset] << 24 | bytes[offset + 1] << 16 | bytes[offset + 2] << 8 | bytes[offset + 3]) >>> 0
    const low = (bytes[offset + 4] << 24 | bytes[offset + 5] << 16 | bytes[offset + 6] << 8 | bytes[offset + 7]) >>> 0
    // Compared in two halves: lengths past 2^53 are not exact JavaScript numbers.
    if (high > 0 || low > this.maxFrameBytes) {
      this.fault = { _tag: "FrameTooLarge", length: high * 0x1_0000_0000 + low, maxFrameBytes: this.maxFrameBytes }
      return undefined
    }
    return low
  }
}

/** Bytes of `{"id":,"method":"","params":}` around an id of at most 16 digits. */
const envelopeBytes = (method: string) => HEADER_BYTES + 30 + 16 + Buffer.byteLength(method, "utf8")

/**
 * The frame size a request of `paramsBytes` would take.
 *
 * @internal
 */
export const requestBytes = (method: string, paramsBytes: number): number => envelopeBytes(method) + paramsBytes

/**
 * What a framing fault means, in words.
 *
 * @internal
 */
export const describeFault = (fault: FrameFault): string =>
  fault._tag === "FrameTooLarge"
    ? `a frame announced ${fault.length} bytes, above maxFrameBytes ${fault.maxFrameBytes}`
    : `the stream ended ${fault.received} bytes into a ${fault.expected}-byte frame`
