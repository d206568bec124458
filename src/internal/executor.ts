/**
 * The `CommandExecutor` that `layer` provides: Node's, except that a plain
 * command (no shell, cwd, uid or gid; stdio given by name) is started here,
 * under Deno, without a fork.
 *
 * Node's executor starts every child `detached`, leading a session of its
 * own, so that its process group can be signalled. Deno makes that session
 * between a fork and the exec: the fork maps the client's whole memory again,
 * with the event loop stopped, ~1 ms for a small client and ~24 ms for one
 * holding 500 MB. Here the child is `setsid(1)`, which Deno starts with
 * posix_spawn (~0.7 ms, whatever the client holds); it makes the session and
 * execs the command in place: the same pid, leading its own session and
 * process group, as Node's executor would give.
 *
 * @internal
 */
import type * as Command from "@effect/platform/Command"
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import { type PlatformError, SystemError } from "@effect/platform/Error"
import * as NodeCommandExecutor from "@effect/platform-node/NodeCommandExecutor"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodeSink from "@effect/platform-node/NodeSink"
import * as NodeStream from "@effect/platform-node/NodeStream"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Inspectable from "effect/Inspectable"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import * as ChildProcess from "node:child_process"
import { accessSync, constants, statSync } from "node:fs"
import type { Readable, Writable } from "node:stream"
import { signalLeader } from "./signal.ts"

/** What this module uses of the `Deno` global, which Node has not. */
interface DenoGlobal {
  readonly permissions: {
    readonly querySync: (
      descriptor:
        | { readonly name: "run" }
        | { readonly name: "read"; readonly path: string }
        | { readonly name: "sys"; readonly kind: "uid" },
    ) => { readonly state: string; readonly partial?: boolean }
  }
  readonly env: { readonly toObject: () => Record<string, string> }
}

const granted = (deno: DenoGlobal, descriptor: Parameters<DenoGlobal["permissions"]["querySync"]>[0]): boolean => {
  try {
    const status = deno.permissions.querySync(descriptor)
    return status.state === "granted" && status.partial !== true
  } catch {
    return false
  }
}

/** What execve would make of a path. */
type Probe = "runnable" | "unrunnable" | "missing"

/**
 * `path` as execve would find it, or `undefined` where only the exec can
 * tell, and then Node's executor starts the command:
 * - where Deno's permissions keep us from looking (read access to the path;
 *   `make` asks for `--allow-sys=uid`), asked first, since looking would
 *   prompt on a terminal;
 * - where the mode has an execute bit that Deno's `access` refuses: it reads
 *   only the owner's or others' bits, never the group's nor root's rule, and
 *   a wrong refusal would skip to the next match on `PATH`.
 */
const probe = (deno: DenoGlobal, path: string): Probe | undefined => {
  if (!granted(deno, { name: "read", path })) return undefined
  let mode: number
  try {
    const stat = statSync(path)
    // execve refuses a directory, even a searchable one.
    if (!stat.isFile()) return "unrunnable"
    mode = stat.mode
  } catch (error) {
    const { code } = error as { readonly code?: unknown }
    return code === "ENOENT" || code === "ENOTDIR" ? "missing" : "unrunnable"
  }
  if ((mode & 0o111) === 0) return "unrunnable"
  try {
    accessSync(path, constants.X_OK)
    return "runnable"
  } catch {
    return undefined
  }
}

/** Where `setsid(1)` lives (util-linux, busybox), or `undefined`. */
const setsidPath = (deno: DenoGlobal): string | undefined =>
  ["/usr/bin/setsid", "/bin/setsid"].find((path) => probe(deno, path) === "runnable")

/**
 * Only with all of `--allow-run` (which signalling a process group needs
 * anyway) and no `--deny-run`: `setsid` would run what is denied. Else Deno's
 * refusal must name the worker's own executable, as Node's executor makes it.
 */
const mayRunAnything = (deno: DenoGlobal): boolean => granted(deno, { name: "run" })

/** What `start` spawns: stdio given by name (a string), the rest left to Node's defaults. */
type Plain = Command.StandardCommand & {
  readonly stdin: Extract<Command.Command.Input, string>
  readonly stdout: Extract<Command.Command.Output, string>
  readonly stderr: Extract<Command.Command.Output, string>
}

const isPlain = (command: Command.Command): command is Plain =>
  command._tag === "StandardCommand" && command.shell === false && Option.isNone(command.cwd) &&
  Option.isNone(command.uid) && Option.isNone(command.gid) && typeof command.stdin === "string" &&
  typeof command.stdout === "string" && typeof command.stderr === "string"

