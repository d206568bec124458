/**
 * The module imported by URL, as another project would: the worktree served
 * read-only over http://127.0.0.1, a scratch project with its own deno.json
 * (an import map for the npm packages, at our versions), and a program there
 * that calls every method. The worker's Python runtime must come from the
 * module itself (materialised into the cache), never from `python/`.
 */
import { expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import {
  copyFileSync,
  createReadStream,
  existsSync,
  mkdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { extname, join, normalize, sep } from "node:path"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { RUNTIME_HASH } from "../src/internal/runtimeFiles.ts"
import { tempDir, testPython } from "./helpers.ts"
import { denoPermissions, expectSmokePassed, run } from "./subprocess.ts"

const root = fileURLToPath(new URL("..", import.meta.url))
const ours = JSON.parse(readFileSync(join(root, "deno.json"), "utf8")) as { imports: Record<string, string> }

const MEDIA_TYPES: Record<string, string> = {
  ".ts": "application/typescript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json; charset=utf-8",
}

/** Serves the worktree's files (GET only, nothing outside it); the paths requested so far. */
const serveWorktree = Effect.acquireRelease(
  Effect.async<{ port: number; requested: Array<string>; close: () => void }>((resume) => {
    const requested: Array<string> = []
    const server = createServer((request, response) => {
      const path = normalize(decodeURIComponent(new URL(request.url ?? "/", "http://x").pathname))
      requested.push(path)
      const file = join(root, path)
      if (request.method !== "GET" || !file.startsWith(root) || path.split(sep).includes("..")) {
        response.writeHead(403).end()
        return
      }
      if (!existsSync(file) || !statSync(file).isFile()) {
        response.writeHead(404).end()
        return
      }
      response.writeHead(200, { "content-type": MEDIA_TYPES[extname(file)] ?? "application/octet-stream" })
      createReadStream(file).pipe(response)
    })
    server.listen(0, "127.0.0.1", () =>
      resume(Effect.succeed({
        port: (server.address() as AddressInfo).port,
        requested,
        close: () => server.close(),
      })))
  }),
  (served) => Effect.sync(served.close),
)

/** Deno's npm cache, shared (read by the child's own DENO_DIR through a symlink), so nothing is downloaded twice. */
const npmCache = (): string =>
  JSON.parse(execFileSync(process.execPath, ["info", "--json"], { encoding: "utf8" })).npmCache

it.scopedLive(
  "imported from http://127.0.0.1, every method works, with the runtime from the cache",
  () =>
    Effect.gen(function* () {
      const served = yield* serveWorktree
      const scratch = yield* tempDir
      const project = join(scratch, "project")
      mkdirSync(project)
      const imports = Object.fromEntries(
        ["effect", "@effect/platform", "@effect/platform-node"].map((name) => [name, ours.imports[name]]),
      )
      writeFileSync(join(project, "deno.json"), JSON.stringify({ imports }, null, 2))
      copyFileSync(join(root, "tests/fixtures/smoke.mjs"), join(project, "main.mjs"))
      // A throwaway DENO_DIR for the remote modules of this port; npm packages from the shared cache.
      const denoDir = join(scratch, "deno-dir")
      mkdirSync(denoDir)
      symlinkSync(npmCache(), join(denoDir, "npm"))
      const cache = join(scratch, "runtime-cache")
      const moduleUrl = `http://127.0.0.1:${served.port}/src/mod.ts`

      const finished = yield* run(process.execPath, [
        "run",
        `--allow-import=127.0.0.1:${served.port}`,
        ...denoPermissions(cache),
        "main.mjs",
        moduleUrl,
        testPython,
        scratch,
      ], {
        cwd: project,
        env: { ...process.env as Record<string, string>, DENO_DIR: denoDir, BURN_P2P_RUNTIME_CACHE: cache },
      })
      yield* expectSmokePassed(finished)
      expect(served.requested).toContain("/src/mod.ts")
      expect(served.requested.filter((path) => !path.startsWith("/src/"))).toEqual([])
      expect(existsSync(join(cache, RUNTIME_HASH, ".complete"))).toBe(true)
    }),
  180_000,
)
