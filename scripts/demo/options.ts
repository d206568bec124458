/**
 * The demo's command line, with @effect/cli: `--help` prints the generated
 * help; a bad argument is reported with the usage text, exit status 2.
 */
import { HelpDoc, Options, ValidationError } from "@effect/cli"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { AGGREGATIONS } from "./outer.ts"
import type { WorkloadRequest } from "./python.ts"

export const MODES = ["merge", "diloco", "compare"] as const
export type Mode = typeof MODES[number]

const WORKLOADS: ReadonlyArray<WorkloadRequest> = ["torch", "reference", "auto"]

const invalid = (text: string) => ValidationError.invalidValue(HelpDoc.p(text))

const integerIn = (name: string, min: number, max: number) => (value: number) =>
  Number.isInteger(value) && value >= min && value <= max
    ? Effect.succeed(value)
    : Effect.fail(invalid(`--${name} must be an integer from ${min} to ${max}, got ${value}`))

const count = (name: string, fallback: number, max: number, description: string) =>
  Options.integer(name).pipe(
    Options.withDefault(fallback),
    Options.withDescription(`${description} (1 to ${max}; default ${fallback})`),
    Options.mapEffect(integerIn(name, 1, max)),
  )

const nonNegative = (name: string, description: string) =>
  Options.float(name).pipe(
    Options.optional,
    Options.withDescription(description),
    Options.mapEffect((value) =>
      Option.match(value, {
        onNone: () => Effect.succeed(value),
        onSome: (number) =>
          Number.isFinite(number) && number >= 0
            ? Effect.succeed(value)
            : Effect.fail(invalid(`--${name} must be a finite number >= 0, got ${number}`)),
      })
    ),
  )

/** Every flag; `Command.make("demo", options, ...)` turns them into the parsed record. */
export const options = {
  peers: count("peers", 4, 32, "peer workers"),
  rounds: count("rounds", 5, 100, "training rounds"),
  workload: Options.choice("workload", WORKLOADS).pipe(
    Options.withDefault("auto" as WorkloadRequest),
    Options.withDescription(
      "torch, reference, or auto (default): torch when a Python that imports it is found, else the standard-library reference workload",
    ),
  ),
  python: Options.text("python").pipe(
    Options.optional,
    Options.withDescription("the Python to run the workers with (default: python3 on PATH, else /usr/bin/python3)"),
  ),
  out: Options.text("out").pipe(
    Options.optional,
    Options.withDescription("where artifacts, chart and summary go (default ./out/demo-<timestamp>)"),
  ),
  mode: Options.choice("mode", MODES).pipe(
    Options.withDefault("merge" as Mode),
    Options.withDescription(
      "merge (default): train windows, merge the candidates, root EMA, reconcile; diloco: every peer runs H inner steps from the global pack and the owner takes DiLoCo's outer step; compare: merge, then DiLoCo under each aggregation policy, on the same workers and leases, in one table and chart",
    ),
  ),
  innerSteps: Options.integer("inner-steps").pipe(
    Options.optional,
    Options.withDescription(
      "DiLoCo's H, inner steps per round (default: the steps of one merge-mode window, 16 for reference and 64 for torch, so both modes spend the same inner compute)",
    ),
    Options.mapEffect((value) =>
      Option.match(value, {
        onNone: () => Effect.succeed(value),
        onSome: (steps) => Effect.as(integerIn("inner-steps", 1, 100000)(steps), value),
      })
    ),
  ),
  aggregation: Options.choice("aggregation", AGGREGATIONS).pipe(
    Options.withDefault("mean" as typeof AGGREGATIONS[number]),
    Options.withDescription(
      "how --mode diloco combines the pseudo-gradients: mean (default), median (coordinate-wise) or sign (majority vote, scaled by the median's mean magnitude); --mode compare runs all three",
    ),
  ),
  outerLr: nonNegative(
    "outer-lr",
    "the outer SGD's learning rate (default 0.9; DiLoCo's paper uses 0.7 with momentum 0.9 and Nesterov over many more rounds)",
  ),
  outerMomentum: nonNegative("outer-momentum", "the outer SGD's momentum (default 0.3)"),
  nesterov: Options.boolean("nesterov", { negationNames: ["no-nesterov"] }).pipe(
    Options.withDescription("Nesterov momentum in the outer step (default off)"),
  ),
  byzantine: Options.boolean("byzantine").pipe(
    Options.withDescription(
      "the last peer sends a forged update (its pseudo-gradient x -10) while it reports honest metrics; needs at least 3 peers",
    ),
  ),
  chaos: Options.boolean("chaos").pipe(
    Options.withDescription(
      "SIGKILL one peer's worker at a random point mid-run (seeded by --seed): the worker is restarted, reloads the canonical model, and the run goes on",
    ),
  ),
  seed: Options.integer("seed").pipe(
    Options.withDefault(1),
    Options.withDescription("the seed of --chaos (default 1)"),
  ),
}

export const description =
  `Trains one model with N peers, each its own Python worker process (a PythonWorkerPool), for R
rounds, and a reducer: in merge mode every peer trains on its own data lease, the reducer merges the peers' models
into a canonical one, and every peer reconciles with it; in DiLoCo mode every peer runs H inner steps from the
global parameters and this process takes the outer step. Prints live progress, a table, and writes an SVG chart.`

/** Checks across flags, after parsing: the message for a usage error, if any. */
export const crossCheck = (flags: { readonly byzantine: boolean; readonly peers: number }): Option.Option<string> =>
  flags.byzantine && flags.peers < 3
    ? Option.some(
      `--byzantine needs at least 3 peers (one liar among 2 is no minority for median or sign), got --peers ${flags.peers}`,
    )
    : Option.none()