/** An error of `command`'s `method`, named as Node's executor names them. */
const commandError = (
  command: Plain,
  method: "spawn" | "kill" | "exitCode",
  reason: SystemError["reason"],
  description: string,
  cause?: unknown,
) =>
  new SystemError({
    reason,
    module: "Command",
    method,
    pathOrDescriptor: [command.command, ...command.args].join(" "),
    syscall: method === "spawn" ? "spawn" : undefined,
    description,
    cause,
  })

const errnoReason = (code: unknown): SystemError["reason"] =>
  code === "ENOENT" ? "NotFound" : code === "EACCES" ? "PermissionDenied" : "Unknown"

/**
 * The executable `setsid` is to exec, found as execvp would find it (on the
 * child's PATH), or `undefined` where a permission keeps us from looking:
 * `setsid` itself would only say it failed, with an exit code, where a spawn
 * error names what is missing. What only the exec can tell (a
 * script whose interpreter is missing, a binary for another machine) still
 * ends that way: an early exit, with `setsid`'s message on stderr.
 */
const resolve = (
  deno: DenoGlobal,
  command: Plain,
  path: string | undefined,
): Effect.Effect<string | undefined, PlatformError> =>
  Effect.suspend(() => {
    const name = command.command
    const refusal = (found: Probe) =>
      Effect.fail(
        found === "missing"
          ? commandError(command, "spawn", "NotFound", `spawn ${name} ENOENT`)
          : commandError(command, "spawn", "PermissionDenied", `spawn ${name} EACCES`),
      )
    if (name.includes("/")) {
      const found = probe(deno, name)
      if (found === undefined) return Effect.succeed(undefined)
      return found === "runnable" ? Effect.succeed(name) : refusal(found)
    }
    // Without a PATH, execvp searches its default one; a match it may not run makes EACCES of ENOENT.
    let best: Probe = "missing"
    for (const dir of (path ?? "/bin:/usr/bin").split(":")) {
      const candidate = `${dir === "" ? "." : dir}/${name}`
      const found = probe(deno, candidate)
      if (found === undefined) return Effect.succeed(undefined)
      if (found === "runnable") return Effect.succeed(candidate)
      if (found === "unrunnable") best = found
    }
    return refusal(best)
  })

/**
 * The child's output pipes, on the processes `start` makes: `process.ts`
 * drains them through their own events, where nobody logs what they carry.
 * A drain through a `Stream` allocates ~350 KB per pipe and process.
 *
 * @internal
 */
export const OutputPipes: unique symbol = Symbol.for("burn-p2p/executor/OutputPipes")

/** The pipe `name` of `proc`, when this executor started it with one. @internal */
export const outputPipe = (proc: CommandExecutor.Process, name: "stdout" | "stderr"): Readable | undefined =>
  (proc as { readonly [OutputPipes]?: Record<"stdout" | "stderr", Readable | null> })[OutputPipes]?.[name] ??
    undefined

const ioError = (method: string) => (cause: unknown) =>
  new SystemError({ reason: "Unknown", module: "Command", method, description: String(cause), cause })

const input = (pipe: Writable | null): Sink.Sink<void, Uint8Array, never, PlatformError> =>
  pipe === null ? Sink.drain : NodeSink.fromWritable(() => pipe, ioError("toWritable"))

const output = (pipe: Readable | null, name: "stdout" | "stderr"): Stream.Stream<Uint8Array, PlatformError> =>
  pipe === null ? Stream.empty : NodeStream.fromReadable(() => pipe, ioError(`fromReadable(${name})`))

const ProcessProto = {
  [CommandExecutor.ProcessTypeId]: CommandExecutor.ProcessTypeId,
  ...Inspectable.BaseProto,
  toJSON(this: CommandExecutor.Process) {
    return { _id: "@effect/platform/CommandExecutor/Process", pid: this.pid }
  },
}

/**
 * Spawns `setsid`. `spawn` comes when `setsid` runs, before its `setsid()`
 * call: for a moment a signal to the group finds none, so every signal falls
 * back to the pid (here and in `process.ts`). Waiting instead would cost the
 * start: on a shared core a poll holds the CPU the child needs (~2-3 ms).
 */
