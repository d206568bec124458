/**
 * The worker's stdout and stderr as lines, in bounded memory whatever the
 * worker prints: progress bars that redraw with `\r` and never print `\n`,
 * output with no newline at all, bytes that are not UTF-8.
 *
 * A line ends at `\n`, `\r\n` or `\r`; a line longer than `maxLineBytes` is
 * cut into pieces of at most that size; invalid UTF-8 becomes U+FFFD. The
 * stderr tail keeps the latest lines up to a byte budget and, like a
 * terminal, keeps only the last redraw of a line that ended with a bare `\r`.
 *
 * @internal
 */
import { Buffer } from "node:buffer"

/**
 * Longest piece of one output line kept or logged at once.
 *
 * @internal
 */
export const MAX_LINE_BYTES = 8 * 1024

const LF = 0x0a
const CR = 0x0d

/** How a line ended: a bare `\r` means the next line redraws it. */
export type LineEnd = "newline" | "redraw" | "cut"

/** @internal */
export class LineSplitter {
  private readonly line: Uint8Array
  private filled = 0
  private pendingCr = false
  /** A cut piece went out and its line has not ended yet. */
  private midLine = false
  private readonly decoder = new TextDecoder("utf-8", { fatal: false })

  /**
   * With `latestRedrawOnly`, a line that ends with a bare `\r` is not even
   * decoded when the next line ends in the same chunk (a tail would drop it
   * at once): what keeps a progress bar that redraws millions of times cheap
   * when nobody logs every line.
   */
  constructor(
    private readonly emit: (line: string, end: LineEnd) => void,
    maxLineBytes: number = MAX_LINE_BYTES,
    private readonly latestRedrawOnly: boolean = false,
  ) {
    this.line = new Uint8Array(maxLineBytes)
  }

  push(chunk: Uint8Array): void {
    let start = 0
    if (this.pendingCr && chunk.length > 0) {
      // A `\r` that ended the previous chunk: `\r\n` is one newline, anything else a redraw.
      this.pendingCr = false
      this.flush(chunk[0] === LF ? "newline" : "redraw")
      if (chunk[0] === LF) start = 1
    }
    // Native searches for the next `\n` and `\r`: redraw-heavy output has one of them per ~100 bytes.
    let lf = chunk.indexOf(LF, start)
    let cr = chunk.indexOf(CR, start)
    while (lf !== -1 || cr !== -1) {
      const i = lf === -1 ? cr : cr === -1 ? lf : Math.min(lf, cr)
      const from = start
      start = i + 1
      if (chunk[i] === LF) {
        this.endLine(chunk, from, i, "newline")
      } else if (i + 1 === chunk.length) {
        this.append(chunk, from, i)
        this.pendingCr = true
      } else if (chunk[i + 1] === LF) {
        this.endLine(chunk, from, i, "newline")
        start = i + 2
      } else {
        if (lf !== -1 && lf < start) lf = chunk.indexOf(LF, start)
        if (cr !== -1 && cr < start) cr = chunk.indexOf(CR, start)
        const overdrawn = this.latestRedrawOnly && this.filled === 0 && !this.midLine && (lf !== -1 || cr !== -1)
        if (!overdrawn) this.endLine(chunk, from, i, "redraw")
        continue
      }
      if (lf !== -1 && lf < start) lf = chunk.indexOf(LF, start)
      if (cr !== -1 && cr < start) cr = chunk.indexOf(CR, start)
    }
    this.append(chunk, start, chunk.length)
  }

  /** Ends a line whose last bytes are `chunk[from, to)`. */
  private endLine(chunk: Uint8Array, from: number, to: number, end: LineEnd): void {
    if (this.filled === 0 && to - from < this.line.length) {
      // The whole line is in this chunk: decoded where it is, without a copy.
      this.midLine = false
      return this.emit(this.decoder.decode(chunk.subarray(from, to)), end)
    }
    this.append(chunk, from, to)
    this.flush(end)
  }

  /** Emits what is left once the stream has ended. */
  end(): void {
    // A line cut at the very end still ends (and the decoder gives up any bytes it held back).
    if (this.filled > 0 || this.pendingCr || this.midLine) this.flush(this.pendingCr ? "redraw" : "newline")
    this.pendingCr = false
  }

  private append(chunk: Uint8Array, from: number, to: number): void {
    while (from < to) {
      const take = Math.min(this.line.length - this.filled, to - from)
      this.line.set(chunk.subarray(from, from + take), this.filled)
      this.filled += take
      from += take
      if (this.filled === this.line.length) this.flush("cut")
    }
  }

  private flush(end: LineEnd): void {
    // A cut may split a UTF-8 sequence: the decoder carries it into the next piece.
    const text = this.decoder.decode(this.line.subarray(0, this.filled), { stream: end === "cut" })
    this.filled = 0
    this.midLine = end === "cut"
    this.emit(text, end)
  }
}

type Entry = { readonly text: string; readonly bytes: number; readonly end: LineEnd }

