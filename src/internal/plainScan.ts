/**
 * Whether UTF-8 bytes may stand between a JSON string's quotes as they are:
 * no byte below 0x20, no `"` and no `\` (every byte of a multi-byte sequence
 * is at or above 0x80). A long string is checked 16 bytes at a time by a
 * WebAssembly SIMD loop, which runs at the memory's speed (64 MiB in ~13 ms
 * here); the JavaScript loop, four bytes a word, took 35-55 ms, the largest
 * self time of a 64 MiB `trainWindow`. Where WebAssembly SIMD is missing
 * (Deno's `--jitless`, say), the JavaScript loop checks.
 *
 * @internal
 */
import { Buffer } from "node:buffer"

/**
 * The module, as `wat2wasm` would assemble it:
 *
 * ```wat
 * (module
 *   (import "env" "memory" (memory 0))
 *   (func (export "plain") (param $at i32) (param $end i32) (result i32)
 *     (local $v v128)
 *     (block $done
 *       (loop $next
 *         (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
 *         (local.set $v (v128.load (local.get $at)))
 *         (if (v128.any_true (v128.or (v128.or
 *               (i8x16.lt_u (local.get $v) (v128.const i8x16 0x20 ...))
 *               (i8x16.eq (local.get $v) (v128.const i8x16 0x22 ...)))
 *               (i8x16.eq (local.get $v) (v128.const i8x16 0x5c ...))))
 *           (then (return (i32.const 0))))
 *         (local.set $at (i32.add (local.get $at) (i32.const 16)))
 *         (br $next)))
 *     (i32.const 1)))
 * ```
 */
const MODULE_BYTES = (() => {
  // Every length here is below 128, so its LEB128 is the one byte; a longer body would fail `validate`.
  const vec = (bytes: ReadonlyArray<number>) => [bytes.length, ...bytes]
  const name = (text: string) => vec([...text].map((char) => char.charCodeAt(0)))
  const section = (id: number, bytes: ReadonlyArray<number>) => [id, ...vec(bytes)]
  const splat = (byte: number) => [0xfd, 0x0c, ...new Array<number>(16).fill(byte)]
  const GET_AT = [0x20, 0x00]
  const GET_V = [0x20, 0x02]
  const body = [
    ...[0x01, 0x01, 0x7b], // one local: $v, a v128
    ...[0x02, 0x40, 0x03, 0x40], // block $done, loop $next
    ...GET_AT,
    ...[0x20, 0x01, 0x4f, 0x0d, 0x01], // $end, i32.ge_u, br_if $done
    ...GET_AT,
    ...[0xfd, 0x00, 0x00, 0x00, 0x21, 0x02], // v128.load (no alignment assumed), local.set $v
    ...GET_V,
    ...splat(0x20),
    ...[0xfd, 0x26], // i8x16.lt_u
    ...GET_V,
    ...splat(0x22),
    ...[0xfd, 0x23, 0xfd, 0x50], // i8x16.eq, v128.or
    ...GET_V,
    ...splat(0x5c),
    ...[0xfd, 0x23, 0xfd, 0x50], // i8x16.eq, v128.or
    ...[0xfd, 0x53, 0x04, 0x40, 0x41, 0x00, 0x0f, 0x0b], // v128.any_true, if: return 0
    ...GET_AT,
    ...[0x41, 0x10, 0x6a, 0x21, 0x00, 0x0c, 0x00], // $at += 16, br $next
    ...[0x0b, 0x0b, 0x41, 0x01, 0x0b], // end loop, end block, 1
  ]
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, [0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7f]), // (i32, i32) -> i32
    ...section(2, [0x01, ...name("env"), ...name("memory"), 0x02, 0x00, 0x00]),
    ...section(3, [0x01, 0x00]),
    ...section(7, [0x01, ...name("plain"), 0x00, 0x00]),
    ...section(10, [0x01, ...vec(body)]),
  ])
})()

const PAGE_BYTES = 65536

/** What this module uses of the `WebAssembly` global, typed here: the npm build has no DOM library. */
interface Wasm {
  readonly validate: (bytes: Uint8Array) => boolean
  readonly Module: new (bytes: Uint8Array) => object
  readonly Instance: new (module: object, imports: object) => { readonly exports: object }
  readonly Memory: new (descriptor: { readonly initial: number }) => { readonly buffer: ArrayBuffer }
}

/** Compiled on first use; `null` where WebAssembly SIMD is missing. */
let compiled: { readonly wasm: Wasm; readonly module: object } | null | undefined

const simdModule = () => {
  if (compiled !== undefined) return compiled
  const wasm = (globalThis as unknown as { readonly WebAssembly?: Wasm }).WebAssembly
  try {
    compiled = wasm !== undefined && wasm.validate(MODULE_BYTES)
      ? { wasm, module: new wasm.Module(MODULE_BYTES) }
      : null
  } catch {
    compiled = null
  }
  return compiled
}

/** Whether this runtime checks with WebAssembly SIMD. @internal */
export const usesSimd = (): boolean => simdModule() !== null

const isSpecial = (byte: number) => byte < 0x20 || byte === 0x22 || byte === 0x5c

/**
 * The JavaScript check: four bytes at a time, each test exact for "any byte
 * of the word" (a byte's high bit in `(w - 0x01..) & ~w` is set only if some
 * byte of `w` is zero).
 *
 * @internal
 */
export const plainWords = (bytes: Uint8Array): boolean => {
  const whole = bytes.length >>> 2
  // An unpooled buffer starts at offset 0: aligned for the word view.
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, whole)
  for (let i = 0; i < whole; i++) {
    const w = words[i]
    const quote = w ^ 0x22222222
    const backslash = w ^ 0x5c5c5c5c
    if (
      (((w - 0x20202020) & ~w) | ((quote - 0x01010101) & ~quote) | ((backslash - 0x01010101) & ~backslash)) &
      0x80808080
    ) return false
  }
  for (let i = whole << 2; i < bytes.length; i++) if (isSpecial(bytes[i])) return false
  return true
}

/**
 * Room for `length` bytes, and the check of what was written there: in a
 * WebAssembly memory of its own (gone with the bytes) where SIMD is
 * available, else in an unpooled `Buffer`.
 *
 * @internal
 */
export const scratch = (length: number): { readonly bytes: Uint8Array; readonly plain: () => boolean } => {
  const simd = simdModule()
  if (simd !== null) {
    let memory: { readonly buffer: ArrayBuffer } | undefined
    try {
      memory = new simd.wasm.Memory({ initial: Math.max(1, Math.ceil(length / PAGE_BYTES)) })
    } catch {
      // No address space for another memory: the Buffer below may still fit.
    }
    if (memory !== undefined) {
      const { plain } = new simd.wasm.Instance(simd.module, { env: { memory } }).exports as {
        readonly plain: (at: number, end: number) => number
      }
      const bytes = new Uint8Array(memory.buffer, 0, length)
      const whole = length - (length % 16)
      return {
        bytes,
        plain: () => {
          if (plain(0, whole) !== 1) return false
          for (let i = whole; i < length; i++) if (isSpecial(bytes[i])) return false
          return true
        },
      }
    }
  }
  const bytes = Buffer.allocUnsafeSlow(length)
  return { bytes, plain: () => plainWords(bytes) }
}
