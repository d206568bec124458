import { expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { readmePath, withMethodTable } from "../scripts/docs.ts"
import { RUNTIME_HASH } from "../src/internal/runtimeFiles.ts"
import { tempDir } from "./helpers.ts"
import { run } from "./subprocess.ts"

const readme = readFileSync(readmePath, "utf8")

it("the README's method table is the one generated from Rpcs (run `deno task docs`)", () => {
  expect(readme).toBe(withMethodTable(readme))
})

const example = /## Usage\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1]
/** The command the README gives to run the example, continuation lines joined. */
const command = /Run it with exactly these permissions[^\n]*\n\n```sh\n([\s\S]*?)```/.exec(readme)?.[1]
  .replace(/\\\n\s*/g, "")
  .trim()
/** Its permission flags, as written (quotes included). */
const flags = command?.match(/--allow-[a-z]+(?:=(?:"[^"]*"|\S+))?/g) ?? []

/** Deno's cache directory, so that the example's own HOME does not make Deno download everything again. */
const denoDir: string = JSON.parse(execFileSync(process.execPath, ["info", "--json"], { encoding: "utf8" })).denoDir

/**
 * Runs the README's command (through `sh`, as a reader would) on the example
 * written beside the README, with a fresh HOME and TMPDIR, apart from each
 * other, so that each flag grants only what it names.
 */
const runExample = (shellCommand: string) =>
  Effect.gen(function* () {
    const scratch = yield* tempDir
    const home = join(scratch, "home")
    const tmp = join(scratch, "tmp")
    mkdirSync(home)
    mkdirSync(tmp)
    // Beside the README, so its `./src/mod.ts` import resolves as a reader's copy would.
    const path = fileURLToPath(
      new URL(`../.readme-example-${process.pid}-${Math.random().toString(36).slice(2)}.ts`, import.meta.url),
    )
    writeFileSync(path, example!)
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(path, { force: true })))
    const { BURN_P2P_RUNTIME_CACHE: _cache, XDG_CACHE_HOME: _xdg, ...env } = process.env as Record<string, string>
    const finished = yield* run("sh", ["-c", shellCommand.replace(/ main\.ts$/, ` ${JSON.stringify(path)}`)], {
      env: { ...env, HOME: home, TMPDIR: tmp, DENO_DIR: denoDir, DENO_NO_PROMPT: "1" },
      timeoutMillis: 60_000,
    })
    return { ...finished, home, tmp }
  })

it("the README states a run command with its permissions", () => {
  expect(example).toBeDefined()
  expect(command).toMatch(/^deno run (--allow-\S+ )+main\.ts$/)
  expect(flags.map((flag) => flag.split("=")[0])).toEqual([
    "--allow-run",
    "--allow-net",
    "--allow-env",
    "--allow-sys",
    "--allow-read",
    "--allow-write",
  ])
})

it.scopedLive(
  "the README's usage example runs as written, under exactly the permissions it states",
  () =>
    Effect.gen(function* () {
      const finished = yield* runExample(command!)
      expect(finished.code, finished.stderr).toBe(0)
      expect(finished.stdout).toMatch(/^reference-softmax 1 \{/)
      expect(finished.stdout).toContain("loss")
      // The runtime went to the cache the README names, and the config file did not stay in TMPDIR.
      expect(readFileSync(join(finished.home, ".cache/burn-p2p-python-worker", RUNTIME_HASH, ".complete"), "utf8"))
        .toBe(RUNTIME_HASH)
    }),
  90_000,
)

it.scopedLive("without any one of those permissions the example fails", () =>
  Effect.gen(function* () {
    const results = yield* Effect.all(
      flags.map((flag) =>
        Effect.map(runExample(command!.replace(` ${flag}`, "")), (finished) => ({ flag, ...finished }))
      ),
      { concurrency: 2 },
    )
    for (const { flag, code, stdout, stderr } of results) {
      expect(code, `without ${flag}: ${stdout}\n${stderr}`).not.toBe(0)
      // runMain logs a typed failure to stdout; it names the flag to add, and nothing is uncaught.
      const output = `${stdout}${stderr}`
      expect(output, `without ${flag}`).toContain(flag.split("=")[0])
      expect(output, `without ${flag}`).not.toMatch(/Uncaught|\(FiberFailure\)|defect/i)
    }
  }), 120_000)
