/**
 * The end of a run: the per-round table (as text for the terminal and as
 * markdown), and the files in the output directory: the chart, a JSON
 * summary with every number, and a markdown summary.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import type { PlatformError } from "@effect/platform/Error"
import * as Effect from "effect/Effect"
import { join } from "node:path"
import { renderChart } from "./chart.ts"
import type { DemoRun, RoundResult } from "./rounds.ts"

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

const HEADERS = [
  "round",
  "mean peer acc (val)",
  "merged acc (test)",
  "merged loss (test)",
  "peer train loss",
  "learning rate",
  "wall time",
] as const

const optional = (value: number | null) => value === null ? "-" : value.toFixed(4)

const learningRate = (result: RoundResult) => {
  const rates = [...new Set(result.peers.map((peer) => peer.learningRate))]
  return rates.length === 0 ? "-" : rates.join("/")
}

const rows = (run: DemoRun): ReadonlyArray<ReadonlyArray<string>> =>
  run.rounds.map((result) => [
    String(result.round),
    optional(result.meanPeerAccuracy),
    result.mergedAccuracy.toFixed(4),
    result.mergedLoss.toFixed(4),
    optional(result.meanTrainLoss),
    learningRate(result),
    `${(result.wallMillis / 1000).toFixed(2)} s`,
  ])

export const formatTable = (run: DemoRun): string => {
  const table = [HEADERS, ...rows(run)]
  const widths = HEADERS.map((_, column) => Math.max(...table.map((row) => row[column].length)))
  const line = (row: ReadonlyArray<string>) =>
    row.map((cell, column) => column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column])).join("  ")
  return [line(HEADERS), widths.map((width) => "-".repeat(width)).join("  "), ...rows(run).map(line)].join("\n")
}

export const formatMarkdownTable = (run: DemoRun): string =>
  [
    `| ${HEADERS.join(" | ")} |`,
    `| ${HEADERS.map((_, column) => column === 0 ? "---" : "---:").join(" | ")} |`,
    ...rows(run).map((row) => `| ${row.join(" | ")} |`),
  ].join("\n")

export const chartTitle = (run: DemoRun): string =>
  `${run.workloadName}: ${run.peers} peers x ${run.rounds.length - 1} rounds (merged model, Test split)`

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
    const points = run.rounds.map((result) => ({
      round: result.round,
      accuracy: result.mergedAccuracy,
      loss: result.mergedLoss,
    }))
    yield* fs.writeFileString(files.chart, renderChart(points, chartTitle(run)))
    yield* fs.writeFileString(files.json, JSON.stringify({ ...context, ...run }, null, 2) + "\n")
    const patches = run.rounds.flatMap((result) =>
      result.patch === null ? [] : [
        `- round ${result.round}: learning_rate=${result.patch.learningRate}: ${
          result.patch.outcomes.map(({ peer, outcome }) => `${peer} ${outcome}`).join(", ")
        }`,
      ]
    )
    yield* fs.writeFileString(
      files.markdown,
      [
        `# Demo run: ${run.workloadName}`,
        "",
        `- workload: ${context.workload}; ${context.reason}`,
        `- python: ${context.python}`,
        `- ${run.peers} peers, ${run.rounds.length - 1} rounds; workers started in ${
          (run.startupMillis / 1000).toFixed(2)
        } s; total ${(context.totalMillis / 1000).toFixed(2)} s`,
        "",
        formatMarkdownTable(run),
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
