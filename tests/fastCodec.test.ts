/**
 * The compiled fast path of the protocol's schemas against `effect/Schema`
 * itself: for every method's params and result, on values the schema makes
 * and on those values broken in random places, whatever the fast path
 * accepts the schema accepts, with a value equal down to prototypes and key
 * order; and it says `FAIL` (the schema decides) wherever it could be wrong.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Arbitrary from "effect/Arbitrary"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fc from "effect/FastCheck"
import * as Schema from "effect/Schema"
import { isDeepStrictEqual } from "node:util"
import { compile, FAIL } from "../src/internal/fastCodec.ts"
import * as Duration from "effect/Duration"
import * as options from "../src/internal/options.ts"
import { Hello, Rpcs } from "../src/Protocol.ts"

/** Equal as values, prototypes included, and with the same key order at every level. */
const same = (a: unknown, b: unknown): boolean => {
  if (!isDeepStrictEqual(a, b)) return false
  if (typeof a !== "object" || a === null) return true
  const keysA = Object.keys(a)
  const keysB = Object.keys(b as object)
  return keysA.join("\0") === keysB.join("\0") &&
    keysA.every((key) => same((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]))
}

const ODD_VALUES: ReadonlyArray<unknown> = [
  null,
  undefined,
  -1,
  1.5,
  2 ** 33,
  Number.NaN,
  "",
  "x",
  true,
  [],
  {},
  [1, "a"],
  { protocol_version: 1 },
]

/** `value` with the node at a random path replaced by an odd value, or (in an object) deleted. */
const mutate = (value: unknown, choices: ReadonlyArray<number>): unknown => {
  const [here, ...rest] = choices
  const container = typeof value === "object" && value !== null
  if (!container || rest.length === 0 || here % 4 === 0) return ODD_VALUES[here % ODD_VALUES.length]
  if (Array.isArray(value)) {
    if (value.length === 0) return ODD_VALUES[here % ODD_VALUES.length]
    const copy = [...value]
    const index = here % copy.length
    copy[index] = mutate(copy[index], rest)
    return copy
  }
  const keys = Object.keys(value)
  if (keys.length === 0) return ODD_VALUES[here % ODD_VALUES.length]
  const key = keys[here % keys.length]
  const copy: Record<string, unknown> = { ...value }
  if (here % 7 === 1) delete copy[key]
  else copy[key] = mutate(copy[key], rest)
  return copy
}

const schemas = Object.entries(Rpcs).flatMap(([name, rpc]) => [
  { label: `${name} result`, schema: rpc.result as Schema.Schema<unknown, unknown> },
  { label: `${name} params`, schema: rpc.params as Schema.Schema<unknown, unknown> },
])