const spawnSession = (
  setsid: string,
  executable: string,
  command: Plain,
  env: Record<string, string | undefined>,
  exited: Deferred.Deferred<readonly [number | null, NodeJS.Signals | null]>,
) =>
  Effect.async<ChildProcess.ChildProcess, PlatformError>((resume) => {
    const handle: ChildProcess.ChildProcess = ChildProcess.spawn(setsid, [executable, ...command.args], {
      stdio: [command.stdin, command.stdout, command.stderr],
      env,
    })
    handle.on(
      "error",
      (error: NodeJS.ErrnoException) =>
        resume(Effect.fail(commandError(command, "spawn", errnoReason(error.code), error.message, error))),
    )
    handle.on("exit", (code, signal) => Deferred.unsafeDone(exited, Effect.succeed([code, signal] as const)))
    handle.on("spawn", () => resume(Effect.succeed(handle)))
  })

const start = (
  setsid: string,
  deno: DenoGlobal,
  fallback: CommandExecutor.CommandExecutor,
  command: Plain,
): Effect.Effect<CommandExecutor.Process, PlatformError, Scope.Scope> =>
  Effect.gen(function* () {
    const env: Record<string, string | undefined> = command.extendEnv
      // Deno's own copy: a fifth of the cost of spreading `process.env`, a proxy over it.
      ? { ...deno.env.toObject(), ...Object.fromEntries(command.env) }
      : Object.fromEntries(command.env)
    const executable = yield* resolve(deno, command, env.PATH)
    if (executable === undefined) return yield* fallback.start(command)
    const exited = yield* Deferred.make<readonly [number | null, NodeJS.Signals | null]>()
    // Once reaped, the pid may be another process's.
    const signal = (pid: number, name: NodeJS.Signals) =>
      Effect.flatMap(Deferred.isDone(exited), (done) =>
        done || signalLeader(pid, name)
          ? Effect.void
          : Effect.fail(commandError(command, "kill", "Unknown", `cannot send ${name} to pid ${pid}`)))
    // Acquired uninterruptibly, as Node's executor does: an interrupted start still stops its child.
    const handle = yield* Effect.acquireRelease(
      spawnSession(setsid, executable, command, env, exited),
      (handle) =>
        signal(handle.pid!, "SIGTERM").pipe(Effect.zipRight(Deferred.await(exited)), Effect.ignore),
    )
    const pid = handle.pid!
    const { stdin, stdout, stderr } = handle
    return Object.assign(Object.create(ProcessProto), {
      [OutputPipes]: { stdout, stderr },
      pid: CommandExecutor.ProcessId(pid),
      exitCode: Effect.flatMap(Deferred.await(exited), ([code, signal]) =>
        code !== null
          ? Effect.succeed(CommandExecutor.ExitCode(code))
          // Node's executor words it so; `process.ts` reads the signal's name from it.
          : Effect.fail(
            commandError(command, "exitCode", "Unknown", `Process interrupted due to receipt of signal: ${signal}`),
          )),
      isRunning: Effect.negate(Deferred.isDone(exited)),
      kill: (name: NodeJS.Signals = "SIGTERM") =>
        Effect.zipRight(signal(pid, name), Effect.asVoid(Deferred.await(exited))),
      stdin: input(stdin),
      stdout: output(stdout, "stdout"),
      stderr: output(stderr, "stderr"),
    }) as CommandExecutor.Process
  })

/**
 * `fallback` for what it alone can start (a shell, a cwd, streamed stdio),
 * and for everything outside Deno (the fork is Deno's) or without `setsid(1)`;
 * the plain case through `setsid`.
 *
 * @internal
 */
export const make = (fallback: CommandExecutor.CommandExecutor): CommandExecutor.CommandExecutor => {
  const deno = (globalThis as { readonly Deno?: DenoGlobal }).Deno
  // access(2) needs the uid: without it no path can be probed.
  if (deno === undefined || !granted(deno, { name: "sys", kind: "uid" })) return fallback
  const setsid = setsidPath(deno)
  if (setsid === undefined) return fallback
  return CommandExecutor.makeExecutor((command) =>
    isPlain(command) && mayRunAnything(deno) ? start(setsid, deno, fallback, command) : fallback.start(command)
  )
}

/**
 * `make` over Node's executor: what `layer` provides.
 *
 * @internal
 */
export const layer: Layer.Layer<CommandExecutor.CommandExecutor> = Layer.effect(
  CommandExecutor.CommandExecutor,
  Effect.map(CommandExecutor.CommandExecutor, make),
).pipe(Layer.provide(NodeCommandExecutor.layer), Layer.provide(NodeFileSystem.layer))
