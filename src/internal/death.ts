/**
 * A worker process's death: finding out how it died, and what that means for
 * the calls it leaves behind.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type { WorkerDeath } from "../PythonWorker.ts"
import { type CallError, ProtocolError, WorkerClosedError, WorkerExitedError } from "../WorkerError.ts"
import type { CloseReason, Connection } from "./connection.ts"
import { describeFault } from "./frame.ts"
import { describeExit } from "./exitStatus.ts"
import { bounded } from "./json.ts"
import type { WorkerProcess } from "./process.ts"

/** How long an error waits, after the stream ends, for the exit status that explains it. */
const EXIT_SETTLE = Duration.seconds(1)

/** @internal */
export const exitFields = (death: WorkerDeath): {
  readonly pid: number
  readonly exitCode: number | null
  readonly signal: string | null
  readonly stderrTail: string
} => ({ pid: death.pid, exitCode: death.exitCode, signal: death.signal, stderrTail: death.stderrTail })

/**
 * "was killed by SIGKILL", "exited with code 3 after: <the error that stopped it>".
 *
 * @internal
 */
export const describeDeath = (death: WorkerDeath): string =>
  death.cause !== undefined && typeof death.cause === "object" && death.cause !== null && "message" in death.cause
    ? `${describeExit(death.exitCode, death.signal)} after: ${bounded(String(death.cause.message), 300)}`
    : describeExit(death.exitCode, death.signal)

/**
 * What a call that was on the wire gets when its worker died under it.
 *
 * @internal
 */
export const lostOnWire = (method: string, death: WorkerDeath, reason: CloseReason): CallError =>
  reason._tag === "Ended" && reason.truncated !== undefined
    ? new ProtocolError({
      method,
      id: null,
      pid: death.pid,
      reason: reason.truncated._tag,
      detail: describeFault(reason.truncated) +
        (death.exitCode !== null || death.signal !== null
          ? `; the worker then ${describeExit(death.exitCode, death.signal)}`
          : ""),
      stderrTail: death.stderrTail,
    })
    : reason._tag === "Closed"
    ? new WorkerClosedError({ method })
    : new WorkerExitedError({
      method,
      reason: death.exited ? "ProcessExited" : "ConnectionClosed",
      ...exitFields(death),
    })

/**
 * What later calls get from a worker that is not restarted: as the death itself said.
 *
 * @internal
 */
export const afterDeath = (death: WorkerDeath, reason: CloseReason | undefined) => (method: string): CallError =>
  reason?._tag === "Faulted" || reason?._tag === "TimedOut"
    ? new WorkerClosedError({ method, cause: reason.error })
    : reason?._tag === "Ended" && reason.truncated !== undefined
    ? new WorkerClosedError({ method, cause: lostOnWire(method, death, reason) as ProtocolError })
    : new WorkerExitedError({
      method,
      reason: death.exited ? "ProcessExited" : "ConnectionClosed",
      ...exitFields(death),
    })

/**
 * Waits for one worker process to die: its stream closing or its exit,
 * whichever comes first. A timeout or a protocol fault leaves the worker's
 * state unknown, so it is then killed on purpose. The death carries the exit
 * status (briefly awaited) and the stderr tail. Interrupted (the service is
 * closing), it still gives what is known so far, so that no caller waits.
 *
 * @internal
 */
export const awaitDeath = (
  generation: number,
  process: WorkerProcess,
  connection: Connection,
  died: (death: WorkerDeath) => Effect.Effect<void>,
): Effect.Effect<void> => {
  const deathWith = (status: Option.Option<{ exitCode: number | null; signal: string | null }>, stderrTail: string) => {
    const reason = connection.reason()
    return {
      generation,
      pid: process.pid,
      exited: Option.isSome(status),
      exitCode: Option.isSome(status) ? status.value.exitCode : null,
      signal: Option.isSome(status) ? status.value.signal : null,
      stderrTail,
      cause: reason?._tag === "TimedOut" || reason?._tag === "Faulted" ? reason.error : undefined,
    } satisfies WorkerDeath
  }
  return Effect.gen(function* () {
    const why = yield* Effect.raceFirst(
      Effect.map(connection.closed, Either.left),
      Effect.map(process.exited, Either.right),
    )
    if (Either.isLeft(why) && (why.left._tag === "TimedOut" || why.left._tag === "Faulted")) process.kill()
    if (Either.isRight(why)) {
      // Exited first: what it wrote may still be on its way; the stream's own end says more.
      yield* connection.closed.pipe(Effect.timeoutOption(EXIT_SETTLE))
      connection.end()
    }
    const status = yield* process.exited.pipe(Effect.timeoutOption(EXIT_SETTLE))
    yield* died(deathWith(status, yield* process.stderrTail))
  }).pipe(Effect.onInterrupt(() => Effect.flatMap(process.exitStatus, (status) => died(deathWith(status, "")))))
}
