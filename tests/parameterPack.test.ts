import * as Command from "@effect/platform/Command"
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fc from "effect/FastCheck"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { byteswap32, toFloat32 } from "../src/internal/packBytes.ts"
import { dumps, encodeFloat, type PythonJson } from "../src/internal/pythonJson.ts"
import * as ParameterPack from "../src/ParameterPack.ts"

const PYTHON = "/usr/bin/python3"

/** Runs `effect` with a fresh temporary folder, removed afterwards, and the Node platform. */
const withDir = <A, E>(
  f: (dir: string) => Effect.Effect<A, E, FileSystem.FileSystem | import("@effect/platform/Path").Path>,
) =>
  Effect.scoped(Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    return yield* f(yield* fs.makeTempDirectoryScoped({ prefix: "packs-test-" }))
  })).pipe(Effect.provide(NodeContext.layer))

const bitsOf = (
  values: Float32Array,
): Array<number> => [...new Uint32Array(values.buffer, values.byteOffset, values.length)]

/** Float32 bit patterns, biased towards the awkward ones: NaN payloads, -0, infinities, subnormals. */
const float32Bits = fc.oneof(
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      0x8000_0000,
      0x7fc0_0000,
      0x7fc0_0001,
      0xffff_ffff,
      0x7f80_0001,
      0x7f80_0000,
      0xff80_0000,
      1,
      0x807f_ffff,
    ),
  },
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }) },
)
const valuesArb = fc.array(float32Bits, { maxLength: 300 }).map((bits) =>
  new Float32Array(Uint32Array.from(bits).buffer)
)

const layoutArb = fc.array(
  fc.record({
    name: fc.string({ maxLength: 12 }),
    shape: fc.array(fc.nat({ max: 4096 }), { maxLength: 4 }),
    dtype: fc.constantFrom("torch.float32", "torch.float16", "torch.bfloat16"),
    numel: fc.nat(),
  }),
  { maxLength: 5 },
)

const makePack = (
  values: Float32Array,
  layout = [{ name: "w", shape: [values.length], dtype: "torch.float32", numel: values.length }],
) => ParameterPack.make(values, { modelSchemaHash: "schema-1", layoutHash: ParameterPack.layoutHash(layout) })

