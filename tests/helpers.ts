/**
 * Shared by the tests: which Python runs the workers, where the fixtures live,
 * and whether a process is still alive.
 */
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import { existsSync, readFileSync } from "node:fs"
import process from "node:process"
import { fileURLToPath } from "node:url"

/** Debian's interpreter has torch and starts ~80 ms faster than the pyenv shim; override with TEST_PYTHON. */
export const testPython: string = process.env.TEST_PYTHON ??
  (existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3")

export const fixturesRoot: string = fileURLToPath(new URL("./fixtures/python", import.meta.url))

/** Alive means signalable and not a zombie waiting for its reaper. */
export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
  } catch {
    return false
  }
}

/**
 * Waits until none of the pids is alive: a SIGKILLed grandchild is reaped by
 * init a moment after its group is killed, so this polls briefly rather than
 * asserting at one instant. Fails with the survivors after ~2 s.
 */
export const awaitGone = (pids: ReadonlyArray<number>): Effect.Effect<void, Error> =>
  Effect.suspend(() => {
    const alive = pids.filter(isAlive)
    return alive.length === 0 ? Effect.void : Effect.fail(new Error(`still alive: ${alive.join(", ")}`))
  }).pipe(Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 100 }))
