/**
 * Peak resident memory of a process during one call, from the kernel's own
 * high-water mark rather than sampling: writing `5` to `/proc/PID/clear_refs`
 * resets `VmHWM` to the current `VmRSS`; after the call `VmHWM` is the largest
 * RSS the process reached meanwhile, however briefly. `peakAbove` reports
 * `VmHWM after - VmRSS before`: the resident bytes the call added on top of
 * idle (the request's params are built before, so they count as idle; memory
 * V8 or the allocator reuses from earlier garbage does not show up, memory it
 * has to map does).
 *
 * Idle is read after a full collection (`gc()`, from `--v8-flags=--expose-gc`),
 * so garbage of an earlier call neither counts as idle nor hides this call's
 * allocations by being reused.
 *
 * Deno asks for `--allow-all` to touch `/proc` itself, so a short `sh` does
 * (`--allow-run` suffices), before and after the timed part.
 */
import * as Effect from "effect/Effect"
import { spawnSync } from "node:child_process"

const readKiB = (pid: number, reset: boolean): { readonly rss: number; readonly hwm: number } => {
  const script = `${reset ? `echo 5 > /proc/${pid}/clear_refs && ` : ""}grep -E '^Vm(RSS|HWM):' /proc/${pid}/status`
  const out = spawnSync("sh", ["-c", script], { encoding: "utf8" })
  const field = (name: string) => Number(new RegExp(`${name}:\\s*(\\d+)`).exec(out.stdout)?.[1] ?? NaN)
  if (out.status !== 0 || Number.isNaN(field("VmRSS"))) {
    throw new Error(`cannot read the memory of pid ${pid}: ${out.error?.message ?? out.stderr}`)
  }
  return { rss: field("VmRSS"), hwm: field("VmHWM") }
}

/** Runs `self`; returns its value and the resident bytes the process added above idle at its peak. */
export const peakAbove = <A, E, R>(
  pid: number,
  self: Effect.Effect<A, E, R>,
): Effect.Effect<{ readonly value: A; readonly peakBytes: number; readonly collected: boolean }, E, R> =>
  Effect.gen(function* () {
    ;(globalThis as { gc?: () => void }).gc?.()
    const idle = readKiB(pid, true).rss
    const value = yield* self
    const peak = readKiB(pid, false).hwm
    return { value, peakBytes: Math.max(0, peak - idle) * 1024, collected: "gc" in globalThis }
  })