describe("ParameterPack read and write", () => {
  it.effect.prop(
    "write then read is the identity, bit for bit (NaN payloads and -0 included)",
    [valuesArb],
    ([values]) =>
      withDir((dir) =>
        Effect.gen(function* () {
          const path = join(dir, "pack")
          const pack = makePack(values)
          yield* ParameterPack.write(path, pack)
          const back = yield* ParameterPack.read(path)
          expect(bitsOf(back.values)).toEqual(bitsOf(values))
          expect(back.manifest).toEqual(pack.manifest)
          expect(back.path).toBe(path)
          // Little-endian on disk, whatever the host.
          const onDisk = readFileSync(join(path, "values.f32le"))
          const view = new DataView(onDisk.buffer, onDisk.byteOffset, onDisk.byteLength)
          expect(Array.from({ length: values.length }, (_, i) => view.getUint32(4 * i, true))).toEqual(bitsOf(values))
          // Nothing left behind but the two files.
          expect(readdirSync(path).sort()).toEqual(["manifest.json", "values.f32le"])
        })
      ),
    { fastCheck: { numRuns: 60 } },
  )

  it.effect("writes the owner's manifest: five fields, two-space indent, in the reference's order", () =>
    withDir((dir) =>
      Effect.gen(function* () {
        const path = join(dir, "next")
        const pack = makePack(Float32Array.of(1, 2, 3))
        yield* ParameterPack.write(path, pack)
        const text = readFileSync(join(path, "manifest.json"), "utf8")
        expect(text).toBe(
          [
            "{",
            `  "format": "burn-p2p-python-flattened-parameter-pack-v1",`,
            `  "model_schema_hash": "schema-1",`,
            `  "layout_hash": "${pack.manifest.layoutHash}",`,
            `  "parameter_count": 3,`,
            `  "values_f32_le": "values.f32le"`,
            "}",
          ].join("\n"),
        )
        // Overwriting an existing pack replaces both files.
        yield* ParameterPack.write(path, makePack(Float32Array.of(4, 5)))
        expect([...(yield* ParameterPack.read(path)).values]).toEqual([4, 5])
        expect(readdirSync(path).sort()).toEqual(["manifest.json", "values.f32le"])
      })
    ))

  it.effect("reads a worker's manifest with the filter and key lists, and writes them back when known", () =>
    withDir((dir) =>
      Effect.gen(function* () {
        const fs = yield* FileSystem.FileSystem
        const path = join(dir, "worker")
        yield* fs.makeDirectory(path)
        const manifest = {
          format: ParameterPack.FORMAT,
          model_schema_hash: "h",
          layout_hash: "torch-layout-x",
          parameter_count: 2,
          values_f32_le: "values.f32le",
          state_dict_filter: { include_globs: ["encoder.*"], exclude_globs: [] },
          included_keys: ["encoder.w"],
          excluded_float_keys: ["decoder.w"],
          ignored_non_float_keys: ["steps"],
          extra_field: "ignored",
        }
        yield* fs.writeFileString(join(path, "manifest.json"), JSON.stringify(manifest, null, 2))
        yield* fs.writeFile(join(path, "values.f32le"), new Uint8Array(Float32Array.of(0.5, -2).buffer))
        const pack = yield* ParameterPack.read(path, { layoutHash: "torch-layout-x" })
        expect([...pack.values]).toEqual([0.5, -2])
        expect(pack.manifest.stateDictFilter?.includeGlobs).toEqual(["encoder.*"])
        expect(pack.manifest.ignoredNonFloatKeys).toEqual(["steps"])
        yield* ParameterPack.write(join(dir, "copy"), pack)
        const { extra_field: _, ...expected } = manifest
        expect(JSON.parse(readFileSync(join(dir, "copy", "manifest.json"), "utf8"))).toEqual(expected)
        // A filter with its lists left out reads them as [].
        yield* fs.writeFileString(
          join(path, "manifest.json"),
          JSON.stringify({ ...manifest, state_dict_filter: {} }),
        )
        const lenient = yield* ParameterPack.read(path)
        expect(lenient.manifest.stateDictFilter?.excludeGlobs).toEqual([])
      })
    ))

  it.prop("an unaligned or shared buffer is copied once; an aligned lone one is viewed", [valuesArb], ([values]) => {
    const bytes = new Uint8Array(values.buffer.slice(0))
    const viewed = toFloat32(bytes)
    expect(viewed.buffer).toBe(bytes.buffer)
    const shifted = new Uint8Array(bytes.byteLength + 1)
    shifted.set(bytes, 1)
    const copied = toFloat32(shifted.subarray(1))
    expect(copied.buffer).not.toBe(shifted.buffer)
    expect(bitsOf(copied)).toEqual(bitsOf(values))
    const swapped = new Uint8Array(bytes)
    byteswap32(swapped)
    const dataView = new DataView(swapped.buffer)
    expect(Array.from({ length: values.length }, (_, i) => dataView.getUint32(4 * i, false))).toEqual(bitsOf(values))
  })
})

