/**
 * The end of a run: the tables (as text for the terminal and as markdown),
 * one line per series, and the files in the output directory: the chart, a
 * JSON summary with every number, and a markdown summary.
 *
 * One series: its per-round table. Several (`--mode compare`): one table
 * with a column per series (Test accuracy / loss of its canonical model),
 * the series having run on the same leases at equal inner compute.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import type { PlatformError } from "@effect/platform/Error"
import * as Effect from "effect/Effect"
import { join } from "node:path"
import { renderChart } from "./chart.ts"
import type { DemoRun, RoundResult, SeriesRun } from "./rounds.ts"

/** What the run was, for the summary's heading. */
export interface RunContext {
  readonly workload: string
  readonly python: string
  readonly reason: string
  readonly totalMillis: number
}

export interface ReportFiles {
  readonly chart: string
  readonly json: string
  readonly markdown: string
}

const optional = (value: number | null) => value === null ? "-" : value.toFixed(4)

const learningRate = (result: RoundResult) => {
  const rates = [...new Set(result.peers.map((peer) => peer.learningRate))]
  return rates.length === 0 ? "-" : rates.join("/")
}

const steps = (result: RoundResult) => {
  const counts = [...new Set(result.peers.map((peer) => peer.steps))]
  return counts.length === 0 ? "-" : counts.join("/")
}

interface Table {
  readonly headers: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReadonlyArray<string>>
}

const seriesTable = (series: SeriesRun): Table => {
  const canonical = series.spec.mode === "merge" ? "merged" : "global"
  return {
    headers: [
      "round",
      "mean peer acc (val)",
      `${canonical} acc (test)`,
      `${canonical} loss (test)`,
      "peer train loss",
      "learning rate",
      "steps",
      "wall time",
    ],
    rows: series.rounds.map((result) => [
      String(result.round),
      optional(result.meanPeerAccuracy),
      result.mergedAccuracy.toFixed(4),
      result.mergedLoss.toFixed(4),
      optional(result.meanTrainLoss),
      learningRate(result),
      steps(result),
      `${(result.wallMillis / 1000).toFixed(2)} s`,
    ]),
  }
}

const compareTable = (run: DemoRun): Table => ({
  headers: ["round", ...run.series.map((series) => `${series.name} acc / loss`)],
  rows: run.series[0].rounds.map((_, index) => [
    String(index),
    ...run.series.map((series) => {
      const result = series.rounds[index]
      return result === undefined ? "-" : `${result.mergedAccuracy.toFixed(4)} / ${result.mergedLoss.toFixed(4)}`
    }),
  ]),
})

const tableOf = (run: DemoRun): Table => run.series.length === 1 ? seriesTable(run.series[0]) : compareTable(run)

export const formatTable = (run: DemoRun): string => {
  const { headers, rows } = tableOf(run)
  const table = [headers, ...rows]
  const widths = headers.map((_, column) => Math.max(...table.map((row) => row[column].length)))
  const line = (row: ReadonlyArray<string>) =>
    row.map((cell, column) => column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column])).join("  ")
  return [line(headers), widths.map((width) => "-".repeat(width)).join("  "), ...rows.map(line)].join("\n")
}

export const formatMarkdownTable = (run: DemoRun): string => {
  const { headers, rows } = tableOf(run)
  return [
    `| ${headers.join(" | ")} |`,
    `| ${headers.map((_, column) => column === 0 ? "---" : "---:").join(" | ")} |`,
    ...rows.map((row) => `| ${row.join(" | ")} |`),
  ].join("\n")
}

/** One line per series: its canonical model's Test accuracy and loss, first round to last. */
export const seriesLines = (run: DemoRun): ReadonlyArray<string> => {
  const width = Math.max(...run.series.map((series) => series.title.length))
  return run.series.map((series) => {
    const first = series.rounds[0]
    const last = series.rounds[series.rounds.length - 1]
    return `${series.title.padEnd(width)}  Test accuracy ${first.mergedAccuracy.toFixed(4)} -> ${
      last.mergedAccuracy.toFixed(4)
    }, loss ${first.mergedLoss.toFixed(4)} -> ${last.mergedLoss.toFixed(4)} after round ${last.round}`
  })
}