describe("the compiled fast path of the protocol's schemas", () => {
  for (const { label, schema } of schemas) {
    const fastDecode = compile(schema.ast, true)
    const fastEncode = compile(schema.ast, false)
    const decode = Schema.decodeUnknownEither(schema)
    const encode = Schema.encodeEither(schema)

    it(`${label}: every value the schema makes is decoded and encoded exactly as the schema does`, () => {
      let fast = 0
      fc.assert(
        fc.property(Arbitrary.make(schema), (value) => {
          const encoded = encode(value)
          if (Either.isLeft(encoded)) return
          const fastEncoded = fastEncode(value)
          if (fastEncoded !== FAIL) expect(same(fastEncoded, encoded.right)).toBe(true)
          const decoded = decode(encoded.right)
          const fastDecoded = fastDecode(encoded.right)
          if (fastDecoded === FAIL) return
          fast++
          expect(Either.isRight(decoded) && same(fastDecoded, decoded.right)).toBe(true)
        }),
        { numRuns: 60 },
      )
      // The protocol's own schemas are all in the fast path's reach.
      expect(fast).toBeGreaterThan(0)
    })

    it(`${label}: a broken wire value is accepted only when the schema accepts it, as the same value`, () => {
      let refused = 0
      fc.assert(
        fc.property(
          Arbitrary.make(schema),
          fc.array(fc.nat({ max: 1000 }), { minLength: 1, maxLength: 8 }),
          (value, choices) => {
            const encoded = encode(value)
            if (Either.isLeft(encoded)) return
            const broken = mutate(encoded.right, choices)
            const fastDecoded = fastDecode(broken)
            const decoded = decode(broken)
            if (fastDecoded !== FAIL) expect(Either.isRight(decoded) && same(fastDecoded, decoded.right)).toBe(true)
            else if (Either.isLeft(decoded)) refused++
          },
        ),
        { numRuns: 100 },
      )
      // The breakage reaches the checks: both refuse some of it.
      expect(refused).toBeGreaterThan(0)
    })
  }

  it("rejects what the schema rejects: a wrong type, a refinement, a missing key", () => {
    const decode = compile(Hello.ast, true)
    expect(decode({ protocol_version: 1, workload_name: "w" })).toBeInstanceOf(Hello)
    expect(decode({ protocol_version: "1", workload_name: "w" })).toBe(FAIL)
    expect(decode({ protocol_version: -1, workload_name: "w" })).toBe(FAIL)
    expect(decode({ protocol_version: 1.5, workload_name: "w" })).toBe(FAIL)
    expect(decode({ workload_name: "w" })).toBe(FAIL)
    expect(decode(null)).toBe(FAIL)
    expect(decode([])).toBe(FAIL)
  })

  it("a union two members accept is left to the schema, whose order decides", () => {
    const Ambiguous = Schema.Union(
      Schema.Struct({ a: Schema.Number }),
      Schema.Struct({ a: Schema.Number, b: Schema.optional(Schema.String) }),
    )
    expect(compile(Ambiguous.ast, true)({ a: 1, b: "x" })).toBe(FAIL)
    expect(compile(Ambiguous.ast, true)({ a: "no" })).toBe(FAIL)
    const Tagged = Schema.Union(
      Schema.Struct({ kind: Schema.Literal("a") }),
      Schema.Struct({ kind: Schema.Literal("b") }),
    )
    expect(compile(Tagged.ast, true)({ kind: "b" })).toEqual({ kind: "b" })
  })

  it("a doubt inside a union member is the schema's call, not that member's rejection", () => {
    const decodes = <A, I>(schema: Schema.Schema<A, I>, input: unknown) => {
      const fast = compile(schema.ast, true)(input)
      const slow = Schema.decodeUnknownEither(schema)(input)
      return fast === FAIL || (Either.isRight(slow) && same(fast, slow.right))
    }
    // An ambiguous union inside a member, bare or behind a refinement.
    const Nested = Schema.Union(
      Schema.Struct({ a: Schema.Union(Schema.NumberFromString, Schema.String) }),
      Schema.Struct({ a: Schema.String }),
    )
    expect(decodes(Nested, { a: "1" })).toBe(true)
    const Refined = Schema.Union(Schema.NumberFromString, Schema.String).pipe(Schema.filter(() => true))
    expect(decodes(Schema.Union(Refined, Schema.String), "1")).toBe(true)
    // The same when encoding.
    const Encoded = Schema.Union(
      Schema.Struct({ a: Schema.Union(Schema.NumberFromString, Schema.Number) }),
      Schema.Struct({ a: Schema.Number }),
    )
    const fastEncoded = compile(Encoded.ast, false)({ a: 1 })
    expect(fastEncoded === FAIL || same(fastEncoded, Schema.encodeSync(Encoded)({ a: 1 }))).toBe(true)
    // A transformation that answers with an Effect, which the schema runs.
    const Length = Schema.transformOrFail(Schema.String, Schema.Number, {
      decode: (text) => Effect.succeed(text.length),
      encode: (n) => Effect.succeed(String(n)),
    })
    expect(decodes(Schema.Union(Length, Schema.String), "abc")).toBe(true)
    // A later member that throws where the schema would have stopped at the first.
    const Throwing = Schema.transform(Schema.String, Schema.String, {
      decode: (text) => {
        if (text === "x") throw new Error("boom")
        return text
      },
      encode: (text) => text,
    })
    expect(decodes(Schema.Union(Schema.Literal("x"), Throwing), "x")).toBe(true)
  })

  it("a schema holding what it does not know is FAIL on every input, also when met late (inside a Suspend)", () => {
    expect(compile(Schema.TemplateLiteral("id-", Schema.Number).ast, true)("id-1")).toBe(FAIL)
    interface Tree {
      readonly label: `n${number}`
      readonly children: ReadonlyArray<Tree>
    }
    const Tree: Schema.Schema<Tree> = Schema.Struct({
      label: Schema.TemplateLiteral("n", Schema.Number),
      children: Schema.Array(Schema.suspend(() => Tree)),
    })
    const decode = compile(Schema.Struct({ root: Schema.suspend(() => Tree) }).ast, true)
    expect(decode({ root: { label: "n1", children: [] } })).toBe(FAIL)
    expect(decode({ root: { label: "n1", children: [] } })).toBe(FAIL)
  })

  it("keys renamed on the wire end up where the schema puts them, defaults included", () => {
    const Renamed = Schema.Struct({
      first: Schema.propertySignature(Schema.Number).pipe(Schema.fromKey("first_key")),
      plain: Schema.String,
      filled: Schema.optionalWith(Schema.Number, { default: () => 7 }),
    })
    const input = { plain: "p", first_key: 1 }
    const fast = compile(Renamed.ast, true)(input)
    const slow = Schema.decodeUnknownSync(Renamed)(input)
    expect(same(fast, slow)).toBe(true)
    expect(Object.keys(fast as object)).toEqual(Object.keys(slow))
    // The input is left as it was.
    expect(input).toEqual({ plain: "p", first_key: 1 })
  })

  it("renames that swap two keys, which the schema's one-at-a-time renames refuse, are refused too", () => {
    const Swapped = Schema.Struct({
      a: Schema.propertySignature(Schema.Number).pipe(Schema.fromKey("b")),
      b: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("a")),
      c: Schema.Boolean,
    })
    const input = { c: true, a: "x", b: 1 }
    expect(Either.isLeft(Schema.decodeUnknownEither(Swapped)(input))).toBe(true)
    expect(compile(Swapped.ast, true)(input)).toBe(FAIL)
    const value = { a: 1, b: "x", c: true }
    expect(Either.isLeft(Schema.encodeEither(Swapped)(value))).toBe(true)
    expect(compile(Swapped.ast, false)(value)).toBe(FAIL)
  })

  it.prop(
    "the worker options (decoded before every spawn): the fast path decodes as the schema does, or leaves them to it",
    [
      fc.record(
        {
          workloadFactory: fc.constantFrom("pkg.mod:make", "a:b", "not a factory", "", 3),
          pythonExecutable: fc.constantFrom("/usr/bin/python3", "", null),
          workerModule: fc.constantFrom("burn_p2p_python_runtime.worker", "w", ""),
          moduleSearchRoots: fc.oneof(fc.array(fc.string(), { maxLength: 3 }), fc.constant([1])),
          env: fc.oneof(
            fc.dictionary(fc.string({ maxLength: 4 }), fc.string({ maxLength: 4 })),
            fc.constant({ A: 1 }),
            fc.constant({ A: "1", [Symbol.for("x")]: "y" }),
          ),
          connectTimeout: fc.constantFrom(1, 0, -1, 2500, "5 seconds", "bogus", Infinity, Duration.seconds(3)),
          shutdownTimeout: fc.constantFrom(0, 100, "1 minute", Number.NaN, Duration.millis(7)),
          terminateGrace: fc.constantFrom(0, 2000, "2 seconds", -5),
          callTimeout: fc.constantFrom(1, 0, 30_000, "10 seconds", Duration.infinity),
          maxFrameBytes: fc.constantFrom(1, 4096, 256 * 1024 * 1024, 1.5, -1),
          stderrTailBytes: fc.constantFrom(0, 100, 65536, 2 ** 40),
          exitWithParent: fc.constantFrom(true, false, "yes"),
          configVia: fc.constantFrom("file", "argv", "env"),
          verifyConnection: fc.constantFrom("token", "processGroup", "none"),
        },
        { requiredKeys: [] },
      ),
    ],
    ([input]) => {
      const fast = compile(options.Options.ast, true)(input)
      const slow = Schema.decodeUnknownEither(options.Options)(input)
      if (fast !== FAIL) {
        expect(Either.isRight(slow)).toBe(true)
        expect(same(fast, Either.getOrThrow(slow))).toBe(true)
      }
      // The whole decode agrees with the schema's, excess keys refused, on what is accepted, whichever path took it.
      const strict = Schema.decodeUnknownEither(options.Options, { onExcessProperty: "error" })(input)
      expect(Either.isRight(options.decode(input as never))).toBe(Either.isRight(strict))
    },
    { fastCheck: { numRuns: 2000 } },
  )

  it("the worker options' fast path takes the usual options, defaults filled in as the schema fills them", () => {
    const input = { workloadFactory: "pkg.mod:make", pythonExecutable: "/usr/bin/python3", callTimeout: "5 seconds" }
    const fast = compile(options.Options.ast, true)(input)
    expect(fast).not.toBe(FAIL)
    expect(same(fast, Schema.decodeUnknownSync(options.Options)(input))).toBe(true)
    const decoded = options.decode(input as never)
    const { configJson: _json, configVia: _via, verifyConnection: _verify, ...fields } = Either.getOrThrow(decoded)
    expect(same(fields, Schema.decodeUnknownSync(options.Options)(input))).toBe(true)
    // A key the options do not have is refused, though the fast path alone would ignore it; a symbol key too.
    expect(Either.isLeft(options.decode({ ...input, [Symbol.for("x")]: 1 } as never))).toBe(true)
    expect(Either.isLeft(options.decode({ ...input, env: { A: "1", [Symbol.for("x")]: "y" } } as never))).toBe(true)
    expect(Either.isLeft(options.decode({ ...input, pythonExectuable: "x" } as never))).toBe(true)
  })

  it("compiled with onExcessProperty error, any own key a struct neither declares nor indexes is the schema's", () => {
    const Strict = Schema.Struct({
      a: Schema.Number,
      tags: Schema.Record({ key: Schema.String, value: Schema.String }),
    })
    const fast = compile(Strict.ast, true, { onExcessProperty: "error" })
    const strict = Schema.decodeUnknownEither(Strict, { onExcessProperty: "error" })
    const valid = { a: 1, tags: { x: "y" } }
    expect(same(fast(valid), Either.getOrThrow(strict(valid)))).toBe(true)
    const hidden = Object.defineProperty({ a: 1, tags: {} }, "b", { value: 2, enumerable: false })
    for (
      const input of [
        { ...valid, b: 2 },
        { ...valid, [Symbol.for("s")]: 1 },
        { a: 1, tags: { x: "y", [Symbol.for("s")]: "z" } },
        hidden,
      ]
    ) {
      expect(fast(input)).toBe(FAIL)
      expect(Either.isLeft(strict(input))).toBe(true)
    }
    // Compiled as usual, excess keys are ignored, as the schema's default ignores them.
    expect(same(compile(Strict.ast, true)({ ...valid, b: 2 }), Schema.decodeUnknownSync(Strict)({ ...valid, b: 2 })))
      .toBe(true)
  })

  it("the comparison can fail: a decoder that skips the class is caught (negative control)", () => {
    const input = { protocol_version: 1, workload_name: "w", capabilities: [] }
    const wrong = { protocolVersion: 1, workloadName: "w", capabilities: [] }
    expect(same(wrong, Schema.decodeUnknownSync(Hello)(input))).toBe(false)
    expect(same({ b: 1, a: 2 }, { a: 2, b: 1 })).toBe(false)
  })
})
