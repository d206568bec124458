/**
 * Shared by the packaging tests: a child process run to completion without
 * blocking the event loop (a test may be serving it over HTTP meanwhile), and
 * what the smoke program must have printed.
 */
import { expect } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import { tmpdir } from "node:os"
import { awaitGone } from "./helpers.ts"

export interface Finished {
  readonly code: number | null
  readonly signal: string | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs `command` to its exit; killed (SIGKILL) after `timeoutMillis` or when interrupted. */
export const run = (
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd?: string; readonly env?: Record<string, string>; readonly timeoutMillis?: number } = {},
): Effect.Effect<Finished> =>
  Effect.async<Finished>((resume) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMillis ?? 120_000)
    child.on("error", (error) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code: null, signal: null, stdout, stderr: `${stderr}\n${error.message}` }))
    })
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code, signal, stdout, stderr }))
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      child.kill("SIGKILL")
    })
  })

/** The last line of `stdout` as JSON, or a defect quoting the output. */
export const lastJsonLine = (finished: Finished): Record<string, unknown> => {
  const line = finished.stdout.trimEnd().split("\n").at(-1) ?? ""
  try {
    return JSON.parse(line)
  } catch {
    throw new Error(
      `expected a JSON line; exit ${
        finished.code ?? finished.signal
      }\nstdout:\n${finished.stdout}\nstderr:\n${finished.stderr}`,
    )
  }
}

/**
 * `tests/fixtures/smoke.mjs` finished: it exited 0, every method answered as
 * the standard-library workload does, and its worker is gone. Its JSON line.
 */
export const expectSmokePassed = (finished: Finished): Effect.Effect<Record<string, unknown>, Error> =>
  Effect.gen(function* () {
    const result = lastJsonLine(finished)
    expect(finished.code, finished.stderr).toBe(0)
    expect(result).toMatchObject({
      hello: { protocolVersion: 1, workloadName: "reference-softmax" },
      probe: { runtimeDevice: "cpu" },
      train: { examples: 32 },
      evaluate: { split: "Validation", examples: 512 },
      patch: "Applied",
      loadedMatches: true,
      ema: true,
      reconciled: true,
      viaCall: { protocolVersion: 1 },
    })
    yield* awaitGone([result.pid as number])
    return result
  })

/**
 * The Deno permissions the library needs with its runtime cache at `cache`
 * (README, "Permissions"); config files go to this process's `os.tmpdir()`.
 */
export const denoPermissions = (cache: string): Array<string> => [
  "--allow-run",
  "--allow-net=127.0.0.1",
  "--allow-env",
  "--allow-sys=uid",
  `--allow-read=${cache}`,
  `--allow-write=${cache},${tmpdir()}`,
]
