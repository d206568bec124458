/**
 * The Python runtime shipped inside the module (`src/internal/runtimeFiles.ts`)
 * and its per-user cache (`src/internal/runtime.ts`): the generated copy is
 * current, concurrent first starts share one complete copy, and a cache other
 * users can write is refused.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { readRuntime, runtimeHash } from "../scripts/gen-runtime.ts"
import { cacheBase, MARKER, materializeSync } from "../src/internal/runtime.ts"
import { RUNTIME_FILES, RUNTIME_HASH } from "../src/internal/runtimeFiles.ts"
import { RuntimeCacheError } from "../src/mod.ts"

/** A fresh directory, removed after the test. */
const scratch = (): { dir: string; [Symbol.dispose]: () => void } => {
  const dir = mkdtempSync(join(tmpdir(), "burn-p2p-runtime-"))
  return { dir, [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }) }
}

/** The thrown RuntimeCacheError of `f`, or a failed expectation. */
const refusal = (f: () => unknown): RuntimeCacheError => {
  try {
    f()
  } catch (error) {
    expect(error).toBeInstanceOf(RuntimeCacheError)
    return error as RuntimeCacheError
  }
  throw new Error("expected a RuntimeCacheError")
}

/** Every file below `dir`, relative, sorted. */
const tree = (dir: string): Array<string> =>
  (readdirSync(dir, { recursive: true, withFileTypes: true }) as Array<{ name: string; parentPath: string }>)
    .filter((entry) => statSync(join(entry.parentPath, entry.name)).isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(dir.length + 1))
    .sort()

const expectCompleteCopy = (hashDir: string) => {
  expect(tree(hashDir)).toEqual([MARKER, ...Object.keys(RUNTIME_FILES)].sort())
  for (const [path, text] of Object.entries(RUNTIME_FILES)) {
    expect(readFileSync(join(hashDir, path), "utf8")).toBe(text)
  }
  expect(readFileSync(join(hashDir, MARKER), "utf8")).toBe(RUNTIME_HASH)
}

describe("the generated runtime", () => {
  it("src/internal/runtimeFiles.ts is python/burn_p2p_python_runtime as it is now (else run deno task gen:runtime)", () => {
    const onDisk = readRuntime()
    const message =
      "src/internal/runtimeFiles.ts differs from python/burn_p2p_python_runtime: run deno task gen:runtime"
    expect(Object.keys(RUNTIME_FILES).sort(), message).toEqual(onDisk.map(([path]) => path))
    for (const [path, text] of onDisk) expect(RUNTIME_FILES[path], `${message} (${path})`).toBe(text)
    expect(RUNTIME_HASH, message).toBe(runtimeHash(onDisk))
  })
})

