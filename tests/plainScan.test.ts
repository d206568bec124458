/**
 * The check that UTF-8 bytes may stand between a JSON string's quotes as
 * they are (`plainScan.ts`), against the definition, byte by byte: on both
 * of its paths (WebAssembly SIMD and the JavaScript word loop), for every
 * length around the 16-byte blocks and 4-byte words, with the one byte that
 * spoils it anywhere.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "effect/FastCheck"
import { spawnSync } from "node:child_process"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { plainWords, scratch, usesSimd } from "../src/internal/plainScan.ts"

const definition = (bytes: Uint8Array): boolean => bytes.every((byte) => byte >= 0x20 && byte !== 0x22 && byte !== 0x5c)

/** Bytes mostly fine, the neighbours of the special ones among them, and sometimes a special one. */
const byte = fc.oneof(
  { weight: 20, arbitrary: fc.constantFrom(0x20, 0x21, 0x23, 0x5b, 0x5d, 0x78, 0x7f, 0x80, 0xc3, 0xff) },
  { weight: 1, arbitrary: fc.constantFrom(0x00, 0x0a, 0x1f, 0x22, 0x5c) },
)
// Every length up to 100, not fast-check's small default: the SIMD loop needs 16 bytes or more.
const bytes = fc.array(byte, { maxLength: 100, size: "max" }).map((values) => Uint8Array.from(values))

/** `values` where `scratch` puts them, checked there. */
const scratchPlain = (values: Uint8Array): boolean => {
  const { bytes, plain } = scratch(values.length)
  bytes.set(values)
  return plain()
}

describe("plain JSON string bytes", () => {
  it("Deno checks them with WebAssembly SIMD", () => {
    expect(usesSimd()).toBe(true)
  })

  it.prop("the SIMD check is the definition", [bytes], ([values]) => {
    expect(scratchPlain(values)).toBe(definition(values))
  }, { fastCheck: { numRuns: 5000 } })

  it.prop("the JavaScript check is the definition", [bytes], ([values]) => {
    expect(plainWords(values)).toBe(definition(values))
  }, { fastCheck: { numRuns: 5000 } })

  it("one special byte anywhere in a long run of plain ones is found, by both checks", () => {
    const length = 4 * 16 + 7
    for (const special of [0x00, 0x1f, 0x22, 0x5c]) {
      for (let at = 0; at < length; at++) {
        const values = new Uint8Array(length).fill(0x78)
        values[at] = special
        expect(scratchPlain(values)).toBe(false)
        expect(plainWords(values)).toBe(false)
      }
    }
    const plain = new Uint8Array(length).fill(0x20)
    expect(scratchPlain(plain)).toBe(true)
    expect(plainWords(plain)).toBe(true)
  })

  it("a check of 64 MiB gives the same answer on both paths", () => {
    const length = 64 << 20
    const { bytes, plain } = scratch(length)
    bytes.fill(0x61)
    expect(plain()).toBe(true)
    expect(plainWords(bytes)).toBe(true)
    bytes[length - 17] = 0x0a
    expect(plain()).toBe(false)
    expect(plainWords(bytes)).toBe(false)
  })

  it("without WebAssembly (--jitless) the JavaScript check frames long strings as JSON.stringify does", () => {
    const fixture = fileURLToPath(new URL("./fixtures/plain_without_wasm.ts", import.meta.url))
    const result = spawnSync(process.execPath, ["run", "--v8-flags=--jitless", fixture], { encoding: "utf8" })
    expect(result.stderr).toBe("")
    expect(JSON.parse(result.stdout)).toEqual({
      webAssembly: "undefined",
      simd: false,
      plain: true,
      quoted: "whole",
      control: "whole",
    })
  })
})