/**
 * `entry` without at least its first `drop` bytes, cut before a character:
 * its end, as the top line of a terminal's last `n` bytes shows it.
 */
const withoutStart = (entry: Entry, drop: number): Entry => {
  const bytes = Buffer.from(entry.text, "utf8")
  let from = drop
  while (from < bytes.length && (bytes[from] & 0xc0) === 0x80) from++
  const rest = bytes.length - from
  return { text: bytes.toString("utf8", from), bytes: rest + entry.bytes - bytes.length, end: entry.end }
}

/**
 * Entries oldest first, and their bytes; the oldest bytes go first, so the
 * oldest entry may be kept in part: what it lost is cut from its text only
 * when the entries are read, not on every push.
 */
class Entries {
  private items: Array<Entry> = []
  private head = 0
  /** The bytes of the entries from `head` on, less what the oldest lost. */
  bytes = 0
  /** What the oldest entry lost from its start. */
  private lost = 0
  /** Some bytes were dropped since the last `clear`. */
  evicted = false

  get list(): ReadonlyArray<Entry> {
    this.compact()
    if (this.lost > 0) {
      const oldest = this.items[0]
      const kept = withoutStart(oldest, this.lost)
      this.bytes -= oldest.bytes - this.lost - kept.bytes
      this.lost = 0
      if (kept.bytes > 0) this.items[0] = kept
      else this.items.shift()
    }
    return this.items
  }

  push(entry: Entry): void {
    this.items.push(entry)
    this.bytes += entry.bytes
  }

  /** Drops the oldest bytes until the rest fit in `maxBytes`. */
  fit(maxBytes: number): void {
    while (this.bytes > maxBytes && this.head < this.items.length) {
      this.evicted = true
      const left = this.items[this.head].bytes - this.lost
      const excess = this.bytes - maxBytes
      if (left <= excess) {
        this.bytes -= left
        this.head++
        this.lost = 0
      } else {
        this.bytes -= excess
        this.lost += excess
      }
    }
    if (this.head > 1024 && this.head * 2 > this.items.length) this.compact()
  }

  /** Nothing was pushed since the last `clear`. */
  get untouched(): boolean {
    return this.items.length === 0 && !this.evicted
  }

  clear(): void {
    // One entry, the usual redraw, is popped: `length = 0` gives the array's storage up, and the next push allocates it.
    if (this.items.length === 1) this.items.pop()
    else if (this.items.length > 0) this.items = []
    this.head = 0
    this.bytes = 0
    this.lost = 0
    this.evicted = false
  }

  private compact(): void {
    if (this.head === 0) return
    this.items = this.items.slice(this.head)
    this.head = 0
  }
}

/**
 * The last `maxBytes` (UTF-8) of a stream's lines, oldest first: the first
 * of them may be the end of a longer one. A line that ended with a bare `\r`
 * is replaced by the next one, as on a terminal; the pieces of a cut line
 * are joined again.
 *
 * The last line stays apart from the settled ones while it may still vanish
 * (its pieces before it ends, or all of it once a bare `\r` ended it), so a
 * redraw that is replaced later evicts nothing: the tail is the same whether
 * or not the splitter skipped it. Each part keeps at most `maxBytes` (and
 * its oldest piece whole, until it is read).
 *
 * @internal
 */
export class LineTail {
  private readonly settled = new Entries()
  private readonly open = new Entries()
  /** A bare `\r` ended the open line: the next piece replaces it. */
  private redrawn = false

  constructor(private readonly maxBytes: number) {}

  push(text: string, end: LineEnd): void {
    if (this.redrawn) {
      this.open.clear()
      this.redrawn = false
    }
    const entry = { text, bytes: Buffer.byteLength(text, "utf8") + (end === "cut" ? 0 : 1), end }
    if (end !== "newline") {
      this.open.push(entry)
      this.open.fit(this.maxBytes)
      this.redrawn = end === "redraw"
      return
    }
    if (!this.open.untouched) {
      // The line stays: its pieces settle, and if some were evicted, what came before them is out of the tail.
      if (this.open.evicted) this.settled.clear()
      for (const piece of this.open.list) this.settled.push(piece)
      this.open.clear()
    }
    this.settled.push(entry)
    this.settled.fit(this.maxBytes)
  }

  /** Each line with its `\n`, but the pieces of a cut line, which run on. */
  get text(): string {
    const settled = this.settled.list
    const shown: Array<Entry> = []
    if (!this.open.evicted) {
      let room = this.maxBytes - this.open.bytes
      for (let i = settled.length - 1; i >= 0 && room > 0; i--) {
        if (settled[i].bytes > room) {
          // The first line shown, in part: nothing before it.
          shown.push(withoutStart(settled[i], settled[i].bytes - room))
          break
        }
        shown.push(settled[i])
        room -= settled[i].bytes
      }
      shown.reverse()
    }
    let text = ""
    for (const entries of [shown, this.open.list]) {
      for (const { end, text: line } of entries) text += end === "cut" ? line : `${line}\n`
    }
    return text
  }
}
