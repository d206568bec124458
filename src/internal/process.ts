/**
 * Process mechanics: spawn the worker with `Command`, drain its output all the
 * time in bounded memory, know how it exited, and stop it for sure. No policy:
 * the manager decides when to stop it.
 *
 * `Command`'s own release sends SIGTERM and waits without a bound, so the stop
 * sequence here runs first: SIGTERM (and SIGCONT, so a stopped process can act
 * on it), a grace, SIGKILL, a bounded wait for the reap, then a SIGKILL sweep
 * of the process group for children the worker left behind.
 *
 * @internal
 */
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import type { PlatformError } from "@effect/platform/Error"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import process from "node:process"
import type { Readable } from "node:stream"
import { WorkerSpawnError } from "../WorkerError.ts"
import { outputPipe } from "./executor.ts"
import type { ExitStatus } from "./exitStatus.ts"
import { type LineEnd, LineSplitter, LineTail, MAX_LINE_BYTES } from "./output.ts"
import { permissionFlag } from "./permission.ts"
import { signalLeader } from "./signal.ts"

/**
 * A running worker process, as the manager sees it. A fake worker in the
 * tests implements the same interface.
 *
 * @internal
 */
export interface WorkerProcess {
  readonly pid: number
  /** Waits for the exit (the process is reaped by then). */
  readonly exited: Effect.Effect<ExitStatus>
  readonly exitStatus: Effect.Effect<Option.Option<ExitStatus>>
  /** The last lines of stderr, once stderr has drained (briefly bounded: a lingering child may hold it). */
  readonly stderrTail: Effect.Effect<string>
  /** SIGKILLs the whole process group now; a group that is gone is not an error. */
  readonly kill: () => void
  /** The stop sequence; safe to run more than once. */
  readonly terminate: Effect.Effect<void>
}

/** @internal */
export interface SpawnOptions {
  readonly executable: string
  readonly args: ReadonlyArray<string>
  readonly env: Record<string, string>
  readonly terminateGrace: Duration.Duration
  readonly stderrTailBytes: number
}

/** How long a reap may take after SIGKILL before we stop waiting (a process in uninterruptible sleep). */
const KILL_WAIT = Duration.seconds(5)
/** How long an error waits for stderr to reach EOF before it quotes what it has. */
const STDERR_SETTLE = Duration.millis(300)

/**
 * Node reports death by signal as a failure whose description names the
 * signal; recover the name so errors can say "killed by SIGKILL".
 */
const exitStatusOf = (exit: Effect.Effect<CommandExecutor.ExitCode, PlatformError>) =>
  exit.pipe(
    Effect.map((code): ExitStatus => ({ exitCode: code, signal: null })),
    Effect.catchAll((error) =>
      Effect.succeed<ExitStatus>({
        exitCode: null,
        signal: /\b(SIG[A-Z0-9]+)\b/.exec(error.message)?.[1] ?? "unknown signal",
      })
    ),
  )

/** The error never quotes the arguments: with `configVia: "argv"` they hold the workload config. */
const spawnError = (executable: string, args: ReadonlyArray<string>) => (error: PlatformError) => {
  const flag = permissionFlag(error)
  const reason = flag !== undefined
    ? "PermissionDenied"
    : error._tag === "SystemError" && (error.reason === "NotFound" || error.reason === "PermissionDenied")
    ? error.reason
    : "Unknown"
  let detail = flag !== undefined ? `Deno needs ${flag}` : error.message
  // The platform quotes the whole command line: gone at once, then any long argument (and the
  // config, unless a few characters) wherever else it appears.
  detail = detail.split([executable, ...args].join(" ")).join(`${executable} <arguments>`)
  args.forEach((arg, i) => {
    if (arg.length > 32 || (args[i - 1] === "--config-json" && arg.length >= 8)) {
      detail = detail.split(arg).join("<argument>")
    }
  })
  return new WorkerSpawnError({ executable, reason, detail: detail.slice(0, 500) })
}

/**
 * Drains one output stream into the logger at debug level (when debug logs
 * are on) and into `tail` when given. Never fails: a broken pipe just ends it.
 */
const drain = (proc: CommandExecutor.Process, name: "stdout" | "stderr", tail: LineTail | undefined) =>
  Effect.gen(function* () {
    const logging = LogLevel.greaterThanEqual(LogLevel.Debug, yield* FiberRef.get(FiberRef.currentMinimumLogLevel))
    const pipe = logging ? undefined : outputPipe(proc, name)
    if (pipe !== undefined) return yield* drainPipe(pipe, tail)
    if (!logging && tail === undefined) {
      // Nobody reads these lines: drained, not split.
      return yield* proc[name].pipe(Stream.runDrain, Effect.ignore)
    }
    let lines: Array<string> = []
    const splitter = new LineSplitter(
      (line: string, end: LineEnd) => {
        tail?.push(line, end)
        if (logging) lines.push(line)
      },
      MAX_LINE_BYTES,
      !logging,
    )
    const logLines = Effect.suspend(() => {
      if (lines.length === 0) return Effect.void
      const batch = lines
      lines = []
      // Annotated here, where the lines are logged: two annotations on every drain cost each start ~40 µs.
      return Effect.forEach(batch, (line) => Effect.logDebug(line), { discard: true }).pipe(
        Effect.annotateLogs({ pid: proc.pid, stream: name }),
      )
    })
    yield* proc[name].pipe(
      Stream.runForEach((chunk) => Effect.zipRight(Effect.sync(() => splitter.push(chunk)), logLines)),
      Effect.ignore,
    )
    splitter.end()
    yield* logLines
  })

