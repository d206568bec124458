/**
 * `deno task example:otel` as a subprocess, with the task's own permissions:
 * it prints the call spans and the metrics through `@effect/opentelemetry`'s
 * console exporters, exits 0, and leaves no worker behind.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import process from "node:process"
import { fileURLToPath } from "node:url"
import { awaitGone, testPython } from "./helpers.ts"
import { run } from "./subprocess.ts"

const repoRoot = fileURLToPath(new URL("..", import.meta.url))

describe("example:otel", () => {
  it.live(
    "prints PythonWorker.<method> spans and burn_p2p_worker_* metrics; no worker is left",
    () =>
      Effect.gen(function* () {
        // The task grants the runtime cache at its default place: drop what would move it.
        const env: Record<string, string> = {}
        for (const [name, value] of Object.entries(process.env)) {
          if (value !== undefined && name !== "BURN_P2P_RUNTIME_CACHE" && name !== "XDG_CACHE_HOME") env[name] = value
        }
        const finished = yield* run(
          process.execPath,
          ["task", "--quiet", "example:otel", "--python", testPython],
          { cwd: repoRoot, env, timeoutMillis: 100_000 },
        )
        const output = `stdout:\n${finished.stdout}\nstderr:\n${finished.stderr}`
        expect(finished.code, output).toBe(0)
        for (const span of ["PythonWorker.hello", "PythonWorker.trainWindow", "PythonWorker.evaluate"]) {
          expect(finished.stdout, output).toContain(`name: "${span}"`)
        }
        expect(finished.stdout).toContain(`"rpc.outcome": "RemoteError"`)
        expect(finished.stdout, output).toContain(`name: "burn_p2p_worker_call_duration_ms"`)
        expect(finished.stdout).toMatch(/name: "burn_p2p_worker_call_errors"[\s\S]*error: "RemoteError"/)
        const pid = Number(/worker pid (\d+)/.exec(finished.stdout)?.[1])
        expect(Number.isInteger(pid), output).toBe(true)
        yield* awaitGone([pid])
      }),
    120_000,
  )
})
