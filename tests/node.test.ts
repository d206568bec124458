/**
 * The npm build under Node (>= 20): `deno task build:npm`, then a scratch
 * project whose node_modules holds the built package (a symlink to `npm/`)
 * and `effect` (the repository's), and in it `tests/fixtures/smoke.mjs`, every
 * method against the standard-library workload, run with `node`; and a
 * TypeScript consumer type-checked against the emitted declarations. The
 * package's own dependencies resolve from the repository's node_modules (the
 * realpath of `npm/dist` is inside the repository; Deno's layout has them
 * as top-level symlinks).
 */
import { expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import { copyFileSync, existsSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { RUNTIME_HASH } from "../src/internal/runtimeFiles.ts"
import { tempDir, testPython } from "./helpers.ts"
import { expectSmokePassed, run } from "./subprocess.ts"

const root = fileURLToPath(new URL("..", import.meta.url))
const node = existsSync("/usr/bin/node") ? "/usr/bin/node" : "node"
const nodeMajor = (() => {
  try {
    return Number(/^v(\d+)/.exec(execFileSync(node, ["--version"], { encoding: "utf8" }))?.[1] ?? 0)
  } catch {
    return 0
  }
})()

/** Builds `npm/` once per run of this file. */
const build = Effect.gen(function* () {
  const finished = yield* run(process.execPath, ["task", "build:npm"], { cwd: root, timeoutMillis: 120_000 })
  expect(finished.code, `deno task build:npm failed:\n${finished.stdout}\n${finished.stderr}`).toBe(0)
  expect(existsSync(join(root, "npm/dist/mod.js"))).toBe(true)
  expect(existsSync(join(root, "npm/dist/mod.d.ts"))).toBe(true)
})

/** A scratch project with the built package and `effect` installed (as symlinks). */
const project = Effect.gen(function* () {
  const dir = yield* tempDir
  mkdirSync(join(dir, "node_modules/@burn-p2p"), { recursive: true })
  symlinkSync(join(root, "npm"), join(dir, "node_modules/@burn-p2p/python-worker"))
  symlinkSync(join(root, "node_modules/effect"), join(dir, "node_modules/effect"))
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }))
  return dir
})

it.scopedLive.runIf(nodeMajor >= 20)(
  "the npm build runs every method under Node and leaves no process",
  () =>
    Effect.gen(function* () {
      yield* build
      const dir = yield* project
      copyFileSync(join(root, "tests/fixtures/smoke.mjs"), join(dir, "smoke.mjs"))
      const cache = join(dir, "runtime-cache")
      const finished = yield* run(node, ["smoke.mjs", "@burn-p2p/python-worker", testPython, dir], {
        cwd: dir,
        env: { ...process.env as Record<string, string>, BURN_P2P_RUNTIME_CACHE: cache },
        timeoutMillis: 60_000,
      })
      yield* expectSmokePassed(finished)
      // The same runtime cache as under Deno.
      expect(existsSync(join(cache, RUNTIME_HASH, ".complete"))).toBe(true)

      // The declarations serve a TypeScript consumer (NodeNext, strict).
      writeFileSync(
        join(dir, "consumer.ts"),
        [
          'import * as Effect from "effect/Effect"',
          'import { PythonWorker, RuntimeCacheError, type StartError } from "@burn-p2p/python-worker"',
          "const layer = PythonWorker.layer({ workloadFactory: 'burn_p2p_python_runtime.reference_workload:make' })",
          "const program: Effect.Effect<string, StartError> = Effect.provide(",
          "  Effect.flatMap(PythonWorker, (worker) => Effect.map(worker.hello(), (hello) => hello.workloadName)),",
          "  layer,",
          ")",
          "export const refused: boolean = new RuntimeCacheError({ reason: 'Insecure', path: '/x', detail: 'd' })",
          "  .message.includes('/x')",
          "export { program }",
          "",
        ].join("\n"),
      )
      const tsc = yield* run(node, [
        join(root, "node_modules/typescript/bin/tsc"),
        "--noEmit",
        "--strict",
        "--module",
        "nodenext",
        "--moduleResolution",
        "nodenext",
        "--target",
        "es2022",
        "--skipLibCheck",
        "--types",
        "node",
        "--typeRoots",
        join(root, "node_modules/@types"),
        "consumer.ts",
      ], { cwd: dir, timeoutMillis: 60_000 })
      expect(tsc.code, `${tsc.stdout}${tsc.stderr}`).toBe(0)
    }),
  240_000,
)
