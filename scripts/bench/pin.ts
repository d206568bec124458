/**
 * CPU pinning with `taskset`, and reading it back.
 *
 * - A running process (every thread): `taskset -a -p -c CPU PID`, run right
 *   after the worker has started; `affinity(pid)` reads back every thread's
 *   list with `taskset -a -p -c PID` (Deno wants `--allow-all` to read
 *   `/proc` itself, so the bench asks `taskset`).
 * - A worker from spawn on: `pinnedPython(cpu, python)` writes a two-line
 *   `sh` wrapper `exec taskset -c CPU PYTHON "$@"` (the pid stays the
 *   worker's: both steps `exec`). Used for the spawn figures, where the
 *   client only learns the pid once the worker has answered `hello`.
 */
import { spawnSync } from "node:child_process"
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const run = (args: Array<string>): string => {
  const out = spawnSync("taskset", args, { encoding: "utf8" })
  if (out.status !== 0) throw new Error(`taskset ${args.join(" ")}: ${out.error?.message ?? out.stderr.trim()}`)
  return out.stdout
}

/** Every thread's CPU list, distinct values joined by `|` (so "1" means all threads on cpu1). */
export const affinity = (pid: number): string => {
  const lists = new Set(
    run(["-a", "-p", "-c", String(pid)]).split("\n").map((line) => /list:\s*(\S+)/.exec(line)?.[1]).filter((list) =>
      list !== undefined
    ),
  )
  return [...lists].join("|")
}

/** Pins every thread of `pid` to `cpu` and checks it took; returns the affinity read back. */
export const pin = (pid: number, cpu: number): string => {
  run(["-a", "-p", "-c", String(cpu), String(pid)])
  const now = affinity(pid)
  if (now !== String(cpu)) throw new Error(`pid ${pid}: affinity ${now} after taskset -a -p -c ${cpu}`)
  return now
}

/** An executable that starts `python` pinned to `cpu`; `remove` deletes it. */
export const pinnedPython = (cpu: number, python: string): { readonly path: string; readonly remove: () => void } => {
  const dir = mkdtempSync(join(tmpdir(), "burn-p2p-bench-"))
  const path = join(dir, `python-on-cpu${cpu}`)
  writeFileSync(path, `#!/bin/sh\nexec taskset -c ${cpu} ${shellQuote(python)} "$@"\n`)
  chmodSync(path, 0o755)
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) }
}

export const shellQuote = (word: string): string =>
  /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`
