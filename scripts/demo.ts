/**
 * `deno task demo`: peer-to-peer training with one Python worker process per
 * peer, driven through `PythonWorker`. See `--help` and scripts/demo/rounds.ts.
 *
 * A `NodeRuntime.runMain` program: SIGINT and SIGTERM interrupt the main
 * fiber, so every worker's scope closes (polite shutdown, then SIGTERM and
 * SIGKILL of its process group) before the process exits.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import { join, resolve } from "node:path"
import process from "node:process"
import { parseOptions, usage, UsageError } from "./demo/options.ts"
import * as Progress from "./demo/progress.ts"
import { choosePython } from "./demo/python.ts"
import { formatTable, writeReport } from "./demo/report.ts"
import { defaultSettings, runRounds } from "./demo/rounds.ts"
import { workloads } from "./demo/workloads.ts"

const timestamp = (millis: number) => new Date(millis).toISOString().replace(/[:.]/g, "-").replace("Z", "")

const plural = (count: number, noun: string) => `${count} ${noun}${count === 1 ? "" : "s"}`

const program = Effect.gen(function* () {
  const options = yield* parseOptions(process.argv.slice(2))
  if (options.help) return yield* Console.log(usage)
  const started = yield* Clock.currentTimeMillis

  yield* Console.log(
    `looking for a Python${options.workload === "reference" ? "" : " (checking whether it imports torch)"}...`,
  )
  const choice = yield* choosePython({ workload: options.workload, python: options.python })
  const version = `Python ${choice.version}${
    Option.match(choice.torchVersion, { onNone: () => "", onSome: (torch) => `, torch ${torch}` })
  }`
  const python = `${choice.python}${choice.python === choice.executable ? "" : ` -> ${choice.executable}`} (${version})`
  yield* Console.log(`python: ${python}`)
  yield* Console.log(`workload: ${choice.workload}, because ${choice.reason}`)

  const outDir = resolve(Option.getOrElse(options.out, () => join("out", `demo-${timestamp(started)}`)))
  const artifactsDir = join(outDir, "artifacts")
  yield* FileSystem.FileSystem.pipe(Effect.flatMap((fs) => fs.makeDirectory(artifactsDir, { recursive: true })))
  yield* Console.log(`output directory: ${outDir}`)

  const workload = workloads[choice.workload]
  const settings = defaultSettings({
    python: choice.python,
    workload,
    peers: options.peers,
    rounds: options.rounds,
    artifactsDir,
  })
  yield* Console.log(
    `${plural(options.peers, "peer")} x ${plural(options.rounds, "round")}; each round, every peer trains on ${
      plural(workload.microshardsPerWindow, "microshard")
    } of ${workload.examplesPerMicroshard} examples; learning rate ${workload.learningRate}, lowered to ${settings.patchLearningRate} at round ${settings.patchRound}`,
  )

  const run = yield* Effect.scoped(Effect.flatMap(Progress.forStdout, (progress) => runRounds(settings, progress)))
  const totalMillis = (yield* Clock.currentTimeMillis) - started
  const files = yield* writeReport(outDir, run, {
    workload: choice.workload,
    python,
    reason: choice.reason,
    totalMillis,
  })

  const first = run.rounds[0]
  const last = run.rounds[run.rounds.length - 1]
  yield* Console.log(`\n${formatTable(run)}\n`)
  yield* Console.log(
    `merged Test accuracy: ${first.mergedAccuracy.toFixed(4)} at round 0 -> ${
      last.mergedAccuracy.toFixed(4)
    } after round ${last.round}`,
  )
  yield* Console.log(
    `workers started in ${(run.startupMillis / 1000).toFixed(2)} s; total ${(totalMillis / 1000).toFixed(2)} s`,
  )
  yield* Console.log(`chart:   ${files.chart}`)
  yield* Console.log(`summary: ${files.json}, ${files.markdown}`)
  yield* Console.log(`artifacts: ${artifactsDir}`)
})

const main = program.pipe(
  Effect.onInterrupt(() => Console.error("\ninterrupted: every worker has been stopped")),
  Effect.tapErrorCause((cause) =>
    Cause.isInterruptedOnly(cause) ? Effect.void : Console.error(
      Option.match(Cause.failureOption(cause), {
        onSome: (error) => `demo failed: ${error.message}`,
        onNone: () => `demo failed:\n${Cause.pretty(cause)}`,
      }),
    )
  ),
  Effect.provide(NodeContext.layer),
)

NodeRuntime.runMain(main, {
  disableErrorReporting: true,
  teardown: (exit, onExit) =>
    onExit(
      Exit.isSuccess(exit)
        ? 0
        : Cause.isInterruptedOnly(exit.cause)
        ? 130
        : Option.exists(Cause.failureOption(exit.cause), (error) => error instanceof UsageError)
        ? 2
        : 1,
    ),
})
