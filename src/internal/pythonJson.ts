/**
 * Python's `json.dumps(value, sort_keys=True, separators=(",", ":"))` with
 * its default `ensure_ascii=True`, byte for byte, and the layout hash built on it.
 *
 * @internal
 */
import { createHash } from "node:crypto"

/** A value `dumps` can encode: what JSON.parse yields, plus bigint for integers past 2^53. */
export type PythonJson =
  | null
  | boolean
  | number
  | bigint
  | string
  | ReadonlyArray<PythonJson>
  | { readonly [key: string]: PythonJson }

/**
 * Python orders `str` by code point; JavaScript's `<` by UTF-16 code unit.
 * They differ when a surrogate (an astral character) meets a BMP character
 * from U+E000 up. A lone surrogate is its own code point, as in Python.
 */
export const compareCodePoints = (a: string, b: string): number => {
  let i = 0
  let j = 0
  while (i < a.length && j < b.length) {
    const x = a.codePointAt(i)!
    const y = b.codePointAt(j)!
    if (x !== y) return x - y
    i += x > 0xffff ? 2 : 1
    j += y > 0xffff ? 2 : 1
  }
  return (a.length - i) - (b.length - j)
}

const SHORT_ESCAPES: Record<number, string> = {
  0x22: '\\"',
  0x5c: "\\\\",
  0x0a: "\\n",
  0x0d: "\\r",
  0x09: "\\t",
  0x08: "\\b",
  0x0c: "\\f",
}

/**
 * `json.encoder.py_encode_basestring_ascii`: every code unit outside
 * U+0020..U+007E is escaped, `\uXXXX` in lowercase hex. Astral characters come
 * out as their surrogate pair, which is what JavaScript strings hold already.
 */
export const encodeString = (text: string): string => {
  let out = '"'
  let run = 0
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i)
    if (unit >= 0x20 && unit <= 0x7e && unit !== 0x22 && unit !== 0x5c) continue
    out += text.slice(run, i) + (SHORT_ESCAPES[unit] ?? `\\u${unit.toString(16).padStart(4, "0")}`)
    run = i + 1
  }
  return out + text.slice(run) + '"'
}

/**
 * `float.__repr__`: the shortest digits that round-trip (JavaScript finds the
 * same ones), written in fixed notation for 1e-4 <= |x| < 1e16, else with an
 * exponent of at least two digits; always with a `.` or an exponent.
 */
export const encodeFloat = (x: number): string => {
  if (Number.isNaN(x)) return "NaN"
  if (x === Infinity) return "Infinity"
  if (x === -Infinity) return "-Infinity"
  const sign = x < 0 || Object.is(x, -0) ? "-" : ""
  if (x === 0) return `${sign}0.0`
  const [mantissa, exponentText] = Math.abs(x).toExponential().split("e")
  const digits = mantissa.replace(".", "")
  const exponent = Number(exponentText)
  const point = exponent + 1
  if (point <= -4 || point > 16) {
    const tail = digits.length > 1 ? `.${digits.slice(1)}` : ""
    const magnitude = String(Math.abs(exponent)).padStart(2, "0")
    return `${sign}${digits[0]}${tail}e${exponent < 0 ? "-" : "+"}${magnitude}`
  }
  if (point <= 0) return `${sign}0.${"0".repeat(-point)}${digits}`
  if (point >= digits.length) return `${sign}${digits}${"0".repeat(point - digits.length)}.0`
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`
}

/**
 * JavaScript cannot tell `2` from `2.0`, so a number is written as what Python
 * would make of `JSON.stringify(x)`: an integral number below 1e21 (which
 * JSON.stringify writes as digits) as an `int` (torch shapes and numels are
 * ints), any other as a `float`. Hence `dumps(v)` is Python's
 * `json.dumps(json.loads(JSON.stringify(v)), ...)`. Pass a bigint for an int past 1e21.
 */
const encodeNumber = (x: number): string => Number.isInteger(x) && Math.abs(x) < 1e21 ? String(x) : encodeFloat(x)

/** `json.dumps(value, sort_keys=True, separators=(",", ":"))`. */
export const dumps = (value: PythonJson): string => {
  if (value === null) return "null"
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false"
    case "number":
      return encodeNumber(value)
    case "bigint":
      return value.toString()
    case "string":
      return encodeString(value)
  }
  if (Array.isArray(value)) return `[${value.map(dumps).join(",")}]`
  const record = value as { readonly [key: string]: PythonJson }
  const keys = Object.keys(record).sort(compareCodePoints)
  return `{${keys.map((key) => `${encodeString(key)}:${dumps(record[key])}`).join(",")}}`
}

/** `"torch-layout-" + sha256(dumps(layout)).hexdigest()`. */
export const layoutHash = (layout: PythonJson): string =>
  "torch-layout-" + createHash("sha256").update(dumps(layout), "utf8").digest("hex")
