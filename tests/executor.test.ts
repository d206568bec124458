/**
 * The `CommandExecutor` that `layer` provides (`src/internal/executor.ts`):
 * plain commands through `setsid(1)`, each leading a session of its own under
 * its own pid, as Node's executor gives them; the rest by Node's executor.
 */
import * as Command from "@effect/platform/Command"
import * as CommandExecutor from "@effect/platform/CommandExecutor"
import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { spawnSync } from "node:child_process"
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import process from "node:process"
import * as Executor from "../src/internal/executor.ts"
import * as workerProcess from "../src/internal/process.ts"
import { awaitGone, childPids, fixturesRoot, isAlive, streamText, tempDir, testPython } from "./helpers.ts"

const executor = Effect.provide(CommandExecutor.CommandExecutor, Executor.layer)

/** `state ppid pgrp session` of a live process. */
const statOf = (pid: number) => {
  const [state, ppid, pgrp, session] = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
  return { state, ppid: Number(ppid), pgrp: Number(pgrp), session: Number(session) }
}

const client = join(fixturesRoot, "..", "executor_client.ts")

const python = (code: string) => Command.make(testPython, "-c", code)

describe("the executor layer provides", () => {
  it.scopedLive("starts a plain command leading its own session and group, as itself: no launcher between", () =>
    Effect.gen(function* () {
      const exec = yield* executor
      const proc = yield* exec.start(
        python("import sys; sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.read()").pipe(
          Command.stdin("pipe"),
        ),
      )
      // Started by this executor, not handed to Node's (which gives the same session, by a fork).
      expect(Executor.outputPipe(proc, "stdout")).toBeDefined()
      const lines = yield* proc.stdout.pipe(Stream.decodeText(), Stream.splitLines, Stream.take(1), Stream.runCollect)
      expect([...lines]).toEqual(["ready"])
      expect(statOf(proc.pid)).toMatchObject({ ppid: process.pid, pgrp: proc.pid, session: proc.pid })
      expect(readFileSync(`/proc/${proc.pid}/cmdline`, "utf8").split("\0")[0]).toBe(testPython)
      yield* proc.kill("SIGKILL")
    }))

  it.live("the stop sequence right after a start reaches the child, before setsid(1) has made its group", () =>
    Effect.gen(function* () {
      const exec = yield* executor
      // A start returns before setsid() runs in the child (a quarter of the time here): the group's
      // SIGTERM finds none, and without the fallback to the pid only the grace's SIGKILL would.
      for (let i = 0; i < 30; i++) {
        const status = yield* Effect.scoped(Effect.gen(function* () {
          const proc = yield* workerProcess.spawn({
            executable: "sleep",
            args: ["60"],
            env: {},
            terminateGrace: Duration.seconds(1),
            stderrTailBytes: 1024,
          })
          yield* proc.terminate
          return yield* proc.exited
        })).pipe(Effect.provideService(CommandExecutor.CommandExecutor, exec))
        expect(status).toEqual({ exitCode: null, signal: "SIGTERM" })
      }
    }))

  it.live("an interrupted start still stops its child", () =>
    Effect.gen(function* () {
      const exec = yield* executor
      const before = new Set(childPids())
      for (let i = 0; i < 20; i++) {
        const fiber = yield* Effect.fork(
          Effect.scoped(Effect.zipRight(exec.start(Command.make("sleep", "60")), Effect.never)),
        )
        yield* Effect.yieldNow()
        yield* Fiber.interrupt(fiber)
      }
      expect(childPids().filter((pid) => !before.has(pid) && isAlive(pid))).toEqual([])
    }))

  it.live("under narrowed permissions: a denied executable is refused; one it may not look up goes to Node's", () =>
    Effect.sync(() => {
      const run = (...flags: Array<string>) => {
        const result = spawnSync(process.execPath, ["run", "--allow-env", ...flags, client, testPython, "-c", "pass"], {
          encoding: "utf8",
        })
        return JSON.parse(result.stdout.trim().split("\n").at(-1) ?? "null")
      }
      expect(run("--allow-run", "--allow-read", "--allow-sys")).toMatchObject({ pid: expect.any(Number), ours: true })
      // setsid would run what Deno denies.
      expect(run("--allow-run", `--deny-run=${testPython}`, "--allow-read", "--allow-sys")).toMatchObject({
        error: "SystemError",
      })
      // Without read access (nor the uid for access(2)) nothing can be looked up: Node's executor starts it.
      expect(run("--allow-run")).toMatchObject({ pid: expect.any(Number), ours: false })
      expect(run("--allow-run", "--allow-read", "--allow-sys=uid")).toMatchObject({ ours: true })
      // setsid in sight, the interpreter not.
      const setsid = ["/usr/bin/setsid", "/bin/setsid"].find((path) => existsSync(path))
      expect(setsid).toBeDefined()
      expect(run("--allow-run", `--allow-read=${setsid}`, "--allow-sys=uid")).toMatchObject({ ours: false })
    }))

  it.scopedLive("reports the exit code, output on both streams, and a death by signal by its name", () =>
    Effect.gen(function* () {
      const exec = yield* executor
      const proc = yield* exec.start(
        python("import sys; print('out'); print('err', file=sys.stderr); sys.exit(7)").pipe(
          Command.stdout("pipe"),
          Command.stderr("pipe"),
        ),
      )
      const [out, err, code] = yield* Effect.all([streamText(proc.stdout), streamText(proc.stderr), proc.exitCode], {
        concurrency: "unbounded",
      })
      expect(Executor.outputPipe(proc, "stderr")).toBeDefined()
      expect({ out, err, code }).toEqual({ out: "out\n", err: "err\n", code: 7 })
      expect(yield* proc.isRunning).toBe(false)

      const killed = yield* exec.start(python("import time; time.sleep(60)"))
      process.kill(killed.pid, "SIGKILL")
      const failed = yield* Effect.flip(killed.exitCode)
      expect(failed.message).toContain("SIGKILL")
    }))

  it.scopedLive("finds the executable on the child's PATH; a missing or unrunnable one is the spawn's error", () =>
    Effect.gen(function* () {
      const exec = yield* executor
      const dir = yield* tempDir
      const tool = join(dir, "burn-p2p-executor-test-tool")
      writeFileSync(tool, '#!/bin/sh\necho found "$@"\n')
      chmodSync(tool, 0o755)
      const found = yield* exec.string(
        Command.make("burn-p2p-executor-test-tool", "it").pipe(Command.env({ PATH: `/nowhere:${dir}` })),
      )
      expect(found).toBe("found it\n")

      const notRunnable = join(dir, "plain-file")
      writeFileSync(notRunnable, "")
      const errors = yield* Effect.forEach(
        [Command.make("burn-p2p-no-such-tool"), Command.make(join(dir, "missing")), Command.make(notRunnable)],
        (command) => Effect.flip(exec.start(command)),
      )
      expect(errors.map((error) => error._tag === "SystemError" && [error.reason, error.method])).toEqual([
        ["NotFound", "spawn"],
        ["NotFound", "spawn"],
        ["PermissionDenied", "spawn"],
      ])
    }))

  // Deno's access(2) reads only the owner's or others' bits: it refuses root a file owned by another user
  // with mode 0700, which execve lets root run. Only root can make that case.
  it.scopedLive.runIf(process.getuid?.() === 0)(
    "an execute bit Deno's access refuses leaves the lookup to the exec: the first match on PATH runs",
    () =>
      Effect.gen(function* () {
        const exec = yield* executor
        const dir = yield* tempDir
        const [first, second] = [join(dir, "first"), join(dir, "second")]
        for (const [folder, mode, owner] of [[first, 0o700, 65534], [second, 0o755, 0]] as const) {
          mkdirSync(folder)
          const tool = join(folder, "burn-p2p-executor-test-tool")
          writeFileSync(tool, `#!/bin/sh\necho ${folder === first ? "first" : "second"}\n`)
          chmodSync(tool, mode)
          chownSync(tool, owner, owner)
        }
        const ran = yield* exec.string(
          Command.make("burn-p2p-executor-test-tool").pipe(Command.env({ PATH: `${first}:${second}` })),
        )
        expect(ran).toBe("first\n")
        const direct = yield* exec.string(Command.make(join(first, "burn-p2p-executor-test-tool")))
        expect(direct).toBe("first\n")
      }),
  )

  it.live("the scope's close stops a child still running, and its process group with it", () =>
    Effect.gen(function* () {
      const exec = yield* executor
      const scope = yield* Scope.make()
      // The child starts a grandchild in its group, then both sleep.
      const proc = yield* exec.start(
        python(
          "import subprocess, sys, time\n" +
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n" +
            "print(p.pid, flush=True); time.sleep(60)",
        ),
      ).pipe(Scope.extend(scope))
      const grandchild = Number(
        yield* proc.stdout.pipe(
          Stream.decodeText(),
          Stream.splitLines,
          Stream.take(1),
          Stream.runCollect,
          Effect.map((lines) => [...lines][0]),
        ),
      )
      expect(statOf(grandchild).pgrp).toBe(proc.pid)
      yield* Scope.close(scope, Exit.void)
      expect(isAlive(proc.pid)).toBe(false)
      yield* awaitGone([grandchild])
    }))

  it.scopedLive("hands what it does not start itself (here a cwd) to Node's executor", () =>
    Effect.gen(function* () {
      const exec = yield* executor
      const dir = yield* tempDir
      const cwd = yield* exec.string(python("import os; print(os.getcwd())").pipe(Command.workingDirectory(dir)))
      expect(cwd.trim()).toBe(dir)
    }))
})