const ignoreError = () => {}

/** `drain` without a `Stream`, by the pipe's own events: into `tail` when given, else nowhere. */
const drainPipe = (pipe: Readable, tail: LineTail | undefined) =>
  Effect.async<void>((resume) => {
    const splitter = tail &&
      new LineSplitter((line: string, end: LineEnd) => tail.push(line, end), MAX_LINE_BYTES, true)
    const onData = (chunk: Uint8Array) => splitter?.push(chunk)
    const detach = () => {
      pipe.off("data", onData)
      pipe.off("end", done)
      pipe.off("error", done)
      pipe.off("close", done)
    }
    function done() {
      detach()
      splitter?.end()
      resume(Effect.void)
    }
    if (pipe.destroyed || pipe.readableEnded) return done()
    // Kept after `done`: an error a pipe emits later must not go unhandled.
    pipe.on("error", ignoreError)
    pipe.on("data", onData)
    pipe.once("end", done)
    pipe.once("error", done)
    pipe.once("close", done)
    return Effect.sync(() => {
      detach()
      pipe.destroy()
    })
  })

/** @internal */
export const spawn = (
  options: SpawnOptions,
): Effect.Effect<WorkerProcess, WorkerSpawnError, CommandExecutor.CommandExecutor | Scope.Scope> =>
  Effect.gen(function* () {
    // stdin stays an open pipe that we never write: the worker reads EOF on it
    // when this process dies, which is its cue to exit (opt-in on its side).
    const command = Command.make(options.executable, ...options.args).pipe(
      Command.env(options.env),
      Command.stdin("pipe"),
      Command.stdout("pipe"),
      Command.stderr("pipe"),
    )
    const proc = yield* Command.start(command).pipe(
      Effect.mapError(spawnError(options.executable, options.args)),
      // Deno without --allow-run throws from inside spawn: a defect unless caught here.
      Effect.catchAllDefect((defect) =>
        Effect.fail(spawnError(options.executable, options.args)(defect as PlatformError))
      ),
    )
    const pid = proc.pid as number

    const tail = new LineTail(options.stderrTailBytes)
    const stderrDone = yield* Effect.forkScoped(
      drain(proc, "stderr", tail),
    )
    const stdoutDone = yield* Effect.forkScoped(
      drain(proc, "stdout", undefined),
    )

    const exitDeferred = yield* Deferred.make<ExitStatus>()
    yield* Effect.forkScoped(
      Effect.flatMap(exitStatusOf(proc.exitCode), (status) => Deferred.succeed(exitDeferred, status)),
    )
    // The executor's own record, set by the exit event: the watcher above may be interrupted before the reap.
    const reaped = () => !Effect.runSync(Effect.orElseSucceed(proc.isRunning, () => false))
    const exited = Deferred.await(exitDeferred)

    const signalGroup = (signal: NodeJS.Signals) => {
      if (!reaped()) return void signalLeader(pid, signal)
      // Reaped: the pid may be another process's, the group what the worker left behind.
      try {
        process.kill(-pid, signal)
      } catch {
        // ESRCH: the group is gone.
      }
    }

    const waitExit = (duration: Duration.Duration) => exited.pipe(Effect.interruptible, Effect.timeoutOption(duration))

    const terminate = Effect.gen(function* () {
      if (Option.isNone(yield* Deferred.poll(exitDeferred))) {
        signalGroup("SIGTERM")
        signalGroup("SIGCONT")
        if (Option.isNone(yield* waitExit(options.terminateGrace))) {
          yield* Effect.logDebug("worker ignored SIGTERM; sending SIGKILL")
          signalGroup("SIGKILL")
          yield* waitExit(KILL_WAIT)
        }
      }
      signalGroup("SIGKILL")
      yield* Fiber.join(stderrDone).pipe(
        Effect.zip(Fiber.join(stdoutDone)),
        Effect.interruptible,
        Effect.timeoutOption(STDERR_SETTLE),
      )
    })
    // Registered after the drains, so it runs before they are interrupted.
    yield* Effect.addFinalizer(() => terminate)

    return {
      pid,
      exited,
      exitStatus: Effect.flatMap(
        Deferred.poll(exitDeferred),
        (poll) => Option.match(poll, { onNone: () => Effect.succeedNone, onSome: Effect.asSome }),
      ),
      stderrTail: Fiber.join(stderrDone).pipe(
        Effect.interruptible,
        Effect.timeoutOption(STDERR_SETTLE),
        Effect.map(() => tail.text),
      ),
      kill: () => signalGroup("SIGKILL"),
      terminate,
    } satisfies WorkerProcess
  })
