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

/**
 * The latest lines of a stream within `maxBytes` (UTF-8), oldest first. A
 * line that ended with a bare `\r` is replaced by the next one, as on a
 * terminal; the pieces of a cut line are joined again.
 *
 * @internal
 */
export class LineTail {
  private lines: Array<{ text: string; bytes: number; end: LineEnd }> = []
  private head = 0
  private bytes = 0

  constructor(private readonly maxBytes: number) {}

  push(text: string, end: LineEnd): void {
    const last = this.lines.length > this.head ? this.lines[this.lines.length - 1] : undefined
    if (last?.end === "redraw") {
      // The whole redrawn line goes, the pieces it was cut into included.
      this.drop()
      while (this.lines.length > this.head && this.lines[this.lines.length - 1].end === "cut") this.drop()
    }
    const bytes = Buffer.byteLength(text, "utf8") + (end === "cut" ? 0 : 1)
    this.lines.push({ text, bytes, end })
    this.bytes += bytes
    while (this.bytes > this.maxBytes && this.lines.length > this.head) {
      this.bytes -= this.lines[this.head].bytes
      this.head++
    }
    if (this.head > 1024 && this.head * 2 > this.lines.length) {
      this.lines = this.lines.slice(this.head)
      this.head = 0
    }
  }

  /** Each line with its `\n`, but the pieces of a cut line, which run on. */
  get text(): string {
    let text = ""
    for (let i = this.head; i < this.lines.length; i++) {
      text += this.lines[i].end === "cut" ? this.lines[i].text : `${this.lines[i].text}\n`
    }
    return text
  }

  private drop(): void {
    this.bytes -= this.lines[this.lines.length - 1].bytes
    this.lines.pop()
  }
}