describe("ParameterPack validation errors", () => {
  const writeRaw = (path: string, manifest: unknown, values: Uint8Array) =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory(path, { recursive: true })
      yield* fs.writeFileString(
        join(path, "manifest.json"),
        typeof manifest === "string" ? manifest : JSON.stringify(manifest),
      )
      yield* fs.writeFile(join(path, "values.f32le"), values)
    })
  const goodManifest = {
    format: ParameterPack.FORMAT,
    model_schema_hash: "h",
    layout_hash: "torch-layout-abc",
    parameter_count: 3,
    values_f32_le: "values.f32le",
  }
  const twelveBytes = new Uint8Array(12)

  it.effect("each reason, with the path and what differs in the message", () =>
    withDir((dir) =>
      Effect.gen(function* () {
        const fs = yield* FileSystem.FileSystem
        const failure = (path: string, options?: ParameterPack.ValidateOptions) =>
          Effect.flip(ParameterPack.read(path, options))

        const missing = yield* failure(join(dir, "nowhere"))
        expect(missing.reason).toBe("NotFound")
        expect(missing.message).toContain(join(dir, "nowhere"))

        const noValues = join(dir, "no-values")
        yield* writeRaw(noValues, goodManifest, twelveBytes)
        yield* fs.remove(join(noValues, "values.f32le"))
        expect((yield* failure(noValues)).reason).toBe("NotFound")

        const unreadable = join(dir, "unreadable")
        yield* fs.makeDirectory(join(unreadable, "manifest.json"), { recursive: true })
        expect((yield* failure(unreadable)).reason).toBe("ReadFailed")

        const notJson = join(dir, "not-json")
        yield* writeRaw(notJson, "{ nope", twelveBytes)
        const invalid = yield* failure(notJson)
        expect(invalid.reason).toBe("InvalidManifest")
        expect(invalid.message).toContain(notJson)

        const noCount = join(dir, "no-count")
        const { parameter_count: _, ...withoutCount } = goodManifest
        yield* writeRaw(noCount, withoutCount, twelveBytes)
        const missingField = yield* failure(noCount)
        expect(missingField.reason).toBe("InvalidManifest")
        expect(missingField.message).toContain("parameter_count")

        const escape = join(dir, "escape")
        yield* writeRaw(escape, { ...goodManifest, values_f32_le: "../escape/values.f32le" }, twelveBytes)
        expect((yield* failure(escape)).message).toContain("not a file name inside the pack folder")

        const format = join(dir, "format")
        const longFormat = "burn-p2p-" + "x".repeat(10_000)
        yield* writeRaw(format, { ...goodManifest, format: longFormat }, twelveBytes)
        const badFormat = yield* failure(format)
        expect(badFormat.reason).toBe("Format")
        expect(badFormat.message).toContain(format)
        expect(badFormat.message).toContain(ParameterPack.FORMAT)
        expect(badFormat.message).toContain("(10009 chars)")
        expect(badFormat.message.length).toBeLessThan(400)

        const short = join(dir, "short")
        yield* writeRaw(short, goodManifest, new Uint8Array(11))
        const badLength = yield* failure(short)
        expect(badLength.reason).toBe("ByteLength")
        expect(badLength.message).toContain("11 bytes")
        expect(badLength.message).toContain("4 * 3 = 12")

        const good = join(dir, "good")
        yield* writeRaw(good, goodManifest, twelveBytes)
        expect((yield* ParameterPack.read(good, { layoutHash: "torch-layout-abc" })).values.length).toBe(3)
        const badHash = yield* failure(good, { layoutHash: "torch-layout-def" })
        expect(badHash.reason).toBe("LayoutHash")
        expect(badHash.message).toContain(`"torch-layout-abc"`)
        expect(badHash.message).toContain(`"torch-layout-def"`)
        const layout = [{ name: "w", shape: [3], dtype: "torch.float32", numel: 3 }]
        const byLayout = yield* failure(good, { layout })
        expect(byLayout.reason).toBe("LayoutHash")
        expect(byLayout.expected).toBe(ParameterPack.layoutHash(layout))

        // Writing: a parameter count that disagrees with the values, and a folder that cannot be made.
        const lying = { ...makePack(Float32Array.of(1, 2)), values: Float32Array.of(1, 2, 3) }
        const wrongCount = yield* Effect.flip(ParameterPack.write(join(dir, "lying"), lying))
        expect(wrongCount.reason).toBe("ByteLength")
        expect(yield* fs.exists(join(dir, "lying", "manifest.json"))).toBe(false)
        yield* fs.writeFileString(join(dir, "a-file"), "")
        const unwritable = yield* Effect.flip(
          ParameterPack.write(join(dir, "a-file", "pack"), makePack(Float32Array.of(1))),
        )
        expect(unwritable.reason).toBe("WriteFailed")
        expect(unwritable.message).toContain(join(dir, "a-file", "pack"))
      })
    ))

  it.effect("validate checks the format before anything else, and a manifest without a byte count", () =>
    Effect.gen(function* () {
      const manifest = makePack(Float32Array.of(1)).manifest
      yield* ParameterPack.validate("p", manifest, undefined)
      yield* ParameterPack.validate("p", manifest, 4, { layoutHash: manifest.layoutHash })
      const error = yield* Effect.flip(
        ParameterPack.validate("p", new ParameterPack.ParameterPackManifest({ ...manifest, format: "v0" }), 3),
      )
      expect(error.reason).toBe("Format")
      expect(error.message).toBe(
        `parameter pack p: manifest format is "v0", expected "burn-p2p-python-flattened-parameter-pack-v1"`,
      )
    }))
})

// ---------------------------------------------------------------------------
// Layout hash against Python itself
// ---------------------------------------------------------------------------

const PYTHON_DUMPS = `
import hashlib, json, sys
request = json.load(sys.stdin)
out = []
for value in request["values"]:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    out.append([text, "torch-layout-" + hashlib.sha256(text.encode("utf-8")).hexdigest()])
floats = [json.dumps(float(x)) for x in request["floats"]]
json.dump({"dumps": out, "floats": floats}, sys.stdout)
`

/** Python's `[dumps(v), layout hash]` for each value, from one process. */
const pythonDumps = (values: ReadonlyArray<unknown>, floats: ReadonlyArray<number> = []) =>
  Command.make(PYTHON, "-c", PYTHON_DUMPS).pipe(
    Command.feed(JSON.stringify({ values, floats })),
    Command.string,
    Effect.map((text) => JSON.parse(text) as { dumps: Array<[string, string]>; floats: Array<string> }),
    Effect.provide(NodeContext.layer),
  )

