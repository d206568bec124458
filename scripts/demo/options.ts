/** The demo's command line. */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { parseArgs } from "node:util"
import type { WorkloadRequest } from "./python.ts"

export interface DemoOptions {
  readonly peers: number
  readonly rounds: number
  readonly workload: WorkloadRequest
  readonly python: Option.Option<string>
  readonly out: Option.Option<string>
  readonly help: boolean
}

export const usage = `usage: deno task demo [options]

Trains one model with N peers, each its own Python worker process, for R
rounds: every peer trains on its own data lease, a reducer merges the peers'
models into a canonical one, and every peer reconciles with it.

  --peers N        peer workers (default 4)
  --rounds R       training rounds (default 5)
  --workload W     torch | reference | auto (default auto: torch when a Python
                   that imports it is found, else the standard-library
                   reference workload)
  --python PATH    the Python to run the workers with (default: python3 on
                   PATH, else /usr/bin/python3)
  --out DIR        where artifacts, chart and summary go (default
                   ./out/demo-<timestamp>)
  -h, --help       this text`

export class UsageError extends Data.TaggedError("UsageError")<{ readonly detail: string }> {
  override get message(): string {
    return `${this.detail}\n\n${usage}`
  }
}

const WORKLOADS: ReadonlyArray<WorkloadRequest> = ["torch", "reference", "auto"]

const integer = (name: string, text: string | undefined, fallback: number, max: number) =>
  Effect.suspend(() => {
    if (text === undefined) return Effect.succeed(fallback)
    const value = Number(text)
    return Number.isInteger(value) && value >= 1 && value <= max ? Effect.succeed(value) : Effect.fail(
      new UsageError({ detail: `--${name} must be an integer from 1 to ${max}, got ${JSON.stringify(text)}` }),
    )
  })

export const parseOptions = (argv: ReadonlyArray<string>): Effect.Effect<DemoOptions, UsageError> =>
  Effect.gen(function* () {
    const { values } = yield* Effect.try({
      try: () =>
        parseArgs({
          args: [...argv],
          strict: true,
          allowPositionals: false,
          options: {
            peers: { type: "string" },
            rounds: { type: "string" },
            workload: { type: "string" },
            python: { type: "string" },
            out: { type: "string" },
            help: { type: "boolean", short: "h" },
          },
        }),
      catch: (error) => new UsageError({ detail: (error as Error).message }),
    })
    const workload = values.workload ?? "auto"
    if (!WORKLOADS.includes(workload as WorkloadRequest)) {
      return yield* new UsageError({
        detail: `--workload must be one of ${WORKLOADS.join(", ")}, got ${JSON.stringify(workload)}`,
      })
    }
    return {
      peers: yield* integer("peers", values.peers, 4, 32),
      rounds: yield* integer("rounds", values.rounds, 5, 100),
      workload: workload as WorkloadRequest,
      python: Option.fromNullable(values.python),
      out: Option.fromNullable(values.out),
      help: values.help === true,
    }
  })