describe("the runtime cache", () => {
  it("the base comes from BURN_P2P_RUNTIME_CACHE, else XDG_CACHE_HOME, else HOME", () => {
    const saved = { ...process.env }
    try {
      process.env.BURN_P2P_RUNTIME_CACHE = "/x/explicit"
      process.env.XDG_CACHE_HOME = "/x/xdg"
      process.env.HOME = "/x/home"
      expect(cacheBase()).toBe("/x/explicit")
      delete process.env.BURN_P2P_RUNTIME_CACHE
      expect(cacheBase()).toBe("/x/xdg/burn-p2p-python-worker")
      process.env.XDG_CACHE_HOME = ""
      expect(cacheBase()).toBe("/x/home/.cache/burn-p2p-python-worker")
      delete process.env.HOME
      delete process.env.XDG_CACHE_HOME
      expect(refusal(() => cacheBase()).reason).toBe("NoCacheDirectory")
    } finally {
      for (const name of ["BURN_P2P_RUNTIME_CACHE", "XDG_CACHE_HOME", "HOME"]) {
        if (saved[name] === undefined) delete process.env[name]
        else process.env[name] = saved[name]
      }
    }
  })

  it("writes <base>/<hash>/burn_p2p_python_runtime once, private, and finds it again by its marker", () => {
    using temp = scratch()
    const base = join(temp.dir, "a", "b")
    const hashDir = materializeSync(0, base)
    expect(hashDir).toBe(join(base, RUNTIME_HASH))
    expectCompleteCopy(hashDir)
    expect(readdirSync(base)).toEqual([RUNTIME_HASH])
    for (const dir of [join(temp.dir, "a"), base, hashDir, join(hashDir, "burn_p2p_python_runtime")]) {
      expect((statSync(dir).mode & 0o777).toString(8)).toBe("700")
    }
    const mtime = statSync(join(hashDir, MARKER)).mtimeMs
    expect(materializeSync(0, base)).toBe(hashDir)
    expect(statSync(join(hashDir, MARKER)).mtimeMs).toBe(mtime)
  })

  it.live(
    "4 processes starting at once on an empty cache all succeed and leave one complete copy",
    () =>
      Effect.gen(function* () {
        using temp = scratch()
        const base = join(temp.dir, "cache")
        const fixture = fileURLToPath(new URL("./fixtures/materialize.ts", import.meta.url))
        // Deno takes ~100 ms to start; all four begin materialising at the same instant, well after that.
        const startAt = Date.now() + 1500
        const outputs = yield* Effect.all(
          Array.from({ length: 4 }, () =>
            Effect.async<string, Error>((resume) => {
              execFile(
                process.execPath,
                ["run", "-A", fixture, String(startAt)],
                { env: { ...process.env, BURN_P2P_RUNTIME_CACHE: base }, encoding: "utf8", timeout: 30_000 },
                (error, stdout, stderr) =>
                  resume(error ? Effect.fail(new Error(`${error.message}\n${stderr}`)) : Effect.succeed(stdout.trim())),
              )
            })),
          { concurrency: "unbounded" },
        )
        expect(outputs).toEqual(Array(4).fill(join(base, RUNTIME_HASH)))
        // No temporary directories left beside the one copy.
        expect(readdirSync(base)).toEqual([RUNTIME_HASH])
        expectCompleteCopy(join(base, RUNTIME_HASH))
      }),
    60_000,
  )

  it("refuses a base or hash directory that group or others can write, naming it and the fix", () => {
    using temp = scratch()
    for (const mode of [0o777, 0o775, 0o757]) {
      const base = join(temp.dir, `base-${mode.toString(8)}`)
      mkdirSync(base)
      chmodSync(base, mode)
      const error = refusal(() => materializeSync(0, base))
      expect(error.reason).toBe("Insecure")
      expect(error.path).toBe(base)
      expect(error.message).toContain(base)
      expect(error.message).toContain(`chmod 700 ${base}`)
      expect(error.message).toContain("BURN_P2P_RUNTIME_CACHE")
      // Nothing written into it.
      expect(readdirSync(base)).toEqual([])
    }
    // A complete copy whose hash directory became group-writable: refused on the fast path too.
    const base = join(temp.dir, "ok")
    const hashDir = materializeSync(0, base)
    chmodSync(hashDir, 0o770)
    const error = refusal(() => materializeSync(0, base))
    expect(error).toMatchObject({ reason: "Insecure", path: hashDir })
    expect(error.message).toContain("mode 0770")
  })

  it.runIf(process.getuid?.() === 0)("refuses a base owned by another user", () => {
    using temp = scratch()
    const base = join(temp.dir, "theirs")
    mkdirSync(base, { mode: 0o700 })
    chownSync(base, 65534, 65534)
    const error = refusal(() => materializeSync(0, base))
    expect(error.reason).toBe("Insecure")
    expect(error.message).toContain("owned by uid 65534")
  })

  it("refuses a hash directory without its marker instead of trusting or deleting it", () => {
    using temp = scratch()
    const base = join(temp.dir, "cache")
    mkdirSync(join(base, RUNTIME_HASH, "burn_p2p_python_runtime"), { recursive: true, mode: 0o700 })
    writeFileSync(join(base, RUNTIME_HASH, "burn_p2p_python_runtime", "__init__.py"), "")
    const error = refusal(() => materializeSync(0, base))
    expect(error.reason).toBe("Io")
    expect(error.message).toContain(`rm -r ${join(base, RUNTIME_HASH)}`)
    expect(existsSync(join(base, RUNTIME_HASH, "burn_p2p_python_runtime", "__init__.py"))).toBe(true)
  })

  it("removes temporary directories left by a process that died mid-write, but not fresh ones", () => {
    using temp = scratch()
    const base = join(temp.dir, "cache")
    mkdirSync(join(base, ".tmp-old"), { recursive: true, mode: 0o700 })
    mkdirSync(join(base, ".tmp-new"), { mode: 0o700 })
    const now = statSync(join(base, ".tmp-new")).mtimeMs
    const hourAgo = new Date(now - 60 * 60_000)
    utimesSync(join(base, ".tmp-old"), hourAgo, hourAgo)
    materializeSync(now, base)
    expect(readdirSync(base).sort()).toEqual([".tmp-new", RUNTIME_HASH])
  })

  it.effect("materialize fails with a RuntimeCacheError, not a defect", () =>
    Effect.gen(function* () {
      using temp = scratch()
      const file = join(temp.dir, "file")
      writeFileSync(file, "")
      const saved = process.env.BURN_P2P_RUNTIME_CACHE
      process.env.BURN_P2P_RUNTIME_CACHE = join(file, "below-a-file")
      try {
        const { materialize } = yield* Effect.promise(() => import("../src/internal/runtime.ts"))
        const error = yield* Effect.flip(materialize)
        expect(error).toBeInstanceOf(RuntimeCacheError)
        expect(error.reason).toBe("Io")
        expect(error.message).toContain("BURN_P2P_RUNTIME_CACHE")
      } finally {
        if (saved === undefined) delete process.env.BURN_P2P_RUNTIME_CACHE
        else process.env.BURN_P2P_RUNTIME_CACHE = saved
      }
    }))

  it("the fast path (a complete copy) takes well under a millisecond", () => {
    using temp = scratch()
    const base = join(temp.dir, "cache")
    materializeSync(0, base)
    const samples: Array<number> = []
    for (let i = 0; i < 500; i++) {
      const start = performance.now()
      materializeSync(0, base)
      samples.push(performance.now() - start)
    }
    samples.sort((a, b) => a - b)
    const median = samples[samples.length >> 1]
    console.log(
      `runtime cache fast path: median ${(median * 1000).toFixed(1)} µs, p99 ${
        (samples[Math.floor(samples.length * 0.99)] * 1000).toFixed(1)
      } µs`,
    )
    expect(median).toBeLessThan(1)
  })
})