/** Characters that trip encoders: escapes, DEL, Latin-1, BMP above the surrogates, astral, lone surrogates. */
const trickyChar = fc.constantFrom(
  '"',
  "\\",
  "\n",
  "\t",
  "\u0000",
  "\u001f",
  "\u007f",
  "é",
  "ß",
  "\u2028",
  "\ud7ff",
  "\ue000",
  "\uffff",
  "\uff01",
  "😀",
  "𝔘",
  "\ud800",
  "\udfff",
  "/",
  "<",
)
const nameArb = fc.string({
  unit: fc.oneof(trickyChar, fc.string({ unit: "binary", minLength: 1, maxLength: 1 }), fc.constantFrom("a", "b", ".")),
  maxLength: 10,
})

/** Any JSON value, with tricky keys and Python-int-sized integers; no NaN/Infinity (JSON cannot carry them to Python). */
const jsonArb: fc.Arbitrary<PythonJson> = fc.letrec<{ value: PythonJson }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.constant(null),
    fc.boolean(),
    fc.maxSafeInteger(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.constantFrom(
      1e-4,
      1e-5,
      1.5e-7,
      0.1,
      123.456,
      1e15 + 0.5,
      5e-324,
      1.7976931348623157e308,
      -2.5e-10,
      1e16,
      2 ** 53,
      1e22,
      -0.5,
    ),
    nameArb,
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(nameArb, tie("value"), { maxKeys: 5 }),
  ),
})).value

describe("layout hash", () => {
  it("matches a hash Python computed", () => {
    expect(ParameterPack.layoutHash([{ name: "w", shape: [4], dtype: "torch.float32", numel: 4 }])).toBe(
      "torch-layout-337d933bbb7aacb2b464f976704872b1c4fdcdb383c48f93e84b4f6893f3acdf",
    )
  })

  it.live("agrees with Python's json.dumps + sha256 on generated layouts, non-ASCII names included", () =>
    Effect.gen(function* () {
      const layouts = fc.sample(
        fc.array(
          fc.record({
            name: nameArb,
            shape: fc.array(fc.nat({ max: 1 << 20 }), { maxLength: 4 }),
            dtype: fc.constantFrom("torch.float32", "torch.float16", "torch.bfloat16", "torch.float64"),
            numel: fc.maxSafeNat(),
          }),
          { maxLength: 6 },
        ),
        { numRuns: 400, seed: 20261201 },
      )
      layouts.push([{ name: "encoder.層.weight", shape: [2, 3], dtype: "torch.float32", numel: 6 }])
      const python = (yield* pythonDumps(layouts)).dumps
      expect(python.length).toBe(layouts.length)
      layouts.forEach((layout, i) => {
        expect(dumps(layout)).toBe(python[i][0])
        expect(ParameterPack.layoutHash(layout)).toBe(python[i][1])
      })
    }))

  it.live("dumps agrees with Python on any JSON value: key order by code point, floats, escapes", () =>
    Effect.gen(function* () {
      const values = fc.sample(jsonArb, { numRuns: 600, seed: 42 })
      // Keys that UTF-16 order and code point order sort differently.
      values.push({ "\uff01": 1, "😀": 2, "\ue000": 3, "a": 4, "\ud800": 5 })
      // Floats as Python floats (integral ones included: 1e16 is "1e+16" as a float).
      const floats = [
        // (-0 cannot cross JSON: it arrives as 0.)
        ...fc.sample(fc.double({ noNaN: true, noDefaultInfinity: true }), { numRuns: 300, seed: 7 })
          .filter((x) => !Object.is(x, -0)),
        1e16,
        9999999999999998,
        1e15,
        123456789012345680000,
        2 ** 60,
        1e-4,
        9.999999999999999e-5,
        0,
        1,
      ]
      const python = yield* pythonDumps(values, floats)
      values.forEach((value, i) => expect(dumps(value)).toBe(python.dumps[i][0]))
      floats.forEach((x, i) => expect(encodeFloat(x)).toBe(python.floats[i]))
    }))

  it.prop("is a pure function of the layout's content", [layoutArb], ([layout]) => {
    const copy = layout.map((entry) => new ParameterPack.TensorLayout({ ...entry }))
    expect(ParameterPack.layoutHash(copy)).toBe(ParameterPack.layoutHash(layout))
    expect(ParameterPack.layoutHash(layout)).toMatch(/^torch-layout-[0-9a-f]{64}$/)
  })
})
