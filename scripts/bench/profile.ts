/**
 * `deno task bench --profile DIR`: a `deno run --cpu-prof` profile of N
 * `hello()` calls (`profile-hello.ts`), then its top functions by self time
 * (`profile-top.ts`), and how to read the profile again.
 */
import * as Effect from "effect/Effect"
import { readFileSync } from "node:fs"
import { resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { byOrigin, resolveProfile, summarise } from "./profile-top.ts"

const SCRIPT = fileURLToPath(new URL("./profile-hello.ts", import.meta.url))
const TOP = fileURLToPath(new URL("./profile-top.ts", import.meta.url))

export const profileHellos = (options: {
  readonly python: string
  readonly calls: number
  readonly warmup: number
  readonly dir: string
  readonly permissions: ReadonlyArray<string>
}): Effect.Effect<void, Error> =>
  Effect.tryPromise({
    try: async () => {
      // Deno creates the folder and writes the profile itself: no --allow-write for it.
      const dir = resolve(options.dir)
      const args = [
        "run",
        "--cpu-prof",
        `--cpu-prof-dir=${dir}`,
        ...options.permissions,
        SCRIPT,
        "--python",
        options.python,
        "--calls",
        String(options.calls),
        "--warmup",
        String(options.warmup),
      ]
      console.log(`profiling: taskset -c 0 deno ${args.join(" ")}`)
      const status = await new Deno.Command(Deno.execPath(), { args, stdout: "inherit", stderr: "inherit" }).spawn()
        .status
      if (!status.success) throw new Error(`the profiled run exited with ${status.code}`)
      const path = resolveProfile(dir)
      const profile = JSON.parse(readFileSync(path, "utf8"))
      console.log(`\nprofile: ${path}\n${summarise(profile, 25)}`)
      // The profile spans the warm-up too: per call over every call made.
      console.log(
        `\nby origin, over all ${options.warmup + options.calls} calls:\n${
          byOrigin(profile, options.warmup + options.calls)
        }`,
      )
      console.log(
        `\nread it again: deno run --allow-read ${TOP} ${path} --top 40\n` +
          `or open it in Chrome DevTools (Performance > Load profile) or https://www.speedscope.app`,
      )
    },
    catch: (error) => error instanceof Error ? error : new Error(String(error)),
  })
