/**
 * `deno task demo`: peer-to-peer training with one Python worker process per
 * peer (a `PythonWorkerPool`) and a reducer, driven through `PythonWorker`.
 * See `--help`, scripts/demo/rounds.ts (the rounds) and scripts/demo/cluster.ts
 * (the workers, their restarts and `--chaos`).
 *
 * A `NodeRuntime.runMain` program: SIGINT and SIGTERM interrupt the main
 * fiber, so every worker's scope closes (polite shutdown, then SIGTERM and
 * SIGKILL of its process group) before the process exits. Exit status: 0,
 * 1 when the run failed, 2 for a usage error, 130 when interrupted.
 */
import { Command, HelpDoc, Usage, ValidationError } from "@effect/cli"
import * as FileSystem from "@effect/platform/FileSystem"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import { join, resolve } from "node:path"
import process from "node:process"
import { crossCheck, description, options } from "./demo/options.ts"
import { AGGREGATIONS } from "./demo/outer.ts"
import * as Progress from "./demo/progress.ts"
import { choosePython } from "./demo/python.ts"
import { formatTable, restartLine, seriesLines, writeReport } from "./demo/report.ts"
import { defaultSettings, runRounds, type SeriesSpec } from "./demo/rounds.ts"
import { workloads } from "./demo/workloads.ts"

const timestamp = (millis: number) => new Date(millis).toISOString().replace(/[:.]/g, "-").replace("Z", "")

const plural = (count: number, noun: string) => `${count} ${noun}${count === 1 ? "" : "s"}`

type Flags = Command.Command.ParseConfig<typeof options>

const demo = (flags: Flags) =>
  Effect.gen(function* () {
    const started = yield* Clock.currentTimeMillis
    yield* Console.log(
      `looking for a Python${flags.workload === "reference" ? "" : " (checking whether it imports torch)"}...`,
    )
    const choice = yield* choosePython({ workload: flags.workload, python: flags.python })
    const version = `Python ${choice.version}${
      Option.match(choice.torchVersion, { onNone: () => "", onSome: (torch) => `, torch ${torch}` })
    }`
    const python = `${choice.python}${
      choice.python === choice.executable ? "" : ` -> ${choice.executable}`
    } (${version})`
    yield* Console.log(`python: ${python}`)
    yield* Console.log(`workload: ${choice.workload}, because ${choice.reason}`)

    const outDir = resolve(Option.getOrElse(flags.out, () => join("out", `demo-${timestamp(started)}`)))
    const artifactsDir = join(outDir, "artifacts")
    yield* FileSystem.FileSystem.pipe(Effect.flatMap((fs) => fs.makeDirectory(artifactsDir, { recursive: true })))
    yield* Console.log(`output directory: ${outDir}`)

    const workload = workloads[choice.workload]
    const series: ReadonlyArray<SeriesSpec> = flags.mode === "merge"
      ? [{ mode: "merge" }]
      : flags.mode === "diloco"
      ? [{ mode: "diloco", aggregation: flags.aggregation }]
      : [{ mode: "merge" }, ...AGGREGATIONS.map((aggregation): SeriesSpec => ({ mode: "diloco", aggregation }))]
    const settings = defaultSettings({
      python: choice.python,
      workload,
      peers: flags.peers,
      rounds: flags.rounds,
      artifactsDir,
      series,
      innerSteps: Option.getOrElse(flags.innerSteps, () => workload.stepsPerWindow),
      outer: {
        learningRate: Option.getOrElse(flags.outerLr, () => workload.outer.learningRate),
        momentum: Option.getOrElse(flags.outerMomentum, () => workload.outer.momentum),
        nesterov: flags.nesterov,
      },
      byzantine: flags.byzantine,
      chaos: flags.chaos ? Option.some(flags.seed) : Option.none(),
    })
    yield* Console.log(
      `${plural(flags.peers, "peer")} x ${plural(flags.rounds, "round")}; each round, every peer trains on ${
        plural(workload.microshardsPerWindow, "microshard")
      } of ${workload.examplesPerMicroshard} examples; learning rate ${workload.learningRate}, lowered to ${settings.patchLearningRate} at round ${settings.patchRound}`,
    )
    if (series.some((spec) => spec.mode === "diloco")) {
      const { outer } = settings
      yield* Console.log(
        `DiLoCo: H = ${settings.innerSteps} inner steps per round (a merge-mode window is ${workload.stepsPerWindow}); outer SGD lr ${outer.learningRate}, momentum ${outer.momentum}${
          outer.nesterov ? ", Nesterov" : ""
        }`,
      )
    }
    if (series.length > 1) {
      yield* Console.log(
        `series: ${series.map((spec) => spec.mode === "merge" ? "merge" : `diloco-${spec.aggregation}`).join(", ")}`,
      )
    }
    if (settings.byzantine) {
      yield* Console.log(
        `byzantine: peer-${
          flags.peers - 1
        } sends its pseudo-gradient x -${settings.byzantineScale} and reports honest metrics`,
      )
    }

    const run = yield* Effect.scoped(Effect.flatMap(Progress.forStdout, (progress) => runRounds(settings, progress)))
    const totalMillis = (yield* Clock.currentTimeMillis) - started
    const files = yield* writeReport(outDir, run, {
      workload: choice.workload,
      python,
      reason: choice.reason,
      totalMillis,
    })

    yield* Console.log(`\n${formatTable(run)}\n`)
    for (const line of seriesLines(run)) yield* Console.log(line)
    yield* Console.log(restartLine(run))
    yield* Console.log(
      `workers started in ${(run.startupMillis / 1000).toFixed(2)} s; total ${(totalMillis / 1000).toFixed(2)} s`,
    )
    yield* Console.log(`chart:   ${files.chart}`)
    yield* Console.log(`summary: ${files.json}, ${files.markdown}`)
    yield* Console.log(`artifacts: ${artifactsDir}`)
  })

