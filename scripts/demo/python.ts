/**
 * Which Python runs the workers, and with which workload: `--python` when
 * given, else `python3` on PATH, else the system's `/usr/bin/python3` (where
 * Debian's python3-torch lands). Each candidate is asked, in a short child
 * process, for its version and, when torch may be wanted, whether it imports
 * torch.
 */
import * as Command from "@effect/platform/Command"
import type * as CommandExecutor from "@effect/platform/CommandExecutor"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type { WorkloadKind } from "./workloads.ts"

export type WorkloadRequest = WorkloadKind | "auto"

export interface PythonChoice {
  /** What the workers are started with, as given (a PATH name or a path). */
  readonly python: string
  /** `sys.executable` behind it (a pyenv shim resolves to the real interpreter). */
  readonly executable: string
  readonly version: string
  readonly workload: WorkloadKind
  readonly torchVersion: Option.Option<string>
  /** One sentence on why this Python and this workload. */
  readonly reason: string
}

export class DiscoveryError extends Data.TaggedError("DiscoveryError")<{
  readonly wanted: "a Python" | "a Python that imports torch"
  readonly attempts: ReadonlyArray<string>
}> {
  override get message(): string {
    const hint = this.wanted === "a Python"
      ? "pass --python PATH"
      : "pass --python PATH for an interpreter with torch (Debian: apt install python3-torch), or --workload reference"
    return `found no ${this.wanted.slice(2)}: ${this.attempts.join("; ")}; ${hint}`
  }
}

interface Candidate {
  readonly command: string
  readonly label: string
}

const ProbeReport = Schema.Struct({
  executable: Schema.String,
  version: Schema.String,
  torch: Schema.optional(Schema.String),
  torch_error: Schema.optional(Schema.String),
})
type ProbeReport = typeof ProbeReport.Type

const PROBE = `
import json, sys
info = {"executable": sys.executable, "version": sys.version.split()[0]}
if "torch" in sys.argv[1:]:
    try:
        import torch
        info["torch"] = torch.__version__
    except Exception as error:
        info["torch_error"] = f"{type(error).__name__}: {error}"
print(json.dumps(info))
`

/** Importing torch alone takes seconds; a machine under load may need more. */
const PROBE_TIMEOUT = "60 seconds"

/** The candidate's report, or why it could not be run. */
const probe = (candidate: Candidate, withTorch: boolean) =>
  Command.string(Command.make(candidate.command, "-c", PROBE, ...(withTorch ? ["torch"] : []))).pipe(
    Effect.flatMap(Schema.decodeUnknown(Schema.parseJson(ProbeReport))),
    Effect.timeoutFail({ duration: PROBE_TIMEOUT, onTimeout: () => `no answer within ${PROBE_TIMEOUT}` }),
    Effect.mapError((error) =>
      typeof error === "string"
        ? error
        : error._tag === "SystemError" && error.reason === "NotFound"
        ? "not found"
        : error._tag === "ParseError"
        ? "did not run the probe (is it a Python 3?)"
        : error.message
    ),
    Effect.either,
  )

const describe = (candidate: Candidate, report: ProbeReport) =>
  candidate.command === report.executable
    ? `${candidate.label} (Python ${report.version})`
    : `${candidate.label} (${report.executable}, Python ${report.version})`

const chosen = (
  candidate: Candidate,
  report: ProbeReport,
  workload: WorkloadKind,
  reason: string,
): PythonChoice => ({
  python: candidate.command,
  executable: report.executable,
  version: report.version,
  workload,
  torchVersion: Option.fromNullable(report.torch),
  reason,
})

export const choosePython = (
  request: { readonly workload: WorkloadRequest; readonly python: Option.Option<string> },
): Effect.Effect<PythonChoice, DiscoveryError, CommandExecutor.CommandExecutor> =>
  Effect.gen(function* () {
    const candidates: ReadonlyArray<Candidate> = Option.match(request.python, {
      onSome: (python) => [{ command: python, label: `--python ${python}` }],
      onNone: () => [
        { command: "python3", label: "python3 on PATH" },
        { command: "/usr/bin/python3", label: "the system's /usr/bin/python3" },
      ],
    })
    const wantTorch = request.workload !== "reference"
    const attempts: Array<string> = []
    let firstRunnable: Option.Option<[Candidate, ProbeReport]> = Option.none()
    for (const candidate of candidates) {
      const outcome = yield* probe(candidate, wantTorch)
      if (outcome._tag === "Left") {
        attempts.push(`${candidate.label}: ${outcome.left}`)
        continue
      }
      const report = outcome.right
      if (!wantTorch) {
        return chosen(candidate, report, "reference", `--workload reference; using ${describe(candidate, report)}`)
      }
      if (report.torch !== undefined) {
        const why = request.workload === "torch" ? "--workload torch" : "--workload auto found torch"
        const skipped = attempts.length > 0 ? ` (${attempts.join("; ")})` : ""
        return chosen(
          candidate,
          report,
          "torch",
          `${why}: ${describe(candidate, report)} imports torch ${report.torch}${skipped}`,
        )
      }
      attempts.push(`${describe(candidate, report)} cannot import torch: ${report.torch_error ?? "unknown error"}`)
      if (Option.isNone(firstRunnable)) firstRunnable = Option.some([candidate, report])
    }
    if (request.workload === "auto" && Option.isSome(firstRunnable)) {
      const [candidate, report] = firstRunnable.value
      return chosen(
        candidate,
        report,
        "reference",
        `--workload auto: no Python imports torch (${
          attempts.join("; ")
        }), so the standard-library reference workload runs on ${describe(candidate, report)}`,
      )
    }
    return yield* new DiscoveryError({
      wanted: request.workload === "torch" ? "a Python that imports torch" : "a Python",
      attempts,
    })
  })
