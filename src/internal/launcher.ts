/**
 * The launcher: options to argv, environment and the config channel; spawn;
 * accept and verify the worker's connection. What it returns is a running,
 * connected process; what to do with it is the manager's business.
 *
 * @internal
 */
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { randomBytes, randomUUID } from "node:crypto"
import { rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import type * as Net from "node:net"
import { join } from "node:path"
import process from "node:process"
import { InvalidArgumentError, WorkerConnectError, type WorkerSpawnError } from "../WorkerError.ts"
import { fromSocket, type Transport } from "./transport.ts"
import * as accept from "./accept.ts"
import { prepareHandshake } from "./codec.ts"
import type { ExitStatus } from "./exitStatus.ts"
import type { Decoded } from "./options.ts"
import { permissionFlag } from "./permission.ts"
import * as workerProcess from "./process.ts"
import { signalLeader } from "./signal.ts"

/**
 * A started worker: its process and the verified byte stream to it.
 *
 * @internal
 */
export interface Launched {
  readonly process: workerProcess.WorkerProcess
  readonly transport: Transport
}

/** @internal */
export type LaunchError = WorkerSpawnError | WorkerConnectError | InvalidArgumentError

/**
 * How long a launcher that exited with code 0 gets for its worker to show up
 * from elsewhere: a Python start on a busy machine (imports, the factory)
 * takes seconds; a worker exits 0 before connecting only through a launcher.
 */
const OUTSIDER_GRACE = Duration.seconds(5)

/**
 * A file only this user can read, holding the config; removed when the scope
 * closes. Our worker removes it as soon as it has read it, so a client that
 * dies during a slow start leaves nothing behind. Not
 * `FileSystem.makeTempFileScoped`: that file lives in a directory of its
 * own, which the worker could not know to remove. Written with `node:fs`'s
 * synchronous calls, not `FileSystem`: Python reads it from the real disk
 * anyway, and the asynchronous write's three trips through the thread pool
 * cost ~1 ms before Python can be spawned.
 */
const configFile = (text: string) => {
  const path = join(tmpdir(), `burn-p2p-worker-config-${randomUUID()}.json`)
  return Effect.acquireRelease(
    // "wx": a fresh file, never one planted under the same name.
    Effect.try({
      try: () => {
        writeFileSync(path, text, { mode: 0o600, flag: "wx" })
        return path
      },
      catch: (error) =>
        new InvalidArgumentError({
          where: "PythonWorker.layer",
          // Deno names the file it refused; what to grant is the folder the file goes in.
          detail: `cannot write the workload config to a temporary file: ${
            permissionFlag(error) === undefined ? (error as Error).message : `Deno needs --allow-write=${tmpdir()}`
          }`,
        }),
    }),
    () =>
      Effect.sync(() => {
        try {
          rmSync(path, { force: true })
        } catch {
          // Gone with its folder, or not ours to remove: nothing is left to do.
        }
      }),
  )
}

const inheritedPythonPath = (): string | undefined => {
  try {
    return process.env.PYTHONPATH
  } catch {
    // Deno without --allow-env for it: nothing inherited.
    return undefined
  }
}

/** @internal */
export const launch = (
  config: Decoded,
  runtimeRoot: string,
): Effect.Effect<Launched, LaunchError, Scope.Scope | CommandExecutor.CommandExecutor> =>
  Effect.gen(function* () {
    const token = config.verifyConnection === "token" ? randomBytes(32).toString("hex") : undefined
    const listener = yield* accept.listen(token === undefined ? { _tag: "ProcessGroup" } : { _tag: "Token", token })
      .pipe(Effect.mapError(({ cause }) => connectError("Listen", Duration.zero, listenDetail(cause))))
    const configPath = config.configVia === "file" ? yield* configFile(config.configJson) : undefined
    // A PYTHONPATH in `env` adds to the path rather than hiding the runtime's own folder.
    const { PYTHONPATH: extraPythonPath, ...env } = config.env
    const pythonPath = [runtimeRoot, ...config.moduleSearchRoots, extraPythonPath, inheritedPythonPath()].filter(
      (entry): entry is string => entry !== undefined && entry !== "",
    )
    const proc = yield* workerProcess.spawn({
      executable: config.pythonExecutable,
      args: [
        "-m",
        config.workerModule,
        "--factory",
        config.workloadFactory,
        ...(configPath === undefined ? ["--config-json", config.configJson] : ["--config-file", configPath]),
        "--connect-host",
        "127.0.0.1",
        "--connect-port",
        String(listener.port),
      ],
      env: {
        PYTHONPATH: pythonPath.join(":"),
        PYTHONUNBUFFERED: "1",
        BURN_P2P_WORKER_MAX_FRAME_BYTES: String(config.maxFrameBytes),
        ...(config.exitWithParent ? { BURN_P2P_WORKER_EXIT_ON_STDIN_EOF: "1" } : {}),
        ...(token === undefined ? {} : { BURN_P2P_WORKER_CONNECT_TOKEN: token }),
        ...env,
      },
      terminateGrace: config.terminateGrace,
      stderrTailBytes: config.stderrTailBytes,
    })
    const pid = proc.pid
    // Python takes ~80 ms to connect back: meanwhile, what the handshake will need.
    prepareHandshake()

    const failure = (reason: WorkerConnectError["reason"], detail: string) =>
      Effect.flatMap(
        Effect.zip(proc.exitStatus, proc.stderrTail),
        ([status, stderrTail]) =>
          Effect.fail(
            connectError(reason, config.connectTimeout, detail, pid, Option.getOrUndefined(status), stderrTail),
          ),
      )
    const outside = (who: accept.Outsider) => {
      // It presented our secret: it is our worker, run where we cannot stop it.
      if (who.pid !== null) signalLeader(who.pid, "SIGKILL")
      return failure("OutsideProcessGroup", `pid ${who.pid ?? "?"}, process group ${who.pgid ?? "?"}; expected ${pid}`)
    }
    // A launcher that exits with code 0 may have handed Python to another session.
    const exitedFirst = Effect.flatMap(proc.exited, (status: ExitStatus) => {
      const seen = listener.outsider()
      if (seen !== undefined) return outside(seen)
      if (status.exitCode !== 0) return failure("ProcessExited", "the process exited")
      return listener.accept(pid).pipe(
        Effect.timeoutOption(OUTSIDER_GRACE),
        Effect.matchEffect({
          onFailure: outside,
          onSuccess: Option.match({
            onNone: () => {
              // Refused meanwhile as not of the group (processGroup mode): that was the worker.
              const late = listener.outsider()
              return late !== undefined ? outside(late) : failure("ProcessExited", "the process exited")
            },
            onSome: (socket) => {
              socket.destroy()
              return outside({ pid: null, pgid: null })
            },
          }),
        }),
      )
    })
    // The first of the connection, the exit and the deadline; the others are interrupted without
    // waiting. Not `raceFirst` and `timeoutOption`: their four fibers, and awaiting the losers, cost
    // ~0.2 ms between the worker's connection and its `hello`.
    const first = yield* Deferred.make<Option.Option<Net.Socket>, WorkerConnectError>()
    const arms = [
      yield* Effect.forkScoped(Deferred.complete(first, Effect.asSome(Effect.catchAll(listener.accept(pid), outside)))),
      yield* Effect.forkScoped(Deferred.complete(first, exitedFirst)),
      yield* Effect.forkScoped(
        Effect.zipRight(Effect.sleep(config.connectTimeout), Deferred.succeed(first, Option.none())),
      ),
    ]
    const socket = yield* Deferred.await(first).pipe(
      Effect.ensuring(Effect.forEach(arms, Fiber.interruptFork, { discard: true })),
      Effect.flatMap(Option.match({
        // Stopped first, so the error quotes its complete stderr without waiting for it.
        onNone: () => Effect.zipRight(proc.terminate, failure("Timeout", "deadline passed")),
        onSome: Effect.succeed,
      })),
    )
    return { process: proc, transport: fromSocket(socket) }
  })

const listenDetail = (cause: unknown): string => {
  const flag = permissionFlag(cause, { net: "127.0.0.1" })
  if (flag !== undefined) return `Deno needs ${flag}`
  return cause instanceof Error ? cause.message : String(cause)
}

const connectError = (
  reason: WorkerConnectError["reason"],
  timeout: Duration.Duration,
  detail: string,
  pid: number | null = null,
  status?: ExitStatus,
  stderrTail = "",
) =>
  new WorkerConnectError({
    reason,
    timeoutMillis: Duration.toMillis(timeout),
    detail,
    pid,
    exitCode: status?.exitCode ?? null,
    signal: status?.signal ?? null,
    stderrTail,
  })
