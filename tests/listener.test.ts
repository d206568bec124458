import * as NodeContext from "@effect/platform-node/NodeContext"
import { expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { Buffer } from "node:buffer"
import { join } from "node:path"
import { make } from "../src/PythonWorker.ts"
import { fixturesRoot, testPython } from "./helpers.ts"

it.live("a connection to the listener from another local process is closed; the worker's is accepted", () => {
  const dir = mkdtempSync(join(tmpdir(), "listener-"))
  const go = join(dir, "go")
  return Effect.gen(function* () {
    const announced = yield* Deferred.make<number>()
    const logger = Logger.make(({ message }) => {
      const port = /late worker: port (\d+)/.exec(String(message))?.[1]
      if (port !== undefined) Deferred.unsafeDone(announced, Exit.succeed(Number(port)))
    })
    const starting = yield* Effect.fork(
      Effect.scoped(Effect.gen(function* () {
        const worker = yield* make({
          workloadFactory: "burn_p2p_python_runtime.reference_workload:make",
          workerModule: "late_worker",
          moduleSearchRoots: [fixturesRoot],
          pythonExecutable: testPython,
          env: { LATE_WORKER_GO: go },
        })
        return (yield* worker.hello()).workloadName
      })).pipe(
        Effect.provide(NodeContext.layer),
        Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
        Logger.withMinimumLogLevel(LogLevel.Debug),
      ),
    )
    const port = yield* Deferred.await(announced)
    // An impostor connects first and would answer `hello` if it were listened to.
    const impostorClosed = yield* Effect.async<boolean>((resume) => {
      const impostor = Net.connect({ host: "127.0.0.1", port }, () => {
        impostor.write(Buffer.from("not a frame"))
      })
      impostor.on("error", () => undefined)
      impostor.once("close", () => resume(Effect.succeed(true)))
    })
    expect(impostorClosed).toBe(true)
    writeFileSync(go, "")
    expect(yield* Fiber.join(starting)).toBe("reference-softmax")
  }).pipe(Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
})