/** The run's restarts, for the summary: "1 restart (peer-2: worker #1, pid 123, killed by SIGKILL)". */
export const restartLine = (run: DemoRun): string => {
  const count = run.restarts.length
  const detail = run.restarts.map((restart) =>
    `${restart.actor}: worker #${restart.generation}, pid ${restart.pid}, ${
      restart.signal !== null ? `killed by ${restart.signal}` : `exit code ${restart.exitCode}`
    }`
  )
  return `restarts: ${count}${count > 0 ? ` (${detail.join("; ")})` : ""}`
}

export const chartTitle = (run: DemoRun): string =>
  `${run.workloadName}: ${run.peers} peers x ${run.series[0].rounds.length - 1} rounds`

/** What the lines are: the merged or global model(s) on Test, and who lied. */
export const chartSubtitle = (run: DemoRun): string => {
  const what = run.series.length === 1
    ? `${run.series[0].title}: the ${run.series[0].spec.mode === "merge" ? "merged" : "global"} model on the Test split`
    : "each series' canonical model on the Test split, same leases and inner compute"
  return `${what}${run.byzantine === null ? "" : `; ${run.byzantine} byzantine (update x -10)`}${
    run.restarts.length === 0 ? "" : `; ${run.restarts.length} worker restart${run.restarts.length === 1 ? "" : "s"}`
  }`
}

export const writeReport = (
  outDir: string,
  run: DemoRun,
  context: RunContext,
): Effect.Effect<ReportFiles, PlatformError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const files: ReportFiles = {
      chart: join(outDir, "chart.svg"),
      json: join(outDir, "summary.json"),
      markdown: join(outDir, "summary.md"),
    }
    const series = run.series.map((series) => ({
      name: series.name,
      points: series.rounds.map((result) => ({
        round: result.round,
        accuracy: result.mergedAccuracy,
        loss: result.mergedLoss,
      })),
    }))
    yield* fs.writeFileString(
      files.chart,
      renderChart(series.length === 1 ? series[0].points : series, chartTitle(run), chartSubtitle(run)),
    )
    yield* fs.writeFileString(files.json, JSON.stringify({ ...context, ...run }, null, 2) + "\n")
    const patches = run.series.flatMap((series) =>
      series.rounds.flatMap((result) =>
        result.patch === null ? [] : [
          `- ${
            run.series.length > 1 ? `${series.name}, ` : ""
          }round ${result.round}: learning_rate=${result.patch.learningRate}: ${
            result.patch.outcomes.map(({ peer, outcome }) => `${peer} ${outcome}`).join(", ")
          }`,
        ]
      )
    )
    const dilocoRan = run.series.some((series) => series.spec.mode === "diloco")
    yield* fs.writeFileString(
      files.markdown,
      [
        `# Demo run: ${run.workloadName}`,
        "",
        `- workload: ${context.workload}; ${context.reason}`,
        `- python: ${context.python}`,
        `- ${run.peers} peers, ${run.series[0].rounds.length - 1} rounds; workers started in ${
          (run.startupMillis / 1000).toFixed(2)
        } s; total ${(context.totalMillis / 1000).toFixed(2)} s`,
        ...(dilocoRan
          ? [
            `- DiLoCo: H = ${run.innerSteps} inner steps per round; outer SGD lr ${run.outer.learningRate}, momentum ${run.outer.momentum}${
              run.outer.nesterov ? ", Nesterov" : ""
            }`,
          ]
          : []),
        ...(run.byzantine === null ? [] : [`- byzantine peer: ${run.byzantine}`]),
        `- ${restartLine(run)}`,
        "",
        formatMarkdownTable(run),
        "",
        ...seriesLines(run).map((line) => `- ${line}`),
        "",
        "Runtime patches:",
        ...(patches.length > 0 ? patches : ["- none"]),
        "",
        "![accuracy and loss per round](chart.svg)",
        "",
      ].join("\n"),
    )
    return files
  })
