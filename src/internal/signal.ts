/**
 * Signalling a worker that leads its own process group.
 *
 * @internal
 */
import process from "node:process"

/**
 * Sends `signal` to the process group `pid` leads, else to `pid` alone: a
 * process that leads none, or not yet (`setsid(1)` makes the group a moment
 * after the start). Whether either was there. Never call it for a pid already
 * reaped: that pid may be another process's.
 *
 * @internal
 */
export const signalLeader = (pid: number, signal: NodeJS.Signals): boolean => {
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, signal)
      return true
    } catch {
      // ESRCH: no such group, or no such process.
    }
  }
  return false
}