const command = Command.make("demo", options, (flags) =>
  Effect.gen(function* () {
    const problem = crossCheck(flags)
    if (Option.isSome(problem)) {
      yield* Console.error(problem.value)
      return yield* Effect.fail(ValidationError.invalidValue(HelpDoc.p(problem.value)))
    }
    return yield* demo(flags)
  })).pipe(Command.withDescription(description))

const cli = Command.run(command, { name: "deno task demo", version: "0.2.0" })

// `deno task demo -- --peers 2` forwards the `--` itself.
const argv = process.argv.slice(2)[0] === "--" ? process.argv.slice(3) : process.argv.slice(2)

/** @effect/cli has said what was wrong; add the usage and leave with 2, as a shell tool does. */
const usageError = Effect.sync(() => {
  const usage = HelpDoc.toAnsiText(Usage.getHelp(Command.getUsage(command))).trimEnd()
  console.error(`\nusage: deno task demo ${usage.replace(/^\$?\s*demo\s*/, "")}\n(--help for details)`)
  return "usage" as const
})

const main = cli(["deno", "scripts/demo.ts", ...argv]).pipe(
  Effect.catchIf(ValidationError.isValidationError, () => usageError),
  Effect.onInterrupt(() => Console.error("\ninterrupted: every worker has been stopped")),
  Effect.tapErrorCause((cause) =>
    Cause.isInterruptedOnly(cause) ? Effect.void : Console.error(
      Option.match(Cause.failureOption(cause), {
        onSome: (error) => `demo failed: ${error instanceof Error ? error.message : String(error)}`,
        onNone: () => `demo failed:\n${Cause.pretty(cause)}`,
      }),
    )
  ),
  // The workers' lifecycle is shown from their events; the library's own warnings would repeat it.
  Logger.withMinimumLogLevel(LogLevel.Error),
  Effect.provide(NodeContext.layer),
)

NodeRuntime.runMain(main, {
  disableErrorReporting: true,
  teardown: (exit, onExit) =>
    onExit(
      Exit.isSuccess(exit) ? (exit.value === "usage" ? 2 : 0) : Cause.isInterruptedOnly(exit.cause) ? 130 : 1,
    ),
})
