/**
 * Figures from another program that prints one JSON object on its last line
 * of stdout (a Python script timing pack I/O, `aggregate.ts`, the Rust
 * client), for rows of a `Table.Section`:
 *
 *     const packs = yield* External.json("/usr/bin/python3", ["scripts/bench/packs.py", "--runs", "5"])
 *     if (typeof packs === "string") Table.skip(section, "pack write", packs)
 *     else Table.compare(section, { figure: "pack write", ours: packs.ours_ms, baseline: packs.reference_ms, unit: ms,
 *       target: Table.atMost(1) })
 */
import * as Effect from "effect/Effect"

const lastLine = (text: string) => text.trim().split("\n").slice(-1)[0] ?? ""

/** Runs `command args`; its last stdout line parsed as JSON, or why there is none (a string). */
export const json = <A = Record<string, unknown>>(
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd?: string; readonly env?: Record<string, string> } = {},
): Effect.Effect<A | string> =>
  Effect.promise(async () => {
    try {
      const out = await new Deno.Command(command, {
        args: [...args],
        cwd: options.cwd,
        env: options.env,
        stdout: "piped",
        stderr: "piped",
      }).output()
      const stdout = new TextDecoder().decode(out.stdout)
      if (!out.success) return `${command} exited with ${out.code}: ${lastLine(new TextDecoder().decode(out.stderr))}`
      const value: unknown = JSON.parse(lastLine(stdout))
      return typeof value === "object" && value !== null ? value as A : `${command} printed ${lastLine(stdout)}`
    } catch (error) {
      return `${command}: ${(error as Error).message}`
    }
  })
